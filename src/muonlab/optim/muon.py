"""Muon for whole models: a drop-in for torch.optim.Muon that also takes every other parameter.

Update of a matrix W with gradient G (Keller Jordan's Muon; torch.optim.Muon's lerp form):

    M ← μM + (1 − μ)G                        (momentum_buffer)
    O = (1 − μ)G + μM  if nesterov else M
    W ← (1 − ηλ)W − η·s(A, B)·polar(O)      (decay with the unscaled lr, as torch.optim.Muon)

The lerp form differs from M ← μM + G only by the factor (1 − μ), which the polar factor removes.
Parameters that are not hidden matrices (embeddings, heads, biases, gains) go to the built-in
AdamW part; see :class:`muonlab.optim.base.SpectralOptimizer`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import torch

from muonlab.optim.base import SpectralOptimizer
from muonlab.optim.settings import (
    PolarSettings,
    SpectralSettings,
    check_bool,
    check_nonnegative,
    check_ns_steps,
    check_unit_interval,
    polar_factor,
    spectral_common,
)

# The polar method used when neither ``method`` nor ``ns_coefficients``/``ns_steps`` is given:
# Polar Express started from G/‖GGᵀ‖_F^{1/2} with its own derived schedule, 4 steps: singular values
# closer to 1 than Keller's quintic × 5 for fewer flops (σ ranges per method: ``muonlab bench step``,
# BENCHMARKS.md).
DEFAULT_METHOD = "polar_express_gram_norm"
TORCH_MUON_EPS = 1e-7


@dataclass(frozen=True, kw_only=True)
class MuonSettings(SpectralSettings):
    """A Muon matrix group's settings: momentum μ, Nesterov, the normalization's eps and the polar iteration."""

    momentum: float
    nesterov: bool
    eps: float
    polar: PolarSettings


def muon_defaults(lr, weight_decay, momentum, nesterov, ns_coefficients, eps, ns_steps, adjust_lr_fn, method,
                  polar_dtype) -> dict:
    """Muon's constructor arguments as group defaults; ``method`` None: Newton–Schulz when ``ns_coefficients`` or
    ``ns_steps`` are given (torch.optim.Muon's iteration), else :data:`DEFAULT_METHOD`."""
    check_ns_steps(ns_steps, "ns_steps")
    if method is None:
        method = "newton_schulz" if (ns_coefficients is not None or ns_steps is not None) else DEFAULT_METHOD
    return dict(
        lr=lr,
        weight_decay=weight_decay,
        momentum=momentum,
        nesterov=nesterov,
        ns_coefficients=tuple(ns_coefficients) if ns_coefficients is not None else None,
        eps=eps,
        ns_steps=ns_steps,
        adjust_lr_fn=adjust_lr_fn,
        method=method,
        polar_dtype=polar_dtype,
    )


class Muon(SpectralOptimizer):
    """Muon with Polar Express (Gram-normalized start, 4 steps) by default, an AdamW part for non-matrix parameters, any tensor shape.

    Args (torch.optim.Muon's, same order and meaning):
        params: parameters, param-group dicts (e.g. from :func:`muonlab.param_groups`, which sets each
            group's ``"kind"``) or ``model.named_parameters()``.
        lr: learning rate of the spectral part (default 1e-3, torch.optim.Muon's, kept so that a drop-in
            changes nothing). With the default shape scale every matrix moves by a spectral-norm step of
            lr·√max(1, A/B) per step, so 1e-3 trains very slowly from scratch: Keller Jordan's runs and the
            README's examples use 0.02. The AdamW part has its own lr (``adamw_lr``, 3e-4).
        weight_decay: decoupled decay λ of the spectral part, W ← (1 − ηλ)W with the unscaled lr (0.1).
        momentum: μ (0.95).  nesterov: use (1 − μ)G + μM (True).
        ns_coefficients, ns_steps: when given (and ``method`` is not), Muon runs exactly that
            Newton–Schulz quintic, like torch.optim.Muon (Keller's (3.4445, −4.775, 2.0315) × 5 by default).
        eps: added to ‖O‖_F in the normalization (1e-7). torch.optim.Muon divides by max(‖O‖_F, eps)
            instead of ‖O‖_F + eps: the two agree to relative 1e-7 (fp32 rounding) unless ‖O‖_F ≲ eps.
        adjust_lr_fn: shape scale s(A, B): None/"original" √max(1, A/B), "match_rms_adamw" 0.2√max(A, B),
            "spectral" √(A/B), "none" 1 — of each orthogonalized block (A×B after flattening / head split).

    Keyword-only extras:
        method: any :data:`muonlab.linalg.POLAR_METHODS` entry; default ``"polar_express_gram_norm"``
            (``"newton_schulz"`` when ``ns_coefficients``/``ns_steps`` are given). The iteration's precision
            follows the device (fp32 on CPU, bf16 matmuls on CUDA); ``polar_dtype`` overrides.
        adamw_lr, adamw_betas, adamw_eps, adamw_weight_decay: the AdamW part (Keller's auxiliary Adam:
            3e-4, (0.9, 0.95), 1e-10, 0).
        tensor_layout: ≥ 3-D parameters as one flattened (out, in·k…) matrix (``"flatten"``, conv filters)
            or a batch of their last two dims (``"batch"``, stacks of experts/heads). Per group.
        num_heads, split_sizes: orthogonalize row blocks separately (per-head attention projections;
            fused QKV: ``split_sizes`` along dim 0, each section split into ``num_heads``). Per group.
        on_nonfinite: ``"skip"`` (warn, leave everything untouched) or ``"raise"``.
        max_scratch_bytes: working memory one step may use on top of parameters, gradients and state.
            The step transforms and applies the matrices chunk by chunk, batching same-shape matrices up to
            a fifth of this (a batch has at most about five copies of itself alive); a matrix larger than that
            is done alone (two to four copies). Default: 3× the largest matrix (fp32) + 16 MiB — measured
            peaks in BENCHMARKS.md. Larger values batch more (fewer, larger kernels), smaller use less memory.
        compile: ``torch.compile`` the matrix transform (the polar iteration of each batch): compiled once
            per batch shape; the rest of the step stays eager. To compile a whole training step instead, see
            the README ("torch.compile").
        distributed: ``"auto"`` (default): DTensor parameters (FSDP2) are orthogonalized whole on one
            owner rank each; plain parameters with an initialized process group (DDP) have their
            matrix work split across ranks and all-gathered. ``"none"``: single process. A
            ProcessGroup or 1-D DeviceMesh: split the work of replicated parameters over that group.
            See :mod:`muonlab.distributed`.
    """

    def __init__(
        self,
        params: Iterable,
        lr: float | torch.Tensor = 1e-3,
        weight_decay: float = 0.1,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_coefficients: Sequence[float] | None = None,
        eps: float = TORCH_MUON_EPS,
        ns_steps: int | None = None,
        adjust_lr_fn: str | None = None,
        *,
        method: str | None = None,
        polar_dtype: torch.dtype | None = None,
        **options,
    ) -> None:
        defaults = muon_defaults(lr, weight_decay, momentum, nesterov, ns_coefficients, eps, ns_steps, adjust_lr_fn,
                                 method, polar_dtype)
        super().__init__(params, defaults, **options)

    def spectral_settings(self, group: Mapping, where: str) -> MuonSettings:
        common = spectral_common(group, where)
        check_unit_interval(group["momentum"], f"{where}momentum")
        check_nonnegative(group["eps"], f"{where}eps")
        check_bool(group["nesterov"], f"{where}nesterov")
        return MuonSettings(**common, momentum=group["momentum"], nesterov=group["nesterov"], eps=group["eps"],
                            polar=PolarSettings.from_group(group, where))

    def spectral_inputs(self, ctx, params, grads):
        momentum = ctx.settings.momentum
        bufs = ctx.buffers(params)
        torch._foreach_lerp_(bufs, grads, 1 - momentum)
        if ctx.settings.nesterov:
            return torch._foreach_lerp(grads, bufs, momentum)
        return bufs

    def inputs_are_scratch(self, settings):
        return settings.nesterov  # (1 − μ)G + μM is a new tensor; M itself is state

    def transform(self, x, settings, *, overwrite=False):
        return polar_factor(x, settings.polar, eps=settings.eps, overwrite=overwrite)
