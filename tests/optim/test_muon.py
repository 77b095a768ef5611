"""Muon: torch.optim.Muon equivalence, the formulas of docs/math.md §4 in float64, shapes, heads, the AdamW part."""

from __future__ import annotations

import pytest
import torch
import torch.optim._muon as torch_muon

import muonlab
from muonlab.linalg.iterations import KELLER_COEFFICIENTS
from tests.optim.formulas import keller_scale, newton_schulz_fp32, polar64


def _run(opt_factory, params0, grads):
    params = [p.clone().requires_grad_(True) for p in params0]
    opt = opt_factory(params)
    history = []
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = g.clone()
        opt.step()
        history.append([p.detach().clone() for p in params])
    return history


@pytest.mark.parametrize("nesterov", [True, False])
@pytest.mark.parametrize("adjust_lr_fn", [None, "original", "match_rms_adamw"])
def test_equals_torch_muon_with_fp32_iteration(monkeypatch, nesterov, adjust_lr_fn):
    monkeypatch.setattr(torch_muon, "_zeropower_via_newtonschulz", newton_schulz_fp32)
    shapes = [(24, 40), (40, 24), (32, 32), (24, 40)]
    params0 = [torch.randn(s) for s in shapes]
    grads = [[torch.randn(s) for s in shapes] for _ in range(5)]
    kw = dict(lr=0.03, weight_decay=0.1, momentum=0.9, nesterov=nesterov, adjust_lr_fn=adjust_lr_fn,
              ns_coefficients=KELLER_COEFFICIENTS, ns_steps=5, eps=1e-7)
    ours = _run(lambda ps: muonlab.Muon(ps, **kw), params0, grads)
    ref = _run(lambda ps: torch.optim.Muon(ps, **kw), params0, grads)
    for step_ours, step_ref in zip(ours, ref):
        for w, w_ref, w0 in zip(step_ours, step_ref, params0):
            # fp32 rounding: of the update (relative 1e-5 after the quintic's amplification) and of W itself
            moved = float((w_ref - w0).abs().max())
            ulp_w = 4 * torch.finfo(torch.float32).eps * float(w0.abs().max())
            torch.testing.assert_close(w, w_ref, rtol=0, atol=1e-5 * moved + ulp_w)


def test_first_steps_match_formula_float64():
    """W₁ = W₀(1−ηλ) − η s polar((1−μ)G₁ + μM₁) with M₁ = (1−μ)G₁, then step 2 — exact polar by SVD."""
    lr, wd, mu = 0.05, 0.1, 0.9
    shapes = [(12, 20), (30, 10)]
    w0 = [torch.randn(s, dtype=torch.float64) for s in shapes]
    g = [[torch.randn(s, dtype=torch.float64) for s in shapes] for _ in range(2)]
    hist = _run(lambda ps: muonlab.Muon(ps, lr=lr, weight_decay=wd, momentum=mu, method="svd"), w0, g)
    for i, s in enumerate(shapes):
        m1 = (1 - mu) * g[0][i]
        w1 = w0[i] * (1 - lr * wd) - lr * keller_scale(*s) * polar64((1 - mu) * g[0][i] + mu * m1)
        m2 = mu * m1 + (1 - mu) * g[1][i]
        w2 = w1 * (1 - lr * wd) - lr * keller_scale(*s) * polar64((1 - mu) * g[1][i] + mu * m2)
        torch.testing.assert_close(hist[0][i], w1, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(hist[1][i], w2, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("rule,scale", [("spectral", lambda a, b: (a / b) ** 0.5), ("none", lambda a, b: 1.0),
                                        ("match_rms_adamw", lambda a, b: 0.2 * max(a, b) ** 0.5)])
def test_adjust_lr_fn_scales(rule, scale):
    w0 = torch.randn(8, 32, dtype=torch.float64)
    g = torch.randn(8, 32, dtype=torch.float64)
    (w1,), = _run(lambda ps: muonlab.Muon(ps, lr=0.1, weight_decay=0.0, momentum=0.0, method="svd",
                                          adjust_lr_fn=rule), [w0], [[g]])
    torch.testing.assert_close(w1, w0 - 0.1 * scale(8, 32) * polar64(g), rtol=1e-10, atol=1e-10)


def test_conv_stack_and_heads_are_orthogonalized_blockwise():
    lr = 0.1
    conv = torch.randn(6, 4, 3, 3, dtype=torch.float64)
    experts = torch.randn(3, 8, 5, dtype=torch.float64)
    heads = torch.randn(12, 10, dtype=torch.float64)  # 4 heads of 3 rows
    qkv = torch.randn(16, 10, dtype=torch.float64)  # q: 8 rows (2 heads), k: 4 (1... split below), v: 4
    g = [torch.randn_like(t) for t in (conv, experts, heads, qkv)]
    params = [t.clone().requires_grad_(True) for t in (conv, experts, heads, qkv)]
    common = dict(weight_decay=0.0, momentum=0.0, adjust_lr_fn="none", method="svd")
    opt = muonlab.Muon([
        {"params": [params[0]]},
        {"params": [params[1]], "tensor_layout": "batch"},
        {"params": [params[2]], "num_heads": 4},
        {"params": [params[3]], "split_sizes": (8, 4, 4), "num_heads": 2},
    ], lr=lr, **common)
    for p, gi in zip(params, g):
        p.grad = gi.clone()
    opt.step()
    expect_conv = conv - lr * polar64(g[0].reshape(6, 36)).reshape(conv.shape)
    expect_experts = experts - lr * polar64(g[1])
    expect_heads = heads - lr * polar64(g[2].reshape(4, 3, 10)).reshape(12, 10)
    blocks = [polar64(b.reshape(2, -1, 10)).reshape(-1, 10) for b in g[3].split([8, 4, 4])]
    expect_qkv = qkv - lr * torch.cat(blocks)
    for p, e in zip(params, (expect_conv, expect_experts, expect_heads, expect_qkv)):
        torch.testing.assert_close(p.detach(), e, rtol=1e-10, atol=1e-10)


def test_bad_head_split_names_the_parameter():
    w = torch.randn(10, 4, requires_grad=True)
    with pytest.raises(ValueError, match="num_heads=3"):
        muonlab.Muon([{"params": [w], "num_heads": 3}])
    with pytest.raises(ValueError, match="split_sizes"):
        muonlab.Muon([{"params": [w], "split_sizes": (4, 4)}])


def test_vectors_in_model_parameters_get_torch_adamw():
    """Muon(all params): 1-D tensors follow AdamW with adamw_* exactly like torch.optim.AdamW."""
    vec0, mat0 = torch.randn(7), torch.randn(6, 5)
    grads = [[torch.randn(7), torch.randn(6, 5)] for _ in range(4)]
    hist = _run(lambda ps: muonlab.Muon(ps, lr=0.02, adamw_lr=1e-2, adamw_betas=(0.8, 0.9), adamw_eps=1e-6,
                                        adamw_weight_decay=0.05), [vec0, mat0], grads)
    ref = _run(lambda ps: torch.optim.AdamW(ps[:1], lr=1e-2, betas=(0.8, 0.9), eps=1e-6, weight_decay=0.05),
               [vec0], [gs[:1] for gs in grads])
    for step, step_ref in zip(hist, ref):
        torch.testing.assert_close(step[0], step_ref[0], rtol=1e-6, atol=1e-7)
    opt = muonlab.Muon([vec0.requires_grad_(), mat0.requires_grad_()])
    assert [g["kind"] for g in opt.param_groups] == ["matrix", "vector"]
    assert [g["rule"] for g in opt.param_groups] == ["spectral", "adamw"]


def test_method_resolution_and_errors():
    w = [torch.randn(4, 4, requires_grad=True)]
    assert muonlab.Muon(w).param_groups[0]["method"] == "polar_express_gram_norm"
    assert muonlab.Muon(w, ns_steps=7).param_groups[0]["method"] == "newton_schulz"
    assert muonlab.Muon(w, ns_coefficients=(3.0, -3.0, 1.0)).param_groups[0]["method"] == "newton_schulz"
    with pytest.raises(ValueError, match="ns_coefficients"):
        muonlab.Muon(w, method="qdwh", ns_coefficients=(3.0, -3.0, 1.0))
    with pytest.raises(ValueError, match="method"):
        muonlab.Muon(w, method="magic")
    with pytest.raises(ValueError, match="adjust_lr_fn"):
        muonlab.Muon(w, adjust_lr_fn="keller")
    with pytest.raises(ValueError, match="'matrix' group"):
        muonlab.Muon([{"params": [torch.randn(3, requires_grad=True)], "kind": "matrix"}])


def test_signature_starts_with_torch_muons():
    import inspect

    ours = list(inspect.signature(muonlab.Muon).parameters.values())
    theirs = list(inspect.signature(torch.optim.Muon).parameters.values())
    assert [p.name for p in ours[: len(theirs)]] == [p.name for p in theirs]
    # extras are keyword-only (named, or the shared **options of SpectralOptimizer)
    assert all(p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.VAR_KEYWORD) for p in ours[len(theirs):])
    for p, q in zip(ours, theirs):  # same defaults, except ns_* whose None means "torch's quintic if given"
        if p.name not in ("params", "ns_coefficients", "ns_steps"):
            assert p.default == q.default, p.name


def test_add_param_group_later_is_routed():
    w = torch.randn(5, 3, requires_grad=True)
    opt = muonlab.Muon([w])
    opt.add_param_group({"params": [torch.randn(4, 4, requires_grad=True), torch.randn(4, requires_grad=True)]})
    assert [g["rule"] for g in opt.param_groups] == ["spectral", "spectral", "adamw"]
    assert opt.param_groups[2]["lr"] == 3e-4
