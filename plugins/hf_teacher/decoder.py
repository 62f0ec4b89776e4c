"""The teacher's streaming decoder: new tokens against a KV cache of the stream so far.

Unlike a recurrent student's decoder, its cost and memory per token grow with the stream (every
new token attends to all earlier ones); what it saves over re-encoding is running the earlier
tokens through the model again. Positions count from the stream's start, so it equals the
teacher's ``forward`` over the whole stream (up to float rounding) only for a stream that starts
where the re-encoded context starts: a sequence policy's context *blocks*
(:class:`mamba4net.plugins.seqpolicy.ReturnConditionedPolicy`), where the decoder is reset at
each block.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class KVCacheDecoder:
    """``step(x (B, D))`` / ``step_many(x (B, T, D))`` -> hidden states, the cache grown in place;
    ``reset(batch_size, state=None)`` starts a new stream (``state``: a cache to continue from);
    ``states()`` the cache (a transformers ``DynamicCache``, None before the first token)."""

    def __init__(self, backbone, batch_size: int, state: Any = None):
        self.backbone = backbone
        self.reset(batch_size, state)

    def reset(self, batch_size: int, state: Any = None) -> None:
        self.batch_size, self.cache = batch_size, state

    @torch.no_grad()
    def step_many(self, x: Tensor) -> Tensor:
        if x.dim() != 3 or x.shape[0] != self.batch_size:
            raise ValueError(f"expected ({self.batch_size}, T, {self.backbone.d_model}) tokens, got {tuple(x.shape)}")
        out = self.backbone.base_model(inputs_embeds=x.to(self.backbone.dtype), past_key_values=self.cache,
                                       use_cache=True)
        if out.past_key_values is None:  # transformers drops the cache while training with checkpointing
            raise RuntimeError(f"teacher {self.backbone.source or ''!r} returned no KV cache (in training mode with "
                               f"gradient checkpointing?): decide with the model in eval() mode")
        self.cache = out.past_key_values
        return out.last_hidden_state.to(x.dtype)  # (B, T, D)

    def step(self, x: Tensor) -> Tensor:
        return self.step_many(x[:, None])[:, 0]

    def states(self) -> Any:
        return self.cache
