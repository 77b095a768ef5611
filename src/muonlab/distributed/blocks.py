"""Which pieces are whole units of work already: expert stacks cut on the expert dim, heads cut on head boundaries.

An optimizer orthogonalizes a parameter as one or more separate matrices (its *blocks*):

- ``batch_dims`` leading dims index separate matrices (an expert stack ``(E, m, n)`` with
  ``tensor_layout="batch"`` has 1);
- along the next dim (the matrices' rows) the blocks are ``sections``: ``((rows, count), ...)``, each
  section of ``rows`` rows cut into ``count`` equal blocks (``split_sizes`` then ``num_heads``, as
  :func:`muonlab.optim.pipeline.row_sections` gives), or None for one block of all the rows;
- the remaining dims are the matrices' columns.

When every rank's piece of a parameter keeps the columns whole and cuts the batch dims anywhere and the rows
only on block boundaries, and no two ranks hold the same piece, each rank's piece is a set of whole blocks:
it is computed where it lives, with no collective (:func:`local_sections` says so and gives the piece's own
sections). The cut of a tensor-parallel weight into heads must then line up with the heads: ``num_heads``
divisible by the tensor-parallel degree (torch's ``ColwiseParallel`` cuts rows into equal contiguous parts).
"""

from __future__ import annotations

from dataclasses import dataclass

from muonlab.distributed.layout import Layout, Piece

Sections = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class MatrixBlocks:
    """How one parameter is cut into the matrices orthogonalized separately (see the module docstring)."""

    batch_dims: int = 0
    sections: Sections | None = None


def block_boundaries(rows: int, sections: Sections | None) -> list[int]:
    """Row indices where one block ends and the next begins, 0 and ``rows`` included."""
    if not sections:
        return [0, rows]
    bounds, offset = [0], 0
    for size, count in sections:
        step = size // count
        for _ in range(count):
            offset += step
            bounds.append(offset)
    return bounds


def piece_sections(piece: Piece, shape: tuple[int, ...], blocks: MatrixBlocks) -> Sections | None | bool:
    """The sections of one rank's piece, or False when the piece is not made of whole blocks."""
    row_dim = blocks.batch_dims
    for dim in range(row_dim + 1, len(shape)):
        if piece[dim] != ((0, shape[dim]),):
            return False
    if row_dim >= len(shape):
        return False
    rows = shape[row_dim]
    bounds = block_boundaries(rows, blocks.sections)
    allowed = set(bounds)
    ranges = [r for r in piece[row_dim] if r[1] > r[0]]
    if any(start not in allowed or stop not in allowed for start, stop in ranges):
        return False
    if ranges == [(0, rows)]:
        return blocks.sections
    if not blocks.sections:
        return None if not ranges else False
    # The blocks inside the ranges, in order, as runs of equal size.
    sizes = []
    for start, stop in ranges:
        inside = [b for b in bounds if start <= b <= stop]
        sizes += [b - a for a, b in zip(inside, inside[1:])]
    runs: list[list[int]] = []
    for size in sizes:
        if runs and runs[-1][0] == size:
            runs[-1][1] += 1
        else:
            runs.append([size, 1])
    return tuple((size * count, count) for size, count in runs)


def local_sections(layout: Layout, blocks: MatrixBlocks | None, rank: int) -> Sections | None | bool:
    """This rank's piece's sections when every rank's piece is whole blocks held once; False otherwise."""
    if blocks is None or layout.pieces is None or layout.replicas:
        return False
    mine = False
    for q, piece in enumerate(layout.pieces):
        found = piece_sections(piece, layout.shape, blocks)
        if found is False:
            return False
        if q == rank:
            mine = found
    return mine
