"""FLOPs of a model's forward pass, per sample: what ``torch.utils.flop_counter`` sees (matmuls,
convolutions, attention), with kernels that declare their FLOPs (the SSD scan, whose GPU kernels the
counter cannot see into) counted by their declaration (:func:`mamba4net.core.kernels.counting_flops`).

Elementwise work (activations, norms, the scan's decay) is not counted, as torch's counter does
not count it: the figures compare models by their matmul work, the usual convention."""

from __future__ import annotations

from typing import Any, Callable

import torch

from mamba4net.core.kernels import counting_flops


@torch.no_grad()
def count_flops(fn: Callable[[], Any], batch_size: int) -> dict[str, float]:
    """FLOPs of one call of ``fn`` (e.g. ``lambda: model(batch)``) on ``batch_size`` samples:
    ``{"total", "per_sample"}``."""
    with counting_flops() as tally:
        fn()
    return {"total": tally.total, "per_sample": tally.total / max(1, batch_size)}


def model_flops(model, batch: dict, batch_size: int) -> dict[str, float]:
    """FLOPs per sample of a networking model (encoder, backbone, head) on a task batch."""
    was = model.training
    model.eval()
    try:
        return count_flops(lambda: model(batch), batch_size)
    finally:
        model.train(was)
