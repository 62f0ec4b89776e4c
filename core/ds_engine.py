"""DeepSpeed for the trainer: its JSON config from the pipeline config, the engines, safe checkpoint loads.

What the trainer hands DeepSpeed, and why:

* the generated config holds the batch geometry (``train_micro_batch_size_per_gpu`` = the stage's
  ``batch_size`` / processes, ``gradient_accumulation_steps`` = ``grad_accum``), the clipping norm,
  the ZeRO stage, offload and precision. A user JSON (``runtime.deepspeed_config``) is merged over
  it, but may not set what the stage's ``train`` section owns (batch, accumulation, clipping,
  optimizer, scheduler): one source of truth for those;
* a ``torch.optim.AdamW`` built by the trainer (no optimizer in the DeepSpeed config: that would
  compile a fused op, ~65 s on CPU, and change the update rule); the learning rate is set every
  step from ``lr_at``, the same schedule as the plain PyTorch path;
* ``bf16`` means ``torch.autocast`` (fp32 master weights and optimizer, bf16 matmuls), which runs on
  CPU and GPU; ``fp16`` is DeepSpeed's fp16 mode with loss scaling (GPU only).

Checkpoint files are DeepSpeed's own (``engine.save_checkpoint``: one model file, one optimizer
shard per rank). DeepSpeed reads them back with a full unpickler; here they are read with
``torch.load(weights_only=True)`` and an allow-list of the few DeepSpeed classes they contain, so
a tampered checkpoint can't run code.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mamba4net.core.errors import ConfigError, DataError
from mamba4net.core.schema import read_user_config

log = logging.getLogger("mamba4net")

def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def build_config(train, runtime, world: int, device: torch.device) -> dict[str, Any]:
    """The DeepSpeed config of one training stage (``train``: TrainParams, ``runtime``: RuntimeParams)."""
    if train.batch_size % world:
        raise ConfigError(f"batch_size {train.batch_size} can't be split evenly over {world} processes: "
                          f"make it a multiple of {world}")
    if runtime.precision == "fp16" and device.type != "cuda":
        raise ConfigError("runtime.precision fp16 needs a CUDA device (use bf16 or fp32 on CPU)")
    zero: dict[str, Any] = {"stage": runtime.zero_stage}
    if runtime.offload == "cpu":
        zero["offload_optimizer"] = {"device": "cpu"}
        if runtime.zero_stage == 3:
            zero["offload_param"] = {"device": "cpu"}
    cfg: dict[str, Any] = {
        "zero_force_ds_cpu_optimizer": False,  # offload with the torch AdamW (no DeepSpeedCPUAdam op)
        "train_micro_batch_size_per_gpu": train.batch_size // world,
        "gradient_accumulation_steps": train.grad_accum,
        "train_batch_size": train.batch_size * train.grad_accum,
        "zero_optimization": zero,
        "zero_allow_untested_optimizer": True,  # a torch AdamW, see the module docstring
        "steps_per_print": 2**31 - 1,  # the trainer logs
        "wall_clock_breakdown": False,
    }
    if train.clip_norm is not None:
        cfg["gradient_clipping"] = train.clip_norm
    if runtime.precision == "bf16":
        cfg["torch_autocast"] = {"enabled": True, "dtype": "bfloat16"}
    elif runtime.precision == "fp16":
        cfg["fp16"] = {"enabled": True, "auto_cast": True}
    if runtime.deepspeed_config:
        try:
            cfg = _merge(cfg, read_user_config(runtime.deepspeed_config))
        except ValueError as exc:
            raise ConfigError(f"runtime.deepspeed_config: {exc}") from None
    return cfg


def inference_config(runtime) -> dict[str, Any]:
    """ZeRO-3 without an optimizer: every rank holds 1/N of the frozen teacher's weights."""
    zero: dict[str, Any] = {"stage": 3}
    if runtime.offload == "cpu":
        zero["offload_param"] = {"device": "cpu"}
    return {"train_micro_batch_size_per_gpu": 1, "zero_optimization": zero, "steps_per_print": 2**31 - 1}


# -- checkpoints read without a full unpickler ----------------------------------------------------
def _allowed_globals() -> list:
    # plain records of numbers (what DeepSpeed pickles besides tensors, dicts and lists)
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]


def safe_load(path: str, map_location=None):
    """``torch.load(weights_only=True)`` with DeepSpeed's checkpoint classes allowed, nothing else."""
    try:
        with torch.serialization.safe_globals(_allowed_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # unpickling errors come in many types; name the file, in one line
        text = str(exc)
        why = re.search(r"Unsupported global: GLOBAL [\w.]+", text)  # a class outside the allow-list
        first = why.group(0) if why else (text.strip().splitlines() or [type(exc).__name__])[0]
        raise DataError(f"{path}: unreadable DeepSpeed checkpoint ({first[:200]})") from None


def _use_safe_loads(engine) -> None:
    from deepspeed.runtime.checkpoint_engine import TorchCheckpointEngine

    class SafeTorchCheckpointEngine(TorchCheckpointEngine):
        def load(self, path: str, map_location=None):
            return safe_load(path, map_location)

    current = engine.checkpoint_engine
    if type(current) is not TorchCheckpointEngine:  # a user chose another engine: leave it alone
        return
    safe = SafeTorchCheckpointEngine.__new__(SafeTorchCheckpointEngine)
    safe.__dict__.update(current.__dict__)
    engine.checkpoint_engine = safe


# -- engines ------------------------------------------------------------------------------------------
def training_engine(module: nn.Module, optimizer: torch.optim.Optimizer, config: dict[str, Any]):
    """``deepspeed.initialize`` on the trainable module with the trainer's AdamW."""
    import deepspeed

    engine, *_ = deepspeed.initialize(model=module, optimizer=optimizer, config=config)
    _use_safe_loads(engine)
    return engine


def inference_engine(module: nn.Module, runtime) -> nn.Module:
    """Shard a frozen module with ZeRO-3; call the returned module as before (on every rank)."""
    import deepspeed

    engine, *_ = deepspeed.initialize(model=module, config=inference_config(runtime))
    engine.module.eval()
    held = sum(p.ds_tensor.numel() for p in engine.module.parameters())
    full = sum(p.ds_numel for p in engine.module.parameters())
    log.info("teacher sharded with ZeRO-3: this rank holds %d of its %d parameters", held, full)
    return engine.module


def full_state(engine, part: nn.Module, trainable_only: bool) -> dict[str, torch.Tensor]:
    """Whole fp32 tensors of ``part`` (a sub-module of the engine's model), gathered from every rank.

    Trainable parameters come from the optimizer's fp32 master copy (what ``zero_to_fp32``
    reconstructs from a checkpoint), frozen ones from the model. Collective: call on every rank.
    """
    import deepspeed
    from deepspeed.utils import safe_get_full_fp32_param

    out: dict[str, torch.Tensor] = {}
    params = dict(part.named_parameters())
    frozen = [p for p in params.values() if not p.requires_grad]
    for name, p in params.items():
        if p.requires_grad:
            full = safe_get_full_fp32_param(p)
            out[name] = (full if full is not None else p.detach()).detach().float().cpu().clone()
    if not trainable_only:
        zero3 = engine.zero_optimization_partition_weights()
        with deepspeed.zero.GatheredParameters(frozen, enabled=zero3 and bool(frozen)):
            for name, p in params.items():
                if not p.requires_grad:
                    out[name] = p.detach().cpu().clone()
        for name, b in part.named_buffers():
            out[name] = b.detach().cpu().clone()
        order = list(part.state_dict().keys())  # the plain state_dict's order and names
        out = {k: out[k] for k in order if k in out}
    return {k: v.contiguous() for k, v in out.items()}


# -- consolidation of a sharded checkpoint (offline, one process) -------------------------------------
class _WeightsOnlyTorch:
    """``torch`` as seen by DeepSpeed's ``zero_to_fp32``, except that ``load`` is :func:`safe_load`."""

    def __getattr__(self, name: str):
        return getattr(torch, name)

    @staticmethod
    def load(f, map_location=None, **_ignored):  # weights_only=False, mmap=True: not honoured
        return safe_load(str(f), map_location)


def consolidate(tag_dir: str | Path, prefix: str = "model.") -> dict[str, torch.Tensor]:
    """Whole fp32 weights from a sharded DeepSpeed checkpoint folder (``.../ds/step-000120``).

    DeepSpeed's ``zero_to_fp32`` does the merging (ZeRO 1-3, any number of ranks), reading every
    file through :func:`safe_load`. Only the tensors under ``prefix`` are kept, with the prefix cut:
    with ``"model."`` the keys are those of the stage's model, as in ``final.safetensors``
    (checkpoints hold trainable tensors only: frozen weights come from the earlier stage).
    """
    from deepspeed.utils import zero_to_fp32

    tag_dir = Path(tag_dir)
    if not tag_dir.is_dir():
        raise DataError(f"{tag_dir}: no such DeepSpeed checkpoint folder")
    saved = zero_to_fp32.torch
    zero_to_fp32.torch = _WeightsOnlyTorch()
    try:
        state = zero_to_fp32.get_fp32_state_dict_from_zero_checkpoint(str(tag_dir.parent), tag=tag_dir.name)
    except DataError:
        raise
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as exc:
        raise DataError(f"{tag_dir}: can't consolidate this DeepSpeed checkpoint ({exc})") from None
    finally:
        zero_to_fp32.torch = saved
    return {k[len(prefix):]: v.float().contiguous() for k, v in state.items() if k.startswith(prefix)}
