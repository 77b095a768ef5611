"""Work B (PolarGrad, Lau, Long, Su, arXiv 2505.21799): ``quadreg``, ``logreg``, ``completion``.

Each optimizer runs every point of its step-size grid for the full step budget from the same start (X₀ ~ U(−1, 1)
as in the authors' scripts); the best run per optimizer (see SELECTION) is plotted with the gradient's condition number
σ_max/σ_min and nuclear norm over time. Optimizers: PolarGrad = PolarSGD (β = 0, exact SVD polar factor), Muon
(Nesterov β = 0.95, Polar Express, no weight decay), Adam (β = (0.9, 0.999)).

Grids (constant steps unless ρ is given; the paper's value is in each grid):
- ``quadreg``: PolarGrad {5e-9, 1e-8, 2e-8, 4e-8}; Muon {0.03, 0.1, 0.3}; Adam {0.02, 0.05, 0.1}.
- ``logreg``: PolarGrad {1e-8, 3e-8, 1.5e-7, 5e-7}; Muon {0.003, 0.01, 0.03, 0.1}; Adam {3e-4, 1e-3, 2e-3, 5e-3}:
  each optimizer's best lies inside its grid (the sweeps behind the grids: BENCHMARKS.md, "Work B's step-size grids").
- ``completion``: PolarGrad {5, 10, 15, 20, 25, 30, 40, 50}; Muon {0.003, 0.01, 0.03, 0.1, 0.25}; Adam {0.01, 0.02,
  0.05, 0.1, 0.2, 0.5}. The authors' scripts run PolarGrad at 15 (50 is their alternating-GD step); PolarGrad diverges
  above its fastest steps, so its grid runs up to that edge (BENCHMARKS.md).
``--small`` divides every dimension by 5; PolarGrad's grid is then rescaled (see ``_smallscale``).
``--quick`` runs QUICK_GRIDS (a few points around each optimizer's best) for QUICK_STEPS.
Best run (SELECTION): quadreg and completion have f* known, so completion's best run reaches the tolerance in the
fewest steps (else the lowest final error); quadreg keeps the lowest final gap; logreg's loss is a mini-batch loss, so its
best run has the lowest mean loss over the last 10% of steps (one mini-batch is too noisy to rank runs).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from tqdm import tqdm

from muonlab.experiments import plots
from muonlab.experiments.runner import Run, final_key, grid, mark_best, run_key, run_one, torch_threads
from muonlab.experiments.kappa_sweeps import FALLBACK_GRID, OPTIMIZER_KWARGS
from muonlab.tasks.matrix_problems import make_completion, make_logreg, make_quadreg

DEFAULT_OPTIMIZERS = ("polargrad", "muon", "adam")

GRIDS = {
    "quadreg": {
        "polargrad": grid([5e-9, 1e-8, 2e-8, 4e-8]),
        "muon": grid([0.03, 0.1, 0.3]),
        "adam": grid([0.02, 0.05, 0.1]),
    },
    "logreg": {
        "polargrad": grid([1e-8, 3e-8, 1.5e-7, 5e-7]),
        "muon": grid([0.003, 0.01, 0.03, 0.1]),
        "adam": grid([3e-4, 1e-3, 2e-3, 5e-3]),
    },
    "completion": {
        "polargrad": grid([5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 40.0, 50.0]),
        "muon": grid([0.003, 0.01, 0.03, 0.1, 0.25]),
        "adam": grid([0.01, 0.02, 0.05, 0.1, 0.2, 0.5]),
    },
}
STEPS = {"quadreg": 4000, "logreg": 1500, "completion": 1000}
# ``--quick``: a few points around each optimizer's best (full-size units; ``--small`` rescales PolarGrad's as usual)
QUICK_GRIDS = {
    "logreg": {
        "polargrad": grid([1.2e-8, 4e-8, 1.2e-7]),  # ×25 at --small: {3e-7, 1e-6, 3e-6}
        "muon": grid([0.003, 0.01, 0.03]),
        "adam": grid([1e-3, 2e-3, 5e-3]),
    },
    "completion": {
        "polargrad": grid([15.0, 20.0, 25.0]),
        "muon": grid([0.01, 0.03, 0.1]),
        "adam": grid([0.05, 0.1, 0.2, 0.5]),
    },
}
QUICK_STEPS = {"logreg": 1000, "completion": 400}
TOLERANCE = 1e-6  # relative gap (f − f*)/(f(X₀) − f*) where f* is known
PROBE_EVERY = 20
# PolarGrad uses the exact (SVD) polar factor: QDWH gives the same factor to fp32 rounding, and on a CPU one SVD of
# these small matrices costs far less than QDWH's QR and Cholesky steps
PROBLEM_OPTIMIZER_KWARGS = {**OPTIMIZER_KWARGS, "polargrad": {"momentum": 0.0, "method": "svd"}}


def _smallscale(problem: str) -> float:
    """PolarGrad's step-size factor for ``--small`` (every dimension / 5). Its stable step is ≈ 2/⟨U, H[U]⟩ with
    U = polar(∇f); for quadreg ⟨U, H[U]⟩ ≈ p·q·min(m, n) shrinks 125×; for logreg the batch·q·min(m, n) sum shrinks
    125× but the sigmoid weights do not, so we use 25×. For completion the curvature in X is ≈ 2‖Y‖²_op/(m n) (the 1/|Ω|
    cancels the 30% sampling) and ‖Y‖²_op ≈ σ_max(M) ≈ √(m n) for balanced factors, so L ≈ 2/√(m n) grows 5× and the
    stable step shrinks 5× (measured, seed 0, 1000 steps: full size converges up to 30, diverges at 40; 1/5 size
    converges at 4, stalls at 5, diverges at 10). Muon's and Adam's steps are scale-free."""
    return {"quadreg": 125.0, "logreg": 25.0, "completion": 0.2}[problem]


def tail_mean_key(run: Run) -> tuple:
    """Best run by the mean loss over the last 10% of recorded steps (noisy mini-batch losses); diverged runs last."""
    if run.diverged or not run.errors:
        return (True, math.inf)
    k = max(1, len(run.errors) // 10)
    return (False, sum(run.errors[-k:]) / k)


SELECTION = {"quadreg": final_key, "logreg": tail_mean_key, "completion": run_key}


def _make(problem: str, small: bool, seed: int):
    return {"quadreg": make_quadreg, "logreg": make_logreg, "completion": make_completion}[problem](small=small, seed=seed)


def _grad_stats(params, grads) -> dict:
    g = grads[0].double()
    s = torch.linalg.svdvals(g)
    return {"grad_condition": float(s[0] / s[-1]) if s[-1] > 0 else float("inf"), "grad_nuclear_norm": float(s.sum())}


def _run(problem: str, args) -> dict:
    small = bool(getattr(args, "small", False))
    task = _make(problem, small, args.seed)
    names = list(args.optimizers or DEFAULT_OPTIMIZERS)
    quick = bool(getattr(args, "quick", False)) and problem in QUICK_GRIDS
    steps = args.steps or (QUICK_STEPS if quick else STEPS)[problem]
    grids = {}
    for n in names:
        g = (QUICK_GRIDS if quick else GRIDS)[problem].get(n, FALLBACK_GRID)
        if small and n == "polargrad":
            g = [type(s)(s.lr * _smallscale(problem), s.gamma) for s in g]
        grids[n] = g
    tol = TOLERANCE if getattr(task, "f_star", None) is not None else None
    runs: list[Run] = []
    total = steps * sum(len(g) for g in grids.values())
    with tqdm(total=total, desc=args.experiment, unit="step", disable=not getattr(args, "progress", True), leave=False) as bar:
        for name in names:
            for step in grids[name]:
                before = bar.n
                run = run_one(task, task.start(), name, step, steps=steps, tol=tol, stop_at_tol=False,
                              optimizer_kwargs=PROBLEM_OPTIMIZER_KWARGS.get(name), probe=_grad_stats,
                              probe_every=PROBE_EVERY, progress=bar)
                bar.update(steps - (bar.n - before))
                bar.set_postfix(opt=name, lr=f"{step.lr:g}", err=f"{run.errors[-1]:.2e}" if run.errors else "nan")
                runs.append(run)
    mark_best(runs, key=SELECTION[problem])
    best = [r for r in runs if r.best]
    out = Path(args.out)
    f_star = getattr(task, "f_star", None)
    gap_label = {"quadreg": "(f − f*) / (f(X₀) − f*)", "logreg": "mini-batch loss", "completion": "f / f(X₀)  (f* = 0)"}[problem]
    plot = plots.gap_with_gradient_stats(best, out / "loss_and_gradient.png", title=f"{problem}: best run per optimizer",
                                         gap_label=gap_label)
    config = {
        "small": small,
        "quick": quick,
        "steps": steps,
        "selection": SELECTION[problem].__name__,
        "seed": args.seed,
        "tolerance": tol,
        "grids": {n: [{"lr": s.lr, "gamma": s.gamma} for s in g] for n, g in grids.items()},
        "optimizer_kwargs": {n: PROBLEM_OPTIMIZER_KWARGS.get(n, {}) for n in names},
        "f_star": f_star,
    }
    if problem == "quadreg":
        config.update(hessian_condition=task.hessian_condition, smoothness=task.smoothness, f_zero=task.f_zero)
    return {
        "experiment": args.experiment,
        "config": config,
        "runs": [r.to_json() for r in runs],
        "plots": [plot.name],
    }


def run_quadreg(args) -> dict:
    with torch_threads(1):
        return _run("quadreg", args)


def run_logreg(args) -> dict:
    with torch_threads(1):
        return _run("logreg", args)


def run_completion(args) -> dict:
    with torch_threads(1):
        return _run("completion", args)
