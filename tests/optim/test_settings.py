"""A group's settings: read once into a frozen object, ``lr``/``weight_decay`` live, other changes read again."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import muonlab
from muonlab.optim.muon import MuonSettings
from muonlab.optim.normuon import NorMuonSettings


def _w(shape=(8, 6), seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.nn.Parameter(torch.randn(shape, generator=gen))


def _step(opt, params, seed):
    gen = torch.Generator().manual_seed(seed)
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen)
    opt.step()


def test_settings_are_frozen_and_read_once():
    w = _w()
    opt = muonlab.Muon([w], lr=0.02, ns_steps=3)
    settings = opt.group_settings(opt.param_groups[0])
    assert isinstance(settings, MuonSettings)
    assert settings.polar.method == "newton_schulz" and settings.polar.ns_steps == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.momentum = 0.5
    _step(opt, [w], 1)
    assert opt.group_settings(opt.param_groups[0]) is settings  # no new object while the group is unchanged


def test_a_schedulers_lr_takes_effect_at_the_next_step():
    runs = []
    for scheduled in (False, True):
        w = _w()
        opt = muonlab.Muon([w], lr=0.02)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5 ** t) if scheduled else None
        before = []
        for t in range(3):
            before.append(w.detach().clone())
            _step(opt, [w], t)
            if sched is not None:
                sched.step()
        runs.append((before, w.detach().clone()))
    (plain, plain_end), (sched, sched_end) = runs
    # step 0 is identical (lr 0.02 both); afterwards the scheduled run moves by half, then a quarter
    torch.testing.assert_close(plain[1], sched[1], rtol=0, atol=0)
    plain_move = float((plain_end - plain[2]).norm())
    sched_move = float((sched_end - sched[2]).norm())
    assert sched_move == pytest.approx(0.25 * plain_move, rel=0.05)


def test_a_changed_structural_value_is_read_again_and_checked():
    w = _w()
    opt = muonlab.Muon([w], lr=0.02, momentum=0.9)
    group = opt.param_groups[0]
    _step(opt, [w], 0)
    group["momentum"] = 0.0  # e.g. a momentum warm-up written into the group
    _step(opt, [w], 1)
    assert opt.group_settings(group).momentum == 0.0
    group["ns_steps"] = 0
    w.grad = torch.ones_like(w)
    with pytest.raises(ValueError, match=r"param group 0 \(matrix\): ns_steps must be None or a positive int"):
        opt.step()


def test_messages_name_the_users_parameter():
    w = _w()
    with pytest.raises(ValueError, match="^ns_steps must be None or a positive int, got 0"):
        muonlab.Muon([w], ns_steps=0)
    with pytest.raises(ValueError, match="^steps must be None or a positive int, got 0"):
        muonlab.PolarGrad([w], lr=0.1, steps=0)
    with pytest.raises(ValueError, match="^ns_steps must be None or a positive int, got 0"):
        muonlab.SimplifiedMuon([w], lr=0.1, ns_steps=0)


def test_steps_is_an_alias_of_ns_steps_in_constructors_and_groups():
    w = _w()
    a = muonlab.PolarGrad([w], lr=0.1, steps=4)
    b = muonlab.PolarGrad([w], lr=0.1, ns_steps=4)
    c = muonlab.PolarGrad([{"params": [w], "steps": 4}], lr=0.1)
    for opt in (a, b, c):
        group = opt.param_groups[0]
        assert "steps" not in group and group["ns_steps"] == 4
        assert opt.group_settings(group).polar.ns_steps == 4
    with pytest.raises(ValueError, match="steps is an alias of ns_steps"):
        muonlab.PolarGrad([w], lr=0.1, steps=4, ns_steps=5)


def test_normuon_defaults_and_checks_hold_in_any_construction_order():
    w, v = _w(), _w((4, 4), seed=1)
    opt = muonlab.NorMuon([w], lr=0.02, beta2=0.8)
    opt.add_param_group({"params": [v], "kind": "matrix"})  # a group added after construction
    settings = [opt.group_settings(g) for g in opt.param_groups]
    assert all(isinstance(s, NorMuonSettings) for s in settings)
    assert [s.beta2 for s in settings] == [0.8, 0.8]
    with pytest.raises(ValueError, match=r"param group 2 \(matrix\): beta2 must be a number in \[0, 1\)"):
        opt.add_param_group({"params": [_w((4, 4), seed=2)], "kind": "matrix", "beta2": 1.0})
    with pytest.raises(ValueError, match=r"param group 0 \(matrix\): row_eps must be a non-negative number"):
        muonlab.NorMuon([{"params": [w], "kind": "matrix", "row_eps": -1.0}])


def test_state_dict_uses_todays_key_names():
    w, b = _w(), torch.nn.Parameter(torch.zeros(6))
    opt = muonlab.PolarGrad([w, b], lr=0.1, steps=3)
    groups = opt.state_dict()["param_groups"]
    assert [g["rule"] for g in groups] == ["spectral", "adamw"]
    assert all("update" not in g and "steps" not in g and g["ns_steps"] == 3 for g in groups)
