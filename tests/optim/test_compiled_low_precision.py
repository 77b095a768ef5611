"""torch.compile with bf16 / int8 optimizer state and stochastically rounded bf16 parameters: the compiled step
(``torch.compile(opt.step)``, and the ``compile=True`` option that compiles the matrix transform) trains like the
eager one, keeps the stored dtypes, stops compiling after the first steps, and its checkpoints round-trip.

The codecs run eagerly inside a compiled step (see ``muonlab.optim.state_codec.StateStore._decoded``); what the
compiler traces is the fp32 arithmetic around them, so compiled and eager runs agree to fp32 rounding."""

from __future__ import annotations

import copy
import shutil
import warnings

import pytest
import torch
from torch import nn
from torch._dynamo.utils import counters

import muonlab
from muonlab.optim import int8_codes as i8
from muonlab.optim import state_codec as sc


def _inductor_cannot_run() -> str | None:
    """Why inductor cannot compile for the CPU here (no C++ compiler), or None."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        compiler = get_cpp_compiler()
    except Exception as err:  # torch's own search failed: no compiler it can use
        return f"inductor finds no C++ compiler: {err}"
    return None if shutil.which(compiler) else f"inductor's C++ compiler {compiler!r} is not installed"


needs_inductor = pytest.mark.skipif(_inductor_cannot_run() is not None, reason=str(_inductor_cannot_run()))


class MixedNet(nn.Module):
    """An embedding and a head in fp32, a hidden linear in bf16: every format meets every parameter dtype."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(12, 8)
        self.hidden = nn.Linear(8, 16).to(torch.bfloat16)
        self.head = nn.Linear(16, 4)


def _optimizer(model: MixedNet, **options):
    """Matrices: the bf16 hidden weight in int8 state, the head in bf16 state; the AdamW part: the embedding in
    int8 state, the vectors (one of them bf16) in bf16 state; bf16 parameters stochastically rounded."""
    groups = [
        {"params": [model.hidden.weight], "kind": "matrix", "state_dtype": "int8"},
        {"params": [model.head.weight], "kind": "matrix", "state_dtype": "bfloat16"},
        {"params": [model.emb.weight], "kind": "embedding", "state_dtype": "int8"},
        {"params": [model.hidden.bias, model.head.bias], "kind": "vector", "state_dtype": "bfloat16"},
    ]
    return muonlab.Muon(groups, lr=0.02, weight_decay=0.1, adamw_lr=0.01, param_rounding="stochastic", rounding_seed=5,
                        **options)


STEPS = 3


def _gradients(model: nn.Module, step: int) -> None:
    generator = torch.Generator().manual_seed(1000 + step)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=generator).to(p.dtype)


def _train(model, step, steps: range, graphs: list | None = None) -> None:
    for i in steps:
        _gradients(model, i)
        step()
        if graphs is not None:
            graphs.append(counters["stats"]["unique_graphs"])


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def _stored_formats(opt, model: MixedNet) -> dict:
    return {name: {k: sc.stored_format(opt.state[p], k) for k in sc.SLOTS if k in opt.state[p]}
            for name, p in model.named_parameters()}


EXPECTED_FORMATS = {
    "emb.weight": {"exp_avg": "int8", "exp_avg_sq": "int8"},
    "hidden.weight": {"momentum_buffer": "int8"},
    "hidden.bias": {"exp_avg": "bfloat16", "exp_avg_sq": "bfloat16"},
    "head.weight": {"momentum_buffer": "bfloat16"},
    "head.bias": {"exp_avg": "bfloat16", "exp_avg_sq": "bfloat16"},
}


def _assert_close_runs(model_a, opt_a, model_b, opt_b) -> None:
    """Parameters and decoded state of two runs agree to fp32 rounding (1e-4 of the norm leaves room for a code or
    a bf16 rounding flipped by a last-bit difference of its fp32 input, and is far below a wrong step: the update
    itself is 2% of the weights)."""
    for (name, a), b in zip(model_a.named_parameters(), model_b.parameters()):
        assert a.dtype == b.dtype
        assert _rel(a.detach(), b.detach()) <= 1e-4, (name, _rel(a.detach(), b.detach()))
        for key in sc.SLOTS:
            if key in opt_b.state[b]:
                got = sc.decode(opt_a.state[a], key, a, torch.float64)
                want = sc.decode(opt_b.state[b], key, b, torch.float64)
                assert _rel(got, want) <= 1e-2, (name, key, _rel(got, want))


@needs_inductor
@pytest.mark.slow
def test_compiled_step_with_low_precision_state_matches_eager_and_round_trips():
    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    compiled_model = MixedNet()
    eager_model = copy.deepcopy(compiled_model)
    start = [p.detach().clone() for p in eager_model.parameters()]
    compiled_opt, eager_opt = _optimizer(compiled_model), _optimizer(eager_model)
    compiled_step = torch.compile(compiled_opt.step)
    graphs: list[int] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _train(compiled_model, compiled_step, range(STEPS), graphs)
    # torch's deprecation notices about its own internals, raised while it compiles, are not warnings of this step
    ours = [f"{w.filename}: {w.message}" for w in caught
            if not (issubclass(w.category, (DeprecationWarning, FutureWarning)) and "/torch/" in w.filename)]
    assert not ours, ours
    _train(eager_model, eager_opt.step, range(STEPS))
    assert graphs[1] == graphs[-1], graphs  # state exists after step 1: nothing new to compile afterwards
    assert _stored_formats(compiled_opt, compiled_model) == EXPECTED_FORMATS
    assert compiled_opt.state[compiled_model.hidden.weight]["momentum_buffer"].dtype == torch.uint8
    assert compiled_opt.state[compiled_model.hidden.weight]["momentum_buffer_absmax"].shape == \
        i8.blocks_per_row(compiled_model.hidden.weight.shape)
    assert compiled_model.hidden.weight.dtype == torch.bfloat16
    moved = [_rel(p.detach(), s) for p, s in zip(eager_model.parameters(), start)]
    assert min(moved) > 1e-3, moved  # training moved every parameter
    _assert_close_runs(compiled_model, compiled_opt, eager_model, eager_opt)

    # The compiled optimizer's checkpoint, loaded into a fresh optimizer, holds its state bit for bit, and the
    # resumed optimizer continues as the compiled original does.
    saved_params = [p.detach().clone() for p in compiled_model.parameters()]
    saved = copy.deepcopy(compiled_opt.state_dict())
    resumed_model = MixedNet()
    with torch.no_grad():
        for p, s in zip(resumed_model.parameters(), saved_params):
            p.copy_(s)
    resumed_opt = _optimizer(resumed_model)
    resumed_opt.load_state_dict(saved)
    for p, q in zip(compiled_model.parameters(), resumed_model.parameters()):
        original, loaded = compiled_opt.state[p], resumed_opt.state[q]
        assert original.keys() == loaded.keys()
        for key, value in original.items():
            if torch.is_tensor(value):
                assert loaded[key].dtype == value.dtype and torch.equal(loaded[key], value), key
            else:
                assert loaded[key] == value, key
    _train(compiled_model, compiled_step, range(STEPS, STEPS + 2))
    _train(resumed_model, resumed_opt.step, range(STEPS, STEPS + 2))
    _assert_close_runs(compiled_model, compiled_opt, resumed_model, resumed_opt)
    assert _stored_formats(resumed_opt, resumed_model) == EXPECTED_FORMATS


@needs_inductor
def test_compile_option_with_low_precision_state_matches_eager():
    """``compile=True`` compiles the matrix transform only; the codecs around it are untouched."""
    torch._dynamo.reset()
    torch.manual_seed(1)
    model = MixedNet()
    eager_model = copy.deepcopy(model)
    opt, eager_opt = _optimizer(model, compile=True), _optimizer(eager_model)
    _train(model, opt.step, range(3))
    _train(eager_model, eager_opt.step, range(3))
    assert _stored_formats(opt, model) == EXPECTED_FORMATS
    _assert_close_runs(model, opt, eager_model, eager_opt)
