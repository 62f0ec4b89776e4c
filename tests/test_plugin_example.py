"""The outside plugin packages in examples/ (a baseline, and a whole task) install with pip, are
discovered through their entry points and pass their own tests, a tiny pipeline included."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PACKAGES = {
    "plugin_example": ("m4n_example", "m4n-example 0.1.0", "damped_velocity"),
    "plugins/bandwidth_prediction": ("bandwidth_prediction", "mamba4net-bandwidth-prediction 0.1.0", "harmonic_mean"),
}


@pytest.mark.parametrize("folder", list(PACKAGES))
def test_example_plugin_installs_and_passes_its_tests(tmp_path, folder):
    plugin, dist, component = PACKAGES[folder]
    src = tmp_path / "src"
    shutil.copytree(EXAMPLES / folder, src)
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "--target", str(target), str(src)],
                   check=True, capture_output=True, text=True)
    env = {**os.environ, "PYTHONPATH": str(target)}
    listing = subprocess.run([sys.executable, "-m", "mamba4net.core.cli", "plugins"],
                             capture_output=True, text=True, env=env)
    assert listing.returncode == 0, listing.stderr
    assert plugin in listing.stdout and dist in listing.stdout and component in listing.stdout
    assert "FAILED" not in listing.stdout
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(src / "tests")],
                           capture_output=True, text=True, env=env, cwd=tmp_path)
    assert tests.returncode == 0, tests.stdout + tests.stderr
