"""``mamba4net new-plugin``: the package it writes installs and passes its own tests unchanged;
invalid or taken names are refused in one line."""

import pytest
from installed import Installed

from mamba4net.core.cli import main


def test_scaffolded_plugin_installs_and_passes_its_tests(tmp_path, capsys):
    assert main(["new-plugin", "link_rtt", "--dir", str(tmp_path)]) == 0
    pkg = tmp_path / "link_rtt"
    assert "pip install -e ." in capsys.readouterr().out
    installed = Installed(pkg, tmp_path)
    listing = installed.plugins()
    assert "mamba4net-link-rtt 0.1.0" in listing and "link_rtt_last_value" in listing
    tests = installed.run_its_tests()
    assert "4 passed" in tests


@pytest.mark.parametrize("name, message", [
    ("My-Task", "not a valid name"),
    ("class", "not a valid name"),
    ("vp", "is taken"),
    ("json", "importable Python module"),
])
def test_bad_names_are_refused(tmp_path, capsys, name, message):
    assert main(["new-plugin", name, "--dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert list(tmp_path.iterdir()) == []


def test_an_existing_folder_is_not_overwritten(tmp_path, capsys):
    (tmp_path / "fresh_task").mkdir()
    assert main(["new-plugin", "fresh_task", "--dir", str(tmp_path)]) == 2
    assert "already exists" in capsys.readouterr().err
