"""A trained sequence model (teacher or student) playing the ABR simulator.

The episode loop, the return conditioning and the two ways to decide (streaming through the
backbone's recurrent step, or re-encoding the last ``window`` decisions) are the shared
:class:`~mamba4net.plugins.seqpolicy.ReturnConditionedPolicy`; this module says what an ABR
decision is. Per chunk: the decision tokens embed (return still asked for, Pensieve state,
previous action, chunk index) (:meth:`.encoder.ABRStateEncoder.decision_tokens`), the policy head
reads the last one's hidden state, the action is the argmax of its 6 logits, and the action token
(separate layout only) follows. The first decision asks for ``target_return``; after each chunk the
return still asked for drops by the QoE that chunk earned (NetLLM).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from mamba4net.core.streaming import can_stream  # noqa: F401  (re-exported: tests and callers use it)
from mamba4net.plugins.seqpolicy import ReturnConditionedPolicy

from .encoder import N_ACTIONS


@dataclass
class Chunk:
    """One decision of every stream: what its tokens are made of, and (once taken) the action."""

    rtg: np.ndarray  # (N,) return still asked for / return_scale
    state: np.ndarray  # (N, 6, S) Pensieve state
    prev: np.ndarray  # (N,) previous action (N_ACTIONS at the first chunk)
    t: int  # chunk index in the episode
    action: np.ndarray | None = None


class SequencePolicy(ReturnConditionedPolicy):
    """An :class:`~.rollout.AbrPolicy` around a ``NetModel`` (encoder -> backbone -> head).

    ``mode``: ``"auto"`` (stream when the backbone can), ``"stream"`` or ``"reencode"``.
    The rollout calls ``reset(n)``, then per chunk ``act(obs)`` and ``observe(reward)``.
    """

    def __init__(self, model, *, window: int, return_scale: float, target_return: float,
                 mode: str = "auto", s_len: int = 6):
        super().__init__(model, window=window, return_scale=return_scale, target_return=target_return,
                         mode=mode, context="sliding", rtg_dtype=np.float32)
        self.s_len = s_len

    # --- AbrPolicy ---------------------------------------------------------------------------
    def reset(self, n: int) -> None:
        self.start_episode(n)

    def act(self, obs) -> np.ndarray:
        return self.decide(obs)

    def observe(self, reward: np.ndarray) -> None:
        """The QoE each stream earned with its last chunk: lowers the return still asked for."""
        self.spend(reward)

    # --- ReturnConditionedPolicy -------------------------------------------------------------
    def observe_decision(self, obs, step: int) -> Chunk:
        prev = self.history[-1].action if self.history else np.full(self.n, N_ACTIONS, dtype=np.int64)
        state = np.asarray(obs.pensieve_state(self.s_len), dtype=np.float32)  # (N, 6, S)
        return Chunk(self.rtg.value.copy(), state, prev, self.t)

    def decision_tokens(self, d: Chunk) -> tuple[Tensor, Tensor]:
        ts = self.tensor(np.full(self.n, d.t), torch.long)
        return self.model.encoder.decision_tokens(self.tensor(d.rtg), self.tensor(d.state), self.tensor(d.prev), ts), ts

    def read(self, hidden: list[Tensor], d: Chunk, ts: Tensor) -> np.ndarray:
        return _argmax(self.model.head(hidden[-1]))  # logits (N, 6)

    def action_token(self, actions: np.ndarray, d: Chunk, ts: Tensor) -> Tensor | None:
        return self.model.encoder.action_token(self.tensor(actions), ts)

    def reencode(self, history: list[Chunk], d: Chunk) -> np.ndarray:
        start = max(0, d.t + 1 - self.window)
        chunks = history[start:] + [d]
        acts = [c.action for c in history[start:]] + [np.zeros(self.n, dtype=np.int64)]  # newest: not read
        batch = {
            "rtg": self.tensor(np.stack([c.rtg for c in chunks], 1)),  # (N, T)
            "states": self.tensor(np.stack([c.state for c in chunks], 1)),  # (N, T, 6, S)
            "actions": self.tensor(np.stack(acts, 1)),  # (N, T)
            "timesteps": self.tensor(np.broadcast_to(np.arange(start, d.t + 1), (self.n, d.t + 1 - start)).copy()),
            "prev_action": self.tensor(chunks[0].prev),  # (N,)
        }
        return _argmax(self.model(batch).pred[:, -1])  # (N, 6)

    def record(self, d: Chunk, actions: np.ndarray) -> Chunk:
        d.action = actions
        return d


def _argmax(logits: Tensor) -> np.ndarray:
    return logits.float().argmax(-1).cpu().numpy().astype(np.int64)
