"""Reading pipeline YAML: ``safe_load`` only, line numbers of keys, ``extends:`` and ``--set``.

Nothing here validates: it turns files and ``--set`` strings into plain data (plus the line of each
key, for error messages) that :mod:`mamba4net.core.config` then validates.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from mamba4net.core.errors import ConfigError


def line_map(text: str) -> dict[tuple[str, ...], int]:
    """Key path -> 1-based line, from the YAML node graph (composition constructs no objects)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return {}
    lines: dict[tuple[str, ...], int] = {}

    def walk(node, path):
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                p = path + (str(key.value),)
                lines[p] = key.start_mark.line + 1
                walk(value, p)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                p = path + (str(i),)
                lines[p] = item.start_mark.line + 1
                walk(item, p)

    if root is not None:
        walk(root, ())
    return lines


def read_yaml(path: Path) -> tuple[dict[str, Any], dict[tuple[str, ...], int]]:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a UTF-8 text file ({exc.reason} at byte {exc.start})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}{where}: invalid YAML: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data, line_map(text)


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` wins; mappings merge recursively; lists, scalars and renamed components are replaced whole."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        prev = out.get(key)
        # merge mappings, unless the override names another component: its params start afresh
        if isinstance(value, dict) and isinstance(prev, dict) and value.get("name", prev.get("name")) == prev.get("name"):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_with_extends(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    path = path.resolve()
    if path in seen:
        chain = " -> ".join(str(p) for p in seen + (path,))
        raise ConfigError(f"{path}: extends: cycle ({chain})")
    data, _ = read_yaml(path)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise ConfigError(f"{path}: extends: expected a path to another YAML file")
    base_path = (path.parent / parent) if not Path(parent).is_absolute() else Path(parent)
    return deep_merge(load_with_extends(base_path, seen + (path,)), data)


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply ``a.b.c=value`` (value parsed as YAML; list items addressed by index)."""
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment}: expected key.path=value")
    key, raw = assignment.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"--set {assignment}: empty key")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        raise ConfigError(f"--set {assignment}: value is not valid YAML") from None
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"--set {key}: '{part}' is not an index of the list at {'.'.join(parts[:i])}")
            node = node[int(part)]
        else:
            if not isinstance(node.get(part, {}), (dict, list)):
                raise ConfigError(f"--set {key}: '{'.'.join(parts[: i + 1])}' is not a mapping")
            node = node.setdefault(part, {})
    last = parts[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise ConfigError(f"--set {key}: '{last}' is not an index of the list")
        node[int(last)] = value
    else:
        node[last] = value
