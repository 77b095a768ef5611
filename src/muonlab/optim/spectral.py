"""The U Σᵖ Vᵀ family of work D (Qi et al., arXiv 2602.04669): Ψ_p of a moment, p ∈ [0, 1].

Ψ_p(O) = U Σᵖ Vᵀ for O = U Σ Vᵀ (p = 1: O itself, p = 0: the polar factor). On matrices

    W ← (1 − ηλ)W − η s Ψ_p(O),

with O from one of two moments:

- :class:`SpectralSGD` (mSGD p=1, mSGDS ½, mSGDQ ¼, mSGDZ 0):  M ← μM + G,  O = M  (μ = 0.9, no Nesterov);
- :class:`SpectralAdam` (Adam p=1, AdamS, AdamQ, AdamZ 0):  O = m̂/(√v̂ + ε), bias-corrected, β = (0.9, 0.95).

The shape scale s is √max(1, rows/cols) for p = 0 (Muon's) and 1 for p > 0 (work D does not
rescale Ψ_½ or Ψ_¼), unless ``adjust_lr_fn`` says otherwise. Ψ_p comes from
:func:`muonlab.spectral_power` (``method="auto"``: SVD on CPU, the matmul-only coupled Newton
iteration on CUDA; for p = 0 the polar method, Polar Express by default).
"""

from __future__ import annotations

from typing import Iterable

import torch

from muonlab.linalg import POLAR_METHODS, POWER_METHODS, spectral_power
from muonlab.linalg.power import inverse_root_exponent
from muonlab.optim import pipeline as pl
from muonlab.optim.base import (
    SpectralOptimizer,
    check_betas,
    check_nonnegative,
    check_unit_interval,
)


def _check_power(group: dict, where: str) -> None:
    p = group["p"]
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
        raise ValueError(f"{where}p must be a number in [0, 1], got {p!r}")
    method = group["method"]
    allowed = POLAR_METHODS + ("newton",) if p == 0 else POWER_METHODS
    if method not in allowed:
        raise ValueError(f"{where}method must be one of {', '.join(allowed)} for p={p}; got {method!r}")
    if method == "newton" and 0 < p < 1:
        try:
            inverse_root_exponent(float(p))
        except ValueError as err:
            raise ValueError(f"{where}{err}") from None
    pl.check_adjust_lr_fn(group["adjust_lr_fn"], where)


def default_scale_rule(p: float, adjust_lr_fn: str | None) -> str:
    """Work D's shape scale: Muon's √max(1, rows/cols) for p = 0, none for p > 0."""
    if adjust_lr_fn is not None:
        return adjust_lr_fn
    return "original" if p == 0 else "none"


class _PowerTransform(SpectralOptimizer):
    """Shared transform: Ψ_p of each block (the input itself for p = 1)."""

    def transform(self, x, group):
        p = group["p"]
        if p == 1:
            return x
        if p == 0:
            method = "auto" if group["method"] == "newton" else group["method"]
            return self._polar(x, dict(group, method=method))
        return spectral_power(x, p, group["method"], group.get("polar_dtype"), check_finite=False)


class SpectralSGD(_PowerTransform):
    """mSGD family: M ← μM + G, W ← (1 − ηλ)W − η s Ψ_p(M). Args: ``lr``, ``p`` (required), ``momentum``
    (0.9), ``weight_decay`` (0), ``method`` (``"auto"``); keyword-only ``adjust_lr_fn`` (default by p),
    ``polar_dtype``, and the AdamW-part / shape / policy options of :class:`muonlab.Muon`."""

    def __init__(
        self,
        params: Iterable,
        lr: float | torch.Tensor,
        p: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        method: str = "auto",
        *,
        adjust_lr_fn: str | None = None,
        polar_dtype: torch.dtype | None = None,
        **options,
    ) -> None:
        defaults = dict(
            lr=lr,
            p=p,
            momentum=momentum,
            weight_decay=weight_decay,
            method=method,
            adjust_lr_fn=adjust_lr_fn,
            polar_dtype=polar_dtype,
        )
        self.check_spectral_group(defaults, "")
        defaults["adjust_lr_fn"] = default_scale_rule(p, adjust_lr_fn)
        super().__init__(params, defaults, **options)

    def check_spectral_group(self, group: dict, where: str) -> None:
        super().check_spectral_group(group, where)
        check_unit_interval(group["momentum"], f"{where}momentum")
        _check_power(group, where)

    def spectral_inputs(self, group, params, grads):
        bufs = self._buffers(params)
        torch._foreach_mul_(bufs, group["momentum"])
        torch._foreach_add_(bufs, grads)
        return bufs


class SpectralAdam(_PowerTransform):
    """Adam family: O = m̂/(√v̂ + ε), W ← (1 − ηλ)W − η s Ψ_p(O). Args: ``lr``, ``p`` (required),
    ``betas`` ((0.9, 0.95)), ``eps`` (1e-8), ``weight_decay`` (0, decoupled), ``method`` (``"auto"``);
    keyword-only options as :class:`SpectralSGD`. p = 1 is AdamW on the matrices."""

    def __init__(
        self,
        params: Iterable,
        lr: float | torch.Tensor,
        p: float,
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        method: str = "auto",
        *,
        adjust_lr_fn: str | None = None,
        polar_dtype: torch.dtype | None = None,
        **options,
    ) -> None:
        defaults = dict(
            lr=lr,
            p=p,
            betas=tuple(betas) if isinstance(betas, list) else betas,
            eps=eps,
            weight_decay=weight_decay,
            method=method,
            adjust_lr_fn=adjust_lr_fn,
            polar_dtype=polar_dtype,
        )
        self.check_spectral_group(defaults, "")
        defaults["adjust_lr_fn"] = default_scale_rule(p, adjust_lr_fn)
        super().__init__(params, defaults, **options)

    def check_spectral_group(self, group: dict, where: str) -> None:
        super().check_spectral_group(group, where)
        check_betas(group["betas"], f"{where}betas")
        check_nonnegative(group["eps"], f"{where}eps")
        _check_power(group, where)

    def spectral_inputs(self, group, params, grads):
        exp_avgs = self._buffers(params, "exp_avg")
        exp_avg_sqs = self._buffers(params, "exp_avg_sq")
        steps = self._count_steps(params)
        beta1, beta2 = group["betas"]
        return pl.adam_direction(grads, exp_avgs, exp_avg_sqs, steps, beta1=beta1, beta2=beta2, eps=group["eps"])
