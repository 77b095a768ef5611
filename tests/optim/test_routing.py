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
    assert len(tied) == 1 and tied[0].kind == "head" and tied[0].criterion == "tied"
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
    model = _mlp(20, 16, 5)
    assert _kinds(model, guess_head=False)["2.weight"] == "matrix"
    assert _kinds(model, overrides={"2.weight": "matrix"})["2.weight"] == "matrix"
    # a head given explicitly elsewhere suppresses the guess entirely
    kinds = _kinds(model, overrides={"0.weight": "head"})
    assert kinds["0.weight"] == "head" and kinds["2.weight"] == "matrix"
    frozen_last = _mlp(20, 16, 5)
    frozen_last[2].requires_grad_(False)                  # a frozen output layer: the layer before it stays hidden
    assert _kinds(frozen_last)["0.weight"] == "matrix"


def test_explain_marks_guessed_routes_and_says_how_to_override_them():
    text = muonlab.explain(_mlp(12, 8, 4), file=None)
    assert "head (guessed)" in text
    note = text.splitlines()[-1]
    assert note.startswith("guessed: 2.weight") and "overrides={'2.weight': 'matrix'}" in note
    assert "guess_head=False" in note
    assert "guessed" not in muonlab.explain(TinyNet(), file=None)


# ---------------------------------------------------------------- routing criteria from the model (docs/routing.md)
class Conv1D(nn.Module):
    """A transposed linear as Hugging Face stores it: weight (nx, nf) = (in, out)."""

    def __init__(self, nf, nx):
        super().__init__()
        self.nf, self.nx = nf, nx
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.02)
        self.bias = nn.Parameter(torch.zeros(nf))

    def forward(self, x):
        return torch.addmm(self.bias, x.reshape(-1, self.nx), self.weight).reshape(*x.shape[:-1], self.nf)


class Tokens(nn.Module):
    def __init__(self, dim=16, patches=9):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, patches + 1, dim))
        self.relative_position_bias_table = nn.Parameter(torch.zeros(25, 8))
        self.latents = nn.Parameter(torch.zeros(6, dim))
        self.experts = nn.Parameter(torch.zeros(4, 2 * dim, dim))


class Zoo(nn.Module):
    """One of each shape the criteria are about."""

    def __init__(self, dim=16):
        super().__init__()
        self.tokens = Tokens(dim)
        self.c_attn = Conv1D(3 * dim, dim)
        self.c_fc = Conv1D(4 * dim, dim)
        self.dwconv = nn.Conv2d(dim, dim, 7, groups=dim)
        self.conv = nn.Conv2d(dim, dim, 3)
        self.seq_relationship = nn.Linear(dim, 2)
        self.thin = nn.Linear(dim * 200, dim)
        self.gate = nn.Linear(dim, 8, bias=False)            # an MoE router: fewer outputs than inputs
        self.shared_expert_gate = nn.Linear(dim, 1, bias=False)
        self.mlp_gate = nn.Linear(dim, 4 * dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.head = nn.Linear(dim, 10)

    def no_weight_decay(self):
        return {"tokens.pos_embed", "tokens.cls_token", "c_attn.*"}


def _routes(model, **kw):
    return {r.name: r for r in route(model, **kw)}


def test_every_criterion_of_the_model_is_named_in_the_route():
    r = _routes(Zoo())
    want = {
        "tokens.cls_token": ("embedding", ("embedding_role", "no_weight_decay")),
        "tokens.pos_embed": ("embedding", ("embedding_role", "no_weight_decay")),
        "tokens.relative_position_bias_table": ("embedding", ("embedding_role",)),
        "tokens.latents": ("embedding", ("embedding_role",)),
        "tokens.experts": ("matrix", ("stack",)),
        "c_attn.weight": ("matrix", ("transposed", "fused", "no_weight_decay")),
        "c_fc.weight": ("matrix", ("transposed",)),
        "dwconv.weight": ("vector", ("depthwise",)),
        "conv.weight": ("matrix", ("conv",)),
        "seq_relationship.weight": ("vector", ("degenerate",)),
        "thin.weight": ("vector", ("degenerate",)),
        "gate.weight": ("matrix", ("router",)),
        "shared_expert_gate.weight": ("vector", ("degenerate",)),
        "mlp_gate.weight": ("matrix", ("matrix",)),
        "qkv.weight": ("matrix", ("matrix", "fused")),
        "head.weight": ("head", ("named_head",)),
    }
    assert {n: (x.kind, x.criteria) for n, x in r.items() if n in want} == want
    assert r["c_attn.weight"].options == {"transposed": True, "split_sizes": (16, 16, 16), "no_weight_decay": True}
    assert "(48, 16) matrix it is" in r["c_attn.weight"].reason
    assert r["qkv.weight"].options["split_sizes"] == (16, 16, 16)
    assert "smaller side 2 < 4" in r["seq_relationship.weight"].reason
    assert "aspect ratio 200 > 128" in r["thin.weight"].reason
    text = muonlab.explain(Zoo(), file=None)
    for name, (_, criteria) in want.items():
        line = next(line for line in text.splitlines() if line.startswith(name + " "))
        assert f" {criteria[0]}: " in line, line


def test_criteria_switch_off_one_by_one():
    for criterion, name, kind in [("embedding_role", "tokens.cls_token", "vector"),   # then: degenerate (1×16)
                                  ("depthwise", "dwconv.weight", "matrix"),
                                  ("degenerate", "seq_relationship.weight", "matrix"),
                                  ("router", "gate.weight", "matrix"),
                                  ("named_head", "head.weight", "head")]:      # then: the guessed output layer
        before = _routes(Zoo())[name]
        after = _routes(Zoo(), disable=(criterion,))[name]
        assert criterion in before.criteria and criterion not in after.criteria and after.kind == kind, after
    assert _routes(Zoo(), disable=("named_head", "guessed_head"))["head.weight"].kind == "matrix"
    off = _routes(Zoo(), disable=("transposed", "fused", "no_weight_decay"))
    assert off["c_attn.weight"].options == {} and off["c_attn.weight"].criteria == ("matrix",)
    assert off["tokens.cls_token"].criteria == ("embedding_role",)
    with pytest.raises(ValueError, match="disable must name criteria"):
        route(Zoo(), disable=("degenrate",))


def test_routers_follow_router_kind_and_the_thresholds_are_settable():
    assert _routes(Zoo(), router_kind="head")["gate.weight"].kind == "head"
    assert _routes(Zoo(), min_dim=2)["seq_relationship.weight"].kind == "matrix"
    assert _routes(Zoo(), max_aspect=300)["thin.weight"].kind == "matrix"
    with pytest.raises(ValueError, match="router_kind"):
        route(Zoo(), router_kind="adamw")
    with pytest.raises(ValueError, match="min_dim"):
        route(Zoo(), min_dim=0)


def test_user_heads_replace_a_fused_split():
    r = _routes(Zoo(), heads={"c_attn.weight": {"split_sizes": (16, 16, 16), "num_heads": 4}})["c_attn.weight"]
    assert r.options == {"transposed": True, "split_sizes": (16, 16, 16), "num_heads": 4, "no_weight_decay": True}
    assert "fused" not in r.criteria and "heads" in r.criteria


def test_no_weight_decay_names_get_zero_decay_in_their_part():
    groups = param_groups(Zoo())
    by_name = {n: g for g in groups for n in g["param_names"]}
    assert by_name["tokens.pos_embed"]["adamw_weight_decay"] == 0.0
    assert by_name["c_attn.weight"]["weight_decay"] == 0.0 and by_name["c_attn.weight"]["transposed"] is True
    assert "weight_decay" not in by_name["c_fc.weight"] and "adamw_weight_decay" not in by_name["tokens.latents"]


def test_matrix_first_puts_the_spectral_groups_first_in_their_order():
    plain = param_groups(Zoo())
    first = param_groups(Zoo(), matrix_first=True)
    assert [g["kind"] for g in first][:1] == ["matrix"] and plain[0]["kind"] != "matrix"
    key = lambda g: tuple(g["param_names"])  # noqa: E731
    assert [key(g) for g in first] == [key(g) for g in plain if g["kind"] == "matrix"] + [
        key(g) for g in plain if g["kind"] != "matrix"]
