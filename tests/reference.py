"""Exact float64 references shared by the numeric tests.

Matrices are built with a prescribed spectrum, so the exact polar factor, spectral powers and
nuclear norm are known without trusting any routine under test.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Spectral:
    """G = U diag(s) Vᵀ in float64, with its factors."""

    matrix: torch.Tensor
    u: torch.Tensor
    s: torch.Tensor
    v: torch.Tensor

    def power(self, p: float) -> torch.Tensor:
        """U Σᵖ Vᵀ, with 0ᵖ = 0 (so p = 0 gives the polar factor on G's range)."""
        sp = torch.where(self.s > 0, self.s.clamp_min(1e-300) ** p, torch.zeros_like(self.s))
        return (self.u * sp.unsqueeze(-2)) @ self.v.mT

    @property
    def polar(self) -> torch.Tensor:
        return self.power(0.0)

    @property
    def nuclear_norm(self) -> torch.Tensor:
        return self.s.sum(-1)


def random_orthonormal(rows: int, cols: int, batch: tuple[int, ...] = (), generator=None) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(*batch, rows, cols, dtype=torch.float64, generator=generator))
    # fix signs so the distribution is Haar, not QR-biased
    return q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)


def spectral_matrix(
    m: int,
    n: int,
    kappa: float = 10.0,
    *,
    rank: int | None = None,
    batch: tuple[int, ...] = (),
    scale: float = 1.0,
    generator: torch.Generator | None = None,
) -> Spectral:
    """A random m×n matrix with singular values log-spaced from ``scale`` to ``scale/kappa``.

    ``rank`` < min(m, n) sets the trailing singular values to exactly 0.
    """
    r = min(m, n)
    u = random_orthonormal(m, r, batch, generator)
    v = random_orthonormal(n, r, batch, generator)
    s = scale * torch.logspace(0.0, -float(torch.log10(torch.tensor(float(kappa)))), r, dtype=torch.float64)
    if rank is not None:
        s[rank:] = 0.0
    s = s.expand(*batch, r).clone()
    return Spectral(matrix=(u * s.unsqueeze(-2)) @ v.mT, u=u, s=s, v=v)


def svd_polar(x: torch.Tensor) -> torch.Tensor:
    """Polar factor of x by float64 SVD (full rank assumed)."""
    u, _, vh = torch.linalg.svd(x.to(torch.float64), full_matrices=False)
    return u @ vh


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    """Largest relative Frobenius error over the batch, in float64."""
    x, ref = x.to(torch.float64), ref.to(torch.float64)
    num = torch.linalg.matrix_norm(x - ref).flatten()
    den = torch.linalg.matrix_norm(ref).flatten().clamp_min(1e-300)
    return float((num / den).max())


def singular_range(x: torch.Tensor) -> tuple[float, float]:
    s = torch.linalg.svdvals(x.to(torch.float64))
    return float(s.min()), float(s.max())
