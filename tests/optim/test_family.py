"""Issue 11's fast paths inside the optimizers: PolarGrad's default ν, the Ψ_p methods, the polar
options of SpectralSGD/SpectralAdam, against float64 SVD."""

from __future__ import annotations

import pytest
import torch

import muonlab
from muonlab import polar, spectral_power
from muonlab.optim.polargrad import DEFAULT_STEPS, FAST_METHOD, nuclear_factor, resolve_polar_method
from muonlab.optim.settings import PolarSettings
from tests.optim.formulas import keller_scale, nuclear64, polar64
from tests.reference import rel_err, spectral_matrix


def _one_step(opt_factory, w0: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    w = torch.nn.Parameter(w0.clone())
    opt = opt_factory([w])
    w.grad = g.clone()
    opt.step()
    return w.detach()


@pytest.mark.parametrize("shape", [(96, 192), (192, 96), (128, 128)])
@pytest.mark.parametrize("kappa", [10.0, 100.0, 1000.0])
def test_polargrad_default_nu_within_one_percent(kappa, shape):
    """PolarGrad's default on float32 (Polar Express, Gram-normalized, 5 steps): ν = ⟨G, polar(G)⟩ within 1% of ‖G‖_*
    (measured ≤ 0.3% at GPT-2 shapes), and the PolarSGD step equals ν̂·polar(G) with that ν̂."""
    ref = spectral_matrix(*shape, kappa=kappa)
    g = ref.matrix.float()
    lr = 0.01
    out = _one_step(lambda ps: muonlab.PolarGrad(ps, lr=lr), torch.zeros_like(g), g)
    u = polar(g, FAST_METHOD, DEFAULT_STEPS)
    nu_hat = nuclear_factor(g.unsqueeze(0), u.unsqueeze(0)).reshape(())
    assert abs(float(nu_hat) - float(ref.nuclear_norm)) < 0.01 * float(ref.nuclear_norm)
    torch.testing.assert_close(out, -lr * nu_hat * u, rtol=1e-5, atol=1e-7)
    # the update direction itself: σ ∈ [0.998, 1.002] except the smallest σ (< 3.9e-3 of the normalization)
    assert rel_err(u, ref.polar) < (2e-2 if kappa < 1000 else 0.25)


def test_polargrad_default_is_qdwh_on_float64():
    g = torch.randn(20, 12, dtype=torch.float64)
    out = _one_step(lambda ps: muonlab.PolarGrad(ps, lr=0.1), torch.zeros_like(g), g)
    torch.testing.assert_close(out, -0.1 * nuclear64(g)[0] * polar64(g), rtol=1e-10, atol=1e-12)
    auto = PolarSettings("auto")
    assert resolve_polar_method(g, auto).method == "qdwh"
    assert resolve_polar_method(g.float(), auto) == PolarSettings(FAST_METHOD, ns_steps=DEFAULT_STEPS)
    assert resolve_polar_method(g.float(), PolarSettings("auto", ns_steps=7)).ns_steps == 7


def test_msgdz_default_is_muons_polar_and_work_d_setting_runs():
    w0, g = torch.randn(24, 40), torch.randn(24, 40)
    lr = 0.02
    default = _one_step(lambda ps: muonlab.SpectralSGD(ps, lr=lr, p=0.0), w0, g)
    torch.testing.assert_close(default, w0 - lr * polar(g, "polar_express_gram_norm"))
    # work D's trained setting: Keller's quintic × 15 in bf16
    keller = _one_step(lambda ps: muonlab.SpectralSGD(ps, lr=lr, p=0, method="newton_schulz", ns_steps=15,
                                                        polar_dtype=torch.bfloat16), w0, g)
    expect = w0 - lr * polar(g, "newton_schulz", 15, torch.bfloat16)
    torch.testing.assert_close(keller, expect)
    # ns_coefficients/steps without method: Newton–Schulz with them, as muonlab.Muon does; steps is ns_steps
    coeffs = (3.0, -3.2, 1.2)
    tall_w, tall_g = w0.mT.contiguous(), g.mT.contiguous()
    got = _one_step(lambda ps: muonlab.SpectralAdam(ps, lr=lr, p=0, ns_coefficients=coeffs, steps=7), tall_w, tall_g)
    o = tall_g / (tall_g.abs() + 1e-8)  # Adam's first bias-corrected step: m̂/(√v̂ + ε) = g/(|g| + ε)
    expect = tall_w - lr * keller_scale(40, 24) * polar(o, "newton_schulz", 7, coefficients=coeffs)
    torch.testing.assert_close(got, expect)


@pytest.mark.parametrize("p", [0.5, 0.25])
def test_spectral_powers_default_to_gram_and_take_power_steps(p):
    ref = spectral_matrix(32, 48, kappa=30.0)
    w0, g = torch.zeros(32, 48, dtype=torch.float64), ref.matrix
    lr = 0.1
    got = _one_step(lambda ps: muonlab.SpectralSGD(ps, lr=lr, p=p), w0, g)
    torch.testing.assert_close(got, -lr * spectral_power(g, p, "gram"))
    assert rel_err(got, -lr * ref.power(p)) < 0.045
    steps = (12, 10) if p == 0.5 else (12, 10, 10)
    converged = _one_step(lambda ps: muonlab.SpectralSGD(ps, lr=lr, p=p, power_steps=steps), w0, g)
    assert rel_err(converged, -lr * ref.power(p)) < 1e-10
    exact = _one_step(lambda ps: muonlab.SpectralSGD(ps, lr=lr, p=p, method="svd"), w0, g)
    assert rel_err(exact, -lr * ref.power(p)) < 1e-12


def test_polar_option_errors_name_the_parameter():
    w = [torch.nn.Parameter(torch.randn(6, 8))]
    cases = [
        (dict(p=0.5, ns_steps=3), "ns_coefficients/ns_steps set the polar iteration of p = 0"),
        (dict(p=0.25, power_steps=(5, 4)), "power_steps must be"),
        (dict(p=0.3, power_steps=3), "power_steps apply to method 'gram'"),
        (dict(p=0.3, method="gram"), "method 'gram' needs p a multiple of 1/8"),
        (dict(p=0.0, ns_steps=5, steps=6), "steps is an alias of ns_steps"),
        (dict(p=0.0, method="polar_express", ns_coefficients=(1.0, 2.0, 3.0)), "ns_coefficients apply to method"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            muonlab.SpectralSGD(w, lr=0.1, **kwargs)
