"""The learning-rate schedule: linear warm-up, then cosine down to ``min_ratio`` of the peak.

The multiplier is a pure function of (step, total steps, warm-up length), so a resumed run sets the same lr at every
step as one that never stopped; the checkpoint keeps only the warm-up length the run started with (see
checkpoint.py). ``muonlab.tasks.lm.train`` re-exports these names.
"""

from __future__ import annotations

import math

import torch


def default_warmup(warmup_steps: int | None, total: int) -> int:
    """The warm-up length: ``--warmup-steps`` when given, else 5% of the run (at least one step)."""
    return warmup_steps if warmup_steps is not None else max(1, total // 20)


def lr_multiplier(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warm-up over `warmup` steps, then cosine from 1 down to `min_ratio` at the last step."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup - 1)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def set_lr(optimizer: torch.optim.Optimizer, multiplier: float) -> None:
    """Scale every group's lr alike: ``initial_lr`` (set by build_optimizer) times the multiplier."""
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * multiplier
