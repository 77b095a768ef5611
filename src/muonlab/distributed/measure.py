"""Count the bytes every collective moves, whoever issues it (DDP, FSDP2, DTensor, muonlab).

:class:`CollectiveCounter` is a ``TorchDispatchMode``: c10d collectives go through the dispatcher
(``c10d.allreduce_``, ``c10d._allgather_base_``, ``c10d._reduce_scatter_base_``,
``c10d.alltoall_base_``, ...), including the ones DDP's reducer and FSDP2 issue from C++/Python,
so one counter sees the whole training step. Bytes are what *this rank sends* under the usual
cost model (ring all-reduce 2(W−1)/W·b, ring all-gather (W−1)·b_in, ring reduce-scatter
(W−1)·b_out, all-to-all everything but the self part, broadcast b from the root).
"""

from __future__ import annotations

from collections import defaultdict

import torch
from torch.utils._python_dispatch import TorchDispatchMode


def _nbytes(obj) -> int:
    if isinstance(obj, torch.Tensor):
        local = obj.to_local() if hasattr(obj, "to_local") else obj
        return local.numel() * local.element_size()
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(o) for o in obj)
    return 0


class CollectiveCounter(TorchDispatchMode):
    """``with CollectiveCounter(world_size) as counter: ...`` then ``counter.bytes_sent``, ``counter.by_op``."""

    def __init__(self, world_size: int, rank: int = 0) -> None:
        super().__init__()
        self.world_size = world_size
        self.rank = rank
        self.by_op: dict[str, int] = defaultdict(int)
        self.calls: dict[str, int] = defaultdict(int)

    @property
    def bytes_sent(self) -> int:
        return sum(self.by_op.values())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.name() if hasattr(func, "name") else str(func)
        if name.startswith("c10d::") or name.startswith("_c10d_functional::"):
            op = name.split("::", 1)[1].split(".")[0]
            self.by_op[op] += self._sent(op, args)
            self.calls[op] += 1
        return func(*args, **kwargs)

    def _sent(self, op: str, args) -> int:
        w = self.world_size
        if w <= 1:
            return 0
        if op in ("allreduce_", "allreduce_coalesced_", "all_reduce", "all_reduce_coalesced"):
            return 2 * (w - 1) * _nbytes(args[0]) // w
        if op in ("_allgather_base_", "allgather_into_tensor_coalesced_"):
            return (w - 1) * _nbytes(args[1])
        if op in ("allgather_", "allgather_coalesced_"):
            return (w - 1) * _nbytes(args[1])
        if op in ("all_gather_into_tensor", "all_gather_into_tensor_coalesced"):
            return (w - 1) * _nbytes(args[0])
        if op in ("_reduce_scatter_base_", "reduce_scatter_tensor_coalesced_", "reduce_scatter_"):
            return (w - 1) * _nbytes(args[0])
        if op in ("reduce_scatter_tensor", "reduce_scatter_tensor_coalesced"):
            return (w - 1) * _nbytes(args[0]) // w
        if op == "alltoall_base_":  # (output, input, group, output_split_sizes, input_split_sizes, ...)
            inp, in_splits = args[1], args[4]
            total = _nbytes(inp)
            if in_splits:
                row = inp[0].numel() if inp.dim() > 1 else 1
                return total - in_splits[self.rank] * row * inp.element_size()
            return total * (w - 1) // w
        if op in ("alltoall_", "all_to_all_single"):
            return _nbytes(args[1]) * (w - 1) // w
        if op == "broadcast_":  # (tensors, group, root_rank, ...): only the root sends
            return _nbytes(args[0]) if args[2] == self.rank else 0
        if op in ("barrier", "monitored_barrier_"):
            return 0
        return _nbytes(args[0]) if args else 0
