"""state_dtype (fp32 / bf16 / int8 optimizer state), param_rounding (bf16 parameters), and last_step_stats."""

from __future__ import annotations

import copy
import importlib.util
import math
from pathlib import Path

import pytest
import torch
from torch import nn

import muonlab
from muonlab.optim import int8_codes as i8
from muonlab.optim import state_codec as sc
from tests.optim.models import TinyNet, loss_fn, task

FIXTURES = Path(__file__).parents[1] / "fixtures"
FORMATS = ("float32", "bfloat16", "int8")


def _maker():
    spec = importlib.util.spec_from_file_location("make_fp32_state_trajectory", FIXTURES / "make_fp32_state_trajectory.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MAKER = _maker()
TRAJECTORIES = torch.load(FIXTURES / "fp32_state_trajectory.pt", weights_only=True)["cases"]


@pytest.mark.parametrize("explicit", [False, True], ids=["default", "explicit_float32"])
@pytest.mark.parametrize("name", sorted(TRAJECTORIES))
def test_fp32_state_is_bit_for_bit_the_code_before_state_dtype(name, explicit):
    """Three steps from scratch against parameters computed by the code before this option (the fixture)."""
    case = TRAJECTORIES[name]
    dtype = getattr(torch, case["dtype"].removeprefix("torch."))
    extra = {"state_dtype": "float32", "param_rounding": "nearest"} if explicit else {}
    trajectory = MAKER.run(case["optimizer"], case["kwargs"], dtype, **extra)
    for step, (got, expected) in enumerate(zip(trajectory, case["trajectory"])):
        for g, e in zip(got, expected):
            assert g.dtype == e.dtype and torch.equal(g, e), f"step {step + 1}"


def _model_and_opt(fmt, optimizer="Muon", dtype=torch.float32, seed=0, **kwargs):
    model = MAKER.make_model(dtype)
    kwargs = {"lr": 0.02, **kwargs}
    opt = getattr(muonlab, optimizer)(muonlab.param_groups(model), state_dtype=fmt, rounding_seed=seed, **kwargs)
    return model, opt


def _steps(model, opt, steps, start=0):
    for step in range(start, start + steps):
        for p, g in zip(model.parameters(), MAKER.gradients(model, step)):
            p.grad = g
        opt.step()


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.uint8) if t.is_floating_point() else t


def _state_bits(opt) -> list:
    return [(k, _bits(v.detach()).clone() if torch.is_tensor(v) else v)
            for p in opt.state for k, v in sorted(opt.state[p].items())]


def _same(a, b) -> bool:
    return len(a) == len(b) and all(ka == kb and (torch.equal(va, vb) if torch.is_tensor(va) else va == vb)
                                    for (ka, va), (kb, vb) in zip(a, b))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("optimizer", ["Muon", "SpectralAdam", "NorMuon"])
def test_stored_dtypes_and_bytes(fmt, optimizer):
    kwargs = {"p": 0.5} if optimizer == "SpectralAdam" else {}
    model, opt = _model_and_opt(fmt, optimizer, **kwargs)
    _steps(model, opt, 2)
    for p in model.parameters():
        state = opt.state[p]
        keys = [k for k in sc.SLOTS if k in state]
        assert keys
        for key in keys:
            stored = sc.stored_format(state, key)
            if fmt == "int8" and p.dim() < 2:
                assert stored == "float32"  # vectors keep fp32 state
            else:
                assert stored == fmt
            if stored == "int8":
                assert state[key].shape == p.shape and state[key + "_absmax"].shape == i8.blocks_per_row(p.shape)


@pytest.mark.parametrize("fmt", ["bfloat16", "int8"])
@pytest.mark.parametrize("optimizer,kwargs", [("Muon", {}), ("SpectralAdam", {"p": 0.5}), ("NorMuon", {}),
                                              ("PolarGrad", {"polar_first": True}), ("SpectralSGD", {"p": 0.0})])
def test_low_precision_state_follows_the_fp32_trajectory(fmt, optimizer, kwargs):
    """Ten steps: the parameters stay close to the fp32-state run's (the state's rounding is small), and differ
    from it (the state really is stored in the low-precision format)."""
    model32, opt32 = _model_and_opt("float32", optimizer, **kwargs)
    model, opt = _model_and_opt(fmt, optimizer, **kwargs)
    _steps(model32, opt32, 10)
    _steps(model, opt, 10)
    differs = False
    for p32, p in zip(model32.parameters(), model.parameters()):
        scale = float(p32.detach().abs().max())
        gap = float((p32 - p).detach().abs().max())
        assert gap <= 0.05 * scale, (gap, scale)
        differs |= gap > 0
    assert differs


@pytest.mark.parametrize("fmt", FORMATS)
def test_resume_is_exact_and_stochastic_rounding_reproducible(fmt):
    """Same seed → same bits; a run stopped at step 3 and resumed from its state_dict equals the uninterrupted one
    bit for bit (the rounding keys come from the saved step counts); another seed draws other bits."""
    model_a, opt_a = _model_and_opt(fmt, "SpectralAdam", p=0.5, seed=7)
    _steps(model_a, opt_a, 3)
    saved_params = [p.detach().clone() for p in model_a.parameters()]
    saved_state = copy.deepcopy(opt_a.state_dict())
    _steps(model_a, opt_a, 3, start=3)

    model_b, opt_b = _model_and_opt(fmt, "SpectralAdam", p=0.5, seed=7)
    with torch.no_grad():
        for p, saved in zip(model_b.parameters(), saved_params):
            p.copy_(saved)
    opt_b.load_state_dict(saved_state)
    _steps(model_b, opt_b, 3, start=3)
    for a, b in zip(model_a.parameters(), model_b.parameters()):
        assert torch.equal(a, b)
    assert _same(_state_bits(opt_a), _state_bits(opt_b))

    model_c, opt_c = _model_and_opt(fmt, "SpectralAdam", p=0.5, seed=7)
    _steps(model_c, opt_c, 6)
    assert _same(_state_bits(opt_a), _state_bits(opt_c))  # same seed, no interruption: same bits
    if fmt == "bfloat16":
        model_d, opt_d = _model_and_opt(fmt, "SpectralAdam", p=0.5, seed=8)
        _steps(model_d, opt_d, 6)
        assert not _same(_state_bits(opt_a), _state_bits(opt_d))


@pytest.mark.parametrize("fmt", ["bfloat16", "int8"])
def test_fp32_checkpoint_into_low_precision_and_back(fmt):
    model, opt32 = _model_and_opt("float32", "SpectralAdam", p=0.5)
    _steps(model, opt32, 3)
    fp32_state = copy.deepcopy(opt32.state_dict())
    opt = muonlab.SpectralAdam(muonlab.param_groups(model), lr=0.02, p=0.5, state_dtype=fmt)
    opt.load_state_dict(fp32_state)
    assert all(g["state_dtype"] == fmt for g in opt.param_groups)  # this optimizer's choice, not the checkpoint's
    for saved_id, p in enumerate(p for g in opt.param_groups for p in g["params"]):  # the state_dict's numbering
        for key in ("exp_avg", "exp_avg_sq"):
            original = fp32_state["state"][saved_id][key]
            expected = fmt if (fmt == "bfloat16" or p.dim() >= 2) else "float32"
            assert sc.stored_format(opt.state[p], key) == expected
            decoded = sc.decode(opt.state[p], key, p, torch.float32)
            bound = 2**-7 * original.abs() if fmt == "bfloat16" else i8.max_quantization_error(key == "exp_avg") * float(original.abs().max())
            assert bool(((decoded - original).abs() <= bound + 1e-30).all())
    _steps(model, opt, 1, start=3)  # and it steps on
    low_state = copy.deepcopy(opt.state_dict())
    back = muonlab.SpectralAdam(muonlab.param_groups(model), lr=0.02, p=0.5)
    back.load_state_dict(low_state)
    for p in model.parameters():
        for key in ("exp_avg", "exp_avg_sq"):
            assert back.state[p][key].dtype == torch.float32 and "exp_avg_absmax" not in back.state[p]
            assert torch.equal(back.state[p][key], sc.decode(opt.state[p], key, p, torch.float32))
    _steps(model, back, 1, start=4)


@pytest.mark.parametrize("value", ["fp7", torch.float16, 3])
def test_bad_state_dtype_is_one_line_at_construction(value):
    model = TinyNet()
    with pytest.raises(ValueError, match=r"^state_dtype must be one of 'float32', 'bfloat16', 'int8'") as err:
        muonlab.Muon(model.parameters(), state_dtype=value)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=r"^param group 0 \(matrix\): state_dtype must be one of"):
        muonlab.Muon([{"params": [model.hidden.weight], "kind": "matrix", "state_dtype": value}])
    with pytest.raises(ValueError, match=r"^param_rounding must be one of 'nearest', 'stochastic'; got 'up'"):
        muonlab.Muon(model.parameters(), param_rounding="up")
    with pytest.raises(ValueError, match=r"^rounding_seed must be an int"):
        muonlab.Muon(model.parameters(), rounding_seed=1.5)


def test_state_dtype_per_group():
    model = TinyNet()
    opt = muonlab.Muon([{"params": [model.hidden.weight], "kind": "matrix", "state_dtype": "int8"},
                        {"params": [model.proj.weight], "kind": "matrix"},
                        {"params": [model.emb.weight], "kind": "embedding", "state_dtype": torch.bfloat16}],
                       lr=0.02)
    tokens, targets = task()
    loss_fn(model, tokens, targets).backward()
    opt.step()
    assert sc.stored_format(opt.state[model.hidden.weight], "momentum_buffer") == "int8"
    assert sc.stored_format(opt.state[model.proj.weight], "momentum_buffer") == "float32"
    assert sc.stored_format(opt.state[model.emb.weight], "exp_avg") == "bfloat16"


def test_state_bytes_per_element():
    """Muon's matrices 4 → 2 → ≤ 1.1 bytes per element; the AdamW part's 2-D tensors 8 → 4 → ≤ 2.2."""
    per_element = {}
    for fmt in FORMATS:
        model = nn.ModuleDict({"emb": nn.Embedding(300, 256), "w": nn.Linear(256, 512, bias=False)})
        groups = [{"params": [model["w"].weight], "kind": "matrix"}, {"params": [model["emb"].weight], "kind": "embedding"}]
        opt = muonlab.Muon(groups, lr=0.02, state_dtype=fmt)
        for p in model.parameters():
            p.grad = torch.randn_like(p)
        opt.step()
        stats = opt.last_step_stats()
        per_element[fmt] = [g["state_bytes"] / p.numel() for g, p in zip(stats["groups"], (model["w"].weight, model["emb"].weight))]
        assert stats["state_bytes"] == sum(g["state_bytes"] for g in stats["groups"])
    assert per_element["float32"] == [4, 8] and per_element["bfloat16"] == [2, 4]
    assert per_element["int8"] == [1 + 4 / 256, 2 * (1 + 4 / 256)]


def test_stochastic_parameter_rounding_keeps_small_updates():
    """bf16 parameters updated by steps far below their resolution: nearest rounding never moves them, stochastic
    rounding moves them by the right amount on average (the test fails if the rounding is not unbiased)."""
    steps, lr = 200, 1e-4
    moved = {}
    for rounding in ("nearest", "stochastic"):
        torch.manual_seed(0)
        w = nn.Parameter(torch.ones(64, 64, dtype=torch.bfloat16))
        opt = muonlab.Muon([{"params": [w], "kind": "matrix"}], lr=lr, weight_decay=0.0, momentum=0.0,
                           nesterov=False, method="svd", param_rounding=rounding)
        g = torch.linalg.qr(torch.randn(64, 64, generator=torch.Generator().manual_seed(1)))[0]
        for _ in range(steps):
            w.grad = g.to(torch.bfloat16)
            opt.step()
        moved[rounding] = (w.detach().float() - 1).double()
    expected = -(steps * lr * g.double())  # the exact fp64 sum of the updates (polar of an orthogonal G is G)
    assert float(moved["nearest"].abs().max()) == 0.0  # 1e-4·|g| ≪ bf16's half ulp at 1 (2⁻⁸): every step lost
    # each entry jumps by whole ulps now and then; over 4096 entries the least-squares slope of the movement on the
    # exact one is 1 ± 0.03 (one standard error) when the rounding is unbiased, 0 for nearest rounding
    slope = (moved["stochastic"] * expected).sum() / expected.square().sum()
    assert abs(float(slope) - 1) < 0.15, float(slope)


def test_fp32_parameters_ignore_param_rounding():
    model_a, opt_a = _model_and_opt("float32")
    model_b, opt_b = _model_and_opt("float32", param_rounding="stochastic")
    _steps(model_a, opt_a, 2)
    _steps(model_b, opt_b, 2)
    for a, b in zip(model_a.parameters(), model_b.parameters()):
        assert torch.equal(a, b)


def test_bf16_parameters_with_stochastic_rounding_resume_exactly():
    model_a, opt_a = _model_and_opt("bfloat16", dtype=torch.bfloat16, param_rounding="stochastic", seed=3)
    _steps(model_a, opt_a, 2)
    saved = [p.detach().clone() for p in model_a.parameters()], copy.deepcopy(opt_a.state_dict())
    _steps(model_a, opt_a, 2, start=2)
    model_b, opt_b = _model_and_opt("bfloat16", dtype=torch.bfloat16, param_rounding="stochastic", seed=3)
    with torch.no_grad():
        for p, s in zip(model_b.parameters(), saved[0]):
            p.copy_(s)
    opt_b.load_state_dict(saved[1])
    _steps(model_b, opt_b, 2, start=2)
    assert all(torch.equal(a, b) for a, b in zip(model_a.parameters(), model_b.parameters()))


def test_last_step_stats():
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(24, 16))
    b = nn.Parameter(torch.zeros(24))
    opt = muonlab.Muon([{"params": [w], "kind": "matrix"}, {"params": [b], "kind": "vector"}], lr=0.1,
                       weight_decay=0.0, momentum=0.0, nesterov=False, method="svd", adjust_lr_fn="none")
    g = torch.randn(24, 16, generator=torch.Generator().manual_seed(2))
    before = w.detach().clone()
    w.grad, b.grad = g, torch.randn(24)
    opt.step()
    stats = opt.last_step_stats()
    assert stats["step"] == 1 and stats["skipped_steps"] == 0
    matrix, vector = stats["groups"]
    assert matrix["kind"] == "matrix" and vector["rule"] == "adamw" and vector["update_rms"] is None
    # the update taken per unit lr, measured from the parameter: polar(G) of a 24×16 matrix has RMS √(16/384)
    taken = ((before - w.detach()) / 0.1).pow(2).mean().sqrt()
    assert matrix["update_rms"] == pytest.approx(float(taken), rel=1e-5)
    assert matrix["update_rms"] == pytest.approx(math.sqrt(16 / 384), rel=1e-5)
    assert matrix["orthogonality_error"] < 1e-5  # an exact polar factor (SVD)
    assert matrix["state_bytes"] == 24 * 16 * 4 and vector["state_bytes"] == 2 * 24 * 4

    # an inexact iteration: its error is what the σ spread of its output says (fp64 SVD reference)
    opt2 = muonlab.Muon([{"params": [w], "kind": "matrix"}], lr=0.1, momentum=0.0, nesterov=False, ns_steps=2,
                        ns_coefficients=(3.4445, -4.775, 2.0315))
    w.grad = g
    opt2.step()
    sample = muonlab.polar(g.T, "newton_schulz", 2, coefficients=(3.4445, -4.775, 2.0315))  # the rows sampled
    s2 = torch.linalg.svdvals(sample.double()).square()
    expected = float(((s2 / s2.mean() - 1).square().sum() / s2.numel()).sqrt())
    assert opt2.last_step_stats()["groups"][0]["orthogonality_error"] == pytest.approx(expected, rel=1e-3)

    w.grad = torch.full_like(w, float("nan"))
    with pytest.warns(RuntimeWarning):
        opt.step()
    assert opt.last_step_stats()["skipped_steps"] == 1


@pytest.mark.parametrize("fmt", ["bfloat16", "int8"])
def test_adamw_part_slices_give_the_same_bits(fmt, monkeypatch):
    """The AdamW part decodes large tensors by slices of rows: any slice size gives the bits of whole tensors
    (int8 blocks live in rows; stochastic rounding is keyed by the global element index)."""
    from muonlab.optim import low_precision

    def run():
        model, opt = _model_and_opt(fmt, dtype=torch.bfloat16, param_rounding="stochastic", seed=5)
        _steps(model, opt, 3)
        return [p.detach().clone() for p in model.parameters()], _state_bits(opt)

    whole = run()
    monkeypatch.setattr(low_precision, "ADAMW_PIECE_BYTES", 200)  # the 40×16 embedding in slices of 3 rows
    pieces = low_precision.adamw_pieces([torch.zeros(40, 16), torch.zeros(16), torch.zeros(5, 2)], 200)
    assert pieces[0] == [(0, (0, 3))] and pieces[13] == [(0, (39, 40))] and pieces[14] == [(1, None), (2, None)]
    sliced = run()
    assert all(torch.equal(a, b) for a, b in zip(whole[0], sliced[0]))
    assert _same(whole[1], sliced[1])
