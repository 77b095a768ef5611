"""How whole matrices travel: named phases, each exchange written once.

:func:`map_whole` applies a function of *whole* tensors (say, "orthogonalize these momenta") to tensors
laid out any way a :class:`~muonlab.distributed.layout.Layout` describes — replicated on every rank (DDP,
plain tensors, DTensor ``Replicate``), or cut into pieces over the ranks of a flattened n-D mesh (FSDP2,
HSDP, FSDP2 over tensor parallelism, expert stacks) — in four phases:

1. **to owners** — ``owners[i]`` (from :func:`muonlab.distributed.plan.assign_owners`) is the one rank that
   computes tensor i. Every distinct piece the owner lacks is sent to it by one rank that holds it (the
   owner's own copy when it has one; among replicas, the one that has sent least so far). One
   ``all_to_all_single`` per dtype carries every piece of the phase.
2. **compute** — each rank calls ``fn`` once on all the whole tensors it owns (batched as ``fn`` likes),
   plus the pieces of tensors marked :data:`LOCAL` (``owners[i] == LOCAL``): their pieces are whole units
   of work already (an expert stack cut on its expert dim, heads cut on head boundaries), so every rank
   computes its own piece and nothing travels.
3. **back to shards** — the owner sends every rank that holds a part (not the whole) of tensor i its piece
   of the result; the same exchange as phase 1, the other way.
4. **gather replicated** — results every rank holds whole are shared by one ``all_gather`` per dtype of
   every rank's packed results (padded to the longest payload: gloo refuses uneven gathers).

Every rank derives the same transfer list from (layouts, owners) without talking, so the senders' and
receivers' packing orders agree. ``comm_dtype`` (e.g. bfloat16) makes the values travel in that dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import Tensor

from muonlab.distributed.layout import Layout, Piece, piece_shape, put, take

# torch >= 2.10 renamed all_gather_into_tensor to all_gather_single (the old name warns).
_all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor

LOCAL = -1  # owners[i] == LOCAL: every rank computes its own piece of tensor i

PHASES = ("to_owners", "compute", "back_to_shards", "gather_replicated")


@dataclass
class CommStats:
    """What this rank sent and received during :func:`map_whole` calls (self-copies excluded).

    Bytes follow the usual cost model: an ``all_to_all`` sends each peer its part directly; a ring
    ``all_gather`` of a ``b``-byte payload per rank makes each rank send and receive ``(W − 1)·b``.
    ``per_op``: bytes sent per collective ("all_to_all", "all_gather"); ``per_phase``: per phase name."""

    bytes_sent: int = 0
    bytes_received: int = 0
    collectives: int = 0
    flops: float = 0.0
    matrices: int = 0
    per_op: dict = field(default_factory=dict)
    per_phase: dict = field(default_factory=dict)

    def add(self, op: str, nbytes: int, phase: str = "", received: int = 0) -> None:
        self.bytes_sent += nbytes
        self.bytes_received += received
        self.collectives += 1
        self.per_op[op] = self.per_op.get(op, 0) + nbytes
        if phase:
            self.per_phase[phase] = self.per_phase.get(phase, 0) + nbytes

    def reset(self) -> None:
        self.bytes_sent, self.bytes_received, self.collectives, self.flops, self.matrices = 0, 0, 0, 0.0, 0
        self.per_op, self.per_phase = {}, {}


@dataclass(frozen=True)
class Transfer:
    """Tensor ``index``'s ``piece`` goes from rank ``source`` to rank ``target``."""

    index: int
    source: int
    target: int
    piece: Piece

    @property
    def numel(self) -> int:
        return math.prod(piece_shape(self.piece))


def owner_transfers(layouts: Sequence[Layout], owners: Sequence[int], world_size: int) -> list[Transfer]:
    """Phase 1's transfers: every distinct piece of a sharded tensor its owner lacks, from one holder each.

    Among several holders of a piece (replicas) the one that has sent the fewest elements so far sends it
    (ties: the lowest rank), so HSDP's replica groups share the sending."""
    sent = [0] * world_size
    transfers = []
    for index, (layout, owner) in enumerate(zip(layouts, owners)):
        if owner == LOCAL or layout.pieces is None or layout.holds_whole(owner):
            continue
        holders: dict[Piece, list[int]] = {}
        for rank, piece in enumerate(layout.pieces):
            if math.prod(piece_shape(piece)):
                holders.setdefault(piece, []).append(rank)
        for piece, ranks in holders.items():
            if owner in ranks:
                continue
            source = min(ranks, key=lambda r: (sent[r], r))
            transfer = Transfer(index, source, owner, piece)
            sent[source] += transfer.numel
            transfers.append(transfer)
    return transfers


def shard_transfers(layouts: Sequence[Layout], owners: Sequence[int], world_size: int) -> list[Transfer]:
    """Phase 3's transfers: the owner sends every other rank its non-empty piece of the result."""
    transfers = []
    for index, (layout, owner) in enumerate(zip(layouts, owners)):
        if owner == LOCAL or layout.pieces is None:
            continue
        for rank, piece in enumerate(layout.pieces):
            if rank != owner and math.prod(piece_shape(piece)):
                transfers.append(Transfer(index, owner, rank, piece))
    return transfers


def exchange(
    transfers: Sequence[Transfer],
    payload: Callable[[Transfer], Tensor],
    dtype: torch.dtype,
    device: torch.device,
    group,
    stats: CommStats,
    phase: str,
    wire: torch.dtype | None = None,
) -> dict[Transfer, Tensor]:
    """Carry ``transfers`` (all of one dtype) with one ``all_to_all_single``; the flat values this rank received.

    ``payload(t)`` gives the values of a transfer this rank sends. Nothing is called when no transfer
    crosses ranks (every rank knows the same list, so all skip together)."""
    if not transfers:
        return {}
    world_size, rank = dist.get_world_size(group), dist.get_rank(group)
    wire = wire or dtype
    outgoing = [t for t in transfers if t.source == rank]
    incoming = [t for t in transfers if t.target == rank]
    send_splits = [sum(t.numel for t in outgoing if t.target == q) for q in range(world_size)]
    recv_splits = [sum(t.numel for t in incoming if t.source == q) for q in range(world_size)]
    ordered = sorted(outgoing, key=lambda t: t.target)  # stable: per target, in transfer order
    if ordered:
        send = torch.cat([payload(t).reshape(-1).to(wire) for t in ordered])
    else:
        send = torch.empty(0, dtype=wire, device=device)
    recv = torch.empty(sum(recv_splits), dtype=wire, device=device)
    dist.all_to_all_single(recv, send, recv_splits, send_splits, group=group)
    size = recv.element_size()
    stats.add("all_to_all", (sum(send_splits) - send_splits[rank]) * size, phase,
              received=(sum(recv_splits) - recv_splits[rank]) * size)
    recv = recv.to(dtype)
    received: dict[Transfer, Tensor] = {}
    offsets = [sum(recv_splits[:q]) for q in range(world_size)]
    for t in incoming:  # per source, in transfer order: the order the source packed them
        received[t] = recv[offsets[t.source] : offsets[t.source] + t.numel]
        offsets[t.source] += t.numel
    return received


def to_owners(
    tensors: Sequence[Tensor], layouts: Sequence[Layout], owners: Sequence[int], group, stats: CommStats,
    wire: torch.dtype | None = None, transfers: Sequence[Transfer] | None = None,
) -> dict[int, Tensor]:
    """Phase 1: the whole tensor i on rank ``owners[i]`` (index → whole, for the tensors this rank owns).
    ``transfers``: :func:`owner_transfers` of these layouts and owners, when the caller has them already."""
    world_size, rank = dist.get_world_size(group), dist.get_rank(group)
    whole: dict[int, Tensor] = {}
    for i, (t, layout, owner) in enumerate(zip(tensors, layouts, owners)):
        if owner == rank and layout.holds_whole(rank):
            whole[i] = t
    if transfers is None:
        transfers = owner_transfers(layouts, owners, world_size)
    for dtype, device, members in _by_dtype(tensors):
        chosen = [t for t in transfers if t.index in members]
        received = exchange(chosen, lambda t: tensors[t.index], dtype, device, group, stats, "to_owners", wire)
        arrived: dict[int, list[Transfer]] = {}
        for t in received:
            arrived.setdefault(t.index, []).append(t)
        for i in members:
            if owners[i] != rank or i in whole:
                continue
            layout = layouts[i]
            assembled = torch.empty(layout.shape, dtype=dtype, device=device)
            put(assembled, layout.piece(rank), tensors[i])
            for t in arrived.get(i, ()):
                put(assembled, t.piece, received[t].view(piece_shape(t.piece)))
            whole[i] = assembled
    return whole


def back_to_shards(
    results: dict[int, Tensor], tensors: Sequence[Tensor], layouts: Sequence[Layout], owners: Sequence[int], group,
    stats: CommStats, wire: torch.dtype | None = None, transfers: Sequence[Transfer] | None = None,
) -> dict[int, Tensor]:
    """Phase 3: every rank's piece of the result of each sharded tensor (index → local result).
    ``transfers``: :func:`shard_transfers` of these layouts and owners, when the caller has them already."""
    world_size, rank = dist.get_world_size(group), dist.get_rank(group)
    mine: dict[int, Tensor] = {}
    if transfers is None:
        transfers = shard_transfers(layouts, owners, world_size)
    for dtype, device, members in _by_dtype(tensors):
        chosen = [t for t in transfers if t.index in members]
        received = exchange(chosen, lambda t: take(results[t.index], t.piece), dtype, device, group, stats,
                            "back_to_shards", wire)
        mine_of = {t.index: t for t in received}  # what this rank received: its own pieces
        for i in members:
            layout = layouts[i]
            if owners[i] == LOCAL or layout.pieces is None:
                continue
            piece = layout.piece(rank)
            if owners[i] == rank:
                mine[i] = take(results[i], piece)
                continue
            got = mine_of.get(i)
            mine[i] = received[got].view(piece_shape(piece)) if got is not None else tensors[i].new_empty(piece_shape(piece))
    return mine


def gather_replicated(
    results: dict[int, Tensor], tensors: Sequence[Tensor], layouts: Sequence[Layout], owners: Sequence[int], group,
    stats: CommStats, wire: torch.dtype | None = None,
) -> dict[int, Tensor]:
    """Phase 4: every rank gets the whole result of each replicated tensor (one ``all_gather`` per dtype)."""
    world_size, rank = dist.get_world_size(group), dist.get_rank(group)
    out: dict[int, Tensor] = {}
    for dtype, device, members in _by_dtype(tensors):
        replicated = [i for i in members if layouts[i].pieces is None and owners[i] != LOCAL]
        if not replicated:
            continue
        by_rank = [[i for i in replicated if owners[i] == q] for q in range(world_size)]
        lengths = [sum(math.prod(layouts[i].shape) for i in members_q) for members_q in by_rank]
        longest = max(lengths)
        if longest == 0:  # only empty tensors: nothing to move
            for i in replicated:
                out[i] = torch.empty(layouts[i].shape, dtype=dtype, device=device)
            continue
        w = wire or dtype
        send = torch.zeros(longest, dtype=w, device=device)
        if by_rank[rank]:
            send[: lengths[rank]] = torch.cat([results[i].reshape(-1) for i in by_rank[rank]])
        recv = torch.empty(world_size * longest, dtype=w, device=device)
        _all_gather_single(recv, send, group=group)
        nbytes = (world_size - 1) * longest * send.element_size()
        stats.add("all_gather", nbytes, "gather_replicated", received=nbytes)
        recv = recv.to(dtype)
        for q, members_q in enumerate(by_rank):
            offset = q * longest
            for i in members_q:
                size = math.prod(layouts[i].shape)
                out[i] = recv[offset : offset + size].view(layouts[i].shape)
                offset += size
    return out


def traffic(
    layouts: Sequence[Layout], owners: Sequence[int], element_sizes: Sequence[int], world_size: int,
    dtypes: Sequence[object] | None = None,
) -> list[dict[str, list[int]]]:
    """Bytes every rank will send and receive in each phase of :func:`map_whole`, without running it.

    ``element_sizes[i]``: bytes per value of tensor i on the wire; ``dtypes[i]`` groups the gathers (one
    per dtype, padded to the longest payload). Returns one dict per rank: phase → [sent, received]. Built
    from the same transfer lists the phases use, so it equals what :class:`CommStats` counts."""
    out = [{phase: [0, 0] for phase in PHASES if phase != "compute"} for _ in range(world_size)]
    for phase, transfers in (("to_owners", owner_transfers(layouts, owners, world_size)),
                             ("back_to_shards", shard_transfers(layouts, owners, world_size))):
        for t in transfers:
            nbytes = t.numel * element_sizes[t.index]
            out[t.source][phase][0] += nbytes
            out[t.target][phase][1] += nbytes
    dtypes = dtypes if dtypes is not None else list(element_sizes)
    for dtype in set(dtypes):
        replicated = [i for i, d in enumerate(dtypes) if d == dtype and layouts[i].pieces is None and owners[i] != LOCAL]
        if not replicated:
            continue
        lengths = [sum(math.prod(layouts[i].shape) for i in replicated if owners[i] == q) for q in range(world_size)]
        nbytes = (world_size - 1) * max(lengths) * element_sizes[replicated[0]]
        for q in range(world_size):
            out[q]["gather_replicated"][0] += nbytes
            out[q]["gather_replicated"][1] += nbytes
    return out


def map_whole(
    fn: Callable[..., list[Tensor]],
    tensors: Sequence[Tensor],
    layouts: Sequence[Layout],
    owners: Sequence[int],
    group=None,
    stats: CommStats | None = None,
    comm_dtype: torch.dtype | None = None,
    wrap: bool = True,
    sections: Sequence | None = None,
    transfers: tuple[Sequence[Transfer], Sequence[Transfer]] | None = None,
) -> list[Tensor]:
    """``[fn(whole tensor i)]`` for every i, computed once on rank ``owners[i]``, returned in each tensor's layout.

    ``fn`` receives the list of whole tensors this rank owns (in index order), followed by nothing else,
    and must return tensors of the same shapes and dtypes. Tensors with ``owners[i] == LOCAL`` are given
    to ``fn`` as this rank's piece instead (see the module docstring). With ``sections`` (one entry per
    tensor, for this rank: what ``fn`` needs to know about each input's blocks) ``fn`` is called as
    ``fn(inputs, their sections)``. Every rank must call this with the same shapes, dtypes, layouts and
    owners (collectives are matched by order). Returns DTensors for DTensor inputs unless ``wrap=False``
    (then the local results as plain tensors), plain tensors otherwise. ``transfers``: the
    (:func:`owner_transfers`, :func:`shard_transfers`) of these layouts and owners, planned once by the caller."""
    count = len(tensors)
    if not (len(layouts) == len(owners) == count):
        raise ValueError(f"map_whole: {count} tensors, {len(layouts)} layouts, {len(owners)} owners")
    if sections is not None and len(sections) != count:
        raise ValueError(f"map_whole: {count} tensors, {len(sections)} sections")
    stats = stats if stats is not None else CommStats()
    rank = dist.get_rank(group)
    local = [_local(t) for t in tensors]

    inbound, outbound = transfers if transfers is not None else (None, None)
    whole = to_owners(local, layouts, owners, group, stats, comm_dtype, inbound)
    computed = [i for i in range(count) if owners[i] == LOCAL and local[i].numel() or owners[i] == rank]
    inputs = [local[i] if owners[i] == LOCAL else whole[i] for i in computed]
    results = _compute(fn, inputs, [sections[i] for i in computed] if sections is not None else None)
    result_of = dict(zip(computed, results))
    shards = back_to_shards(result_of, local, layouts, owners, group, stats, comm_dtype, outbound)
    gathered = gather_replicated(result_of, local, layouts, owners, group, stats, comm_dtype)

    out: list[Tensor] = []
    for i in range(count):
        if owners[i] == LOCAL:
            value = result_of[i] if i in result_of else local[i].clone()  # an empty piece
        elif i in shards:
            value = shards[i]
        else:
            value = gathered[i]
        out.append(_wrap(value, layouts[i], wrap))
    return out


def _compute(fn, inputs: list[Tensor], sections: list | None) -> list[Tensor]:
    """Phase 2: one call of ``fn`` on everything this rank computes; shapes and dtypes must be kept."""
    if not inputs:
        return []
    outputs = fn(inputs) if sections is None else fn(inputs, sections)
    if len(outputs) != len(inputs):
        raise RuntimeError(f"map_whole: fn returned {len(outputs)} tensors for {len(inputs)} inputs")
    for x, y in zip(inputs, outputs):
        if y.shape != x.shape or y.dtype != x.dtype:
            raise RuntimeError(
                f"map_whole: fn must keep shape and dtype, got {tuple(y.shape)} {y.dtype} "
                f"for input {tuple(x.shape)} {x.dtype}"
            )
    return list(outputs)


def _by_dtype(tensors: Sequence[Tensor]) -> list[tuple[torch.dtype, torch.device, set[int]]]:
    groups: dict[torch.dtype, set[int]] = {}
    for i, t in enumerate(tensors):
        groups.setdefault(t.dtype, set()).add(i)
    return [(dtype, tensors[min(members)].device, members) for dtype, members in sorted(groups.items(), key=lambda kv: str(kv[0]))]


def _local(t: Tensor) -> Tensor:
    return t.to_local() if hasattr(t, "to_local") else t


def _wrap(value: Tensor, layout: Layout, wrap: bool = True) -> Tensor:
    if layout.dtensor_spec is None or not wrap:
        return value
    from torch.distributed.tensor import DTensor

    mesh, placements, shape, stride = layout.dtensor_spec
    return DTensor.from_local(value, mesh, placements, run_check=False, shape=shape, stride=stride)
