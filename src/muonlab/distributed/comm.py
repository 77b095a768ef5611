"""How whole matrices travel: owner ranks orthogonalize, everybody gets the result.

:func:`map_whole` applies a function of *whole* tensors (say, "orthogonalize these momenta") to a
list of tensors that are either replicated on every rank (DDP, plain tensors, DTensor ``Replicate``)
or sharded along one dim of a 1-D mesh (FSDP2 ``fully_shard``: DTensor ``Shard(0)``):

1. ``owners[i]`` (from :func:`muonlab.distributed.plan.assign_owners`) is the one rank that computes tensor i.
2. Sharded tensors: one ``all_to_all_single`` per dtype sends every rank's shards to the owners, who
   concatenate them (uneven ``torch.chunk`` shards allowed: 7 rows on 3 ranks are 3 + 3 + 1).
   Replicated tensors need nothing: the owner already holds them.
3. The owner calls ``fn`` once on all its whole tensors (so it can batch same-shape matrices).
4. Sharded results: the reverse ``all_to_all_single`` returns each rank its shard.
   Replicated results: one ``all_gather`` per dtype of every rank's packed results.

Only gloo/NCCL collectives that both backends support for uneven sizes are used
(``all_to_all_single`` with split sizes, equal-size ``all_gather_single``); gloo refuses uneven
``all_gather``/``all_to_all`` lists, so replicated results are padded to the longest rank's payload.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import Tensor

from muonlab.distributed.plan import shard_sizes

# torch >= 2.10 renamed all_gather_into_tensor to all_gather_single (the old name warns).
_all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


@dataclass(frozen=True)
class Layout:
    """Where a tensor's values live across the ranks of one process group.

    ``shard_dim`` None: every rank holds the whole tensor. Otherwise rank r holds piece r of
    ``torch.chunk(whole, world_size, dim=shard_dim)`` (DTensor ``Shard(shard_dim)``).
    ``dtensor_spec``: (mesh, placements, shape, stride) to rebuild a DTensor result, or None for a plain tensor."""

    shape: tuple[int, ...]
    shard_dim: int | None = None
    dtensor_spec: tuple | None = None

    def piece_shape(self, rank: int, world_size: int) -> tuple[int, ...]:
        if self.shard_dim is None:
            return self.shape
        shape = list(self.shape)
        shape[self.shard_dim] = shard_sizes(self.shape[self.shard_dim], world_size)[rank]
        return tuple(shape)


@dataclass
class CommStats:
    """What this rank sent during :func:`map_whole` calls (self-copies excluded).

    Bytes follow the usual cost model: an ``all_to_all`` sends each peer its part directly; a ring
    ``all_gather`` of a ``b``-byte payload per rank makes each rank send ``(W − 1)·b``."""

    bytes_sent: int = 0
    collectives: int = 0
    flops: float = 0.0
    matrices: int = 0
    per_op: dict = field(default_factory=dict)

    def add(self, op: str, nbytes: int) -> None:
        self.bytes_sent += nbytes
        self.collectives += 1
        self.per_op[op] = self.per_op.get(op, 0) + nbytes

    def reset(self) -> None:
        self.bytes_sent, self.collectives, self.flops, self.matrices = 0, 0, 0.0, 0
        self.per_op = {}


def _local(t: Tensor) -> Tensor:
    return t.to_local() if hasattr(t, "to_local") else t


def _wrap(value: Tensor, layout: Layout, wrap: bool = True) -> Tensor:
    if layout.dtensor_spec is None or not wrap:
        return value
    from torch.distributed.tensor import DTensor

    mesh, placements, shape, stride = layout.dtensor_spec
    return DTensor.from_local(value, mesh, placements, run_check=False, shape=shape, stride=stride)


def map_whole(
    fn: Callable[[list[Tensor]], list[Tensor]],
    tensors: Sequence[Tensor],
    layouts: Sequence[Layout],
    owners: Sequence[int],
    group=None,
    stats: CommStats | None = None,
    comm_dtype: torch.dtype | None = None,
    wrap: bool = True,
) -> list[Tensor]:
    """``[fn(whole tensor i)]`` for every i, computed once on rank ``owners[i]``, returned in each tensor's layout.

    ``fn`` receives the list of whole tensors this rank owns (in index order) and must return tensors
    of the same shapes and dtypes. Every rank must call this with the same shapes, dtypes, layouts and
    owners (collectives are matched by order). Returns DTensors for DTensor inputs, plain tensors otherwise.
    ``comm_dtype`` (e.g. bfloat16): the values travel in that dtype and are cast back on arrival, halving
    the bytes; None sends them as they are (exact). ``wrap=False``: return the local results as plain
    tensors (the shard for sharded layouts) instead of DTensors."""
    world_size = dist.get_world_size(group)
    rank = dist.get_rank(group)
    count = len(tensors)
    if not (len(layouts) == len(owners) == count):
        raise ValueError(f"map_whole: {count} tensors, {len(layouts)} layouts, {len(owners)} owners")
    stats = stats if stats is not None else CommStats()
    dtypes = sorted({t.dtype for t in tensors}, key=str)
    mine = [i for i in range(count) if owners[i] == rank]

    # 1-2. Bring each whole tensor to its owner.
    whole: dict[int, Tensor] = {i: _local(tensors[i]) for i in mine if layouts[i].shard_dim is None}
    for dtype in dtypes:
        sharded = [i for i in range(count) if tensors[i].dtype == dtype and layouts[i].shard_dim is not None]
        if not sharded:
            continue
        device = _local(tensors[sharded[0]]).device
        send_parts = [[_local(tensors[i]).reshape(-1) for i in sharded if owners[i] == q] for q in range(world_size)]
        send_splits = [sum(p.numel() for p in parts) for parts in send_parts]
        owned = [i for i in sharded if owners[i] == rank]
        recv_splits = [sum(math.prod(layouts[i].piece_shape(q, world_size)) for i in owned) for q in range(world_size)]
        wire = comm_dtype or dtype
        send = torch.cat([p for parts in send_parts for p in parts]).to(wire) if sum(send_splits) else torch.empty(0, dtype=wire, device=device)
        recv = torch.empty(sum(recv_splits), dtype=wire, device=device)
        dist.all_to_all_single(recv, send, recv_splits, send_splits, group=group)
        stats.add("all_to_all", (sum(send_splits) - send_splits[rank]) * send.element_size())
        recv = recv.to(dtype)
        pieces: dict[int, list[Tensor]] = {i: [] for i in owned}
        for q, chunk in enumerate(recv.split(recv_splits)):
            offset = 0
            for i in owned:
                shape = layouts[i].piece_shape(q, world_size)
                size = math.prod(shape)
                pieces[i].append(chunk[offset : offset + size].view(shape))
                offset += size
        for i in owned:
            whole[i] = torch.cat(pieces[i], dim=layouts[i].shard_dim)

    # 3. One call on everything this rank owns.
    inputs = [whole[i] for i in mine]
    outputs = fn(inputs) if inputs else []
    if len(outputs) != len(inputs):
        raise RuntimeError(f"map_whole: fn returned {len(outputs)} tensors for {len(inputs)} inputs")
    result_of = dict(zip(mine, outputs))
    for i, out in result_of.items():
        if out.shape != whole[i].shape or out.dtype != whole[i].dtype:
            raise RuntimeError(
                f"map_whole: fn must keep shape and dtype, got {tuple(out.shape)} {out.dtype} "
                f"for input {tuple(whole[i].shape)} {whole[i].dtype}"
            )

    # 4. Return the results in each tensor's layout.
    results: list[Tensor | None] = [None] * count
    for dtype in dtypes:
        device = _local(tensors[next(i for i in range(count) if tensors[i].dtype == dtype)]).device
        sharded = [i for i in range(count) if tensors[i].dtype == dtype and layouts[i].shard_dim is not None]
        if sharded:
            owned = [i for i in sharded if owners[i] == rank]
            split_pieces = {
                i: result_of[i].split(shard_sizes(layouts[i].shape[layouts[i].shard_dim], world_size), dim=layouts[i].shard_dim)
                for i in owned
            }
            send_parts = [[split_pieces[i][q].reshape(-1) for i in owned] for q in range(world_size)]
            send_splits = [sum(p.numel() for p in parts) for parts in send_parts]
            recv_splits = [
                sum(math.prod(layouts[i].piece_shape(rank, world_size)) for i in sharded if owners[i] == q)
                for q in range(world_size)
            ]
            wire = comm_dtype or dtype
            send = torch.cat([p for parts in send_parts for p in parts]).to(wire) if sum(send_splits) else torch.empty(0, dtype=wire, device=device)
            recv = torch.empty(sum(recv_splits), dtype=wire, device=device)
            dist.all_to_all_single(recv, send, recv_splits, send_splits, group=group)
            stats.add("all_to_all", (sum(send_splits) - send_splits[rank]) * send.element_size())
            recv = recv.to(dtype)
            for q, chunk in enumerate(recv.split(recv_splits)):
                offset = 0
                for i in sharded:
                    if owners[i] != q:
                        continue
                    shape = layouts[i].piece_shape(rank, world_size)
                    size = math.prod(shape)
                    results[i] = _wrap(chunk[offset : offset + size].view(shape), layouts[i], wrap)
                    offset += size
        replicated = [i for i in range(count) if tensors[i].dtype == dtype and layouts[i].shard_dim is None]
        if replicated:
            by_rank = [[i for i in replicated if owners[i] == q] for q in range(world_size)]
            lengths = [sum(math.prod(layouts[i].shape) for i in members) for members in by_rank]
            longest = max(lengths)
            if longest == 0:
                for i in replicated:  # all empty tensors: nothing to move
                    results[i] = _wrap(torch.empty(layouts[i].shape, dtype=dtype, device=device), layouts[i], wrap)
                continue
            wire = comm_dtype or dtype
            send = torch.zeros(longest, dtype=wire, device=device)
            if by_rank[rank]:
                send[: lengths[rank]] = torch.cat([result_of[i].reshape(-1) for i in by_rank[rank]])
            recv = torch.empty(world_size * longest, dtype=wire, device=device)
            _all_gather_single(recv, send, group=group)
            stats.add("all_gather", (world_size - 1) * longest * send.element_size())
            recv = recv.to(dtype)
            for q, members in enumerate(by_rank):
                offset = q * longest
                for i in members:
                    size = math.prod(layouts[i].shape)
                    results[i] = _wrap(recv[offset : offset + size].view(layouts[i].shape), layouts[i], wrap)
                    offset += size
    return results  # type: ignore[return-value]
