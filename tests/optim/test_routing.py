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


def _mlp(*widths, final=None):
    layers = []
    for a, b in zip(widths, widths[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1], *([final] if final is not None else []))


def test_the_output_layer_of_a_sequential_is_guessed_as_the_head():
    model = _mlp(784, 128, 64, 10)
    routes = {r.name: r for r in route(model)}
    assert routes["4.weight"].kind == "head" and routes["4.weight"].guessed
    assert "10 outputs feed no other Linear" in routes["4.weight"].reason
    assert [n for n, r in routes.items() if r.kind == "matrix"] == ["0.weight", "2.weight"]
    assert not any(r.guessed for n, r in routes.items() if n != "4.weight")
    groups = param_groups(model)
    assert [g["param_names"] for g in groups if g["kind"] == "head"] == [["4.weight"]]


def test_a_vocabulary_sized_last_linear_is_guessed_even_when_its_width_is_read_elsewhere():
    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok = nn.Embedding(32, 8)
            self.up = nn.Linear(8, 32)        # an MLP width equal to the vocabulary: not last, not guessed
            self.down = nn.Linear(32, 8)
            self.out = nn.Linear(8, 32)

    routes = {r.name: r for r in route(LM())}
    assert routes["out.weight"].kind == "head" and "a vocabulary projection" in routes["out.weight"].reason
    assert routes["up.weight"].kind == routes["down.weight"].kind == "matrix"


def test_a_table_whose_sizes_are_equal_matches_no_layer():
    class Body(nn.Module):    # a width-16 model with a 16-row position table and no head: nothing is guessed
        def __init__(self):
            super().__init__()
            self.pos = nn.Embedding(16, 16)
            self.fc = nn.Linear(16, 64)
            self.proj = nn.Linear(64, 16)

    assert not any(r.guessed for r in route(Body()))


def test_no_guess_when_a_head_is_named_tied_or_overridden_or_the_last_layer_feeds_another():
    assert not any(r.guessed for r in route(TinyNet()))                       # named head
    assert not any(r.guessed for r in route(TinyNet(tie=True)))               # tied
    square = _mlp(16, 16, 16)                                                 # last width read by the first layer
    assert {r.kind for r in route(square) if r.param.dim() == 2} == {"matrix"}
    model = _mlp(20, 16, 3)
    assert _kinds(model, guess_head=False)["2.weight"] == "matrix"
    assert _kinds(model, overrides={"2.weight": "matrix"})["2.weight"] == "matrix"
    # a head given explicitly elsewhere suppresses the guess entirely
    kinds = _kinds(model, overrides={"0.weight": "head"})
    assert kinds["0.weight"] == "head" and kinds["2.weight"] == "matrix"
    frozen_last = _mlp(20, 16, 3)
    frozen_last[2].requires_grad_(False)                  # a frozen output layer: the layer before it stays hidden
    assert _kinds(frozen_last)["0.weight"] == "matrix"


def test_explain_marks_guessed_routes_and_says_how_to_override_them():
    text = muonlab.explain(_mlp(12, 8, 4), file=None)
    assert "head (guessed)" in text
    note = text.splitlines()[-1]
    assert note.startswith("guessed: 2.weight") and "overrides={'2.weight': 'matrix'}" in note
    assert "guess_head=False" in note
    assert "guessed" not in muonlab.explain(TinyNet(), file=None)
