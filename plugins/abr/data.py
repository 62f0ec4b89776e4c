"""Experience-pool episodes -> return-conditioned training windows.

A sample is ``window`` consecutive decisions of one episode, starting at ``t0``:

    rtg[t]       = (sum of the episode's rewards from decision t on) / return_scale
    states[t]    = the Pensieve state seen before decision t          (6, S)
    actions[t]   = the bitrate index the behaviour policy chose
    timesteps[t] = t0 + t;   prev_action = actions[t0 - 1] (N_ACTIONS at the episode start)

With ``window = None`` (or T) every sample is a whole episode of T decisions. With a shorter
window every start ``0 .. T - window`` of every episode is a sample.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from mamba4net.plugins.seqpolicy import episode_windows, returns_to_go

from .encoder import N_ACTIONS


class PoolWindows:
    """A split of the ABR task for the trainer (``TaskData``): windows over an experience pool."""

    def __init__(self, states: np.ndarray, actions: np.ndarray, rewards: np.ndarray, *,
                 window: int | None, return_scale: float):
        E, T = actions.shape
        window = T if window is None else window
        if states.shape[:2] != (E, T) or rewards.shape != (E, T):
            raise ValueError(f"pool arrays disagree: states {states.shape}, actions {actions.shape}, rewards {rewards.shape}")
        if not 1 <= window <= T:
            raise ValueError(f"window {window} must be within 1..{T}")
        self.window = window
        self.states = torch.as_tensor(states, dtype=torch.float32)  # (E, T, 6, S)
        self.actions = torch.as_tensor(actions, dtype=torch.long)  # (E, T)
        self.rtg = torch.as_tensor(returns_to_go(rewards) / return_scale, dtype=torch.float32)  # (E, T)
        starts, _ = episode_windows(np.arange(E + 1) * T, window, partial=False)  # every start 0..T-window
        self.index = torch.as_tensor(np.stack([starts // T, starts % T], -1))  # (samples, 2): episode, start

    def __len__(self) -> int:
        return len(self.index)

    def batch(self, indices: Tensor) -> dict[str, Tensor]:
        ep, t0 = self.index[indices].unbind(-1)  # (B,), (B,)
        t = t0[:, None] + torch.arange(self.window)  # (B, W)
        e = ep[:, None]
        prev_t = (t0 - 1).clamp_min(0)
        prev = torch.where(t0 > 0, self.actions[ep, prev_t], torch.full_like(t0, N_ACTIONS))
        return {
            "rtg": self.rtg[e, t],  # (B, W)
            "states": self.states[e, t],  # (B, W, 6, S)
            "actions": self.actions[e, t],  # (B, W)
            "timesteps": t,  # (B, W)
            "prev_action": prev,  # (B,)
        }
