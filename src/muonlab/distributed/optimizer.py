"""The part of a muonlab optimizer that knows about torch.distributed.

A :class:`muonlab.optim.base.SpectralOptimizer` constructs one :class:`OptimizerDistribution` (a plain
dependency: this module imports nothing from the optimizers) and calls it at a few points, always with
parameter lists and tensors — never the optimizer's group settings:

- construction: :meth:`OptimizerDistribution.validate` resolves every param group (replicated,
  sharded, or single process) and raises on bad input (DTensor and plain tensors in one group,
  meshes that are not sub-meshes of one, ``Partial`` placements) — locally, on every rank, before any
  collective;
- each step, before touching anything: :meth:`agree` — one all-reduce of three numbers per process
  group makes every rank take the same decision (skip on a non-finite gradient anywhere) and
  catches ranks whose parameter lists differ (a checksum), raising the same error everywhere;
- the matrix work, chunk by chunk: :meth:`chunk_bytes` says how large a chunk may be for the scratch
  budget, and :meth:`map_matrices` runs the optimizer's pure function of whole matrices once per matrix,
  on its owner rank, through :func:`muonlab.distributed.comm.map_whole`. The optimizer passes local
  tensors, the parameters (for their layout), each matrix's cost and, optionally, how each parameter is
  cut into blocks (:class:`~muonlab.distributed.blocks.MatrixBlocks`: pieces that are whole blocks — an
  expert stack cut on its expert dim, heads cut on head boundaries — are computed where they live, with no
  collective); nothing here reads its settings.

Everything elementwise (momentum, the AdamW part, applying the update) stays where it is: on the
local shard of a DTensor, or on each rank's replica.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import Tensor

from muonlab.distributed.blocks import MatrixBlocks, local_sections
from muonlab.distributed.comm import LOCAL, CommStats, map_whole
from muonlab.distributed.layout import Layout
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
    """Per-optimizer distribution state: ``distributed`` is "auto", "none", a ProcessGroup or a DeviceMesh."""

    def __init__(self, distributed="auto") -> None:
        resolve_distribution([], distributed)  # checks the setting itself (no parameters needed)
        self.setting = distributed
        self.stats = CommStats()
        self._resolved: dict[tuple[int, ...], Distribution | None] = {}
        self._layouts: dict[int, tuple[Tensor, Layout]] = {}

    # ------------------------------------------------------------------ construction
    def resolve(self, params: Sequence[Tensor], whole_matrices: bool = True, where: str = "param group") -> Distribution | None:
        """The distribution of one list of parameters (cached while the list is unchanged). ``whole_matrices``:
        they will be transformed as whole matrices, so their layouts must be ones :func:`map_whole` can gather."""
        key = tuple(id(p) for p in params)
        if key in self._resolved:
            return self._resolved[key]
        resolved = resolve_distribution(list(params), self.setting, where)
        if resolved is not None and whole_matrices:
            for i, p in enumerate(params):
                self.layout(p, resolved, f"{where}, parameter {i}")  # raises on placements we cannot handle
        self._resolved[key] = resolved
        return resolved

    def layout(self, p: Tensor, distribution: Distribution, name: str = "parameter") -> Layout:
        """``p``'s :class:`Layout` over the distribution's process group (cached per parameter)."""
        cached = self._layouts.get(id(p))
        if cached is not None and cached[0] is p:
            return cached[1]
        layout = layout_of(p, name, distribution.mesh)
        self._layouts[id(p)] = (p, layout)
        return layout

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
        if distribution.mode == "sharded":
            return max(1, budget * world_size // 5)
        return max(1, budget * world_size // (world_size + 3))

    def map_matrices(
        self,
        fn,
        inputs: list[Tensor],
        params: list[Tensor],
        costs: list[float],
        comm_dtype: torch.dtype | None = None,
        blocks: Sequence[MatrixBlocks | None] | None = None,
    ) -> list[Tensor]:
        """``fn(inputs)`` with every matrix computed whole, once, on one rank; results as local tensors.

        ``inputs[i]`` is the local part (the shard under FSDP2, the whole tensor otherwise) of a tensor
        laid out like ``params[i]``; ``costs[i]`` weighs its work for the split across ranks. ``fn`` maps a
        list of whole tensors to as many whole results (pure; batched as it likes).

        ``blocks`` (one :class:`MatrixBlocks` or None per parameter): how each parameter is cut into the
        matrices ``fn`` orthogonalizes separately. Then ``fn`` is called as ``fn(tensors, sections)``, where
        ``sections[i]`` are the row sections of ``tensors[i]`` — the parameter's own for a whole tensor, the
        piece's for a piece made of whole blocks, which is computed on the rank that holds it (no collective)."""
        distribution = self.resolve(params)
        sections = [b.sections if b is not None else None for b in blocks] if blocks is not None else None
        if distribution is None:
            self.stats.flops += sum(costs)
            self.stats.matrices += len(inputs)
            return fn(inputs) if sections is None else fn(inputs, sections)
        world_size = dist.get_world_size(distribution.group)
        rank = dist.get_rank(distribution.group)
        layouts = [self.layout(p, distribution) for p in params]
        local = [False] * len(params)
        if blocks is not None:
            for i, (layout, b) in enumerate(zip(layouts, blocks)):
                found = local_sections(layout, b, rank)
                if found is not False:
                    local[i], sections[i] = True, found
        whole = [i for i in range(len(params)) if not local[i]]
        cost_of = {tuple(params[i].shape): costs[i] for i in whole}
        assigned = assign_owners([params[i].shape for i in whole], world_size, cost=lambda s: cost_of[tuple(s)])
        owners = [LOCAL] * len(params)
        for i, owner in zip(whole, assigned):
            owners[i] = owner
        for i, (cost, owner) in enumerate(zip(costs, owners)):
            if owner == rank:
                self.stats.flops += cost
                self.stats.matrices += 1
            elif owner == LOCAL and inputs[i].numel():
                # a share of the parameter's blocks, all of one size: its cost is the share of the elements
                self.stats.flops += cost * inputs[i].numel() / math.prod(layouts[i].shape)
                self.stats.matrices += 1
        return map_whole(
            fn,
            inputs,
            layouts,
            owners,
            distribution.group,
            self.stats,
            comm_dtype=comm_dtype,
            wrap=False,
            sections=sections,
        )

    # ------------------------------------------------------------------ helpers
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
