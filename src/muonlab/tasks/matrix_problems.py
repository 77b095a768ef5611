"""Work B's three matrix problems (PolarGrad, Lau, Long, Su, arXiv 2505.21799; sizes and data as in the authors' scripts).

- ``quadreg``: f(X) = ½‖AXB − C‖²_F, X 500×100, A 1000×500, B 100×250, C 1000×250 ~ N(0, 1), X₀ ~ U(−1, 1).
  ∇f = Aᵀ(AXB − C)Bᵀ = (AᵀA) X (BBᵀ) − AᵀCBᵀ. The minimizer is X* = A⁺CB⁺ (A has full column rank, B full row rank),
  and since ∇f(X) = H[X − X*] with H[D] = AᵀA D BBᵀ, the gap is f(X) − f* = ½⟨X − X*, ∇f(X)⟩ — free of cancellation.
- ``logreg``: f(X) = Σ softplus(−C ⊙ (A_b X B)) over a mini-batch b of rows, X 1000×100, A 10000×1000, B 100×400,
  C = ±1 with P(+1) = 0.31 (docs/math.md §5.2), X₀ ~ U(−1, 1).
  ∇f = A_bᵀ (−C ⊙ sigmoid(−C ⊙ A_b X B)) Bᵀ.
- ``completion``: M = U*V*ᵀ (U* 500×5, V* 250×5 Gaussian), mask Ω ~ Bernoulli(0.3), f(X, Y) = ‖P_Ω(XYᵀ − M)‖²_F / |Ω|,
  X₀, Y₀ ~ U(−1, 1) of rank 5. ∇_X f = 2 P_Ω(XYᵀ − M) Y / |Ω|, ∇_Y f = 2 P_Ω(XYᵀ − M)ᵀ X / |Ω|.

``small=True`` divides every size by 5 (same shapes' ratios) for quick runs and tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def _uniform(shape, generator, dtype) -> torch.Tensor:
    return (2.0 * torch.rand(*shape, dtype=torch.float64, generator=generator) - 1.0).to(dtype)


def _shrink(size: int, small: bool) -> int:
    return max(size // 5, 2) if small else size


# ---- matrix quadratic regression ------------------------------------------------------------------------------


@dataclass
class QuadraticRegression:
    a: torch.Tensor  # p×m
    b: torch.Tensor  # n×q
    c: torch.Tensor  # p×q
    seed: int = 0

    def __post_init__(self) -> None:
        dtype = self.a.dtype
        self.ata = self.a.mT @ self.a
        self.bbt = self.b @ self.b.mT
        self.atcbt = self.a.mT @ self.c @ self.b.mT
        a64, b64, c64 = self.a.double(), self.b.double(), self.c.double()
        # X* = A⁺ C B⁺ by two least-squares solves in float64
        inner = torch.linalg.lstsq(a64, c64).solution  # m×q
        x_star = torch.linalg.lstsq(b64.mT, inner.mT).solution.mT  # m×n
        self.x_star64 = x_star
        self.x_star = x_star.to(dtype)
        self.f_star = 0.5 * float((a64 @ x_star @ b64 - c64).square().sum())
        x0 = self.start()[0].double()
        self.f_zero = 0.5 * float((a64 @ x0 @ b64 - c64).square().sum())
        eig_a = torch.linalg.eigvalsh(self.ata.double())
        eig_b = torch.linalg.eigvalsh(self.bbt.double())
        self.hessian_condition = float(eig_a[-1] / eig_a[0] * eig_b[-1] / eig_b[0])
        self.smoothness = float(eig_a[-1] * eig_b[-1])

    def start(self) -> list[torch.Tensor]:
        gen = torch.Generator().manual_seed(self.seed + 1)
        return [_uniform((self.a.shape[1], self.b.shape[0]), gen, self.a.dtype)]

    def loss(self, params: list[torch.Tensor]) -> float:
        """f(X) = ½‖AXB − C‖²_F evaluated directly in float64."""
        x = params[0].double()
        return 0.5 * float((self.a.double() @ x @ self.b.double() - self.c.double()).square().sum())

    def gradient(self, x: torch.Tensor) -> torch.Tensor:
        return self.ata @ x @ self.bbt - self.atcbt

    def loss_and_grads(self, params: list[torch.Tensor]) -> tuple[float, list[torch.Tensor]]:
        x = params[0]
        g = self.gradient(x)
        gap = 0.5 * float(((x - self.x_star) * g).sum())
        return self.f_star + gap, [g]

    def error_from_loss(self, loss: float) -> float:
        """Relative gap (f − f*) / (f(X₀) − f*)."""
        return max(loss - self.f_star, 0.0) / (self.f_zero - self.f_star)


def make_quadreg(*, small: bool = False, seed: int = 0, dtype=torch.float32) -> QuadraticRegression:
    m, n, p, q = (_shrink(s, small) for s in (500, 100, 1000, 250))
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(p, m, dtype=torch.float64, generator=gen).to(dtype)
    b = torch.randn(n, q, dtype=torch.float64, generator=gen).to(dtype)
    c = torch.randn(p, q, dtype=torch.float64, generator=gen).to(dtype)
    return QuadraticRegression(a, b, c, seed=seed)


# ---- matrix logistic regression -------------------------------------------------------------------------------


@dataclass
class LogisticRegression:
    a: torch.Tensor  # N×m
    b: torch.Tensor  # n×q
    c: torch.Tensor  # N×q, entries ±1
    batch_size: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        self._gen = torch.Generator().manual_seed(self.seed + 2)
        self.f_star = None

    def start(self) -> list[torch.Tensor]:
        gen = torch.Generator().manual_seed(self.seed + 1)
        return [_uniform((self.a.shape[1], self.b.shape[0]), gen, self.a.dtype)]

    def batch_loss_and_grads(self, x: torch.Tensor, rows: torch.Tensor) -> tuple[float, torch.Tensor]:
        a, c = self.a[rows], self.c[rows]
        margins = -c * (a @ x @ self.b)
        loss = float(F.softplus(margins).sum())
        weights = -c * torch.sigmoid(margins)  # d softplus(−c z)/dz
        return loss, a.mT @ (weights @ self.b.mT)

    def loss_and_grads(self, params: list[torch.Tensor]) -> tuple[float, list[torch.Tensor]]:
        rows = torch.randint(0, self.a.shape[0], (self.batch_size,), generator=self._gen)
        loss, g = self.batch_loss_and_grads(params[0], rows)
        return loss, [g]

    def loss(self, params: list[torch.Tensor]) -> float:
        """Full-data loss (sum over all rows)."""
        x = params[0]
        return float(F.softplus(-self.c * (self.a @ x @ self.b)).sum())

    def error_from_loss(self, loss: float) -> float:
        return loss


def make_logreg(*, small: bool = False, seed: int = 0, dtype=torch.float32) -> LogisticRegression:
    m, n, rows, q, batch = (_shrink(s, small) for s in (1000, 100, 10000, 400, 1000))
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(rows, m, dtype=torch.float64, generator=gen).to(dtype)
    b = torch.randn(n, q, dtype=torch.float64, generator=gen).to(dtype)
    c = torch.where(torch.rand(rows, q, dtype=torch.float64, generator=gen) < 0.31, 1.0, -1.0).to(dtype)
    return LogisticRegression(a, b, c, batch_size=batch, seed=seed)


# ---- low-rank matrix completion -------------------------------------------------------------------------------


@dataclass
class MatrixCompletion:
    target: torch.Tensor  # M, m×n
    mask: torch.Tensor  # Ω as 0/1 of M's dtype
    rank: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        self.count = float(self.mask.sum())
        self.f_star = 0.0
        self.f_zero = self.loss(self.start())

    def start(self) -> list[torch.Tensor]:
        gen = torch.Generator().manual_seed(self.seed + 1)
        m, n = self.target.shape
        dtype = self.target.dtype
        return [_uniform((m, self.rank), gen, dtype), _uniform((n, self.rank), gen, dtype)]

    def loss_and_grads(self, params: list[torch.Tensor]) -> tuple[float, list[torch.Tensor]]:
        x, y = params
        r = self.mask * (x @ y.mT - self.target)
        loss = float(r.square().sum()) / self.count
        scale = 2.0 / self.count
        return loss, [scale * (r @ y), scale * (r.mT @ x)]

    def loss(self, params: list[torch.Tensor]) -> float:
        x, y = params
        return float((self.mask * (x @ y.mT - self.target)).square().sum()) / self.count

    def error_from_loss(self, loss: float) -> float:
        return loss / self.f_zero


def make_completion(*, small: bool = False, seed: int = 0, dtype=torch.float32, rank: int = 5) -> MatrixCompletion:
    m, n = (_shrink(s, small) for s in (500, 250))
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(m, rank, dtype=torch.float64, generator=gen)
    v = torch.randn(n, rank, dtype=torch.float64, generator=gen)
    mask = (torch.rand(m, n, dtype=torch.float64, generator=gen) < 0.3).to(dtype)
    return MatrixCompletion((u @ v.mT).to(dtype), mask, rank=rank, seed=seed)
