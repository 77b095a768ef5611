"""QDWH: the QR-based dynamically weighted Halley iteration for the polar factor.

Nakatsukasa, Bai & Gygi, "Optimizing Halley's iteration for computing the matrix polar
decomposition", SIAM J. Matrix Anal. Appl. 31(5), 2010. With a lower bound ℓ on σ_min(X_k):

    d = (4(1−ℓ²)/ℓ⁴)^{1/3},
    a = √(1+d) + ½ √(8 − 4d + 8(2−ℓ²)/(ℓ²√(1+d))),   b = (a−1)²/4,   c = a + b − 1,
    X_{k+1} = X_k (aI + b X_kᵀX_k)(I + c X_kᵀX_k)⁻¹,     ℓ ← ℓ(a + bℓ²)/(1 + cℓ²).

While c is large the inverse is applied through a QR factorization of [√c X; I] (backward
stable); once c ≤ 100 the cheaper Cholesky form of I + c XᵀX is safe. From X₀ = G/α with
α ≥ σ_max it converges in at most 6 iterations for κ ≤ 1e16 in float64.

Schedule fixed up front, no host synchronization: the weights depend only on ℓ, and the
weights for a lower bound ℓ also serve any matrix whose σ_min/α is larger (every σ ∈ [ℓ, 1] is
mapped into [ℓ_{k+1}, 1]). So the iteration starts from ℓ₀ = the unit roundoff u of the working
dtype — the worst case that still has a polar factor to compute (σ below u·σ_max is rounding
noise) — and the whole schedule (a, b, c per step, QR or Cholesky, the step count until
1 − ℓ ≤ 10u) is computed on the host in float64 before touching the data. In float32 that is 4
steps (2 QR, 2 Cholesky), in float64 6 (2 QR, 4 Cholesky). Estimating σ_min first (an
eigenvalue solve of XᵀX per matrix, and a device-to-host copy) would save at most one QR step
and costs more than it saves: the eigenvalue solve of the Gram costs more than the QR it would spare
(BENCHMARKS.md, family).

Works on a batch (B, m, n) with m ≥ n (tall orientation): every step is one batched QR or
Cholesky call for the whole batch, no per-matrix loop.
"""

from __future__ import annotations

import math

import torch

QR_THRESHOLD = 100.0  # use the QR form while c exceeds this (the paper's choice)
MAX_ITERATIONS = 10


def qdwh_weights(ell: float) -> tuple[float, float, float]:
    """The dynamic weights (a, b, c) for the lower bound ``ell`` ∈ (0, 1] (host float64 arithmetic)."""
    ell2 = ell * ell
    d = max(4.0 * (1.0 - ell2) / (ell2 * ell2), 0.0) ** (1.0 / 3.0)
    sqrt1d = math.sqrt(1.0 + d)
    a = sqrt1d + 0.5 * math.sqrt(max(8.0 - 4.0 * d + 8.0 * (2.0 - ell2) / (ell2 * sqrt1d), 0.0))
    b = (a - 1.0) ** 2 / 4.0
    c = a + b - 1.0
    return a, b, c


def qdwh_schedule(ell0: float, tol: float, max_steps: int = MAX_ITERATIONS) -> list[tuple[float, float, float]]:
    """The weights (a, b, c) of each step from lower bound ``ell0`` until 1 − ℓ ≤ ``tol`` (at most ``max_steps``)."""
    schedule, ell = [], float(ell0)
    while 1.0 - ell > tol and len(schedule) < max_steps:
        a, b, c = qdwh_weights(ell)
        schedule.append((a, b, c))
        ell = min(1.0, ell * (a + b * ell * ell) / (1.0 + c * ell * ell))
    return schedule


def default_schedule(dtype: torch.dtype, steps: int | None = None) -> list[tuple[float, float, float]]:
    """The schedule :func:`qdwh` runs in ``dtype``: from ℓ₀ = u to 1 − ℓ ≤ 10u, capped at ``steps``."""
    u = torch.finfo(dtype).eps
    schedule = qdwh_schedule(u, 10.0 * u)
    return schedule if steps is None else schedule[:steps]


def qdwh(x: torch.Tensor, steps: int | None = None) -> torch.Tensor:
    """Polar factor of a tall batch x (B, m, n), m ≥ n, by QDWH; ``steps`` caps the iterations."""
    batch, m, n = x.shape
    dtype = x.dtype
    # α = √(‖X‖₁‖X‖_∞) ≥ ‖X‖₂ (Hölder); zero matrices get α = 1 and stay zero. The roots are taken
    # apart: the product of the norms over- or underflows for entries beyond ≈ 1e±150 (float64).
    norm1 = x.abs().sum(dim=-2).amax(dim=-1)
    norminf = x.abs().sum(dim=-1).amax(dim=-1)
    alpha = torch.sqrt(norm1) * torch.sqrt(norminf)
    alpha = torch.where(alpha > 0, alpha, torch.ones_like(alpha))
    x = x / alpha[:, None, None]

    eye_n = torch.eye(n, dtype=dtype, device=x.device).expand(batch, n, n)
    for a, b, c in default_schedule(dtype, steps):
        if c > QR_THRESHOLD:
            # [√c X; I] = [Q₁; Q₂] R  ⇒  X ← (b/c) X + (a − b/c)/√c · Q₁ Q₂ᵀ
            stacked = torch.cat([math.sqrt(c) * x, eye_n], dim=-2)
            q, _ = torch.linalg.qr(stacked, mode="reduced")
            q1, q2 = q[:, :m, :], q[:, m:, :]
            x = torch.baddbmm(x, q1, q2.mT, beta=b / c, alpha=(a - b / c) / math.sqrt(c))
        else:
            # Z = I + c XᵀX = W Wᵀ (Cholesky)  ⇒  X ← (b/c) X + (a − b/c) X Z⁻¹
            z = torch.baddbmm(eye_n, x.mT, x, alpha=c)
            # cholesky_ex: torch.linalg.cholesky checks its info flag on the host (a sync on CUDA);
            # Z's eigenvalues are ≥ 1, so the factorization cannot fail.
            chol, _ = torch.linalg.cholesky_ex(z)
            # X Z⁻¹ = (Z⁻¹ Xᵀ)ᵀ, solved with the triangular factors
            xz = torch.cholesky_solve(x.mT, chol).mT
            x = torch.add(xz, x, alpha=(b / c) / (a - b / c)).mul_(a - b / c)
    return x


def qdwh_iterations_needed(ell0: float, tol: float) -> int:
    """How many QDWH steps take the lower bound ℓ₀ to within ``tol`` of 1 (for docs and tests)."""
    return len(qdwh_schedule(ell0, tol, MAX_ITERATIONS + 1))
