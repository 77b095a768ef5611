"""One runner for every experiment: optimizer × setting × step-size grid → runs with loss curves.

A *task* is any object with ``loss_and_grads(params) -> (loss, grads)`` (closed-form gradients) and
``error_from_loss(loss) -> float`` (the quantity compared with the tolerance: relative error, relative excess loss,
relative gap). The runner owns the loop: write the gradients into ``p.grad``, call the optimizer, step the schedule.

Step-size schedules are geometric, η_t = η₀ ρᵗ (``torch.optim.lr_scheduler.ExponentialLR``); ρ = 1 is a constant step.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

import torch

GD = "gd"


@dataclass(frozen=True)
class StepSize:
    """η_t = lr · gammaᵗ."""

    lr: float
    gamma: float = 1.0

    def label(self) -> str:
        return f"lr={self.lr:g}" + ("" if self.gamma == 1.0 else f", ρ={self.gamma:g}")


def grid(lrs, gammas=(1.0,)) -> list[StepSize]:
    return [StepSize(float(lr), float(g)) for lr in lrs for g in gammas]


def known_optimizers() -> set[str]:
    """``gd`` plus every name :func:`muonlab.make_optimizer` accepts."""
    from muonlab.optim.registry import OPTIMIZERS

    return {GD, *OPTIMIZERS}


def build_optimizer(name: str, params: list[torch.Tensor], lr: float, **kwargs) -> torch.optim.Optimizer:
    """``gd`` = plain gradient descent (torch.optim.SGD without momentum); any other name goes to make_optimizer."""
    if name == GD:
        return torch.optim.SGD(params, lr=lr, momentum=0.0)
    from muonlab import make_optimizer

    return make_optimizer(name, params, lr=lr, **kwargs)


@dataclass
class Run:
    optimizer: str
    kappa: float | None
    lr: float
    gamma: float
    iters_to_tol: int | None
    final_loss: float
    losses: list[float]
    errors: list[float]
    wall_s: float
    diverged: bool = False
    record_every: int = 1
    extra: dict = field(default_factory=dict)
    best: bool = False

    def to_json(self) -> dict:
        return {
            "optimizer": self.optimizer,
            "kappa": self.kappa,
            "lr": self.lr,
            "gamma": self.gamma,
            "iters_to_tol": self.iters_to_tol,
            "final_loss": self.final_loss,
            "final_error": self.errors[-1] if self.errors else None,
            "diverged": self.diverged,
            "best": self.best,
            "wall_s": self.wall_s,
            "record_every": self.record_every,
            "losses": self.losses,
            "errors": self.errors,
            "extra": self.extra,
        }


def _thin(values: list[float], every: int) -> list[float]:
    if every <= 1:
        return list(values)
    out = values[::every]
    if (len(values) - 1) % every:
        out.append(values[-1])
    return out


def run_one(
    task,
    params: list[torch.Tensor],
    optimizer: str,
    step: StepSize,
    *,
    steps: int,
    tol: float | None = None,
    stop_at_tol: bool = True,
    kappa: float | None = None,
    optimizer_kwargs: dict | None = None,
    probe: Callable[[list[torch.Tensor], list[torch.Tensor]], dict] | None = None,
    probe_every: int = 1,
    max_points: int = 2000,
    divergence_factor: float = 1e8,
    min_lr_ratio: float = 1e-10,
    progress=None,
) -> Run:
    """Optimize ``params`` (modified in place) for at most ``steps`` iterations.

    Iteration t records the loss *before* step t, so ``losses[0]`` is the starting loss and ``iters_to_tol`` is the
    number of optimizer steps taken when the error first reaches ``tol``. A loss that is not finite or exceeds
    ``divergence_factor`` × the starting loss stops the run and marks it diverged.
    ``probe(params, grads)`` returns named scalars (or lists) recorded every ``probe_every`` iterations.
    A decaying schedule stops once η_t < ``min_lr_ratio``·η₀ (the iterate can no longer move).
    ``progress`` (a tqdm bar or None) is advanced by one per step, and by the unused budget when the run stops early.
    """
    params = [p.detach().clone().requires_grad_(True) for p in params]
    opt = build_optimizer(optimizer, params, step.lr, **(optimizer_kwargs or {}))
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=step.gamma) if step.gamma != 1.0 else None
    losses: list[float] = []
    errors: list[float] = []
    extra: dict[str, list] = {}
    iters_to_tol = None
    diverged = False
    start = time.perf_counter()
    first_loss = None
    taken = 0  # optimizer steps taken
    for t in range(steps + 1):
        with torch.no_grad():
            loss, grads = task.loss_and_grads(params)
        if first_loss is None:
            first_loss = abs(loss) if loss != 0 else 1.0
        if not math.isfinite(loss) or abs(loss) > divergence_factor * first_loss:
            diverged = True
            break
        err = task.error_from_loss(loss)
        losses.append(loss)
        errors.append(err)
        if probe is not None and t % probe_every == 0:
            for key, value in probe(params, grads).items():
                extra.setdefault(key, []).append(value)
        if tol is not None and iters_to_tol is None and err <= tol:
            iters_to_tol = t
            if stop_at_tol:
                break
        if t == steps:
            break
        for p, g in zip(params, grads):
            p.grad = g
        opt.step()
        taken += 1
        if progress is not None:
            progress.update(1)
        if sched is not None:
            sched.step()
            if step.gamma ** (t + 1) < min_lr_ratio:
                break
    wall = time.perf_counter() - start
    if progress is not None and taken < steps:
        # a run that stopped early (tolerance, divergence, schedule floor) skips the rest of its budget, so the bar
        # (whose total is the sum of budgets) ends at 100% and its time estimate is not inflated by unused budget
        progress.update(steps - taken)
    every = max(1, math.ceil(len(losses) / max_points))
    if probe is not None:
        extra["probe_every"] = probe_every
    return Run(
        optimizer=optimizer,
        kappa=kappa,
        lr=step.lr,
        gamma=step.gamma,
        iters_to_tol=iters_to_tol,
        final_loss=losses[-1] if losses else float("nan"),
        losses=_thin(losses, every),
        errors=_thin(errors, every),
        wall_s=wall,
        diverged=diverged,
        record_every=every,
        extra=extra,
    )


@contextmanager
def torch_threads(n: int | None):
    """Run small problems single-threaded: on a shared 2-core machine intra-op threads cost more than they save."""
    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def run_key(run: Run) -> tuple:
    """Best run: reaches the tolerance in the fewest steps; otherwise the lowest final error; diverged runs last."""
    reached = run.iters_to_tol is not None
    final_err = run.errors[-1] if run.errors else math.inf
    return (run.diverged, not reached, run.iters_to_tol if reached else 0, final_err)


def final_key(run: Run) -> tuple:
    """Best run by the final error alone (fixed-budget comparisons); diverged runs last."""
    return (run.diverged, run.errors[-1] if run.errors else math.inf)


def mark_best(runs: list[Run], key=run_key) -> list[Run]:
    """Flag the best run per (optimizer, κ) under ``key`` (default: fewest iterations to the tolerance)."""
    groups: dict[tuple, list[Run]] = {}
    for r in runs:
        groups.setdefault((r.optimizer, r.kappa), []).append(r)
    for group in groups.values():
        for r in group:
            r.best = False
        min(group, key=key).best = True
    return runs


def best_runs(runs: list[Run]) -> dict[tuple[str, float | None], Run]:
    return {(r.optimizer, r.kappa): r for r in runs if r.best}
