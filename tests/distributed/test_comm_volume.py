"""What one FSDP2 training step moves: the collective counter, AdamW vs Muon."""

from __future__ import annotations

from tests.distributed.conftest import scenario
from tests.distributed.scenarios import single_process_reference


def test_the_optimizer_leaves_fsdp_traffic_alone_and_adds_only_its_all_to_alls(world):
    world_size, results = world
    for out in scenario(results, "comm_volume"):
        adamw, muon = out["adamw"]["by_op"], out["muon"]["by_op"]
        # forward all-gathers and gradient reduce-scatters are FSDP's and identical for both optimizers
        for op in ("_allgather_base_", "_reduce_scatter_base_"):
            assert adamw[op] == muon[op] > 0, op
        assert out["adamw"]["step"] == 0  # AdamW on local shards moves nothing
        # Muon's step: the two all_to_alls map_whole reported, plus one tiny agreement all-reduce (3 float64)
        assert muon["alltoall_base_"] == out["muon_stats_step"]["all_to_all"]
        assert muon["allreduce_"] == 2 * (world_size - 1) * 24 // world_size
        assert out["muon"]["step"] == muon["alltoall_base_"] + muon["allreduce_"]


def test_muon_moves_at_most_a_third_more_than_adamw(world):
    # Owner-rank orthogonalization adds 2(W-1)/W^2 of the matrix bytes per rank, against FSDP2's
    # 3(W-1)/W (two all-gathers, one reduce-scatter): ratio 1 + 2/(3W) on a perfectly balanced model.
    world_size, results = world
    for out in scenario(results, "comm_volume"):
        ratio = out["muon"]["total"] / out["adamw"]["total"]
        assert 1.0 < ratio <= 1 + 2 / (3 * world_size) + 0.02, ratio


def test_bf16_iteration_sends_bf16_matrices_at_half_the_bytes(world):
    # polar_dtype=bfloat16 (what CUDA uses by default) makes the matrices travel in bf16.
    world_size, results = world
    reference = single_process_reference("muon_bf16", steps=2)
    exact = single_process_reference("muon", steps=2)

    def rel(a, b):
        return float((a - b).norm() / b.norm())

    for out in scenario(results, "comm_volume"):
        assert out["muon_bf16"]["by_op"]["alltoall_base_"] * 2 == out["muon"]["by_op"]["alltoall_base_"]
        # the transfers' rounding is no larger than the bf16 iteration's own (vs the fp32 iteration)
        transfer = sum(rel(out["muon_bf16_params"][n], reference[n]) for n in reference)
        iteration = sum(rel(reference[n], exact[n]) for n in reference)
        assert 0 < transfer <= iteration, (transfer, iteration)
