"""Optimizer checkpoints written by an older muonlab (group key ``"update"``, PolarGrad's ``"steps"``) still load,
and training continues exactly as that code continued it (tests/fixtures/make_old_checkpoint.py wrote them)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

import muonlab

FIXTURES = Path(__file__).parents[1] / "fixtures"


def _maker():
    spec = importlib.util.spec_from_file_location("make_old_checkpoint", FIXTURES / "make_old_checkpoint.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CASES = torch.load(FIXTURES / "old_checkpoint.pt", weights_only=True)["cases"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_old_checkpoint_loads_and_continues_as_before(name):
    case = CASES[name]
    maker = _maker()
    model = maker.Tiny()
    with torch.no_grad():
        for p, saved in zip(model.parameters(), case["params"]):
            p.copy_(saved)
    opt = getattr(muonlab, case["optimizer"])(maker.groups(model), **case["kwargs"])
    opt.load_state_dict(case["state_dict"])
    assert all("update" not in g and "steps" not in g for g in opt.param_groups)
    assert [g["rule"] for g in opt.param_groups] == [g["update"] for g in case["state_dict"]["param_groups"]]
    for p, g in zip(model.parameters(), case["grads"]):
        p.grad = g
    opt.step()
    for p, expected in zip(model.parameters(), case["expected"]):
        torch.testing.assert_close(p.detach(), expected, rtol=0, atol=0)


def test_the_fixture_covers_every_kind_and_an_old_key():
    groups = CASES["polargrad"]["state_dict"]["param_groups"]
    assert {g["kind"] for g in groups} == {"embedding", "matrix", "vector", "head"}
    assert all("update" in g and "steps" in g for g in groups)
    assert any(g.get("num_heads") for g in CASES["muon"]["state_dict"]["param_groups"])
