"""Taps: named intermediate tensors of a model's forward pass, collected only when asked for.

A loss term declares the taps it reads (``needs_taps = {"student": [...], "teacher": [...]}``); a
stage then runs each model through :func:`forward_with_taps`, which registers forward hooks for
exactly those names for the duration of one forward pass and puts the tensors in
``ModelOutput.taps``. Nothing is hooked, and nothing costs anything, when no term asks.

Where the taps come from: a backbone's optional ``tap_points() -> {name: TapPoint}``. Core names
the common ones and builds them from a list of blocks (:func:`block_tap_points`):

* ``block_in.<i>`` / ``block_out.<i>``: the hidden state entering / leaving residual block ``i``;

and a backbone adds its own (the built-in teacher: ``attn_probs.<i>``, the per-head softmax
attention probabilities ``(B, H, L, L)`` of layer ``i``, computed with eager attention only while
they are tapped; the hybrid Mamba student: ``mixer.<i>.<quantity>``). Patterns may use ``*`` for
one dot-separated part: ``block_out.*`` is every block's output.
"""

from __future__ import annotations

import re
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Iterable, Iterator, Sequence

from torch import Tensor, nn

from mamba4net.core.errors import ConfigError
from mamba4net.core.protocols import ModelOutput


@dataclass(frozen=True)
class TapPoint:
    """Where a tap is read: ``read(args, kwargs, output)`` of ``module``'s forward call gives the
    tensor. ``enable``: a context manager factory the model needs while this tap is collected
    (e.g. eager attention, so that attention probabilities exist); entered once per collection."""

    module: nn.Module
    read: Callable[[tuple, dict, Any], Tensor]
    enable: Callable[[], ContextManager] | None = None


def _hidden_in(args: tuple, kwargs: dict, output: Any) -> Tensor:
    return args[0] if args else kwargs["hidden_states"]


def _hidden_out(args: tuple, kwargs: dict, output: Any) -> Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


def block_tap_points(blocks: Sequence[nn.Module]) -> dict[str, TapPoint]:
    """``block_in.<i>`` and ``block_out.<i>`` for residual blocks whose forward takes the hidden
    state first (or as ``hidden_states=``) and returns it (or a tuple starting with it)."""
    points: dict[str, TapPoint] = {}
    for i, block in enumerate(blocks):
        points[f"block_in.{i}"] = TapPoint(block, _hidden_in)
        points[f"block_out.{i}"] = TapPoint(block, _hidden_out)
    return points


def tap_points(model: nn.Module) -> dict[str, TapPoint]:
    """The tap points of a networking model (its backbone's) or of a backbone; ``{}`` if none."""
    backbone = getattr(model, "backbone", model)
    points = getattr(backbone, "tap_points", None)
    return dict(points()) if callable(points) else {}


def _pattern(p: str) -> re.Pattern:
    return re.compile("^" + r"\.".join("[^.]+" if part == "*" else re.escape(part) for part in p.split(".")) + "$")


def expand(patterns: Iterable[str], available: Iterable[str], who: str = "model") -> list[str]:
    """Tap names matching ``patterns`` (in the order of ``available``); a pattern that matches
    nothing is a one-line error listing what the model offers."""
    available = list(available)
    out: list[str] = []
    for p in patterns:
        regex = _pattern(p)
        hits = [n for n in available if regex.match(n)]
        if not hits:
            shown = ", ".join(available[:12]) + (" ..." if len(available) > 12 else "")
            raise ConfigError(f"tap '{p}': the {who} has no such tap; it offers: {shown or 'none'}")
        out += [h for h in hits if h not in out]
    return out


@contextmanager
def collecting(model: nn.Module, names: Sequence[str]) -> Iterator[dict[str, Tensor]]:
    """Within the block, forward passes of ``model`` fill the yielded dict with the named taps
    (patterns allowed). Hooks are removed and enabled modes restored on exit."""
    points = tap_points(model)
    names = expand(names, points, who=type(getattr(model, "backbone", model)).__name__)
    got: dict[str, Tensor] = {}
    with ExitStack() as stack:
        enabled: set[int] = set()
        for name in names:
            point = points[name]
            if point.enable is not None and id(point.enable) not in enabled:
                enabled.add(id(point.enable))
                stack.enter_context(point.enable())

            def hook(module, args, kwargs, output, name=name, read=point.read):
                got[name] = read(args, kwargs, output)

            stack.callback(point.module.register_forward_hook(hook, with_kwargs=True).remove)
        yield got


def forward_with_taps(model: nn.Module, batch: Any, names: Sequence[str] = ()) -> ModelOutput:
    """``model(batch)`` with the named taps in ``out.taps`` (a plain call when none is asked)."""
    if not names:
        return model(batch)
    with collecting(model, names) as got:
        out = model(batch)
    out.taps = dict(got)
    return out
