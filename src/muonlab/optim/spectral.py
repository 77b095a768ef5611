"""The U Σᵖ Vᵀ family of work D (Qi et al., arXiv 2602.04669): Ψ_p of a moment, p ∈ [0, 1].

Ψ_p(O) = U Σᵖ Vᵀ for O = U Σ Vᵀ (p = 1: O itself, p = 0: the polar factor). On matrices

    W ← (1 − ηλ)W − η s Ψ_p(O),

with O from one of two moments:

- :class:`SpectralSGD` (mSGD p=1, mSGDS ½, mSGDQ ¼, mSGDZ 0):  M ← μM + G,  O = M  (μ = 0.9, no Nesterov);
- :class:`SpectralAdam` (Adam p=1, AdamS, AdamQ, AdamZ 0):  O = m̂/(√v̂ + ε), bias-corrected, β = (0.9, 0.95).

The shape scale s is √max(1, rows/cols) for p = 0 (Muon's) and 1 for p > 0 (work D does not
rescale Ψ_½ or Ψ_¼), unless ``adjust_lr_fn`` says otherwise.

How Ψ_p is computed (``method="auto"``, the default):

- p = 0: Muon's default polar iteration (Polar Express from G/‖GGᵀ‖_F^{1/2}, 4 steps), so mSGDZ
  costs what Muon costs. ``ns_coefficients``/``ns_steps`` (alias ``steps``) and ``polar_dtype``
  choose another, as in :class:`muonlab.Muon`: given without ``method`` they mean Keller's
  Newton–Schulz with those settings, e.g. work D's trained setting (Keller's quintic × 15 in bf16):
  ``SpectralSGD(params, lr, p=0, method="newton_schulz", ns_steps=15, polar_dtype=torch.bfloat16)``.
- 0 < p < 1, p a multiple of 1/8 (½, ¼, …): :func:`muonlab.spectral_power`'s matmul-only
  ``"gram"`` method (staged Polar Express iterations on the Gram matrix; ``power_steps`` sets the
  steps per stage, default (5, 3) for p = ½ and (5, 3, 2) for p = ¼: ≈ 0.3% error at κ ≤ 100 in
  float32; its cost against Muon's step: ``muonlab bench family``, BENCHMARKS.md); other p: SVD on CPU, the
  coupled Newton inverse root on CUDA. ``method="svd"`` gives the exact power.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import torch

from muonlab.linalg import POLAR_METHODS, POWER_METHODS, spectral_power
from muonlab.linalg.power import check_stage_steps, gram_stages, inverse_root_exponent
from muonlab.optim import pipeline as pl
from muonlab.optim.base import SpectralOptimizer
from muonlab.optim.muon import DEFAULT_METHOD as MUON_DEFAULT_METHOD
from muonlab.optim.settings import (
    PolarSettings,
    SpectralSettings,
    check_betas,
    check_nonnegative,
    check_unit_interval,
    polar_factor,
    resolve_ns_steps,
    spectral_common,
)

# method names that mean "the default" for p = 0 ("newton"/"gram" name Ψ_p methods, not polar ones)
_P0_DEFAULT_ALIASES = ("auto", "newton", "gram")


@dataclass(frozen=True, kw_only=True)
class PowerSettings(SpectralSettings):
    """A Ψ_p group's settings: the power ``p``, the Ψ_p ``method`` (for 0 < p < 1), its ``power_steps`` and
    ``polar_dtype``; for p = 0 ``polar`` is the polar iteration, its method made concrete as Muon's."""

    p: float
    method: str
    power_steps: int | tuple[int, ...] | None = None
    polar_dtype: torch.dtype | None = None


@dataclass(frozen=True, kw_only=True)
class SpectralSGDSettings(PowerSettings):
    momentum: float


@dataclass(frozen=True, kw_only=True)
class SpectralAdamSettings(PowerSettings):
    betas: tuple[float, float]
    eps: float


def p0_method(group: Mapping) -> str:
    """For p = 0: the polar method, an alias of the default made concrete as :class:`muonlab.Muon` does."""
    if group["method"] not in _P0_DEFAULT_ALIASES:
        return group["method"]
    explicit_ns = group.get("ns_coefficients") is not None or group.get("ns_steps") is not None
    return "newton_schulz" if explicit_ns else MUON_DEFAULT_METHOD


def power_fields(group: Mapping, where: str) -> dict:
    """Check the Ψ_p keys of a group; the :class:`PowerSettings` fields (besides the shared ones) they give."""
    p = group["p"]
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
        raise ValueError(f"{where}p must be a number in [0, 1], got {p!r}")
    method = group["method"]
    allowed = POLAR_METHODS + ("newton", "gram") if p == 0 else POWER_METHODS
    if method not in allowed:
        raise ValueError(f"{where}method must be one of {', '.join(allowed)} for p={p}; got {method!r}")
    if method == "newton" and 0 < p < 1:
        try:
            inverse_root_exponent(float(p))
        except ValueError as err:
            raise ValueError(f"{where}{err}") from None
    if method == "gram" and 0 < p < 1 and gram_stages(float(p)) is None:
        raise ValueError(f"{where}method 'gram' needs p a multiple of 1/8 (e.g. 0.5, 0.25); got p={p!r}")
    polar = None
    if p == 0:
        polar = PolarSettings.from_group(group, where, method=p0_method(group))
    elif group.get("ns_coefficients") is not None or group.get("ns_steps") is not None:
        raise ValueError(
            f"{where}ns_coefficients/ns_steps set the polar iteration of p = 0; for p={p} use power_steps "
            "(steps per stage of method 'gram')"
        )
    power_steps = group.get("power_steps")
    if power_steps is not None:
        stages = gram_stages(float(p))
        if stages is None or method not in ("auto", "gram"):
            raise ValueError(f"{where}power_steps apply to method 'gram' with p a multiple of 1/8 in (0, 1); got p={p!r}, "
                             f"method={method!r}")
        try:
            check_stage_steps(power_steps, stages)
        except ValueError as err:
            raise ValueError(f"{where}power_{err}") from None
        if not isinstance(power_steps, int):
            power_steps = tuple(power_steps)
    return dict(p=p, method=method, power_steps=power_steps, polar_dtype=group.get("polar_dtype"), polar=polar)


def default_scale_rule(p: float, adjust_lr_fn: str | None) -> str:
    """Work D's shape scale: Muon's √max(1, rows/cols) for p = 0, none for p > 0."""
    if adjust_lr_fn is not None:
        return adjust_lr_fn
    return "original" if p == 0 else "none"


class _PowerTransform(SpectralOptimizer):
    """Shared transform: Ψ_p of each block (the input itself for p = 1)."""

    def transform(self, x, settings, *, overwrite=False):
        p = settings.p
        if p == 1:
            return x
        if p == 0:
            return polar_factor(x, settings.polar)
        return spectral_power(x, p, settings.method, settings.polar_dtype, steps=settings.power_steps,
                              check_finite=False)


def _polar_options(
    ns_steps: int | None, steps: int | None, ns_coefficients: Sequence[float] | None, power_steps
) -> dict:
    """The polar/power iteration keys of a group (``steps`` is an alias of ``ns_steps``)."""
    return dict(
        ns_steps=resolve_ns_steps(ns_steps, steps),
        ns_coefficients=tuple(ns_coefficients) if ns_coefficients is not None else None,
        power_steps=power_steps,
    )


class SpectralSGD(_PowerTransform):
    """mSGD family: M ← μM + G, W ← (1 − ηλ)W − η s Ψ_p(M). Args: ``lr``, ``p`` (required), ``momentum``
    (0.9), ``weight_decay`` (0), ``method`` (``"auto"``); keyword-only ``adjust_lr_fn`` (default by p),
    ``polar_dtype``, ``ns_steps`` (alias ``steps``) and ``ns_coefficients`` (the polar iteration of
    p = 0, as in :class:`muonlab.Muon`), ``power_steps`` (steps per stage of Ψ_p's ``"gram"`` method),
    and the AdamW-part / shape / policy options of :class:`muonlab.Muon`."""

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
        ns_steps: int | None = None,
        ns_coefficients: Sequence[float] | None = None,
        steps: int | None = None,
        power_steps: int | Sequence[int] | None = None,
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
            **_polar_options(ns_steps, steps, ns_coefficients, power_steps),
        )
        defaults["adjust_lr_fn"] = default_scale_rule(p, adjust_lr_fn)
        super().__init__(params, defaults, **options)

    def spectral_settings(self, group: Mapping, where: str) -> SpectralSGDSettings:
        common = spectral_common(group, where)
        check_unit_interval(group["momentum"], f"{where}momentum")
        return SpectralSGDSettings(**common, **power_fields(group, where), momentum=group["momentum"])

    def spectral_inputs(self, ctx, params, grads):
        bufs = ctx.buffers(params)
        torch._foreach_mul_(bufs, ctx.settings.momentum)
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
        ns_steps: int | None = None,
        ns_coefficients: Sequence[float] | None = None,
        steps: int | None = None,
        power_steps: int | Sequence[int] | None = None,
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
            **_polar_options(ns_steps, steps, ns_coefficients, power_steps),
        )
        defaults["adjust_lr_fn"] = default_scale_rule(p, adjust_lr_fn)
        super().__init__(params, defaults, **options)

    def spectral_settings(self, group: Mapping, where: str) -> SpectralAdamSettings:
        common = spectral_common(group, where)
        check_betas(group["betas"], f"{where}betas")
        check_nonnegative(group["eps"], f"{where}eps")
        return SpectralAdamSettings(**common, **power_fields(group, where), betas=tuple(group["betas"]),
                                    eps=group["eps"])

    # eager under torch.compile(opt.step), as the AdamW part: Python-int step counts (see SpectralOptimizer._adamw_step)
    @torch.compiler.disable
    def spectral_inputs(self, ctx, params, grads):
        exp_avgs = ctx.buffers(params, "exp_avg")
        exp_avg_sqs = ctx.buffers(params, "exp_avg_sq")
        steps = ctx.count_steps(params)
        beta1, beta2 = ctx.settings.betas
        return pl.adam_direction(grads, exp_avgs, exp_avg_sqs, steps, beta1=beta1, beta2=beta2, eps=ctx.settings.eps)
