"""SimplifiedMuon (work A: Ma, Huang, Chi, Chen, arXiv 2601.13474): W ← W − η_t polar(∇f(W)).

No momentum, no shape scale, no weight decay, and an exact polar factor by default (SVD): work
A's analysis needs the exact factor. For speed pass another polar method: ``method="qdwh"``
(converged to the rounding level; batched QR/Cholesky steps, no host synchronization), or a
matmul-only one, e.g. ``method="polar_express_gram_norm", steps=6`` (σ within 1e-6 of 1 for
σ ≥ 3.9e-3·scale, Polar Express's range after 6 steps; about 1.5× Muon's polar work) or
``steps=4`` (Muon's default: σ ∈ ≈ [0.86, 1.14] for κ ≤ 100). On the project's CPUs a 768×768 SVD
costs about as much as 90 matmuls of that size; ``muonlab bench family`` times each choice. The step size
schedule η_t (constant, or geometric η₀ρᵗ for linear convergence) comes from a torch LR scheduler,
e.g. ``torch.optim.lr_scheduler.ExponentialLR(opt, gamma=ρ)``.
"""

from __future__ import annotations

from typing import Iterable

import torch

from muonlab.optim.base import SpectralOptimizer, check_polar_method

DEFAULT_METHOD = "svd"


class SimplifiedMuon(SpectralOptimizer):
    """W ← W − lr·polar(G) on matrices (AdamW part for the rest). Args: ``lr`` (required), ``method``
    (``"svd"``); keyword-only ``steps``, ``polar_dtype`` and the AdamW-part / shape / policy options
    of :class:`muonlab.Muon`."""

    def __init__(
        self,
        params: Iterable,
        lr: float | torch.Tensor,
        method: str = DEFAULT_METHOD,
        *,
        steps: int | None = None,
        polar_dtype: torch.dtype | None = None,
        **options,
    ) -> None:
        defaults = dict(lr=lr, weight_decay=0.0, method=method, steps=steps, polar_dtype=polar_dtype, adjust_lr_fn="none")
        self.check_spectral_group(defaults, "")
        super().__init__(params, defaults, **options)

    def check_spectral_group(self, group: dict, where: str) -> None:
        super().check_spectral_group(group, where)
        check_polar_method(group, where)

    def spectral_inputs(self, group, params, grads):
        return grads

    def transform(self, x, group):
        return self._polar(x, group)
