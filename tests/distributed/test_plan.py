"""The owner assignment: deterministic, balanced by flops, same-shape matrices spread evenly."""

from __future__ import annotations

import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from muonlab.distributed.plan import assign_owners, matrix_flops, rank_loads, shard_sizes

shapes_strategy = st.lists(st.tuples(st.integers(1, 64), st.integers(1, 64)), min_size=0, max_size=40)


def test_matrix_flops_follows_the_newton_schulz_count():
    # m <= n: 4 m^2 n + 2 m^3, and a tall matrix costs what its transpose costs
    assert matrix_flops((3, 5)) == 4 * 9 * 5 + 2 * 27
    assert matrix_flops((5, 3)) == matrix_flops((3, 5))
    # conv filter (out, in, kh, kw) is the matrix out x (in*kh*kw)
    assert matrix_flops((8, 2, 3, 3)) == matrix_flops((8, 18))


@settings(max_examples=60, deadline=None)
@given(shapes=shapes_strategy, world_size=st.integers(1, 5))
def test_assignment_is_valid_and_does_not_depend_on_anything_but_the_shapes(shapes, world_size):
    owners = assign_owners(shapes, world_size)
    assert len(owners) == len(shapes)
    assert all(0 <= o < world_size for o in owners)
    assert assign_owners(list(shapes), world_size) == owners  # same answer on every rank


@settings(max_examples=60, deadline=None)
@given(shapes=shapes_strategy, world_size=st.integers(2, 5))
def test_same_shape_matrices_are_spread_evenly(shapes, world_size):
    owners = assign_owners(shapes, world_size)
    for shape in set(shapes):
        counts = [sum(1 for s, o in zip(shapes, owners) if s == shape and o == r) for r in range(world_size)]
        assert max(counts) - min(counts) <= 1, (shape, counts)


@settings(max_examples=60, deadline=None)
@given(shapes=shapes_strategy, world_size=st.integers(2, 5))
def test_load_is_within_the_greedy_bound(shapes, world_size):
    # Greedy list scheduling: the heaviest rank exceeds the average by at most one matrix's cost.
    owners = assign_owners(shapes, world_size)
    loads = rank_loads(shapes, owners, world_size)
    if shapes:
        largest = max(matrix_flops(s) for s in shapes)
        assert max(loads) <= sum(loads) / world_size + largest + 1e-9


def test_balance_on_a_transformer_like_list():
    # 12 blocks x (qkv, proj, fc, fc_proj) of a d=256 model: perfectly divisible by 2 and 4, near-even on 3.
    shapes = [(768, 256), (256, 256), (1024, 256), (256, 1024)] * 12
    random.Random(0).shuffle(shapes)
    for world_size in (2, 3, 4):
        loads = rank_loads(shapes, assign_owners(shapes, world_size), world_size)
        assert max(loads) / (sum(loads) / world_size) <= 1.1, (world_size, loads)


def test_bad_world_size():
    with pytest.raises(ValueError, match="world_size"):
        assign_owners([(2, 2)], 0)


@pytest.mark.parametrize("world_size", [1, 2, 3, 4, 5])
def test_shard_sizes_match_dtensor_chunking(world_size):
    for length in range(0, 23):
        pieces = [c.shape[0] for c in torch.arange(length).chunk(world_size)] if length else []
        pieces += [0] * (world_size - len(pieces))
        assert shard_sizes(length, world_size) == pieces


def test_preflight_plan_of_a_single_process_model_and_bad_input():
    import muonlab

    plan = muonlab.plan(torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2)))
    assert plan.ranks == [] and plan.imbalance is None
    assert "single process" in str(plan)
    with pytest.raises(TypeError, match="plan\\(\\) takes an nn.Module or a muonlab optimizer"):
        muonlab.plan(torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1))
