"""Several processes, one run: process group, rank helpers, and the local launcher (``--nproc N``).

The rank layout follows torchrun's environment variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``), so the same code runs under ``mamba4net run --nproc N``, under
``torchrun`` and under the ``deepspeed`` launcher (several nodes).

Every helper is a no-op in a single process without a process group, so the plain PyTorch path
never touches ``torch.distributed``. Collectives go through ``torch.distributed`` directly
(DeepSpeed initializes it): gloo on CPU, NCCL on CUDA.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from typing import Sequence

import torch
import torch.distributed as dist

from mamba4net.core.errors import ConfigError

log = logging.getLogger("mamba4net")


# -- who am I ------------------------------------------------------------------------------------
def initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if initialized() else int(os.environ.get("RANK", 0))


def world_size() -> int:
    return dist.get_world_size() if initialized() else int(os.environ.get("WORLD_SIZE", 1))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def is_main() -> bool:
    """Rank 0: the only process that writes metrics, checkpoints' JSON, results and reports."""
    return rank() == 0


# -- process group -------------------------------------------------------------------------------
def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def setup(engine: str, device: torch.device) -> torch.device:
    """Join the run's process group when the engine is DeepSpeed; return this rank's device.

    A single process started without a launcher gets a one-process group of its own (DeepSpeed
    needs one). The plain PyTorch engine runs in one process only.
    """
    if engine != "deepspeed":
        if int(os.environ.get("WORLD_SIZE", 1)) > 1:
            raise ConfigError(
                f"WORLD_SIZE is {os.environ['WORLD_SIZE']} but runtime.engine is torch: "
                "several processes need runtime.engine: deepspeed"
            )
        return device
    from mamba4net.core.paths import cache_dir

    # DeepSpeed compiles a shared-memory op once (40-50 s on CPU); keep it in the project cache
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(cache_dir() / "torch_extensions"))
    if "WORLD_SIZE" not in os.environ:
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1",
                          MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank())
        torch.cuda.set_device(device)
    else:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # no GPU probe (and no warning about it)
    if not initialized():
        import deepspeed
        from deepspeed.utils import logger as ds_logger

        ds_logger.setLevel(logging.WARNING)
        # DeepSpeed's ZeRO all-gather calls a torch API that warns on every call
        warnings.filterwarnings("ignore", message=r".*all_gather_into_tensor.* is deprecated", category=FutureWarning)
        deepspeed.init_distributed(dist_backend="nccl" if device.type == "cuda" else "gloo",
                                   verbose=False)
    return device


def _device_for_collectives() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def barrier() -> None:
    if initialized() and world_size() > 1:
        dist.barrier()


def mean_across_ranks(values: dict[str, float]) -> dict[str, float]:
    """Average a dict of floats over ranks (keys must be the same on every rank)."""
    if not initialized() or world_size() == 1 or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=_device_for_collectives())
    dist.all_reduce(t)
    t /= world_size()
    return {k: float(v) for k, v in zip(keys, t.tolist())}


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on at least one (so all ranks stop together)."""
    if not initialized() or world_size() == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=_device_for_collectives())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def all_gather_rows(t: torch.Tensor) -> torch.Tensor:
    """Concatenate along dim 0 the equally shaped tensors of every rank, in rank order."""
    if not initialized() or world_size() == 1:
        return t
    dev = _device_for_collectives()
    parts = [torch.empty_like(t, device=dev) for _ in range(world_size())]
    dist.all_gather(parts, t.to(dev).contiguous())
    return torch.cat([p.to(t.device) for p in parts])


def shard_of(n: int) -> tuple[int, int]:
    """This rank's slice ``[start, stop)`` of ``n`` items cut into ``world_size()`` equal slices."""
    w, r = world_size(), rank()
    if n % w:
        raise ConfigError(f"a batch of {n} can't be split evenly over {w} processes: make it a multiple of {w}")
    per = n // w
    return r * per, (r + 1) * per


# -- the local launcher ----------------------------------------------------------------------------
def launch_local(cmd: Sequence[str], nproc: int, env: dict[str, str] | None = None,
                 poll_s: float = 0.2, timeout_s: float | None = None) -> int:
    """Run ``cmd`` as ``nproc`` ranks on this machine (torchrun's variables, a free port).

    Returns 0 when every rank succeeds. When one rank fails, the others are stopped (they would
    otherwise wait in a collective until gloo's 30-minute timeout) and its exit code is returned
    (128 + s for a rank killed by signal s). Past ``timeout_s`` every rank is stopped: 124.
    Rank 0 keeps the terminal's progress bars; the other ranks log warnings only.
    """
    if nproc < 1:
        raise ConfigError(f"--nproc must be at least 1, got {nproc}")
    base = {**os.environ, **(env or {})}
    base.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), WORLD_SIZE=str(nproc),
                LOCAL_WORLD_SIZE=str(nproc))
    procs = []
    for r in range(nproc):
        procs.append(subprocess.Popen(list(cmd), env={**base, "RANK": str(r), "LOCAL_RANK": str(r)}))
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    try:
        while True:
            if deadline is not None and time.monotonic() > deadline:
                log.error("ranks still running after %.0f s; stopping them", timeout_s)
                _stop(procs)
                return 124
            codes = [p.poll() for p in procs]
            failed = [(r, c) for r, c in enumerate(codes) if c not in (None, 0)]
            if failed:
                r, code = failed[0]
                log.error("rank %d exited with code %d; stopping the other ranks", r, code)
                _stop(procs)
                return code if code > 0 else 128 - code  # killed by signal s: 128 + s
            if all(c == 0 for c in codes):
                return 0
            time.sleep(poll_s)
    except KeyboardInterrupt:
        _stop(procs)
        raise


def _stop(procs: list[subprocess.Popen], grace_s: float = 5.0) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def cli_command(argv: Sequence[str]) -> list[str]:
    """The command line that runs ``mamba4net`` with ``argv`` in a child process."""
    return [sys.executable, "-m", "mamba4net.core.cli", *argv]
