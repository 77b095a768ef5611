"""A group's step in parts: chunks of matrices within a scratch budget, each matrix's cost, the wire dtype, and
the batches of same-shape blocks each transform call takes.

The step streams a group chunk by chunk (moment → transform → apply), so its extra memory is one chunk's. Plans
are a function of the parameters with gradients, the budget and the group's settings, and are cached on those
(:class:`ChunkPlans`): a step does no planning while they are unchanged.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable

import torch

from muonlab.distributed.blocks import MatrixBlocks
from muonlab.linalg import POLAR_METHODS
from muonlab.linalg.methods import POLAR_METHOD_REGISTRY, quintic_flops
from muonlab.linalg.precision import iteration_dtype
from muonlab.optim import pipeline as pl
from muonlab.optim.settings import Blocks, PolarSettings, SpectralSettings
from muonlab.optim.state import state_dtype
from muonlab.optim.telemetry import Telemetry

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


def batch_sizes(count: int, device: torch.device) -> list[int]:
    """How a transform call's ``count`` same-shape matrices split into batches: all in one, except on CPU.

    On CPU, MKL's batched matmul (what ``torch.bmm`` calls for a batch of more than one) hands whole
    products to threads, so a batch of B on T threads takes ⌈B/T⌉ products' time: 3 matrices on 2 threads
    run at 3/4 of the rate (the per-thread CPU time splits 2:1), while a batch of one is split inside the
    product across all threads (BENCHMARKS.md, issue 22 item 4). So the largest multiple of T runs as one
    batch and the rest one matrix at a time. Accelerators take every matrix in one batched call (one kernel
    launch per product)."""
    threads = torch.get_num_threads() if device.type == "cpu" else 1
    remainder = count % threads
    whole = count - remainder
    return ([whole] if whole else []) + [1] * remainder


def transform_batches(
    inputs: list[torch.Tensor],
    settings: SpectralSettings,
    transform: Callable[..., torch.Tensor],
    telemetry: Telemetry,
    *,
    inputs_are_scratch: bool = False,
    sections: list | None = None,
) -> list[torch.Tensor]:
    """Each parameter-shaped ``inputs[i]`` → its scaled update, in batches of same-shape blocks.

    Shape: each input is cut into blocks (:func:`muonlab.optim.pipeline.to_blocks`, along ``sections[i]`` when
    given); blocks of equal (m, n, dtype, device) across all inputs are concatenated into (B, m, n) batches (one, or
    on CPU a multiple of the thread count and single matrices: :func:`batch_sizes`); transform: one
    ``transform(batch, settings, overwrite=...)`` call per batch; scale: multiplied by the shape scale s(m, n) of the
    settings' ``adjust_lr_fn``, and reassembled. ``telemetry`` samples the step's first output and, inside a step,
    adds each batch's Σ‖s·D‖². ``inputs`` are not modified unless ``inputs_are_scratch``."""
    layout = settings.blocks
    sections = sections if sections is not None else [None] * len(inputs)
    blocks = [pl.to_blocks(x, layout, s) for x, s in zip(inputs, sections)]
    buckets: dict[tuple, list[tuple[int, int]]] = defaultdict(list)
    for i, bl in enumerate(blocks):
        for j, b in enumerate(bl):
            buckets[(b.shape[-2], b.shape[-1], b.dtype, b.device)].append((i, j))
    results: list[list[torch.Tensor | None]] = [[None] * len(bl) for bl in blocks]
    for (rows, cols, _, device), bucket in buckets.items():
        scale = pl.shape_scale(rows, cols, settings.adjust_lr_fn)
        start = 0
        for size in batch_sizes(len(bucket), device):  # on CPU: batches the threads share evenly
            idx, start = bucket[start : start + size], start + size
            parts = [blocks[i][j] for i, j in idx]
            batch = parts[0] if len(parts) == 1 else torch.cat(parts)
            # The transform may overwrite a batch that is a fresh concatenation, or the scratch inputs
            # themselves (a view of one input is its only block here when the input is whole).
            overwrite = len(parts) > 1 or (inputs_are_scratch and len(blocks[idx[0][0]]) == 1)
            out = transform(batch, settings, overwrite=overwrite)
            if telemetry.sample_due:
                telemetry.sample(id(settings), out)
            if scale != 1.0:
                # In place unless the transform handed back its input (Ψ₁ is the identity).
                out = out * scale if out is batch else out.mul_(scale)
            if telemetry.active:  # inside a step: the batch's Σ‖s·D‖² (one reduction per batch)
                telemetry.add_batch(id(settings), out)
            del batch  # a concatenated copy is scratch: free it before the next batch's
            pieces = out.split([p.shape[0] for p in parts]) if len(parts) > 1 else (out,)
            for (i, j), piece in zip(idx, pieces):
                results[i][j] = piece
    return [pl.from_blocks(r, x, layout) for r, x in zip(results, inputs)]


def matrix_blocks(p: torch.Tensor, blocks) -> MatrixBlocks | None:
    """How the distribution sees ``p``'s blocks (``blocks``: the group's settings): the stack dims of a "batch"
    layout, then the rows' sections."""
    if blocks.transposed:  # its blocks are cut along the parameter's columns: computed whole on an owner
        return None
    batch_dims = p.dim() - 2 if p.dim() >= 3 and blocks.tensor_layout == "batch" else 0
    return MatrixBlocks(batch_dims, pl.block_sections(p.shape[batch_dims], blocks))


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

    # host-side planning, cached: nothing for torch.compile(opt.step) to trace
    @torch.compiler.disable
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
