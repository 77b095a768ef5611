"""Data-parallel training set-up for the trainers: ``--parallel none|ddp|fsdp`` under ``torchrun``.

:func:`setup_parallel` reads the ``torchrun`` environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT),
initializes the process group (gloo on CPU, NCCL on CUDA) and returns a :class:`Parallel` that knows how
to wrap a model (DDP, or FSDP2 ``fully_shard`` per block then the root), to make every rank take the same
decision (:meth:`Parallel.any`), to average a logged number, and to save / load checkpoints of sharded
models with ``torch.distributed.checkpoint`` (written to a temporary folder, then renamed into place).
"""

from __future__ import annotations

import datetime
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from muonlab.devices import resolve_device

PARALLEL_STRATEGIES = ("none", "ddp", "fsdp")


@dataclass
class Parallel:
    strategy: str = "none"
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    owns_group: bool = False  # we initialized the process group, so we tear it down

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.strategy != "none"

    def wrap(self, model: nn.Module, blocks: nn.ModuleList | None = None) -> nn.Module:
        """The module to call for training forwards: DDP(model), or ``model`` itself sharded in place by FSDP2.

        With FSDP2 each entry of ``blocks`` becomes its own unit (one all-gather per block), the rest of
        the parameters (embeddings, final norm, head; tied weights included) belong to the root unit."""
        if self.strategy == "ddp":
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
        if self.strategy == "fsdp":
            from torch.distributed.device_mesh import init_device_mesh
            from torch.distributed.fsdp import fully_shard

            mesh = init_device_mesh(self.device.type, (self.world_size,))
            for block in blocks or ():
                fully_shard(block, mesh=mesh)
            fully_shard(model, mesh=mesh)
        return model

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any rank (e.g. Ctrl-C seen by one rank)."""
        if not self.active:
            return flag
        value = torch.tensor([1.0 if flag else 0.0], device=self._collective_device())
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item() > 0)

    def mean(self, value: float) -> float:
        """The average of a per-rank number (the loss of each rank's slice → the loss of the global batch)."""
        if not self.active:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self._collective_device())
        dist.all_reduce(tensor)
        return float(tensor.item()) / self.world_size

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def close(self) -> None:
        """Barrier, then destroy the process group we created (so the run ends without an abort)."""
        if self.owns_group and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()

    def _collective_device(self) -> torch.device:
        return torch.device("cpu") if dist.get_backend() == "gloo" else self.device

    # ---------------------------------------------------------------- sharded checkpoints
    def save_sharded(self, folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Model and optimizer state (DTensor shards) with torch.distributed.checkpoint; atomic by rename."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict

        tmp = folder.with_name(folder.name + ".tmp")
        if self.is_main and tmp.exists():
            shutil.rmtree(tmp)
        self.barrier()
        model_sd, optim_sd = get_state_dict(model, optimizer)
        dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(tmp))
        self.barrier()
        if self.is_main:
            old = folder.with_name(folder.name + ".old")
            if folder.exists():
                os.replace(folder, old)
            os.replace(tmp, folder)
            if old.exists():
                shutil.rmtree(old)
        self.barrier()

    def load_sharded(self, folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        model_sd, optim_sd = get_state_dict(model, optimizer)
        state = {"model": model_sd, "optim": optim_sd}
        dcp.load(state, checkpoint_id=str(folder))
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])


def setup_parallel(strategy: str, device_name: str = "auto") -> Parallel:
    """A :class:`Parallel` for ``strategy`` ("none", "ddp", "fsdp"); "ddp"/"fsdp" need a ``torchrun`` launch
    (or an initialized process group). The device is ``cuda:LOCAL_RANK`` when CUDA is used."""
    if strategy not in PARALLEL_STRATEGIES:
        raise ValueError(f"--parallel must be one of {', '.join(PARALLEL_STRATEGIES)}, got {strategy!r}")
    device = resolve_device(device_name)
    if strategy == "none":
        return Parallel(device=device)
    want_cuda = device.type == "cuda"
    owns = False
    if not dist.is_initialized():
        if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
            raise ValueError(
                f"--parallel {strategy} needs a distributed launch: run it as "
                f"`torchrun --nproc_per_node N -m muonlab train --parallel {strategy} ...`"
            )
        backend = "nccl" if want_cuda else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=10))
        owns = True
    rank, world_size = dist.get_rank(), dist.get_world_size()
    if want_cuda:
        local_rank = int(os.environ.get("LOCAL_RANK", rank % max(1, torch.cuda.device_count())))
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    return Parallel(strategy=strategy, rank=rank, world_size=world_size, device=device, owns_group=owns)
