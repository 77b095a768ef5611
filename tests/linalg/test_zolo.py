"""ZOLO-PD: Zolotarev coefficients against independent evaluations, the degree table, and the polar
factor against the float64 SVD (docs/math.md §3; Nakatsukasa & Freund, SIAM Review 58(3), 2016)."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from muonlab import polar
from muonlab.linalg import zolo
from muonlab.linalg.methods import POLAR_METHOD_REGISTRY
from tests.reference import random_orthonormal, rel_err, spectral_matrix

EPS64 = torch.finfo(torch.float64).eps
EPS32 = torch.finfo(torch.float32).eps


# --- coefficients -------------------------------------------------------------------------------

def scipy_c(ell: float, r: int) -> np.ndarray:
    """c_i = ℓ² sn²/cn² (iK'/(2r+1); ℓ') by scipy.special (parameter m = ℓ'² = 1 − ℓ²)."""
    special = pytest.importorskip("scipy.special")
    m = 1.0 - ell * ell
    k_prime = special.ellipkm1(ell * ell)  # K(m) from 1 − m = ℓ², accurate for m near 1
    sn, cn, _, _ = special.ellipj(np.arange(1, 2 * r + 1) * k_prime / (2 * r + 1), m)
    return ell * ell * sn**2 / cn**2


# ℓ = 2⁻ᵏ makes m = 1 − ℓ² exact; below ≈ 1e-3 scipy's cn near the quarter period loses digits itself
# (it runs the AGM recursion this module avoids), so tiny ℓ is checked against mpmath below.
@pytest.mark.parametrize("ell", [0.999, 0.9, math.sqrt(0.5), 0.7, 0.5, 0.1, 2.0**-5, 2.0**-8])
@pytest.mark.parametrize("r", [1, 2, 4, 8])
def test_coefficients_match_scipy(ell, r):
    ours = np.array(zolo.zolotarev_c(ell, r))
    np.testing.assert_allclose(ours, scipy_c(ell, r), rtol=1e-12, atol=0)


@pytest.mark.parametrize("ell", [0.9, 0.3, 1e-3, 1e-6])
def test_elliptic_k_matches_scipy(ell):
    special = pytest.importorskip("scipy.special")
    assert zolo.elliptic_k(ell) == pytest.approx(float(special.ellipkm1(ell * ell)), rel=1e-14)  # K(ℓ')
    assert zolo.elliptic_k(math.sqrt(1 - ell * ell)) == pytest.approx(float(special.ellipk(ell * ell)), rel=1e-14)


@pytest.mark.parametrize("ell", [1e-4, 1e-8, EPS64, 1e-16, 1e-20])
@pytest.mark.parametrize("r", [1, 4, 8])
def test_coefficients_match_mpmath_for_tiny_ell(ell, r):
    """At ℓ ≈ 1e-16 the modulus ℓ' rounds to 1 in float64: 60-digit arithmetic is the independent check."""
    mp = pytest.importorskip("mpmath")
    with mp.workdps(60):
        m = 1 - mp.mpf(ell) ** 2
        quarter = mp.ellipk(m)
        ref = []
        for i in range(1, 2 * r + 1):
            u = i * quarter / (2 * r + 1)
            ref.append(float(mp.mpf(ell) ** 2 * (mp.ellipfun("sn", u, m=m) / mp.ellipfun("cn", u, m=m)) ** 2))
    np.testing.assert_allclose(zolo.zolotarev_c(ell, r), ref, rtol=1e-12, atol=0)


@pytest.mark.parametrize("ell", [0.95, 0.5, 1e-3, 1e-16])
@pytest.mark.parametrize("r", [1, 3, 8])
def test_reflection_identity(ell, r):
    """sc(K' − u; ℓ') sc(u; ℓ') = 1/ℓ (the quarter-period shift, DLMF §22.4) gives c_i c_{2r+1−i} = ℓ²: the two theta
    branches and both ends of the argument range agree."""
    c = zolo.zolotarev_c(ell, r)
    for i in range(2 * r):
        assert c[i] * c[2 * r - 1 - i] == pytest.approx(ell * ell, rel=1e-13)


@pytest.mark.parametrize("ell, r", [(0.5, 1), (0.5, 2), (1e-2, 2), (1e-2, 5), (1e-2, 8), (1e-8, 2), (1e-8, 5),
                                    (1e-8, 8), (1e-16, 2), (1e-16, 5), (1e-16, 8)])
def test_zolotarev_function_equioscillates(ell, r):
    """Best approximation: on [ℓ, 1] the scaled Ẑ reaches its maximum 1 at x = 1 and at r interior points,
    its minimum ℓ₁ at x = ℓ and at r interior points; ℓ₁ from the modular equation is that minimum."""
    f = zolo.zolotarev_function(ell, r)
    ell1, gap = zolo.lower_bound_after(ell, r)
    assert gap > 1e-10  # (ℓ, r) chosen so that the oscillation is far above float64 rounding
    x = np.logspace(math.log10(ell), 0.0, 200_001)
    v = f.scale * x
    for zero, pole in zip(f.zeros, f.poles):
        v = v * (x * x + zero) / (x * x + pole)
    inner = v[1:-1]
    maxima = inner[(inner > v[:-2]) & (inner > v[2:])]
    minima = inner[(inner < v[:-2]) & (inner < v[2:])]
    assert len(maxima) == r and len(minima) == r
    assert abs(v[-1] - 1.0) < 1e-14 and v.max() <= 1.0 + 1e-14
    assert np.abs(maxima - 1.0).max() < 1e-6 * gap
    assert np.abs(minima - ell1).max() < 1e-6 * gap
    assert abs(f(ell) - ell1) < 1e-6 * gap


@pytest.mark.parametrize("ell", [0.9, 0.2, 1e-3, 1e-8, 1e-16])
@pytest.mark.parametrize("r", [1, 3, 8])
def test_lower_bound_after_is_the_function_value(ell, r):
    """The modular equation (nome q^{1/(2r+1)}) and the product form of Ẑ(ℓ; ℓ) give the same ℓ₁,
    and composing two iterations is one of degree (2r+1)²."""
    ell1, gap1 = zolo.lower_bound_after(ell, r)
    assert zolo.zolotarev_function(ell, r)(ell) == pytest.approx(ell1, rel=1e-13)
    assert gap1 == pytest.approx(1.0 - ell1, abs=1e-16)
    ell2 = zolo.lower_bound_after(ell1, r)[0] if gap1 > 0 else 1.0
    assert zolo.lower_bound_after(ell, r, 2)[0] == pytest.approx(ell2, rel=1e-13)


def test_degree_table():
    """The smallest r for which two iterations reach 1 − ℓ ≤ 10u in float64: the paper's table, r = 8 at κ = 1e16."""
    tol = zolo.tolerance(torch.float64)
    table = {1.1: 1, 2.0: 2, 1e2: 3, 1e4: 4, 1e6: 5, 1e8: 6, 1e12: 7, 1e16: 8}
    for kappa, r in table.items():
        assert zolo.zolotarev_degree(1.0 / kappa, tol) == r, kappa
        if r > 1:  # and r − 1 does not suffice there
            assert zolo.lower_bound_after(1.0 / kappa, r - 1, 2)[1] > tol
    # monotone in κ
    degrees = [zolo.zolotarev_degree(10.0**-e, tol) for e in range(17)]
    assert degrees == sorted(degrees)


@pytest.mark.parametrize("n", [1, 64, 768, 8192])
def test_default_schedules(n):
    """float64: r = 8, QR then Cholesky; float32: r = 4; both exactly 2 iterations and ℓ reaches 1 − 10u."""
    for dtype, r in ((torch.float64, 8), (torch.float32, 4)):
        schedule = zolo.default_schedule(dtype, n)
        assert [s.function.degree for s in schedule] == [r, r]
        assert schedule[0].qr and not schedule[1].qr
        assert schedule[0].function.ell * zolo.KAPPA_MAX[dtype] * zolo.scale_overshoot(n) == pytest.approx(1.0)
        assert zolo.lower_bound_after(schedule[0].function.ell, r, 2)[1] <= zolo.tolerance(dtype)
        assert POLAR_METHOD_REGISTRY["zolo_pd"].iterations(n, 2 * n, dtype) == 2
    # a caller's smaller κ gives the table's smaller degree
    assert [s.function.degree for s in zolo.zolo_schedule(100.0, 1, torch.float64)] == [3, 3]


# --- the polar factor in float64 ------------------------------------------------------------------

def _orthogonality(u: torch.Tensor) -> float:
    n = u.shape[-1]
    return float(torch.linalg.matrix_norm(u.mT @ u - torch.eye(n, dtype=u.dtype), ord=2).max())


def _svd_polar(a: torch.Tensor) -> torch.Tensor:
    u, _, vh = torch.linalg.svd(a, full_matrices=False)
    return u @ vh


def _distance(u: torch.Tensor, v: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(u - v, ord=2).max())


def _square_with_one_small_singular_value(n: int, kappa: float, gen: torch.Generator) -> torch.Tensor:
    """G = U diag(s) Vᵀ with s log-spaced in [0.1, 1] and s_n = 1/κ: κ(G) = κ, but the polar factor's
    own condition number 2/(σ_n + σ_{n−1}) ≤ 20, so U is determined by G to ≈ 20u."""
    s = torch.logspace(0.0, -1.0, n, dtype=torch.float64)
    s[-1] = 1.0 / kappa
    return (random_orthonormal(n, n, generator=gen) * s) @ random_orthonormal(n, n, generator=gen).mT


def _decoupled_kappa_1e16(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """κ = 1e16 as stored, and its polar factor by the float64 SVD: a dense (n−1)×(n−1) block B with σ ∈ [0.1, 1]
    and one entry 1e-16, placed by random signed permutations (exact in floating point).

    A dense product U diag(s) Vᵀ cannot hold σ_min = 1e-16·σ_max: its rounding (≈ u·σ_max per entry) moves σ_min
    by more than its size, so the stored matrix may be of any κ ≥ 1e15, even singular, and the direction of its
    polar factor on σ_min is then not determined by the data — for any method, the SVD included (LAPACK's SVD of
    this very matrix returns σ_min off by ≈ 5%). Here the reference is exact on the tiny direction (its entry of
    the polar factor is 1) and the float64 SVD's U Vᵀ of the well-conditioned B elsewhere.
    """
    block = _square_with_one_small_singular_value(n - 1, 10.0, gen)
    block = block / torch.linalg.matrix_norm(block, ord=2)
    g = torch.zeros(n, n, dtype=torch.float64)
    g[: n - 1, : n - 1] = block
    g[n - 1, n - 1] = 1e-16
    ref = torch.zeros(n, n, dtype=torch.float64)
    ref[: n - 1, : n - 1] = _svd_polar(block)
    ref[n - 1, n - 1] = 1.0
    rows, cols = torch.randperm(n, generator=gen), torch.randperm(n, generator=gen)
    signs = torch.where(torch.rand(n, generator=gen, dtype=torch.float64) < 0.5, -1.0, 1.0)
    return (g[rows][:, cols] * signs).contiguous(), (ref[rows][:, cols] * signs).contiguous()


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.sampled_from([16, 48, 96]), kappa=st.sampled_from([1.0, 1e3, 1e8, 1e16]))
def test_square_float64_within_10_n_eps_of_the_svd(seed, n, kappa):
    """The done criterion: ‖UᵀU − I‖₂ and ‖U − U_svd‖₂ ≤ 10·n·u for κ ∈ {1, 1e3, 1e8, 1e16}, on square inputs
    whose polar factor is well conditioned (the claim is about the method, not about an ill-posed U)."""
    gen = torch.Generator().manual_seed(seed)
    if kappa == 1.0:
        g = random_orthonormal(n, n, generator=gen) * 3.0
        reference = _svd_polar(g)
    elif kappa == 1e16:
        g, reference = _decoupled_kappa_1e16(n, gen)
    else:
        g = _square_with_one_small_singular_value(n, kappa, gen)
        reference = _svd_polar(g)
    u = polar(g, "zolo_pd")
    bound = 10 * n * EPS64
    assert _orthogonality(u) <= bound
    assert _distance(u, reference) <= bound


@pytest.mark.parametrize("shape", [(64, 64), (96, 48), (48, 96)])
@pytest.mark.parametrize("kappa", [1.0, 1e3, 1e8, 1e16])
def test_log_spaced_spectra_float64(kappa, shape):
    """Dense G with σ log-spaced in [1/κ, 1]: backward error ‖G − UH‖ ≤ 10·n·u‖G‖ for every κ; orthogonality
    ≤ 10·n·u wherever the stored G really has κ ≤ 1e16 (κ ≤ 1e8 here, see _decoupled_kappa_1e16); the distance
    to the SVD's factor within its conditioning, 10·n·u·κ."""
    gen = torch.Generator().manual_seed(int(math.log10(kappa)) + 7 * shape[0] + shape[1])
    ref = spectral_matrix(*shape, kappa=kappa, generator=gen)
    g = ref.matrix
    u = polar(g, "zolo_pd")
    n = min(shape)
    bound = 10 * n * EPS64
    h = u.mT @ g if shape[0] >= shape[1] else g @ u.mT
    h = 0.5 * (h + h.mT)
    residual = g - (u @ h if shape[0] >= shape[1] else h @ u)
    assert float(torch.linalg.matrix_norm(residual, ord=2)) <= bound * float(torch.linalg.matrix_norm(g, ord=2))
    if kappa <= 1e8:
        tall = u if shape[0] >= shape[1] else u.mT
        assert _orthogonality(tall) <= bound
        assert _distance(u, _svd_polar(g)) <= bound * kappa


@pytest.mark.parametrize("kappa", [1e3, 1e8, 1e15])
def test_at_most_two_iterations(kappa):
    """Two iterations are the whole method: steps=2 is the default result, steps=1 is not converged."""
    g = spectral_matrix(40, 30, kappa=kappa).matrix
    full = polar(g, "zolo_pd")
    assert torch.equal(polar(g, "zolo_pd", steps=2), full)
    assert torch.equal(polar(g, "zolo_pd", steps=5), full)
    one = polar(g, "zolo_pd", steps=1)
    assert _orthogonality(one) > 1e-6


def test_each_iteration_is_one_batched_factorization(monkeypatch):
    """The r terms of an iteration (and every matrix of the batch) go to one QR call, then one Cholesky call."""
    g = spectral_matrix(30, 20, kappa=1e6, batch=(3,)).matrix
    calls = {"qr": [], "cholesky_ex": []}
    for name in calls:
        original = getattr(torch.linalg, name)

        def counted(a, *args, _original=original, _name=name, **kwargs):
            calls[_name].append(tuple(a.shape))
            return _original(a, *args, **kwargs)

        monkeypatch.setattr(torch.linalg, name, counted)
    u = polar(g, "zolo_pd")
    assert calls["qr"] == [(8 * 3, 30 + 20, 20)]  # r = 8 stacks [X; √c I] per matrix
    assert calls["cholesky_ex"] == [(8, 3, 20, 20)]
    assert _orthogonality(u) <= 10 * 20 * EPS64


@pytest.mark.parametrize("kappa", [1.0, 1e3, 1e8])
def test_agrees_with_qdwh(kappa):
    ref = spectral_matrix(50, 30, kappa=kappa, batch=(2,))
    assert rel_err(polar(ref.matrix, "zolo_pd"), polar(ref.matrix, "qdwh")) < 1e-13 * max(1.0, kappa)


# --- float32 ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(64, 64), (96, 32), (32, 96)])
@pytest.mark.parametrize("kappa", [1.0, 1e3, 1e5, 1e7])
def test_float32_accuracy(kappa, shape):
    """float32 (r = 4, 2 iterations): orthogonal to ≈ 5u (bound 10·n·u) up to κ = 1e7 ≈ 1/u; the distance to the
    exact factor is the factor's conditioning, ≈ u·κ (bound 10·n·u·κ)."""
    ref = spectral_matrix(*shape, kappa=kappa)
    u = polar(ref.matrix.float(), "zolo_pd")
    assert u.dtype == torch.float32
    n = min(shape)
    tall = u.double() if shape[0] >= shape[1] else u.double().mT
    assert _orthogonality(tall) <= 10 * n * EPS32
    assert rel_err(u, ref.polar) <= 10 * n * EPS32 * kappa


# --- batches, zeros, rank deficiency, refusals --------------------------------------------------------

def test_batch_of_mixed_matrices_equals_each_alone():
    """One schedule for the batch: a zero, a rank-deficient and an ill-conditioned matrix do not disturb each other."""
    ill = spectral_matrix(40, 24, kappa=1e12)
    mats = [
        spectral_matrix(40, 24, kappa=10.0).matrix,
        torch.zeros(40, 24, dtype=torch.float64),
        ill.matrix,
        spectral_matrix(40, 24, kappa=10.0, rank=5).matrix,
    ]
    batch = torch.stack(mats).reshape(2, 2, 40, 24)
    out = polar(batch, "zolo_pd").reshape(4, 40, 24)
    assert torch.isfinite(out).all()
    for i, m in enumerate(mats):
        assert torch.allclose(out[i], polar(m, "zolo_pd"), rtol=0, atol=1e-13)
    assert torch.equal(out[1], torch.zeros(40, 24, dtype=torch.float64))
    assert _orthogonality(out[2]) <= 10 * 24 * EPS64


@pytest.mark.parametrize("shape", [(40, 30), (30, 40)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_rank_deficient_gives_a_polar_factor_and_no_nan(shape, dtype):
    """σ = 0 exactly: Ẑ(0) = 0, so G = U H with H ⪰ 0 and U exact on G's range (off it any partial isometry
    is a polar factor); never NaN."""
    ref = spectral_matrix(*shape, kappa=10.0, rank=7)
    u = polar(ref.matrix.to(dtype), "zolo_pd").double()
    assert torch.isfinite(u).all()
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    if shape[0] >= shape[1]:
        assert rel_err(u @ ref.v[:, :7], ref.u[:, :7]) < tol
        h = u.mT @ ref.matrix
        assert rel_err(u @ h, ref.matrix) < tol
    else:
        assert rel_err(ref.u[:, :7].mT @ u, ref.v[:, :7].mT) < tol
        h = ref.matrix @ u.mT
        assert rel_err(h @ u, ref.matrix) < tol
    assert rel_err(h, h.mT) < tol and torch.linalg.eigvalsh(0.5 * (h + h.mT)).min() > -tol


@pytest.mark.parametrize("method", ["zolo_pd", "qdwh"])
def test_tiny_and_huge_scales(method):
    """The Hölder scale √‖G‖₁·√‖G‖_∞ is formed without the product ‖G‖₁‖G‖_∞, which under/overflows at 1e±300."""
    x = spectral_matrix(24, 40, kappa=1e4).matrix
    base = polar(x, method)
    for scale in (1e-300, 1e-150, 1e150, 1e300):
        out = polar(x * scale, method)
        assert torch.isfinite(out).all() and rel_err(out, base) < 1e-12


def test_refusals_are_one_clear_line():
    x = torch.randn(8, 6)
    with pytest.raises(ValueError, match=r"dtype for method 'zolo_pd' must be float32 or float64"):
        polar(x, "zolo_pd", dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="coefficients"):
        polar(x, "zolo_pd", coefficients=(1.0, 2.0, 3.0))
    with pytest.raises(ValueError, match="kappa must be a number ≥ 1"):
        zolo.zolo_pd(x.unsqueeze(0), kappa=0.5)
    with pytest.raises(ValueError, match="float32 or float64"):
        zolo.zolo_pd(x.unsqueeze(0).half())
    with pytest.raises(ValueError, match="kappa too large"):
        zolo.zolotarev_degree(1e-300, 1e-16)
    with pytest.raises(ValueError, match=r"ell must be in \(0, 1\]"):
        zolo.zolotarev_function(0.0, 3)


def test_half_precision_input_runs_in_float32():
    x = spectral_matrix(32, 48, kappa=10.0).matrix.to(torch.bfloat16)
    out = polar(x, "zolo_pd")
    assert out.dtype == torch.bfloat16
    assert rel_err(out, polar(x.float(), "zolo_pd").to(torch.bfloat16)) < 1e-2


@pytest.mark.gpu
def test_cuda_does_not_synchronize():
    """The schedule is host arithmetic fixed by dtype and size: no host synchronization on CUDA (torch raises
    on any in this mode)."""
    ref = spectral_matrix(64, 128, kappa=100.0, batch=(3,))
    x = ref.matrix.float().cuda()
    polar(x, "zolo_pd", check_finite=False)  # warm-up (lazy CUDA and cuSOLVER init may sync)
    torch.cuda.set_sync_debug_mode("error")
    try:
        u = polar(x, "zolo_pd", check_finite=False)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert rel_err(u.cpu(), ref.polar) < 1e-4


@pytest.mark.gpu
def test_cuda_float32_and_float64():
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-4)):
        ref = spectral_matrix(96, 64, kappa=100.0, batch=(3,))
        out = polar(ref.matrix.to(dtype).cuda(), "zolo_pd")
        assert out.dtype == dtype and out.is_cuda
        assert rel_err(out.cpu(), ref.polar) < tol
