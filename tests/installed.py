"""A plugin package installed the way a user installs it (pip, into a folder of its own), then
asked what a user would ask: ``mamba4net plugins`` and its own tests. Shared by the tests of the
outside example packages and of the scaffold."""

import os
import subprocess
import sys
from pathlib import Path


class Installed:
    def __init__(self, package: Path, tmp_path: Path):
        self.package, self.cwd = package, tmp_path
        target = tmp_path / "site"
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                        "--disable-pip-version-check", "--target", str(target), str(package)],
                       check=True, capture_output=True, text=True)
        self.env = {**os.environ, "PYTHONPATH": str(target)}

    def plugins(self) -> str:
        """What ``mamba4net plugins`` prints with the package installed (it must succeed)."""
        listing = subprocess.run([sys.executable, "-m", "mamba4net.core.cli", "plugins"],
                                 capture_output=True, text=True, env=self.env)
        assert listing.returncode == 0, listing.stderr
        return listing.stdout

    def run_its_tests(self) -> str:
        """The package's own tests' output (they must pass)."""
        tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                str(self.package / "tests")], capture_output=True, text=True, env=self.env,
                               cwd=self.cwd)
        assert tests.returncode == 0, tests.stdout + tests.stderr
        return tests.stdout
