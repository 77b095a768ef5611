"""A weight stored as (in, out) (Hugging Face's Conv1D) trains exactly as the nn.Linear it is: same shape scale, fused
sections cut along output features, NorMuon's rows = output features."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import muonlab
from muonlab.optim.normuon import ROW_STATE
from tests.optim.test_routing import Conv1D


class Stored(nn.Module):
    """GPT-2's attention and MLP projections as Conv1D: weights (in, out)."""

    def __init__(self, dim=16):
        super().__init__()
        self.c_attn = Conv1D(3 * dim, dim)
        self.c_fc = Conv1D(4 * dim, dim)
        self.c_proj = Conv1D(dim, 4 * dim)


class AsLinear(nn.Module):
    def __init__(self, stored: Stored):
        super().__init__()
        for name in ("c_attn", "c_fc", "c_proj"):
            conv = getattr(stored, name)
            layer = nn.Linear(conv.nx, conv.nf)
            with torch.no_grad():
                layer.weight.copy_(conv.weight.T)
                layer.bias.copy_(conv.bias)
            setattr(self, name, layer)


@pytest.mark.parametrize("cls", [muonlab.Muon, muonlab.NorMuon, muonlab.PolarGrad])
@pytest.mark.parametrize("adjust_lr_fn", [None, "match_rms_adamw"])
def test_a_transposed_weight_takes_the_step_of_its_linear(cls, adjust_lr_fn):
    torch.manual_seed(0)
    stored = Stored()
    linear = AsLinear(stored)
    kwargs = dict(lr=0.02, adjust_lr_fn=adjust_lr_fn, method="svd") if cls is not muonlab.PolarGrad else dict(lr=0.02)
    a = cls(muonlab.param_groups(stored), **kwargs)
    # the Linear twin: c_attn's Q/K/V sections given by hand (routing splits only names it knows as fused)
    b = cls(muonlab.param_groups(linear, heads={"c_attn.weight": {"split_sizes": (16, 16, 16)}}), **kwargs)
    for step in range(3):
        gen = torch.Generator().manual_seed(step)
        for name in ("c_attn", "c_fc", "c_proj"):
            g = torch.randn(getattr(linear, name).weight.shape, generator=gen)
            getattr(linear, name).weight.grad = g
            getattr(stored, name).weight.grad = g.T.clone()
            getattr(linear, name).bias.grad = getattr(stored, name).bias.grad = torch.zeros_like(
                getattr(linear, name).bias)
        a.step()
        b.step()
    for name in ("c_attn", "c_fc", "c_proj"):
        torch.testing.assert_close(getattr(stored, name).weight.T, getattr(linear, name).weight, rtol=1e-5, atol=1e-6)
    if cls is muonlab.NorMuon:
        assert a.state[stored.c_fc.weight][ROW_STATE].shape == (64,)      # one value per output feature
        torch.testing.assert_close(a.state[stored.c_fc.weight][ROW_STATE], b.state[linear.c_fc.weight][ROW_STATE])


def test_transposed_is_checked_and_needs_2d_weights():
    with pytest.raises(ValueError, match="transposed must be a bool"):
        muonlab.Muon([{"params": [nn.Parameter(torch.zeros(4, 4))], "kind": "matrix", "transposed": "yes"}])
    with pytest.raises(ValueError, match="transposed=True applies to 2-D"):
        muonlab.Muon([{"params": [nn.Parameter(torch.zeros(2, 4, 4))], "kind": "matrix", "transposed": True}])
    with pytest.raises(ValueError, match="split_sizes"):      # sections tile the output features, not the rows
        muonlab.Muon([{"params": [nn.Parameter(torch.zeros(16, 48))], "kind": "matrix", "transposed": True,
                       "split_sizes": (8, 8)}])
