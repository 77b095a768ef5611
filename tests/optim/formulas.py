"""Float64 SVD references for the optimizer tests: every formula written out from docs/math.md §4."""

from __future__ import annotations

import math

import torch


def psi(x: torch.Tensor, p: float) -> torch.Tensor:
    """U Σᵖ Vᵀ of every matrix in x (…, m, n), float64 SVD; p = 0 gives the polar factor."""
    u, s, vh = torch.linalg.svd(x.to(torch.float64), full_matrices=False)
    sp = torch.ones_like(s) if p == 0 else s**p
    return (u * sp.unsqueeze(-2)) @ vh


def polar64(x: torch.Tensor) -> torch.Tensor:
    return psi(x, 0.0)


def nuclear64(x: torch.Tensor) -> torch.Tensor:
    """‖X‖_* per matrix, shape (…, 1, 1)."""
    return torch.linalg.svdvals(x.to(torch.float64)).sum(-1)[..., None, None]


def keller_scale(rows: int, cols: int) -> float:
    return math.sqrt(max(1.0, rows / cols))


def newton_schulz_fp32(grad: torch.Tensor, ns_coefficients, ns_steps: int, eps: float) -> torch.Tensor:
    """Keller's quintic on a 2-D matrix in float32, normalized by max(‖G‖_F, eps) as torch.optim.Muon does.

    Written from the formula X ← aX + (bA + cA²)X, A = XXᵀ (wide orientation), to stand in for
    torch.optim.Muon's bf16 iteration in the equivalence test.
    """
    a, b, c = ns_coefficients
    x = grad.to(torch.float32)
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T
    x = x / x.norm().clamp(min=eps)
    for _ in range(ns_steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x
