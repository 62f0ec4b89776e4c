"""Return-conditioned sequence policies: the machinery a decision task shares (a library plugin).

A task whose teacher and student learn from trajectories of other policies and then act in a
simulator (NetLLM's recipe: ABR, CJS, or a task of your own) needs the same five things. They are
here, once, and :mod:`mamba4net.plugins.abr` and :mod:`mamba4net.plugins.cjs` are built on them:

* :mod:`.returns`: returns-to-go of stored episodes, the best episodes of each trace
  (:func:`best_per_group`, for filtered imitation), and the return a policy still asks for while
  it plays (:class:`ReturnToGo`);
* :mod:`.pool`: experience pools stored without pickle (safetensors arrays + a JSON sidecar, both
  checked on load; :class:`StoredPool`), cached by their spec (:func:`cached_pool`);
* :mod:`.windows`: training samples as windows over a pool's episodes (:func:`episode_windows`);
* :mod:`.policy`: a trained model playing the simulator (:class:`ReturnConditionedPolicy`),
  streaming (constant work per decision for a backbone with a recurrent step; with context
  blocks, also a teacher's KV cache of the block) or re-encoding its context (any backbone), with
  the same decisions either way;
* :mod:`.runs`: finished runs whose trained policy adds episodes to the pool (``task.pool.runs``,
  self-improvement across runs: :class:`PoolRun`, :func:`open_pool_run`).

The task keeps what is its own: the simulator, what a decision's tokens are and how the head's
output becomes an action. This package registers no hooks; a task plugin imports it. Its names
load on first use, so a task's config module can import :class:`PoolRun` without torch.
"""

import importlib

_EXPORTS = {"ReturnConditionedPolicy": ".policy", "StoredPool": ".pool", "cached_pool": ".pool",
            "ReturnToGo": ".returns", "best_per_group": ".returns", "returns_to_go": ".returns",
            "episode_windows": ".windows", "PoolRun": ".runs", "open_pool_run": ".runs"}
__all__ = sorted(_EXPORTS)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value
