"""The method contract: methods as plugins (roles, stages), their validation, check_method on the
built-in method and on a third-party method executed straight from CONTRIBUTING.md."""

import json
import re
import types
from pathlib import Path

import pytest
import yaml

from mamba4net.core.config import validate_data
from mamba4net.core.errors import ConfigError, PluginError
from mamba4net.core.hookspecs import hookimpl
from mamba4net.core.method import Method, Role, Stage
from mamba4net.core.pipeline import run_pipeline
from mamba4net.testing.methods import check_method

ROOT = Path(__file__).resolve().parents[1]


def _contributing_block(marker: str) -> str:
    text = (ROOT / "CONTRIBUTING.md").read_text()
    found = re.search(rf"<!-- {marker} -->\s*```\w+\n(.*?)```", text, re.S)
    assert found, f"CONTRIBUTING.md has no block after <!-- {marker} -->"
    return found.group(1)


def _relay_plugin() -> types.ModuleType:
    plugin = types.ModuleType("relay_method.plugin")
    exec(compile(_contributing_block("worked-method:plugin"), "CONTRIBUTING.md", "exec"), plugin.__dict__)
    return plugin


# --- the built-in method ---------------------------------------------------------------------

def test_builtin_method_declares_its_roles_and_stages(m4n_registry, tiny_config):
    method = validate_data(tiny_config, registry=m4n_registry).method
    assert method.name == "mamba4net" and method.stage_names == ["adapt_teacher", "init_student", "distill"]
    assert [(r.name, r.kind) for r in method.roles] == [("teacher", "teacher"), ("student", "student")]
    assert [s.name for s in method.writers("student")] == ["init_student", "distill"]


def test_check_method_passes_for_the_builtin_method(m4n_registry, tmp_path):
    summary = check_method("mamba4net", registry=m4n_registry, workdir=tmp_path)
    assert summary["kill"] == ["distill", 4] and summary["boundary"] == "init_student"
    assert set(summary["models"]) == {"teacher", "student", "toy_mean"}
    done = json.loads((tmp_path / "full" / "checkpoints" / "distill" / "done.json").read_text())
    assert done["writes"] == {"student": "final.safetensors"} and done["stage"] == "distill"


# --- a third-party method: two students, stages core has never heard of ---------------------------

def test_third_party_method_from_contributing(m4n_registry, tmp_path, tiny_config):
    m4n_registry.add_plugin(_relay_plugin(), name="relay")
    config = yaml.safe_load(_contributing_block("worked-method:config"))
    tiny_config.pop("train")
    run = run_pipeline(validate_data({**tiny_config, **config}, registry=m4n_registry), tmp_path / "run",
                       registry=m4n_registry)
    results = json.loads(run.results_path.read_text())
    assert {"teacher", "student", "small", "toy_mean"} == set(results["models"])
    assert results["kinds"] == {"toy_mean": "baseline", "teacher": "teacher", "student": "student", "small": "student"}
    assert results["roles"]["small"] == {"kind": "student", "deployed": True, "weights_from": "second_hop"}
    report = run.report_path.read_text()
    assert "| small |" in report and "| student |" in report and "small / teacher" in report
    bench = json.loads((run.root / "bench.json").read_text())
    assert set(bench["models"]) == {"teacher", "student", "small"}
    assert set(bench["ratios"]["by_student"]) == {"student", "small"}
    assert bench["models"]["small"]["params"] < bench["models"]["student"]["params"]
    assert {r["series"] for r in bench["latency"]} >= {"student_step", "small_step", "teacher_kv_step"}
    for role in ("student", "small"):
        assert (run.checkpoints / "export" / f"{role}.safetensors").exists()
    # each stage kept the weights of the role it wrote, and nothing else
    for stage, role in (("teach", "teacher"), ("first_hop", "student"), ("second_hop", "small")):
        done = json.loads((run.checkpoints / stage / "done.json").read_text())
        assert done["writes"] == {role: "final.safetensors"}
    assert set(results["efficiency"]["ratios_by_student"]) == {"student", "small"}


def test_check_method_passes_for_the_third_party_method(m4n_registry, tmp_path):
    m4n_registry.add_plugin(_relay_plugin(), name="relay")
    summary = check_method("relay", registry=m4n_registry, workdir=tmp_path, kill=("first_hop", 8))
    assert summary["stages"] == ["teach", "first_hop", "second_hop"] and summary["kill"] == ["first_hop", 8]


def test_check_method_catches_a_stage_that_does_not_replay(m4n_registry, tmp_path):
    """A stage whose run depends on process state (here: a counter) does not resume exactly."""
    calls = {"n": 0}

    def drifting(ctx):
        student = ctx.model("student")
        objective = ctx.objective(student)
        calls["n"] += 1
        scale = float(calls["n"])  # differs in the resumed process: the replay is not exact

        ctx.fit({"model": student, "objective": objective},
                lambda batch: (lambda loss, parts: (loss * scale, parts))(*objective(student(batch), None, batch)))

    class Drift:
        @hookimpl
        def mamba4net_register_methods(self, register):
            register("drift", lambda params: Method("drift", (Role("student", "student"),),
                                                    (Stage("train", drifting, writes=("student",), trains=True),)))

    m4n_registry.add_plugin(Drift(), name="drift")
    with pytest.raises(AssertionError, match="differs after the mid-stage resume"):
        check_method("drift", registry=m4n_registry, workdir=tmp_path)


# --- validation ------------------------------------------------------------------------------

def test_train_sections_are_checked_against_the_method(m4n_registry, tiny_config):
    tiny_config["train"]["distil"] = {"steps": 3}
    with pytest.raises(ConfigError, match=r"train\.distil: method 'mamba4net' has no training stage 'distil'; "
                                          r"its training stages: adapt_teacher, distill"):
        validate_data(tiny_config, registry=m4n_registry)
    tiny_config["train"].pop("distil")
    tiny_config["train"]["init_student"] = {"steps": 3}  # a stage, but one that does not train
    with pytest.raises(ConfigError, match="no training stage 'init_student'"):
        validate_data(tiny_config, registry=m4n_registry)


def test_a_stage_params_model_validates_its_section(m4n_registry, tiny_config):
    from mamba4net.core.schema import TrainParams

    class FreezeParams(TrainParams):
        freeze: list[str] = []

    class P:
        @hookimpl
        def mamba4net_register_methods(self, register):
            register("frz", lambda params: Method("frz", (Role("student", "student"),), (
                Stage("tune", lambda ctx: None, writes=("student",), trains=True, params=FreezeParams),)))

    m4n_registry.add_plugin(P(), name="frz")
    tiny_config.pop("train")
    loaded = validate_data({**tiny_config, "method": "frz", "train": {"tune": {"freeze": ["mlp"]}}}, registry=m4n_registry)
    assert loaded.train_params("tune").freeze == ["mlp"] and loaded.train_params("tune").losses == [
        {"name": "task", "weight": 1.0}]
    assert loaded.resolved()["train"]["tune"]["freeze"] == ["mlp"]
    with pytest.raises(ConfigError, match=r"train\.tune\.frieze: unknown key"):
        validate_data({**tiny_config, "method": "frz", "train": {"tune": {"frieze": []}}}, registry=m4n_registry)


def test_strategy_is_read_as_a_deprecated_method(m4n_registry, tiny_config, caplog):
    tiny_config["strategy"] = {"name": "mamba4net", "benchmark": False}
    loaded = validate_data(tiny_config, registry=m4n_registry)
    assert loaded.cfg.method == {"name": "mamba4net"} and loaded.cfg.benchmark.enabled is False
    assert "'strategy:' is deprecated" in caplog.text
    assert "strategy" not in loaded.resolved() and loaded.resolved()["method"] == {"name": "mamba4net"}
    tiny_config["method"] = {"name": "mamba4net"}
    with pytest.raises(ConfigError, match="give 'method:' only"):
        validate_data(tiny_config, registry=m4n_registry)


def test_unknown_method_and_bad_role_overrides_are_config_errors(m4n_registry, tiny_config):
    tiny_config["method"] = {"name": "mamba4nett"}
    with pytest.raises(ConfigError, match=r"method\.name.*unknown method 'mamba4nett'; did you mean 'mamba4net'"):
        validate_data(tiny_config, registry=m4n_registry)
    m4n_registry.add_plugin(_relay_plugin(), name="relay")
    tiny_config["method"] = {"name": "relay", "small": {"d_modle": 8}}
    tiny_config.pop("train")
    with pytest.raises(ConfigError, match=r"role 'small' of method 'relay' overrides student\.d_modle: unknown key"):
        validate_data(tiny_config, registry=m4n_registry)
    tiny_config["method"] = {"name": "relay"}
    tiny_config.pop("teacher")
    with pytest.raises(ConfigError, match=r"teacher: method 'relay' builds its teacher 'teacher' from 'teacher:', "
                                          r"which this config does not have"):
        validate_data(tiny_config, registry=m4n_registry)


def test_a_method_factory_must_return_a_method(m4n_registry, tiny_config):
    class Bad:
        @hookimpl
        def mamba4net_register_methods(self, register):
            register("bad", lambda params: ["adapt_teacher", "distill"])

    m4n_registry.add_plugin(Bad(), name="bad")
    tiny_config["method"] = "bad"
    with pytest.raises(PluginError, match="method 'bad' factory returned list"):
        validate_data(tiny_config, registry=m4n_registry)


@pytest.mark.parametrize("roles, stages, match", [
    ((Role("a", "student"), Role("a", "student")), (), "role 'a' is declared twice"),
    ((Role("a", "pupil"),), (), "role 'a' has kind 'pupil'"),
    ((Role("a", "student", node="students"),), (), "built from config key 'students'"),
    ((Role("a", "student"),), (Stage("x", print, writes=("b",)),), "stage 'x' names role 'b'"),
    ((Role("a", "student"),), (Stage("export", print),), "stage name 'export' is reserved"),
    ((Role("a", "student"),), (Stage("x", print), Stage("x", print)), "stage 'x' is declared twice"),
    ((Role("a", "student"),), (Stage("x", print, trains=True),), "stage 'x' trains but writes no role"),
    ((Role("ratios", "student"),), (), "role name 'ratios' is reserved"),
    ((Role("A", "student"),), (), "role name 'A' is not lowercase"),
])
def test_a_method_that_contradicts_itself_is_refused(roles, stages, match):
    with pytest.raises(ValueError, match=match):
        Method("m", roles, stages)


def test_a_deprecated_strategy_plugin_still_loads(m4n_registry, tiny_config, caplog):
    class Old:
        @hookimpl
        def mamba4net_register_strategies(self, register):
            register("old", lambda params: ["adapt_teacher"])

    m4n_registry.add_plugin(Old(), name="old")
    validate_data(tiny_config, registry=m4n_registry)
    assert "plugin 'old' implements mamba4net_register_strategies, which is deprecated and ignored" in caplog.text


def test_done_markers_without_or_with_a_damaged_weights_record(m4n_registry, tiny_config, tmp_path, caplog):
    from mamba4net.core.errors import DataError
    from mamba4net.core.pipeline import evaluate_run

    tiny_config["benchmark"] = {"enabled": False}
    run = run_pipeline(validate_data(tiny_config, registry=m4n_registry), tmp_path / "run", registry=m4n_registry)
    want = json.loads(run.results_path.read_text())["models"]["student"]["mse"]
    done = run.checkpoints / "distill" / "done.json"
    info = json.loads(done.read_text())
    # a run from before methods: no record, one role, final.safetensors -> read, with a warning
    done.write_text(json.dumps({k: v for k, v in info.items() if k != "writes"}))
    again = json.loads(evaluate_run(run.root, registry=m4n_registry).results_path.read_text())
    assert again["models"]["student"]["mse"] == pytest.approx(want, rel=1e-6)
    assert "no record of the roles it wrote" in caplog.text
    for damaged in ({"student": "../init_student/final.safetensors"}, ["final.safetensors"], {}):
        done.write_text(json.dumps({**info, "writes": damaged}))
        before = sorted(p.name for p in (run.root / "evaluations").iterdir())
        with pytest.raises(DataError, match=r"distill/done\.json: records no weights file of role 'student'"):
            evaluate_run(run.root, registry=m4n_registry)
        assert sorted(p.name for p in (run.root / "evaluations").iterdir()) == before  # nothing written


def test_check_method_catches_a_stage_that_changes_an_undeclared_role(m4n_registry, tmp_path):
    """A stage that trains the student but declares it writes the teacher: the run looks fine, the
    files do not hold what it evaluated."""

    def sly(ctx):
        student = ctx.model("student")
        objective = ctx.objective(student)
        ctx.fit({"model": student, "objective": objective}, lambda batch: objective(student(batch), None, batch))

    class Sly:
        @hookimpl
        def mamba4net_register_methods(self, register):
            register("sly", lambda params: Method("sly", (Role("teacher", "teacher"), Role("student", "student")), (
                Stage("train", sly, writes=("teacher",), trains=True),)))

    m4n_registry.add_plugin(Sly(), name="sly")
    with pytest.raises(AssertionError, match=r"student: mse [0-9.]+ (after the stage-boundary resume|when evaluate rebuilds)"):
        check_method("sly", registry=m4n_registry, workdir=tmp_path)


def test_resume_does_not_depend_on_the_global_random_state(m4n_registry, tmp_path):
    """A term with random parameters (hidden_align's projector) is built the same on a resume."""
    summary = check_method("mamba4net", registry=m4n_registry, workdir=tmp_path, config={
        "train": {"distill": {"losses": [{"name": "task"}, {"name": "mse_to_teacher"},
                                         {"name": "hidden_align", "weight": 0.1}]}}}, kill=("distill", 4))
    assert summary["boundary"] == "init_student"
