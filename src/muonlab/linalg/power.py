"""Spectral powers Ψ_p(G) = U Σᵖ Vᵀ and the nuclear norm ‖G‖_* = Σ σᵢ.

Ψ_p interpolates between the identity (p = 1) and the polar factor (p = 0); work D (Qi et al.,
arXiv 2602.04669) uses p ∈ {1, ½, ¼, 0}. Every matmul-only method goes through the smaller
Gram matrix A = G Gᵀ (wide orientation, m ≤ n):

    Ψ_p(G) = (G Gᵀ)^{−r} G,   r = (1 − p)/2,

so σ = 0 maps to 0 exactly and the result is exactly in G's row space.

Methods:

``"gram"`` (default for p a multiple of 1/8; matmul-only, a fixed number of matmuls, no host
synchronization). Write r = Σᵢ bᵢ 2^{−i} (p = ½: r = 2^{−2}; p = ¼: r = 2^{−2} + 2^{−3}). Stage 1
is a polar iteration, H₁ = (G Gᵀ)^{1/2} = G polar(G)ᵀ; stage i ≥ 2 runs the Polar Express
iteration with H_{i−1} in the role of a Gram matrix, which yields Qᵢ = H_{i−1}^{−1/2} = A^{−2^{−i}}
and H_i = H_{i−1} Qᵢ = A^{2^{−i}}; then Ψ_p = Π_{bᵢ = 1} Qᵢ · G (each Qᵢ applied to G in turn).
A step on a Gram matrix R is P = aI + bR + cR² (+ dR³ for a degree-7 step), Q ← PQ, R ← PRP (as
:func:`muonlab.linalg.iterations.gram_quintic_iteration`, without the final product with X₀).
H_{i−1} has eigenvalues σ^{2^{2−i}}: its "singular values" σ^{2^{1−i}} have condition κ^{2^{1−i}},
√κ at stage 2 and κ^{1/4} at stage 3, so the later stages need fewer steps; each has its own
greedy Polar Express schedule derived for its lower bound (:mod:`muonlab.linalg.schedules`).
Stage 1 is Muon's default polar method (``"polar_express_gram_norm"``), direct for square-ish G,
on the Gram matrix (restarted before its last step) for aspect ratio ≥ 2, where the last step's
polynomial goes onto the small G Xᵀ instead of X (U itself is never needed). Stage 2 runs 3
quintic steps; stage 3 two steps, a degree-7 polynomial (one product more than a quintic) and a
quintic, which map [0.25, 1] into 1 ± 4.5e-4 (two quintics: 1 ± 2.7e-3; three from 0.1, the
previous default: 1 ± 2.2e-4, for three products more). Stage 3 scales by the smaller of its own
‖H²‖_F^{1/2} and the bound λ_max(H₂) ≤ 1.01·φ₂·√c₂ that stage 2's scale c₂ and its schedule's peak
φ₂ give, which puts the smallest singular value of a κ = 100 log-spaced spectrum (width 768) at
0.25 instead of 0.18. Steps per stage by default (5, 3, 2, 2). Stage 2's error enters Ψ_¼ at half
its size (H₂ = H₁Q₂ carries it into stage 3, whose Q₃ undoes half), stage 3's in full.

Accuracy in float32 (relative Frobenius error against the float64 SVD, log-spaced spectra,
``benchmarks/quarter_power.py``, ``tests/linalg/test_power.py``): ≈ 0.3% (p = ½) and ≈ 0.16%
(p = ¼) at κ ≤ 100; at κ = 1000 ≈ 1% (p = ½) and 1.1-2.6% (p = ¼), at κ = 1e4 6.5-9.4% (p = ¼), where
the smallest σ (σ^{1/4} is still 0.18 at σ = 1e-3) lie beyond stage 1's converged range — as they
do for Muon's own default polar factor, which errs by ≈ 30% there. Spectra with much weight far
below the top lose most: half the σ at 1e-3·σ_max errs 7% (three stage-3 steps from ℓ = 0.1: 2%).
On rank-deficient float32 G it is closer to the exact Ψ_p than the SVD of the rounded input (which
lifts the ~1e-7 rounding noise on the null directions to (1e-7)^p). Cost in m×m matmuls for a
square G: 3·steps₁ + 1 for stage 1, 4·stepsᵢ − 3 for stage i (+ 1 per degree-7 step, + 1 for H_i
unless last), 1 per applied Qᵢ — p = ½: 26, p = ¼: 34 with the default steps, against Muon's 12;
at aspect 4 (units of 2m³) p = ¼: 55 against Muon's 21 (BENCHMARKS.md, issue 22 item 4).

``"svd"`` (exact; σ = 0 stays 0): the reference, and the fallback for powers that are not a
multiple of 1/8. On the project's CPUs one 768×768 SVD costs about as much as 90 matmuls of that
size, so it is no longer the CPU default.

``"newton"`` (the coupled Newton iteration for the inverse k-th root, Higham, *Functions of
Matrices*, 2008, eq. 7.18; the form Shampoo uses): with A scaled so λ ≤ 1,

    X₀ = I, M₀ = A;   T = ((k+1)I − M)/k,   X ← X T,   M ← Tᵏ M,

which keeps M = Xᵏ A, so M → I forces X → A^{−1/k}; then A^{−r} = Xʲ. It converges to the
rounding level for any p = a/b with b ≤ 16, but slowly for small eigenvalues (≈ ×(1 + 1/k)ᵏ per
step); it is the ``"auto"`` choice on CUDA for powers ``"gram"`` does not cover.
"""

from __future__ import annotations

import functools
from fractions import Fraction
from typing import Sequence

import torch

from muonlab.linalg import iterations as it
from muonlab.linalg.checks import check_dtype, check_matrix
from muonlab.linalg.polar import POLAR_METHODS, polar, uses_gram_form
from muonlab.linalg.precision import iteration_dtype

POWER_METHODS = ("auto", "svd", "newton", "gram")
MAX_ROOT_DENOMINATOR = 32  # k in A^{-1/k}; p = a/b with b ≤ 16 is supported by "newton"
NEWTON_MAX_ITERATIONS = 100
# The Newton iteration checks for convergence (one host synchronization) every this many steps;
# converged or stalled matrices stop changing in between (masked updates), so checking less
# often only costs the few extra steps, not accuracy.
NEWTON_CHECK_EVERY = 8

# "gram": at most 4 stages, so p must be a multiple of 1/8 (r = (1 − p)/2 a multiple of 1/16).
GRAM_MAX_STAGES = 4
GRAM_STAGE_STEPS = (5, 3, 2, 2)
GRAM_SAFETY = 1.01  # as Polar Express: each step's polynomial is optimal on [ℓ, 1.01u]
# Greedy schedules for the later stages, derived by muonlab.linalg.schedules.derive_schedule(lower
# bound, steps, degrees=…) (tests check the tables against it). Stage i ≥ 2 scales its input H by
# c = 1.01²‖H²‖_F^{1/2} = 1.01²(Σ λ⁴)^{1/4} ≥ 1.01² λ_max (as "polar_express_gram_norm" scales X by
# ‖XXᵀ‖_F^{1/2}; H² is the first step's R² anyway, so it costs no product beyond the square), stage
# 3 by the bound from stage 2 where that is smaller (gram_power), and its "singular values" are
# √(λ/c). For a log-spaced spectrum of 768 values: stage 2 (λ = σ) ℓ = 0.021 at κ = 1000, 0.062 at
# κ = 100; stage 3 (λ = σ^{1/2}) ℓ = 0.14 at κ = 1000, 0.25 at κ = 100. Stage 2's table is derived
# for ℓ = 0.06 (κ ≈ 100): 3 steps map [0.06, 1] into [0.9965, 1.0035]; a table for ℓ = 0.02 needed 4
# steps for that, and its 3 steps erred more even at κ = 1000 (Ψ_¼: 13% against 5.6%, measured at
# 384×384), since the smallest σ weigh little. Stage 3's pair (degrees 7, 5) is derived for ℓ = 0.25:
# tables for 0.15 / 0.2 / 0.25 gave Ψ_¼ at 768×768 errors of 0.49% / 0.19% / 0.16% at κ = 100 and
# 8.4% / 8.9% / 9.4% at κ = 1e4 (a minimax table spreads its error over all of [ℓ, 1]); two quintics
# for 0.25: 0.26% at κ = 100. Steps beyond a table use the classic quintic (15/8, −10/8, 3/8).
# H_{i−1} is not reused as H_i² (which would save a product a stage): the two differ where the
# previous stage is not converged or rounding couples G's null directions to its range (rank-1 G
# in the Gram form erred 2-4%), and the first polynomial's large coefficients amplify the difference.
STAGE2_LOWER_BOUND = 0.06
STAGE2_COEFFICIENTS: tuple[it.Coefficients, ...] = (
    (6.4353221467003765, -16.852765870678752, 11.87548853050208),
    (2.4078287542728547, -1.7378914737289635, 0.4139189906414989),
    (1.8980380552935079, -1.2650756269550252, 0.36785208896808663),
    (1.865752271341847, -1.2315282390781355, 0.3657763319320471),
)
STAGE3_LOWER_BOUND = 0.25
STAGE3_DEGREES = (7, 5)
STAGE3_COEFFICIENTS: tuple[tuple[float, ...], ...] = (
    (4.446043098524512, -13.724126285546758, 19.455161527242147, -9.217665367027438),
    (1.8733307266664778, -1.2391320782050692, 0.36591142616502426),
)
CLASSIC_QUINTIC: it.Coefficients = it.POLAR_EXPRESS_COEFFICIENTS[-1]
PSD_SHIFT_ULPS = 1.0  # see psd_inverse_sqrt
PEAK_GRID_POINTS = 20001  # schedule_peak's grid on [0, 1]
PEAK_MARGIN = 1e-4  # the grid's maximum is below the true one by O(spacing²·|φ''|), far less than this


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


def gram_stages(p: float) -> int | None:
    """Stages ``"gram"`` needs for Ψ_p (r = (1 − p)/2 = j/2^S), or None if p is not a multiple of 1/8 in (0, 1)."""
    if not 0.0 < p < 1.0:
        return None
    r = (1 - Fraction(p).limit_denominator(2 ** (GRAM_MAX_STAGES - 1))) / 2
    power_of_two = r.denominator & (r.denominator - 1) == 0  # p = 2/7 passes the value check below
    if not power_of_two or abs(float(r) - (1 - p) / 2) > 1e-15:
        return None
    return r.denominator.bit_length() - 1  # denominator 2^S


def stage_schedule(stage: int, steps: int) -> list[tuple[float, ...]]:
    """The schedule of ``"gram"`` stage ``stage`` (1-based), ``steps`` long (stage 3's first step is degree 7)."""
    if stage == 1:
        return it.gram_norm_schedule(steps)
    table = STAGE2_COEFFICIENTS if stage == 2 else STAGE3_COEFFICIENTS
    return [table[i] if i < len(table) else CLASSIC_QUINTIC for i in range(steps)]


def check_stage_steps(steps: object, stages: int) -> tuple[int, ...]:
    if steps is None:
        return GRAM_STAGE_STEPS[:stages]
    if isinstance(steps, int) and not isinstance(steps, bool):
        steps = (steps,) * stages
    ok = isinstance(steps, (tuple, list)) and all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in steps)
    if not ok or len(steps) != stages:
        raise ValueError(
            f"steps must be None, a positive int or {stages} positive ints (one per stage of method='gram' "
            f"for this p), got {steps!r}"
        )
    return tuple(steps)


def spectral_power(
    x: torch.Tensor,
    p: float,
    method: str = "auto",
    dtype: torch.dtype | None = None,
    *,
    steps: int | Sequence[int] | None = None,
    check_finite: bool = True,
) -> torch.Tensor:
    """Ψ_p(x) = U Σᵖ Vᵀ for every matrix in ``x`` (shape (..., m, n)), p ∈ [0, 1].

    Methods (module docstring): ``"gram"`` (matmul-only composed Polar Express stages; p a multiple
    of 1/8), ``"svd"`` (exact; σ = 0 stays 0), ``"newton"`` (coupled inverse-root iteration; p = a/b
    with b ≤ 16), ``"auto"``: ``"gram"`` where p allows it, else ``"newton"`` on CUDA and
    ``"svd"`` elsewhere. p = 0 is :func:`polar` (``method`` then picks the polar method: any of
    ``POLAR_METHODS`` is accepted, ``steps`` its step count), p = 1 returns a copy of x.

    ``steps`` (``"gram"`` only): steps per stage, an int for all or one per stage (p = ½: 2
    stages, p = ¼: 3); default (5, 3, 2, 2)[:stages]. The precision is at least float32 on every
    device (``dtype=`` overrides, e.g. bfloat16 on CUDA for speed, at bf16 accuracy).
    """
    check_matrix(x, "x", check_finite=check_finite)
    p = _check_p(p)
    check_dtype(dtype)
    if p == 0.0:
        polar_method = "auto" if method in ("newton", "gram") else method
        if polar_method not in POLAR_METHODS:
            raise ValueError(f"method must be one of {', '.join(POLAR_METHODS)} for p = 0; got {method!r}")
        if steps is not None and not isinstance(steps, int):
            raise ValueError(f"steps must be None or an int for p = 0 (the polar method's steps), got {steps!r}")
        return polar(x, polar_method, steps, dtype=dtype, check_finite=False)
    if method not in POWER_METHODS:
        raise ValueError(f"method must be one of {', '.join(POWER_METHODS)}; got {method!r}")
    stages = gram_stages(p)
    if method == "auto":
        method = "gram" if stages is not None else ("newton" if x.device.type == "cuda" else "svd")
    if method == "gram":
        if stages is None:
            raise ValueError(f"method='gram' needs p a multiple of 1/8 in (0, 1) (e.g. 1/2, 1/4); got p={p!r}")
        stage_steps = check_stage_steps(steps, stages)
    elif steps is not None:
        raise ValueError(f"steps apply to method='gram' only, not {method!r}")
    if p == 1.0 or x.numel() == 0:
        return x.clone()
    m, n = x.shape[-2:]
    work = x.reshape(-1, m, n).to(iteration_dtype(x, "svd", dtype))
    if method == "svd":
        u, s, vh = torch.linalg.svd(work, full_matrices=False)
        out = (u * s.pow(p).unsqueeze(-2)) @ vh
    else:
        wide = work if m <= n else work.mT
        if method == "gram":
            out = gram_power(wide, p, stage_steps)
        else:
            r = inverse_root_exponent(p)
            out = matrix_inverse_root(torch.bmm(wide, wide.mT), r.denominator, r.numerator) @ wide
        out = out if m <= n else out.mT
    return out.reshape(x.shape).to(x.dtype)


def gram_power(x: torch.Tensor, p: float, stage_steps: Sequence[int]) -> torch.Tensor:
    """Ψ_p of a wide batch x (B, m, n), m ≤ n, by the staged Gram iteration (module docstring).

    x is first divided by max|x| (Ψ_p(cG) = cᵖ Ψ_p(G)), so G Gᵀ neither overflows nor underflows;
    a zero matrix maps to zero (every stage's result is multiplied onto G in the end).
    """
    r = (1 - Fraction(p).limit_denominator(2 ** (GRAM_MAX_STAGES - 1))) / 2
    stages = len(stage_steps)
    bits = [(r.numerator >> (stages - i)) & 1 for i in range(1, stages + 1)]  # r = Σ bᵢ 2^{−i}
    amax = it.max_abs(x).clamp_min(torch.finfo(x.dtype).tiny)
    y = x / amax
    h = _first_stage(y, it.gram_norm_schedule(stage_steps[0]))
    out = y
    for stage in range(2, stages + 1):
        schedule = stage_schedule(stage, stage_steps[stage - 1])
        square = torch.bmm(h, h)
        norm = torch.linalg.matrix_norm(square, keepdim=True).sqrt()
        scale = GRAM_SAFETY**2 * torch.where(norm > 0, norm, torch.ones_like(norm))
        if stage > 2:
            # Also λ_max(H_{i−1}) ≤ √c_{i−1}·φ/1.01 (H_{i−1} = √c_{i−1}·s·φ(s) on the previous stage's
            # singular values s ≤ 1/1.01, φ its schedule's peak): for log-spaced spectra a tighter
            # bound than ‖S²‖_F^{1/2}, which puts stage 3's smallest singular value at κ = 100, width 768,
            # at 0.25 instead of 0.18 — the lower bound its 2-step table is derived for.
            scale = torch.minimum(scale, GRAM_SAFETY * schedule_peak(previous_schedule) * previous_scale.sqrt())
        q = _inverse_sqrt(h, square, scale, schedule)
        if bits[stage - 1]:
            # Applied to y one at a time, earliest stage first: on G's (numerically) null directions
            # each Qᵢ is large (Π a/√c, its bounded stand-in for λ^{−1/2} = ∞), and rounding couples
            # those directions to the range at a level that grows stage by stage (H_i = H_{i−1}Qᵢ
            # inherits Qᵢ's coupling). Qᵢ·y first drops y's null part to rounding, so a later stage's
            # coupling is never multiplied by an earlier stage's large null values: rank-deficient
            # float32 G, p = ¼, erred 27% with the product Q₂Q₃ formed first, 0.5% this way.
            out = it.left_multiply(q, out)  # in y's layout: a tall G's Ψ_p comes back contiguous
        if stage < stages:
            h = _symmetric(torch.bmm(h, q))
            previous_schedule, previous_scale = schedule, scale
    return out * amax.pow(p) if out is y else out.mul_(amax.pow(p))


@functools.lru_cache(maxsize=None)
def _peak(schedule: tuple[tuple[float, ...], ...]) -> float:
    s = torch.linspace(0.0, 1.0, PEAK_GRID_POINTS, dtype=torch.float64)
    for coefficients in schedule:
        s2, acc = s * s, torch.full_like(s, coefficients[-1])
        for c in reversed(coefficients[:-1]):
            acc = c + s2 * acc
        s = s * acc
    return float(s.max()) * (1 + PEAK_MARGIN)


def schedule_peak(schedule: Sequence[Sequence[float]]) -> float:
    """max over s ∈ [0, 1] of the composed odd polynomials s ↦ p_K(…p₁(s)), from a fine grid (+ a margin).

    Bounds every singular value a stage leaves (its inputs are scaled into [0, 1/1.01]), so the next
    stage's scale is an upper bound of its λ_max without a norm of its own."""
    return _peak(tuple(tuple(float(v) for v in coefficients) for coefficients in schedule))


def _first_stage(y: torch.Tensor, schedule: Sequence[it.Coefficients]) -> torch.Tensor:
    """H₁ ≈ (y yᵀ)^{1/2} = y Uᵀ for a wide batch y, U ≈ polar(y) by Muon's default polar iteration.

    For aspect ratio ≥ 2 the iteration runs on the Gram matrix and restarts before its last step
    (X = Q X₀ and a fresh X Xᵀ): without the restart, H₁ = A·A^{−1/2} inherits float32's rounding
    of A = y yᵀ (absolute ≈ u·‖y‖², i.e. all of σ ≲ 1e-3·σ_max), and Ψ_¼ at κ = 1000 erred by
    18-36% instead of the direct form's 10-14% (measured at 48×96 and 256×1024). The last step's
    polynomial P is then applied to the small y Xᵀ (H₁ = y (P X)ᵀ = (y Xᵀ) P), not to X: U itself is
    never needed, which saves an m×m×n product.
    """
    x0, r0 = it.normalize_by_gram(y, 0.0, it.GRAM_NORM_SAFETY)
    if uses_gram_form(y.shape[-2], y.shape[-1], y.dtype):
        *head, (a, b, c) = schedule
        x = it.gram_quintic_iteration(x0, head, gram=r0) if head else x0
        r = torch.bmm(x, x.mT) if head else r0
        poly = torch.baddbmm(r, r, r, beta=b, alpha=c)  # bR + cR²
        poly.diagonal(dim1=-2, dim2=-1).add_(a)
        h = torch.bmm(torch.bmm(y, x.mT), poly)
    else:
        u = it.quintic_iteration(x0, schedule, gram=r0, overwrite=True)  # x0 is a scaled copy of y: scratch
        h = torch.bmm(y, u.mT)
    return _symmetric(h)


def _symmetric(h: torch.Tensor) -> torch.Tensor:
    return torch.add(h, h.mT).mul_(0.5)


def psd_inverse_sqrt(s: torch.Tensor, schedule: Sequence[Sequence[float]]) -> torch.Tensor:
    """≈ S^{−1/2} for a batch of symmetric PSD S (B, m, m): the quintic Gram iteration with R₀ = S/c.

    R₀ plays X₀X₀ᵀ for an X₀ with singular values √(λ(S)/c), c = 1.01²‖S²‖_F^{1/2} ≥ 1.01² λ_max
    (S² is the first step's R², so this tight scale costs nothing); Q_k = q_k(R₀) with
    q_k(λ) → λ^{−1/2}, and S^{−1/2} = Q/√c. Per step P = aI + bR + cR², Q ← PQ, R ← PRP (no R after
    the last step): 4·steps − 3 products, S² included. Eigenvalues below the schedule's lower bound are
    under-inverted, never amplified beyond Π a (the polynomials are bounded), and S = 0 gives
    (Π a)·I, finite. No host synchronization.
    """
    s2 = torch.bmm(s, s)
    denom = GRAM_SAFETY**2 * torch.linalg.matrix_norm(s2, keepdim=True).sqrt()
    return _inverse_sqrt(s, s2, torch.where(denom > 0, denom, torch.ones_like(denom)), schedule)


def _inverse_sqrt(
    s: torch.Tensor, s2: torch.Tensor, denom: torch.Tensor, schedule: Sequence[Sequence[float]]
) -> torch.Tensor:
    """S^{−1/2} by :func:`psd_inverse_sqrt`'s iteration, given S² and a scale ``denom`` > 0 with
    denom ≥ 1.01² λ_max(S) (:func:`gram_power` passes a tighter one than 1.01²‖S²‖_F^{1/2} in stage 3).
    A schedule entry (a, b, c) is a quintic step, (a, b, c, d) a degree-7 one."""
    r, r2 = s / denom, s2 / denom.square()
    # Shift R₀ by δ = PSD_SHIFT_ULPS·u: rounding leaves S with eigenvalues down to ≈ −u·λ_max on its
    # (numerical) null space, and the iteration amplifies negative ones (r ← r·P(r)², P(r) > a for
    # r < 0): in bf16 Ψ_¼ at κ = 1000 overflowed (error 1e15; with the shift 0.3, and 3-8% at
    # κ ≤ 100 — bf16 is not this method's precision). The shift costs nothing (R₀² shifted
    # alongside) and in float32 only touches eigenvalues far below every schedule's lower bound.
    shift = PSD_SHIFT_ULPS * torch.finfo(s.dtype).eps
    r2 = torch.add(r2, r, alpha=2 * shift)
    r2.diagonal(dim1=-2, dim2=-1).add_(shift * shift)
    r = r.clone()
    r.diagonal(dim1=-2, dim2=-1).add_(shift)
    q = None  # the identity
    for i, (a, b, *higher) in enumerate(schedule):
        if i > 0:
            r2 = torch.bmm(r, r)
        # bR + cR² (+ dR³ for a degree-7 step, one product more), as b(R + (c/b)R² + …)
        scale_b = b if b else 1.0
        poly = torch.add(r, r2, alpha=higher[0] / b) if b else r2 * higher[0]
        power = r2
        for coefficient in higher[1:]:
            power = torch.bmm(r, power)
            poly.add_(power, alpha=coefficient / scale_b)
        if b:
            poly.mul_(b)
        poly.diagonal(dim1=-2, dim2=-1).add_(a)
        q = poly if q is None else torch.bmm(poly, q)
        if i == len(schedule) - 1:
            break
        r = _symmetric(torch.bmm(torch.bmm(poly, r), poly))
    return q / denom.sqrt()


def matrix_inverse_root(a: torch.Tensor, k: int, j: int = 1) -> torch.Tensor:
    """A^{−j/k} for a batch of symmetric positive semidefinite A (B, m, m), matmul only.

    Each matrix iterates until ‖M − I‖_F reaches the rounding level or stops decreasing (checked
    on the host every :data:`NEWTON_CHECK_EVERY` steps; in between, finished matrices are
    masked, so they stop changing). For
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
    for step in range(1, NEWTON_MAX_ITERATIONS + 1):
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
        if step % NEWTON_CHECK_EVERY == 0 and not bool(active.any()):
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
