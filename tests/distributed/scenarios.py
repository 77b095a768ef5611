"""Work run inside the spawned ranks (module-level so that spawn can import it).

Each scenario returns plain data (tensors, numbers, strings); the tests in this folder assert on it.
Spawning is slow on a 2-core machine, so one spawn per world size runs every scenario
(:func:`all_scenarios`) and the tests share the result through a module-scoped fixture.
"""

from __future__ import annotations

import traceback

import torch
import torch.distributed as dist

from muonlab.distributed.comm import CommStats, map_whole
from muonlab.distributed.plan import assign_owners
from muonlab.distributed.resolve import layout_of

# Shapes with repeats (batched on the owner), rows not divisible by 2 or 3, an empty shard on
# 3 ranks (4 rows → 2, 2, 0), a conv-like 3-D tensor, and float64 next to float32.
COMM_SHAPES = [(7, 5), (7, 5), (4, 6), (6, 4), (7, 5), (5, 2, 3), (9, 9)]
COMM_DTYPES = [torch.float32] * 6 + [torch.float64]


def orthogonalize(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """The function the owners apply: polar factor of each tensor seen as a matrix (rows × rest)."""
    from muonlab import polar

    return [polar(t.reshape(t.shape[0], -1), method="svd").reshape(t.shape) for t in tensors]


def reference_inputs() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1234)
    return [torch.randn(s, generator=generator, dtype=d) for s, d in zip(COMM_SHAPES, COMM_DTYPES)]


def comm_scenario(rank: int, world_size: int) -> dict:
    """map_whole on replicated tensors, on DTensor Shard(0) / Shard(1) / Replicate; counts who computed what."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    full = reference_inputs()
    owners = assign_owners([t.shape for t in full], world_size)
    calls: list[int] = []

    def counting(tensors):
        calls.append(len(tensors))
        return orthogonalize(tensors)

    out: dict = {"owners": owners}
    stats = CommStats()
    replicated = map_whole(counting, full, [layout_of(t) for t in full], owners, None, stats)
    out["replicated"] = [r.clone() for r in replicated]
    out["replicated_bytes"] = stats.bytes_sent
    out["replicated_calls"] = list(calls)

    mesh = init_device_mesh("cpu", (world_size,))
    for name, placement in (("shard0", Shard(0)), ("shard1", Shard(1)), ("replicate", Replicate())):
        calls.clear()
        stats = CommStats()
        dtensors = [distribute_tensor(t, mesh, [placement]) for t in full]
        results = map_whole(counting, dtensors, [layout_of(t) for t in dtensors], owners, mesh.get_group(), stats)
        out[f"{name}_types"] = [type(r).__name__ for r in results]
        out[f"{name}_placements"] = [str(r.placements) for r in results]
        out[f"{name}_local_match"] = all(r.to_local().shape == d.to_local().shape for r, d in zip(results, dtensors))
        out[name] = [r.full_tensor() for r in results]
        out[f"{name}_bytes"] = stats.bytes_sent
        out[f"{name}_calls"] = list(calls)
    return out


def all_scenarios(rank: int, world_size: int) -> dict:
    """Run every scenario; an exception in one is recorded (with traceback) instead of killing the others."""
    results = {}
    for name, scenario in SCENARIOS.items():
        try:
            results[name] = scenario(rank, world_size)
        except Exception:  # reported by the test that reads this scenario
            results[name] = {"error": traceback.format_exc()}
        dist.barrier()
    return results


SCENARIOS = {
    "comm": comm_scenario,
}
