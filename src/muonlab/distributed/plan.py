"""Who orthogonalizes which matrix: a deterministic, flop-balanced assignment of whole matrices to ranks.

Every rank calls :func:`assign_owners` with the same list of shapes and gets the same answer (no
communication, no randomness), so the owner of matrix ``i`` is known everywhere before any data moves.

Balance. The cost of one polar iteration on an m×n matrix (m ≤ n after transposing) is 4m²n + 2m³
flops (docs/math.md §3, quintic Newton–Schulz); the iteration count is the same for all matrices of one
optimizer group, so that per-step cost is the right weight. Matrices of one shape form a group that
the owner runs as one batched call, so the assignment works group by group, largest cost first:
each rank takes ⌊k/W⌋ matrices of a k-matrix group, and the k mod W left over go to the ranks with
the least work so far (ties: lowest rank). With all shapes distinct this is the classic
longest-processing-time-first rule (within 4/3 of the optimal makespan, Graham 1969).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from muonlab.linalg.methods import quintic_flops

Shape = tuple[int, ...]


def matrix_flops(shape: Sequence[int]) -> float:
    """Flops of one quintic Newton–Schulz step on a tensor seen as matrices (docs/math.md §3: 4m²n + 2m³, m ≤ n).

    A tensor with more than two dims is treated the way the optimizers treat it: a conv filter
    (out, in, kh, kw) is one matrix out × (in·kh·kw). Vectors and scalars cost their size (they are
    never orthogonalized, but a weight keeps the assignment well defined)."""
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2:
        return float(math.prod(shape))
    rows, cols = shape[0], math.prod(shape[1:])
    return quintic_flops(1, min(rows, cols), max(rows, cols))


def assign_owners(
    shapes: Sequence[Sequence[int]],
    world_size: int,
    cost: Callable[[Sequence[int]], float] = matrix_flops,
) -> list[int]:
    """Owner rank of each matrix: same-shape matrices spread evenly, the remainder to the least-loaded ranks.

    Returns a list as long as ``shapes``; deterministic, so all ranks agree without talking."""
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    owners = [0] * len(shapes)
    if world_size == 1:
        return owners
    groups: dict[Shape, list[int]] = {}
    for index, shape in enumerate(shapes):
        groups.setdefault(tuple(int(s) for s in shape), []).append(index)
    load = [0.0] * world_size
    # Largest cost first (then shape, for a total order that is the same on every rank).
    for shape in sorted(groups, key=lambda s: (-cost(s), s)):
        members = groups[shape]
        weight = cost(shape)
        per_rank, remainder = divmod(len(members), world_size)
        position = 0
        for rank in range(world_size):
            for index in members[position : position + per_rank]:
                owners[index] = rank
            position += per_rank
            load[rank] += per_rank * weight
        lightest = sorted(range(world_size), key=lambda r: (load[r], r))[:remainder]
        for rank in sorted(lightest):
            owners[members[position]] = rank
            load[rank] += weight
            position += 1
    return owners


def rank_loads(
    shapes: Sequence[Sequence[int]],
    owners: Sequence[int],
    world_size: int,
    cost: Callable[[Sequence[int]], float] = matrix_flops,
) -> list[float]:
    """Total cost each rank carries under ``owners``."""
    load = [0.0] * world_size
    for shape, owner in zip(shapes, owners):
        load[owner] += cost(shape)
    return load


def shard_sizes(length: int, world_size: int) -> list[int]:
    """Sizes of the ``world_size`` pieces of a dimension of ``length`` under DTensor ``Shard``.

    DTensor splits like ``torch.chunk``: pieces of ⌈length/W⌉, the last ones shorter or empty
    (7 rows on 3 ranks → 3, 3, 1; 4 rows on 3 ranks → 2, 2, 0)."""
    piece = -(-length // world_size) if length else 0
    return [max(0, min(piece, length - rank * piece)) for rank in range(world_size)]
