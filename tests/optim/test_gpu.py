"""CUDA: the same optimizers on GPU tensors (bf16 matmul iterations there) agree with the CPU path.

The tolerance is derived, not guessed: the same step is run on the CPU once with the iteration in fp32 (the CPU
default) and once in bf16 (what the matmul methods use on CUDA); the CUDA step may differ from the fp32 CPU step by
at most twice that measured bf16-vs-fp32 difference (a different device's bf16 rounds differently, but by as much),
and never by less than 5% of the parameter's move, the old fixed bound (fp32 methods, e.g. QDWH, on both devices).
"""

from __future__ import annotations

import pytest
import torch

from muonlab.linalg.precision import MATMUL_METHODS
from muonlab.optim import OPTIMIZERS, make_optimizer, param_groups
from tests.optim.models import TinyNet, loss_fn, task

pytestmark = pytest.mark.gpu


def _runs_in_bf16_on_cuda(name: str) -> bool:
    opt = make_optimizer(name, [torch.nn.Parameter(torch.zeros(4, 4))])
    group = opt.param_groups[0]
    method = group.get("method")
    if method in ("auto", "newton"):  # for a polar factor (p = 0): Polar Express, a matmul method
        method = "polar_express"
    return method in MATMUL_METHODS and group.get("polar_dtype") is None and group.get("p", 0) == 0


def _one_step(name: str, device: str, **options) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = TinyNet().to(device)
    tokens, targets = task()
    opt = make_optimizer(name, param_groups(model), **options)
    loss_fn(model, tokens.to(device), targets.to(device)).backward()
    opt.step()
    return {n: p.detach().cpu() for n, p in model.named_parameters()}


@pytest.mark.parametrize("name", [n for n in OPTIMIZERS if n not in ("adamw", "sgd")])
def test_cuda_step_close_to_cpu_step(name):
    torch.manual_seed(0)
    before = {n: p.detach().clone() for n, p in TinyNet().named_parameters()}
    cpu = _one_step(name, "cpu")
    cpu_bf16 = _one_step(name, "cpu", polar_dtype=torch.bfloat16) if _runs_in_bf16_on_cuda(name) else cpu
    gpu = _one_step(name, "cuda")
    for n, want in cpu.items():
        moved = float((want - before[n]).norm())
        bf16_error = float((cpu_bf16[n] - want).norm())
        tolerance = max(0.05 * moved, 2.0 * bf16_error) + 1e-6
        assert float((gpu[n] - want).norm()) <= tolerance, (n, float((gpu[n] - want).norm()), tolerance, moved)
