"""The polar-factor methods and their facts, in one place: what each one is, its default step count, whether
it runs in bf16 on CUDA (matmul-only, modest accuracy needs), whether it takes quintic coefficients, its flop count,
and for the converging factorization methods (QDWH, ZOLO-PD) the dtypes they run in, their iteration count and
their operation count (:meth:`PolarMethod.iterations`, :meth:`PolarMethod.work`).

:func:`muonlab.polar` validates and fills defaults from here, :mod:`muonlab.linalg.precision` picks the
iteration's dtype from ``bf16_on_cuda``, the optimizers check their ``method``/``ns_coefficients`` against it,
the benches count flops with :meth:`PolarMethod.flops`, and the optimizers weigh each matrix's work for the
distributed split with the same count. Adding a method means one entry here and its evaluation in
:mod:`muonlab.linalg.polar`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from muonlab.linalg import iterations as it
from muonlab.linalg import qdwh as qd
from muonlab.linalg import zolo


def quintic_flops(steps: int, m: int, n: int) -> float:
    """The direct quintic on a wide m×n matrix (m ≤ n): A = XXᵀ (2m²n), bA + cA² (2m³), (aI + …)X (2m²n) per step."""
    return steps * (4.0 * m * m * n + 2.0 * m**3)


def gram_quintic_flops(steps: int, m: int, n: int) -> float:
    """The quintic run on the Gram matrix: R₀ and the final QX₀ (2m²n each), then 8m³ per step, less 2m³
    in the first (Q starts as I) and 4m³ in the last (its R is not needed)."""
    per_step = 2.0 if steps == 1 else 8.0 * steps - 6.0
    return 4.0 * m * m * n + per_step * m**3


def qr_flops(rows: int, n: int) -> float:
    """Householder QR of a rows×n matrix with the thin Q formed (LAPACK geqrf + orgqr): 2·(2rows·n² − ⅔n³)."""
    return 2.0 * (2.0 * rows * n * n - 2.0 * n**3 / 3.0)


def qdwh_work(m: int, n: int, dtype: torch.dtype) -> float:
    """QDWH's default schedule on a tall m×n matrix (m ≥ n): per QR step the QR of the (m+n)×n stack and
    Q₁Q₂ᵀ (2mn²); per Cholesky step XᵀX (2mn²), the factor (n³/3) and the solve with m right-hand sides (2mn²)."""
    total = 0.0
    for _, _, c in qd.default_schedule(dtype):
        if c > qd.QR_THRESHOLD:
            total += qr_flops(m + n, n) + 2.0 * m * n * n
        else:
            total += 4.0 * m * n * n + n**3 / 3.0
    return total


def zolo_work(m: int, n: int, dtype: torch.dtype) -> float:
    """ZOLO-PD's default schedule on a tall m×n matrix: the starting scale (XᵀX and two squarings, 2mn² + 4n³),
    then per iteration of degree r either r QRs of (m+n)×n stacks and Σ Q₁Q₂ᵀ (2rmn²), or XᵀX (2mn²) and r
    Cholesky factors and solves (r(n³/3 + 2mn²))."""
    total = 2.0 * m * n * n + 4.0 * n**3
    for step in zolo.default_schedule(dtype, n):
        r = step.function.degree
        if step.qr:
            total += r * (qr_flops(m + n, n) + 2.0 * m * n * n)
        else:
            total += 2.0 * m * n * n + r * (n**3 / 3.0 + 2.0 * m * n * n)
    return total


@dataclass(frozen=True)
class PolarMethod:
    """One way to compute polar(G) = U Vᵀ."""

    name: str
    summary: str
    default_steps: int | None  # None: not a fixed-step iteration (exact, or run until converged)
    bf16_on_cuda: bool  # only matrix products and modest accuracy needs: runs in bf16 on CUDA by default
    accepts_coefficients: bool  # a constant quintic (a, b, c) may replace its schedule
    quintic: bool = False  # an odd quintic per step (evaluated on the Gram matrix at aspect ≥ 2 in fp32+)
    # the dtypes it can run in (None: any floating dtype); factorization methods need LAPACK-style kernels
    dtypes: tuple[torch.dtype, ...] | None = None

    def steps(self, steps: int | None) -> int | None:
        return self.default_steps if steps is None else steps

    def flops(self, m: int, n: int, steps: int | None = None, gram_form: bool = False) -> float | None:
        """Matmul flops of one polar factor of an m×n matrix, or None where there is no fixed count."""
        m, n = min(m, n), max(m, n)
        k = self.steps(steps)
        if k is None:
            return None
        if self.name == "cubic":
            return k * 4.0 * m * m * n
        if self.name == "gram_newton_schulz" or (self.quintic and gram_form):
            return gram_quintic_flops(k, m, n)
        return quintic_flops(k, m, n)

    def iterations(self, m: int, n: int, dtype: torch.dtype, steps: int | None = None) -> int | None:
        """Iterations of one polar factor of an m×n matrix in ``dtype`` (None for the SVD)."""
        if self.name == "qdwh":
            return len(qd.default_schedule(dtype, steps))
        if self.name == "zolo_pd":
            return len(zolo.default_schedule(dtype, min(m, n), steps))
        return self.steps(steps)

    def work(self, m: int, n: int, dtype: torch.dtype = torch.float32) -> float | None:
        """Flops of one polar factor with the default schedule, factorizations included (None for the SVD):
        the matmul count of :meth:`flops` for the matrix iterations, the LAPACK operation counts for QDWH and ZOLO-PD."""
        m, n = max(m, n), min(m, n)
        if self.name == "qdwh":
            return qdwh_work(m, n, dtype)
        if self.name == "zolo_pd":
            return zolo_work(m, n, dtype)
        return self.flops(m, n)


_METHODS = (
    PolarMethod("svd", "exact (σ = 0 stays 0)", None, bf16_on_cuda=False, accepts_coefficients=False),
    PolarMethod("newton_schulz", "Keller Jordan's quintic, (3.4445, −4.7750, 2.0315) × 5", it.KELLER_STEPS,
                bf16_on_cuda=True, accepts_coefficients=True, quintic=True),
    PolarMethod("polar_express", "Amsel et al. 2025, the optimal quintic per step, safety 1.01", it.POLAR_EXPRESS_STEPS,
                bf16_on_cuda=True, accepts_coefficients=False, quintic=True),
    PolarMethod("polar_express_gram_norm", "X₀ = G/(1.01‖GGᵀ‖_F^½) and a greedy schedule derived for it",
                it.GRAM_NORM_STEPS, bf16_on_cuda=True, accepts_coefficients=False, quintic=True),
    PolarMethod("gram_newton_schulz", "the Polar Express schedule iterated on the small Gram matrix",
                it.POLAR_EXPRESS_STEPS, bf16_on_cuda=True, accepts_coefficients=True),
    PolarMethod("cubic", "X ← 1.5X − 0.5XXᵀX, converges to 1", it.CUBIC_STEPS, bf16_on_cuda=False,
                accepts_coefficients=False),
    PolarMethod("qdwh", "Nakatsukasa–Bai–Gygi 2010, QR then Cholesky steps", None, bf16_on_cuda=False,
                accepts_coefficients=False),
    # Converges in 2 iterations: degree r = 8 in float64 (κ ≤ 1e16), r = 4 in float32 (κ ≤ 2²⁴); the r terms
    # of an iteration run as one batched QR (first) or Cholesky (second) call. See muonlab.linalg.zolo.
    PolarMethod("zolo_pd", "Nakatsukasa–Freund 2016, Zolotarev's function in 2 iterations", None, bf16_on_cuda=False,
                accepts_coefficients=False, dtypes=(torch.float32, torch.float64)),
)
POLAR_METHOD_REGISTRY: dict[str, PolarMethod] = {method.name: method for method in _METHODS}
# "auto" stands for one of them, chosen by the input (see muonlab.linalg.polar.resolve_method).
POLAR_METHODS = ("auto",) + tuple(POLAR_METHOD_REGISTRY)
MATMUL_METHODS = frozenset(name for name, method in POLAR_METHOD_REGISTRY.items() if method.bf16_on_cuda)
