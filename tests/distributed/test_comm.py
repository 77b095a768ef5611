"""map_whole: whole tensors reach their owner, are computed once there, and come back in their layout."""

from __future__ import annotations

import torch

from muonlab.distributed.plan import shard_sizes
from tests.distributed.conftest import scenario
from tests.distributed.scenarios import COMM_SHAPES, orthogonalize, reference_inputs


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30))


def test_every_layout_gives_the_single_process_result(world):
    world_size, results = world
    outs = scenario(results, "comm")
    expected = orthogonalize(reference_inputs())
    for name in ("replicated", "shard0", "shard1", "replicate"):
        for rank, out in enumerate(outs):
            for i, (got, want) in enumerate(zip(out[name], expected)):
                assert got.dtype == want.dtype and got.shape == want.shape, (name, rank, i)
                tol = 1e-12 if want.dtype == torch.float64 else 1e-5
                assert _rel(got, want) <= tol, (name, rank, i, _rel(got, want))
        # every rank ends with bitwise the same values
        for out in outs[1:]:
            for a, b in zip(out[name], outs[0][name]):
                assert torch.equal(a, b), name


def test_each_tensor_is_computed_once_on_its_owner(world):
    world_size, results = world
    outs = scenario(results, "comm")
    owners = outs[0]["owners"]
    assert all(out["owners"] == owners for out in outs)
    for name in ("replicated", "shard0", "shard1", "replicate"):
        per_rank = [sum(out[f"{name}_calls"]) for out in outs]
        assert per_rank == [owners.count(r) for r in range(world_size)], name
        assert all(len(out[f"{name}_calls"]) <= 1 for out in outs), "one batched call per rank"
    assert sorted(set(owners)) == list(range(world_size)), "every rank gets work here"


def test_results_keep_the_input_layout(world):
    world_size, results = world
    for out in scenario(results, "comm"):
        assert all(t == "Tensor" for t in [type(x).__name__ for x in out["replicated"]])
        for name, placement in (("shard0", "Shard(dim=0)"), ("shard1", "Shard(dim=1)"), ("replicate", "Replicate()")):
            assert set(out[f"{name}_types"]) == {"DTensor"}
            assert all(placement in p for p in out[f"{name}_placements"])
            assert out[f"{name}_local_match"]


def test_bytes_sent_match_the_shards_that_change_hands(world):
    world_size, results = world
    outs = scenario(results, "comm")
    owners = outs[0]["owners"]
    shapes = COMM_SHAPES
    sizes = [4 * torch.Size(s).numel() for s in shapes[:6]] + [8 * torch.Size(shapes[6]).numel()]
    for rank, out in enumerate(outs):
        # Shard(0): each rank sends its row block of every matrix it does not own, then the owner
        # sends back every other rank's block: both directions together.
        sent = 0
        for shape, nbytes, owner in zip(shapes, sizes, owners):
            rows = shard_sizes(shape[0], world_size)
            row_bytes = nbytes // shape[0]
            if owner != rank:
                sent += rows[rank] * row_bytes
            else:
                sent += sum(rows[q] for q in range(world_size) if q != rank) * row_bytes
        assert out["shard0_bytes"] == sent
        # replicated: one padded all_gather per dtype, ring cost (W-1) x longest payload
        expect = 0
        for dtype_size, members in ((4, range(6)), (8, range(6, 7))):
            longest = max(sum(sizes[i] // dtype_size for i in members if owners[i] == q) for q in range(world_size))
            expect += (world_size - 1) * longest * dtype_size
        assert out["replicated_bytes"] == out["replicate_bytes"] == expect
