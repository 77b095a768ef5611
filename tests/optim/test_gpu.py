"""CUDA: the same optimizers on GPU tensors (bf16 matmul iterations there) agree with the CPU path."""

from __future__ import annotations

import pytest
import torch

from muonlab.optim import OPTIMIZERS, make_optimizer, param_groups
from tests.optim.models import TinyNet, loss_fn, task

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("name", [n for n in OPTIMIZERS if n not in ("adamw", "sgd")])
def test_cuda_step_close_to_cpu_step(name):
    torch.manual_seed(0)
    cpu = TinyNet()
    gpu = TinyNet().cuda()
    gpu.load_state_dict(cpu.state_dict())
    tokens, targets = task()
    before = {n: p.detach().clone() for n, p in cpu.named_parameters()}
    for model, device in ((cpu, "cpu"), (gpu, "cuda")):
        opt = make_optimizer(name, param_groups(model))
        loss_fn(model, tokens.to(device), targets.to(device)).backward()
        opt.step()
    for (n, p_cpu), p_gpu in zip(cpu.named_parameters(), gpu.parameters()):
        moved = (p_cpu.detach() - before[n]).norm()
        diff = (p_gpu.detach().cpu() - p_cpu.detach()).norm()
        assert float(diff) <= 0.05 * float(moved) + 1e-6, n  # bf16 iteration on CUDA
