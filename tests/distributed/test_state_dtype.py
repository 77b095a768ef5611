"""bf16 / int8 optimizer state under FSDP2: sharded like the parameters, equal to one process, DCP resume exact,
and a checkpoint saved sharded resumes unsharded; under DDP (replicated parameters): equal to one process on the
global batch (bit for bit on two ranks), the same state on every rank, a state_dict resume exact."""

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


def _same_state(got: dict, want: dict) -> bool:
    """Two parameters' state dicts hold the same entries, tensors bit for bit (and in the same dtype)."""
    return got.keys() == want.keys() and all(
        (torch.is_tensor(w) and g.dtype == w.dtype and torch.equal(g, w)) or (not torch.is_tensor(w) and g == w)
        for g, w in ((got[k], want[k]) for k in want))


# how each parameter's moments are stored under DDP (scenarios._ddp_groups): 0-/1-D tensors keep fp32 under int8
DDP_MOMENTS = {"inp.weight": ("exp_avg", "exp_avg_sq"), "h1.weight": ("momentum_buffer",),
               "mix": ("momentum_buffer",), "gain": ("exp_avg", "exp_avg_sq")}


@pytest.mark.parametrize("fmt", STATE_DTYPES)
def test_low_precision_state_under_ddp_matches_one_process(world, fmt):
    world_size, results = world
    outs = scenario(results, "ddp_state_dtype")
    start = dict(make_model().named_parameters())
    for rank, out in enumerate(outs):
        for name, want in out[f"{fmt}_one_process"].items():
            got = out[f"{fmt}_params"][name]
            assert _rel(want, start[name].detach()) > 1e-3, name  # training moved it
            if world_size == 2:  # the all-reduce adds two halves: one process gives the same bits
                assert torch.equal(got, want), (rank, name, _rel(got, want))
            else:  # three halves summed in the ring's order, not rank order: fp32 rounding apart
                assert _rel(got, want) <= 1e-5, (rank, name, _rel(got, want))
        state, want_state = out[f"{fmt}_state"], out[f"{fmt}_one_process_state"]
        for name, keys in DDP_MOMENTS.items():
            for key in keys:
                expected = fmt if fmt == "bfloat16" or start[name].dim() >= 2 else "float32"
                assert sc.stored_format(state[name], key) == expected, (name, key)
                if world_size == 2:
                    assert _same_state(state[name], want_state[name]), (rank, name)
    # Muon's matrix work is split: each of the 4 matrices transformed once per step, by one rank or another
    owned = [out[f"{fmt}_matrices_owned"] for out in outs]
    assert sum(owned) == 4 * STEPS and all(n > 0 for n in owned), owned


@pytest.mark.parametrize("fmt", STATE_DTYPES)
def test_ddp_ranks_hold_identical_low_precision_state(world, fmt):
    """Replicated ranks decode the same state, update it with the same all-reduced gradient and encode it with the
    same rounding bits (keyed by the global element index): their stored states are equal bit for bit."""
    world_size, results = world
    outs = scenario(results, "ddp_state_dtype")
    reference = outs[0][f"{fmt}_state"]
    assert set(reference) == {name for name, _ in make_model().named_parameters()}
    for rank, out in enumerate(outs[1:], start=1):
        for name, want in reference.items():
            assert _same_state(out[f"{fmt}_state"][name], want), (rank, name)


@pytest.mark.parametrize("fmt", STATE_DTYPES)
def test_ddp_state_dict_resume_is_exact(world, fmt):
    world_size, results = world
    for rank, out in enumerate(scenario(results, "ddp_state_dtype")):
        for name, want in out[f"{fmt}_params"].items():
            assert torch.equal(out[f"{fmt}_resumed"][name], want), (rank, name)
        for name, want in out[f"{fmt}_state"].items():
            assert _same_state(out[f"{fmt}_resumed_state"][name], want), (rank, name)
