"""Planning a group's step: chunks of matrices within a scratch budget, each matrix's cost, the wire dtype.

The step streams a group chunk by chunk (moment → transform → apply), so its extra memory is one chunk's. Plans
are a function of the parameters with gradients, the budget and the group's settings, and are cached on those
(:class:`ChunkPlans`): a step does no planning while they are unchanged.
"""

from __future__ import annotations

import torch

from muonlab.linalg import POLAR_METHODS
from muonlab.linalg.methods import POLAR_METHOD_REGISTRY, quintic_flops
from muonlab.linalg.precision import iteration_dtype
from muonlab.optim import pipeline as pl
from muonlab.optim.settings import Blocks, PolarSettings, SpectralSettings
from muonlab.optim.state import state_dtype

# Scratch a step may use on top of 3× the largest matrix (see scratch_budget).
DEFAULT_SCRATCH_FLOOR = 16 * 2**20


def scratch_budget(max_scratch_bytes: int | None, params: list[torch.Tensor]) -> int:
    """Bytes of working memory one step may use beyond parameters, gradients and state.

    ``max_scratch_bytes`` when set; by default 3× the group's largest matrix (in its state dtype)
    plus 16 MiB: a matrix is transformed with about three copies of itself alive (its input and two
    iterates), and small matrices batch together up to the 16 MiB."""
    if max_scratch_bytes is not None:
        return max_scratch_bytes
    largest = max((p.numel() * torch.finfo(state_dtype(p)).bits // 8 for p in params), default=0)
    return 3 * largest + DEFAULT_SCRATCH_FLOOR


def plan_chunks(params: list[torch.Tensor], blocks: Blocks, limit: int) -> list[list[int]]:
    """Indices of ``params`` in chunks of at most ``limit`` bytes of matrices (in their state dtype; a
    matrix larger than that is a chunk of its own). Parameters with the same block shapes, dtype and
    device are taken one after the other, so that they share chunks and batch into one transform call.

    Deterministic in the parameters' order and shapes, so every rank of a distributed run plans the same chunks."""
    buckets: dict[tuple, list[int]] = {}
    for i, p in enumerate(params):
        key = (pl.block_shapes(p.shape, blocks), p.dtype, str(p.device))
        buckets.setdefault(key, []).append(i)
    chunks: list[list[int]] = []
    current, size = [], 0
    for members in buckets.values():
        for i in members:
            nbytes = params[i].numel() * torch.finfo(state_dtype(params[i])).bits // 8
            if current and size + nbytes > limit:
                chunks.append(current)
                current, size = [], 0
            current.append(i)
            size += nbytes
    if current:
        chunks.append(current)
    return chunks


def block_cost(sections, polar: PolarSettings | None) -> float:
    """Flops of transforming one parameter's blocks with the group's polar method (the registry's count; the
    quintic ×5 count for methods without a fixed one, e.g. SVD or QDWH, and for transforms that are not a polar
    factor, e.g. the Ψ_p powers): the weight of a matrix in the distributed work split, where only ratios between
    matrices of one group matter."""
    method = POLAR_METHOD_REGISTRY.get(polar.method) if polar is not None else None
    total = 0.0
    for count, rows, cols in sections:
        flops = method.flops(rows, cols, polar.ns_steps) if method is not None else None
        if flops is None:
            flops = quintic_flops(5, min(rows, cols), max(rows, cols))
        total += count * flops
    return total


def wire_dtype(polar: PolarSettings | None, inputs: list[torch.Tensor]) -> torch.dtype | None:
    """The dtype whole matrices travel in between ranks: the polar iteration's own precision when it is
    lower than theirs (bf16 on CUDA: the owner would round to it anyway, so sending bf16 halves the bytes
    for a rounding of the same size); None (exact) otherwise, e.g. fp32 on CPU or no polar iteration."""
    if not inputs or polar is None or polar.method not in POLAR_METHODS:
        return None
    sample = inputs[0]
    wire = iteration_dtype(sample, polar.method, polar.polar_dtype)
    narrower = torch.finfo(wire).bits < torch.finfo(sample.dtype).bits
    return wire if narrower and all(x.dtype == sample.dtype for x in inputs) else None


class ChunkPlans:
    """The chunks and each matrix's cost of every group's step, computed once and reused while the parameters with
    gradients, the budget and the group's settings stay the same (a step's Python work should not grow with
    planning it anew). ``chunk_bytes(params, budget)`` is the distribution's chunk size for a budget."""

    def __init__(self, chunk_bytes) -> None:
        self._chunk_bytes = chunk_bytes
        self._plans: dict[int, tuple] = {}  # id(group) -> (key, chunks, costs)

    def get(
        self,
        group_id: int,
        group_params: list[torch.Tensor],
        params: list[torch.Tensor],
        settings: SpectralSettings,
        max_scratch_bytes: int | None,
    ) -> tuple[list[list[int]], list[float]]:
        key = (tuple(map(id, params)), max_scratch_bytes, settings)
        cached = self._plans.get(group_id)
        if cached is not None and cached[0] == key:
            return cached[1], cached[2]
        cost = [block_cost(pl.block_shapes(p.shape, settings.blocks), settings.polar) for p in params]
        limit = self._chunk_bytes(group_params, scratch_budget(max_scratch_bytes, params))
        chunks = plan_chunks(params, settings.blocks, limit)
        self._plans[group_id] = (key, chunks, cost)
        return chunks, cost
