"""muonlab.spectral_power and muonlab.nuclear_norm against the float64 SVD reference."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from muonlab import nuclear_norm, polar, spectral_power
from muonlab.linalg import matrix_inverse_root
from tests.reference import rel_err, spectral_matrix

SHAPES = [(48, 96), (96, 48), (64, 64)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("p", [0.5, 0.25, 0.37, 0.9])
def test_svd_power_is_exact(p, shape):
    ref = spectral_matrix(*shape, kappa=1e3)
    out = spectral_power(ref.matrix, p, "svd")
    assert out.dtype == torch.float64
    assert rel_err(out, ref.power(p)) < 1e-10


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kappa", [10.0, 1e2, 1e3])
@pytest.mark.parametrize("p", [0.5, 0.25])
def test_newton_power_float32_within_1e_3(p, kappa, shape):
    ref = spectral_matrix(*shape, kappa=kappa)
    out = spectral_power(ref.matrix.float(), p, "newton")
    assert out.dtype == torch.float32
    assert rel_err(out, ref.power(p)) < 1e-3


@pytest.mark.parametrize("p", [0.5, 0.25, 1 / 3, 0.75])
def test_newton_power_float64_converges(p):
    ref = spectral_matrix(40, 70, kappa=1e3)
    assert rel_err(spectral_power(ref.matrix, p, "newton"), ref.power(p)) < 1e-9


def test_quarter_power_is_half_power_twice():
    """Work D computes Ψ_¼ as Ψ_½∘Ψ_½; the two must agree."""
    ref = spectral_matrix(50, 30, kappa=100.0)
    twice = spectral_power(spectral_power(ref.matrix, 0.5, "newton"), 0.5, "newton")
    assert rel_err(twice, spectral_power(ref.matrix, 0.25, "newton")) < 1e-9


def test_power_endpoints():
    x = spectral_matrix(20, 30, kappa=10.0).matrix
    one = spectral_power(x, 1.0)
    assert torch.equal(one, x) and one.data_ptr() != x.data_ptr()
    assert rel_err(spectral_power(x, 0.0, "qdwh"), polar(x, "qdwh")) < 1e-14
    assert rel_err(spectral_power(x.float(), 0), polar(x.float())) < 1e-6


def test_power_batched_equals_per_matrix():
    ref = spectral_matrix(16, 24, kappa=100.0, batch=(2, 3))
    for method in ("svd", "newton"):
        out = spectral_power(ref.matrix, 0.5, method)
        for i in range(2):
            for j in range(3):
                assert rel_err(out[i, j], spectral_power(ref.matrix[i, j], 0.5, method)) < 1e-10


@pytest.mark.parametrize("method", ["svd", "newton"])
def test_power_rank_deficient_and_zero(method):
    ref = spectral_matrix(40, 30, kappa=10.0, rank=7)
    out = spectral_power(ref.matrix.float(), 0.5, method)
    assert torch.isfinite(out).all()
    assert rel_err(out, ref.power(0.5)) < 1e-3
    zero = spectral_power(torch.zeros(2, 5, 8), 0.25, method)
    assert torch.equal(zero, torch.zeros(2, 5, 8))


@pytest.mark.parametrize("scale", [1e-15, 1e15])
def test_power_homogeneity(scale):
    """Ψ_p(cG) = c^p Ψ_p(G) for c > 0."""
    x = spectral_matrix(30, 20, kappa=100.0).matrix
    for method in ("svd", "newton"):
        assert rel_err(spectral_power(scale * x, 0.5, method), scale**0.5 * spectral_power(x, 0.5, method)) < 1e-9


def test_power_half_precision_keeps_dtype():
    x = spectral_matrix(32, 16, kappa=10.0).matrix.to(torch.bfloat16)
    out = spectral_power(x, 0.5, "newton")
    assert out.dtype == torch.bfloat16
    assert rel_err(out, spectral_power(x.float(), 0.5, "svd")) < 2e-2


def test_inverse_root_matches_eigendecomposition():
    a = spectral_matrix(12, 12, kappa=50.0, batch=(2,))
    spd = a.matrix @ a.matrix.mT
    evals, evecs = torch.linalg.eigh(spd)
    expected = (evecs * evals.pow(-3 / 8).unsqueeze(-2)) @ evecs.mT
    assert rel_err(matrix_inverse_root(spd, 8, 3), expected) < 1e-9


def test_power_bad_arguments():
    x = torch.ones(3, 3)
    for bad in (-0.1, 1.5, "half", True):
        with pytest.raises(ValueError, match="p must be a number in"):
            spectral_power(x, bad)
    with pytest.raises(ValueError, match="method must be one of"):
        spectral_power(x, 0.5, "magic")
    with pytest.raises(ValueError, match="method='newton' needs p = a/b"):
        spectral_power(x, 0.123456, "newton")
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        spectral_power(torch.ones(3), 0.5)
    with pytest.raises(ValueError, match="NaN or Inf"):
        spectral_power(torch.full((2, 2), float("nan")), 0.5)


# --- nuclear norm --------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["svd", "qdwh"])
def test_nuclear_norm_exact_methods(method):
    ref = spectral_matrix(30, 50, kappa=1e3, batch=(4,))
    out = nuclear_norm(ref.matrix, method)
    assert out.shape == (4,)
    assert torch.allclose(out, ref.nuclear_norm, rtol=1e-12)


def test_nuclear_norm_as_inner_product_with_polar_iteration():
    """⟨G, polar(G)⟩ with an inexact iteration errs by Σ σᵢ(f(σᵢ) − 1): small for PE×8."""
    ref = spectral_matrix(64, 32, kappa=100.0)
    out = nuclear_norm(ref.matrix.float(), "polar_express")
    assert abs(float(out) - float(ref.nuclear_norm)) / float(ref.nuclear_norm) < 0.15
    converged = (ref.matrix * polar(ref.matrix, "polar_express", steps=10)).sum()
    assert abs(float(converged) - float(ref.nuclear_norm)) < 1e-9 * float(ref.nuclear_norm)


def test_nuclear_norm_zero_and_errors():
    assert torch.equal(nuclear_norm(torch.zeros(3, 4, 5)), torch.zeros(3))
    assert torch.equal(nuclear_norm(torch.zeros(4, 5), "qdwh"), torch.tensor(0.0))
    with pytest.raises(ValueError, match="method must be"):
        nuclear_norm(torch.ones(2, 2), "magic")
    with pytest.raises(ValueError, match="complex|real"):
        nuclear_norm(torch.ones(2, 2, dtype=torch.complex128))


@settings(max_examples=30, deadline=None)
@given(m=st.integers(1, 20), n=st.integers(1, 20), log_scale=st.floats(-12, 12), seed=st.integers(0, 2**31 - 1))
def test_nuclear_norm_random(m, n, log_scale, seed):
    gen = torch.Generator().manual_seed(seed)
    ref = spectral_matrix(m, n, kappa=100.0, scale=10.0**log_scale, generator=gen)
    assert torch.allclose(nuclear_norm(ref.matrix), ref.nuclear_norm, rtol=1e-10)
    assert torch.allclose(nuclear_norm(ref.matrix, "qdwh"), ref.nuclear_norm, rtol=1e-9)
