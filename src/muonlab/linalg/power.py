"""Spectral powers Ψ_p(G) = U Σᵖ Vᵀ and the nuclear norm ‖G‖_* = Σ σᵢ.

Ψ_p interpolates between the identity (p = 1) and the polar factor (p = 0); work D (Qi et al.,
arXiv 2602.04669) uses p ∈ {1, ½, ¼, 0}. Matmul-only, through the smaller Gram matrix:

    Ψ_p(G) = (G Gᵀ)^{−r} G = G (GᵀG)^{−r},   r = (1 − p)/2.

A^{−r} for r = j/k comes from the coupled Newton iteration for the inverse k-th root (Higham,
*Functions of Matrices*, 2008, eq. 7.18; the form Shampoo uses): with A scaled so λ ≤ 1,

    X₀ = I, M₀ = A;   T = ((k+1)I − M)/k,   X ← X T,   M ← Tᵏ M,

which keeps M = Xᵏ A, so M → I forces X → A^{−1/k}; then A^{−r} = Xʲ.
"""

from __future__ import annotations

from fractions import Fraction

import torch

from muonlab.linalg.checks import check_dtype, check_matrix
from muonlab.linalg.polar import POLAR_METHODS, polar
from muonlab.linalg.precision import iteration_dtype

POWER_METHODS = ("auto", "svd", "newton")
MAX_ROOT_DENOMINATOR = 32  # k in A^{-1/k}; p = a/b with b ≤ 16 is supported by "newton"
NEWTON_MAX_ITERATIONS = 100


def _check_p(p: object) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not (0.0 <= float(p) <= 1.0):
        raise ValueError(f"p must be a number in [0, 1], got {p!r}")
    return float(p)


def inverse_root_exponent(p: float) -> Fraction:
    """r = (1 − p)/2 as an exact fraction j/k with k ≤ 32, or a ValueError naming p."""
    frac = Fraction(p).limit_denominator(MAX_ROOT_DENOMINATOR // 2)
    if abs(float(frac) - p) > 1e-12:
        raise ValueError(
            f"method='newton' needs p = a/b with b ≤ {MAX_ROOT_DENOMINATOR // 2} (e.g. 1/2, 1/4, 1/3); "
            f"got p={p!r}. Use method='svd' for other powers."
        )
    return (1 - frac) / 2


def spectral_power(
    x: torch.Tensor,
    p: float,
    method: str = "auto",
    dtype: torch.dtype | None = None,
    *,
    check_finite: bool = True,
) -> torch.Tensor:
    """Ψ_p(x) = U Σᵖ Vᵀ for every matrix in ``x`` (shape (..., m, n)), p ∈ [0, 1].

    Methods: ``"svd"`` (exact; σ = 0 stays 0), ``"newton"`` (matmul-only coupled inverse-root
    iteration on the smaller Gram matrix; p must be a/b with b ≤ 16), ``"auto"`` (``"newton"``
    on CUDA, where SVD is slow; ``"svd"`` elsewhere). p = 0 is :func:`polar` (``method`` then picks
    the polar method: any of ``POLAR_METHODS`` is accepted), p = 1 returns a copy of x.
    """
    check_matrix(x, "x", check_finite=check_finite)
    p = _check_p(p)
    check_dtype(dtype)
    if p == 0.0:
        polar_method = "auto" if method in ("newton",) else method
        if polar_method not in POLAR_METHODS:
            raise ValueError(f"method must be one of {', '.join(POLAR_METHODS)} for p = 0; got {method!r}")
        return polar(x, polar_method, dtype=dtype, check_finite=False)
    if method not in POWER_METHODS:
        raise ValueError(f"method must be one of {', '.join(POWER_METHODS)}; got {method!r}")
    if p == 1.0 or x.numel() == 0:
        return x.clone()
    if method == "auto":
        method = "newton" if x.device.type == "cuda" else "svd"
    m, n = x.shape[-2:]
    work = x.reshape(-1, m, n).to(iteration_dtype(x, "svd", dtype))
    if method == "svd":
        u, s, vh = torch.linalg.svd(work, full_matrices=False)
        out = (u * s.pow(p).unsqueeze(-2)) @ vh
    else:
        r = inverse_root_exponent(p)
        wide = work if m <= n else work.mT
        out = matrix_inverse_root(torch.bmm(wide, wide.mT), r.denominator, r.numerator) @ wide
        out = out if m <= n else out.mT
    return out.reshape(x.shape).to(x.dtype)


def matrix_inverse_root(a: torch.Tensor, k: int, j: int = 1) -> torch.Tensor:
    """A^{−j/k} for a batch of symmetric positive semidefinite A (B, m, m), matmul only.

    Each matrix iterates until ‖M − I‖_F reaches the rounding level or stops decreasing. For
    λ ∈ (0, 1] the error decreases strictly (slowly while λ is tiny), so a stall means an
    eigenvalue at or below the rounding noise of A: a zero (M stays 0) or a slightly negative
    one, which the iteration would amplify. Stopping there bounds its growth, and the caller
    multiplies the root back onto the matrix that produced A, whose component there is ~0.
    """
    batch, m, _ = a.shape
    eye = torch.eye(m, dtype=a.dtype, device=a.device).expand(batch, m, m)
    scale = torch.linalg.matrix_norm(a, "fro", keepdim=True)  # ≥ λ_max, so λ(A/scale) ≤ 1
    zero = scale == 0
    scale = torch.where(zero, torch.ones_like(scale), scale)
    mat = a / scale
    x = eye.clone()
    tol = 10 * m**0.5 * torch.finfo(a.dtype).eps
    err = torch.linalg.matrix_norm(mat - eye, "fro")
    active = ~zero.view(batch)
    for _ in range(NEWTON_MAX_ITERATIONS):
        t = ((k + 1) * eye - mat) / k
        new_x = torch.bmm(x, t)
        new_mat = torch.bmm(_matrix_power(t, k), mat)
        new_mat = 0.5 * (new_mat + new_mat.mT)
        new_err = torch.linalg.matrix_norm(new_mat - eye, "fro")
        improved = active & (new_err < err)
        keep = improved.view(batch, 1, 1)
        x = torch.where(keep, new_x, x)
        mat = torch.where(keep, new_mat, mat)
        err = torch.where(improved, new_err, err)
        active = improved & (new_err > tol)
        if not bool(active.any()):
            break
    root = _matrix_power(x, j)
    root = torch.where(zero, torch.zeros_like(root), root)
    return root * scale.pow(-j / k)


def _matrix_power(t: torch.Tensor, k: int) -> torch.Tensor:
    """t^k by repeated squaring (k ≥ 1)."""
    result = None
    base = t
    while k:
        if k & 1:
            result = base if result is None else torch.bmm(result, base)
        k >>= 1
        if k:
            base = torch.bmm(base, base)
    return result


def nuclear_norm(x: torch.Tensor, method: str = "svd", *, check_finite: bool = True) -> torch.Tensor:
    """‖x‖_* = Σ σᵢ for every matrix in ``x``; shape x.shape[:-2], dtype of x.

    ``"svd"`` sums the singular values (exact). Any polar method (``"qdwh"``, ``"polar_express"``,
    …) computes ⟨x, polar(x)⟩_F = tr(H) instead, which needs no SVD: matmul-only for the
    iterative methods, and exactly what PolarGrad reuses from its update direction.
    """
    check_matrix(x, "x", check_finite=check_finite)
    if method == "svd":
        work = x.to(iteration_dtype(x, "svd"))
        return torch.linalg.svdvals(work).sum(-1).to(x.dtype)
    if method not in POLAR_METHODS:
        raise ValueError(f"method must be 'svd' or one of {', '.join(POLAR_METHODS)}; got {method!r}")
    u = polar(x, method, check_finite=False)
    work = iteration_dtype(x, "svd")
    return (x.to(work) * u.to(work)).sum(dim=(-2, -1)).to(x.dtype)
