"""CUDA: the state codecs give the CPU's bits, and bf16/int8 state and bf16 parameters train on the GPU."""

from __future__ import annotations

import pytest
import torch

import muonlab
from muonlab.optim import int8_codes as i8
from muonlab.optim import stochastic_rounding as sr
from tests.optim.models import TinyNet, loss_fn, task

pytestmark = pytest.mark.gpu


def test_codecs_give_the_cpu_bits_on_cuda():
    x = torch.randn(300, 700, generator=torch.Generator().manual_seed(0)) * torch.logspace(-6, 2, 700)
    key = sr.rounding_key(3, 1, 0, 5)
    cpu = sr.stochastic_round_bf16(x, key, offset=12345)
    gpu = sr.stochastic_round_bf16(x.cuda(), key, offset=12345).cpu()
    assert torch.equal(cpu.view(torch.int16), gpu.view(torch.int16))  # counter-based bits: device-independent
    for signed, data in ((True, x), (False, x * x)):
        codes, scales = i8.quantize_blockwise(data, signed)
        codes_gpu, scales_gpu = i8.quantize_blockwise(data.cuda(), signed)
        assert torch.equal(scales, scales_gpu.cpu())
        assert (codes != codes_gpu.cpu()).float().mean() < 1e-4  # ties at midpoints may round apart
        back = i8.dequantize_blockwise(codes_gpu, scales_gpu, signed).cpu()
        assert torch.allclose(back, i8.dequantize_blockwise(codes, scales, signed), rtol=0.02, atol=0)


def test_fused_rounding_runs_on_cuda_and_gives_the_eager_bits(monkeypatch):
    monkeypatch.setitem(sr._FUSED, "failed", None)
    x = torch.randn(3 * sr.WINDOW + 77, generator=torch.Generator().manual_seed(1)).cuda()
    x[::1001] = float("nan")
    for offset in (0, sr.WINDOW - 5, (1 << 31) + 3):
        fused = sr.stochastic_round_bf16(x, key=11, offset=offset)
        assert sr._FUSED["failed"] is None  # the compiled kernel ran (no fallback)
        with monkeypatch.context() as eager:
            eager.setattr(sr, "FUSED_DEVICES", set())
            reference = sr.stochastic_round_bf16(x, key=11, offset=offset)
        assert torch.equal(fused.view(torch.int16), reference.view(torch.int16))


@pytest.mark.parametrize("fmt", ["bfloat16", "int8"])
def test_low_precision_state_and_bf16_parameters_train_on_cuda(fmt):
    losses = {}
    for setting in ("float32", fmt):
        torch.manual_seed(0)
        model = TinyNet().cuda().to(torch.bfloat16 if setting != "float32" else torch.float32)
        opt = muonlab.Muon(muonlab.param_groups(model), lr=0.02, state_dtype=setting,
                           param_rounding="stochastic")
        tokens, targets = (t.cuda() for t in task())
        history = []
        for _ in range(30):
            opt.zero_grad()
            loss = loss_fn(model, tokens, targets).float()
            loss.backward()
            opt.step()
            history.append(float(loss))
        losses[setting] = history
        stats = opt.last_step_stats()
        matrix = next(g for g in stats["groups"] if g["kind"] == "matrix")
        assert matrix["state_dtype"] == setting and matrix["update_rms"] > 0 and matrix["orthogonality_error"] < 1
    assert losses[fmt][-1] < 0.7 * losses[fmt][0]  # it learns
    assert abs(losses[fmt][-1] - losses["float32"][-1]) < 0.25 * losses["float32"][0]
