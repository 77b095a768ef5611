"""torch.optim conventions, resume, dtypes, the non-finite policy and bad input, for every optimizer name."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

import muonlab
from muonlab.optim import OPTIMIZERS, make_optimizer, param_groups
from tests.optim.models import TinyNet, loss_fn, task, train

OURS = [name for name in OPTIMIZERS if name not in ("adamw", "sgd")]


def _grads(model, tokens, targets, opt):
    opt.zero_grad()
    loss_fn(model, tokens, targets).backward()


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_every_name_trains_the_small_model(name):
    torch.manual_seed(0)
    model = TinyNet()
    losses = train(model, make_optimizer(name, param_groups(model)), 30)
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0] - 0.1, f"{name}: {losses[0]:.3f} -> {losses[-1]:.3f}"


@pytest.mark.parametrize("grouped", [True, False])
def test_muon_trains_out_of_the_box(grouped):
    torch.manual_seed(0)
    model = TinyNet(tie=True)
    params = param_groups(model) if grouped else model.parameters()
    losses = train(model, muonlab.Muon(params, lr=0.02), 60)
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("name,dtype", [(n, torch.float32) for n in OURS + ["adamw"]]
                         + [("muon", torch.bfloat16), ("adam", torch.float16)])
def test_resume_is_bitwise(name, dtype, tmp_path):
    """10 steps straight == 5 steps, save, load into a fresh optimizer (weights_only=True), 5 steps.

    Half-precision parameters keep fp32 state, which must survive the load uncast."""
    tokens, targets = task()
    torch.manual_seed(1)
    straight = TinyNet().to(dtype)
    torch.manual_seed(1)
    resumed = TinyNet().to(dtype)
    opt_a = make_optimizer(name, param_groups(straight))
    for _ in range(10):
        _grads(straight, tokens, targets, opt_a)
        opt_a.step()
    opt_b = make_optimizer(name, param_groups(resumed))
    for _ in range(5):
        _grads(resumed, tokens, targets, opt_b)
        opt_b.step()
    path = tmp_path / "ckpt.pt"
    torch.save({"model": resumed.state_dict(), "opt": opt_b.state_dict()}, path)
    ckpt = torch.load(path, weights_only=True)
    torch.manual_seed(99)
    fresh = TinyNet().to(dtype)
    fresh.load_state_dict(ckpt["model"])
    opt_c = make_optimizer(name, param_groups(fresh))
    opt_c.load_state_dict(ckpt["opt"])
    for _ in range(5):
        _grads(fresh, tokens, targets, opt_c)
        opt_c.step()
    for (n, a), b in zip(straight.named_parameters(), fresh.parameters()):
        assert torch.equal(a, b), n


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", ["muon", "polargrad", "adamq", "msgdz", "simplified_muon"])
def test_low_precision_parameters(name, dtype):
    torch.manual_seed(0)
    model = TinyNet().to(dtype)
    opt = make_optimizer(name, param_groups(model))
    tokens, targets = task()
    for _ in range(3):
        _grads(model, tokens, targets, opt)
        opt.step()
    for p in model.parameters():
        assert p.dtype == dtype and bool(torch.isfinite(p).all())
        for v in opt.state[p].values():
            if isinstance(v, torch.Tensor):
                assert v.dtype == torch.float32  # half-precision parameters keep fp32 state


def test_closure_scheduler_tensor_lr_and_zero_grad():
    w = torch.randn(6, 8, requires_grad=True)
    opt = muonlab.Muon([w], lr=torch.tensor(0.1), weight_decay=0.0, momentum=0.0, method="svd")
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    before = w.detach().clone()
    loss = opt.step(lambda: (w**2).sum().backward() or (w**2).sum())
    assert torch.is_tensor(loss)
    moved = float(torch.linalg.matrix_norm(w.detach() - before, 2))
    assert moved == pytest.approx(0.1, rel=1e-5)  # a polar factor has spectral norm 1
    sched.step()
    assert float(opt.param_groups[0]["lr"]) == pytest.approx(0.05)
    opt.zero_grad()
    assert w.grad is None


def test_param_groups_have_their_own_settings():
    a = torch.randn(5, 5, requires_grad=True)
    b = torch.randn(5, 5, requires_grad=True)
    opt = muonlab.Muon([{"params": [a], "lr": 0.0}, {"params": [b]}], lr=0.1)
    a0, b0 = a.detach().clone(), b.detach().clone()
    a.grad, b.grad = torch.randn(5, 5), torch.randn(5, 5)
    opt.step()
    assert torch.equal(a.detach(), a0 * (1 - 0.0))  # lr 0: no decay, no move
    assert not torch.equal(b.detach(), b0)


@pytest.mark.parametrize("name", OURS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_gradient_skips_the_whole_step(name, bad):
    torch.manual_seed(0)
    model = TinyNet()
    opt = make_optimizer(name, param_groups(model))
    tokens, targets = task()
    _grads(model, tokens, targets, opt)
    opt.step()  # create state
    _grads(model, tokens, targets, opt)
    model.conv.weight.grad[0, 0, 0] = bad
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    state = {n: {k: (v.clone() if torch.is_tensor(v) else v) for k, v in opt.state[p].items()}
             for n, p in model.named_parameters()}
    with pytest.warns(RuntimeWarning, match="conv.weight"):
        opt.step()
    for n, p in model.named_parameters():
        assert torch.equal(p.detach(), params[n]), n
        for k, v in opt.state[p].items():
            assert torch.equal(v, state[n][k]) if torch.is_tensor(v) else v == state[n][k]


def test_nonfinite_raise_policy():
    w = torch.randn(4, 4, requires_grad=True)
    opt = muonlab.Muon([w], on_nonfinite="raise")
    w.grad = torch.full((4, 4), float("nan"))
    with pytest.raises(FloatingPointError, match="non-finite"):
        opt.step()
    with pytest.raises(ValueError, match="on_nonfinite"):
        muonlab.Muon([w], on_nonfinite="ignore")


@pytest.mark.parametrize("name", OURS)
def test_zero_gradient_gives_no_nan(name):
    torch.manual_seed(0)
    model = TinyNet()
    opt = make_optimizer(name, param_groups(model))
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.step()
        opt.step()
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())


def test_bad_input_errors_name_the_argument():
    w = torch.randn(4, 4, requires_grad=True)
    for factory, kwargs, word in [
        (muonlab.Muon, {"lr": -1.0}, "lr"),
        (muonlab.Muon, {"momentum": -0.5}, "momentum"),
        (muonlab.Muon, {"weight_decay": -0.1}, "weight_decay"),
        (muonlab.Muon, {"adamw_lr": -1.0}, "adamw_lr"),
        (muonlab.Muon, {"adamw_betas": (0.9, 1.5)}, "adamw_betas"),
        (muonlab.Muon, {"tensor_layout": "stack"}, "tensor_layout"),
        (muonlab.PolarGrad, {"lr": 0.1, "momentum": 2.0}, "momentum"),
        (muonlab.SpectralSGD, {"lr": 0.1, "p": 1.5}, "p"),
        (muonlab.SpectralSGD, {"lr": 0.1, "p": 0.123457, "method": "newton"}, "p"),
        (muonlab.SpectralAdam, {"lr": 0.1, "p": 0.5, "betas": (1.0, 0.9)}, "betas"),
        (muonlab.SimplifiedMuon, {"lr": 0.1, "method": "eig"}, "method"),
    ]:
        with pytest.raises(ValueError, match=word):
            factory([w], **kwargs)
    with pytest.raises(ValueError, match="complex"):
        muonlab.Muon([torch.randn(3, 3, dtype=torch.complex64, requires_grad=True)])
    with pytest.raises(ValueError, match="kind"):
        muonlab.Muon([{"params": [w], "kind": "bias"}])
    with pytest.raises(ValueError, match="'momentun'"):
        muonlab.Muon([{"params": [w], "momentun": 0.9}])
    with pytest.raises(ValueError, match="'betas'.*adamw_"):
        muonlab.Muon([{"params": [w], "kind": "vector", "betas": (0.9, 0.9)}])
    with pytest.raises(ValueError, match="unknown optimizer name 'lion'"):
        make_optimizer("lion", [w])
    with pytest.raises(TypeError, match="betaz"):
        make_optimizer("adam", [w], betaz=(0.9, 0.9))


def test_sparse_gradient_is_refused_with_the_parameter_name():
    emb = torch.nn.Embedding(10, 4, sparse=True)
    opt = muonlab.Muon(list(emb.named_parameters()))
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse.*'weight'"):
        opt.step()


def test_same_shape_matrices_share_one_transform_call():
    opt = muonlab.Muon([torch.randn(8, 4, requires_grad=True) for _ in range(3)]
                       + [torch.randn(4, 8, requires_grad=True)], method="svd")
    calls = []
    original = opt.transform
    opt.transform = lambda x, settings, **kw: calls.append(tuple(x.shape)) or original(x, settings, **kw)
    for p in opt.param_groups[0]["params"]:
        p.grad = torch.randn_like(p)
    opt.step()
    assert sorted(calls) == [(1, 4, 8), (3, 8, 4)]
