"""What one deployed VP prediction is, for ``mamba4net export`` (:class:`mamba4net.api.DeploySpec`).

A prediction reads one history window: the encoder makes ``his_window`` tokens (offsets from the
newest sample, so the whole window changes with every new sample), the backbone steps through them
from the empty state, the head reads the last hidden state. Nothing carries over between windows.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mamba4net.core.onnx_export import DeploySpec

from .data import SCALE


class _WindowTokens(nn.Module):
    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, history: Tensor, *absolute: Tensor) -> Tensor:
        batch = {"history": history, **({"history_abs": absolute[0]} if absolute else {})}
        return self.encoder(batch)  # (b, his_window, D)


def vp_deploy_spec(task, model) -> DeploySpec:
    h = task.his_window
    inputs = {"history": 0.01 * torch.randn(1, h, 3)}
    if model.encoder.absolute:
        inputs["history_abs"] = torch.rand(1, h, 3) - 0.5
    scale = ", ".join(f"{s:g}" for s in SCALE)
    return DeploySpec(
        inputs=inputs, encoder=_WindowTokens(model.encoder), head=model.head, output="offsets", stateful=False,
        notes={"history": f"the last {h} samples (roll, pitch, yaw in degrees, 5 Hz) minus the newest one, "
                          f"wrapped into [-180, 180) and divided by ({scale})",
               **({"history_abs": f"the same samples' absolute angles divided by ({scale})"}
                  if model.encoder.absolute else {}),
               "offsets": f"the next {task.fut_window} samples as offsets from the newest one, in the "
                          f"units of history: multiply by ({scale}) and add the newest sample"},
        constants={"his_window": h, "fut_window": task.fut_window},
    )
