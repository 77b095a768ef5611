"""Schedulers with absolute peaks (OneCycleLR) on both parts of a muonlab optimizer: muonlab.peak_lrs."""

from __future__ import annotations

import io

import pytest
import torch

import muonlab
from muonlab.integrations import is_spectral
from tests.optim.models import TinyNet, loss_fn, task

TOTAL = 10


def _setup(seed=0):
    torch.manual_seed(seed)
    model = TinyNet()
    opt = muonlab.Muon(muonlab.param_groups(model), lr=0.02)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=muonlab.peak_lrs(opt, matrix=0.02), total_steps=TOTAL,
                                                pct_start=0.3)
    return model, opt, sched


def _step(model, opt, sched):
    tokens, targets = task()
    opt.zero_grad()
    loss_fn(model, tokens, targets).backward()
    opt.step()
    sched.step()


def test_each_part_peaks_at_its_own_lr():
    model, opt, sched = _setup()
    peaks = {}
    for _ in range(TOTAL - 1):
        _step(model, opt, sched)
        for g in opt.param_groups:
            key = "matrix" if is_spectral(g) else g["kind"]
            peaks[key] = max(peaks.get(key, 0.0), g["lr"])
    assert peaks["matrix"] == pytest.approx(0.02)
    assert peaks["embedding"] == peaks["head"] == peaks["vector"] == pytest.approx(3e-4)


def test_peaks_keep_a_groups_ratio_and_take_an_adamw_peak():
    model = TinyNet()
    groups = muonlab.param_groups(model)
    for g in groups:
        if g["kind"] == "matrix":
            g["lr"] = 0.01
    opt = muonlab.Muon(groups, lr=0.02, adamw_lr=1e-3)
    peaks = muonlab.peak_lrs(opt, matrix=0.04, adamw=2e-3)
    assert [p for p, g in zip(peaks, opt.param_groups) if is_spectral(g)] == [pytest.approx(0.02)]
    assert [p for p, g in zip(peaks, opt.param_groups) if not is_spectral(g)] == pytest.approx([2e-3] * 3)
    with pytest.raises(ValueError, match="muonlab optimizer"):
        muonlab.peak_lrs(torch.optim.SGD(model.parameters(), lr=0.1), matrix=0.02)
    with pytest.raises(ValueError, match="matrix must be a positive number"):
        muonlab.peak_lrs(opt, matrix=0)


def test_one_cycle_checkpoint_resumes_exactly():
    model, opt, sched = _setup()
    for _ in range(TOTAL):
        _step(model, opt, sched)
    straight = [p.detach().clone() for p in model.parameters()]

    model, opt, sched = _setup()
    for _ in range(TOTAL // 2):
        _step(model, opt, sched)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    model, opt, sched = _setup(seed=1)            # different initial weights: everything comes from the checkpoint
    model.load_state_dict(saved["model"])
    opt.load_state_dict(saved["opt"])
    sched.load_state_dict(saved["sched"])
    for _ in range(TOTAL - TOTAL // 2):
        _step(model, opt, sched)
    for a, b in zip(straight, model.parameters()):
        torch.testing.assert_close(a, b.detach(), rtol=0, atol=0)
