"""muonlab.polar against the float64 SVD reference (tests/reference.py)."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from muonlab import polar
from muonlab.linalg import POLAR_METHODS
from muonlab.linalg.precision import iteration_dtype
from muonlab.linalg.qdwh import qdwh, qdwh_iterations_needed
from tests.reference import rel_err, singular_range, spectral_matrix

SHAPES = [(64, 64), (48, 96), (96, 48)]
CONCRETE = [m for m in POLAR_METHODS if m != "auto"]


# --- converging methods: equal to the exact factor -----------------------------------------

@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kappa", [10.0, 1e3])
@pytest.mark.parametrize("method", ["svd", "qdwh", "zolo_pd", "cubic"])
def test_converging_methods_match_svd_in_float64(method, kappa, shape):
    ref = spectral_matrix(*shape, kappa=kappa)
    steps = 40 if method == "cubic" else None  # σ_min = 1e-3/‖G‖_F needs ~35 cubic steps
    out = polar(ref.matrix, method, steps=steps)
    assert out.dtype == torch.float64 and out.shape == ref.matrix.shape
    assert rel_err(out, ref.polar) < 1e-10


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("method", ["svd", "qdwh", "zolo_pd"])
def test_converging_methods_in_float32(method, shape):
    ref = spectral_matrix(*shape, kappa=100.0)
    out = polar(ref.matrix.float(), method)
    assert out.dtype == torch.float32
    assert rel_err(out, ref.polar) < 2e-5


@pytest.mark.parametrize("kappa, tol", [(10.0, 1e-12), (1e4, 1e-12), (1e8, 1e-7)])
def test_qdwh_float64_accuracy_targets(kappa, tol):
    ref = spectral_matrix(120, 80, kappa=kappa)
    assert rel_err(polar(ref.matrix, "qdwh"), ref.polar) < tol


@pytest.mark.parametrize("kappa", [10.0, 1e4, 1e8, 1e15])
def test_qdwh_converges_within_six_iterations(kappa):
    ref = spectral_matrix(60, 40, kappa=kappa)
    six = polar(ref.matrix, "qdwh", steps=6)
    converged = polar(ref.matrix, "qdwh")
    assert rel_err(six, converged) < 1e-13
    # the weight recursion itself: ℓ₀ = 1e-16 reaches 1 to rounding in ≤ 6 steps
    assert qdwh_iterations_needed(1e-16, 1e-15) <= 6


def test_qdwh_two_steps_leave_sigma_above_lower_bound():
    """PolarGrad uses 2 QDWH steps: σ is then well inside (0, 1] but not yet 1 for large κ."""
    ref = spectral_matrix(60, 40, kappa=1e3)
    lo, hi = singular_range(polar(ref.matrix, "qdwh", steps=2))
    assert 0.05 < lo < 0.999 and hi <= 1.0 + 1e-12


# --- polynomial iterations: exact singular vectors, singular values in the published range ---

@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(
    "method, kappa, lo, hi",
    [
        # docs/math.md §3, measured on our reference: NS5 → [0.68, 1.20], PE5 → [0.87, 1.12] for κ ≤ 100
        ("newton_schulz", 10.0, 0.67, 1.21),
        ("newton_schulz", 100.0, 0.67, 1.21),
        ("polar_express", 10.0, 0.86, 1.13),
        ("polar_express", 100.0, 0.86, 1.13),
        ("gram_newton_schulz", 100.0, 0.86, 1.13),
        ("auto", 100.0, 0.6, 1.4),
    ],
)
def test_quintic_singular_value_ranges(method, kappa, lo, hi, shape):
    ref = spectral_matrix(*shape, kappa=kappa)
    out = polar(ref.matrix.float(), method)
    assert out.dtype == torch.float32
    s_lo, s_hi = singular_range(out)
    assert lo <= s_lo and s_hi <= hi
    # an odd polynomial keeps the singular vectors: the output's own polar factor is exact
    assert rel_err(polar(out.double(), "svd"), ref.polar) < 1e-4


def test_polar_express_converges_with_more_steps():
    ref = spectral_matrix(96, 48, kappa=100.0)
    assert rel_err(polar(ref.matrix.float(), "polar_express", steps=8), ref.polar) < 1e-4
    assert rel_err(polar(ref.matrix, "polar_express", steps=10), ref.polar) < 1e-10


def test_gram_newton_schulz_equals_direct_iteration():
    ref = spectral_matrix(32, 160, kappa=100.0, batch=(3,))
    direct = polar(ref.matrix.float(), "polar_express")
    gram = polar(ref.matrix.float(), "gram_newton_schulz")
    assert rel_err(gram, direct) < 1e-4
    # and with an explicit constant quintic
    keller = polar(ref.matrix, "newton_schulz")
    gram_keller = polar(ref.matrix, "gram_newton_schulz", coefficients=(3.4445, -4.7750, 2.0315))
    assert rel_err(gram_keller, keller) < 1e-10


def test_refine_pulls_singular_values_to_one():
    ref = spectral_matrix(64, 64, kappa=10.0)
    out = polar(ref.matrix, "newton_schulz", refine=8)
    assert rel_err(out, ref.polar) < 1e-8


def test_explicit_coefficients_and_steps_are_used():
    ref = spectral_matrix(40, 40, kappa=10.0)
    x0 = ref.matrix / torch.linalg.matrix_norm(ref.matrix)
    a, b, c = 2.0, -1.5, 0.5
    expected = x0
    for _ in range(2):
        gram = expected @ expected.mT
        expected = a * expected + (b * gram + c * gram @ gram) @ expected
    out = polar(ref.matrix, "newton_schulz", steps=2, coefficients=(a, b, c))
    assert rel_err(out, expected) < 1e-12


# --- properties ---------------------------------------------------------------------------------

@pytest.mark.parametrize("method", CONCRETE)
def test_batched_equals_per_matrix(method):
    ref = spectral_matrix(24, 40, kappa=10.0, batch=(2, 3))
    x = ref.matrix.float()
    out = polar(x, method)
    assert out.shape == x.shape
    for i in range(2):
        for j in range(3):
            assert rel_err(out[i, j], polar(x[i, j], method)) < 1e-5


@pytest.mark.parametrize("method", CONCRETE)
@pytest.mark.parametrize("scale", [1e-18, 1e-6, 3.7, 1e18])
def test_scale_invariance_without_overflow(method, scale):
    x = spectral_matrix(32, 48, kappa=10.0).matrix.float()
    out = polar(x * scale, method)
    assert torch.isfinite(out).all()
    assert rel_err(out, polar(x, method)) < 1e-4


@pytest.mark.parametrize("method", ["svd", "qdwh", "zolo_pd", "polar_express", "newton_schulz"])
def test_orthogonal_equivariance(method):
    """polar(Q G R) = Q polar(G) R for orthogonal Q, R."""
    g = spectral_matrix(30, 20, kappa=50.0).matrix
    q = spectral_matrix(30, 30, kappa=1.0).polar
    r = spectral_matrix(20, 20, kappa=1.0).polar
    assert rel_err(polar(q @ g @ r, method), q @ polar(g, method) @ r) < 1e-10


@pytest.mark.parametrize("method", CONCRETE)
def test_zero_matrices_give_zeros(method):
    for shape in [(5, 7), (3, 4, 6), (1, 9), (9, 1)]:
        out = polar(torch.zeros(shape), method)
        assert torch.equal(out, torch.zeros(shape))


def test_zero_and_nonzero_matrices_in_one_batch():
    x = spectral_matrix(16, 24, kappa=10.0, batch=(3,)).matrix
    x[1] = 0.0
    for method in CONCRETE:
        out = polar(x, method)
        assert torch.isfinite(out).all() and torch.equal(out[1], torch.zeros_like(out[1]))


@pytest.mark.parametrize("method", CONCRETE)
@pytest.mark.parametrize("shape", [(1, 17), (17, 1), (1, 1)])
def test_vectors_are_normalized_exactly(method, shape):
    x = torch.randn(shape, dtype=torch.float64)
    assert rel_err(polar(x, method), x / x.norm()) < 1e-12


def test_rank_deficient_svd_gives_partial_isometry_on_range():
    ref = spectral_matrix(40, 30, kappa=10.0, rank=12)
    out = polar(ref.matrix, "svd")
    assert rel_err(out, ref.polar) < 1e-8  # ref.polar = U_r V_rᵀ (zero directions map to 0)
    s = torch.linalg.svdvals(out)
    assert torch.allclose(s[:12], torch.ones(12, dtype=torch.float64), atol=1e-8)
    assert s[12:].abs().max() < 1e-8


@pytest.mark.parametrize("method", ["qdwh", "zolo_pd", "cubic", "polar_express"])
def test_rank_deficient_iterations_agree_on_the_range(method):
    """Iterations act on G's range exactly as the SVD factor does; off the range the polar factor
    is not unique (rounding-level singular values may be lifted), so only G = U·H is required."""
    ref = spectral_matrix(40, 30, kappa=10.0, rank=12)
    steps = 40 if method == "cubic" else (12 if method == "polar_express" else None)
    out = polar(ref.matrix, method, steps=steps)
    v_r, u_r = ref.v[:, :12], ref.u[:, :12]
    assert rel_err(out @ v_r, u_r) < 1e-8
    h = out.mT @ ref.matrix  # G = U H with H symmetric positive semidefinite
    assert rel_err(out @ h, ref.matrix) < 1e-8
    assert rel_err(h, h.mT) < 1e-8
    assert torch.linalg.eigvalsh(0.5 * (h + h.mT)).min() > -1e-10


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("method", ["polar_express", "newton_schulz", "svd", "qdwh", "zolo_pd"])
def test_half_precision_inputs_keep_dtype_and_iterate_in_float32_on_cpu(dtype, method):
    x = spectral_matrix(32, 64, kappa=10.0).matrix.to(dtype)
    assert iteration_dtype(x, method) == torch.float32
    out = polar(x, method)
    assert out.dtype == dtype and torch.isfinite(out).all()
    # accuracy is that of rounding the float32 result to the half type
    expected = polar(x.float(), method).to(dtype)
    assert rel_err(out, expected) < 1e-2


def test_dtype_override_sets_iteration_precision():
    x = spectral_matrix(32, 32, kappa=1e3).matrix
    lo64 = polar(x, "qdwh")
    lo32 = polar(x, "qdwh", dtype=torch.float32)
    assert lo32.dtype == torch.float64  # output keeps the input dtype
    assert 1e-12 < rel_err(lo32, lo64) < 1e-4  # ...but carries float32 rounding


def test_empty_matrix():
    assert polar(torch.zeros(0, 5)).shape == (0, 5)
    assert polar(torch.zeros(2, 0, 3), "svd").shape == (2, 0, 3)


def test_auto_choice_is_documented_behaviour():
    from muonlab.linalg.polar import resolve_method

    assert resolve_method(torch.zeros(3, 3, dtype=torch.float64), "auto") == "qdwh"
    assert resolve_method(torch.zeros(3, 3), "auto") == "polar_express"
    assert resolve_method(torch.zeros(3, 3), "svd") == "svd"


@pytest.mark.gpu
def test_cuda_matmul_methods_iterate_in_bf16():
    x = spectral_matrix(64, 128, kappa=10.0).matrix.float().cuda()
    assert iteration_dtype(x, "polar_express") == torch.bfloat16
    assert iteration_dtype(x, "qdwh") == torch.float32
    out = polar(x, "polar_express")
    assert out.dtype == torch.float32
    lo, hi = singular_range(out.cpu())
    assert 0.7 < lo and hi < 1.3


# --- bad input -----------------------------------------------------------------------------

@pytest.mark.parametrize(
    "x, message",
    [
        (torch.ones(5), "at least 2 dimensions"),
        (torch.ones(3, 3, dtype=torch.complex64), "real"),
        (torch.ones(3, 3, dtype=torch.int64), "floating"),
        (torch.tensor([[1.0, float("nan")], [0.0, 1.0]]), "NaN or Inf"),
        (torch.tensor([[1.0, float("inf")], [0.0, 1.0]]), "NaN or Inf"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(x, message):
    with pytest.raises(ValueError, match=message):
        polar(x)


def test_bad_arguments_name_the_parameter():
    x = torch.ones(3, 3)
    with pytest.raises(ValueError, match="method must be one of"):
        polar(x, "magic")
    with pytest.raises(ValueError, match="steps"):
        polar(x, "newton_schulz", steps=-1)
    with pytest.raises(ValueError, match="dtype"):
        polar(x, dtype=torch.int32)
    with pytest.raises(ValueError, match="coefficients"):
        polar(x, "qdwh", coefficients=(1.0, 2.0, 3.0))
    with pytest.raises(ValueError, match="coefficients"):
        polar(x, "newton_schulz", coefficients=(1.0, 2.0))
    with pytest.raises(ValueError, match="eps"):
        polar(x, eps=-1.0)
    with pytest.raises(TypeError, match="torch.Tensor"):
        polar([[1.0, 0.0], [0.0, 1.0]])


# --- fresh random inputs (hypothesis) ------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(
    m=st.integers(1, 24),
    n=st.integers(1, 24),
    batch=st.integers(1, 3),
    log_kappa=st.floats(0.0, 6.0),
    log_scale=st.floats(-15.0, 15.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_qdwh_and_svd_agree_on_random_matrices(m, n, batch, log_kappa, log_scale, seed):
    gen = torch.Generator().manual_seed(seed)
    ref = spectral_matrix(m, n, kappa=10.0**log_kappa, batch=(batch,), scale=10.0**log_scale, generator=gen)
    for method in ("svd", "qdwh", "zolo_pd"):
        out = polar(ref.matrix, method)
        assert rel_err(out, ref.polar) < 1e-9, method


@settings(max_examples=25, deadline=None)
@given(m=st.integers(2, 40), n=st.integers(2, 40), seed=st.integers(0, 2**31 - 1))
def test_polar_express_on_gaussian_matrices(m, n, seed):
    """Gaussian matrices have κ ≲ 100 unless nearly square; check what the theory promises."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(m, n, generator=gen, dtype=torch.float64)
    s = torch.linalg.svdvals(x)
    out = polar(x.float(), "polar_express")
    s_out = torch.linalg.svdvals(out.double())
    assert s_out.max() < 1.13
    if float(s[0] / s[-1]) < 100 * math.sqrt(min(m, n)) / 10:
        assert s_out.min() > 0.5


@pytest.mark.parametrize(
    "method", ["newton_schulz", "polar_express", "polar_express_gram_norm", "gram_newton_schulz", "cubic"]
)
@pytest.mark.parametrize("shape", [(3, 96, 24), (2, 24, 96), (2, 60, 48)])
def test_tall_and_wide_results_are_contiguous(method, shape):
    # The optimizers add the result into the parameter: a transposed view there is a strided read (far slower
    # than a contiguous add on CPU), so the iterations write the tall case's last product in the input's layout.
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    out = polar(x, method)
    assert out.is_contiguous()
    # the same factor as the transposed problem's, transposed back (the layout changes nothing but the memory)
    assert torch.allclose(out, polar(x.mT.contiguous(), method).mT, rtol=1e-4, atol=1e-5)


def test_max_abs_is_the_largest_entry_and_propagates_nan_and_inf():
    from muonlab.linalg.iterations import max_abs

    x = torch.randn(4, 5, 7, generator=torch.Generator().manual_seed(1))
    assert torch.equal(max_abs(x).flatten(), x.abs().amax(dim=(-2, -1)))
    assert torch.equal(max_abs(x.mT).flatten(), x.abs().amax(dim=(-2, -1)))
    x[1, 2, 3], x[2, 0, 0], x[3, 4, 6] = float("nan"), float("-inf"), float("inf")
    got = max_abs(x).flatten()
    assert got[0] == x[0].abs().max() and got[1].isnan() and got[2] == float("inf") and got[3] == float("inf")
