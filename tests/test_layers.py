"""core/ depends one way: an import graph over its source (function-level imports included) has no
cycle, every import goes to the same or a lower layer, no private name crosses modules, and
``mamba4net validate`` imports no torch."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# the layers of core/, lowest first (leaves -> config -> runtime, checkpoints, run folder ->
# model, objective, trainer -> context -> stages, evaluation, bench library -> pipeline, bench command -> cli)
LAYERS = [
    ["errors", "protocols", "io", "seeding", "paths", "progress", "plotting", "hookspecs", "method", "yamlio",
     "streaming", "stats"],
    ["schema", "config"],
    ["runtime", "kernels", "distributed", "ds_engine", "checkpoint", "runs", "artifacts", "lock", "datasets"],
    ["model", "objective", "trainer", "taps", "outputs"],
    ["context"],
    ["stages", "evaluation", "efficiency", "export", "onnx_export", "report", "bench", "bench.measure", "bench.plan",
     "bench.size", "bench.sweep", "bench.tables", "bench.plots", "bench.run", "bench.flops"],
    ["pipeline", "bench.command", "seeds"],
    ["cli", "__init__"],
]


def _modules() -> dict[str, Path]:
    out = {}
    for folder, package in ((ROOT / "core", "mamba4net.core"), (ROOT / "registry", "mamba4net.registry")):
        for f in folder.rglob("*.py"):
            parts = list(f.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([package] + parts)] = f
    return out


def _imports() -> tuple[dict[str, set[str]], list[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = {}
    private: list[str] = []
    for name, path in mods.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mamba4net."):
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    if sub in mods:
                        deps.add(sub)
                    else:
                        deps.add(node.module)
                        if alias.name.startswith("_"):
                            private.append(f"{name}: from {node.module} import {alias.name}")
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name in mods}
        graph[name] = {d for d in deps if d in mods and d != name}
    return graph, private


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_core_import_graph_has_no_cycle_and_no_private_import():
    graph, private = _imports()
    assert _cycles(graph) == []
    assert private == []


def test_core_imports_only_its_own_or_lower_layers():
    graph, _ = _imports()
    layer = {f"mamba4net.core.{m}" if m != "__init__" else "mamba4net.core": i
             for i, names in enumerate(LAYERS) for m in names}
    core = {m for m in graph if m.startswith("mamba4net.core")}
    assert core <= set(layer), f"core modules without a layer: {sorted(core - set(layer))}"
    upward = [f"{m} (layer {layer[m]}) imports {d} (layer {layer[d]})"
              for m in sorted(core) for d in sorted(graph[m]) if d in layer and layer[d] > layer[m]]
    assert upward == []


def test_the_checker_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_validate_imports_no_torch():
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "mamba4net.core.cli", "validate",
                          str(ROOT / "examples" / "vp.yaml")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    imported = {line.split("|")[-1].strip().split(".")[0] for line in out.stderr.splitlines() if "|" in line}
    assert "torch" not in imported and "mamba4net" in imported
