"""param_groups / explain: every parameter routed exactly once, for the stated reason."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

import muonlab
from muonlab.optim import param_groups, route
from tests.optim.models import TinyNet


class Attention(nn.Module):
    def __init__(self, dim=16, heads=4):
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.experts = nn.Parameter(torch.randn(3, dim, 2 * dim))
        self.scale = nn.Parameter(torch.ones(()))
        self.value_head = nn.Linear(dim, 1)
        self.frozen = nn.Linear(dim, dim)
        self.frozen.requires_grad_(False)


def _kinds(model, **kw):
    return {r.name: r.kind for r in route(model, **kw)}


def test_tiny_model_kinds():
    assert _kinds(TinyNet()) == {
        "emb.weight": "embedding",
        "conv.weight": "matrix",
        "conv.bias": "vector",
        "norm.weight": "vector",
        "norm.bias": "vector",
        "hidden.weight": "matrix",
        "hidden.bias": "vector",
        "proj.weight": "matrix",
        "proj.bias": "vector",
        "head.weight": "head",
    }


def test_tied_weight_is_a_head_and_listed_once():
    model = TinyNet(tie=True)
    routes = route(model)
    tied = [r for r in routes if r.param is model.emb.weight]
    assert len(tied) == 1 and tied[0].kind == "head" and "tied" in tied[0].reason
    groups = param_groups(model)
    flat = [p for g in groups for p in g["params"]]
    assert len(flat) == len(set(map(id, flat))) == len(list(model.parameters()))


def test_stacks_scalars_heads_overrides_and_frozen():
    model = Attention()
    kinds = _kinds(model)
    assert kinds["experts"] == "matrix" and kinds["scale"] == "vector"
    assert kinds["value_head.weight"] == "head"  # named like a head
    assert "frozen.weight" not in kinds  # requires_grad=False: not routed
    assert _kinds(model, head_names=())["value_head.weight"] == "head"  # "_head" suffix still counts
    assert _kinds(model, overrides={"value_head.*": "matrix"})["value_head.weight"] == "matrix"
    groups = param_groups(model, heads={"q_proj.weight": 4, "qkv.weight": {"split_sizes": (16, 16, 16), "num_heads": 4}})
    by_name = {n: g for g in groups for n in g["param_names"]}
    assert by_name["q_proj.weight"]["num_heads"] == 4
    assert by_name["qkv.weight"]["split_sizes"] == (16, 16, 16)
    assert by_name["experts"]["tensor_layout"] == "batch"
    assert {g["kind"] for g in groups} == {"matrix", "vector", "head"}


def test_per_head_groups_reach_the_optimizer():
    model = Attention()
    groups = param_groups(model, heads={"q_proj.weight": 4})
    opt = muonlab.Muon(groups, method="svd", momentum=0.0, weight_decay=0.0, adjust_lr_fn="none", lr=1.0)
    w0 = model.q_proj.weight.detach().clone()
    for p in model.parameters():
        p.grad = torch.randn_like(p) if p.requires_grad else None
    g = model.q_proj.weight.grad.clone()
    opt.step()
    u, _, vh = torch.linalg.svd(g.reshape(4, 4, 16).double(), full_matrices=False)
    expect = w0 - (u @ vh).reshape(16, 16).float()
    torch.testing.assert_close(model.q_proj.weight.detach(), expect, rtol=1e-5, atol=1e-5)


def test_explain_prints_every_parameter_with_its_reason():
    buf = io.StringIO()
    text = muonlab.explain(TinyNet(tie=True), file=buf)
    assert buf.getvalue().strip() == text.strip()
    assert "conv filter (16, 16, 3) flattened to (16, 48)" in text
    assert "tied" in text and "AdamW" in text and "spectral" in text
    assert len(text.splitlines()) == 2 + len(list(TinyNet(tie=True).parameters()))


def test_routing_errors():
    with pytest.raises(TypeError, match="model"):
        param_groups([torch.randn(2, 2)])
    with pytest.raises(ValueError, match="overrides"):
        param_groups(TinyNet(), overrides={"*": "bias"})
    with pytest.raises(ValueError, match="stack_layout"):
        param_groups(TinyNet(), stack_layout="heads")
