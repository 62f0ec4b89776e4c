"""Decisions -> tokens for return-conditioned ABR policies (NetLLM style, paper eq. 2).

Each decision ``t`` of an episode brings a return-to-go ``R_t`` (what the policy is asked to
earn from here on, divided by ``return_scale``), the Pensieve state ``s_t`` (6 rows x S columns,
see :meth:`.sim.Observation.pensieve_state`) and the action ``a_t`` (a bitrate index 0..5).
Two token layouts (``task.token_layout``):

    separate: [R_0, s_0, a_0, R_1, s_1, a_1, ...]    3 tokens per decision; a_t is read at s_t
    fused:    [x_0, x_1, ...]                        1 token per decision, x_t = f(R_t, s_t, a_{t-1})

The state embedding follows Pensieve's actor: scalars (last bitrate, buffer, chunks left) through
a linear layer each; the throughput, delay and next-chunk-size rows through a 1-D convolution each;
the six feature embeddings are concatenated and projected to ``d_model``. Every token of decision
``t`` gets the timestep embedding of ``t``, and a LayerNorm ends the embedding (as in the Decision
Transformer), so an LLM receives inputs of a familiar scale.

The same functions serve training (a whole window at once, :meth:`forward`) and streaming
(:meth:`decision_tokens` then :meth:`action_token`, one decision at a time), so both produce the
same tokens by construction.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

N_ACTIONS = 6  # bitrate levels
N_STEPS = 48  # timestep embeddings: one per video chunk (an episode decides chunks 1..47)
SCALAR_ROWS = (0, 1, 5)  # last bitrate, buffer, chunks left: the last column holds the value
SERIES_ROWS = (2, 3, 4)  # throughput history, delay history, next chunk sizes


class ABRStateEncoder(nn.Module):
    """``batch`` with ``rtg (B, T)``, ``states (B, T, 6, S)``, ``actions (B, T)``, ``timesteps (B, T)``
    -> tokens ``(B, T * tokens_per_decision, d_model)``."""

    def __init__(self, d_model: int, *, layout: str = "separate", hidden: int = 128,
                 conv_channels: int = 64, s_len: int = 6, kernel: int = 4):
        super().__init__()
        if layout not in ("separate", "fused"):
            raise ValueError(f"unknown token layout {layout!r}; expected 'separate' or 'fused'")
        self.d_model, self.layout, self.s_len = d_model, layout, s_len
        kernel = min(kernel, s_len)
        self.scalars = nn.ModuleList(nn.Linear(1, hidden) for _ in SCALAR_ROWS)
        self.convs = nn.ModuleList(nn.Conv1d(1, conv_channels, kernel) for _ in SERIES_ROWS)
        conv_out = conv_channels * (s_len - kernel + 1)
        self.series = nn.ModuleList(nn.Linear(conv_out, hidden) for _ in SERIES_ROWS)
        self.act = nn.LeakyReLU()
        self.state_proj = nn.Linear(6 * hidden, d_model)
        self.rtg = nn.Linear(1, d_model)
        self.action = nn.Embedding(N_ACTIONS + 1, d_model)  # index N_ACTIONS: "no action yet"
        self.timestep = nn.Embedding(N_STEPS, d_model)
        if layout == "fused":
            self.fuse = nn.Linear(3 * d_model, d_model)
        self.norm = nn.LayerNorm(d_model)

    @property
    def tokens_per_decision(self) -> int:
        return 3 if self.layout == "separate" else 1

    # --- the pieces --------------------------------------------------------------------------
    def embed_state(self, states: Tensor) -> Tensor:
        """states (..., 6, S) -> (..., d_model)."""
        lead = states.shape[:-2]
        x = states.reshape(-1, 6, states.shape[-1]).to(self.state_proj.weight.dtype)  # (N, 6, S)
        parts = []
        for row, lin in zip(SCALAR_ROWS, self.scalars):
            parts.append(self.act(lin(x[:, row, -1:])))  # (N, hidden)
        for row, conv, lin in zip(SERIES_ROWS, self.convs, self.series):
            series = x[:, row : row + 1, :]  # (N, 1, S)
            parts.append(self.act(lin(self.act(conv(series)).flatten(1))))  # (N, hidden)
        h = self.state_proj(torch.cat(parts, dim=-1))  # (N, d_model)
        return h.reshape(*lead, self.d_model)

    def _tokens(self, rtg: Tensor, states: Tensor, prev_actions: Tensor, timesteps: Tensor) -> Tensor:
        """Pre-action tokens of each decision: (..., n_pre, d_model), n_pre = 2 (separate) or 1 (fused).
        ``prev_actions``: the action before each decision (N_ACTIONS at an episode's start)."""
        dtype = self.rtg.weight.dtype
        t_emb = self.timestep(timesteps.clamp(0, N_STEPS - 1))  # (..., D)
        r = self.rtg(rtg.to(dtype).unsqueeze(-1))  # (..., D)
        s = self.embed_state(states)  # (..., D)
        if self.layout == "separate":
            return self.norm(torch.stack([r, s], dim=-2) + t_emb.unsqueeze(-2))  # (..., 2, D)
        a = self.action(prev_actions)  # (..., D)
        x = self.fuse(torch.cat([r, s, a], dim=-1)) + t_emb  # (..., D)
        return self.norm(x).unsqueeze(-2)  # (..., 1, D)

    # --- training: a whole window ------------------------------------------------------------
    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        rtg, states, actions, ts = batch["rtg"], batch["states"], batch["actions"], batch["timesteps"]
        B, T = actions.shape
        if states.shape[-1] != self.s_len:
            raise ValueError(f"states have {states.shape[-1]} columns, encoder was built for {self.s_len}")
        start = torch.full_like(actions[:, :1], N_ACTIONS)
        # the action before decision t; at a window's first decision it is the one in the batch
        prev = torch.cat([batch.get("prev_action", start[:, 0]).view(B, 1), actions[:, :-1]], dim=1)
        pre = self._tokens(rtg, states, prev, ts)  # (B, T, n_pre, D)
        if self.layout == "fused":
            return pre.reshape(B, T, self.d_model)  # (B, T, D)
        act = self.norm(self.action(actions) + self.timestep(ts.clamp(0, N_STEPS - 1)))  # (B, T, D)
        return torch.cat([pre, act.unsqueeze(2)], dim=2).reshape(B, 3 * T, self.d_model)  # (B, 3T, D)

    # --- streaming: one decision at a time ---------------------------------------------------
    def decision_tokens(self, rtg: Tensor, state: Tensor, prev_action: Tensor, timestep: Tensor) -> Tensor:
        """``rtg (B,)``, ``state (B, 6, S)``, ``prev_action (B,)``, ``timestep (B,)`` -> the tokens
        before the action, ``(B, n_pre, D)``; the last one is where the action is read."""
        return self._tokens(rtg, state, prev_action, timestep)

    def action_token(self, action: Tensor, timestep: Tensor) -> Tensor | None:
        """``(B,)`` -> ``(B, D)``, the token that records the chosen action (``None`` when fused)."""
        if self.layout == "fused":
            return None
        return self.norm(self.action(action) + self.timestep(timestep.clamp(0, N_STEPS - 1)))
