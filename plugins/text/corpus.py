"""The corpus, the tokenizer and the LLM's embedding matrix, all from local files.

The tokenizer is read once from the model's files (a GGUF file holds one) and kept as a Hugging
Face tokenizer folder in the cache (``$MAMBA4NET_CACHE/tokenizers/<name>-<hash>``)."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path

import torch

from mamba4net.core.errors import DataError
from mamba4net.core.paths import cache_dir

log = logging.getLogger("mamba4net")


def read_corpus(corpus: str | None) -> tuple[str, str]:
    """(text, where it came from)."""
    if corpus is None:
        import pydoc_data.topics as topics

        return "\n\n".join(topics.topics[k] for k in sorted(topics.topics)), "pydoc_data.topics (CPython)"
    path = Path(corpus).expanduser()
    if path.is_dir():
        files = sorted(path.glob("*.txt"))
        if not files:
            raise DataError(f"{path}: no .txt files in the corpus folder (task.corpus)")
    elif path.is_file():
        files = [path]
    else:
        raise DataError(f"{path}: no such corpus file or folder (task.corpus)")
    parts = []
    for f in files:
        try:
            parts.append(f.read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            raise DataError(f"{f}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return "\n\n".join(parts), str(path)


def _model_files(model: str) -> tuple[Path, Path | None]:
    """(the model's folder, its GGUF file if the tokenizer must come from one)."""
    from mamba4net.plugins.hf_teacher.loading import SMOLLM2, resolve_model_dir, smollm2_gguf_path

    if model == SMOLLM2:
        gguf = smollm2_gguf_path()
        return resolve_model_dir(model), gguf
    path = Path(model).expanduser()
    if path.suffix.lower() == ".gguf":
        return resolve_model_dir(model), path
    return resolve_model_dir(model), None


def load_tokenizer(model: str):
    from transformers import AutoTokenizer

    folder, gguf = _model_files(model)
    if gguf is None:
        return AutoTokenizer.from_pretrained(str(folder))
    key = hashlib.sha1(f"{gguf.resolve()}|{gguf.stat().st_size}".encode()).hexdigest()[:12]
    cached = cache_dir() / "tokenizers" / f"{gguf.stem}-{key}"
    if (cached / "tokenizer.json").exists():
        return AutoTokenizer.from_pretrained(str(cached))
    log.info("reading the tokenizer of %s (once)", gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tmp = cached.with_name(f"{cached.name}.{os.getpid()}.tmp")
    tokenizer.save_pretrained(str(tmp))
    if cached.exists():  # another process got there first
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.replace(cached)
    return tokenizer


def embedding_matrices(model: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(input embedding (V, D), output matrix (V, D)) of the model: the same tensor when tied."""
    from safetensors import safe_open

    folder, _ = _model_files(model)
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise DataError(f"{folder}: no safetensors weights to read the embedding matrix from")
    found: dict[str, torch.Tensor] = {}
    for f in files:
        with safe_open(str(f), framework="pt") as sf:
            for name in sf.keys():
                if name.endswith("embed_tokens.weight") or name == "lm_head.weight":
                    found["in" if name.endswith("embed_tokens.weight") else "out"] = sf.get_tensor(name).float()
    if "in" not in found:
        raise DataError(f"{folder}: no embed_tokens.weight in its safetensors files")
    return found["in"], found.get("out", found["in"])
