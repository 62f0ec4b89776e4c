"""A trained sequence model (teacher or student) playing a simulator as a return-conditioned policy.

Per episode the policy asks for ``target_return`` at its first decision and, after each reward,
for what is still missing (:class:`~.returns.ReturnToGo`). Each decision is a few *decision
tokens* (what the model sees before it acts) and, once the action is known, an optional *action
token* the next decision sees. Two ways to decide, chosen by what the backbone can do:

* **streaming** (a backbone with ``init_state``/``step``, e.g. the hybrid Mamba student): the
  decision tokens go through the backbone's streaming decoder
  (:func:`mamba4net.core.streaming.decoder_for`: for the student, prepacked weights and state
  updated in place), one recurrent step per token, and the head reads their hidden states. The
  action token is stepped with the next decision's tokens, so each decision is one
  :func:`~mamba4net.core.streaming.step_tokens` call (one step's overhead, not one per token,
  where the decoder has ``step_many``). The history is never re-encoded: work and memory per
  decision are constant. The decoder is reset for the next episode, and built again only when
  the weights have changed (a decoder snapshots them).
  With context *blocks* (below) a backbone that has only a KV-cache decoder (the LLM teacher,
  :func:`~mamba4net.core.streaming.has_decoder`) streams the same way: the cache restarts with
  each block, so each decision runs only its own tokens against the block's cached keys and
  values, and takes the decision re-encoding the block would (up to float rounding).
* **re-encoding** (any backbone): the model runs over the decisions in context and the newest one
  is read.

The context is either ``"sliding"`` (the last ``window`` decisions; streaming keeps the whole
episode in its state) or ``"blocks"`` (decisions grouped in blocks of ``window`` from the
episode's start, the context restarting at each block, exactly the training windows of stride
``window``: both ways then see the same tokens and take the same decisions). Every decision runs
without autograd and with ``runtime.decision_threads`` torch threads (1 by default).

A task subclasses :class:`ReturnConditionedPolicy` and supplies four methods: ``observe_decision``
(the simulator's observation -> a decision record), ``decision_tokens``, ``read`` and
``action_token`` for streaming, and ``reencode`` for re-encoding.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from mamba4net.core.runtime import decision_threads
from mamba4net.core.streaming import can_stream, decoder_for, has_decoder, step_tokens

from .returns import ReturnToGo

MODES = ("auto", "stream", "reencode")
CONTEXTS = ("sliding", "blocks")


def _weights_key(module: torch.nn.Module) -> tuple:
    """Changes whenever a parameter is replaced or written in place (an optimizer step, a loaded
    state dict): a streaming decoder snapshots the weights, so a new one is built then."""
    return tuple((p.data_ptr(), p._version) for p in module.parameters())


class ReturnConditionedPolicy:
    """The episode loop shared by every return-conditioned sequence policy (see the module doc).

    ``mode``: ``"auto"`` (stream when the backbone can), ``"stream"`` or ``"reencode"``.
    ``rtg_dtype``: the precision the return still asked for is kept in.
    """

    def __init__(self, model, *, window: int, return_scale: float, target_return: float, mode: str = "auto",
                 context: str = "sliding", rtg_dtype=np.float32):
        if mode not in MODES:
            raise ValueError(f"unknown policy mode {mode!r}; expected {', '.join(MODES)}")
        if context not in CONTEXTS:
            raise ValueError(f"unknown policy context {context!r}; expected {', '.join(CONTEXTS)}")
        streamable = can_stream(model) or (context == "blocks" and has_decoder(model))
        if mode == "stream" and not streamable:
            kv = " (its KV-cache decoder is exact for context blocks only)" if has_decoder(model) else ""
            raise ValueError(f"{type(model.backbone).__name__} has no recurrent step{kv}: use mode 'reencode'")
        if window < 1:
            raise ValueError(f"a policy's window must be at least 1 decision, got {window}")
        self.model, self.window, self.context = model, window, context
        self.stream = streamable if mode == "auto" else mode == "stream"
        self.rtg = ReturnToGo(target_return, return_scale, rtg_dtype)
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype
        self.n = self.t = 0
        self.history: list[Any] = []
        self.decoder = None
        self._decoder_key: tuple | None = None  # (streams, weights) the decoder was built for
        self.pending: Tensor | None = None  # an action token not yet stepped (see _stream)

    # --- the episode -------------------------------------------------------------------------
    def start_episode(self, n: int) -> None:
        """A new episode of ``n`` parallel streams: the full target asked again, no history."""
        self.n, self.t = n, 0
        self.rtg.reset(n)
        self.history = []
        if self.stream:
            key = (n, _weights_key(self.model.backbone))
            if self.decoder is not None and key == self._decoder_key:
                self.decoder.reset(n)  # same weights: keep the packed weights (and CUDA graphs)
            else:
                self.decoder, self._decoder_key = decoder_for(self.model.backbone, n), key
        self.pending = None

    def spend(self, reward) -> None:
        """What each stream earned since its last decision: lowers the return still asked for."""
        self.rtg.spend(reward)

    @torch.no_grad()
    def decide(self, obs) -> Any:
        """One decision for every stream: the action the task's :meth:`read` or :meth:`reencode`
        returns."""
        with decision_threads():
            # the decision's position in its context block (its index in the episode when sliding)
            step = self.t % self.window if self.context == "blocks" else self.t
            if self.context == "blocks" and step == 0 and self.t > 0:
                self.history, self.pending = [], None
                if self.stream:
                    self.decoder.reset(self.n)
            decision = self.observe_decision(obs, step)
            action = self._stream(decision, step) if self.stream else self.reencode(self.history, decision)
            self.history.append(self.record(decision, action))
            self.t += 1
            return action

    def _stream(self, decision, step: int):
        tokens, aux = self.decision_tokens(decision)  # (N, k, D)
        tokens, lead = tokens.to(self.dtype), 0
        if self.pending is not None:  # the previous action's token goes first, in the same call
            tokens, lead, self.pending = torch.cat([self.pending[:, None], tokens], 1), 1, None
        hidden = step_tokens(self.decoder, tokens).unbind(1)[lead:]  # k recurrent steps, one call
        action = self.read(hidden, decision, aux)
        if self.context == "blocks" and step == self.window - 1:
            return action  # the block's last decision: its action token would feed a discarded state
        token = self.action_token(action, decision, aux)
        if token is not None:
            self.pending = token.to(self.dtype)  # stepped with the next decision's tokens
        return action

    def tensor(self, x, dtype=None) -> Tensor:
        return torch.as_tensor(x, device=self.device, dtype=dtype)

    # --- what a task supplies ----------------------------------------------------------------
    def observe_decision(self, obs, step: int) -> Any:
        """The simulator's observation -> this decision's record (what tokens are made of; the
        return still asked for is ``self.rtg.value``)."""
        raise NotImplementedError

    def decision_tokens(self, decision) -> tuple[Tensor, Any]:
        """The tokens before the action, (N, k, D), and anything :meth:`read` and
        :meth:`action_token` need besides."""
        raise NotImplementedError

    def read(self, hidden: tuple[Tensor, ...], decision, aux) -> Any:
        """The action from the decision tokens' hidden states (k tensors of (N, D))."""
        raise NotImplementedError

    def action_token(self, action, decision, aux) -> Tensor | None:
        """The token (N, D) that tells the next decision what was done (None: no such token)."""
        return None

    def reencode(self, history: list[Any], decision) -> Any:
        """The action from the model run over ``history`` (this episode's decisions in the
        current context: the whole episode when sliding, its block otherwise) and ``decision``."""
        raise NotImplementedError

    def record(self, decision, action) -> Any:
        """What the history keeps of a decision once taken (default: the decision itself)."""
        return decision
