"""The non-finite gradient policy: one fused check over all gradients before a step touches anything.

``on_nonfinite="skip"`` (default) skips the whole step with a warning naming the parameters, ``"raise"`` raises.
"""

from __future__ import annotations

import warnings
from collections import defaultdict

import torch

from muonlab.optim.groups import label
from muonlab.optim.state import local

NONFINITE_POLICIES = ("skip", "raise")


def check_policy(on_nonfinite: str) -> None:
    if on_nonfinite not in NONFINITE_POLICIES:
        raise ValueError(f"on_nonfinite must be one of {', '.join(NONFINITE_POLICIES)}; got {on_nonfinite!r}")


def all_finite(grads: list[torch.Tensor]) -> bool:
    """One host sync per device: no NaN/Inf in any gradient.

    On accelerators, max|g| per tensor in one foreach kernel. On CPU, min and max per tensor
    (``torch.aminmax``; both propagate NaN, and ±Inf shows in one of them): the same answer, and the
    CPU inf-norm kernel is much slower than aminmax on large gradients (BENCHMARKS.md, the step bench).
    """
    by_device: dict[torch.device, list[torch.Tensor]] = defaultdict(list)
    for g in map(local, grads):
        if g.numel():
            by_device[g.device].append(g)
    for device, device_grads in by_device.items():
        if device.type == "cpu":
            extremes = [v for g in device_grads for v in torch.aminmax(g)]
        else:
            extremes = torch._foreach_norm(device_grads, float("inf"))
        if not bool(torch.stack([v.float() for v in extremes]).isfinite().all()):
            return False
    return True


def handle_nonfinite(owner: str, param_groups: list[dict], on_nonfinite: str) -> None:
    """Raise, or warn that the step is skipped, naming every parameter with a non-finite gradient."""
    bad = []
    for group in param_groups:
        for i, p in enumerate(group["params"]):
            if p.grad is not None and not bool(torch.isfinite(local(p.grad)).all()):
                bad.append(label(group, i).removeprefix("parameter "))
    message = f"non-finite (NaN/Inf) gradient in {', '.join(bad)}"
    if on_nonfinite == "raise":
        raise FloatingPointError(f"{owner}: {message}")
    warnings.warn(
        f"{owner}: {message}; step skipped, parameters and optimizer state unchanged", RuntimeWarning, stacklevel=4
    )
