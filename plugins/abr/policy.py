"""A trained sequence model (teacher or student) playing the simulator as an ABR policy.

Two ways to decide, chosen by what the backbone can do:

* **streaming** (a backbone with ``init_state``/``step``, e.g. the hybrid Mamba student): per chunk,
  feed this decision's tokens one recurrent step each, read the action, feed the action token.
  Work and memory per decision are constant; the history is never re-encoded. The steps go
  through the backbone's streaming decoder (:func:`mamba4net.core.streaming.decoder_for`: for the
  student, prepacked weights and state updated in place), built at every ``reset``.
* **re-encoding** (any backbone, e.g. the LLM teacher): per chunk, run the model over the last
  ``window`` decisions and read the action at the newest one.

Return conditioning (NetLLM): the first decision is asked for ``target_return``; after each chunk
the return-to-go drops by the reward (QoE) that chunk earned. Actions are the argmax of the logits.
Each decision runs with ``runtime.decision_threads`` torch threads (1 by default).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from mamba4net.core.runtime import decision_threads
from mamba4net.core.streaming import can_stream, decoder_for

from .encoder import N_ACTIONS


class SequencePolicy:
    """An :class:`~.rollout.AbrPolicy` around a ``NetModel`` (encoder -> backbone -> head).

    ``mode``: ``"auto"`` (stream when the backbone can), ``"stream"`` or ``"reencode"``.
    The rollout calls ``reset(n)``, then per chunk ``act(obs)`` and ``observe(reward)``.
    """

    def __init__(self, model, *, window: int, return_scale: float, target_return: float,
                 mode: str = "auto", s_len: int = 6):
        if mode not in ("auto", "stream", "reencode"):
            raise ValueError(f"unknown policy mode {mode!r}; expected auto, stream or reencode")
        if mode == "stream" and not can_stream(model):
            raise ValueError(f"{type(model.backbone).__name__} has no recurrent step: use mode 'reencode'")
        self.model, self.window, self.scale = model, window, return_scale
        self.target = target_return
        self.stream = can_stream(model) if mode == "auto" else mode == "stream"
        self.s_len = s_len
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype

    # --- AbrPolicy ---------------------------------------------------------------------------
    def reset(self, n: int) -> None:
        self.n, self.t = n, 0
        self.rtg = np.full(n, self.target / self.scale, dtype=np.float32)
        self.prev = np.full(n, N_ACTIONS, dtype=np.int64)
        self.hist: dict[str, list[np.ndarray]] = {"rtg": [], "states": [], "actions": []}
        self.decoder = decoder_for(self.model.backbone, n) if self.stream else None

    @torch.no_grad()
    def act(self, obs) -> np.ndarray:
        with decision_threads():
            return self._act(obs)

    def _act(self, obs) -> np.ndarray:
        state = np.asarray(obs.pensieve_state(self.s_len), dtype=np.float32)  # (N, 6, S)
        logits = self._stream(state) if self.stream else self._reencode(state)  # (N, 6)
        actions = logits.float().argmax(-1).cpu().numpy().astype(np.int64)
        if self.stream:
            self._feed_action(actions)
        self.hist["actions"].append(actions)
        self.prev, self.t = actions, self.t + 1
        return actions

    def observe(self, reward: np.ndarray) -> None:
        """The QoE each stream earned with its last chunk: lowers the return still asked for."""
        self.rtg = (self.rtg - np.asarray(reward, dtype=np.float32) / self.scale).astype(np.float32)

    # --- the two modes -----------------------------------------------------------------------
    def _tensor(self, x: np.ndarray, dtype=None) -> Tensor:
        return torch.as_tensor(x, device=self.device, dtype=dtype)

    def _stream(self, state: np.ndarray) -> Tensor:
        ts = self._tensor(np.full(self.n, self.t), torch.long)
        tokens = self.model.encoder.decision_tokens(self._tensor(self.rtg), self._tensor(state), self._tensor(self.prev), ts)
        for i in range(tokens.shape[1]):  # (N, n_pre, D): one recurrent step per token
            h = self.decoder.step(tokens[:, i].to(self.dtype))
        return self.model.head(h)  # (N, 6)

    def _feed_action(self, actions: np.ndarray) -> None:
        ts = self._tensor(np.full(self.n, self.t), torch.long)
        token = self.model.encoder.action_token(self._tensor(actions), ts)
        if token is not None:
            self.decoder.step(token.to(self.dtype))

    def _reencode(self, state: np.ndarray) -> Tensor:
        self.hist["rtg"].append(self.rtg.copy())
        self.hist["states"].append(state)
        start = max(0, self.t + 1 - self.window)
        acts = self.hist["actions"][start:] + [np.zeros(self.n, dtype=np.int64)]  # newest: not read
        prev = self.hist["actions"][start - 1] if start > 0 else np.full(self.n, N_ACTIONS, dtype=np.int64)
        batch = {
            "rtg": self._tensor(np.stack(self.hist["rtg"][start:], 1)),  # (N, T)
            "states": self._tensor(np.stack(self.hist["states"][start:], 1)),  # (N, T, 6, S)
            "actions": self._tensor(np.stack(acts, 1)),  # (N, T)
            "timesteps": self._tensor(np.broadcast_to(np.arange(start, self.t + 1), (self.n, self.t + 1 - start)).copy()),
            "prev_action": self._tensor(prev),  # (N,)
        }
        return self.model(batch).pred[:, -1]  # (N, 6)
