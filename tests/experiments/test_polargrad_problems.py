"""Work B's (PolarGrad's) logreg and completion experiments: step-size scaling with problem size, best-run selection, report rows."""

import json
import math

import pytest
import torch

from muonlab.experiments.runner import Run, StepSize, run_one, torch_threads
from muonlab.experiments.polargrad_problems import (GRIDS, PROBLEM_OPTIMIZER_KWARGS, QUICK_GRIDS, _smallscale,
                                                    tail_mean_key)
from muonlab.experiments.polargrad_problems_report import _completion_summary, _logreg_summary
from muonlab.experiments.report import reproduce
from muonlab.tasks.matrix_problems import make_completion


@pytest.fixture(autouse=True)
def _one_thread():
    with torch_threads(1):
        yield


def test_completion_polargrad_stability_edge_shrinks_with_size():
    """L ≈ 2/√(mn): on the 1/5-size problem the full-size best step (20) ×0.2 converges, while a step past the edge
    (50, the authors' alternating-GD step, ×0.2 = 10) diverges — the reason lr 50 'did not converge'."""
    task = make_completion(small=True, seed=0)
    kw = PROBLEM_OPTIMIZER_KWARGS["polargrad"]
    good = run_one(task, task.start(), "polargrad", StepSize(20.0 * _smallscale("completion")), steps=400, tol=1e-6,
                   optimizer_kwargs=kw)
    assert good.iters_to_tol is not None and not good.diverged
    unscaled = run_one(task, task.start(), "polargrad", StepSize(20.0), steps=400, tol=1e-6, optimizer_kwargs=kw)
    assert unscaled.diverged  # the old factor 1.0 ("scale-free") was wrong
    past_edge = run_one(task, task.start(), "polargrad", StepSize(50.0 * _smallscale("completion")), steps=400, tol=1e-6,
                        optimizer_kwargs=kw)
    assert past_edge.diverged


def test_grids_contain_the_papers_values_and_quick_grids_lie_inside():
    assert 50.0 in [s.lr for s in GRIDS["completion"]["polargrad"]]  # the lr once quoted for PolarGrad, shown to diverge
    assert 15.0 in [s.lr for s in GRIDS["completion"]["polargrad"]]  # the authors' script
    for kind, grids in QUICK_GRIDS.items():
        for name, g in grids.items():
            full = sorted(s.lr for s in GRIDS[kind][name])
            assert all(full[0] <= s.lr <= full[-1] for s in g), (kind, name)


def _run(errors, diverged=False):
    return Run("x", None, 1.0, 1.0, None, errors[-1], errors, errors, 0.0, diverged=diverged)


def test_tail_mean_key_ranks_by_the_last_tenth_and_puts_divergence_last():
    noisy_low = _run([10.0] * 90 + [1.0, 3.0] * 5)  # tail mean 2, last point 3
    steady = _run([10.0] * 90 + [2.5] * 10)  # tail mean 2.5, last point 2.5
    assert tail_mean_key(noisy_low) < tail_mean_key(steady)
    assert tail_mean_key(_run([0.1], diverged=True)) > tail_mean_key(steady)


def _payload(runs, steps=100, tol=1e-6, grids=None):
    grids = grids or {n: [{"lr": 0.5 * r["lr"]}, {"lr": r["lr"]}, {"lr": 2 * r["lr"]}] for n, r in runs.items()}
    out = []
    for name, r in runs.items():
        errs = r["errors"]
        out.append({"optimizer": name, "kappa": None, "lr": r["lr"], "best": True, "diverged": False,
                    "iters_to_tol": r.get("iters"), "final_error": errs[-1], "final_loss": errs[-1], "errors": errs,
                    "losses": errs})
    return {"config": {"steps": steps, "tolerance": tol, "seed": 0, "small": True, "quick": True, "grids": grids},
            "runs": out, "plots": []}


@pytest.mark.parametrize("pg_iters, adam_iters, holds", [(30, 130, "yes"), (300, 130, "no"), (None, 130, "no")])
def test_completion_verdict_follows_steps_to_tolerance(pg_iters, adam_iters, holds):
    runs = {"polargrad": {"lr": 4.0, "iters": pg_iters, "errors": [1.0, 1e-7 if pg_iters else 1e-3]},
            "muon": {"lr": 0.03, "iters": None, "errors": [1.0, 3e-4]},
            "adam": {"lr": 0.1, "iters": adam_iters, "errors": [1.0, 1e-9]}}
    res = _completion_summary({"completion": _payload(runs)}, True)
    assert res.claims[0].holds == holds
    assert res.claims[1].holds == "yes"  # Muon never reached the tolerance


def test_logreg_verdict_needs_a_clear_margin():
    def payload(pg, adam):
        return {"logreg": _payload({"polargrad": {"lr": 1e-6, "errors": [9.0] * 90 + [pg] * 10},
                                    "muon": {"lr": 0.01, "errors": [9.0] * 90 + [5.0] * 10},
                                    "adam": {"lr": 5e-3, "errors": [9.0] * 90 + [adam] * 10}})}
    assert _logreg_summary(payload(1.0, 2.0), True).claims[0].holds == "yes"
    assert _logreg_summary(payload(2.0, 1.0), True).claims[0].holds == "no"
    assert _logreg_summary(payload(1.0, 1.005), True).claims[0].holds == "partly"  # within 1%: a tie


def test_quick_reproduce_runs_logreg_and_completion_sections(tmp_path):
    path = reproduce(tmp_path / "rep", quick=True, progress=False, overrides={"steps": 25},
                     sections=["muonlab.experiments.polargrad_problems_report:LOGREG_SECTION",
                               "muonlab.experiments.polargrad_problems_report:COMPLETION_SECTION"])
    text = path.read_text()
    assert "| logreg | PolarSGD reaches a lower training loss than Muon and Adam" in text
    assert "| completion | PolarGrad converges fastest on low-rank matrix completion." in text
    cfg = json.loads((path.parent / "completion" / "results.json").read_text())["config"]
    assert cfg["small"] and cfg["quick"] and cfg["selection"] == "run_key"
    scaled = [s.lr * _smallscale("completion") for s in QUICK_GRIDS["completion"]["polargrad"]]
    assert [g["lr"] for g in cfg["grids"]["polargrad"]] == pytest.approx(scaled)
    runs = json.loads((path.parent / "logreg" / "results.json").read_text())["runs"]
    assert sum(r["best"] for r in runs) == 3 and all(math.isfinite(r["final_loss"]) for r in runs)
