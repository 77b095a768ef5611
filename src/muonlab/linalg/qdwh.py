"""QDWH: the QR-based dynamically weighted Halley iteration for the polar factor.

Nakatsukasa, Bai & Gygi, "Optimizing Halley's iteration for computing the matrix polar
decomposition", SIAM J. Matrix Anal. Appl. 31(5), 2010. With a lower bound ℓ on σ_min(X_k):

    d = (4(1−ℓ²)/ℓ⁴)^{1/3},
    a = √(1+d) + ½ √(8 − 4d + 8(2−ℓ²)/(ℓ²√(1+d))),   b = (a−1)²/4,   c = a + b − 1,
    X_{k+1} = X_k (aI + b X_kᵀX_k)(I + c X_kᵀX_k)⁻¹,     ℓ ← ℓ(a + bℓ²)/(1 + cℓ²).

While c is large the inverse is applied through a QR factorization of [√c X; I] (backward
stable); once c ≤ 100 the cheaper Cholesky form of I + c XᵀX is safe. From X₀ = G/α with
α ≥ σ_max it converges in at most 6 iterations for κ ≤ 1e16 in float64.

Works on a batch (B, m, n) with m ≥ n (tall orientation).
"""

from __future__ import annotations

import torch

QR_THRESHOLD = 100.0  # use the QR form while c exceeds this (the paper's choice)
MAX_ITERATIONS = 10


def qdwh_weights(ell: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The dynamic weights (a, b, c) for lower bound ``ell`` (a tensor, computed in float64)."""
    ell2 = ell * ell
    d = (4.0 * (1.0 - ell2) / (ell2 * ell2)).clamp_min(0.0).pow(1.0 / 3.0)
    sqrt1d = torch.sqrt(1.0 + d)
    a = sqrt1d + 0.5 * torch.sqrt((8.0 - 4.0 * d + 8.0 * (2.0 - ell2) / (ell2 * sqrt1d)).clamp_min(0.0))
    b = (a - 1.0) ** 2 / 4.0
    c = a + b - 1.0
    return a, b, c


def _lower_bound(x: torch.Tensor) -> torch.Tensor:
    """A lower bound on σ_min(X) per batch element, for X with σ_max ≤ 1 (float64, shape (B,)).

    Read off the small Gram matrix's eigenvalues; trusted only where they sit well above the
    rounding level of the Gram product (σ_min² ≳ u·σ_max²·n), otherwise fall back to the unit
    roundoff, which costs at most the 6 iterations of the worst case.
    """
    u = torch.finfo(x.dtype).eps
    n = x.shape[-1]
    evals = torch.linalg.eigvalsh(torch.bmm(x.mT, x)).to(torch.float64)  # ascending
    lam_min, lam_max = evals[:, 0], evals[:, -1].clamp_min(0.0)
    trusted = lam_min > 100.0 * u * n * lam_max
    bound = torch.where(trusted, 0.9 * lam_min.clamp_min(0.0).sqrt(), torch.full_like(lam_min, u))
    return bound.clamp(min=u, max=1.0)


def qdwh(x: torch.Tensor, steps: int | None = None) -> torch.Tensor:
    """Polar factor of a tall batch x (B, m, n), m ≥ n, by QDWH; ``steps`` caps the iterations."""
    batch, m, n = x.shape
    dtype = x.dtype
    u = torch.finfo(dtype).eps
    # α = √(‖X‖₁‖X‖_∞) ≥ ‖X‖₂ (Hölder); zero matrices get α = 1 and stay zero.
    norm1 = x.abs().sum(dim=-2).amax(dim=-1)
    norminf = x.abs().sum(dim=-1).amax(dim=-1)
    alpha = torch.sqrt(norm1 * norminf)
    is_zero = alpha == 0
    alpha = torch.where(is_zero, torch.ones_like(alpha), alpha)
    x = x / alpha[:, None, None]

    ell = _lower_bound(x)
    ell = torch.where(is_zero, torch.ones_like(ell), ell)
    eye_n = torch.eye(n, dtype=dtype, device=x.device).expand(batch, n, n)
    max_iter = MAX_ITERATIONS if steps is None else steps
    for _ in range(max_iter):
        if steps is None and bool((1.0 - ell <= 10.0 * u).all()):
            break
        a, b, c = qdwh_weights(ell)
        ell = ell * (a + b * ell**2) / (1.0 + c * ell**2)
        a_, b_, c_ = (w.to(dtype)[:, None, None] for w in (a, b, c))
        if float(c.max()) > QR_THRESHOLD:
            # [√c X; I] = [Q₁; Q₂] R  ⇒  X ← (b/c) X + (a − b/c)/√c · Q₁ Q₂ᵀ
            stacked = torch.cat([torch.sqrt(c_) * x, eye_n], dim=-2)
            q, _ = torch.linalg.qr(stacked, mode="reduced")
            q1, q2 = q[:, :m, :], q[:, m:, :]
            x = (b_ / c_) * x + ((a_ - b_ / c_) / torch.sqrt(c_)) * torch.bmm(q1, q2.mT)
        else:
            # Z = I + c XᵀX = W Wᵀ (Cholesky)  ⇒  X ← (b/c) X + (a − b/c) X Z⁻¹
            z = eye_n + c_ * torch.bmm(x.mT, x)
            chol = torch.linalg.cholesky(z)
            # X Z⁻¹ = (Z⁻¹ Xᵀ)ᵀ, solved with the triangular factors
            xz = torch.cholesky_solve(x.mT, chol).mT
            x = (b_ / c_) * x + (a_ - b_ / c_) * xz
    return x


def qdwh_iterations_needed(ell0: float, tol: float) -> int:
    """How many QDWH steps take the lower bound ℓ₀ to within ``tol`` of 1 (for docs and tests)."""
    ell = torch.tensor([ell0], dtype=torch.float64)
    k = 0
    while float(1.0 - ell) > tol and k <= MAX_ITERATIONS:
        a, b, c = qdwh_weights(ell)
        ell = ell * (a + b * ell**2) / (1.0 + c * ell**2)
        k += 1
    return k
