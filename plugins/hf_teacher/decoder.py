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

    def step_many(self, x: Tensor) -> Tensor:
        if x.dim() != 3 or x.shape[0] != self.batch_size:
            raise ValueError(f"expected ({self.batch_size}, T, {self.backbone.d_model}) tokens, got {tuple(x.shape)}")
        hidden, self.cache = self.backbone.extend_cache(x, self.cache)
        return hidden  # (B, T, D)

    def step(self, x: Tensor) -> Tensor:
        return self.step_many(x[:, None])[:, 0]

    def states(self) -> Any:
        return self.cache
