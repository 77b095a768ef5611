"""One spawn of W gloo ranks per world size, shared by every test in this folder (spawning is slow)."""

from __future__ import annotations

import pytest

from muonlab.distributed.launch import run_on_ranks
from tests.distributed.scenarios import all_scenarios

_CACHE: dict[int, list[dict]] = {}


def scenario_results(world_size: int) -> list[dict]:
    """Per-rank results of :func:`all_scenarios` on ``world_size`` ranks (computed once per session)."""
    if world_size not in _CACHE:
        _CACHE[world_size] = run_on_ranks(all_scenarios, world_size, timeout=150.0)
    return _CACHE[world_size]


@pytest.fixture(params=[2, 3], ids=["world2", "world3"])
def world(request):
    """(world_size, per-rank results)."""
    return request.param, scenario_results(request.param)


def scenario(results: list[dict], name: str) -> list[dict]:
    """One scenario's per-rank output; fails the test with the worker's traceback if it raised."""
    outputs = [r[name] for r in results]
    for rank, out in enumerate(outputs):
        if "error" in out:
            pytest.fail(f"scenario {name!r} raised on rank {rank}:\n{out['error']}")
    return outputs
