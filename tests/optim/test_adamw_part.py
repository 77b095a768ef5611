"""The built-in AdamW part: the fused fast path and the foreach path compute the same update."""

import pytest
import torch

from muonlab.optim import pipeline as pl


def _state(shapes, dtype, state_dtype=None):
    gen = torch.Generator().manual_seed(1)
    params = [torch.randn(s, generator=gen, dtype=dtype) for s in shapes]
    grads = [torch.randn(s, generator=gen, dtype=dtype) for s in shapes]
    sd = state_dtype or dtype
    m = [torch.randn(s, generator=gen, dtype=sd) * 0.1 for s in shapes]
    v = [torch.rand(s, generator=gen, dtype=sd) * 0.01 for s in shapes]
    return params, grads, m, v


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-6), (torch.float64, 1e-14)])
def test_fused_and_foreach_paths_agree(dtype, tol):
    shapes = [(64, 32), (32,), (7, 3, 5)]
    a = _state(shapes, dtype)
    b = [[t.clone() for t in ts] for ts in a]
    hyper = dict(lr=1e-2, beta1=0.9, beta2=0.95, eps=1e-10, weight_decay=0.1)
    steps = [3, 3, 7]
    assert all(pl._fusable(*ts) for ts in zip(*a))
    pl.adamw_update(*a, steps, **hyper)  # fused
    pl._foreach_adamw(*b, steps, **hyper)
    for x, y in zip(a[0] + a[2] + a[3], b[0] + b[2] + b[3]):
        assert torch.allclose(x, y, rtol=tol, atol=tol)
    # and the update really moved the parameters
    assert not torch.equal(a[0][0], _state(shapes, dtype)[0][0])


def test_mixed_dtype_state_takes_the_foreach_path():
    """bf16 parameters keep fp32 moments: not fusable, handled by the foreach ops."""
    params, grads, m, v = _state([(8, 4)], torch.bfloat16, torch.float32)
    grads = [g.float() for g in grads]
    assert not pl._fusable(params[0], grads[0], m[0], v[0])
    before = params[0].clone()
    pl.adamw_update(params, grads, m, v, [1], lr=1e-2, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.0)
    assert params[0].dtype == torch.bfloat16 and not torch.equal(params[0], before)
    assert torch.isfinite(params[0].float()).all()
