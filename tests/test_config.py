"""Config validation: every kind of bad input is one line naming the file, key path and line."""

import subprocess
import sys

import pytest
import yaml

from mamba4net.core.config import apply_override, load_config
from mamba4net.core.errors import ConfigError


def write(tmp_path, data, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False) if not isinstance(data, str) else data)
    return path


def test_valid_config_fills_defaults(tmp_path, tiny_config, m4n_registry):
    loaded = load_config(write(tmp_path, tiny_config), registry=m4n_registry)
    resolved = loaded.resolved()
    assert resolved["student"]["d_model"] == 16
    assert "headdim" in resolved["student"]  # plugin defaults written out
    assert resolved["train"]["distill"]["losses"][1]["name"] == "mse_to_teacher"
    assert resolved["train"]["distill"]["losses"][1]["weight"] == 1.0
    # the resolved config validates again to the same thing
    again = load_config(write(tmp_path, resolved, "again.yaml"), registry=m4n_registry).resolved()
    assert again == resolved


@pytest.mark.parametrize(
    "mutate,pattern",
    [
        (lambda c: c.update(bogus=1), r"cfg\.yaml: bogus \(line \d+\): unknown key"),
        (lambda c: c["train"]["distill"].update(steps="many"), r"train\.distill\.steps \(line \d+\): .*integer"),
        (lambda c: c["student"].update(d_model="wide"), r"student\.d_model \(line \d+\): .*integer"),
        (lambda c: c["student"].update(colour=3), r"student\.colour \(line \d+\): unknown key"),
        (lambda c: c["teacher"].update(name="hf_causal_llm"), r"teacher\.name \(line \d+\): unknown teacher 'hf_causal_llm'; did you mean 'hf_causal_lm'\?"),
        (lambda c: c["train"]["distill"]["losses"].append({"name": "kl"}), r"train\.distill\.losses\.2\.name .*unknown loss 'kl'"),
        (lambda c: c["train"].update(warmup={"steps": 50}), r"train\.warmup \(line \d+\): method 'mamba4net' has no training stage 'warmup'; its training stages: adapt_teacher, distill"),
        (lambda c: c.update(evaluate={"baselines": ["velocity"]}), r"evaluate\.baselines\.0\.name .*belongs to task 'vp', not 'toy'"),
    ],
)
def test_bad_configs(tmp_path, tiny_config, m4n_registry, mutate, pattern):
    mutate(tiny_config)
    with pytest.raises(ConfigError, match=pattern) as err:
        load_config(write(tmp_path, tiny_config), registry=m4n_registry)
    assert "\n" not in str(err.value)


def test_bad_yaml_syntax(tmp_path, m4n_registry):
    path = write(tmp_path, "task: {name: toy\nteacher: [\n")
    with pytest.raises(ConfigError, match=r"cfg\.yaml \(line \d+, column \d+\): invalid YAML"):
        load_config(path, registry=m4n_registry)


def test_yaml_tags_are_not_executed(tmp_path, m4n_registry):
    path = write(tmp_path, "task: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(path, registry=m4n_registry)


def test_missing_data_folder(tmp_path, m4n_registry, tiny_config):
    tiny_config["task"] = {"name": "vp", "data_dir": str(tmp_path / "nowhere")}
    with pytest.raises(ConfigError, match=r"task.* \(line \d+\): .*nowhere"):
        load_config(write(tmp_path, tiny_config), registry=m4n_registry)


def test_extends_and_set(tmp_path, tiny_config, m4n_registry):
    write(tmp_path, tiny_config, "base.yaml")
    child = write(tmp_path, {"extends": "base.yaml", "name": "child", "student": {"n_layers": 4, "attn_layers": [3]}})
    loaded = load_config(child, ["train.distill.steps=7", "train.distill.losses.1.weight=0.5", "seed=3"],
                         registry=m4n_registry)
    r = loaded.resolved()
    assert r["name"] == "child" and r["student"]["n_layers"] == 4 and r["student"]["d_model"] == 16
    assert r["train"]["distill"]["steps"] == 7 and r["seed"] == 3
    assert r["train"]["distill"]["losses"][1]["weight"] == 0.5


def test_set_errors_say_from_set(tmp_path, tiny_config, m4n_registry):
    with pytest.raises(ConfigError, match=r"student\.d_model \(from --set\)"):
        load_config(write(tmp_path, tiny_config), ["student.d_model=abc"], registry=m4n_registry)
    with pytest.raises(ConfigError, match="expected key.path=value"):
        apply_override({}, "nonsense")


def test_extends_cycle(tmp_path, m4n_registry):
    write(tmp_path, {"extends": "b.yaml"}, "a.yaml")
    write(tmp_path, {"extends": "a.yaml"}, "b.yaml")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "a.yaml", registry=m4n_registry)


@pytest.mark.parametrize(
    "content,needle",
    [
        ("task: {name: vp}\nteacher: {name: hf_causal_lm}\nstudent: {name: hybrid_mamba}\nlearning_rate: 3\n", "learning_rate (line 4): unknown key"),
        ("task: {name: vpp}\nteacher: {name: hf_causal_lm}\nstudent: {name: hybrid_mamba}\n", "unknown task 'vpp'; did you mean 'vp'?"),
        ("task: {name: vp\n", "invalid YAML"),
        ("task: {name: vp, data_dir: /no/such/dir}\nteacher: {name: hf_causal_lm}\nstudent: {name: hybrid_mamba}\n", "/no/such/dir"),
        ("task: {name: vp}\nteacher: {name: hf_causal_lm}\nstudent: {name: hybrid_mamba, n_layers: two}\n", "student.n_layers (line 3)"),
    ],
)
def test_cli_validate_exit_code_2_one_line(tmp_path, content, needle):
    path = write(tmp_path, content)
    proc = subprocess.run([sys.executable, "-m", "mamba4net.core.cli", "validate", str(path)],
                          capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_stage_sections_keep_their_default_losses(tmp_path, tiny_config, m4n_registry):
    del tiny_config["train"]["distill"]["losses"]
    tiny_config["train"]["adapt_teacher"]["losses"] = [{"name": "task", "weight": "1e-1"}]
    r = load_config(write(tmp_path, tiny_config), registry=m4n_registry).resolved()
    assert [n["name"] for n in r["train"]["distill"]["losses"]] == ["task", "mse_to_teacher"]
    assert r["train"]["adapt_teacher"]["losses"][0]["weight"] == 0.1


@pytest.mark.parametrize(
    "mutate,pattern",
    [
        (lambda c: c["runtime"].update(device="gpu"), r"runtime\.device .*pattern"),
        (lambda c: c["runtime"].update(kernels={"ssd_scan": "fastest"}), r"runtime\.kernels\.ssd_scan .*unknown kernel 'fastest'"),
        (lambda c: c["train"]["distill"].update(warmup_steps=20, steps=10), r"train\.distill .*warmup_steps \(20\) must be smaller"),
    ],
)
def test_runtime_and_schedule_checks(tmp_path, tiny_config, m4n_registry, mutate, pattern):
    mutate(tiny_config)
    with pytest.raises(ConfigError, match=pattern):
        load_config(write(tmp_path, tiny_config), registry=m4n_registry)


def test_extends_with_another_component_starts_afresh(tmp_path, tiny_config, m4n_registry):
    write(tmp_path, tiny_config, "base.yaml")
    child = write(tmp_path, {"extends": "base.yaml", "initializer": {"name": "random", "seed": 3}})
    assert load_config(child, registry=m4n_registry).resolved()["initializer"] == {"name": "random", "seed": 3}
    tiny_config["teacher"] = {"name": "hf_causal_lm", "model": "random", "num_layers": 1}
    write(tmp_path, tiny_config, "base.yaml")
    renamed = write(tmp_path, {"extends": "base.yaml", "teacher": {"name": "hf_causal_lm", "lora": {"r": 2}}})
    assert load_config(renamed, registry=m4n_registry).resolved()["teacher"]["num_layers"] == 1
