"""make_optimizer(name, params, **kw): every optimizer of the lab by name, with working defaults.

``lr`` is the learning rate of the matrix (spectral) part; the other parameters (kinds
``"embedding"``, ``"head"``, ``"vector"`` from :func:`muonlab.param_groups`, or 0-/1-D tensors)
use the built-in AdamW part (``adamw_lr`` = 3e-4 by default, …). The exceptions are ``adamw`` and
``sgd``: plain torch.optim.AdamW / SGD over every parameter with one ``lr``.

Default learning rates are starting points for small models (checked on the test suite's small
conv/MLP model), not tuned values; work D's best GPT-2 values are noted for reference.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch

from muonlab.optim.muon import Muon
from muonlab.optim.normuon import NorMuon
from muonlab.optim.polargrad import PolarGrad
from muonlab.optim.simplified import SimplifiedMuon
from muonlab.optim.spectral import SpectralAdam, SpectralSGD


@dataclass(frozen=True)
class OptimizerSpec:
    factory: Callable[..., torch.optim.Optimizer]
    defaults: dict[str, Any] = field(default_factory=dict)
    description: str = ""


OPTIMIZERS: dict[str, OptimizerSpec] = {
    "muon": OptimizerSpec(Muon, {"lr": 0.02}, "Muon (Polar Express, Nesterov μ=0.95, decay 0.1) + AdamW part"),
    "normuon": OptimizerSpec(
        NorMuon, {"lr": 0.02}, "NorMuon: Muon's polar factor, rows normalized by a per-row 2nd moment (β₂=0.95) + AdamW part",
    ),
    "polargrad": OptimizerSpec(
        PolarGrad, {"lr": 0.02, "momentum": 0.95}, "PolarGradM momentum-first: ‖M‖_*·polar(M), Polar Express ×5 (QDWH on fp64) + AdamW part",
    ),
    "simplified_muon": OptimizerSpec(SimplifiedMuon, {"lr": 0.02}, "W ← W − η·polar(G), exact polar (SVD) + AdamW part"),
    "msgd": OptimizerSpec(SpectralSGD, {"lr": 0.01, "p": 1.0}, "momentum SGD M ← 0.9M + G on matrices (work D: lr 5.0)"),
    "msgds": OptimizerSpec(SpectralSGD, {"lr": 0.05, "p": 0.5}, "Ψ_½ of momentum, matmul-only (work D: lr 0.2)"),
    "msgdq": OptimizerSpec(SpectralSGD, {"lr": 0.02, "p": 0.25}, "Ψ_¼ of momentum, matmul-only (work D: lr 0.04)"),
    "msgdz": OptimizerSpec(SpectralSGD, {"lr": 0.02, "p": 0.0}, "polar of momentum = Muon without Nesterov (work D: 7e-3)"),
    "adam": OptimizerSpec(SpectralAdam, {"lr": 1e-3, "p": 1.0}, "Adam on matrices + AdamW part (work D: lr 4e-3)"),
    "adams": OptimizerSpec(SpectralAdam, {"lr": 2.5e-3, "p": 0.5}, "Ψ_½ of Adam's update (work D: lr 1e-2)"),
    "adamq": OptimizerSpec(SpectralAdam, {"lr": 5e-3, "p": 0.25}, "Ψ_¼ of Adam's update (work D: lr 2e-2)"),
    "adamz": OptimizerSpec(SpectralAdam, {"lr": 0.02, "p": 0.0}, "polar of Adam's update (work D: lr 7e-3)"),
    "adamw": OptimizerSpec(torch.optim.AdamW, {"lr": 1e-3}, "torch.optim.AdamW on every parameter"),
    "sgd": OptimizerSpec(torch.optim.SGD, {"lr": 1e-2}, "torch.optim.SGD on every parameter (momentum 0 by default)"),
}

_TORCH_ONLY = ("adamw", "sgd")
_ROUTING_KEYS = ("kind", "tensor_layout", "num_heads", "split_sizes", "transposed")


def _torch_group(group: dict) -> dict:
    out = {k: v for k, v in group.items() if k not in _ROUTING_KEYS and k != "adamw_weight_decay"}
    if "adamw_weight_decay" in group:
        out["weight_decay"] = group["adamw_weight_decay"]
    return out


def make_optimizer(name: str, params: Iterable, **kwargs) -> torch.optim.Optimizer:
    """Build optimizer ``name`` (one of :data:`OPTIMIZERS`) on ``params``; ``kwargs`` override its defaults.

    ``params`` may be tensors, ``named_parameters()`` or param-group dicts (e.g. ``param_groups(model)``).
    Unknown names raise ValueError listing the known ones; unknown keyword arguments raise the
    optimizer's own TypeError naming the argument.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer name {name!r}; known: {', '.join(OPTIMIZERS)}")
    spec = OPTIMIZERS[name]
    if isinstance(params, torch.Tensor):
        params = [params]
    params = list(params)
    if name in _TORCH_ONLY and params and isinstance(params[0], dict):
        # torch optimizers keep unknown group keys; drop ours so nothing there pretends to matter (a group's
        # adamw_weight_decay, from a model's no_weight_decay(), is its weight_decay there).
        params = [_torch_group(g) for g in params]
    options = {**spec.defaults, **kwargs}
    return spec.factory(params, **options)
