"""Deriving greedy odd-quintic schedules (Polar Express style) for a given lower bound ℓ₀.

A quintic step maps every singular value σ ↦ p(σ) = aσ + bσ³ + cσ⁵. If all σ of X lie in [ℓ, u],
the greedy choice (Amsel, Persson, Musco, Gower, "The Polar Express", arXiv 2505.16932) is the odd
quintic minimizing the worst relative error

    E(p) = max_{x ∈ [ℓ, u]} |1 − p(x)|,

after which σ ∈ [min p, max p] over [ℓ, u], the next step's interval. Here each step's p is
optimal on [ℓ, s·u] (s = 1.01, the paper's safety factor) while the interval carried forward is
the image of [ℓ, u]: σ pushed slightly above u by rounding still lands in range. The minimax
problem is a small linear program on a fine grid (variables a, b, c, E; |1 − p(x_i)| ≤ E),
solved with scipy's HiGHS; the image of [ℓ, u] is exact (endpoints and the real roots of p′,
a quadratic in x²).

The same construction with odd polynomials of higher degree (:func:`minimax_odd`, ``degrees=`` of
:func:`derive_schedule`) gives the degree-7 step of Ψ_p's third stage (:mod:`muonlab.linalg.power`).

:func:`derive_schedule` recomputes the tables stored in :mod:`muonlab.linalg.iterations`
(``tests/linalg/test_schedules.py`` checks that they agree). It needs scipy, a test
dependency; the library itself only reads the stored tables.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

Coefficients = tuple[float, float, float]

SAFETY = 1.01
GRID_POINTS = 2000


def odd_polynomial(coefficients: Sequence[float], x: np.ndarray) -> np.ndarray:
    """p(x) = c₀x + c₁x³ + c₂x⁵ + … (Horner in x²)."""
    x2 = x * x
    acc = np.zeros_like(x, dtype=float) + coefficients[-1]
    for c in reversed(coefficients[:-1]):
        acc = c + x2 * acc
    return x * acc


def quintic(coefficients: Coefficients, x: np.ndarray) -> np.ndarray:
    return odd_polynomial(coefficients, x)


def image(coefficients: Sequence[float], lower: float, upper: float) -> tuple[float, float]:
    """Exact [min p, max p] over [lower, upper]: p at the endpoints and at the real roots of p′ inside."""
    points = [lower, upper]
    # p′(x) = Σ (2j+1) c_j x^{2j}: a polynomial in y = x² (a quadratic for a quintic)
    derivative = [(2 * j + 1) * c for j, c in enumerate(coefficients)]
    for y in np.roots(derivative[::-1]) if len(derivative) > 1 else ():
        if abs(y.imag) < 1e-12 and y.real > 0:
            x = float(np.sqrt(y.real))
            if lower < x < upper:
                points.append(x)
    values = odd_polynomial(coefficients, np.asarray(points))
    return float(values.min()), float(values.max())


def minimax_odd(lower: float, upper: float, degree: int = 5, points: int = GRID_POINTS) -> tuple[tuple[float, ...], float]:
    """The odd polynomial of ``degree`` minimizing max |1 − p(x)| over [lower, upper] (on a log+linear grid), and that error."""
    from scipy.optimize import linprog  # test dependency, only needed to re-derive the tables

    if not 0 < lower < upper:
        raise ValueError(f"need 0 < lower < upper, got lower={lower!r}, upper={upper!r}")
    if degree < 1 or degree % 2 == 0:
        raise ValueError(f"degree must be a positive odd integer, got {degree!r}")
    x = np.unique(np.concatenate([np.geomspace(lower, upper, points), np.linspace(lower, upper, points)]))
    basis = np.stack([x ** (2 * j + 1) for j in range(degree // 2 + 1)], axis=1)
    terms = basis.shape[1]
    ones = np.ones((len(x), 1))
    # 1 − p(x) ≤ E  and  p(x) − 1 ≤ E, over variables (c₀, c₁, …, E); minimize E
    a_ub = np.vstack([np.hstack([-basis, -ones]), np.hstack([basis, -ones])])
    b_ub = np.concatenate([-np.ones(len(x)), np.ones(len(x))])
    cost = [0.0] * terms + [1.0]
    result = linprog(cost, A_ub=a_ub, b_ub=b_ub, bounds=[(None, None)] * (terms + 1), method="highs")
    if not result.success:
        raise RuntimeError(f"minimax LP failed on [{lower}, {upper}]: {result.message}")
    *coefficients, error = (float(v) for v in result.x)
    return tuple(coefficients), error


def minimax_quintic(lower: float, upper: float, points: int = GRID_POINTS) -> tuple[Coefficients, float]:
    """The odd quintic minimizing max |1 − p(x)| over [lower, upper] (on a log+linear grid), and that error."""
    return minimax_odd(lower, upper, 5, points)


def derive_schedule(
    lower: float, steps: int, safety: float = SAFETY, degrees: Sequence[int] | None = None
) -> list[tuple[float, ...]]:
    """Greedy schedule for σ ∈ [lower, 1]: each step optimal on [ℓ, safety·u], then [ℓ, u] ← p([ℓ, u]).

    ``degrees``: each step's odd degree (default 5 for all, the quintic tables)."""
    if steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    degrees = [5] * steps if degrees is None else list(degrees)
    if len(degrees) != steps:
        raise ValueError(f"degrees must give one degree per step ({steps}), got {degrees!r}")
    lo, hi = float(lower), 1.0
    schedule = []
    for degree in degrees:
        coefficients, _ = minimax_odd(lo, safety * hi, degree)
        schedule.append(coefficients)
        lo, hi = image(coefficients, lo, hi)
    return schedule


def singular_value_range(schedule, lower: float, upper: float = 1.0) -> tuple[float, float]:
    """Where σ ∈ [lower, upper] ends after applying ``schedule`` (exact, step by step images).

    Step-by-step images bound the composite's range from outside (each step's whole interval is
    pushed through the next), and equal it when every intermediate image is attained — true here
    since each step is continuous on an interval.
    """
    lo, hi = float(lower), float(upper)
    for coefficients in schedule:
        lo, hi = image(coefficients, lo, hi)
    return lo, hi
