"""Layouts and blocks without processes: each rank's piece against torch's own placement splitting, and which
pieces are whole blocks."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch.distributed.tensor import Partial, Replicate, Shard
from torch.distributed.tensor.placement_types import _StridedShard

from muonlab.distributed.blocks import MatrixBlocks, local_sections, piece_sections
from muonlab.distributed.layout import Layout, mesh_pieces, piece_shape, put, take


class FakeMesh:
    """What mesh_pieces reads of a DeviceMesh: its shape."""

    def __init__(self, *shape: int) -> None:
        self.shape = shape

    def size(self, dim: int) -> int:
        return self.shape[dim]


def torch_local(whole: torch.Tensor, mesh: FakeMesh, placements, coordinate) -> torch.Tensor:
    """The local tensor torch's placements give at ``coordinate``, left to right, with their own splitting."""
    local = whole
    for mesh_dim, placement in enumerate(placements):
        if isinstance(placement, Replicate):
            continue
        pieces, _ = placement._split_tensor(local, mesh.size(mesh_dim), with_padding=False)
        local = pieces[coordinate[mesh_dim]]
    return local


@pytest.mark.parametrize("shape", [(8, 12), (7, 9), (3, 5), (13, 4)])
@pytest.mark.parametrize("placements", [
    (Shard(0), Shard(1)), (Shard(1), Shard(0)), (Replicate(), Shard(0)), (Shard(0), Shard(0)),
    (_StridedShard(0, split_factor=2), Shard(0)), (_StridedShard(1, split_factor=2), Shard(1)),
    (_StridedShard(0, split_factor=3), Shard(0)), (Replicate(), Replicate()),
], ids=str)
def test_pieces_match_torchs_own_splitting_even_when_uneven(shape, placements):
    mesh = FakeMesh(2, 3) if any(isinstance(p, _StridedShard) and p.split_factor == 3 for p in placements) else FakeMesh(2, 2)
    whole = torch.arange(shape[0] * shape[1], dtype=torch.float32).reshape(shape)
    pieces = mesh_pieces(shape, mesh, placements)
    for index, coordinate in enumerate(itertools.product(*(range(s) for s in mesh.shape))):
        want = torch_local(whole, mesh, placements, coordinate)
        assert piece_shape(pieces[index]) == tuple(want.shape), (coordinate, pieces[index])
        assert torch.equal(take(whole, pieces[index]), want), coordinate
    # the pieces tile the tensor: putting every one back rebuilds it
    rebuilt = torch.full(shape, float("nan"))
    for piece in pieces:
        put(rebuilt, piece, take(whole, piece))
    assert torch.equal(rebuilt, whole)


def test_partial_is_refused_naming_the_parameter_and_the_placement():
    with pytest.raises(NotImplementedError, match=r"blocks\.0\.w .*Partial"):
        mesh_pieces((4, 4), FakeMesh(2), (Partial(),), "blocks.0.w", "shape (4, 4)")


def test_heads_cut_on_head_boundaries_are_whole_blocks():
    shape = (16, 8)
    heads = MatrixBlocks(0, ((16, 4),))  # 4 heads of 4 rows
    four = Layout(shape, tuple(mesh_pieces(shape, FakeMesh(4), (Shard(0),))))
    assert [local_sections(four, heads, r) for r in range(4)] == [((4, 1),)] * 4
    two = Layout(shape, tuple(mesh_pieces(shape, FakeMesh(2), (Shard(0),))))
    assert local_sections(two, heads, 1) == ((8, 2),)
    # 8 ranks cut heads in halves: not whole blocks; columns cut (row-parallel): not either; no heads: not either
    eight = Layout(shape, tuple(mesh_pieces(shape, FakeMesh(8), (Shard(0),))))
    assert local_sections(eight, heads, 0) is False
    columns = Layout(shape, tuple(mesh_pieces(shape, FakeMesh(2), (Shard(1),))))
    assert local_sections(columns, heads, 0) is False
    assert local_sections(four, MatrixBlocks(0, None), 0) is False
    # replicas hold the same heads twice: gathered to one owner instead (once in the mesh)
    hsdp = Layout(shape, tuple(mesh_pieces(shape, FakeMesh(2, 2), (Replicate(), Shard(0)))))
    assert local_sections(hsdp, heads, 0) is False


def test_fused_qkv_sections_of_a_strided_piece():
    # rows [q; k; v] of 8 each, 4 heads per section (2 rows each), FSDP over TP: (_StridedShard(0, 2), Shard(0))
    # gives each rank 6 rows in two strided runs' worth of order: whole heads, across the q/k boundary too
    shape = (24, 6)
    blocks = MatrixBlocks(0, ((8, 4), (8, 4), (8, 4)))
    layout = Layout(shape, tuple(mesh_pieces(shape, FakeMesh(2, 2), (_StridedShard(0, split_factor=2), Shard(0)))))
    sections = [local_sections(layout, blocks, r) for r in range(4)]
    assert all(s is not False for s in sections)
    assert all(sum(rows for rows, _ in s) == 6 for s in sections)  # 24 rows / 4 ranks
    assert sections[0] == ((6, 3),)
    # 4-row heads are cut by the 6-row pieces: not whole blocks
    assert local_sections(layout, MatrixBlocks(0, ((8, 2), (8, 2), (8, 2))), 0) is False
    assert piece_sections(((0, 6),), (6,), MatrixBlocks(1, None)) is False  # no row dim at all


def test_expert_stacks_cut_on_the_expert_dim_are_whole_blocks():
    shape = (4, 6, 5)
    stack = MatrixBlocks(1, None)
    layout = Layout(shape, tuple(mesh_pieces(shape, FakeMesh(4), (Shard(0),))))
    assert [local_sections(layout, stack, r) for r in range(4)] == [None] * 4
    rows = Layout(shape, tuple(mesh_pieces(shape, FakeMesh(2), (Shard(1),))))
    assert local_sections(rows, stack, 0) is False  # each expert's rows cut: gathered whole
