"""accelerate: a muonlab optimizer prepared by an Accelerator trains, saves and restores its state exactly."""

from __future__ import annotations

import pytest
import torch

accelerate = pytest.importorskip("accelerate")

import muonlab  # noqa: E402
from tests.optim.models import TinyNet, loss_fn, task  # noqa: E402

STEPS = 6


def _prepared(seed=0):
    torch.manual_seed(seed)
    accelerator = accelerate.Accelerator(cpu=True)
    model = TinyNet()
    opt = muonlab.Muon(muonlab.param_groups(model), lr=0.02)
    model, opt = accelerator.prepare(model, opt)
    return accelerator, model, opt


def _step(accelerator, model, opt):
    tokens, targets = task()
    opt.zero_grad()
    accelerator.backward(loss_fn(model, tokens, targets))
    opt.step()


def test_accelerator_save_and_load_state_resume_exactly(tmp_path):
    accelerator, model, opt = _prepared()
    for _ in range(STEPS):
        _step(accelerator, model, opt)
    straight = [p.detach().clone() for p in model.parameters()]

    accelerator, model, opt = _prepared()
    for _ in range(STEPS // 2):
        _step(accelerator, model, opt)
    accelerator.save_state(str(tmp_path / "state"))
    accelerator, model, opt = _prepared(seed=1)
    accelerator.load_state(str(tmp_path / "state"))
    assert isinstance(opt.optimizer, muonlab.Muon) and opt.optimizer.state
    for _ in range(STEPS - STEPS // 2):
        _step(accelerator, model, opt)
    for a, b in zip(straight, model.parameters()):
        torch.testing.assert_close(a, b.detach(), rtol=0, atol=0)
