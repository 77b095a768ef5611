"""Work A (Ma, Huang, Chi, Chen, arXiv 2601.13474) as κ-sweeps: ``matfac``, ``matfac-sym`` and ``icl``.

For every optimizer and κ, every point of the optimizer's step-size grid is run from the same start; the best run
(fewest iterations to the tolerance, else the lowest final error) is what the tables and plots use.

Step-size grids (η_t = η₀ρᵗ; ρ = 1 is constant), documented here and copied into results.json:

- ``matfac`` (tolerance: ‖XYᵀ − A‖_F/‖A‖_F ≤ 1e-6): simplified Muon η₀ ∈ {0.1, 0.3} × ρ ∈ {0.9, 0.95};
  GD η ∈ {0.4, 0.6, 0.8}; Adam η₀ ∈ {3e-3, 1e-2, 3e-2} × ρ ∈ {1, 0.999}.
- ``icl`` (tolerance: (L − L*)/(L(0) − L*) ≤ 1e-6): simplified Muon η₀ ∈ {3, 30, 300} × ρ ∈ {0.85, 0.9}
  (Γ* = Σ⁻¹ lies κ away, so η₀ must be allowed to reach it); GD η ∈ {1, 1.5, 1.9} (stable below 2/λ_max = 2);
  Adam η₀ ∈ {0.01, 0.1, 1} × ρ ∈ {1, 0.999}.
- any other optimizer name: η₀ ∈ {1e-3, 1e-2, 1e-1} × ρ ∈ {1, 0.99}.

Step budgets (``--steps`` overrides all): simplified Muon 1000, GD 10000, others 5000 (``--quick``: GD 10000, others 3000,
and smaller grids).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from tqdm import tqdm

from muonlab.experiments import plots
from muonlab.experiments.runner import GD, Run, StepSize, best_runs, grid, mark_best, run_one, torch_threads
from muonlab.tasks.icl import make_icl
from muonlab.tasks.matfac import make_matfac

DEFAULT_OPTIMIZERS = ("simplified_muon", GD, "adam")
OPTIMIZER_KWARGS = {
    "simplified_muon": {"method": "svd"},
    "adam": {"betas": (0.9, 0.999)},
    "muon": {"weight_decay": 0.0},
    "polargrad": {"momentum": 0.0},
}
FALLBACK_GRID = grid([1e-3, 1e-2, 1e-1], [1.0, 0.99])

GRIDS = {
    "matfac": {
        "simplified_muon": grid([0.1, 0.3], [0.9, 0.95]),
        GD: grid([0.4, 0.6, 0.8]),
        "adam": grid([3e-3, 1e-2, 3e-2], [1.0, 0.999]),
    },
    "icl": {
        "simplified_muon": grid([3.0, 30.0, 300.0], [0.85, 0.9]),
        GD: grid([1.0, 1.5, 1.9]),
        "adam": grid([0.01, 0.1, 1.0], [1.0, 0.999]),
    },
}
QUICK_GRIDS = {
    "matfac": {
        "simplified_muon": grid([0.3], [0.9, 0.95]),
        GD: grid([0.6, 0.8]),
        "adam": grid([1e-2, 3e-2], [1.0, 0.999]),
    },
    "icl": {
        "simplified_muon": grid([3.0, 30.0, 300.0], [0.9]),
        GD: grid([1.5, 1.9]),
        "adam": grid([0.1, 1.0], [0.999]),
    },
}
BUDGETS = {"simplified_muon": 1000, GD: 10000}
QUICK_BUDGETS = {"simplified_muon": 1000, GD: 10000}
DEFAULT_BUDGET, QUICK_DEFAULT_BUDGET = 5000, 3000
KAPPAS = {"matfac": (10.0, 1e2, 1e3, 1e4), "icl": (1.0, 10.0, 1e2, 1e3)}
TOLERANCE = 1e-6


def _grids(problem: str, quick: bool) -> dict[str, list[StepSize]]:
    return (QUICK_GRIDS if quick else GRIDS)[problem]


def budget_for(name: str, steps: int | None, quick: bool) -> int:
    if steps is not None:
        return steps
    return (QUICK_BUDGETS if quick else BUDGETS).get(name, QUICK_DEFAULT_BUDGET if quick else DEFAULT_BUDGET)


def _sweep(problem, make_task, start, args, *, label: str) -> tuple[list[Run], dict, dict]:
    names = list(args.optimizers or DEFAULT_OPTIMIZERS)
    kappas = list(args.kappas or KAPPAS[problem])
    grids = {n: _grids(problem, args.quick).get(n, FALLBACK_GRID) for n in names}
    budgets = {n: budget_for(n, args.steps, args.quick) for n in names}
    total = sum(budgets[n] * len(grids[n]) for n in names) * len(kappas)
    runs: list[Run] = []
    with tqdm(total=total, desc=label, unit="step", disable=not getattr(args, "progress", True), leave=False) as bar:
        for kappa in kappas:
            task = make_task(kappa)
            for name in names:
                for step in grids[name]:
                    before = bar.n
                    run = run_one(task, start(task), name, step, steps=budgets[name], tol=TOLERANCE, kappa=kappa,
                                  optimizer_kwargs=OPTIMIZER_KWARGS.get(name), progress=bar)
                    bar.update(budgets[name] - (bar.n - before))  # a run that stops early skips its remaining steps
                    bar.set_postfix(opt=name, kappa=f"{kappa:g}", iters=run.iters_to_tol)
                    runs.append(run)
    mark_best(runs)
    return runs, grids, budgets


def _trajectory_runs(problem, make_task, start, best: dict, budgets: dict, kappa: float, names=("simplified_muon", GD)) -> list[Run]:
    """Re-run the best simplified-Muon and GD settings at ``kappa`` recording the per-direction scalar sequences."""
    task = make_task(kappa)
    out = []
    for name in names:
        run = best.get((name, kappa))
        if run is None:
            continue
        steps = budgets[name] if run.iters_to_tol is None else run.iters_to_tol
        every = max(1, steps // 400)
        traj = run_one(task, start(task), name, StepSize(run.lr, run.gamma), steps=steps, tol=None, kappa=kappa,
                       optimizer_kwargs=OPTIMIZER_KWARGS.get(name), probe_every=every,
                       probe=lambda p, g: {"coordinates": task.singular_trajectory_values(p).tolist()})
        traj.extra["targets"] = task.trajectory_targets().tolist()
        out.append(traj)
    return out


def _phases(run: Run, tol_iters: int | None) -> dict:
    """Split simplified Muon's iterations into travel (until every coordinate first crosses its target) and contraction."""
    coords, targets = run.extra.get("coordinates", []), run.extra.get("targets", [])
    every = run.extra.get("probe_every", 1)
    if not coords or tol_iters is None:
        return {"travel": None, "contraction": None}
    start_sign = [math.copysign(1.0, c - t) if c != t else 0.0 for c, t in zip(coords[0], targets)]
    crossed_at = None
    crossed = [False] * len(targets)
    for k, row in enumerate(coords):
        for i, (c, t) in enumerate(zip(row, targets)):
            if not crossed[i] and (c - t) * start_sign[i] <= 0:
                crossed[i] = True
        if all(crossed):
            crossed_at = k * every
            break
    if crossed_at is None:
        return {"travel": None, "contraction": None}
    return {"travel": crossed_at, "contraction": tol_iters - crossed_at}


def _payload(problem, args, runs, grids, budgets, extra_config: dict) -> dict:
    return {
        "experiment": args.experiment,
        "config": {
            "kappas": sorted({r.kappa for r in runs}),
            "optimizers": list(grids),
            "tolerance": TOLERANCE,
            "steps": budgets,
            "seed": args.seed,
            "quick": bool(args.quick),
            "grids": {n: [{"lr": s.lr, "gamma": s.gamma} for s in g] for n, g in grids.items()},
            "optimizer_kwargs": {n: OPTIMIZER_KWARGS.get(n, {}) for n in grids},
            **extra_config,
        },
        "runs": [r.to_json() for r in runs],
    }


def _finish(problem, args, runs, grids, budgets, make_task, start, extra_config, *, error_label, task_title) -> dict:
    out = Path(args.out)
    best = best_runs(runs)
    kappas = sorted({r.kappa for r in runs})
    payload = _payload(problem, args, runs, grids, budgets, extra_config)
    plot_paths = [
        plots.error_curves_per_kappa(best, out / "loss_vs_iteration.png", ylabel=error_label, tol=TOLERANCE,
                                     title=f"{task_title}: best run per optimizer and κ"),
        plots.iterations_vs_kappa(best, budgets, out / "iterations_vs_kappa.png",
                                  title=f"{task_title}: iterations to {TOLERANCE:g}"),
    ]
    traj_runs = []
    phases = {}
    for kappa in kappas:
        if ("simplified_muon", kappa) in best:
            names = ("simplified_muon", GD) if kappa == kappas[-1] else ("simplified_muon",)
            sm_traj = _trajectory_runs(problem, make_task, start, best, budgets, kappa, names)
            for r in sm_traj:
                if r.optimizer == "simplified_muon":
                    phases[str(kappa)] = _phases(r, best[("simplified_muon", kappa)].iters_to_tol)
            if kappa == kappas[-1]:
                traj_runs = sm_traj
    if traj_runs:
        panels = [(f"{r.optimizer} ({plots.run_label(r)}), κ = {r.kappa:g}", r.extra["coordinates"], r.extra["targets"],
                   r.extra["probe_every"]) for r in traj_runs]
        plot_paths.append(plots.trajectories(panels, out / "singular_trajectories.png",
                                             ylabel="|coordinate − target| / |target|",
                                             title=f"{task_title}: one scalar sequence per singular direction"))
        payload["trajectories"] = [r.to_json() for r in traj_runs]
    payload["phases"] = phases
    payload["plots"] = [p.name for p in plot_paths]
    return payload


def run_matfac(args, *, symmetric: bool = False) -> dict:
    with torch_threads(1):
        return _run_matfac(args, symmetric=symmetric)


def _run_matfac(args, *, symmetric: bool = False) -> dict:
    problem = "matfac"
    shape = {"m": 50, "n": 40, "rank": 5, "init_scale": 1e-3}

    def make_task(kappa):
        return make_matfac(kappa, m=shape["m"], n=shape["n"], rank=shape["rank"], symmetric=symmetric,
                           init_scale=shape["init_scale"], seed=args.seed)

    def start(task):
        return task.random_start(torch.Generator().manual_seed(args.seed + 1))

    runs, grids, budgets = _sweep(problem, make_task, start, args, label=args.experiment)

    def aligned(task):
        return task.aligned_start()

    sym = "XXᵀ ≈ A" if symmetric else "XYᵀ ≈ A"
    payload = _finish(problem, args, runs, grids, budgets, make_task, aligned,
                      {**shape, "symmetric": symmetric, "dtype": "float64", "start": "random (runs), aligned (trajectories)"},
                      error_label=r"$\|XY^\top - A\|_F \,/\, \|A\|_F$", task_title=f"matfac {sym}")
    return payload


def run_matfac_sym(args) -> dict:
    return run_matfac(args, symmetric=True)


def run_icl(args) -> dict:
    with torch_threads(1):
        return _run_icl(args)


def _run_icl(args) -> dict:
    problem = "icl"
    dim = 10

    def make_task(kappa):
        return make_icl(kappa, dim=dim, n_context=None, seed=args.seed)

    def start(task):
        return task.start()

    runs, grids, budgets = _sweep(problem, make_task, start, args, label=args.experiment)
    distances = {str(k): float(torch.linalg.matrix_norm(make_task(k).gamma_star, ord=2)) for k in sorted({r.kappa for r in runs})}
    payload = _finish(problem, args, runs, grids, budgets, make_task, start,
                      {"dim": dim, "n_context": "infinite (population loss)", "dtype": "float64", "start": "Γ₀ = 0",
                       "initial_distance": distances},
                      error_label="(L − L*) / (L(0) − L*)", task_title="icl (reduced Γ)")
    return payload
