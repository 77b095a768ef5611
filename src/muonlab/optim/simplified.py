"""SimplifiedMuon (work A: Ma, Huang, Chi, Chen, arXiv 2601.13474): W ← W − η_t polar(∇f(W)).

No momentum, no shape scale, no weight decay, and an exact polar factor by default (SVD): work
A's analysis needs the exact factor. For speed pass another polar method: ``method="qdwh"``
(converged to the rounding level; batched QR/Cholesky steps, no host synchronization), or a
matmul-only one, e.g. ``method="polar_express_gram_norm", ns_steps=6`` (σ within 1e-6 of 1 for
σ ≥ 3.9e-3·scale, Polar Express's range after 6 steps; about 1.5× Muon's polar work) or
``ns_steps=4`` (Muon's default: σ ∈ ≈ [0.86, 1.14] for κ ≤ 100). An SVD costs many matmuls of the
matrix's size; ``muonlab bench family`` times each choice (BENCHMARKS.md). The step size
schedule η_t (constant, or geometric η₀ρᵗ for linear convergence) comes from a torch LR scheduler,
e.g. ``torch.optim.lr_scheduler.ExponentialLR(opt, gamma=ρ)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

import torch

from muonlab.optim.base import SpectralOptimizer
from muonlab.optim.settings import PolarSettings, SpectralSettings, polar_factor, resolve_ns_steps, spectral_common

DEFAULT_METHOD = "svd"


@dataclass(frozen=True, kw_only=True)
class SimplifiedMuonSettings(SpectralSettings):
    """The polar iteration is SimplifiedMuon's only setting besides the shared ones."""

    polar: PolarSettings


class SimplifiedMuon(SpectralOptimizer):
    """W ← W − lr·polar(G) on matrices (AdamW part for the rest). Args: ``lr`` (required), ``method``
    (``"svd"``); keyword-only ``ns_steps`` (alias ``steps``), ``polar_dtype`` and the AdamW-part / shape / policy options
    of :class:`muonlab.Muon`."""

    def __init__(
        self,
        params: Iterable,
        lr: float | torch.Tensor,
        method: str = DEFAULT_METHOD,
        *,
        ns_steps: int | None = None,
        steps: int | None = None,
        polar_dtype: torch.dtype | None = None,
        **options,
    ) -> None:
        defaults = dict(lr=lr, weight_decay=0.0, method=method, ns_steps=resolve_ns_steps(ns_steps, steps),
                        polar_dtype=polar_dtype, adjust_lr_fn="none")
        super().__init__(params, defaults, **options)

    def spectral_settings(self, group: Mapping, where: str) -> SimplifiedMuonSettings:
        return SimplifiedMuonSettings(**spectral_common(group, where), polar=PolarSettings.from_group(group, where))

    def spectral_inputs(self, ctx, params, grads):
        return grads

    def transform(self, x, settings, *, overwrite=False):
        return polar_factor(x, settings.polar)
