"""DDP and FSDP2 training with muonlab.Muon equals one process on the full batch (fp32 rounding)."""

from __future__ import annotations

import pytest
import torch

from tests.distributed.conftest import scenario
from tests.distributed.scenarios import (
    OTHER_OPTIMIZERS,
    STEPS,
    full_params,
    make_model,
    make_optimizer,
    single_process_reference,
    train,
)

TOLERANCE = 1e-5


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.mark.parametrize("setup", ["ddp", "fsdp"])
def test_matches_single_process(world, setup):
    world_size, results = world
    outs = scenario(results, setup)
    reference = single_process_reference()
    start = {n: p.detach() for n, p in make_model().named_parameters()}
    for rank, out in enumerate(outs):
        assert out["params"].keys() == reference.keys()
        for name, want in reference.items():
            got = out["params"][name]
            assert got.shape == want.shape
            assert _rel(got, want) <= TOLERANCE, (setup, rank, name, _rel(got, want))
            # and training did move it (so the comparison is not between two untouched models)
            assert _rel(want, start[name]) > 1e-3, name


@pytest.mark.parametrize("setup", ["ddp", "fsdp"])
def test_each_matrix_is_orthogonalized_once(world, setup):
    world_size, results = world
    outs = scenario(results, setup)
    matrices_per_step = 5  # inp, h1, h2, mix, out weights
    owned = [out["matrices_owned"] for out in outs]
    assert sum(owned) == matrices_per_step * STEPS
    assert all(n > 0 for n in owned), owned  # the work is spread, not done by one rank


def test_fsdp_parameters_and_state_stay_dtensors(world):
    world_size, results = world
    for out in scenario(results, "fsdp"):
        assert out["param_types"] == ["DTensor"]
        assert "DTensor" in out["state_types"]


@pytest.mark.parametrize("kind", list(OTHER_OPTIMIZERS))
def test_the_rest_of_the_family_matches_single_process_under_fsdp(world, kind):
    # float64 (see family_scenario): the distributed result must equal one process to float64 rounding
    world_size, results = world
    model = make_model().double()
    train(model, make_optimizer(model, kind), range(2))
    reference = full_params(model)
    for rank, out in enumerate(scenario(results, "family")):
        for name, want in reference.items():
            assert _rel(out[kind][name], want) <= 1e-10, (kind, rank, name, _rel(out[kind][name], want))
