"""bf16 / int8 optimizer state under FSDP2: sharded like the parameters, equal to one process, DCP resume exact,
and a checkpoint saved sharded resumes unsharded."""

from __future__ import annotations

import pytest
import torch

from muonlab.optim import int8_codes as i8
from muonlab.optim import state_codec as sc
from tests.distributed.conftest import scenario
from tests.distributed.scenarios import STATE_DTYPES, STEPS, full_params, make_model, make_optimizer, train


def _reference(fmt: str, steps: int) -> tuple[dict, dict]:
    model = make_model().double()
    optimizer = make_optimizer(model, state_dtype=fmt)
    train(model, optimizer, range(steps))
    return full_params(model), dict(optimizer.state[model.h1.weight])


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.mark.parametrize("fmt", STATE_DTYPES)
def test_low_precision_state_under_fsdp_matches_one_process(world, fmt):
    world_size, results = world
    reference, reference_state = _reference(fmt, STEPS)
    for rank, out in enumerate(scenario(results, "state_dtype")):
        for name, want in reference.items():
            assert _rel(out[f"{fmt}_params"][name], want) <= 1e-6, (rank, name)
        assert out[f"{fmt}_state_types"] == ["DTensor"]  # sharded like the parameter
        shapes = out[f"{fmt}_state_shapes"]
        assert shapes["momentum_buffer"] == (10, 10)
        if fmt == "int8":
            assert shapes["momentum_buffer_absmax"] == i8.blocks_per_row((10, 10))
        # the stored state is the one process's, code for code / bit for bit up to the reduction's rounding
        state = out[f"{fmt}_h1_state"]
        got = sc.decode(state, "momentum_buffer", torch.empty(10, 10), torch.float64)
        want = sc.decode(reference_state, "momentum_buffer", torch.empty(10, 10), torch.float64)
        assert _rel(got, want) <= 1e-6


@pytest.mark.parametrize("fmt", STATE_DTYPES)
def test_low_precision_dcp_resume_is_exact_and_reshards(world, fmt):
    world_size, results = world
    for out in scenario(results, "state_dtype"):
        for name, want in out[f"{fmt}_uninterrupted"].items():
            assert torch.equal(out[f"{fmt}_resumed"][name], want), name
            # saved sharded, resumed in one process: the same training up to the gradient reduction's rounding
            assert _rel(out[f"{fmt}_unsharded_resume"][name], want) <= 1e-6, name
        want_state, got_state = out[f"{fmt}_uninterrupted_state"], out[f"{fmt}_resumed_state"]
        assert want_state.keys() == got_state.keys()
        for key, want in want_state.items():
            got = got_state[key]
            assert torch.equal(got, want) if isinstance(want, torch.Tensor) else got == want, key
