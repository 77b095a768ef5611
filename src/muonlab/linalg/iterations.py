"""Matmul-only polar iterations: quintic Newton–Schulz, Polar Express, cubic NS, Gram NS.

Every iteration here applies an odd polynomial to all singular values at once. Starting from
X₀ = G / ‖G‖_F (so σ_max ≤ 1), one quintic step is

    A = X Xᵀ,   X ← a X + (b A + c A²) X,

i.e. σ ← a σ + b σ³ + c σ⁵ for every singular value. Wide orientation (m ≤ n) keeps A the small
m×m Gram matrix: tall inputs are transposed in and out. Cost per step: 4m²n + 2m³ flops.

All functions take and return a 3-D batch (B, m, n) with m ≤ n, already in the working dtype.
"""

from __future__ import annotations

from typing import Sequence

import torch

Coefficients = tuple[float, float, float]

# Keller Jordan's quintic (github.com/KellerJordan/Muon; also torch.optim.Muon's default).
# It maps σ ∈ [ℓ, 1] into roughly [0.68, 1.2] after 5 steps for κ ≤ 100 — not to 1, on purpose.
KELLER_COEFFICIENTS: Coefficients = (3.4445, -4.7750, 2.0315)
KELLER_STEPS = 5

# Polar Express (Amsel, Persson, Musco, Gower, arXiv 2505.16932), lower bound ℓ₀ = 1e-3, the
# optimal quintic per step. The last pair is the limit polynomial, repeated for further steps.
POLAR_EXPRESS_COEFFICIENTS: tuple[Coefficients, ...] = (
    (8.28721201814563, -23.595886519098837, 17.300387312530933),
    (4.107059111542203, -2.9478499167379106, 0.5448431082926601),
    (3.9486908534822946, -2.908902115962949, 0.5518191394370137),
    (3.3184196573706015, -2.488488024314874, 0.51004894012372),
    (2.300652019954817, -1.6689039845747493, 0.4188073119525673),
    (1.891301407787398, -1.2679958271945868, 0.37680408948524835),
    (1.8750014808534479, -1.2500016453999487, 0.3750001645474248),
    (1.875, -1.25, 0.375),
)
# The paper's safety factor: each listed step but the last maps [ℓ, 1.01] (not [ℓ, 1]) into range,
# so rounding that pushes σ slightly above 1 cannot make the next step diverge.
POLAR_EXPRESS_SAFETY = 1.01
POLAR_EXPRESS_STEPS = 5

# Greedy quintic schedule for X₀ = G / (1.01·‖G Gᵀ‖_F^{1/2}) (see :func:`normalize_by_gram`),
# derived by muonlab.linalg.schedules.derive_schedule(GRAM_NORM_LOWER_BOUND, 6) (Polar Express's
# greedy minimax construction, each step optimal on [ℓ, 1.01·u]; tests check the table against it).
# ℓ₀ = 3.9e-3 is σ_min/scale for a κ = 100, log-spaced spectrum of 768 singular values under that
# normalization (‖G‖_F would give 1.1e-3). 4 steps map σ ∈ [3.9e-3, 1] into [0.857, 1.142]; the
# worst κ = 100 spectrum at width 768 (all σ = 1 but one, ℓ = 1.9e-3) into [0.461, 1.142]. Steps
# beyond the table use the classic quintic (15/8, −10/8, 3/8), which converges to exactly 1 (the
# derived triples' fixed points are 1 only to ~1e-7, as they are optimal for [ℓ, 1.01u]).
GRAM_NORM_LOWER_BOUND = 3.9e-3
GRAM_NORM_COEFFICIENTS: tuple[Coefficients, ...] = (
    (8.264233420075763, -23.896547658976445, 17.35619188490154),
    (3.950511038693719, -2.887381710296554, 0.5381837077624873),
    (3.3323806131972877, -2.452529505276947, 0.4904573967936498),
    (2.3295882488870405, -1.671129647573241, 0.40703075023660584),
    (1.8872789088094086, -1.2537876030898174, 0.366953150608191),
    (1.865734322819599, -1.231515147862684, 0.36578096662642),
)
GRAM_NORM_SAFETY = 1.01
GRAM_NORM_STEPS = 4

CUBIC_STEPS = 24  # σ grows ×1.5 per step while small: 24 steps lift σ = 1e-4 to 1 and converge


def polar_express_schedule(steps: int) -> list[Coefficients]:
    """The first ``steps`` Polar Express coefficient triples, safety factor applied."""
    s = POLAR_EXPRESS_SAFETY
    table = [(a / s, b / s**3, c / s**5) for a, b, c in POLAR_EXPRESS_COEFFICIENTS[:-1]]
    table.append(POLAR_EXPRESS_COEFFICIENTS[-1])
    return [table[min(i, len(table) - 1)] for i in range(steps)]


def gram_norm_schedule(steps: int) -> list[Coefficients]:
    """The first ``steps`` triples of :data:`GRAM_NORM_COEFFICIENTS`, then the converging classic quintic."""
    table = GRAM_NORM_COEFFICIENTS + (POLAR_EXPRESS_COEFFICIENTS[-1],)
    return [table[min(i, len(table) - 1)] for i in range(steps)]


def constant_schedule(coefficients: Sequence[float], steps: int) -> list[Coefficients]:
    a, b, c = (float(v) for v in coefficients)
    return [(a, b, c)] * steps


def max_abs(x: torch.Tensor) -> torch.Tensor:
    """max|G| per matrix of a batch (B, m, n), shape (B, 1, 1); NaN if G has one.

    As max(max G, −min G): two reads of G and no temporary (``x.abs().amax()`` allocates a copy),
    and not ``linalg.vector_norm(x, inf)``, whose CPU kernel is far slower than other reductions
    (BENCHMARKS.md, issue 22 item 4). Both reductions propagate NaN, and ±Inf shows in one."""
    dims = (-2, -1)
    return torch.maximum(x.amax(dim=dims, keepdim=True), x.amin(dim=dims, keepdim=True).neg_())


def left_multiply(q: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Q X for batches q (B, m, m) and x (B, m, n), stored in x's memory layout.

    A wide x that is the transposed view of a tall matrix gives a result whose transpose is
    contiguous (BLAS writes it directly, no copy), so the tall update the caller gets back is
    contiguous: adding a transposed view into a parameter reads it with a stride, many times slower
    than a contiguous add on CPU (BENCHMARKS.md, issue 22 item 4)."""
    out = torch.empty_like(x)
    return torch.bmm(q, x, out=out)


def _inverse_max_abs(x: torch.Tensor) -> torch.Tensor:
    """1/max|G| per matrix, shape (B, 1, 1); 1/tiny for a zero matrix (its entries stay 0)."""
    return max_abs(x).clamp_min(torch.finfo(x.dtype).tiny).reciprocal()


def _scaled_copy(x: torch.Tensor, scale: torch.Tensor, fresh: bool) -> torch.Tensor:
    """x·scale; in place when ``fresh`` (x is a temporary the caller made, e.g. its dtype conversion)."""
    return x.mul_(scale) if fresh else x * scale


def normalize(x: torch.Tensor, eps: float = 0.0, safety: float = 1.0, *, fresh: bool = False) -> torch.Tensor:
    """X₀ = G / (safety·‖G‖_F + eps), computed without overflow or underflow.

    Dividing by max|G| first keeps ‖·‖_F finite for entries near the dtype's range (1e±18 in
    fp32 squares to 1e±36), so polar(c·G) = polar(G) for any c > 0 when eps = 0. A zero matrix
    maps to zero. ``eps`` is in G's own units (torch.optim.Muon's ``eps``), kept overflow-free by
    multiplying it by the same 1/max. One new (B, m, n) tensor at most (none when ``fresh``: x is
    then scaled in place), and no host synchronization.
    """
    inv_amax = _inverse_max_abs(x)
    y = _scaled_copy(x, inv_amax, fresh)
    denom = safety * torch.linalg.vector_norm(y, dim=(-2, -1), keepdim=True)
    if eps:
        denom = denom + eps * inv_amax
    # A zero matrix has norm 0: divide by 1 instead (its entries are 0 already).
    return y.div_(torch.where(denom > 0, denom, torch.ones_like(denom)))


def normalize_by_gram(
    x: torch.Tensor, eps: float = 0.0, safety: float = 1.0, *, fresh: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """X₀ = G / (safety·‖G Gᵀ‖_F^{1/2} + eps) and its Gram matrix X₀X₀ᵀ, without overflow. x: (B, m, n), m ≤ n.

    ‖G Gᵀ‖_F = (Σ σᵢ⁴)^{1/2} ≥ σ_max², so σ_max(X₀) ≤ 1 as with ‖G‖_F, but σ_min(X₀) is larger: the
    scale is ≤ r^{1/4}·σ_max for rank r instead of r^{1/2}·σ_max. The Gram matrix is the first
    quintic step's A anyway, so the better start costs one m×m norm. Like :func:`normalize`,
    G is divided by max|G| first (entries ≤ 1, Gram entries ≤ n), and a zero matrix maps to zero.
    """
    inv_amax = _inverse_max_abs(x)
    y = _scaled_copy(x, inv_amax, fresh)
    gram = torch.bmm(y, y.mT)
    denom = safety * torch.linalg.vector_norm(gram, dim=(-2, -1), keepdim=True).sqrt()
    if eps:
        denom = denom + eps * inv_amax
    denom = torch.where(denom > 0, denom, torch.ones_like(denom))
    return y.div_(denom), gram.div_(denom.square())


def quintic_iteration(
    x: torch.Tensor, schedule: Sequence[Coefficients], gram: torch.Tensor | None = None, *, overwrite: bool = False
) -> torch.Tensor:
    """Apply X ← aX + (bA + cA²)X, A = XXᵀ, for each (a, b, c) in ``schedule``. x: (B, m, n), m ≤ n.

    ``gram``: X Xᵀ of the input when the caller has it already (saves the first step's product).
    Works in four buffers allocated once — X and the next X (ping-pong), A and the polynomial — so
    the iteration's memory is 2 copies of X plus 2 of the small m×m matrix, whatever the step count.
    ``overwrite=True``: ``x`` is scratch and serves as one of the two buffers (one copy of X less);
    otherwise it is left untouched. ``gram``, when given, is overwritten.
    """
    if not schedule:
        return x
    batch, m, _ = x.shape
    if gram is None:
        gram = torch.empty(batch, m, m, dtype=x.dtype, device=x.device)
        torch.bmm(x, x.mT, out=gram)
    poly = torch.empty_like(gram)
    spare = torch.empty_like(x)
    for i, (a, b, c) in enumerate(schedule):
        if i > 0:
            torch.bmm(x, x.mT, out=gram)
        torch.baddbmm(gram, gram, gram, beta=b, alpha=c, out=poly)  # bA + cA²
        # aX + (bA + cA²)X as (aI + bA + cA²)X: adding a on the small matrix's diagonal saves
        # a copy of X (baddbmm's "input" term) per step.
        poly.diagonal(dim1=-2, dim2=-1).add_(a)
        torch.bmm(poly, x, out=spare)
        x, spare = spare, (x if overwrite or i > 0 else torch.empty_like(x))
    return x


def cubic_iteration(x: torch.Tensor, steps: int, *, overwrite: bool = False) -> torch.Tensor:
    """Classic Newton–Schulz X ← 1.5X − 0.5 XXᵀX: converges to 1 for σ ∈ (0, √3), quadratically near 1.

    Like :func:`quintic_iteration`, in ping-pong buffers allocated once."""
    if not steps:
        return x
    batch, m, _ = x.shape
    gram = torch.empty(batch, m, m, dtype=x.dtype, device=x.device)
    spare = torch.empty_like(x)
    for i in range(steps):
        torch.bmm(x, x.mT, out=gram)
        torch.baddbmm(x, gram, x, beta=1.5, alpha=-0.5, out=spare)
        x, spare = spare, (x if overwrite or i > 0 else torch.empty_like(x))
    return x


def gram_quintic_iteration(
    x: torch.Tensor,
    schedule: Sequence[Coefficients],
    restart_every: int | None = None,
    gram: torch.Tensor | None = None,
) -> torch.Tensor:
    """The quintic iteration run on the small Gram matrix, applied to X₀ once at the end.

    Every iterate is X_k = Q_k X₀ with Q_k a polynomial in R₀ = X₀X₀ᵀ (m×m), so all of Q_k and
    R_k = X_k X_kᵀ commute. With P = aI + bR + cR²:

        Q ← P Q,   R ← P R P,   and finally X = Q X₀.

    Cost: 2m²n (R₀) + 8m³ per step + 2m²n (the final product), less 2m³ in the first step (Q₀ = I)
    and 4m³ in the last (its R is not needed): 4m²n + (8·steps − 6)m³ for steps ≥ 2, against
    (4m²n + 2m³) per step for the direct iteration — less work once n ≳ 1.7 m with 5 steps. In
    low precision Q and R drift
    apart from their definition; ``restart_every`` recomputes X = Q X₀ and R = X Xᵀ that often.
    ``gram``: R₀ = X₀X₀ᵀ when the caller has it already.
    """
    x0 = x
    r = torch.bmm(x0, x0.mT) if gram is None else gram
    q = None  # None stands for the identity, saving the first product
    for i, (a, b, c) in enumerate(schedule):
        if restart_every and i > 0 and i % restart_every == 0 and q is not None:
            x0 = left_multiply(q, x0)
            r = torch.bmm(x0, x0.mT)
            q = None
        poly = torch.baddbmm(r, r, r, beta=b, alpha=c)  # bR + cR²
        poly.diagonal(dim1=-2, dim2=-1).add_(a)  # + aI, in place
        q = poly if q is None else torch.bmm(poly, q)
        if i == len(schedule) - 1:
            break  # the last R is never used: skip its 4m³ flops
        pr = torch.bmm(poly, r)
        r = torch.bmm(pr, poly)
        r = torch.add(r, r.mT).mul_(0.5)  # keep R symmetric against rounding drift
    return x0 if q is None else left_multiply(q, x0)
