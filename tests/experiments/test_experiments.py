"""The runner, the theory properties the experiments rely on, the CLI's errors, and a tiny end-to-end reproduce."""

import json
import math

import pytest
import torch

from muonlab.cli import main
from muonlab.experiments.runner import GD, StepSize, best_runs, mark_best, run_one
from muonlab.tasks.matfac import make_matfac
from muonlab.tasks.matrix_problems import QuadraticRegression


def small_quadratic(seed=0) -> QuadraticRegression:
    """Strongly convex f(X) = ½‖AXB − C‖²_F with A 30×8, B 4×20 Gaussian, float64."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(30, 8, dtype=torch.float64, generator=gen)
    b = torch.randn(4, 20, dtype=torch.float64, generator=gen)
    c = torch.randn(30, 20, dtype=torch.float64, generator=gen)
    return QuadraticRegression(a, b, c, seed=seed)


@pytest.fixture(autouse=True)
def _one_thread():
    from muonlab.experiments.runner import torch_threads

    with torch_threads(1):  # tiny problems: threads only add contention on a shared machine
        yield


# ---- runner ---------------------------------------------------------------------------------------------------


def test_runner_counts_iterations_to_tolerance_and_picks_the_best():
    task = make_matfac(10.0, m=10, n=8, rank=2, seed=0)
    start = task.random_start(torch.Generator().manual_seed(1))
    runs = [run_one(task, start, GD, StepSize(lr), steps=3000, tol=1e-6, kappa=10.0) for lr in (0.2, 0.6)]
    for r in runs:
        assert r.iters_to_tol is not None
        assert r.errors[-1] <= 1e-6 < r.errors[-2]  # stops at the first iterate within tolerance
        assert len(r.losses) == r.iters_to_tol + 1
        assert r.errors[-1] == pytest.approx(task.error_from_loss(r.final_loss))
    mark_best(runs)
    best = best_runs(runs)[(GD, 10.0)]
    assert best.lr == 0.6 and best.iters_to_tol < runs[0].iters_to_tol


def test_runner_flags_divergence_and_leaves_start_untouched():
    task = make_matfac(10.0, m=10, n=8, rank=2, seed=0)
    start = [p * 1e3 for p in task.random_start(torch.Generator().manual_seed(1))]
    copy = [p.clone() for p in start]
    r = run_one(task, start, GD, StepSize(10.0), steps=200, tol=1e-6)
    assert r.diverged and r.iters_to_tol is None and math.isfinite(r.final_loss)
    for p, q in zip(start, copy):
        assert torch.equal(p, q)


def test_simplified_muon_iterations_are_flat_in_kappa_while_gd_grows():
    counts = {}
    for kappa in (10.0, 1e3):
        task = make_matfac(kappa, m=20, n=16, rank=4, seed=0)
        start = task.random_start(torch.Generator().manual_seed(1))
        sm = run_one(task, start, "simplified_muon", StepSize(0.3, 0.9), steps=400, tol=1e-6,
                     optimizer_kwargs={"method": "svd"})
        gd = run_one(task, start, GD, StepSize(0.8), steps=700, tol=1e-6)
        counts[kappa] = (sm.iters_to_tol, gd.iters_to_tol)
    assert counts[10.0][0] is not None and counts[1e3][0] is not None
    assert max(counts[10.0][0], counts[1e3][0]) <= 1.5 * min(counts[10.0][0], counts[1e3][0])
    assert counts[10.0][1] is not None and counts[1e3][1] is None  # GD: > 700 steps at κ = 1e3


# ---- theory properties of work B's optimizers -------------------------------------------------------------------


def test_polargrad_constant_step_decreases_monotonically_and_linearly():
    task = small_quadratic()
    # stable step: η ≤ 1/L_op with L_op = max over ‖D‖_op ≤ 1 of ⟨D, H[D]⟩ ≤ L_F · min(m, n)
    lr = 1.0 / (task.smoothness * min(task.x_star.shape))
    run = run_one(task, task.start(), "polargrad", StepSize(lr), steps=600, tol=None,
                  optimizer_kwargs={"momentum": 0.0, "method": "svd"})
    gaps = [e for e in run.errors]
    assert all(b <= a * (1 + 1e-12) for a, b in zip(gaps, gaps[1:]))
    # linear: the gap contracts by a fixed factor over every block of 100 steps
    blocks = [gaps[i] for i in range(0, 601, 100)]
    ratios = [b / a for a, b in zip(blocks, blocks[1:]) if a > 1e-13]
    assert ratios and max(ratios) < 0.5


def test_muon_constant_lr_floor_scales_with_lr():
    """Without the nuclear-norm factor a constant step of fixed spectral size cannot settle: the gap stalls at a floor
    that shrinks with the lr (∝ lr² for the objective). Started near X* so both runs reach their floor."""
    task = small_quadratic()
    near = task.x_star + 0.05 * torch.randn(task.x_star.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    floors = {}
    for lr in (1e-2, 1e-3):
        run = run_one(task, [near], "muon", StepSize(lr), steps=1500, tol=None,
                      optimizer_kwargs={"weight_decay": 0.0, "momentum": 0.0, "nesterov": False})
        floors[lr] = sum(run.errors[-100:]) / 100
    assert floors[1e-3] > 1e-12  # stalls above zero
    assert floors[1e-2] > 10 * floors[1e-3]


# ---- CLI --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv, needle", [
    (["run", "nope"], "unknown experiment 'nope'"),
    (["run", "matfac", "--optimizers", "gd,adamx"], "unknown optimizer 'adamx'"),
    (["run", "matfac", "--kappas", "10,-3"], "--kappas"),
    (["run", "matfac", "--kappas", "0"], "--kappas"),
    (["run", "matfac", "--kappas", "ten"], "--kappas"),
    (["run", "matfac", "--steps", "0"], "--steps"),
])
def test_cli_bad_input_is_one_line_exit_2(argv, needle, capsys, tmp_path):
    out = tmp_path / "out"
    assert main(argv + ["--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_cli_unwritable_output_directory(capsys, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a directory should be")
    assert main(["run", "matfac", "--steps", "5", "--out", str(blocker / "sub" / "res")]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot create parent directory" in err and len(err.splitlines()) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["blocker"]


def test_cli_out_is_a_file(capsys, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["run", "matfac", "--steps", "5", "--out", str(f)]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert f.read_text() == "x"


def test_cli_run_writes_results_and_plots(tmp_path, capsys):
    out = tmp_path / "mf"
    code = main(["run", "matfac", "--optimizers", "simplified_muon,gd", "--kappas", "10,100", "--steps", "40",
                 "--quick", "--no-progress", "--out", str(out)])
    assert code == 0
    data = json.loads((out / "results.json").read_text())
    assert data["experiment"] == "matfac"
    assert {r["optimizer"] for r in data["runs"]} == {"simplified_muon", "gd"}
    assert {r["kappa"] for r in data["runs"]} == {10.0, 100.0}
    for r in data["runs"]:
        assert set(r) >= {"optimizer", "kappa", "lr", "iters_to_tol", "final_loss", "losses", "wall_s"}
        assert len(r["losses"]) <= 41 and all(isinstance(v, float) for v in r["losses"])
    assert sum(r["best"] for r in data["runs"]) == 4
    for name in ("loss_vs_iteration.png", "iterations_vs_kappa.png", "singular_trajectories.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    assert [p.name for p in tmp_path.iterdir()] == ["mf"]  # no temporary directory left behind


def test_interrupted_run_leaves_nothing(tmp_path, monkeypatch):
    from muonlab.experiments import kappa_sweeps

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(kappa_sweeps, "_finish", boom)
    assert main(["run", "matfac", "--kappas", "10", "--steps", "5", "--no-progress", "--out", str(tmp_path / "r")]) == 130
    assert list(tmp_path.iterdir()) == []


def test_tiny_reproduce_writes_a_report(tmp_path):
    from muonlab.experiments.report import reproduce

    path = reproduce(tmp_path / "rep", quick=True, progress=False, sections=["muonlab.experiments.kappa_sweeps_report:MATFAC_SECTION"],
                     overrides={"steps": 150, "kappas": [10.0, 100.0], "optimizers": ["simplified_muon", "gd"]})
    text = path.read_text()
    assert "| matfac | Simplified Muon needs a number of iterations independent of the condition number κ." in text
    assert "**yes**" in text  # simplified Muon is flat in κ even in 150 steps
    assert "![matfac/iterations_vs_kappa.png](matfac/iterations_vs_kappa.png)" in text
    assert (path.parent / "matfac" / "results.json").exists()
