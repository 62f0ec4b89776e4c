"""The registry: entry-point discovery, duplicates, unknown names, enable/disable lists."""

import sys
import textwrap

import pytest


from mamba4net.core.errors import PluginError
from mamba4net.core.hookspecs import hookimpl
from mamba4net.registry import KINDS, Registry
from mamba4net.registry.components import UnknownComponentError

BUILTINS = {"losses", "hf_teacher", "hybrid_mamba", "vp", "abr", "cjs", "cwr", "mamba4net", "triton_kernels"}


def test_builtins_come_from_entry_points():
    reg = Registry()
    assert BUILTINS <= set(reg.plugins)
    for name in BUILTINS:
        assert reg.plugins[name].distribution == "mamba4net"
    assert reg.get("tasks", "vp").owner == "vp"
    assert reg.get("teachers", "hf_causal_lm").owner == "hf_teacher"
    assert reg.get("students", "hybrid_mamba").owner == "hybrid_mamba"
    assert {"velocity", "linear_regression", "lstm"} <= set(reg.kind("baselines").names())
    assert reg.kind("kernels").where(op="ssd_scan")


def test_every_kind_has_a_hook():
    reg = Registry(load_entry_points=False)
    for kind in KINDS:
        assert hasattr(reg.pm.hook, f"mamba4net_register_{kind}")


class _Dup:
    @hookimpl
    def mamba4net_register_tasks(self, register):
        register("vp", lambda params: None)


def test_duplicate_names_both_owners():
    reg = Registry()
    reg.add_plugin(_Dup(), name="intruder")
    with pytest.raises(PluginError, match=r"task 'vp' is registered twice: by plugin '(vp|intruder)' and by plugin '(vp|intruder)'"):
        reg.kind("tasks")


def test_unknown_name_lists_and_suggests():
    reg = Registry()
    with pytest.raises(UnknownComponentError) as err:
        reg.get("teachers", "hf_causal_llm")
    msg = str(err.value)
    assert "did you mean 'hf_causal_lm'" in msg and "known teachers:" in msg


class _BadName:
    @hookimpl
    def mamba4net_register_losses(self, register):
        register("Bad-Name", lambda params: None)


class _NoOp:
    @hookimpl
    def mamba4net_register_kernels(self, register):
        register("k", lambda: None, priority=1)


@pytest.mark.parametrize("plugin,match", [(_BadName(), "names must be lowercase"), (_NoOp(), "without required op")])
def test_bad_registrations(plugin, match):
    reg = Registry(load_entry_points=False)
    reg.add_plugin(plugin, name="bad")
    with pytest.raises(PluginError, match=match):
        reg.kind("losses" if isinstance(plugin, _BadName) else "kernels")


def test_disable_and_allow_lists(monkeypatch):
    monkeypatch.setenv("MAMBA4NET_DISABLE_PLUGINS", "vp, cwr")
    reg = Registry()
    assert "vp" not in reg.plugins and "cwr" not in reg.plugins and "losses" in reg.plugins
    assert "vp" not in reg.kind("tasks")
    monkeypatch.delenv("MAMBA4NET_DISABLE_PLUGINS")
    monkeypatch.setenv("MAMBA4NET_LOAD_PLUGINS", "losses")
    assert set(Registry().plugins) == {"losses"}


def test_third_party_entry_point(tmp_path, monkeypatch):
    """A package installed elsewhere, declaring the entry point, is loaded like the built-ins."""
    pkg = tmp_path / "m4n_thirdparty"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "plugin.py").write_text(textwrap.dedent("""
        from pydantic import BaseModel, ConfigDict
        from mamba4net.core.hookspecs import hookimpl

        class P(BaseModel):
            model_config = ConfigDict(extra="forbid")
            alpha: float = 1.0

        @hookimpl
        def mamba4net_register_initializers(register):
            register("thirdparty_init", lambda params: (lambda t, s: {"alpha": params.alpha}), params=P)
    """))
    dist = tmp_path / "m4n_thirdparty-1.2.3.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: m4n-thirdparty\nVersion: 1.2.3\n")
    (dist / "entry_points.txt").write_text("[mamba4net]\nthirdparty = m4n_thirdparty.plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = Registry()
    assert reg.plugins["thirdparty"].distribution == "m4n-thirdparty"
    assert reg.plugins["thirdparty"].version == "1.2.3"
    init = reg.build("initializers", {"name": "thirdparty_init", "alpha": 2.0})
    assert init(None, None) == {"alpha": 2.0}
    sys.modules.pop("m4n_thirdparty.plugin", None)


def _install(tmp_path, dist_name: str, version: str, entry: str, module: str | None, source: str = "") -> None:
    """A package ``module`` with an installed dist-info declaring the entry point, on sys.path."""
    if module is not None:
        pkg = tmp_path / module
        pkg.mkdir()
        (pkg / "__init__.py").write_text("")
        (pkg / "plugin.py").write_text(textwrap.dedent(source))
    dist = tmp_path / f"{dist_name.replace('-', '_')}-{version}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist_name}\nVersion: {version}\n")
    target = f"{module}.plugin" if module else "no_such_module_xyz"
    (dist / "entry_points.txt").write_text(f"[mamba4net]\n{entry} = {target}\n")


GOOD_BASELINE = """
    from mamba4net.core.hookspecs import hookimpl
    MAMBA4NET_API = 1

    @hookimpl
    def mamba4net_register_baselines(register):
        register("fine_baseline", lambda params, task: object(), task="vp")
"""

RAISES_IN_HOOK = """
    from mamba4net.core.hookspecs import hookimpl

    @hookimpl
    def mamba4net_register_initializers(register):
        register("half_init", lambda params: None)

    @hookimpl
    def mamba4net_register_teachers(register):
        raise RuntimeError("cannot find my weights\\nsecond line")
"""

TAKES_A_BUILTIN_NAME = """
    from mamba4net.core.hookspecs import hookimpl

    @hookimpl
    def mamba4net_register_tasks(register):
        register("vp", lambda params: None)

    @hookimpl
    def mamba4net_register_losses(register):
        register("dup_loss", lambda params, **k: None)
"""

OTHER_API = """
    from mamba4net.core.hookspecs import hookimpl
    MAMBA4NET_API = 2

    @hookimpl
    def mamba4net_register_teachers(register):
        register("future_teacher", lambda params: None)
"""


def test_broken_plugins_are_set_aside_and_named(tmp_path, monkeypatch, capsys, caplog):
    """Beside a good third-party plugin: one that fails to import, one whose hook raises (after
    registering a component of another kind), one written for another plugin API. The built-ins and
    the good one work; each broken one is listed with its distribution and a one-line reason, and a
    config that names a component of a broken plugin is told which plugin broke."""
    from mamba4net.core.cli import main
    from mamba4net.core.config import load_config
    from mamba4net.registry.manager import set_default_registry

    _install(tmp_path, "m4n-good", "1.0", "good", "m4n_good", GOOD_BASELINE)
    _install(tmp_path, "m4n-noimport", "0.1", "noimport", None)
    _install(tmp_path, "m4n-raises", "0.2", "raises", "m4n_raises", RAISES_IN_HOOK)
    _install(tmp_path, "m4n-future", "3.0", "future", "m4n_future", OTHER_API)
    _install(tmp_path, "m4n-dup", "0.3", "zdup", "m4n_dup", TAKES_A_BUILTIN_NAME)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        with caplog.at_level("WARNING", logger="mamba4net"):
            reg = Registry()
            assert "fine_baseline" in reg.kind("baselines") and "hf_causal_lm" in reg.kind("teachers")
        assert set(reg.failed) == {"noimport", "raises", "future", "zdup"}
        assert "was refused: task 'vp' is registered twice" in reg.failed["zdup"].reason
        assert reg.get("tasks", "vp").owner == "vp" and "dup_loss" not in reg.kind("losses")
        assert reg.failed["noimport"].distribution == "m4n-noimport"
        assert "failed to import: ModuleNotFoundError" in reg.failed["noimport"].reason
        assert reg.failed["raises"].reason == ("failed in mamba4net_register_teachers: RuntimeError: "
                                               "cannot find my weights\\nsecond line")
        assert "written for plugin API 2" in reg.failed["future"].reason
        assert "half_init" not in reg.kind("initializers")  # nothing of a failed plugin stays
        assert any("plugin 'raises' (m4n-raises 0.2)" in r.getMessage() for r in caplog.records)
        with pytest.raises(UnknownComponentError, match=r"initializer 'half_init' comes from plugin 'raises' "
                                                        r"\(m4n-raises 0\.2\) failed in mamba4net_register_teachers"):
            reg.get("initializers", "half_init")
        with pytest.raises(UnknownComponentError, match=r"unknown teacher 'future_teacher'.*plugins that failed "
                                                        r"to load: .*plugin 'future' \(m4n-future 3\.0\)"):
            reg.get("teachers", "future_teacher")

        set_default_registry(reg)
        assert main(["plugins"]) == 0
        out = capsys.readouterr().out
        for name, dist in (("noimport", "m4n-noimport"), ("raises", "m4n-raises"), ("future", "m4n-future")):
            (line,) = [x for x in out.splitlines() if x.strip().startswith(f"{name} ")]
            assert "FAILED" in line and dist in line
        assert "fine_baseline" in out
        cfg = tmp_path / "c.yaml"
        cfg.write_text("name: x\ntask: {name: toy}\nteacher: {name: future_teacher}\n")
        assert main(["validate", str(cfg)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "plugin 'future' (m4n-future 3.0)" in err
    finally:
        set_default_registry(None)
        for mod in ("m4n_good.plugin", "m4n_raises.plugin", "m4n_future.plugin", "m4n_dup.plugin"):
            sys.modules.pop(mod, None)


def test_params_model_must_be_pydantic():
    class _P:
        @hookimpl
        def mamba4net_register_heads(self, register):
            register("h", lambda params: None, params=dict)

    reg = Registry(load_entry_points=False)
    reg.add_plugin(_P(), name="p")
    with pytest.raises(PluginError, match="expected a pydantic model"):
        reg.kind("heads")


class _Misspelled:
    @hookimpl
    def mamba4net_register_task(self, register):  # no such hook
        pass


class _Lenient:
    @hookimpl
    def mamba4net_register_heads(self, register):
        from pydantic import BaseModel

        class P(BaseModel):
            width: int = 1

        register("lenient", lambda params, task, d_model: None, params=P)


class _Broken:
    @hookimpl
    def mamba4net_register_tasks(self, register):
        raise RuntimeError("boom")


def test_plugin_mistakes_are_named():
    reg = Registry(load_entry_points=False)
    with pytest.raises(PluginError, match=r"plugin 'typo'.*mamba4net_register_task"):
        reg.add_plugin(_Misspelled(), name="typo")
    reg.add_plugin(_Lenient(), name="lenient")
    with pytest.raises(PluginError, match="accepts unknown keys"):
        reg.kind("heads")
    reg = Registry(load_entry_points=False)
    reg.add_plugin(_Broken(), name="broken")
    with pytest.raises(PluginError, match=r"plugin 'broken' failed in mamba4net_register_tasks: RuntimeError: boom"):
        reg.kind("tasks")
