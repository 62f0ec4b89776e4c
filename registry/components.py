"""Typed name -> component registries, one per kind of component."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from pydantic import BaseModel, ValidationError

from mamba4net.core.errors import PluginError

# kind -> the singular noun used in messages
KINDS: dict[str, str] = {
    "tasks": "task",
    "encoders": "encoder",
    "heads": "head",
    "teachers": "teacher",
    "students": "student",
    "initializers": "initializer",
    "losses": "loss",
    "kernels": "kernel",
    "baselines": "baseline",
    "methods": "method",
    "datasets": "dataset",
}

# meta keys each kind requires at registration
REQUIRED_META: dict[str, tuple[str, ...]] = {"kernels": ("op", "priority"), "baselines": ("task",)}

NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


class UnknownComponentError(PluginError):
    """An unknown name; the message lists what exists and the closest match."""


@dataclass
class Component:
    kind: str
    name: str
    factory: Callable[..., Any]
    params: type[BaseModel] | None
    owner: str  # the plugin (entry point) that registered it
    meta: dict[str, Any] = field(default_factory=dict)

    def validate_params(self, raw: dict[str, Any]) -> BaseModel | None:
        """Validate the YAML node (without ``name``) against the component's params model.

        Raises pydantic's ValidationError; the config layer turns it into a one-line message.
        """
        if self.params is None:
            if raw:
                keys = ", ".join(sorted(raw))
                raise PluginError(f"{KINDS[self.kind]} '{self.name}' takes no parameters, got: {keys}")
            return None
        return self.params.model_validate(raw)

    def build(self, raw_or_params: dict[str, Any] | BaseModel | None = None, **context: Any) -> Any:
        params = raw_or_params
        if params is None or isinstance(params, dict):
            params = self.validate_params(params or {})
        return self.factory(params, **context)  # params is None for components that take none


class ComponentRegistry:
    """The components of one kind, by name."""

    def __init__(self, kind: str):
        if kind not in KINDS:
            raise ValueError(f"unknown component kind {kind!r}; kinds: {', '.join(KINDS)}")
        self.kind = kind
        self.noun = KINDS[kind]
        self._items: dict[str, Component] = {}
        self.failed: dict[str, Any] = {}  # plugins set aside by the registry (name -> FailedPlugin)

    def add(self, component: Component) -> None:
        self.check(component)
        self._items[component.name] = component

    def check(self, component: Component) -> None:
        """Raise :class:`PluginError` if ``component`` cannot be added (bad name, taken, bad meta or params)."""
        name = component.name
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise PluginError(
                f"plugin '{component.owner}' registered {self.noun} {name!r}: names must be "
                "lowercase letters, digits and '_' and start with a letter"
            )
        if name in self._items:
            first = self._items[name].owner
            raise PluginError(
                f"{self.noun} '{name}' is registered twice: by plugin '{first}' and by plugin "
                f"'{component.owner}'; disable one with MAMBA4NET_DISABLE_PLUGINS"
            )
        missing = [k for k in REQUIRED_META.get(self.kind, ()) if k not in component.meta]
        if missing:
            raise PluginError(
                f"plugin '{component.owner}' registered {self.noun} '{name}' without "
                f"required {', '.join(missing)}"
            )
        if component.params is not None:
            if not (isinstance(component.params, type) and issubclass(component.params, BaseModel)):
                raise PluginError(
                    f"plugin '{component.owner}' registered {self.noun} '{name}' with params "
                    f"{component.params!r}: expected a pydantic model class or None"
                )
            if component.params.model_config.get("extra") != "forbid":
                raise PluginError(
                    f"plugin '{component.owner}' registered {self.noun} '{name}' with params model "
                    f"{component.params.__name__} that accepts unknown keys: set "
                    "model_config = ConfigDict(extra='forbid') so typos in YAML are caught"
                )

    def get(self, name: str) -> Component:
        try:
            return self._items[name]
        except KeyError:
            raise UnknownComponentError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        known = sorted(self._items)
        close = difflib.get_close_matches(str(name), known, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        listing = ", ".join(known) if known else "none (is the plugin installed and enabled?)"
        message = f"unknown {self.noun} '{name}'{hint} known {self.kind}: {listing}"
        owner = [f for f in self.failed.values() if f"{self.kind}:{name}" in f.provides]
        if owner:
            return f"{self.noun} '{name}' comes from {owner[0].describe()}"
        if self.failed:
            return message + "; plugins that failed to load: " + "; ".join(f.describe() for f in self.failed.values())
        return message

    def names(self) -> list[str]:
        return sorted(self._items)

    def items(self) -> list[Component]:
        return [self._items[n] for n in self.names()]

    def where(self, **meta: Any) -> list[Component]:
        """Components whose meta matches every given key (e.g. ``where(op="ssd_scan")``)."""
        return [c for c in self.items() if all(c.meta.get(k) == v for k, v in meta.items())]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __len__(self) -> int:
        return len(self._items)


def format_validation_error(err: ValidationError, prefix: str = "") -> list[tuple[str, str]]:
    """(key path, message) pairs from a pydantic error, paths joined with dots under ``prefix``."""
    out = []
    for e in err.errors():
        parts = [prefix] if prefix else []
        parts += [str(p) for p in e["loc"]]
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif "input" in e and e["type"] not in ("missing",) and not isinstance(e["input"], dict):
            msg = f"{msg}, got {e['input']!r}"
        out.append((".".join(parts), msg))
    return out
