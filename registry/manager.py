"""The pluggy plugin manager and entry-point discovery (group ``mamba4net``).

Built-in plugins are entry points of this distribution, loaded exactly like a third party's.
``MAMBA4NET_DISABLE_PLUGINS=a,b`` skips plugins by entry-point name; ``MAMBA4NET_LOAD_PLUGINS=a,b``
loads only those (an allow-list). Plugins can also be added programmatically (tests, notebooks)
with :meth:`Registry.add_plugin` before the first lookup.

An installed plugin that fails to import, declares another plugin API (``MAMBA4NET_API``), or raises
inside one of its register hooks is set aside: it is listed in :attr:`Registry.failed` with its
distribution and a one-line reason, none of its components is registered, and every other plugin
keeps working. A config that names a component nobody registered mentions the failed plugins.
"""

from __future__ import annotations

import importlib.metadata as md
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable

import pluggy

from mamba4net.core import hookspecs
from mamba4net.core.errors import PluginError, one_line
from mamba4net.registry.components import KINDS, Component, ComponentRegistry

ENTRY_POINT_GROUP = "mamba4net"
log = logging.getLogger("mamba4net")


@dataclass
class PluginInfo:
    name: str  # entry-point name (or the name given to add_plugin)
    module: str
    distribution: str  # the distribution that provides it ("-" when added by hand)
    version: str


@dataclass
class FailedPlugin:
    """An installed plugin set aside, and why (one line)."""

    name: str
    module: str
    distribution: str
    version: str
    reason: str
    provides: set[str] = field(default_factory=set)  # "kind:name" it registered before failing

    def describe(self) -> str:
        return f"plugin '{self.name}' ({self.distribution} {self.version}) {self.reason}"


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
        self.failed: dict[str, FailedPlugin] = {}
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
            dist = ep.dist
            info = PluginInfo(ep.name, ep.value, dist.name if dist else "-", dist.version if dist else "-")
            try:
                module = ep.load()
            except Exception as exc:  # a broken third-party plugin is named and set aside
                self._set_aside(info, f"failed to import: {type(exc).__name__}: {one_line(str(exc))}")
                continue
            api = getattr(module, "MAMBA4NET_API", hookspecs.PLUGIN_API)
            if api != hookspecs.PLUGIN_API:
                self._set_aside(info, f"was written for plugin API {api!r}; this mamba4net provides API "
                                      f"{hookspecs.PLUGIN_API} (update the plugin or mamba4net)")
                continue
            try:
                self._register(ep.name, module, info)
            except PluginError as exc:
                self._set_aside(info, f"cannot be registered: {exc}")

    def _set_aside(self, info: PluginInfo, reason: str, provides: set[str] | None = None) -> None:
        failed = FailedPlugin(info.name, info.module, info.distribution, info.version, reason, provides or set())
        self.failed[info.name] = failed
        self.plugins.pop(info.name, None)
        if self.pm.has_plugin(info.name):
            self.pm.unregister(name=info.name)
        log.warning("%s; its components are unavailable, the other plugins work", failed.describe())

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
        # every plugin's registrations are staged first: a plugin whose hook raises is set aside
        # whole (nothing it registered in any kind stays), the others are added as usual
        staged: list[tuple[str, str, list[Component]]] = []  # (kind, plugin, components), in order
        broken: dict[str, str] = {}  # plugin -> why (its other hooks still run: what it provides)
        for kind, reg in kinds.items():
            caller = getattr(self.pm.hook, f"mamba4net_register_{kind}")
            for impl in reversed(caller.get_hookimpls()):
                owner, found = impl.plugin_name, []
                staged.append((kind, owner, found))
                try:
                    impl.function(register=self._make_register(reg, owner, found))
                except Exception as exc:  # name the plugin whose hook broke; keep the others
                    why = f"failed in mamba4net_register_{kind}: {type(exc).__name__}: {one_line(str(exc))}"
                    if owner not in self.plugins or self.plugins[owner].distribution == "-":
                        raise PluginError(f"plugin '{owner}' {why}") from exc
                    broken.setdefault(owner, why)
        for owner, why in broken.items():
            provides = {f"{k}:{c.name}" for k, p, cs in staged if p == owner for c in cs}
            self._set_aside(self.plugins[owner], why, provides)
        owners = list(dict.fromkeys(owner for _, owner, _ in staged if owner not in self.failed))
        order = list(self.plugins)  # built-ins first (a clash is the newcomer's), then by load order;
        owners.sort(key=lambda o: (self.plugins[o].distribution == "-",  # plugins added by hand raise
                                   self.plugins[o].distribution != "mamba4net", order.index(o)))
        for owner in owners:  # a plugin's components go in all together, or none of them
            mine = [(kind, c) for kind, o, found in staged if o == owner for c in found]
            try:
                names = [(kind, c.name) for kind, c in mine]
                twice = next(((k, n) for k, n in names if names.count((k, n)) > 1), None)
                if twice:
                    raise PluginError(f"plugin '{owner}' registered {KINDS[twice[0]]} '{twice[1]}' twice")
                for kind, component in mine:
                    kinds[kind].check(component)
            except PluginError as exc:
                if self.plugins[owner].distribution == "-":
                    raise
                self._set_aside(self.plugins[owner], f"was refused: {exc}", {f"{k}:{c.name}" for k, c in mine})
                continue
            for kind, component in mine:
                kinds[kind].add(component)
        for reg in kinds.values():
            reg.failed = self.failed
        return kinds

    @staticmethod
    def _make_register(reg: ComponentRegistry, owner: str, into: list[Component]) -> Callable[..., None]:
        def register(name: str, factory: Callable[..., Any], params: type | None = None, **meta: Any):
            into.append(Component(reg.kind, name, factory, params, owner, meta))

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
