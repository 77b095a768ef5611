"""PolarGrad, the Ψ_p family and SimplifiedMuon: first steps against docs/math.md §4 in float64 with SVD."""

from __future__ import annotations

import math

import pytest
import torch

import muonlab
from tests.optim.formulas import keller_scale, nuclear64, polar64, psi

SHAPES = [(10, 16), (18, 6), (3, 4, 5)]  # wide, tall, and a stack handled as a batch


def _steps(opt_factory, w0, grads, layout="batch"):
    params = [w.clone().requires_grad_(True) for w in w0]
    opt = opt_factory([{"params": params, "tensor_layout": layout}])
    out = []
    for gs in grads:
        for p, g in zip(params, gs):
            p.grad = g.clone()
        opt.step()
        out.append([p.detach().clone() for p in params])
    return out


def _data(n_steps=2):
    w0 = [torch.randn(s, dtype=torch.float64) for s in SHAPES]
    grads = [[torch.randn(s, dtype=torch.float64) for s in SHAPES] for _ in range(n_steps)]
    return w0, grads


def _close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_polarsgd_is_nuclear_norm_times_polar():
    """Momentum 0: W₁ = (1 − ηλ)W₀ − η ‖G‖_* U Vᵀ."""
    lr, wd = 0.01, 0.1
    w0, grads = _data(1)
    (got,) = _steps(lambda ps: muonlab.PolarGrad(ps, lr=lr, weight_decay=wd, method="svd"), w0, grads)
    for w, g, out in zip(w0, grads[0], got):
        _close(out, (1 - lr * wd) * w - lr * nuclear64(g) * polar64(g))


@pytest.mark.parametrize("method", ["qdwh", "zolo_pd"])
def test_polargrad_qdwh_matches_svd_formula(method):
    """float32 QDWH (the paper's method; the default on float64) and ZOLO-PD (the paper's other accurate polar)
    are the exact formula to float32 rounding."""
    w0, grads = _data(1)
    w0 = [w.float() for w in w0]
    grads = [[g.float() for g in grads[0]]]
    (got,) = _steps(lambda ps: muonlab.PolarGrad(ps, lr=0.01, method=method), w0, grads)
    for w, g, out in zip(w0, grads[0], got):
        expect = w.double() - 0.01 * nuclear64(g) * polar64(g)
        torch.testing.assert_close(out.double(), expect, rtol=0, atol=1e-5)


def test_polargradm_momentum_first():
    lr, beta = 0.02, 0.9
    w0, grads = _data(2)
    got = _steps(lambda ps: muonlab.PolarGrad(ps, lr=lr, momentum=beta, method="svd"), w0, grads)
    for i, w in enumerate(w0):
        m1 = (1 - beta) * grads[0][i]
        w1 = w - lr * nuclear64(m1) * polar64(m1)
        m2 = beta * m1 + (1 - beta) * grads[1][i]
        w2 = w1 - lr * nuclear64(m2) * polar64(m2)
        _close(got[0][i], w1)
        _close(got[1][i], w2)


def test_polargradm_polar_first():
    lr, beta, wd = 0.02, 0.9, 0.05
    w0, grads = _data(2)
    got = _steps(lambda ps: muonlab.PolarGrad(ps, lr=lr, momentum=beta, polar_first=True, weight_decay=wd,
                                              method="svd"), w0, grads)
    for i, w in enumerate(w0):
        m1 = (1 - beta) * polar64(grads[0][i])
        w1 = (1 - lr * wd) * w - lr * nuclear64(grads[0][i]) * m1
        m2 = beta * m1 + (1 - beta) * polar64(grads[1][i])
        w2 = (1 - lr * wd) * w1 - lr * nuclear64(grads[1][i]) * m2
        _close(got[0][i], w1)
        _close(got[1][i], w2)


@pytest.mark.parametrize("p", [1.0, 0.5, 0.25, 0.0])
def test_spectral_sgd_first_steps(p):
    """M ← μM + G, W ← (1 − ηλ)W − η s Ψ_p(M); s = √max(1, rows/cols) for p = 0 only."""
    lr, mu, wd = 0.03, 0.9, 0.1
    w0, grads = _data(2)
    method = "svd"
    got = _steps(lambda ps: muonlab.SpectralSGD(ps, lr=lr, p=p, momentum=mu, weight_decay=wd, method=method),
                 w0, grads)
    for i, w in enumerate(w0):
        s = keller_scale(*w.shape[-2:]) if p == 0 else 1.0
        m, wt = torch.zeros_like(w), w
        for t in range(2):
            m = mu * m + grads[t][i]
            wt = (1 - lr * wd) * wt - lr * s * psi(m, p)
            _close(got[t][i], wt)


@pytest.mark.parametrize("p", [1.0, 0.5, 0.25, 0.0])
def test_spectral_adam_first_steps(p):
    """O = m̂/(√v̂ + ε) with bias correction; W ← (1 − ηλ)W − η s Ψ_p(O)."""
    lr, (b1, b2), eps, wd = 0.01, (0.9, 0.95), 1e-8, 0.1
    w0, grads = _data(3)
    got = _steps(lambda ps: muonlab.SpectralAdam(ps, lr=lr, p=p, weight_decay=wd, method="svd"), w0, grads)
    for i, w in enumerate(w0):
        s = keller_scale(*w.shape[-2:]) if p == 0 else 1.0
        m, v, wt = torch.zeros_like(w), torch.zeros_like(w), w
        for t in range(3):
            g = grads[t][i]
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            o = (m / (1 - b1 ** (t + 1))) / ((v / (1 - b2 ** (t + 1))).sqrt() + eps)
            wt = (1 - lr * wd) * wt - lr * s * psi(o, p)
            _close(got[t][i], wt)


@pytest.mark.parametrize("p", [0.5, 0.25])
def test_spectral_power_newton_method_close_to_svd(p):
    w0, grads = _data(1)
    w0 = [w.float() for w in w0]
    (got,) = _steps(lambda ps: muonlab.SpectralSGD(ps, lr=0.01, p=p, method="newton"), w0, [[g.float() for g in grads[0]]])
    for w, g, out in zip(w0, grads[0], got):
        upd = (w - out).double() / 0.01
        ref = psi(g, p)
        assert float((upd - ref).norm() / ref.norm()) < 1e-3


def test_spectral_adam_p1_is_torch_adam():
    w0 = torch.randn(9, 7)
    grads = [torch.randn(9, 7) for _ in range(5)]
    a = w0.clone().requires_grad_()
    b = w0.clone().requires_grad_()
    ours = muonlab.SpectralAdam([a], lr=1e-2, p=1.0)
    ref = torch.optim.Adam([b], lr=1e-2, betas=(0.9, 0.95), eps=1e-8)
    for g in grads:
        a.grad, b.grad = g.clone(), g.clone()
        ours.step()
        ref.step()
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_simplified_muon_with_geometric_schedule():
    """W ← W − η_t polar(G) with η_t = η₀ρᵗ from ExponentialLR; exact polar factor by default."""
    w0, grads = _data(3)
    params = [w.clone().requires_grad_(True) for w in w0[:2]]
    opt = muonlab.SimplifiedMuon(params, lr=0.5)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.5)
    expect = [w.clone() for w in w0[:2]]
    for t in range(3):
        for p, g in zip(params, grads[t]):
            p.grad = g.clone()
        opt.step()
        expect = [e - 0.5 * 0.5**t * polar64(g) for e, g in zip(expect, grads[t])]
        sched.step()
        for p, e in zip(params, expect):
            _close(p.detach(), e)


def test_simplified_muon_converges_linearly_on_quadratic():
    """f(W) = ½‖W − W*‖²: with η_t = η₀ρᵗ, ‖W_t − W*‖ shrinks geometrically (work A's linear rate)."""
    target = torch.randn(8, 12, dtype=torch.float64)
    w = torch.zeros(8, 12, dtype=torch.float64, requires_grad=True)
    opt = muonlab.SimplifiedMuon([w], lr=float(torch.linalg.svdvals(target).max()))
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.7)
    errors = []
    for _ in range(40):
        w.grad = (w - target).detach()
        opt.step()
        sched.step()
        errors.append(float(torch.linalg.matrix_norm(w.detach() - target, 2)))
    assert errors[-1] < 1e-5 * errors[0]
    assert math.isfinite(errors[-1])
