"""Matrix factorization XYᵀ ≈ A (and XXᵀ ≈ A) with a prescribed condition number — work A's first problem.

Target A = U diag(σ) Vᵀ (m×n, rank r) with σ log-spaced from 1 down to 1/κ. Factors X ∈ ℝ^{m×r}, Y ∈ ℝ^{n×r};
loss f = ½‖XYᵀ − A‖²_F with gradients ∇_X f = R Y, ∇_Y f = Rᵀ X, R = XYᵀ − A (symmetric variant: f = ½‖XXᵀ − A‖²_F,
∇_X f = 2 R X for symmetric R).

Spectrally aligned start X₀ = U diag(x₀), Y₀ = V diag(x₀): then R = U diag(x∘y − σ) Vᵀ, ∇_X f = U diag((x∘y − σ)∘y),
and polar(∇_X f) = U diag(sign((x∘y − σ)∘y)). Simplified Muon X ← X − η polar(∇_X f) therefore moves every singular
value by the same ±η — one scalar recursion per direction, x_i ← x_i − η sign((x_i y_i − σ_i) y_i) — whereas gradient
descent moves direction i by η (x_i y_i − σ_i) y_i, whose rate near the optimum is ∝ σ_i (hence ∝ 1/κ for the slowest).
(Design ours, after the abstract of Ma, Huang, Chi, Chen, arXiv 2601.13474.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def random_orthonormal(rows: int, cols: int, generator: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    """A Haar-random rows×cols matrix with orthonormal columns."""
    q, r = torch.linalg.qr(torch.randn(rows, cols, dtype=torch.float64, generator=generator))
    return (q * torch.sign(torch.diagonal(r)).unsqueeze(0)).to(dtype)


def log_spectrum(rank: int, kappa: float, dtype=torch.float64) -> torch.Tensor:
    """σ_1 = 1 ≥ ... ≥ σ_r = 1/κ, log-spaced (a single value 1 when rank = 1)."""
    if rank == 1:
        return torch.ones(1, dtype=dtype)
    return torch.logspace(0.0, -math.log10(kappa), rank, dtype=dtype)


@dataclass
class MatrixFactorization:
    """½‖XYᵀ − A‖²_F (or ½‖XXᵀ − A‖²_F when ``symmetric``) with A = U diag(σ) Vᵀ known exactly."""

    u: torch.Tensor  # m×r
    sigma: torch.Tensor  # r
    v: torch.Tensor  # n×r (= u when symmetric)
    symmetric: bool = False
    init_scale: float = 1e-3

    @property
    def target(self) -> torch.Tensor:
        return (self.u * self.sigma) @ self.v.mT

    @property
    def rank(self) -> int:
        return self.sigma.numel()

    @property
    def kappa(self) -> float:
        return float(self.sigma.max() / self.sigma.min())

    # ---- starts -------------------------------------------------------------------------------
    def random_start(self, generator: torch.Generator) -> list[torch.Tensor]:
        """Small random factors with entries N(0, init_scale²/r)."""
        dtype = self.u.dtype
        m, r = self.u.shape
        x = self.init_scale * torch.randn(m, r, dtype=torch.float64, generator=generator).to(dtype) / math.sqrt(r)
        if self.symmetric:
            return [x]
        n = self.v.shape[0]
        y = self.init_scale * torch.randn(n, r, dtype=torch.float64, generator=generator).to(dtype) / math.sqrt(r)
        return [x, y]

    def aligned_start(self, x0: float | torch.Tensor | None = None) -> list[torch.Tensor]:
        """X₀ = U diag(x₀), Y₀ = V diag(x₀): every iterate of a spectral method stays of this form."""
        scale = self.init_scale if x0 is None else x0
        diag = torch.as_tensor(scale, dtype=self.u.dtype).expand(self.rank).clone()
        if self.symmetric:
            return [self.u * diag]
        return [self.u * diag, self.v * diag]

    # ---- loss and gradients (closed form) -----------------------------------------------------
    def residual(self, params: list[torch.Tensor]) -> torch.Tensor:
        x = params[0]
        y = x if self.symmetric else params[1]
        return x @ y.mT - self.target

    def loss_and_grads(self, params: list[torch.Tensor]) -> tuple[float, list[torch.Tensor]]:
        x = params[0]
        y = x if self.symmetric else params[1]
        r = x @ y.mT - self._target
        loss = 0.5 * float(r.square().sum())
        if self.symmetric:
            return loss, [2.0 * (r @ x)]
        return loss, [r @ y, r.mT @ x]

    def loss(self, params: list[torch.Tensor]) -> float:
        return 0.5 * float(self.residual(params).square().sum())

    def error(self, params: list[torch.Tensor]) -> float:
        """Relative error ‖XYᵀ − A‖_F / ‖A‖_F (the quantity compared with the tolerance)."""
        return float(torch.linalg.matrix_norm(self.residual(params)) / self._target_norm)

    def error_from_loss(self, loss: float) -> float:
        return math.sqrt(2.0 * max(loss, 0.0)) / self._target_norm

    def singular_trajectory_values(self, params: list[torch.Tensor]) -> torch.Tensor:
        """The r products x_i·y_i = (Uᵀ X)_{ii} (Vᵀ Y)_{ii}: the singular values the aligned start tracks."""
        x = params[0]
        y = x if self.symmetric else params[1]
        return torch.diagonal(self.u.mT @ x) * torch.diagonal(self.v.mT @ y)

    def trajectory_targets(self) -> torch.Tensor:
        """σ_i, the fixed points of the products x_i y_i."""
        return self.sigma

    def __post_init__(self) -> None:
        self._target = self.target
        self._target_norm = float(torch.linalg.matrix_norm(self._target))


def make_matfac(
    kappa: float,
    *,
    m: int = 50,
    n: int = 40,
    rank: int = 5,
    symmetric: bool = False,
    init_scale: float = 1e-3,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> MatrixFactorization:
    """A random rank-``rank`` target with σ log-spaced over [1/κ, 1] (symmetric: m×m PSD, n ignored)."""
    if not kappa >= 1.0:
        raise ValueError(f"kappa must be ≥ 1, got {kappa}")
    if rank < 1 or rank > min(m, n if not symmetric else m):
        raise ValueError(f"rank must be in [1, min(m, n)], got {rank}")
    gen = torch.Generator().manual_seed(seed)
    u = random_orthonormal(m, rank, gen, dtype)
    v = u if symmetric else random_orthonormal(n, rank, gen, dtype)
    return MatrixFactorization(u, log_spectrum(rank, kappa, dtype), v, symmetric=symmetric, init_scale=init_scale)
