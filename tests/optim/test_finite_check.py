"""The optimizers' NaN/Inf gradient check (one sync per device) against torch.isfinite, entry by entry."""

import pytest
import torch

from muonlab.optim.nonfinite import all_finite as _all_finite


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_any_nonfinite_entry_is_found(dtype, bad):
    finite = [torch.randn(3, 5, dtype=dtype), torch.empty(0, 4, dtype=dtype)]
    for numel in (7, 4099):  # scalar tail and vectorized body of the CPU kernels
        for position in (0, numel // 2, numel - 1):
            g = torch.randn(numel, dtype=dtype)
            g[position] = bad
            assert not _all_finite(finite + [g])
    assert _all_finite(finite + [torch.randn(4099, dtype=dtype)])


def test_extreme_finite_values_pass():
    big = torch.finfo(torch.float32).max
    assert _all_finite([torch.tensor([big, -big, 0.0]), torch.full((100,), big)])
    assert _all_finite([torch.empty(0)])
