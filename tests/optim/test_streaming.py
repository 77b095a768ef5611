"""The step's working set is bounded (max_scratch_bytes), chunking does not change the math, compile=True works."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import muonlab
from muonlab.bench.step import profile_step_memory
from muonlab.optim.chunks import DEFAULT_SCRATCH_FLOOR, plan_chunks
from muonlab.optim.settings import Blocks

MIB = 2**20


def _matrices(shapes, seed=0):
    gen = torch.Generator().manual_seed(seed)
    params = [nn.Parameter(torch.randn(s, generator=gen)) for s in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen)
    return params


SHAPES = [(512, 512)] * 8 + [(256, 1024), (1024, 256)]  # 1 MiB each in fp32


@pytest.mark.parametrize("budget_mib", [5, 8])
def test_peak_scratch_stays_within_the_budget(budget_mib):
    params = _matrices(SHAPES)
    opt = muonlab.Muon(params, lr=0.02, max_scratch_bytes=budget_mib * MIB)
    opt.step()  # creates the momentum buffers
    peak = profile_step_memory(opt.step)["peak_bytes"]
    assert peak <= budget_mib * MIB, peak / MIB


def test_the_budget_is_what_bounds_it():
    # everything in one chunk: the same step needs far more than a chunked one
    params = _matrices(SHAPES)
    opt = muonlab.Muon(params, lr=0.02, max_scratch_bytes=10**10)
    opt.step()
    assert profile_step_memory(opt.step)["peak_bytes"] > 12 * MIB


def test_default_budget_is_three_largest_matrices_plus_the_floor():
    params = _matrices(SHAPES)
    opt = muonlab.Muon(params, lr=0.02)
    group = opt.param_groups[0]
    assert opt.scratch_budget(group, params) == 3 * MIB + DEFAULT_SCRATCH_FLOOR
    opt.step()
    assert profile_step_memory(opt.step)["peak_bytes"] <= 3 * MIB + DEFAULT_SCRATCH_FLOOR


@pytest.mark.parametrize("name", ["muon", "adamz", "polargrad", "msgds"])
def test_chunked_step_equals_one_batch(name):
    outs = []
    for budget in (1, 10**10):  # one matrix per chunk vs all at once
        params = _matrices([(48, 48)] * 3 + [(48, 96), (96, 48), (48, 48)], seed=1)
        opt = muonlab.make_optimizer(name, params, max_scratch_bytes=budget)
        for _ in range(2):
            opt.step()
        outs.append(torch.cat([p.detach().flatten() for p in params]))
    assert torch.allclose(outs[0], outs[1], rtol=1e-5, atol=1e-6)


def test_plan_chunks_keeps_same_shapes_together_and_respects_the_limit():
    params = _matrices([(4, 4), (8, 4), (4, 4), (8, 4), (4, 4)])
    blocks = Blocks("flatten")
    chunks = plan_chunks(params, blocks, limit=2 * 16 * 4)
    assert chunks == [[0, 2], [4], [1], [3]]
    assert sorted(i for c in chunks for i in c) == list(range(5))
    assert plan_chunks(params, blocks, limit=1) == [[0], [2], [4], [1], [3]]


def test_max_scratch_bytes_is_validated():
    with pytest.raises(ValueError, match="max_scratch_bytes must be None or a positive int"):
        muonlab.Muon(_matrices([(4, 4)]), max_scratch_bytes=0)
    with pytest.raises(ValueError, match="compile must be a bool"):
        muonlab.Muon(_matrices([(4, 4)]), compile="yes")


@pytest.mark.slow
def test_compiled_transform_matches_eager():
    results = []
    for compile_ in (False, True):
        params = _matrices([(16, 32), (16, 32)], seed=2)
        opt = muonlab.Muon(params, lr=0.02, compile=compile_)
        for _ in range(2):
            opt.step()
        results.append(torch.cat([p.detach().flatten() for p in params]))
    assert torch.allclose(results[0], results[1], rtol=1e-5, atol=1e-6)
