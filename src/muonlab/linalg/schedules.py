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

:func:`derive_schedule` recomputes the tables stored in :mod:`muonlab.linalg.iterations`
(``tests/linalg/test_schedules.py`` checks that they agree). It needs scipy, a test
dependency; the library itself only reads the stored tables.
"""

from __future__ import annotations

import numpy as np

Coefficients = tuple[float, float, float]

SAFETY = 1.01
GRID_POINTS = 2000


def quintic(coefficients: Coefficients, x: np.ndarray) -> np.ndarray:
    a, b, c = coefficients
    return x * (a + x * x * (b + c * x * x))


def image(coefficients: Coefficients, lower: float, upper: float) -> tuple[float, float]:
    """Exact [min p, max p] over [lower, upper]: p at the endpoints and at the real roots of p′ inside."""
    a, b, c = coefficients
    points = [lower, upper]
    # p′(x) = a + 3b x² + 5c x⁴: a quadratic in y = x²
    for y in np.roots([5.0 * c, 3.0 * b, a]):
        if abs(y.imag) < 1e-12 and y.real > 0:
            x = float(np.sqrt(y.real))
            if lower < x < upper:
                points.append(x)
    values = quintic(coefficients, np.asarray(points))
    return float(values.min()), float(values.max())


def minimax_quintic(lower: float, upper: float, points: int = GRID_POINTS) -> tuple[Coefficients, float]:
    """The odd quintic minimizing max |1 − p(x)| over [lower, upper] (on a log+linear grid), and that error."""
    from scipy.optimize import linprog  # test dependency, only needed to re-derive the tables

    if not 0 < lower < upper:
        raise ValueError(f"need 0 < lower < upper, got lower={lower!r}, upper={upper!r}")
    x = np.unique(np.concatenate([np.geomspace(lower, upper, points), np.linspace(lower, upper, points)]))
    basis = np.stack([x, x**3, x**5], axis=1)
    ones = np.ones((len(x), 1))
    # 1 − p(x) ≤ E  and  p(x) − 1 ≤ E, over variables (a, b, c, E); minimize E
    a_ub = np.vstack([np.hstack([-basis, -ones]), np.hstack([basis, -ones])])
    b_ub = np.concatenate([-np.ones(len(x)), np.ones(len(x))])
    result = linprog([0.0, 0.0, 0.0, 1.0], A_ub=a_ub, b_ub=b_ub, bounds=[(None, None)] * 4, method="highs")
    if not result.success:
        raise RuntimeError(f"minimax LP failed on [{lower}, {upper}]: {result.message}")
    a, b, c, error = (float(v) for v in result.x)
    return (a, b, c), error


def derive_schedule(lower: float, steps: int, safety: float = SAFETY) -> list[Coefficients]:
    """Greedy schedule for σ ∈ [lower, 1]: each step optimal on [ℓ, safety·u], then [ℓ, u] ← p([ℓ, u])."""
    if steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    lo, hi = float(lower), 1.0
    schedule = []
    for _ in range(steps):
        coefficients, _ = minimax_quintic(lo, safety * hi)
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
