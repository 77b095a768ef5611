"""torch.compile(opt.step): no recompiles after the first steps (with a scheduler changing the lr every step), no
warnings, the same parameters as the eager step."""

from __future__ import annotations

import logging
import warnings

import pytest
import torch
from torch import nn
from torch._dynamo.utils import counters

import muonlab

STEPS = 6


def _run(compiled: bool):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    opt = muonlab.Muon(muonlab.param_groups(model), lr=0.02, cautious_wd=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
    step = torch.compile(opt.step) if compiled else opt.step
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 8, generator=gen), torch.randint(0, 4, (32,), generator=gen)
    graphs = []
    for _ in range(STEPS):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        step()
        sched.step()
        graphs.append(counters["stats"]["unique_graphs"])
    return model, graphs


@pytest.mark.slow
def test_a_compiled_step_stops_compiling_after_the_first_steps_and_warns_nothing(caplog):
    torch._dynamo.reset()
    counters.clear()
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        compiled, graphs = _run(compiled=True)
    # state appears at step 1 and the lr becomes symbolic when the scheduler first changes it: then nothing new
    assert graphs[2] == graphs[-1], graphs
    # torch's deprecation notices about its own internals, raised while it compiles, are not warnings of this step
    ours = [f"{w.filename}: {w.message}" for w in caught
            if not (issubclass(w.category, (DeprecationWarning, FutureWarning)) and "/torch/" in w.filename)]
    assert not ours, ours
    # torch's own Optimizer.step wrapper logs once that its profiler hook is not traced: not ours, not repeated
    ours = [r.getMessage() for r in caplog.records if "Profiler record function" not in r.getMessage()]
    assert not ours, ours
    eager, _ = _run(compiled=False)
    for a, b in zip(compiled.parameters(), eager.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
