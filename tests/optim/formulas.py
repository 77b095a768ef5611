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


def normuon_blocks(o: torch.Tensor, v: torch.Tensor, beta2: float, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """NorMuon's direction of a (B, m, n) batch of blocks from its moment O, float64 SVD (arXiv 2510.05491):

    U = polar(O); V ← β₂V + (1 − β₂)·mean_j U_ij² (v: (B, m), one value per row);
    Û = U/(√V + ε) row-wise; Û ← Û·‖U‖_F/‖Û‖_F per block. Returns (Û, new V); no shape scale."""
    u = polar64(o)
    v = beta2 * v.to(torch.float64) + (1 - beta2) * (u * u).mean(-1)
    normalized = u / (v.sqrt() + eps).unsqueeze(-1)
    normalized = normalized * (torch.linalg.matrix_norm(u) / torch.linalg.matrix_norm(normalized))[:, None, None]
    return normalized, v


def cautious_decay(w: torch.Tensor, update: torch.Tensor, lr: float, weight_decay: float) -> torch.Tensor:
    """Cautious weight decay (arXiv 2510.12402) before the step: W − ηλ·W∘1[W∘U ≥ 0]."""
    return w - lr * weight_decay * w * (w * update >= 0)
