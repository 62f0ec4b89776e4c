"""What one deployed ABR decision is, for ``mamba4net export`` (:class:`mamba4net.api.DeploySpec`).

A decision of the fused layout is one token: the encoder embeds (return-to-go, Pensieve state,
previous action, timestep), the backbone steps once, the policy head gives 6 logits. The backbone's
state carries over from chunk to chunk through the episode, as in :class:`.policy.SequencePolicy`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mamba4net.core.onnx_export import DeploySpec, ExportError

from .encoder import N_ACTIONS


class _DecisionTokens(nn.Module):
    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, rtg: Tensor, state: Tensor, prev_action: Tensor, timestep: Tensor) -> Tensor:
        return self.encoder.decision_tokens(rtg, state, prev_action, timestep)  # (b, 1, D)


def abr_deploy_spec(task, model) -> DeploySpec:
    if task.params.token_layout != "fused":
        raise ExportError("abr: only the fused token layout (one token per decision) is exported; "
                          "this run used token_layout: separate")
    s_len = model.encoder.s_len
    return DeploySpec(
        inputs={"rtg": torch.full((1,), task.target_return / task.params.return_scale),
                "state": torch.rand(1, 6, s_len),
                "prev_action": torch.full((1,), N_ACTIONS, dtype=torch.long),
                "timestep": torch.zeros(1, dtype=torch.long)},
        encoder=_DecisionTokens(model.encoder), head=model.head, output="logits", stateful=True,
        notes={"rtg": f"return still asked for / return_scale: starts at {task.target_return:.6g} / "
                      f"{task.params.return_scale:g}, minus each chunk's QoE / return_scale after it",
               "state": f"Pensieve's normalised state (6 x {s_len}), history in the last columns",
               "prev_action": f"the previous chunk's bitrate index; {N_ACTIONS} before the first",
               "timestep": "the decision's index in the episode, from 0",
               "logits": "6 bitrate logits: the action is their argmax"},
        constants={"target_return": float(task.target_return), "return_scale": float(task.params.return_scale),
                   "s_len": s_len},
    )
