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


def test_plugin_import_failure_is_named(tmp_path, monkeypatch):
    dist = tmp_path / "broken-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[mamba4net]\nbroken = no_such_module_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError, match="plugin 'broken' .* failed to import"):
        Registry()


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
