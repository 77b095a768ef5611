"""Losses and closed-form gradients of the lab's tasks, checked against autograd and exact facts."""

import math

import pytest
import torch

import muonlab
from muonlab.tasks.icl import (
    full_from_gamma,
    full_predict,
    make_icl,
    make_icl_full,
    reduced_predict,
    sample_prompts,
)
from muonlab.tasks.matfac import make_matfac
from muonlab.tasks.matrix_problems import QuadraticRegression, make_completion, make_logreg, make_quadreg


def autograd_grads(loss_fn, params):
    leaves = [p.detach().clone().requires_grad_(True) for p in params]
    loss = loss_fn(leaves)
    return float(loss.detach()), torch.autograd.grad(loss, leaves)


def assert_grads_match(task, params, loss_fn, rtol=1e-9):
    loss, grads = task.loss_and_grads(params)
    ref_loss, ref_grads = autograd_grads(loss_fn, params)
    assert loss == pytest.approx(ref_loss, rel=rtol)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=rtol, atol=rtol * float(r.abs().max()))


@pytest.mark.parametrize("symmetric", [False, True])
def test_matfac_gradient_matches_autograd(symmetric):
    task = make_matfac(100.0, m=12, n=9, rank=3, symmetric=symmetric, seed=3)
    params = [torch.randn_like(p) for p in task.random_start(torch.Generator().manual_seed(0))]
    target = task.target

    def loss_fn(ps):
        x = ps[0]
        y = x if symmetric else ps[1]
        return 0.5 * (x @ y.mT - target).square().sum()

    assert_grads_match(task, params, loss_fn)


def test_matfac_target_has_the_prescribed_spectrum():
    task = make_matfac(1e3, m=20, n=15, rank=4, seed=1)
    s = torch.linalg.svdvals(task.target)
    torch.testing.assert_close(s[:4], torch.logspace(0, -3, 4, dtype=torch.float64))
    assert float(s[4:].max()) < 1e-12
    assert task.kappa == pytest.approx(1e3)


def test_aligned_start_decouples_simplified_muon_into_scalar_sign_recursions():
    """polar(∇_X f) = U diag(sign(...)) at an aligned point: each x_i follows x_i ← x_i − η sign((x_i y_i − σ_i) y_i)."""
    task = make_matfac(1e4, m=15, n=11, rank=4, seed=2)
    params = task.aligned_start(torch.tensor([1e-3, 2e-3, 5e-4, 1e-3], dtype=torch.float64))
    x = torch.diagonal(task.u.mT @ params[0]).clone()
    y = torch.diagonal(task.v.mT @ params[1]).clone()
    eta = 0.05
    mixed_signs = False
    for _ in range(8):
        _, grads = task.loss_and_grads(params)
        params = [p - eta * muonlab.polar(g, method="svd") for p, g in zip(params, grads)]
        r = x * y - task.sigma
        mixed_signs = mixed_signs or bool((r > 0).any() and (r < 0).any())
        x, y = x - eta * torch.sign(r * y), y - eta * torch.sign(r * x)
        eta *= 0.95
        # (kept short: once a direction's gradient component falls to roundoff, ~1e-16·‖∇f‖, the SVD can no longer
        # resolve its sign and the float64 iterates leave the aligned set — see the icl notes in the report)
        torch.testing.assert_close(params[0], task.u * x, atol=1e-10, rtol=0)
        torch.testing.assert_close(params[1], task.v * y, atol=1e-10, rtol=0)
    # the directions really were at different stages (some past their target, some not): not a trivial match
    assert mixed_signs


def test_icl_population_loss_gradient_and_optimum():
    task = make_icl(30.0, dim=4, n_context=8, seed=0)
    gamma = torch.randn(4, 4, dtype=torch.float64)
    s, m = task.sigma, task.m

    def loss_fn(ps):
        g = ps[0]
        return 0.5 * torch.trace(s @ g @ m @ g.mT) - torch.trace(s @ g @ s) + 0.5 * torch.trace(s)

    assert_grads_match(task, [gamma], loss_fn)
    _, (g_star,) = task.loss_and_grads([task.gamma_star])
    assert float(g_star.abs().max()) < 1e-10
    assert task.loss(torch.zeros(4, 4, dtype=torch.float64)) == pytest.approx(0.5 * float(torch.trace(s)))
    # infinite context: Γ* = Σ⁻¹ exactly
    inf = make_icl(30.0, dim=4, n_context=None, seed=0)
    torch.testing.assert_close(inf.gamma_star, torch.linalg.inv(inf.sigma), rtol=1e-8, atol=1e-8)
    assert inf.loss_star == pytest.approx(0.0, abs=1e-10)


def test_icl_closed_form_matches_monte_carlo():
    task = make_icl(5.0, dim=3, n_context=6, seed=1)
    gamma = 0.5 * torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    prompts = sample_prompts(task.sigma, 400_000, 6, torch.Generator().manual_seed(5))
    mc = 0.5 * float((reduced_predict(gamma, prompts) - prompts.y_query).square().mean())
    assert mc == pytest.approx(task.loss(gamma), rel=0.02)


def test_icl_full_parameterization_contains_the_reduced_one_and_has_autograd_gradients():
    task = make_icl_full(10.0, dim=3, n_context=5, batch=64, seed=0)
    gamma = torch.randn(3, 3, dtype=torch.float64)
    w_kq, w_pv = full_from_gamma(gamma)
    torch.testing.assert_close(full_predict(w_kq, w_pv, task.prompts), reduced_predict(gamma, task.prompts))
    params = task.start(torch.Generator().manual_seed(1))
    loss, grads = task.loss_and_grads(params)
    eps = 1e-6
    direction = torch.randn_like(params[0])
    up = task.loss_tensor([params[0] + eps * direction, params[1]])
    down = task.loss_tensor([params[0] - eps * direction, params[1]])
    assert float((up - down) / (2 * eps)) == pytest.approx(float((grads[0] * direction).sum()), rel=1e-5, abs=1e-12)


def test_quadreg_gradient_gap_and_optimum():
    task = make_quadreg(small=True, seed=0, dtype=torch.float64)
    a, b, c = task.a, task.b, task.c
    x = task.start()[0]
    assert_grads_match(task, [x], lambda ps: 0.5 * (a @ ps[0] @ b - c).square().sum(), rtol=1e-8)
    # the gap formula equals the direct loss, and X* is stationary with f* below any other point
    assert task.loss_and_grads([x])[0] == pytest.approx(task.loss([x]), rel=1e-10)
    assert float(task.gradient(task.x_star).abs().max()) < 1e-8 * float(task.atcbt.abs().max())
    assert task.f_star < task.loss([x + 1e-3 * torch.randn_like(x)])


def test_logreg_and_completion_gradients_match_autograd():
    import torch.nn.functional as F

    lr_task = make_logreg(small=True, seed=0, dtype=torch.float64)
    assert set(lr_task.c.unique().tolist()) == {-1.0, 1.0}
    assert 0.25 < float((lr_task.c > 0).double().mean()) < 0.37
    rows = torch.arange(50)
    x = lr_task.start()[0]
    loss, g = lr_task.batch_loss_and_grads(x, rows)
    ref_loss, (ref_g,) = autograd_grads(
        lambda ps: F.softplus(-lr_task.c[rows] * (lr_task.a[rows] @ ps[0] @ lr_task.b)).sum(), [x])
    assert loss == pytest.approx(ref_loss, rel=1e-10)
    torch.testing.assert_close(g, ref_g)

    comp = make_completion(small=True, seed=0, dtype=torch.float64)
    params = comp.start()
    assert_grads_match(comp, params,
                       lambda ps: (comp.mask * (ps[0] @ ps[1].mT - comp.target)).square().sum() / comp.mask.sum())
    assert 0.25 < float(comp.mask.mean()) < 0.35


def test_bad_task_arguments_are_refused():
    with pytest.raises(ValueError, match="kappa"):
        make_matfac(0.5)
    with pytest.raises(ValueError, match="kappa"):
        make_icl(-1.0)
    with pytest.raises(ValueError, match="rank"):
        make_matfac(10.0, m=5, n=4, rank=6)


def small_quadratic(seed=0) -> QuadraticRegression:
    """A well-conditioned strongly convex instance: A 30×8, B 4×20 Gaussian, float64."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(30, 8, dtype=torch.float64, generator=gen)
    b = torch.randn(4, 20, dtype=torch.float64, generator=gen)
    c = torch.randn(30, 20, dtype=torch.float64, generator=gen)
    return QuadraticRegression(a, b, c, seed=seed)


def test_small_quadratic_is_strongly_convex():
    task = small_quadratic()
    assert math.isfinite(task.hessian_condition) and task.hessian_condition < 1e3
