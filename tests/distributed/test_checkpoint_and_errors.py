"""DCP checkpoints of DTensor optimizer state resume exactly; bad set-ups fail clearly on every rank."""

from __future__ import annotations

import torch

from tests.distributed.conftest import scenario


def test_dcp_resume_equals_uninterrupted_training(world):
    world_size, results = world
    for out in scenario(results, "checkpoint"):
        for name, want in out["uninterrupted"].items():
            assert torch.equal(out["resumed"][name], want), name
        assert out["uninterrupted_state"].keys() == out["resumed_state"].keys()
        assert "momentum_buffer" in out["resumed_state"]
        for key, want in out["uninterrupted_state"].items():
            got = out["resumed_state"][key]
            assert torch.equal(got, want) if isinstance(want, torch.Tensor) else got == want, key


def test_mixing_dtensor_and_plain_parameters_is_refused_on_every_rank(world):
    world_size, results = world
    for out in scenario(results, "bad_input"):
        assert out["mixed"].startswith("ValueError") and "mixes DTensor" in out["mixed"]
        assert out["none_with_dtensor"].startswith("ValueError") and "distributed='none'" in out["none_with_dtensor"]
        assert out["bad_setting"].startswith("ValueError") and "'fsdp'" in out["bad_setting"]


def test_two_dimensional_meshes_are_accepted_with_a_size_one_dim(world):
    # (1, W) mesh: a size-1 replicate dim next to the shard dim; and a 2-D mesh as distributed= for plain tensors
    world_size, results = world
    for out in scenario(results, "bad_input"):
        assert out["mesh_2d"] == "no error" and out["mesh_2d_arg"] == "no error", (out["mesh_2d"], out["mesh_2d_arg"])


def test_ranks_with_different_parameter_lists_all_raise(world):
    world_size, results = world
    outs = scenario(results, "bad_input")
    for out in outs:
        assert out["disagree"].startswith("RuntimeError") and "ranks disagree" in out["disagree"], out["disagree"]
        assert "(8, 4)" in out["disagree"] or "entry" in out["disagree"]
        assert out["after"] == world_size  # the group is still usable: nothing was left half-done


def test_nonfinite_gradient_on_one_rank_skips_the_step_everywhere(world):
    world_size, results = world
    for out in scenario(results, "bad_input"):
        assert out["nan_warned"]
        assert out["nan_unchanged"]
        assert out["nan_no_state"]
