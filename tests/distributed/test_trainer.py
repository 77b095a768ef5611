"""The LM trainer with --parallel ddp|fsdp: same losses as one process on the global batch; Ctrl-C + resume exact."""

from __future__ import annotations

from tests.distributed.conftest import scenario


def _rel(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) / abs(y) for x, y in zip(a, b))


def test_parallel_training_matches_one_process_on_the_global_batch(world):
    world_size, results = world
    outs = scenario(results, "trainer")
    single = outs[0]["single"]
    assert len(single) == 4
    for out in outs:
        for kind in ("ddp", "fsdp"):
            assert len(out[kind]) == 4
            assert _rel(out[kind], single) <= 1e-5, (kind, out[kind], single)
    assert "results.json" in outs[0]["fsdp_files"] and "checkpoint.pt" in outs[0]["fsdp_files"]
    assert any(name.startswith("checkpoint_dcp_step") for name in outs[0]["fsdp_files"])


def test_ctrl_c_on_one_rank_stops_all_and_the_resume_is_exact(world):
    world_size, results = world
    for out in scenario(results, "trainer"):
        assert out["part_interrupted"] and out["part_steps"] == 2
        assert out["resumed"] == out["fsdp"]  # bitwise: same shards, same order of operations
        assert out["resumed_val"] == out["fsdp_val"]
