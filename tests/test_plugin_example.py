"""The outside plugin packages in examples/ (a baseline, and a whole task) install with pip, are
discovered through their entry points and pass their own tests, a tiny pipeline included."""

import shutil
from pathlib import Path

import pytest
from installed import Installed

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
    installed = Installed(src, tmp_path)
    listing = installed.plugins()
    assert plugin in listing and dist in listing and component in listing
    assert "FAILED" not in listing
    installed.run_its_tests()
