"""NorMuon and cautious weight decay against their formulas (float64, exact polar factor by SVD).

The generic conventions (bitwise resume, non-finite policy, zero gradients, training the small model)
run for ``normuon`` in test_conventions.py through the registry; FSDP2 = one process in
tests/distributed (the family scenario)."""

from __future__ import annotations

import pytest
import torch

import muonlab
from muonlab.optim import OPTIMIZERS, make_optimizer
from muonlab.optim.normuon import ROW_STATE, row_blocks
from muonlab.optim.settings import Blocks
from tests.optim.formulas import cautious_decay, keller_scale, normuon_blocks, polar64

# name -> (shape, group options, the blocks the optimizer must normalize separately, as (B, m, n) batches)
CASES = {
    "wide": ((8, 12), {}, lambda x: [x[None]]),
    "tall": ((12, 5), {}, lambda x: [x[None]]),
    "heads": ((12, 8), {"num_heads": 3}, lambda x: [x.reshape(3, 4, 8)]),
    # fused sections of different heights: different shape scales (√3, √1.5) inside one parameter
    "fused": ((24, 2), {"split_sizes": (12, 6, 6), "num_heads": 2},
              lambda x: [s.reshape(2, -1, 2) for s in x.split([12, 6, 6])]),
    "batch": ((3, 6, 4), {"tensor_layout": "batch"}, lambda x: [x]),
    "flatten": ((6, 2, 3), {"tensor_layout": "flatten"}, lambda x: [x.reshape(1, 6, 6)]),
}


def _join(blocks: list[torch.Tensor], shape) -> torch.Tensor:
    """Blocks back into the parameter (every split above cuts rows in order)."""
    return torch.cat([b.reshape(-1, b.shape[-1]) for b in blocks]).reshape(shape)


def _reference(case, w0, grads, *, lr, weight_decay, momentum, nesterov, beta2, eps, cautious=False):
    """Every step's (W, V) from the formulas: Muon's lerp moment, normuon_blocks, shape scale, decay."""
    shape, _, split = CASES[case]
    m = torch.zeros_like(w0)
    v = [torch.zeros(b.shape[:2], dtype=torch.float64) for b in split(w0)]
    w, out = w0, []
    for g in grads:
        m = momentum * m + (1 - momentum) * g
        o = (1 - momentum) * g + momentum * m if nesterov else m
        directions = []
        for i, block in enumerate(split(o)):
            d, v[i] = normuon_blocks(block, v[i], beta2, eps)
            directions.append(keller_scale(*block.shape[-2:]) * d)
        update = _join(directions, shape)
        w = cautious_decay(w, update, lr, weight_decay) if cautious else (1 - lr * weight_decay) * w
        w = w - lr * update
        rows = shape[:-1] if CASES[case][1].get("tensor_layout") == "batch" else shape[:1]
        out.append((w, torch.cat([x.reshape(-1) for x in v]).reshape(rows)))
    return out


def _run(case, w0, grads, **kwargs):
    _, options, _ = CASES[case]
    w = w0.clone().requires_grad_(True)
    opt = muonlab.NorMuon([dict({"params": [w]}, **options)], method="svd", **kwargs)
    out = []
    for g in grads:
        w.grad = g.clone()
        opt.step()
        out.append((w.detach().clone(), opt.state[w][ROW_STATE].clone()))
    return out


@pytest.mark.parametrize("momentum,nesterov", [(0.0, True), (0.9, True), (0.8, False)])
@pytest.mark.parametrize("case", list(CASES))
def test_normuon_matches_the_formula(case, momentum, nesterov):
    torch.manual_seed(0)
    shape = CASES[case][0]
    w0 = torch.randn(shape, dtype=torch.float64)
    # rows of very different sizes: the per-row normalization has something to equalize
    row_gain = torch.logspace(-2, 1, shape[0], dtype=torch.float64).reshape(-1, *[1] * (len(shape) - 1))
    grads = [torch.randn(shape, dtype=torch.float64) * row_gain for _ in range(3)]
    hyper = dict(lr=0.03, weight_decay=0.1, momentum=momentum, nesterov=nesterov, beta2=0.9)
    got = _run(case, w0, grads, **hyper)
    want = _reference(case, w0, grads, eps=1e-8, **hyper)
    for (w, v), (w_ref, v_ref) in zip(got, want):
        assert v.dtype == torch.float64 and v.shape == v_ref.shape
        torch.testing.assert_close(v, v_ref, rtol=1e-10, atol=1e-14)
        torch.testing.assert_close(w, w_ref, rtol=1e-10, atol=1e-12)


def test_normuon_with_cautious_weight_decay_matches_the_formula():
    torch.manual_seed(1)
    w0 = torch.randn(24, 2, dtype=torch.float64)
    grads = [torch.randn(24, 2, dtype=torch.float64) for _ in range(3)]
    hyper = dict(lr=0.05, weight_decay=0.5, momentum=0.9, nesterov=True, beta2=0.95)
    got = _run("fused", w0, grads, cautious_wd=True, **hyper)
    want = _reference("fused", w0, grads, eps=1e-8, cautious=True, **hyper)
    for (w, _), (w_ref, _) in zip(got, want):
        torch.testing.assert_close(w, w_ref, rtol=1e-10, atol=1e-12)


def test_normuon_equalizes_row_norms_and_keeps_the_frobenius_norm():
    """With β₂ = 0 and ε = 0 the rows of Û all have norm ‖U‖_F/√m; Muon's rows do not (a tall U: the rows
    of a wide polar factor are orthonormal already)."""
    torch.manual_seed(2)
    g = torch.randn(32, 16, dtype=torch.float64) * torch.logspace(-3, 1, 32, dtype=torch.float64)[:, None]
    w = torch.zeros(32, 16, dtype=torch.float64, requires_grad=True)
    opt = muonlab.NorMuon([w], lr=1.0, weight_decay=0.0, momentum=0.0, beta2=0.0, row_eps=0.0, method="svd",
                          adjust_lr_fn="none")
    w.grad = g
    opt.step()
    update = -w.detach()
    row_norms = update.norm(dim=1)
    torch.testing.assert_close(row_norms, torch.full_like(row_norms, polar64(g).norm().item() / 32**0.5), rtol=1e-10, atol=0)
    torch.testing.assert_close(update.norm(), polar64(g).norm(), rtol=1e-12, atol=0)
    muon_rows = polar64(g).norm(dim=1)
    assert float(muon_rows.max() / muon_rows.min()) > 1.5  # so the test above is not about a trivial input


def test_row_blocks_index_every_block_and_its_scale():
    ids, inv_s2, blocks = row_blocks((3, 6, 1), Blocks("batch", num_heads=2, split_sizes=(4, 2)), None)
    assert blocks == 3 * 4 and ids.shape == inv_s2.shape == (3, 6)
    assert ids[1].tolist() == [4, 4, 5, 5, 6, 7]  # matrix 1: heads of 2, 2, 1, 1 rows
    # s² = max(1, rows/cols) of each block (√2 squared: rounding)
    torch.testing.assert_close(inv_s2[0], torch.tensor([0.5] * 4 + [1.0] * 2, dtype=torch.float64), rtol=1e-15, atol=0)


def test_row_second_moment_is_fp32_for_half_parameters():
    w = torch.randn(8, 6, dtype=torch.bfloat16, requires_grad=True)
    opt = muonlab.NorMuon([w], lr=0.02)
    w.grad = torch.randn(8, 6, dtype=torch.bfloat16)
    opt.step()
    assert opt.state[w][ROW_STATE].dtype == torch.float32 and opt.state[w][ROW_STATE].shape == (8,)
    assert torch.isfinite(w).all()


@pytest.mark.parametrize("kwargs,message", [
    (dict(beta2=1.0), "beta2 must be a number in"),
    (dict(beta2=-0.1), "beta2 must be a number in"),
    (dict(row_eps=-1.0), "row_eps must be a non-negative number"),
    (dict(cautious_wd="yes"), "cautious_wd must be a bool"),
])
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        muonlab.NorMuon([torch.randn(4, 4, requires_grad=True)], **kwargs)


def test_bad_group_setting_is_refused_with_the_group():
    w = torch.randn(4, 4, requires_grad=True)
    with pytest.raises(ValueError, match=r"param group 0 \(matrix\): beta2"):
        muonlab.NorMuon([{"params": [w], "kind": "matrix", "beta2": 2.0}])


# ---------------------------------------------------------------- cautious weight decay, every optimizer

WITH_DECAY = [n for n in OPTIMIZERS if n not in ("adamw", "sgd", "simplified_muon")]  # SimplifiedMuon has no decay


def _first_step(name, w0, g, **kwargs):
    params = [w.clone().requires_grad_(True) for w in w0]
    opt = make_optimizer(name, [{"params": params, "tensor_layout": "batch"}], **kwargs)
    for p, gi in zip(params, g):
        p.grad = gi.clone()
    opt.step()
    return [p.detach() for p in params]


@pytest.mark.parametrize("name", WITH_DECAY + ["polargrad_first"])
def test_cautious_wd_decays_only_where_parameter_and_update_agree(name):
    """W₁ = W₀ − ηλ·W₀∘1[W₀∘U ≥ 0] − ηU, with U read off the same step without decay."""
    torch.manual_seed(3)
    extra = {"polar_first": True} if name == "polargrad_first" else {}
    name = name.removesuffix("_first")
    w0 = [torch.randn(6, 4, dtype=torch.float64), torch.randn(2, 3, 5, dtype=torch.float64)]
    g = [torch.randn_like(w) for w in w0]
    lr, wd = 0.05, 0.8
    plain = _first_step(name, w0, g, lr=lr, weight_decay=0.0, **extra)
    cautious = _first_step(name, w0, g, lr=lr, weight_decay=wd, cautious_wd=True, **extra)
    decayed = _first_step(name, w0, g, lr=lr, weight_decay=wd, **extra)
    for w, p, c, d in zip(w0, plain, cautious, decayed):
        update = (w - p) / lr
        torch.testing.assert_close(c, cautious_decay(w, update, lr, wd) - lr * update, rtol=1e-12, atol=1e-12)
        agree = w * update >= 0
        assert 0 < int(agree.sum()) < w.numel()  # both kinds of entries are present
        assert torch.equal(c[agree], d[agree])  # decayed entries: exactly (1 − ηλ)W − ηU as without the mask


def test_cautious_wd_with_muon_matches_the_formula():
    torch.manual_seed(4)
    w0 = torch.randn(10, 7, dtype=torch.float64)
    grads = [torch.randn(10, 7, dtype=torch.float64) for _ in range(3)]
    w = w0.clone().requires_grad_(True)
    lr, wd, mu = 0.05, 0.5, 0.9
    opt = muonlab.Muon([w], lr=lr, weight_decay=wd, momentum=mu, method="svd", eps=0.0, cautious_wd=True)
    m, want = torch.zeros_like(w0), w0
    for g in grads:
        w.grad = g.clone()
        opt.step()
        m = mu * m + (1 - mu) * g
        update = keller_scale(10, 7) * polar64((1 - mu) * g + mu * m)
        want = cautious_decay(want, update, lr, wd) - lr * update
        torch.testing.assert_close(w.detach(), want, rtol=1e-10, atol=1e-12)


def test_cautious_wd_is_a_group_option():
    a, b = torch.randn(6, 6, requires_grad=True), torch.randn(6, 6, requires_grad=True)
    opt = muonlab.Muon([{"params": [a], "cautious_wd": True}, {"params": [b]}], lr=0.1, weight_decay=0.1)
    assert [g["cautious_wd"] for g in opt.param_groups] == [True, False]
    with pytest.raises(ValueError, match=r"param group 2 \(matrix\): cautious_wd must be a bool, got 1"):
        opt.add_param_group({"params": [torch.randn(3, 3, requires_grad=True)], "cautious_wd": 1})


def test_split_sizes_given_as_a_list_work_like_a_tuple():
    torch.manual_seed(5)
    w0, g = torch.randn(24, 2), torch.randn(24, 2)
    out = []
    for sizes in ([12, 6, 6], (12, 6, 6)):
        w = w0.clone().requires_grad_(True)
        opt = muonlab.NorMuon([{"params": [w], "split_sizes": sizes, "num_heads": 2}], lr=0.1)
        for _ in range(2):
            w.grad = g.clone()
            opt.step()
        out.append(w.detach())
    assert torch.equal(out[0], out[1])
