"""ZOLO-PD: the polar factor in two iterations of Zolotarev's best rational approximation of sign.

Nakatsukasa & Freund, "Computing fundamental matrix decompositions accurately via the matrix
sign function in two iterations: the power of Zolotarev's functions", SIAM Review 58(3), 2016.

Zolotarev's function of type (2r+1, 2r) for the lower bound ℓ on σ_min/σ_max, scaled so Ẑ(1) = 1,

    Ẑ(x; ℓ) = M̂ x ∏_{j=1}^{r} (x² + c_{2j}) / (x² + c_{2j−1})
            = M̂ x (1 + Σ_j a_j / (x² + c_{2j−1})),
    c_i = ℓ² sn²(iK'/(2r+1); ℓ') / cn²(iK'/(2r+1); ℓ'),   ℓ' = √(1 − ℓ²),   K' = K(ℓ'),
    a_j = −∏_k (c_{2j−1} − c_{2k}) / ∏_{k≠j} (c_{2j−1} − c_{2k−1}),   M̂ = ∏_j (1 + c_{2j−1})/(1 + c_{2j}),

is the best rational approximation of sign on [−1, −ℓ] ∪ [ℓ, 1]; it maps [ℓ, 1] onto [ℓ₁, 1] with
ℓ₁ = Ẑ(ℓ; ℓ). Composing Ẑ(·; ℓ₁) ∘ Ẑ(·; ℓ) gives Zolotarev's function of type ((2r+1)², ·), so
two iterations converge for every κ ≤ 1e16 in float64 with r = 8. One iteration on the matrix
X (σ(X) ⊂ [ℓ, 1]) is

    X ← M̂ (X + Σ_j a_j X (XᵀX + c_{2j−1} I)⁻¹),

the r terms independent: here one batched QR (or Cholesky) call for all of them. While X is
ill conditioned each term comes from the QR factorization [X; √c I] = [Q₁; Q₂] R (backward
stable): X (XᵀX + cI)⁻¹ = Q₁Q₂ᵀ/√c. Once the matrix XᵀX + cI is well conditioned
((1 + c)/(ℓ² + c) ≤ 100, QDWH's switch) the Cholesky factor of XᵀX + cI solves it for fewer flops.

Coefficients. sn/cn at modulus ℓ' ≈ 1 cannot be taken from the usual AGM recursion (cn near the
quarter period K' has lost all relative accuracy when ℓ is tiny), so c_i is evaluated from theta
series with the small nome (DLMF §20.2, §22.2): for ℓ ≤ 1/√2, through Jacobi's imaginary
transformation sc(u; ℓ') = −i sn(iu; ℓ) with nome q = exp(−πK(ℓ')/K(ℓ)); for ℓ > 1/√2 directly
at modulus ℓ' with nome q = exp(−πK(ℓ)/K(ℓ')). Both nomes are ≤ e^{−π}, so a few terms reach
full float64 accuracy; K comes from the arithmetic–geometric mean. The lower bound after an
iteration follows from the modular equation of degree 2r+1: ℓ₁ is the modulus whose nome is
q(ℓ)^{1/(2r+1)}, which also gives 1 − ℓ₁ without cancellation.

Degree r and schedule: the smallest r for which two iterations take ℓ to within 10u of 1
(u = the dtype's machine epsilon, QDWH's tolerance). In float64 r = 1, 2, 3, 4, 5, 6, 7, 8 suffice for κ up
to 1.16, 7.9, 214, 1.7e4, 4.3e6, 3.2e9, 7.2e12, 4.9e16: r = 8 for every κ ≤ 1e16, the paper's table.

Fixed up front, no host synchronization (as :mod:`muonlab.linalg.qdwh`): the schedule depends
only on the dtype and the matrix size, never on the data. The start X₀ = G/α uses
α = ‖(G̃ᵀG̃)⁴‖₁^{1/8}·α₀ with G̃ = G/α₀ and α₀ = √(‖G‖₁‖G‖_∞) (QDWH's scaling): an upper bound on
σ_max(G) that overshoots it by at most n^{1/16} (for symmetric H ⪰ 0, ‖H‖₂ ≤ ‖H‖₁ ≤ √n‖H‖₂),
where α₀ alone may overshoot by (mn)^{1/4}. Zolotarev's functions fall off sharply below ℓ, so
the lower bound must really bound σ_min/α: ℓ₀ = 1/(κ_max · n^{1/16}) with κ_max = 1e16 in
float64 (the paper's range; singular values below ≈ u·σ_max are rounding noise) and 2²⁴ = 1/u in
float32. That is r = 8 in float64 and r = 4 in float32, two iterations each, QR then Cholesky
(after the first iteration ℓ₁ ≈ 0.4–0.5, so XᵀX + c₁I has condition number ≈ 4–7). A caller that knows a smaller κ passes it
(``kappa=``) and gets the paper's smaller r.

Works on a batch (B, m, n) with m ≥ n (tall orientation); zero and rank-deficient matrices are
fine (XᵀX + cI with c > 0 and [X; √c I] always have full rank; zero stays zero).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# Cholesky form once the matrices factored, XᵀX + cI with σ(X) ⊂ [ℓ, 1], have condition number
# (1 + c)/(ℓ² + c) at most this (QDWH's switch at c = 100 bounds I + cXᵀX's condition by 101).
CHOLESKY_MAX_CONDITION = 100.0
MAX_DEGREE = 16
# The κ every matrix is assumed to have at most when the caller gives none (see the module docstring).
KAPPA_MAX = {torch.float64: 1e16, torch.float32: 2.0**24}
SCALE_POWER = 4  # α from ‖(XᵀX)^SCALE_POWER‖₁: overshoots σ_max by at most n^{1/(4·SCALE_POWER)}
ITERATIONS = 2  # the degree is chosen so that this many suffice
_THETA_TERMS = 12


def _agm(a: float, b: float) -> float:
    """Arithmetic–geometric mean of a, b > 0 (quadratic convergence; 60 steps is far more than needed)."""
    for _ in range(60):
        if abs(a - b) <= 1e-16 * a:
            break
        a, b = 0.5 * (a + b), math.sqrt(a * b)
    return 0.5 * (a + b)


def elliptic_k(complement: float) -> float:
    """K(k), the complete elliptic integral of the first kind, from the complementary modulus k' = √(1 − k²):
    K = π / (2 AGM(1, k')) (DLMF §19.8(i)); k' = 0 gives +inf."""
    if complement <= 0.0:
        return math.inf
    return math.pi / (2.0 * _agm(1.0, complement))


def _complement(ell: float) -> float:
    """√(1 − ℓ²) without the cancellation of 1 − ℓ² near ℓ = 1."""
    return math.sqrt(max((1.0 - ell) * (1.0 + ell), 0.0))


def log_nome(ell: float) -> float:
    """ln q(ℓ) = −π K(ℓ')/K(ℓ), the nome of modulus ℓ ∈ (0, 1] (−inf at ℓ = 0 is excluded; 0 at ℓ = 1)."""
    return -math.pi * elliptic_k(ell) / elliptic_k(_complement(ell))


def _modulus_ratio(lnq: float) -> float:
    """k = θ₂(0, q)² / θ₃(0, q)² for the nome q = e^{lnq} ≤ e^{−π} (DLMF 20.9.1): the modulus with that nome."""
    theta2 = sum(2.0 * math.exp(lnq * (n + 0.5) ** 2) for n in range(_THETA_TERMS))
    theta3 = 1.0 + sum(2.0 * math.exp(lnq * n * n) for n in range(1, _THETA_TERMS))
    return (theta2 / theta3) ** 2


def modulus_from_log_nome(lnq: float) -> tuple[float, float]:
    """The modulus ℓ with nome e^{lnq} (lnq ≤ 0) and 1 − ℓ, both to full relative accuracy."""
    if lnq == 0.0:
        return 1.0, 0.0
    if lnq <= -math.pi:  # small modulus: its own nome is small
        ell = _modulus_ratio(lnq)
        return ell, 1.0 - ell
    # modulus near 1: the complementary nome exp(π²/lnq) is the small one and gives ℓ' (ln q · ln q' = π², DLMF §20.7(viii))
    complement = _modulus_ratio(math.pi**2 / lnq)
    ell = _complement(complement)
    return ell, complement * complement / (1.0 + ell)


def zolotarev_c(ell: float, r: int) -> list[float]:
    """c_i = ℓ² sc²(iK'/(2r+1); ℓ'), i = 1 … 2r, for ℓ ∈ (0, 1], from theta series (see the module docstring)."""
    out = []
    if ell <= math.sqrt(0.5):
        # sc(u; ℓ') = −i sn(iu; ℓ) = 2q^{1/4} S / (√ℓ T) with q the nome of ℓ, y = πu/(2K(ℓ)) = −(t/2) ln q:
        # S = Σ (−1)ⁿ qⁿ⁽ⁿ⁺¹⁾ sinh((2n+1)y),  T = 1 + 2 Σ_{n≥1} (−1)ⁿ q^{n²} cosh(2ny)   (θ₁(iy)/i, θ₄(iy));
        # written with e^{−y}S so that no term overflows for tiny ℓ.
        lnq = log_nome(ell)
        for i in range(1, 2 * r + 1):
            t = i / (2 * r + 1)
            y = -0.5 * t * lnq
            s = sum((-1) ** n * math.exp(lnq * (n * (n + 1) - n * t)) * -math.expm1(-2.0 * (2 * n + 1) * y) / 2.0
                    for n in range(_THETA_TERMS))
            tt = 1.0 + sum((-1) ** n * (math.exp(lnq * (n * n - n * t)) + math.exp(lnq * (n * n + n * t)))
                           for n in range(1, _THETA_TERMS))
            out.append(4.0 * ell * math.exp(lnq * (0.5 - t)) * (s / tt) ** 2)
        return out
    # modulus ℓ' < 1/√2, nome q = exp(−πK(ℓ)/K(ℓ')), v = πt/2: sc = θ₁(v)/(√ℓ θ₂(v)), and
    # θ₂(v) = 2q^{1/4} Σ (−1)ⁿ qⁿ⁽ⁿ⁺¹⁾ sin((2n+1)(π/2 − v)) keeps its relative accuracy near v = π/2.
    lnq = -math.pi * elliptic_k(_complement(ell)) / elliptic_k(ell)
    for i in range(1, 2 * r + 1):
        t = i / (2 * r + 1)
        v, w = 0.5 * math.pi * t, 0.5 * math.pi * (1.0 - t)
        weights = [1.0] + [math.exp(lnq * n * (n + 1)) for n in range(1, _THETA_TERMS)]
        num = sum((-1) ** n * q * math.sin((2 * n + 1) * v) for n, q in enumerate(weights))
        den = sum((-1) ** n * q * math.sin((2 * n + 1) * w) for n, q in enumerate(weights))
        out.append(ell * (num / den) ** 2)
    return out


@dataclass(frozen=True)
class ZolotarevFunction:
    """Ẑ(x; ℓ) of type (2r+1, 2r) in partial fractions: M̂ x (1 + Σ_j a_j/(x² + c_{2j−1}))."""

    ell: float
    poles: tuple[float, ...]  # c_1, c_3, …, c_{2r−1}
    zeros: tuple[float, ...]  # c_2, c_4, …, c_{2r}
    weights: tuple[float, ...]  # a_1, …, a_r
    scale: float  # M̂

    @property
    def degree(self) -> int:
        return len(self.poles)

    def __call__(self, x: float) -> float:
        """Ẑ(x) in product form (host float64)."""
        value = self.scale * x
        for even, odd in zip(self.zeros, self.poles):
            value *= (x * x + even) / (x * x + odd)
        return value

    def cholesky_condition(self) -> float:
        """The largest condition number of XᵀX + c_{2j−1}I over matrices with σ(X) ⊂ [ℓ, 1]."""
        c = self.poles[0]
        return (1.0 + c) / (self.ell * self.ell + c)


def zolotarev_function(ell: float, r: int) -> ZolotarevFunction:
    """Ẑ(·; ℓ) of type (2r+1, 2r), ℓ ∈ (0, 1], r ≥ 1."""
    if not 0.0 < ell <= 1.0:
        raise ValueError(f"ell must be in (0, 1], got {ell!r}")
    c = zolotarev_c(ell, r)
    poles, zeros = tuple(c[0::2]), tuple(c[1::2])
    weights = []
    for j, pole in enumerate(poles):
        num = math.prod(pole - zero for zero in zeros)
        den = math.prod(pole - other for k, other in enumerate(poles) if k != j)
        weights.append(-num / den)
    scale = math.prod((1.0 + odd) / (1.0 + even) for odd, even in zip(poles, zeros))
    return ZolotarevFunction(ell, poles, zeros, tuple(weights), scale)


def lower_bound_after(ell: float, r: int, iterations: int = 1) -> tuple[float, float]:
    """ℓ_k = Ẑ(ℓ_{k−1}; ℓ_{k−1}) after ``iterations`` steps of degree r from ℓ, and 1 − ℓ_k.

    The modular equation of degree 2r+1: the nome of ℓ_k is q(ℓ)^{1/(2r+1)^k}.
    """
    return modulus_from_log_nome(log_nome(ell) / (2 * r + 1) ** iterations)


def zolotarev_degree(ell: float, tol: float, iterations: int = ITERATIONS) -> int:
    """The smallest r with 1 − ℓ ≤ ``tol`` after ``iterations`` steps from the lower bound ``ell``."""
    for r in range(1, MAX_DEGREE + 1):
        if lower_bound_after(ell, r, iterations)[1] <= tol:
            return r
    raise ValueError(f"kappa too large: degree {MAX_DEGREE} does not converge in {iterations} iterations "
                     f"from the lower bound {ell:g}")


@dataclass(frozen=True)
class ZoloStep:
    """One iteration: the function to apply and whether to apply it through QR (else Cholesky)."""

    function: ZolotarevFunction
    qr: bool


def tolerance(dtype: torch.dtype) -> float:
    """How close to 1 the lower bound must get: 10u, u the dtype's machine epsilon (as QDWH)."""
    return 10.0 * torch.finfo(dtype).eps


def scale_overshoot(n: int) -> float:
    """The most the starting scale α exceeds σ_max for a matrix with n columns (tall orientation)."""
    return max(n, 1) ** (1.0 / (4 * SCALE_POWER))


def default_kappa(dtype: torch.dtype) -> float:
    if dtype not in KAPPA_MAX:
        raise ValueError(f"zolo_pd runs in float32 or float64, got {dtype}")
    return KAPPA_MAX[dtype]


def zolo_schedule(kappa: float, n: int, dtype: torch.dtype, steps: int | None = None) -> list[ZoloStep]:
    """The iterations for matrices with σ_max/σ_min ≤ ``kappa`` and n columns, in ``dtype``.

    ℓ₀ = 1/(κ·n^{1/16}) (the scaled matrix's lower bound), r from :func:`zolotarev_degree`, then
    iterations until 1 − ℓ ≤ 10u (at most :data:`ITERATIONS`), capped at ``steps``.
    """
    tol = tolerance(dtype)
    ell = min(1.0, 1.0 / (kappa * scale_overshoot(n)))
    r = zolotarev_degree(ell, tol)
    schedule, gap = [], 1.0 - ell
    while gap > tol and len(schedule) < ITERATIONS:
        function = zolotarev_function(ell, r)
        schedule.append(ZoloStep(function, qr=function.cholesky_condition() > CHOLESKY_MAX_CONDITION))
        ell, gap = lower_bound_after(ell, r)
    return schedule if steps is None else schedule[:steps]


def default_schedule(dtype: torch.dtype, n: int, steps: int | None = None) -> list[ZoloStep]:
    """The schedule :func:`zolo_pd` runs for n-column matrices in ``dtype`` when no κ is given."""
    return zolo_schedule(default_kappa(dtype), n, dtype, steps)


def starting_scale(x: torch.Tensor) -> torch.Tensor:
    """α ≥ σ_max per matrix of a tall batch (B, m, n), at most n^{1/16}·σ_max; 1 for zero matrices. Shape (B, 1, 1)."""
    # α₀ = √(‖X‖₁‖X‖_∞) ≥ ‖X‖₂ (Hölder) first, so that the Gram powers cannot overflow; the two roots
    # taken apart, as the product of the norms over- or underflows for entries beyond ≈ 1e±150 (float64).
    norm1 = x.abs().sum(dim=-2).amax(dim=-1)
    norminf = x.abs().sum(dim=-1).amax(dim=-1)
    alpha0 = torch.sqrt(norm1) * torch.sqrt(norminf)
    alpha0 = torch.where(alpha0 > 0, alpha0, torch.ones_like(alpha0))[:, None, None]
    scaled = x / alpha0
    power = scaled.mT @ scaled
    for _ in range(SCALE_POWER.bit_length() - 1):  # (XᵀX)² , (XᵀX)⁴
        power = power @ power
    bound = power.abs().sum(dim=-2).amax(dim=-1)[:, None, None] ** (1.0 / (2 * SCALE_POWER))
    alpha = alpha0 * bound
    return torch.where(alpha > 0, alpha, torch.ones_like(alpha))


def _vector(values: list[float], like: torch.Tensor) -> torch.Tensor:
    """Host floats as a 1-D tensor on ``like``'s device without a host synchronization (pinned, non-blocking copy)."""
    host = torch.tensor(values, dtype=like.dtype)
    if like.device.type == "cuda":
        return host.pin_memory().to(like.device, non_blocking=True)
    return host.to(like.device)


def _qr_step(x: torch.Tensor, step: ZolotarevFunction) -> torch.Tensor:
    """X ← M̂ (X + Σ_j (a_j/√c_j) Q₁ⱼ Q₂ⱼᵀ) with [X; √c_j I] = [Q₁ⱼ; Q₂ⱼ] Rⱼ, all j in one QR call."""
    batch, m, n = x.shape
    r = step.degree
    roots = _vector([math.sqrt(c) for c in step.poles], x)
    eye = torch.eye(n, dtype=x.dtype, device=x.device) * roots[:, None, None]  # (r, n, n)
    stacked = torch.cat([x.expand(r, batch, m, n), eye[:, None].expand(r, batch, n, n)], dim=-2)
    q, _ = torch.linalg.qr(stacked.reshape(r * batch, m + n, n), mode="reduced")
    q = q.reshape(r, batch, m + n, n)
    w = _vector([a / math.sqrt(c) for a, c in zip(step.weights, step.poles)], x)
    # Σ_j w_j Q₁ⱼ Q₂ⱼᵀ as one contraction over (j, k)
    update = torch.einsum("rbik,rbjk->bij", q[:, :, :m, :], q[:, :, m:, :] * w[:, None, None, None])
    return (x + update).mul_(step.scale)


def _cholesky_step(x: torch.Tensor, step: ZolotarevFunction) -> torch.Tensor:
    """X ← M̂ (X + Σ_j a_j X (XᵀX + c_j I)⁻¹) through the Cholesky factors of the r matrices, in one call."""
    batch, m, n = x.shape
    r = step.degree
    poles = _vector(list(step.poles), x)
    weights = _vector(list(step.weights), x)
    gram = x.mT @ x
    eye = torch.eye(n, dtype=x.dtype, device=x.device)
    z = gram.unsqueeze(0) + poles[:, None, None, None] * eye  # (r, B, n, n)
    # cholesky_ex: no host check of the info flag; the eigenvalues of z are ≥ c_j > 0.
    chol, _ = torch.linalg.cholesky_ex(z)
    solved = torch.cholesky_solve(x.mT.unsqueeze(0).expand(r, batch, n, m), chol)  # (XᵀX + c_j I)⁻¹ Xᵀ
    update = torch.einsum("r,rbnm->bmn", weights, solved)
    return (x + update).mul_(step.scale)


def zolo_pd(x: torch.Tensor, steps: int | None = None, kappa: float | None = None) -> torch.Tensor:
    """Polar factor of a tall batch x (B, m, n), m ≥ n, float32 or float64, by ZOLO-PD.

    ``kappa``: an upper bound on σ_max/σ_min of every matrix (default: :data:`KAPPA_MAX` of the dtype);
    ``steps`` caps the iterations (at most 2 are ever needed).
    """
    if x.dtype not in KAPPA_MAX:
        raise ValueError(f"zolo_pd runs in float32 or float64, got {x.dtype}")
    if kappa is None:
        kappa = KAPPA_MAX[x.dtype]
    elif isinstance(kappa, bool) or not isinstance(kappa, (int, float)) or not 1.0 <= kappa < math.inf:
        raise ValueError(f"kappa must be a number ≥ 1 (an upper bound on σ_max/σ_min), got {kappa!r}")
    schedule = zolo_schedule(float(kappa), x.shape[-1], x.dtype, steps)
    x = x / starting_scale(x)
    for step in schedule:
        x = _qr_step(x, step.function) if step.qr else _cholesky_step(x, step.function)
    return x


def zolo_iterations(dtype: torch.dtype, n: int) -> int:
    """How many iterations :func:`zolo_pd` runs by default (for docs, benches and tests)."""
    return len(default_schedule(dtype, n))
