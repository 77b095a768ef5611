"""The polar factor polar(G) = U Vᵀ of a batch of matrices, by several methods.

For G = U Σ Vᵀ (thin SVD), polar(G) = U Vᵀ: the closest semi-orthogonal matrix to G, Muon's
update direction. Methods (see docs/math.md §3 and each module's docstring for formulas and sources):

===================  ==========================================================================
``"svd"``            exact; zero singular values map to 0 (rank-deficient G gives U Vᵀ on its range;
                     the iterations instead may lift rounding-level σ towards 1 — also a valid
                     polar factor, since it is not unique off G's range)
``"newton_schulz"``  Keller Jordan's quintic, default (3.4445, −4.7750, 2.0315) × 5 steps;
                     deliberately inexact (σ ends in ≈ [0.68, 1.2] for κ ≤ 100)
``"polar_express"``  Polar Express: the optimal quintic per step, safety factor 1.01; 5 steps give
                     σ ∈ ≈ [0.87, 1.12] for κ ≤ 100 at the cost of Keller's 5 steps
``"polar_express_gram_norm"``  X₀ = G/(1.01·‖GGᵀ‖_F^{1/2}) (σ_min/scale ≈ 3.5× larger than with ‖G‖_F;
                     GGᵀ is the first step's Gram matrix, so it costs no product) and a greedy
                     schedule derived for that start (:mod:`muonlab.linalg.schedules`): 4 steps give
                     σ ∈ ≈ [0.86, 1.14] for κ ≤ 100 at width 768, PE's ×5 quality for 4/5 of its cost
``"gram_newton_schulz"``  the Polar Express schedule iterated on the small Gram matrix: fewer
                     flops than the direct iteration once the aspect ratio exceeds ≈ 2
``"cubic"``          classic Newton–Schulz X ← 1.5X − 0.5XXᵀX; converges to 1, slowly at small σ
``"qdwh"``           QDWH (dynamically weighted Halley, QR then Cholesky steps); backward stable,
                     ≤ 6 iterations for κ ≤ 1e16 in float64
``"zolo_pd"``        ZOLO-PD (Zolotarev's best rational approximation of sign, Nakatsukasa–Freund 2016):
                     2 iterations, each r QR or Cholesky solves run as one batched call (r = 8 in
                     float64 for κ ≤ 1e16, r = 4 in float32); float32/float64 only
``"auto"``           vectors (1×n, n×1): the exact x/‖x‖; float64 input: ``"qdwh"`` (a float64
                     user wants a converged answer); otherwise ``"polar_express"`` with 5 steps
                     (matmul-only, so fast on any device and in any precision)
===================  ==========================================================================

The other quintic methods evaluate their polynomial on the small Gram matrix (as ``"gram_newton_schulz"``
does) when max(m, n) ≥ 2·min(m, n) and the iteration runs in float32 or wider: the same polynomial,
equal results up to rounding, fewer flops (see :data:`GRAM_ASPECT_RATIO`).

The iteration's precision follows the device (see :mod:`muonlab.linalg.precision`): at least
float32 on CPU even for bf16/fp16 input, bf16 for the matmul methods on CUDA; ``dtype=``
overrides. The result has x's shape and dtype.
"""

from __future__ import annotations

from typing import Sequence

import torch

from muonlab.linalg import iterations as it
from muonlab.linalg.checks import check_dtype, check_matrix, check_steps
from muonlab.linalg.methods import POLAR_METHOD_REGISTRY, POLAR_METHODS
from muonlab.linalg.precision import iteration_dtype
from muonlab.linalg.qdwh import qdwh
from muonlab.linalg.zolo import zolo_pd


# The quintic methods ("newton_schulz", "polar_express", "polar_express_gram_norm") evaluate their polynomial on the Gram
# matrix once max(m, n)/min(m, n) reaches this: the same polynomial (equal results up to rounding)
# for 4m²n + 34m³ flops instead of 20m²n + 10m³ at 5 steps, fewer once the aspect ratio passes 2; square matrices
# would pay the 34m³ for nothing (``muonlab bench polar``; BENCHMARKS.md, "Gram form for wide/tall matrices").
GRAM_ASPECT_RATIO = 2.0


def resolve_method(x: torch.Tensor, method: str) -> str:
    """The concrete method ``"auto"`` stands for, for input ``x``."""
    if method != "auto":
        return method
    if x.dtype == torch.float64:
        return "qdwh"
    return "polar_express"


def uses_gram_form(m: int, n: int, work_dtype: torch.dtype) -> bool:
    """Whether a quintic method evaluates on the Gram matrix for an m×n input iterated in ``work_dtype``.

    Only in float32 or wider: in bf16/fp16 the Gram form needs restarts and its accuracy has not
    been measured against the direct iteration (``"gram_newton_schulz"`` still asks for it).
    """
    aspect = max(m, n) / max(1, min(m, n))
    return aspect >= GRAM_ASPECT_RATIO and work_dtype in (torch.float32, torch.float64)


def polar(
    x: torch.Tensor,
    method: str = "auto",
    steps: int | None = None,
    dtype: torch.dtype | None = None,
    *,
    coefficients: Sequence[float] | None = None,
    refine: int = 0,
    eps: float = 0.0,
    check_finite: bool = True,
    overwrite: bool = False,
) -> torch.Tensor:
    """Polar factor U Vᵀ of every matrix in ``x`` (shape (..., m, n)).

    Args:
        x: real floating tensor, at least 2-D; leading dimensions are a batch.
        method: one of :data:`POLAR_METHODS` (table in the module docstring).
        steps: iterations for the iterative methods (default: 5 for the quintics, 4 for
            ``"polar_express_gram_norm"``, 24 for cubic,
            "until converged" for QDWH and ZOLO-PD, which caps them); ignored by ``"svd"``.
        dtype: precision of the iteration; default by device (see module docstring).
        coefficients: a constant quintic (a, b, c) for ``"newton_schulz"``/``"gram_newton_schulz"``
            (default: Keller's for ``"newton_schulz"``, the Polar Express schedule for Gram NS).
        refine: extra cubic Newton–Schulz steps after the method (pull σ towards 1).
        eps: added to ‖x‖_F in the normalization, in x's units (torch.optim.Muon's ``eps``);
            the default 0 makes the result exactly scale invariant.
        check_finite: raise on NaN/Inf entries (one reduction and a read-back to the host, which waits
            for the device; optimizers that already checked their gradients pass False).
        overwrite: ``x`` is scratch the caller no longer needs: the iteration may use its memory (one
            copy of x less). Otherwise x is never modified.

    Returns:
        A tensor of x's shape and dtype.
    """
    check_matrix(x, "x", check_finite=check_finite)
    if method not in POLAR_METHODS:
        raise ValueError(f"method must be one of {', '.join(POLAR_METHODS)}; got {method!r}")
    check_steps(steps)
    check_steps(refine, "refine")
    check_dtype(dtype)
    allowed = POLAR_METHOD_REGISTRY[method].dtypes if method != "auto" else None
    if dtype is not None and allowed is not None and dtype not in allowed:
        names = " or ".join(str(d).replace("torch.", "") for d in allowed)
        raise ValueError(f"dtype for method {method!r} must be {names} (it runs QR/Cholesky factorizations), got {dtype}")
    if coefficients is not None:
        if method == "auto" or not POLAR_METHOD_REGISTRY[method].accepts_coefficients:
            takers = [name for name, m in POLAR_METHOD_REGISTRY.items() if m.accepts_coefficients]
            raise ValueError(f"coefficients apply to {' and '.join(map(repr, takers))}, not {method!r}")
        if len(coefficients) != 3:
            raise ValueError(f"coefficients must be three numbers (a, b, c), got {coefficients!r}")
    if not isinstance(eps, (int, float)) or eps < 0:
        raise ValueError(f"eps must be a non-negative number, got {eps!r}")

    if x.numel() == 0:
        return torch.zeros_like(x)
    method = resolve_method(x, method)
    m, n = x.shape[-2], x.shape[-1]
    work_dtype = iteration_dtype(x, method, dtype)
    batch = x.reshape(-1, m, n).to(work_dtype)
    # A conversion made a copy the iteration may overwrite (the first scaling then runs in place).
    fresh = overwrite or batch.dtype != x.dtype

    if min(m, n) == 1 and method != "svd":
        # A single row or column: U Vᵀ = x/‖x‖ exactly (and 0 for x = 0); no iteration needed.
        out = it.normalize(batch)
    elif method == "svd":
        out = _polar_svd(batch)
    elif method == "qdwh":
        tall = batch if m >= n else batch.mT
        out = qdwh(tall, steps)
        out = out if m >= n else out.mT
    elif method == "zolo_pd":
        tall = batch if m >= n else batch.mT
        out = zolo_pd(tall, steps)
        out = out if m >= n else out.mT
    else:
        wide = batch if m <= n else batch.mT
        out = _polar_polynomial(wide, method, steps, coefficients, eps, fresh)
        out = out if m <= n else out.mT
    if refine:
        wide = out if m <= n else out.mT
        wide = it.cubic_iteration(wide, refine, overwrite=True)
        out = wide if m <= n else wide.mT
    return out.reshape(x.shape).to(x.dtype)


def _steps(method: str, steps: int | None) -> int:
    """``steps``, or the method's default from the registry."""
    return POLAR_METHOD_REGISTRY[method].steps(steps)


def _polar_svd(x: torch.Tensor) -> torch.Tensor:
    u, s, vh = torch.linalg.svd(x, full_matrices=False)
    # Singular values at the rounding level of the largest are zero: leave those directions out.
    tol = max(x.shape[-2:]) * torch.finfo(x.dtype).eps * s[..., :1]
    keep = (s > tol).to(x.dtype)
    return (u * keep.unsqueeze(-2)) @ vh


def _polar_polynomial(
    x: torch.Tensor, method: str, steps: int | None, coefficients: Sequence[float] | None, eps: float, fresh: bool
) -> torch.Tensor:
    if method == "cubic":
        return it.cubic_iteration(it.normalize(x, eps, fresh=fresh), _steps("cubic", steps), overwrite=True)
    gram_form = uses_gram_form(x.shape[-2], x.shape[-1], x.dtype)
    if method == "polar_express_gram_norm":
        schedule = it.gram_norm_schedule(_steps(method, steps))
        x0, gram = it.normalize_by_gram(x, eps, it.GRAM_NORM_SAFETY, fresh=fresh)
        if gram_form:
            return it.gram_quintic_iteration(x0, schedule, gram=gram)
        return it.quintic_iteration(x0, schedule, gram=gram, overwrite=True)
    if method == "newton_schulz":
        schedule = it.constant_schedule(coefficients or it.KELLER_COEFFICIENTS, _steps(method, steps))
        x0 = it.normalize(x, eps, fresh=fresh)
        return it.gram_quintic_iteration(x0, schedule) if gram_form else it.quintic_iteration(x0, schedule, overwrite=True)
    steps = _steps(method, steps)
    if coefficients is not None:
        schedule, safety = it.constant_schedule(coefficients, steps), 1.0
    else:
        schedule, safety = it.polar_express_schedule(steps), it.POLAR_EXPRESS_SAFETY
    x0 = it.normalize(x, eps, safety, fresh=fresh)
    if method == "polar_express":
        return it.gram_quintic_iteration(x0, schedule) if gram_form else it.quintic_iteration(x0, schedule, overwrite=True)
    # Gram NS: restart halfway in half precision, where Q and R drift fastest.
    restart = 3 if x.dtype in (torch.bfloat16, torch.float16) else None
    return it.gram_quintic_iteration(x0, schedule, restart_every=restart)
