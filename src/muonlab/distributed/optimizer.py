"""The part of a muonlab optimizer that knows about torch.distributed.

A :class:`muonlab.optim.base.SpectralOptimizer` holds one :class:`OptimizerDistribution` and calls it
at three points; nothing else in the optimizer changes:

- construction: :meth:`OptimizerDistribution.validate` resolves every param group (replicated,
  sharded, or single process) and raises on bad input (DTensor and plain tensors in one group,
  2-D meshes, unsupported placements) — locally, on every rank, before any collective;
- each step, before touching anything: :meth:`agree` — one all-reduce of three numbers per process
  group makes every rank take the same decision (skip on a non-finite gradient anywhere) and
  catches ranks whose parameter lists differ (a checksum), raising the same error everywhere;
- the matrix work: :meth:`compute_updates` replaces ``optimizer.compute_updates(inputs, group)``
  (a pure function of whole matrices) with the same call made once per matrix, on its owner rank,
  through :func:`muonlab.distributed.comm.map_whole`.

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

from muonlab.distributed.comm import CommStats, map_whole
from muonlab.distributed.plan import assign_owners, matrix_flops
from muonlab.distributed.resolve import (
    Distribution,
    check_same_on_all_ranks,
    is_dtensor,
    layout_of,
    resolve_distribution,
    signature,
)


def block_flops(shape: Sequence[int], group: dict) -> float:
    """Cost of one tensor's matrix work under the group's shape rules (flattened, batched, per-head)."""
    shape = tuple(int(s) for s in shape)
    if len(shape) >= 3 and group.get("tensor_layout") == "batch":
        return math.prod(shape[:-2]) * matrix_flops(shape[-2:])
    rows, cols = shape[0], math.prod(shape[1:])
    heads = group.get("num_heads") or 1
    sections = group.get("split_sizes") or (rows,)
    return float(sum(heads * matrix_flops((max(1, s // heads), cols)) for s in sections))


def wire_dtype(inputs: Sequence[Tensor], group: dict) -> torch.dtype | None:
    """The dtype matrices travel in: the polar iteration's own precision when it is lower than theirs.

    On CUDA, Newton–Schulz / Polar Express run in bfloat16 (:mod:`muonlab.linalg.precision`), so the
    owner would round its input to bf16 anyway and its result carries bf16 accuracy: sending both in
    bf16 halves the bytes for a rounding of the same size. On CPU the iteration runs in fp32 and the
    transfer is exact. ``polar_dtype=torch.float32`` in the group makes both exact on CUDA too."""
    method = group.get("method")
    if not inputs or not isinstance(method, str):
        return None
    from muonlab.linalg.precision import iteration_dtype

    sample = inputs[0].to_local() if is_dtensor(inputs[0]) else inputs[0]
    wire = iteration_dtype(sample, method, group.get("polar_dtype"))
    narrower = torch.finfo(wire).bits < torch.finfo(sample.dtype).bits if wire.is_floating_point else False
    return wire if narrower and all(x.dtype == sample.dtype for x in inputs) else None


class OptimizerDistribution:
    """Per-optimizer distribution state: ``distributed`` is "auto", "none", a ProcessGroup or a 1-D DeviceMesh."""

    def __init__(self, distributed="auto") -> None:
        resolve_distribution([], distributed)  # checks the setting itself (no parameters needed)
        self.setting = distributed
        self.stats = CommStats()
        self._resolved: dict[int, tuple[tuple[int, ...], Distribution | None]] = {}

    # ------------------------------------------------------------------ construction
    def resolve(self, group: dict, where: str = "param group") -> Distribution | None:
        """The group's distribution (cached while its parameter list is unchanged)."""
        key = tuple(id(p) for p in group["params"])
        cached = self._resolved.get(id(group))
        if cached is not None and cached[0] == key:
            return cached[1]
        resolved = resolve_distribution(group["params"], self.setting, where)
        if resolved is not None and group.get("update", "spectral") == "spectral":
            for i, p in enumerate(group["params"]):
                layout_of(p, f"{where}, parameter {i}")
        self._resolved[id(group)] = (key, resolved)
        return resolved

    def validate(self, param_groups: Sequence[dict]) -> None:
        for index, group in enumerate(param_groups):
            self.resolve(group, f"param group {index}")

    # ------------------------------------------------------------------ every step
    def agree(self, param_groups: Sequence[dict], work: Sequence[tuple[dict, list[Tensor]]], all_finite: bool) -> bool:
        """Every rank's verdict on "all gradients finite", and a check that all ranks step the same parameters.

        ``work``: (group, params with a gradient) per group, as the optimizer is about to step them.
        Returns True when the gradients are finite on every rank; raises RuntimeError on every rank
        when the ranks' parameter lists (shapes, dtypes, layouts, which have gradients) differ."""
        groups = self._process_groups(param_groups)
        if not groups:
            return all_finite
        sig = [
            (index, group.get("update", "")) + entry for index, (group, params) in enumerate(work) for entry in signature(params)
        ]
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

    def compute_updates(self, optimizer, inputs: list[Tensor], group: dict) -> list[Tensor]:
        """``optimizer.compute_updates(inputs, group)``, each matrix computed whole on one rank."""
        distribution = self.resolve(group)
        if distribution is None:
            self.stats.flops += sum(block_flops(x.shape, group) for x in inputs)
            self.stats.matrices += len(inputs)
            return optimizer.compute_updates(inputs, group)
        world_size = dist.get_world_size(distribution.group)
        layouts = [layout_of(x) for x in inputs]
        owners = assign_owners([x.shape for x in inputs], world_size, cost=lambda s: block_flops(s, group))
        rank = dist.get_rank(distribution.group)
        for x, owner in zip(inputs, owners):
            if owner == rank:
                self.stats.flops += block_flops(x.shape, group)
                self.stats.matrices += 1
        return map_whole(
            lambda whole: optimizer.compute_updates(whole, group),
            inputs,
            layouts,
            owners,
            distribution.group,
            self.stats,
            comm_dtype=wire_dtype(inputs, group),
        )

    # ------------------------------------------------------------------ helpers
    def _process_groups(self, param_groups: Sequence[dict]) -> list[tuple[object, torch.device]]:
        seen: dict[int, tuple[object, torch.device]] = {}
        for index, group in enumerate(param_groups):
            distribution = self.resolve(group, f"param group {index}")
            if distribution is None or not group["params"]:
                continue
            key = id(distribution.group) if distribution.group is not None else 0
            if key not in seen:
                seen[key] = (distribution.group, _collective_device(distribution.group, group["params"][0]))
        return list(seen.values())


def _collective_device(process_group, sample: Tensor) -> torch.device:
    """CPU for gloo, the parameters' accelerator for NCCL and friends."""
    backend = dist.get_backend(process_group)
    if backend == "gloo":
        return torch.device("cpu")
    local = sample.to_local() if is_dtensor(sample) else sample
    return local.device
