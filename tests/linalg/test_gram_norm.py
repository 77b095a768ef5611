"""polar_express_gram_norm: the ‖GGᵀ‖_F^{1/2} start, its derived 4-step schedule, and the derivation."""

import math

import numpy as np
import pytest
import torch

from muonlab import polar
from muonlab.linalg import iterations as it
from muonlab.linalg import schedules
from tests.reference import rel_err, singular_range, spectral_matrix

METHOD = "polar_express_gram_norm"


# --- the derivation --------------------------------------------------------------------------------

def test_stored_table_is_the_derived_schedule():
    derived = schedules.derive_schedule(it.GRAM_NORM_LOWER_BOUND, len(it.GRAM_NORM_COEFFICIENTS), it.GRAM_NORM_SAFETY)
    np.testing.assert_allclose(np.array(it.GRAM_NORM_COEFFICIENTS), np.array(derived), rtol=1e-5, atol=1e-7)


def test_image_is_exact_against_a_dense_grid():
    rng = np.random.default_rng(0)
    for coefficients in list(it.GRAM_NORM_COEFFICIENTS) + [it.KELLER_COEFFICIENTS]:
        lo, hi = sorted(rng.uniform(0.001, 1.3, size=2))
        y = schedules.quintic(coefficients, np.linspace(lo, hi, 200_001))
        exact = schedules.image(coefficients, lo, hi)
        assert exact[0] <= y.min() + 1e-12 and exact[1] >= y.max() - 1e-12
        assert abs(exact[0] - y.min()) < 1e-6 and abs(exact[1] - y.max()) < 1e-6


def test_minimax_quintic_equioscillates():
    """The optimum on [ℓ, u] reaches its error E at ℓ and at both interior extrema (Chebyshev alternation)."""
    lo, hi = 0.05, 1.0
    coefficients, error = schedules.minimax_quintic(lo, hi)
    x = np.linspace(lo, hi, 100_001)
    deviation = 1.0 - schedules.quintic(coefficients, x)
    assert abs(np.abs(deviation).max() - error) < 1e-6
    assert abs(deviation[0] - error) < 1e-6  # 1 − p(ℓ) = +E
    assert abs(deviation.min() + error) < 1e-6  # some interior x has p(x) − 1 = +E


def test_four_steps_beat_keller_five_on_a_768_wide_spectrum():
    """Scalar check on a κ = 100 log-spaced spectrum of 768 singular values (issue 6's measure)."""
    s = np.geomspace(0.01, 1.0, 768)
    gram_lower = s.min() / (it.GRAM_NORM_SAFETY * (s**4).sum() ** 0.25)
    frobenius_lower = s.min() / math.sqrt((s**2).sum())
    assert gram_lower > 3.4 * frobenius_lower  # the better start
    ours = schedules.singular_value_range(it.gram_norm_schedule(4), gram_lower)
    keller = schedules.singular_value_range(it.constant_schedule(it.KELLER_COEFFICIENTS, 5), frobenius_lower)
    assert 0.85 < ours[0] and ours[1] < 1.15
    assert ours[0] > keller[0] + 0.3 and ours[1] < keller[1]


def test_derive_schedule_rejects_bad_arguments():
    with pytest.raises(ValueError, match="steps"):
        schedules.derive_schedule(1e-3, 0)
    with pytest.raises(ValueError, match="lower"):
        schedules.minimax_quintic(0.0, 1.0)


# --- the normalization -----------------------------------------------------------------------------

def test_normalize_by_gram_bounds_and_gram():
    ref = spectral_matrix(40, 64, kappa=100.0, batch=(2,))
    x0, gram = it.normalize_by_gram(ref.matrix, safety=1.01)
    s = torch.linalg.svdvals(x0)
    scale = 1.01 * (ref.s**4).sum(-1) ** 0.25
    assert torch.allclose(s, ref.s / scale.unsqueeze(-1), rtol=1e-12)
    assert s.max() <= 1.0
    assert rel_err(gram, x0 @ x0.mT) < 1e-13


@pytest.mark.parametrize("scale", [1e-30, 1e30])
def test_normalize_by_gram_is_overflow_safe(scale):
    x = spectral_matrix(16, 24, kappa=10.0).matrix.float()
    x0, gram = it.normalize_by_gram((x * scale).unsqueeze(0), safety=1.01)
    ref0, ref_gram = it.normalize_by_gram(x.unsqueeze(0), safety=1.01)
    assert torch.isfinite(x0).all() and torch.isfinite(gram).all()
    assert rel_err(x0, ref0) < 1e-5 and rel_err(gram, ref_gram) < 1e-5


def test_explicit_formula_with_eps():
    """polar(G, steps=2, eps=ε) = p₂(p₁(X₀)), X₀ = G / (1.01‖GGᵀ‖_F^{1/2} + ε), written out in float64."""
    ref = spectral_matrix(30, 30, kappa=10.0, scale=2.0)
    g, eps = ref.matrix, 0.3
    x = g / (1.01 * torch.linalg.matrix_norm(g @ g.mT).sqrt() + eps)
    for a, b, c in it.GRAM_NORM_COEFFICIENTS[:2]:
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    assert rel_err(polar(g, METHOD, steps=2, eps=eps), x) < 1e-12


# --- the method ------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(64, 64), (48, 96), (96, 48), (256, 768), (768, 256)])
@pytest.mark.parametrize("kappa", [10.0, 100.0])
def test_singular_values_in_range_with_exact_vectors(shape, kappa):
    ref = spectral_matrix(*shape, kappa=kappa)
    out = polar(ref.matrix.float(), METHOD)
    assert out.dtype == torch.float32
    lo, hi = singular_range(out)
    assert 0.85 <= lo and hi <= 1.15
    # an odd polynomial keeps the singular vectors: the output's own polar factor is exact
    assert rel_err(polar(out.double(), "svd"), ref.polar) < 1e-4


def test_more_steps_converge():
    ref = spectral_matrix(48, 96, kappa=100.0)
    assert rel_err(polar(ref.matrix, METHOD, steps=8), ref.polar) < 1e-10


def test_tall_is_the_transpose_of_wide():
    g = spectral_matrix(40, 100, kappa=30.0).matrix.float()
    assert rel_err(polar(g.mT, METHOD), polar(g, METHOD).mT) < 1e-6


def test_gram_form_equals_direct_iteration():
    """The m×n ≥ 2 aspect ratio runs on the Gram matrix; the direct iteration gives the same."""
    g = spectral_matrix(32, 160, kappa=100.0, batch=(3,)).matrix
    x0, gram = it.normalize_by_gram(g, safety=it.GRAM_NORM_SAFETY)
    schedule = it.gram_norm_schedule(4)
    direct = it.quintic_iteration(x0, schedule, gram=gram)
    assert rel_err(direct, it.quintic_iteration(x0, schedule)) < 1e-12
    assert rel_err(polar(g, METHOD), direct) < 1e-10


def test_zero_matrix_in_a_batch():
    x = spectral_matrix(16, 40, kappa=10.0, batch=(3,)).matrix.float()
    x[2] = 0.0
    out = polar(x, METHOD)
    assert torch.isfinite(out).all() and torch.equal(out[2], torch.zeros_like(out[2]))
    assert rel_err(out[:2], polar(x[:2], METHOD)) < 1e-6


@pytest.mark.gpu
def test_cuda_iterates_in_bf16_within_range():
    from muonlab.linalg.precision import iteration_dtype

    x = spectral_matrix(64, 128, kappa=10.0).matrix.float().cuda()
    assert iteration_dtype(x, METHOD) == torch.bfloat16
    out = polar(x, METHOD)
    assert out.dtype == torch.float32
    lo, hi = singular_range(out.cpu())
    assert 0.7 < lo and hi < 1.3


def test_odd_minimax_of_degree_seven():
    """minimax_odd generalizes minimax_quintic: degree 5 gives the same triple; degree 7 errs less, equioscillates,
    and image() is exact for it (checked on a dense grid)."""
    pytest.importorskip("scipy")
    lo, hi = 0.2, 1.01
    five, error5 = schedules.minimax_odd(lo, hi, 5)
    triple, error = schedules.minimax_quintic(lo, hi)
    assert np.allclose(five, triple) and abs(error5 - error) < 1e-12
    seven, error7 = schedules.minimax_odd(lo, hi, 7)
    assert len(seven) == 4 and error7 < 0.7 * error5  # 0.134 against 0.223
    x = np.linspace(lo, hi, 200_001)
    values = schedules.odd_polynomial(seven, x)
    assert abs(np.abs(1 - values).max() - error7) < 1e-6
    exact = schedules.image(seven, lo, 1.0)
    grid = schedules.odd_polynomial(seven, np.linspace(lo, 1.0, 200_001))
    assert exact[0] <= grid.min() + 1e-12 and exact[1] >= grid.max() - 1e-12
    assert abs(exact[0] - grid.min()) < 1e-8 and abs(exact[1] - grid.max()) < 1e-8
    with pytest.raises(ValueError, match="degree must be a positive odd integer"):
        schedules.minimax_odd(lo, hi, 6)
