"""Learning-rate schedulers with absolute peaks on an optimizer with two parts.

A muonlab optimizer's param groups carry two kinds of learning rate: the spectral groups' ``lr`` (0.02 is usual for
Muon) and the AdamW groups' (``adamw_lr``, 3e-4 by default). Relative schedulers (LambdaLR, CosineAnnealingLR,
Hugging Face's ``get_*_schedule``) multiply every group's own initial lr and keep the ratio. Schedulers that *set*
lrs — ``OneCycleLR(opt, max_lr=0.02)``, ``CyclicLR`` — give every group the same absolute value unless handed one
value per group: the AdamW part would peak at 0.02 too, 65× its own default. :func:`peak_lrs` builds that list.
"""

from __future__ import annotations

import torch


def is_spectral(group: dict) -> bool:
    """True for a param group that gets the spectral (matrix) update, False for the AdamW part and for groups of
    other optimizers."""
    return group.get("rule", group.get("update")) == "spectral"


def _number(value) -> float:
    return float(value.item()) if isinstance(value, torch.Tensor) else float(value)


def peak_lrs(optimizer: torch.optim.Optimizer, matrix: float, adamw: float | None = None) -> list[float]:
    """One peak lr per param group, for ``max_lr=`` of OneCycleLR/CyclicLR-style schedulers.

    Spectral groups peak at ``matrix``, AdamW groups at ``adamw`` (default: the optimizer's ``adamw_lr``); a group
    whose lr was set apart from the optimizer's default keeps its ratio to it (a group at half the default lr peaks at
    ``matrix / 2``). Call it before creating the scheduler (which overwrites the groups' lrs).
    """
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    defaults = optimizer.defaults
    if "adamw_lr" not in defaults or "lr" not in defaults:
        raise ValueError(f"peak_lrs needs a muonlab optimizer (spectral and AdamW parts); got {type(optimizer).__name__}")
    for name, value in (("matrix", matrix), ("adamw", adamw)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0):
            raise ValueError(f"{name} must be a positive number, got {value!r}")
    adamw = _number(defaults["adamw_lr"]) if adamw is None else adamw
    peaks = []
    for group in optimizer.param_groups:
        if is_spectral(group):
            base, peak = _number(defaults["lr"]), matrix
            own = _number(group["lr"])
        else:
            base, peak = _number(defaults["adamw_lr"]), adamw
            own = _number(group.get("adamw_lr", group["lr"]))
        peaks.append(peak * own / base if base > 0 else peak)
    return peaks
