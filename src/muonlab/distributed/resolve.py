"""Which distribution a parameter group needs, read from the parameters themselves.

- DTensor parameters (FSDP2 ``fully_shard``, HSDP, FSDP2 over tensor parallelism, expert stacks, hand-made
  ``distribute_tensor``) on a mesh of any number of dims with ``Shard(d)``, ``_StridedShard`` or ``Replicate``
  on each: *sharded* mode on a process group holding every rank of the mesh; nothing to pass.
- Plain tensors while ``torch.distributed`` is initialized with more than one rank (DDP, or any
  replicated run): *replicated* mode on the default group, or on the group/mesh the user passes.
- Otherwise (or ``distributed="none"`` with plain tensors): single process.

Everything here is local (no collective) except :func:`check_same_on_all_ranks`, which every rank
calls once before the first distributed step so that ranks that built different optimizers all
fail with the same message instead of waiting for each other in a collective.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch.distributed as dist
from torch import Tensor

from muonlab.distributed.layout import Layout, common_mesh, dtensor_layout, mesh_group

MODES = ("auto", "none")


@dataclass(frozen=True)
class Distribution:
    """Resolved distribution of one parameter group: the process group to use and whether params are sharded."""

    mode: str  # "replicated" or "sharded"
    group: object  # a ProcessGroup (None = the default group)
    mesh: object | None = None


def is_dtensor(t: Tensor) -> bool:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch built without distributed
        return False
    return isinstance(t, DTensor)


def layout_of(t: Tensor, name: str = "parameter", mesh=None) -> Layout:
    """The :class:`Layout` of a plain tensor (replicated) or a DTensor; one clear line for what cannot be handled.

    ``mesh``: read the DTensor's layout over this mesh's ranks instead of its own (its mesh must be a
    sub-mesh of ``mesh``, as a tensor-parallel model's ``fully_shard``-only parameters are of the 2-D mesh)."""
    if not is_dtensor(t):
        return Layout(shape=tuple(t.shape))
    return dtensor_layout(t, name, mesh)


def resolve_distribution(
    params: Sequence[Tensor], distributed="auto", where: str = "param group", enclosing=None
) -> Distribution | None:
    """How the matrices of one parameter group are distributed, or None for a single process.

    ``distributed``: "auto" (read it from the parameters and ``torch.distributed``), "none" (single
    process; refused for DTensor parameters, whose shards would be orthogonalized separately), a
    ``ProcessGroup`` or a ``DeviceMesh`` (replicated parameters on that group, or on all the mesh's ranks).
    ``enclosing``: a mesh the DTensors' meshes are sub-meshes of, to read them over (see
    :func:`muonlab.distributed.layout.enclosing_mesh`)."""
    if not isinstance(distributed, str) and distributed is not None and not _is_group_or_mesh(distributed):
        raise TypeError(
            f"distributed must be 'auto', 'none', a torch.distributed ProcessGroup or a DeviceMesh, got {distributed!r}"
        )
    if isinstance(distributed, str) and distributed not in MODES:
        raise ValueError(f"distributed must be one of {MODES}, a ProcessGroup or a DeviceMesh, got {distributed!r}")
    kinds = [is_dtensor(p) for p in params]
    if any(kinds) and not all(kinds):
        plain = [i for i, k in enumerate(kinds) if not k]
        sharded = [i for i, k in enumerate(kinds) if k]
        raise ValueError(
            f"{where} mixes DTensor parameters (positions {sharded[:5]}) with plain tensors (positions {plain[:5]}): "
            "shard all of them (fully_shard the whole model) or put them in separate param groups"
        )
    if all(kinds) and params:
        if distributed == "none":
            raise ValueError(
                f"{where}: distributed='none' with DTensor parameters would orthogonalize each shard separately, "
                "which changes the math; leave distributed='auto'"
            )
        # By equality, not identity: fully_shard without mesh= builds equal meshes, one object per call.
        meshes = list({p.device_mesh: p.device_mesh for p in params}.values())
        if enclosing is not None and enclosing not in meshes:
            meshes.append(enclosing)
        mesh = common_mesh(meshes, where)
        group = mesh_group(mesh)
        if _is_group_or_mesh(distributed) and _group_of(distributed) is not group:
            raise ValueError(f"{where}: the process group passed as distributed= is not the mesh of the DTensor parameters")
        return Distribution("sharded", group, mesh)
    if distributed == "none":
        return None
    if _is_group_or_mesh(distributed):
        group = _group_of(distributed)
        return Distribution("replicated", group) if dist.get_world_size(group) > 1 else None
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return Distribution("replicated", None)
    return None


def _is_group_or_mesh(obj) -> bool:
    if not dist.is_available():
        return False
    from torch.distributed.device_mesh import DeviceMesh

    return isinstance(obj, (dist.ProcessGroup, DeviceMesh))


def _group_of(obj):
    from torch.distributed.device_mesh import DeviceMesh

    if isinstance(obj, DeviceMesh):
        return mesh_group(obj)
    return obj


def signature(params: Sequence[Tensor]) -> list[tuple]:
    """What must agree across ranks: the shape, dtype and layout of every parameter, in order."""
    out = []
    for p in params:
        layout = "plain"
        if is_dtensor(p):
            layout = ",".join(str(pl) for pl in p.placements)
        out.append((tuple(p.shape), str(p.dtype).replace("torch.", ""), layout))
    return out


def check_same_on_all_ranks(sig: list, group=None, what: str = "the optimizer's parameter list") -> None:
    """Raise the same RuntimeError on every rank when the ranks' ``sig`` differ (one all_gather_object)."""
    world_size = dist.get_world_size(group)
    gathered: list = [None] * world_size
    dist.all_gather_object(gathered, sig, group=group)
    first = gathered[0]
    for rank, other in enumerate(gathered):
        if other == first:
            continue
        detail = _first_difference(first, other)
        raise RuntimeError(
            f"ranks disagree on {what}: rank 0 has {len(first)}, rank {rank} has {len(other)}; {detail}. "
            "Every rank must build the same model and optimizer (same parameters, shapes, dtypes and sharding)"
        )


def _first_difference(a: list, b: list) -> str:
    for index, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"first difference at entry {index}: {x} vs {y}"
    longer = a if len(a) > len(b) else b
    return f"the shorter list ends at entry {min(len(a), len(b))}, where the longer one has {longer[min(len(a), len(b))]}"
