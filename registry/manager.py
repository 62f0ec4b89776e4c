"""The pluggy plugin manager and entry-point discovery (group ``mamba4net``).

Built-in plugins are entry points of this distribution, loaded exactly like a third party's.
``MAMBA4NET_DISABLE_PLUGINS=a,b`` skips plugins by entry-point name; ``MAMBA4NET_LOAD_PLUGINS=a,b``
loads only those (an allow-list). Plugins can also be added programmatically (tests, notebooks)
with :meth:`Registry.add_plugin` before the first lookup.
"""

from __future__ import annotations

import importlib.metadata as md
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable

import pluggy

from mamba4net.core import hookspecs
from mamba4net.core.errors import PluginError
from mamba4net.registry.components import KINDS, Component, ComponentRegistry

ENTRY_POINT_GROUP = "mamba4net"
log = logging.getLogger("mamba4net")


@dataclass
class PluginInfo:
    name: str  # entry-point name (or the name given to add_plugin)
    module: str
    distribution: str  # the distribution that provides it ("-" when added by hand)
    version: str


def _env_list(var: str) -> set[str] | None:
    raw = os.environ.get(var)
    if raw is None:
        return None
    return {x.strip() for x in raw.split(",") if x.strip()}


class Registry:
    """A plugin manager plus one :class:`ComponentRegistry` per kind, filled on first use."""

    def __init__(self, load_entry_points: bool = True):
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        self._kinds: dict[str, ComponentRegistry] | None = None
        if load_entry_points:
            self._load_entry_points()

    # -- discovery -----------------------------------------------------------------------------
    def _load_entry_points(self) -> None:
        disabled = _env_list("MAMBA4NET_DISABLE_PLUGINS") or set()
        allowed = _env_list("MAMBA4NET_LOAD_PLUGINS")
        for ep in sorted(md.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            if ep.name in disabled or (allowed is not None and ep.name not in allowed):
                continue
            if ep.name in self.plugins:
                other = self.plugins[ep.name].distribution
                dist = ep.dist.name if ep.dist else "?"
                raise PluginError(
                    f"two distributions declare the plugin '{ep.name}': '{other}' and '{dist}'"
                )
            try:
                module = ep.load()
            except Exception as exc:  # a broken third-party plugin must be named, not crash
                raise PluginError(
                    f"plugin '{ep.name}' ({ep.value}) failed to import: {type(exc).__name__}: {exc}"
                ) from exc
            dist = ep.dist
            self._register(
                ep.name,
                module,
                PluginInfo(ep.name, ep.value, dist.name if dist else "-", dist.version if dist else "-"),
            )

    def add_plugin(self, plugin: Any, name: str | None = None) -> None:
        """Register a plugin object or module by hand (tests, notebooks)."""
        name = name or getattr(plugin, "__name__", type(plugin).__name__)
        module = getattr(plugin, "__name__", type(plugin).__name__)
        self._register(name, plugin, PluginInfo(name, module, "-", "-"))
        self._kinds = None  # rebuild the component tables on next use

    def _register(self, name: str, plugin: Any, info: PluginInfo) -> None:
        if name in self.plugins:
            raise PluginError(f"a plugin named '{name}' is already loaded ({self.plugins[name].module})")
        try:
            self.pm.register(plugin, name=name)
            self.pm.check_pending()  # a misspelled hook name is an error, not silently ignored
        except pluggy.PluginValidationError as exc:
            if self.pm.is_registered(plugin):
                self.pm.unregister(plugin)
            raise PluginError(f"plugin '{name}' ({info.module}): {exc}") from None
        self.plugins[name] = info

    # -- components ----------------------------------------------------------------------------
    def _collect(self) -> dict[str, ComponentRegistry]:
        kinds = {kind: ComponentRegistry(kind) for kind in KINDS}
        for impl in self.pm.hook.mamba4net_register_strategies.get_hookimpls():
            log.warning("plugin '%s' implements mamba4net_register_strategies, which is deprecated and ignored: "
                        "register a method (mamba4net_register_methods) instead", impl.plugin_name)
        for kind, reg in kinds.items():
            caller = getattr(self.pm.hook, f"mamba4net_register_{kind}")
            # call each implementation with a register() bound to its plugin, so every component
            # knows its owner (for duplicate errors and `mamba4net plugins`)
            for impl in reversed(caller.get_hookimpls()):
                try:
                    impl.function(register=self._make_register(reg, impl.plugin_name))
                except PluginError:
                    raise
                except Exception as exc:  # name the plugin whose hook broke
                    raise PluginError(
                        f"plugin '{impl.plugin_name}' failed in mamba4net_register_{kind}: "
                        f"{type(exc).__name__}: {exc}"
                    ) from exc
        return kinds

    @staticmethod
    def _make_register(reg: ComponentRegistry, owner: str) -> Callable[..., None]:
        def register(name: str, factory: Callable[..., Any], params: type | None = None, **meta: Any):
            reg.add(Component(reg.kind, name, factory, params, owner, meta))

        return register

    def kind(self, kind: str) -> ComponentRegistry:
        if self._kinds is None:
            self._kinds = self._collect()
        if kind not in self._kinds:
            raise KeyError(f"unknown component kind {kind!r}")
        return self._kinds[kind]

    def get(self, kind: str, name: str) -> Component:
        return self.kind(kind).get(name)

    def build(self, kind: str, node: dict[str, Any] | str, **context: Any) -> Any:
        """Build a component from a config node ``{name: ..., **params}`` (or a bare name)."""
        if isinstance(node, str):
            node = {"name": node}
        params = {k: v for k, v in node.items() if k != "name"}
        return self.get(kind, node["name"]).build(params, **context)


_DEFAULT: Registry | None = None


def default_registry() -> Registry:
    """The process-wide registry loaded from entry points (created on first call)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Registry()
    return _DEFAULT


def set_default_registry(registry: Registry | None) -> None:
    """Replace the process-wide registry (tests; ``None`` reloads from entry points next time)."""
    global _DEFAULT
    _DEFAULT = registry
