"""A backbone's streaming decoder: what a policy holds to decide one token at a time.

``decoder_for(backbone, batch_size, state=None)`` returns the backbone's own ``decoder(...)`` when it
has one (the hybrid Mamba student's comes from the kernel op ``stream_decoder``), else a plain
wrapper of the ``StreamingBackbone`` protocol's ``init_state``/``step``. Either way:

    decoder.step(x)   # x (B, D), one token per stream -> hidden (B, D), the state advanced
    decoder.states()  # the state in the backbone's ``step`` format
    decoder.reset(batch_size, state=None)  # a new stream, same weights (the state, or empty)
    decoder.step_many(x)  # optional: x (B, T, D), T tokens per stream -> hidden (B, T, D) in one call

``step_tokens(decoder, x)`` calls ``step_many`` where a decoder has it, else ``step`` T times.

A recurrent backbone (``can_stream``: the student) keeps a constant-size state. A backbone may
instead offer only ``decoder(...)`` (``has_decoder``), e.g. the LLM teacher's KV cache: a stream
then attends to all of itself, so it equals re-encoding only a context that starts where the
stream starts.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import Tensor


def can_stream(backbone_or_model) -> bool:
    """Whether a backbone, or a model's ``.backbone``, implements the ``StreamingBackbone`` protocol
    (``init_state``/``step``)."""
    b = getattr(backbone_or_model, "backbone", backbone_or_model)
    return callable(getattr(b, "init_state", None)) and callable(getattr(b, "step", None))


def _own_decoder(backbone):
    """The backbone's ``decoder`` method, if it has one (not a submodule that happens to be named
    ``decoder``, e.g. an LSTM baseline's)."""
    make = getattr(backbone, "decoder", None)
    return make if inspect.ismethod(make) else None


def has_decoder(backbone_or_model) -> bool:
    """Whether a backbone (or a model's ``.backbone``) has a streaming decoder: a recurrent step
    (:func:`can_stream`) or a ``decoder(...)`` method of its own, such as a teacher's KV cache,
    whose cost per token grows with the stream."""
    b = getattr(backbone_or_model, "backbone", backbone_or_model)
    return can_stream(b) or _own_decoder(b) is not None


class StepDecoder:
    """``init_state``/``step`` behind the decoder interface (functional: a new state per call)."""

    def __init__(self, backbone, batch_size: int, state: Any = None):
        self.backbone = backbone
        self.reset(batch_size, state)

    def reset(self, batch_size: int, state: Any = None) -> None:
        self._state = state if state is not None else self.backbone.init_state(batch_size)

    @torch.no_grad()
    def step(self, x: Tensor) -> Tensor:
        h, self._state = self.backbone.step(x, self._state)
        return h

    def states(self) -> Any:
        return self._state


def decoder_for(backbone, batch_size: int, state: Any = None):
    """The fastest streaming decoder ``backbone`` offers for ``batch_size`` streams."""
    make = _own_decoder(backbone)
    if make is not None:
        return make(batch_size, state)
    if not can_stream(backbone):
        raise TypeError(f"{type(backbone).__name__} has no recurrent step (init_state/step)")
    return StepDecoder(backbone, batch_size, state)


def step_tokens(decoder, x: Tensor) -> Tensor:
    """T tokens per stream through ``decoder``: x (B, T, D) -> hidden (B, T, D), with the decoder's
    ``step_many`` (one call's overhead for all T) where it has one."""
    many = getattr(decoder, "step_many", None)
    if callable(many):
        return many(x)
    return torch.stack([decoder.step(x[:, t]) for t in range(x.shape[1])], 1)
