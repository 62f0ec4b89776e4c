"""The third-party plugin in examples/plugin_example installs, is discovered and passes its tests."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "plugin_example"


def test_example_plugin_installs_and_passes_its_tests(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(EXAMPLE, src)
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "--target", str(target), str(src)],
                   check=True, capture_output=True, text=True)
    env = {**os.environ, "PYTHONPATH": str(target)}
    listing = subprocess.run([sys.executable, "-m", "mamba4net.core.cli", "plugins"],
                             capture_output=True, text=True, env=env)
    assert listing.returncode == 0, listing.stderr
    assert "m4n_example" in listing.stdout and "m4n-example 0.1.0" in listing.stdout
    assert "damped_velocity" in listing.stdout
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(src / "tests")],
                           capture_output=True, text=True, env=env, cwd=tmp_path)
    assert tests.returncode == 0, tests.stdout + tests.stderr
