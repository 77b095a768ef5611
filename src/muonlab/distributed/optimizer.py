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
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from muonlab.distributed.blocks import MatrixBlocks, local_sections
from muonlab.distributed.comm import LOCAL, CommStats, map_whole, owner_transfers, shard_transfers, traffic
from muonlab.distributed.layout import Layout, enclosing_mesh
from muonlab.distributed.plan import assign_owners
from muonlab.distributed.resolve import (
    Distribution,
    check_same_on_all_ranks,
    is_dtensor,
    layout_of,
    resolve_distribution,
    signature,
)


@dataclass(frozen=True)
class Route:
    """One chunk's plan: each tensor's layout and owner (:data:`LOCAL`: every rank its piece), every rank's
    row sections of what it computes, and every rank's flops and matrix count."""

    layouts: list[Layout]
    owners: list[int]
    sections: list[list]
    flops: list[float]
    matrices: list[int]
    transfers: tuple = ()  # (owner_transfers, shard_transfers) of the layouts and owners


def _state_dtype(p: Tensor) -> torch.dtype:
    """The dtype the matrices travel in without a wire dtype: fp32 for half-precision parameters (their state)."""
    return torch.float32 if p.dtype in (torch.float16, torch.bfloat16) else p.dtype


class OptimizerDistribution:
    """Per-optimizer distribution state: ``distributed`` is "auto", "none", a ProcessGroup or a DeviceMesh."""

    def __init__(self, distributed="auto") -> None:
        resolve_distribution([], distributed)  # checks the setting itself (no parameters needed)
        self.setting = distributed
        self.stats = CommStats()
        self._resolved: dict[tuple[int, ...], Distribution | None] = {}
        self._layouts: dict[int, tuple[Tensor, Layout]] = {}
        self._routes: dict[tuple, Route] = {}
        # The mesh every DTensor parameter of the optimizer lives on or on a sub-mesh of (set by validate): under
        # FSDP2 × TP the parameters outside the TP plan live on the "dp" sub-mesh, replicated over "tp"; read over
        # the 2-D mesh they are computed once in the mesh instead of once per TP rank.
        self._mesh = None

    # ------------------------------------------------------------------ construction
    def resolve(
        self, params: Sequence[Tensor], whole_matrices: bool = True, where: str = "param group", names=None
    ) -> Distribution | None:
        """The distribution of one list of parameters (cached while the list is unchanged). ``whole_matrices``:
        they will be transformed as whole matrices, so their layouts must be ones :func:`map_whole` can gather."""
        key = tuple(id(p) for p in params)
        if key in self._resolved:
            return self._resolved[key]
        resolved = resolve_distribution(list(params), self.setting, where, self._mesh)
        if resolved is not None and whole_matrices:
            for i, p in enumerate(params):
                name = f"{where}, parameter {names[i]!r}" if names else f"{where}, parameter {i}"
                self.layout(p, resolved, name)  # raises on placements we cannot handle
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

    def validate(self, groups: Sequence[tuple]) -> None:
        """Resolve (and so check) every parameter list: ``groups`` are (params, whole_matrices) pairs, or
        (params, whole_matrices, names) triples whose names the error messages use."""
        self._mesh = enclosing_mesh([p for params, *_ in groups for p in params])
        self._resolved.clear()
        for index, (params, whole, *names) in enumerate(groups):
            self.resolve(params, whole, f"param group {index}", names[0] if names else None)

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
        if distribution is None:
            self._count(sum(costs), len(inputs))
            if blocks is None:
                return fn(inputs)
            return fn(inputs, [b.sections if b is not None else None for b in blocks])
        rank = dist.get_rank(distribution.group)
        route = self.route(params, costs, blocks, distribution)
        layouts, owners = route.layouts, route.owners
        self._count(route.flops[rank], route.matrices[rank])
        sections = None if blocks is None else route.sections[rank]
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
            transfers=route.transfers,
        )

    def route(
        self, params: Sequence[Tensor], costs: Sequence[float], blocks: Sequence[MatrixBlocks | None] | None,
        distribution: Distribution,
    ) -> Route:
        """Who computes what for one chunk: layouts, owners (or :data:`LOCAL`), and every rank's sections and
        flops (cached while the parameters, costs and blocks are the same: a step does not re-plan)."""
        key = (tuple(id(p) for p in params), tuple(costs), tuple(blocks) if blocks is not None else None)
        cached = self._routes.get(key)
        if cached is not None:
            return cached
        world_size = dist.get_world_size(distribution.group)
        layouts = [self.layout(p, distribution) for p in params]
        count = len(params)
        default = [b.sections if b is not None else None for b in blocks] if blocks is not None else [None] * count
        sections = [list(default) for _ in range(world_size)]
        local = [False] * count
        if blocks is not None:
            for i, (layout, b) in enumerate(zip(layouts, blocks)):
                if local_sections(layout, b, 0) is False:
                    continue
                local[i] = True
                for q in range(world_size):
                    sections[q][i] = local_sections(layout, b, q)
        whole = [i for i in range(count) if not local[i]]
        cost_of = {tuple(params[i].shape): costs[i] for i in whole}
        assigned = assign_owners([params[i].shape for i in whole], world_size, cost=lambda s: cost_of[tuple(s)])
        owners = [LOCAL] * count
        for i, owner in zip(whole, assigned):
            owners[i] = owner
        flops, matrices = [0.0] * world_size, [0] * world_size
        for i, (cost, owner) in enumerate(zip(costs, owners)):
            if owner != LOCAL:
                flops[owner] += cost
                matrices[owner] += 1
                continue
            for q in range(world_size):
                share = math.prod(layouts[i].piece_shape(q)) / max(1, math.prod(layouts[i].shape))
                if share:
                    # a share of the parameter's blocks, all of one size: its cost is the share of the elements
                    flops[q] += cost * share
                    matrices[q] += 1
        transfers = (owner_transfers(layouts, owners, world_size), shard_transfers(layouts, owners, world_size))
        route = Route(layouts, owners, sections, flops, matrices, transfers)
        if len(self._routes) > 4096:  # parameters replaced many times over: start again
            self._routes.clear()
        self._routes[key] = route
        return route

    def forecast(self, chunks: Sequence[tuple]) -> list[dict]:
        """What each rank will do per step, computed locally (no collective): ``chunks`` are the
        (params, costs, blocks, wire dtype or None) of every :meth:`map_matrices` call of one step.

        Returns one dict per rank of the (first) distributed group: ``matrices`` (parameter indices per chunk
        computed whole there), ``local`` (pieces computed where they live), ``flops``, and per phase
        ``sent``/``received`` bytes — the same numbers :class:`CommStats` counts while stepping."""
        plans: list[dict] | None = None
        for index, (params, costs, blocks, wire) in enumerate(chunks):
            distribution = self.resolve(params)
            if distribution is None:
                continue
            world_size = dist.get_world_size(distribution.group)
            if plans is None:
                plans = [{"rank": q, "matrices": [], "local": [], "flops": 0.0, "sent": {}, "received": {}}
                         for q in range(world_size)]
            if world_size != len(plans):
                raise NotImplementedError(
                    f"plan: the optimizer's matrices live on process groups of {len(plans)} and {world_size} ranks; "
                    "a plan covers one group (build one optimizer per mesh, or put the parameters on one mesh)"
                )
            route = self.route(params, costs, blocks, distribution)
            sizes = [(wire or _state_dtype(p)).itemsize for p in params]
            per_rank = traffic(route.layouts, route.owners, sizes, world_size, [_state_dtype(p) for p in params])
            for q, plan in enumerate(plans):
                plan["flops"] += route.flops[q]
                plan["matrices"] += [(index, i) for i, o in enumerate(route.owners) if o == q]
                plan["local"] += [(index, i) for i, o in enumerate(route.owners)
                                  if o == LOCAL and math.prod(route.layouts[i].piece_shape(q))]
                for phase, (sent, received) in per_rank[q].items():
                    plan["sent"][phase] = plan["sent"].get(phase, 0) + sent
                    plan["received"][phase] = plan["received"].get(phase, 0) + received
        return plans or []

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
