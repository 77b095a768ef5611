"""Where a tensor's values live: for every rank of a process group, which piece of the whole tensor it holds.

A DTensor on an n-D :class:`~torch.distributed.device_mesh.DeviceMesh` has one placement per mesh dim.
Reading them left to right, each one cuts the index set of one tensor dim further:

- ``Shard(d)``: the indices of dim d held so far are cut like ``torch.chunk`` into ``mesh.size(k)`` pieces
  and the rank at coordinate c on mesh dim k keeps piece c (7 rows on 3 ranks: 3 + 3 + 1);
- ``_StridedShard(d, sf)`` (FSDP2 over tensor parallelism): the indices are first cut into ``sf`` pieces,
  each of those into ``mesh.size(k)``, and coordinate c keeps piece c of every one of the ``sf`` pieces —
  the right-to-left sharding of ``fully_shard`` applied after ``parallelize_module`` (torch's
  ``_StridedShard._split_tensor`` defines the same cut);
- ``Replicate()``: nothing is cut; the ranks along mesh dim k hold the same piece.

The result, a :class:`Layout`, lists for every rank of the mesh's flattened process group one *piece*: per
tensor dim, the sorted disjoint index ranges it holds; the local tensor is the whole tensor restricted to
those indices, in increasing order. Anything else (``Partial``, placements torch may add later) is refused
with one line naming the parameter, its mesh and its placements, before any collective.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

Ranges = tuple[tuple[int, int], ...]  # sorted, disjoint [start, stop) index ranges along one tensor dim
Piece = tuple[Ranges, ...]  # one Ranges per tensor dim


def whole_piece(shape: tuple[int, ...]) -> Piece:
    return tuple(((0, size),) for size in shape)


def piece_shape(piece: Piece) -> tuple[int, ...]:
    return tuple(sum(stop - start for start, stop in ranges) for ranges in piece)


def take(whole: Tensor, piece: Piece) -> Tensor:
    """``whole`` restricted to ``piece`` (a view when every dim is one range)."""
    out = whole
    for dim, ranges in enumerate(piece):
        if len(ranges) == 1:
            start, stop = ranges[0]
            if (start, stop) != (0, whole.shape[dim]):
                out = out.narrow(dim, start, stop - start)
        else:
            out = torch.cat([out.narrow(dim, start, stop - start) for start, stop in ranges], dim=dim)
    return out


def put(whole: Tensor, piece: Piece, values: Tensor) -> None:
    """``whole[piece] = values`` (``values`` has the piece's shape)."""
    per_dim = []
    for ranges in piece:
        spans, offset = [], 0
        for start, stop in ranges:
            spans.append((slice(start, stop), slice(offset, offset + stop - start)))
            offset += stop - start
        per_dim.append(spans)
    for combination in itertools.product(*per_dim):
        whole[tuple(g for g, _ in combination)] = values[tuple(loc for _, loc in combination)]


@dataclass(frozen=True)
class Layout:
    """Where the values of a tensor of ``shape`` live across the ranks of one process group.

    ``pieces`` None: every rank holds the whole tensor (plain tensors under DDP, DTensor ``Replicate``).
    Otherwise ``pieces[r]`` is what rank r (of the group) holds. ``replicas``: True when some ranks hold the
    same non-empty piece (a ``Replicate`` mesh dim next to a sharded one, as in HSDP).
    ``dtensor_spec``: (mesh, placements, shape, stride) to rebuild a DTensor result, or None for a plain tensor."""

    shape: tuple[int, ...]
    pieces: tuple[Piece, ...] | None = None
    dtensor_spec: tuple | None = None

    @property
    def replicas(self) -> bool:
        """True when two ranks hold the same non-empty piece (every rank does when ``pieces`` is None)."""
        if self.pieces is None:
            return True
        filled = [p for p in self.pieces if math.prod(piece_shape(p))]
        return len(set(filled)) < len(filled)

    def piece(self, rank: int) -> Piece:
        return whole_piece(self.shape) if self.pieces is None else self.pieces[rank]

    def piece_shape(self, rank: int) -> tuple[int, ...]:
        """Shape of rank ``rank``'s local tensor."""
        return self.shape if self.pieces is None else piece_shape(self.pieces[rank])

    def holds_whole(self, rank: int) -> bool:
        return self.pieces is None or self.pieces[rank] == whole_piece(self.shape)


def _chunk(indices: Tensor, count: int) -> list[Tensor]:
    """``torch.chunk`` with the empty pieces it leaves out appended (DTensor's uneven sharding)."""
    pieces = list(torch.chunk(indices, count)) if indices.numel() else []
    return pieces + [indices[:0]] * (count - len(pieces))


def _to_ranges(indices: Tensor) -> Ranges:
    """Sorted indices as [start, stop) runs of consecutive values (found with tensor ops: a vocabulary dim has
    ~10⁵ indices, and there is one cut per rank)."""
    if not indices.numel():
        return ((0, 0),)
    breaks = (torch.nonzero(indices[1:] - indices[:-1] != 1).flatten() + 1).tolist()
    starts, stops = [0] + breaks, breaks + [indices.numel()]
    return tuple((int(indices[a]), int(indices[b - 1]) + 1) for a, b in zip(starts, stops))


def describe(t: Tensor) -> str:
    """"shape (6, 4) on DeviceMesh (2, 2) ('dp', 'tp') with placements (_S(0, 2), S(0))" for error messages."""
    mesh = t.device_mesh
    names = f" {tuple(mesh.mesh_dim_names)}" if mesh.mesh_dim_names else ""
    placements = ", ".join(str(p) for p in t.placements)
    return f"shape {tuple(t.shape)} on DeviceMesh {tuple(mesh.shape)}{names} with placements ({placements})"


def mesh_pieces(shape: tuple[int, ...], mesh, placements, name: str = "parameter", context: str = "") -> list[Piece]:
    """The piece of every mesh coordinate, in the mesh's row-major (flattened) order."""
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.placement_types import _StridedShard

    for placement in placements:
        if not isinstance(placement, (Replicate, Shard, _StridedShard)):
            raise NotImplementedError(
                f"{name} ({context}): placement {placement} cannot be orthogonalized as whole matrices; muonlab "
                "handles Shard(d), _StridedShard (FSDP2 over tensor parallelism) and Replicate on each mesh dim "
                "(a Partial value is a pending sum: redistribute it first)"
            )
    pieces = []
    for coordinate in itertools.product(*(range(s) for s in mesh.shape)):
        indices = [torch.arange(size) for size in shape]
        for mesh_dim, placement in enumerate(placements):
            if isinstance(placement, Replicate):
                continue
            dim = placement.dim % len(shape)
            count, c = mesh.size(mesh_dim), coordinate[mesh_dim]
            if isinstance(placement, _StridedShard):
                split_factor = int(placement.split_factor)
                indices[dim] = torch.cat([_chunk(part, count)[c] for part in _chunk(indices[dim], split_factor)])
            else:
                indices[dim] = _chunk(indices[dim], count)[c]
        pieces.append(tuple(_to_ranges(i) for i in indices))
    return pieces


def mesh_group(mesh):
    """One process group holding every rank of ``mesh`` (its own group for a 1-D mesh)."""
    if mesh.ndim == 1:
        return mesh.get_group()
    ranks = mesh.mesh.flatten().tolist()
    if sorted(ranks) == list(range(dist.get_world_size())):
        return dist.group.WORLD
    # A sub-mesh of a larger mesh (e.g. one pipeline stage's ("dp", "tp")): torch's flattened sub-mesh.
    return mesh._flatten().get_group()


def common_mesh(meshes: list, where: str = "param group"):
    """The mesh every one of ``meshes`` is a sub-mesh of (itself when there is one mesh).

    A tensor-parallel model sharded by ``fully_shard(mesh=mesh["dp"])`` has its tensor-parallel weights on the
    2-D ("dp", "tp") mesh and the rest on the 1-D "dp" sub-mesh; both are read over the 2-D mesh's ranks."""
    if len(meshes) == 1:
        return meshes[0]
    for candidate in sorted(meshes, key=lambda m: -m.mesh.numel()):
        names = set(candidate.mesh_dim_names or ())
        ranks = set(candidate.mesh.flatten().tolist())
        if all(m is candidate or (m.mesh_dim_names and set(m.mesh_dim_names) <= names
                                  and set(m.mesh.flatten().tolist()) <= ranks) for m in meshes):
            return candidate
    shapes = ", ".join(f"{tuple(m.shape)} {m.mesh_dim_names or ''}" for m in meshes)
    raise ValueError(
        f"{where} holds DTensor parameters on {len(meshes)} meshes ({shapes}), none of which holds the others; "
        "use one mesh per group (or sub-meshes of one named mesh)"
    )


def enclosing_mesh(params) -> object | None:
    """The mesh all of ``params``' DTensor meshes are (sub-)meshes of, or None (no DTensors, or no such mesh)."""
    meshes = list({p.device_mesh: p.device_mesh for p in params if hasattr(p, "device_mesh")}.values())
    if not meshes:
        return None
    try:
        return common_mesh(meshes)
    except ValueError:
        return None


def dtensor_layout(t: Tensor, name: str = "parameter", mesh=None) -> Layout:
    """The :class:`Layout` of a DTensor over the process group :func:`mesh_group` gives for ``mesh``
    (default: its own mesh; a larger mesh holds the same values on the ranks of its extra dims)."""
    own = t.device_mesh
    mesh = own if mesh is None else mesh
    shape = tuple(int(s) for s in t.shape)
    context = describe(t)
    placements = list(t.placements)
    if mesh != own:
        names = list(own.mesh_dim_names or ())
        by_name = dict(zip(names, placements))
        from torch.distributed.tensor import Replicate

        placements = [by_name.get(n, Replicate()) for n in mesh.mesh_dim_names]
    coordinate_pieces = mesh_pieces(shape, mesh, placements, name, context)
    spec = (own, tuple(t.placements), t.shape, t.stride())
    mine = mesh.get_coordinate()
    if mine is not None:
        index = 0
        for c, size in zip(mine, mesh.shape):
            index = index * size + c
        local = tuple(t.to_local().shape)
        if piece_shape(coordinate_pieces[index]) != local:
            raise NotImplementedError(
                f"{name} ({context}): its local tensor has shape {local}, not the {piece_shape(coordinate_pieces[index])} "
                "muonlab's reading of the placements gives; this layout is not supported"
            )
    whole = whole_piece(shape)
    if all(p == whole for p in coordinate_pieces):
        return Layout(shape, None, spec)
    group = mesh_group(mesh)
    global_ranks = mesh.mesh.flatten().tolist()
    by_group_rank: list[Piece | None] = [None] * len(global_ranks)
    for piece, global_rank in zip(coordinate_pieces, global_ranks):
        by_group_rank[global_rank if group is dist.group.WORLD else dist.get_group_rank(group, global_rank)] = piece
    return Layout(shape, tuple(by_group_rank), spec)  # type: ignore[arg-type]
