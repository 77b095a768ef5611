"""The part of a muonlab optimizer that knows about torch.distributed.

A :class:`muonlab.optim.base.SpectralOptimizer` constructs one :class:`OptimizerDistribution` (a plain
dependency: this module imports nothing from the optimizers) and calls it at a few points, always with
parameter lists and tensors — never the optimizer's group settings:

- construction: :meth:`OptimizerDistribution.validate` resolves every param group (replicated,
  sharded, or single process) and raises on bad input (DTensor and plain tensors in one group,
  2-D meshes, unsupported placements) — locally, on every rank, before any collective;
- each step, before touching anything: :meth:`agree` — one all-reduce of three numbers per process
  group makes every rank take the same decision (skip on a non-finite gradient anywhere) and
  catches ranks whose parameter lists differ (a checksum), raising the same error everywhere;
- the matrix work, chunk by chunk: :meth:`chunk_bytes` says how large a chunk may be for the scratch
  budget, and :meth:`map_matrices` runs the optimizer's pure function of whole matrices once per matrix,
  on its owner rank, through :func:`muonlab.distributed.comm.map_whole`. The optimizer passes local
  tensors, the parameters (for their layout) and each matrix's cost; nothing here reads its settings.

Everything elementwise (momentum, the AdamW part, applying the update) stays where it is: on the
local shard of a DTensor, or on each rank's replica.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import Tensor

from muonlab.distributed.comm import CommStats, map_whole
from muonlab.distributed.plan import assign_owners
from muonlab.distributed.resolve import (
    Distribution,
    check_same_on_all_ranks,
    is_dtensor,
    layout_of,
    resolve_distribution,
    signature,
)


class OptimizerDistribution:
    """Per-optimizer distribution state: ``distributed`` is "auto", "none", a ProcessGroup or a 1-D DeviceMesh."""

    def __init__(self, distributed="auto") -> None:
        resolve_distribution([], distributed)  # checks the setting itself (no parameters needed)
        self.setting = distributed
        self.stats = CommStats()
        self._resolved: dict[int, tuple[tuple[int, ...], Distribution | None]] = {}

    # ------------------------------------------------------------------ construction
    def resolve(self, params: Sequence[Tensor], whole_matrices: bool = True, where: str = "param group") -> Distribution | None:
        """The distribution of one list of parameters (cached while the list is unchanged). ``whole_matrices``:
        they will be transformed as whole matrices, so their layouts must be ones :func:`map_whole` can gather."""
        key = tuple(id(p) for p in params)
        cached = self._resolved.get(key)
        if cached is not None:
            return cached[1]
        resolved = resolve_distribution(list(params), self.setting, where)
        if resolved is not None and whole_matrices:
            for i, p in enumerate(params):
                layout_of(p, f"{where}, parameter {i}")
        self._resolved[key] = (key, resolved)
        return resolved

    def validate(self, groups: Sequence[tuple[Sequence[Tensor], bool]]) -> None:
        """Resolve (and so check) every parameter list: ``groups`` are (params, whole_matrices) pairs."""
        for index, (params, whole) in enumerate(groups):
            self.resolve(params, whole, f"param group {index}")

    # ------------------------------------------------------------------ every step
    def agree(self, all_params: Sequence[Sequence[Tensor]], work: Sequence[tuple[str, list[Tensor]]], all_finite: bool) -> bool:
        """Every rank's verdict on "all gradients finite", and a check that all ranks step the same parameters.

        ``all_params``: every parameter list the optimizer holds; ``work``: (a label of how the list is updated,
        its parameters with a gradient) per list, as the optimizer is about to step them.
        Returns True when the gradients are finite on every rank; raises RuntimeError on every rank
        when the ranks' parameter lists (shapes, dtypes, layouts, which have gradients) differ."""
        groups = self._process_groups(all_params)
        if not groups:
            return all_finite
        sig = [(index, label) + entry for index, (label, params) in enumerate(work) for entry in signature(params)]
        checksum = float(zlib.crc32(repr(sig).encode()))
        finite_everywhere = True
        for process_group, device in groups:
            flags = torch.tensor([0.0 if all_finite else 1.0, checksum, -checksum], dtype=torch.float64, device=device)
            dist.all_reduce(flags, op=dist.ReduceOp.MAX, group=process_group)
            if flags[1].item() != -flags[2].item():
                # Some rank differs: gather the full lists (all ranks are here) for a precise message.
                check_same_on_all_ranks(sig, process_group, "the parameters the optimizer steps")
                raise RuntimeError("ranks disagree on the parameters the optimizer steps (checksums differ)")
            finite_everywhere = finite_everywhere and flags[0].item() == 0.0
        return finite_everywhere

    def chunk_bytes(self, params: Sequence[Tensor], budget: int) -> int:
        """How many bytes of whole matrices one chunk of the step may hold, for a per-rank scratch ``budget``.

        One process: a batch of matrices has at most about five copies alive (the inputs, their
        concatenation, the next iterate, and for square blocks the Gram matrix and polynomial): budget/5. Replicated (DDP): each rank transforms 1/W of the chunk (three copies) and
        receives the whole chunk's results: the chunk is budget·W/(W + 3). Sharded (FSDP2): each rank
        transforms 1/W of the chunk and sends and receives its shards of it: budget·W/5."""
        distribution = self.resolve(params)
        if distribution is None:
            return max(1, budget // 5)
        world_size = dist.get_world_size(distribution.group)
        if distribution.kind == "sharded":
            return max(1, budget * world_size // 5)
        return max(1, budget * world_size // (world_size + 3))

    def map_matrices(
        self,
        fn,
        inputs: list[Tensor],
        params: list[Tensor],
        costs: list[float],
        comm_dtype: torch.dtype | None = None,
    ) -> list[Tensor]:
        """``fn(inputs)`` with every matrix computed whole, once, on one rank; results as local tensors.

        ``inputs[i]`` is the local part (the shard under FSDP2, the whole tensor otherwise) of a tensor
        laid out like ``params[i]``; ``costs[i]`` weighs its work for the split across ranks. ``fn`` maps a
        list of whole tensors to as many whole results (pure; batched as it likes)."""
        distribution = self.resolve(params)
        if distribution is None:
            self._count(sum(costs), len(inputs))
            return fn(inputs)
        world_size = dist.get_world_size(distribution.group)
        cost_of = {tuple(p.shape): c for p, c in zip(params, costs)}
        owners = assign_owners([p.shape for p in params], world_size, cost=lambda s: cost_of[tuple(s)])
        rank = dist.get_rank(distribution.group)
        self._count(sum(c for c, owner in zip(costs, owners) if owner == rank), owners.count(rank))
        return map_whole(
            fn,
            inputs,
            [layout_of(p) for p in params],
            owners,
            distribution.group,
            self.stats,
            comm_dtype=comm_dtype,
            wrap=False,
        )

    # ------------------------------------------------------------------ helpers
    # Host-side counters: eager under torch.compile(opt.step), which would otherwise guard on their running values
    # and recompile at every step.
    @torch.compiler.disable
    def _count(self, flops: float, matrices: int) -> None:
        self.stats.flops += flops
        self.stats.matrices += matrices

    def _process_groups(self, all_params: Sequence[Sequence[Tensor]]) -> list[tuple[object, torch.device]]:
        seen: dict[int, tuple[object, torch.device]] = {}
        for params in all_params:
            distribution = self.resolve(params)
            if distribution is None or not params:
                continue
            key = id(distribution.group) if distribution.group is not None else 0
            if key not in seen:
                seen[key] = (distribution.group, _collective_device(distribution.group, params[0]))
        return list(seen.values())


def _collective_device(process_group, sample: Tensor) -> torch.device:
    """CPU for gloo, the parameters' accelerator for NCCL and friends."""
    backend = dist.get_backend(process_group)
    if backend == "gloo":
        return torch.device("cpu")
    local = sample.to_local() if is_dtensor(sample) else sample
    return local.device
