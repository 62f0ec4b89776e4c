"""The public API (``mamba4net.api``): every listed name resolves, importing it is light, and the
outside plugin packages shipped as examples import nothing else from mamba4net."""

import ast
import subprocess
import sys
from pathlib import Path

import mamba4net.api as api

ROOT = Path(__file__).resolve().parents[1]
PUBLIC = ("mamba4net.api", "mamba4net.testing")  # the testing kit is public too
OUTSIDE_PACKAGES = [ROOT / "examples" / "plugin_example", ROOT / "examples" / "plugins" / "bandwidth_prediction"]


def test_every_public_name_resolves():
    for name in api.__all__:
        assert getattr(api, name) is not None, name
    assert api.PLUGIN_API == 1


def test_importing_the_api_does_not_import_torch():
    code = "import sys, mamba4net.api; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def _mamba4net_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
    return [m for m in found if m == "mamba4net" or m.startswith("mamba4net.")]


def test_outside_plugin_packages_use_only_the_public_api():
    checked = 0
    for package in OUTSIDE_PACKAGES:
        for path in sorted(package.rglob("*.py")):
            for module in _mamba4net_imports(path):
                checked += 1
                assert module.startswith(PUBLIC), f"{path.relative_to(ROOT)} imports {module} (not public)"
    assert checked > 0
