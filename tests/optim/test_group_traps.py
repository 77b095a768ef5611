"""Param groups the way frameworks hand them over: groups added without names after named ones, a checkpoint of a
routed optimizer loaded into an unrouted one, named parameters without routing."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import muonlab
from tests.optim.models import TinyNet, loss_fn, task


def _step(model, opt):
    tokens, targets = task()
    opt.zero_grad()
    loss_fn(model, tokens, targets).backward()
    opt.step()


def test_a_group_added_without_names_after_named_ones_gets_names_and_trains():
    model = TinyNet()
    extra = nn.Linear(16, 16)
    opt = muonlab.Muon(muonlab.param_groups(model), lr=0.02)
    n = len(opt.param_groups)
    opt.add_param_group({"params": list(extra.parameters()), "lr": 0.002})    # Lightning's BaseFinetuning does this
    added = opt.param_groups[n:]
    assert [g["kind"] for g in added] == ["matrix", "vector"]
    assert added[0]["param_names"] == [f"group{n}.param0"] and added[0]["lr"] == 0.002
    assert added[1]["param_names"] == [f"group{n}.param1"]
    before = extra.weight.detach().clone()
    tokens, targets = task()
    opt.zero_grad()
    (loss_fn(model, tokens, targets) + extra(torch.randn(4, 16)).square().mean()).backward()
    opt.step()
    assert not torch.equal(before, extra.weight)


def test_named_groups_added_to_unnamed_ones_name_those_too():
    model = TinyNet()
    opt = muonlab.Muon(model.parameters(), lr=0.02)
    extra = nn.Linear(16, 16)
    opt.add_param_group({"params": list(extra.named_parameters())})
    assert all("param_names" in g for g in opt.param_groups)
    assert opt.param_groups[0]["param_names"][0] == "group0.param0"
    assert opt.param_groups[-1]["param_names"] == ["bias"]


def test_a_routed_checkpoint_into_an_unrouted_optimizer_says_how_to_build_it():
    model = TinyNet()
    routed = muonlab.Muon(muonlab.param_groups(model), lr=0.02)
    _step(model, routed)
    plain = muonlab.Muon(model.parameters(), lr=0.02)
    with pytest.raises(ValueError, match=r"muonlab\.param_groups\(model\)") as err:
        plain.load_state_dict(routed.state_dict())
    assert "the state dict has 4 param groups" in str(err.value) and "this optimizer 2" in str(err.value)
    again = muonlab.Muon(muonlab.param_groups(model), lr=0.02)
    again.load_state_dict(routed.state_dict())          # built the same way: loads


def test_named_parameters_without_routing_say_what_they_do_to_heads_and_embeddings():
    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed_tokens = nn.Embedding(32, 8)
            self.fc = nn.Linear(8, 8)
            self.lm_head = nn.Linear(8, 32)

    with pytest.warns(UserWarning, match=r"'embed_tokens.weight', 'lm_head.weight'.*muonlab.param_groups\(model\)"):
        opt = muonlab.Muon(LM().named_parameters(), lr=0.02)
    assert [g["kind"] for g in opt.param_groups] == ["matrix", "vector"]          # what it does: by shape
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        muonlab.Muon(nn.Sequential(nn.Linear(8, 8)).named_parameters(), lr=0.02)   # nothing to say
        muonlab.Muon(muonlab.param_groups(LM()), lr=0.02)
