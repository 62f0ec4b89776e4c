"""Model size: parameter counts and the on-disk bytes of what must be deployed.

Sizes are measured by writing safetensors files (to a temporary folder) and reading their size, so
they include the format's header. Tensors that share storage (tied weights) are written once.

A backbone may say which of its parameters ``forward`` never reads (``unused_parameter_names()``,
e.g. an LLM's token-embedding table when the task's encoders supply ``inputs_embeds``); sizes are
then reported with and without them. A backbone with ``lora_state_dict()`` (a LoRA-adapted
teacher) also gets the size of its adapters alone, and of what adaptation trained (adapters plus
the task's encoder and head): what a deployment adds on top of a shared LLM.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from mamba4net.core.protocols import count_parameters


def _unique(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop later names of a tensor already present (tied weights are stored once)."""
    seen, out = set(), {}
    for name, t in tensors.items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape)) if t.numel() else (name,)
        if key not in seen:
            seen.add(key)
            out[name] = t
    return out


def file_bytes(tensors: dict[str, torch.Tensor], folder: Path | None = None) -> int:
    """Bytes of ``tensors`` written as one safetensors file."""
    with tempfile.TemporaryDirectory(dir=folder, prefix=".size-") as tmp:
        path = Path(tmp) / "weights.safetensors"
        save_file({k: v.detach().contiguous().cpu() for k, v in _unique(tensors).items()}, str(path))
        return path.stat().st_size


def size_facts(model: torch.nn.Module, folder: Path | None = None) -> dict:
    """Parameters and deployed bytes of a NetModel (``encoder``, ``backbone``, ``head``).

    ``folder``: where the temporary files go (default: the system's temp folder)."""
    backbone = model.backbone
    names = getattr(backbone, "unused_parameter_names", None)
    unused = {f"backbone.{n}" for n in (names() if callable(names) else [])}
    params = dict(model.named_parameters())
    n_unused = sum(params[n].numel() for n in unused if n in params)
    state = model.state_dict()
    facts = {
        "params": count_parameters(model),
        "backbone_params": count_parameters(backbone),
        "unused_params": n_unused,
        "params_without_unused": count_parameters(model) - n_unused,
        "tensor_bytes": sum(t.numel() * t.element_size() for t in _unique(state).values()),
        "deploy_bytes": file_bytes(state, folder),
        "unused_parameter_names": sorted(unused),
    }
    facts["deploy_bytes_without_unused"] = (
        file_bytes({k: v for k, v in state.items() if k not in unused}, folder) if unused else facts["deploy_bytes"]
    )
    lora = getattr(backbone, "lora_state_dict", None)
    if callable(lora):
        adapters = lora()
        facts["lora_params"] = sum(t.numel() for t in adapters.values())
        facts["lora_bytes"] = file_bytes(adapters, folder) if adapters else 0
        trained = {f"backbone.{k}": v for k, v in adapters.items()}
        for part in ("encoder", "head"):
            trained.update({f"{part}.{k}": v for k, v in getattr(model, part).state_dict().items()})
        facts["adapter_bytes"] = file_bytes(trained, folder)
    return facts
