"""PNG plots of experiment results (matplotlib, Agg backend). Each function takes runs and a path and returns the path."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from muonlab.experiments.runner import Run  # noqa: E402


def _save(fig, title: str, path):
    """Title, tighten, write the PNG and free the figure (every plot ends here)."""
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

COLORS = {
    "simplified_muon": "tab:red",
    "gd": "tab:blue",
    "adam": "tab:green",
    "muon": "tab:orange",
    "polargrad": "tab:purple",
}


def _color(name: str):
    return COLORS.get(name)


def _iters(run: Run) -> list[int]:
    n = len(run.errors)
    return [min(i * run.record_every, (n - 1) * run.record_every) for i in range(n)]


def _positive(values):
    return [v if v > 0 else float("nan") for v in values]


def error_curves_per_kappa(best: dict, path: Path, *, ylabel: str, tol: float | None, title: str) -> Path:
    kappas = sorted({k for (_, k) in best}, key=lambda k: (k is None, k))
    fig, axes = plt.subplots(1, len(kappas), figsize=(4 * len(kappas), 3.4), squeeze=False, sharey=True)
    for ax, kappa in zip(axes[0], kappas):
        for (name, k), run in sorted(best.items(), key=lambda kv: kv[0][0]):
            if k != kappa:
                continue
            ax.plot(_iters(run), _positive(run.errors), label=f"{name} ({run_label(run)})", color=_color(name))
        if tol is not None:
            ax.axhline(tol, color="gray", ls=":", lw=1)
        ax.set_yscale("log")
        ax.set_xscale("symlog", linthresh=10)
        ax.set_xlabel("iteration")
        ax.set_title(f"κ = {kappa:g}" if kappa is not None else "")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel(ylabel)
    return _save(fig, title, path)


def run_label(run: Run) -> str:
    return f"lr {run.lr:g}" + ("" if run.gamma == 1.0 else f", ρ {run.gamma:g}")


def iterations_vs_kappa(best: dict, budgets: dict[str, int], path: Path, *, title: str) -> Path:
    """Log–log iterations to tolerance; runs that never reached it are drawn hollow at their step budget."""
    fig, ax = plt.subplots(figsize=(5, 3.8))
    names = sorted({n for (n, _) in best})
    for name in names:
        pts = sorted((k, r) for (n, k), r in best.items() if n == name)
        ks = [k for k, _ in pts]
        ys = [r.iters_to_tol if r.iters_to_tol is not None else float("nan") for _, r in pts]
        ax.plot(ks, [max(y, 1) for y in ys], "o-", color=_color(name), label=name)
        missed = [(k, budgets.get(name, 0)) for k, r in pts if r.iters_to_tol is None]
        if missed:
            ax.plot([k for k, _ in missed], [b for _, b in missed], "^", mfc="none", color=_color(name),
                    label=f"{name}: not reached (> budget)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("condition number κ")
    ax.set_ylabel("iterations to tolerance")
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def trajectories(panels: list[tuple[str, list[list[float]], list[float], int]], path: Path, *, ylabel: str, title: str) -> Path:
    """One panel per (label, values[t][i], targets[i], every): each coordinate's scalar sequence over iterations."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.6), squeeze=False)
    for ax, (label, values, targets, every) in zip(axes[0], panels):
        if not values:
            continue
        cmap = plt.get_cmap("viridis")
        r = len(values[0])
        ts = [i * every for i in range(len(values))]
        for i in range(r):
            series = [abs(v[i] - targets[i]) / abs(targets[i]) for v in values]
            ax.plot(ts, _positive(series), color=cmap(i / max(r - 1, 1)), label=f"target {targets[i]:.3g}")
        ax.set_yscale("log")
        ax.set_xlabel("iteration")
        ax.set_title(label, fontsize=9)
        ax.legend(fontsize=6)
    axes[0][0].set_ylabel(ylabel)
    return _save(fig, title, path)


def gap_with_gradient_stats(best: list[Run], path: Path, *, title: str, gap_label: str) -> Path:
    """Work B: objective (gap) per optimizer, with the gradient's condition number and nuclear norm over time."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for run in best:
        c = _color(run.optimizer)
        label = f"{run.optimizer} ({run_label(run)})"
        axes[0].plot(_iters(run), _positive(run.errors), color=c, label=label)
        every = run.extra.get("probe_every", 1)
        cond = run.extra.get("grad_condition", [])
        nuc = run.extra.get("grad_nuclear_norm", [])
        axes[1].plot([i * every for i in range(len(cond))], _positive(cond), color=c, label=label)
        axes[2].plot([i * every for i in range(len(nuc))], _positive(nuc), color=c, label=label)
    for ax, ylabel in zip(axes, (gap_label, r"$\kappa(\nabla f) = \sigma_{\max} / \sigma_{\min}$", r"nuclear norm $\|\nabla f\|_*$")):
        ax.set_yscale("log")
        ax.set_xlabel("iteration")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
    return _save(fig, title, path)


def finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)
