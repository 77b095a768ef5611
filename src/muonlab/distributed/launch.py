"""Run a function on W local processes with a gloo process group, and get their return values back.

Used by the test suite and ``muonlab bench dist`` (CPU, no ``torchrun`` needed). Each worker:
initializes the group (file:// rendezvous in a fresh temporary directory, collective timeout
``timeout`` so a mismatched collective fails instead of hanging), runs ``fn(rank, world_size, *args)``,
saves the return value, then ``barrier()`` and ``destroy_process_group()`` so the run ends cleanly.
The parent waits at most ``timeout`` seconds in total and kills the workers on expiry.
"""

from __future__ import annotations

import datetime
import os
import tempfile
import time
from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


class WorkerTimeout(RuntimeError):
    """The workers did not finish within the time limit (they have been killed)."""


def _worker(rank: int, world_size: int, root: str, timeout: float, threads: int, fn: Callable, args: tuple) -> None:
    torch.set_num_threads(threads)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{os.path.join(root, 'rendezvous')}",
        rank=rank,
        world_size=world_size,
        # collectives give up first, so a mismatch surfaces as an exception with a traceback
        timeout=datetime.timedelta(seconds=timeout / 2),
    )
    try:
        result = fn(rank, world_size, *args)
        tmp = os.path.join(root, f"result-{rank}.pt.tmp")
        torch.save(result, tmp)
        os.replace(tmp, os.path.join(root, f"result-{rank}.pt"))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def run_on_ranks(fn: Callable, world_size: int, *args, timeout: float = 90.0, threads: int = 1) -> list:
    """``[fn(rank, world_size, *args) for rank in range(world_size)]``, each on its own process.

    ``fn`` must be importable (a module-level function) and return what ``torch.load(weights_only=True)``
    reads back: tensors, numbers, strings, lists, tuples, dicts. An exception in any worker is re-raised here
    with the worker's traceback."""
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    with tempfile.TemporaryDirectory(prefix="muonlab-dist-") as root:
        context = mp.start_processes(
            _worker,
            args=(world_size, root, timeout, threads, fn, args),
            nprocs=world_size,
            join=False,
            start_method="spawn",
        )
        deadline = time.monotonic() + timeout
        try:
            while not context.join(timeout=0.5):
                if time.monotonic() > deadline:
                    raise WorkerTimeout(f"{world_size} workers running {getattr(fn, '__name__', fn)} did not finish in {timeout:.0f} s")
        finally:
            for process in context.processes:
                if process.is_alive():
                    process.kill()
                    process.join()
        return [torch.load(os.path.join(root, f"result-{rank}.pt"), weights_only=True) for rank in range(world_size)]
