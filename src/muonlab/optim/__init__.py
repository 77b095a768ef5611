"""Layer 2: spectral optimizers (torch.optim.Optimizer subclasses) and parameter routing.

- :class:`Muon`: drop-in for torch.optim.Muon that takes a whole model (AdamW part built in);
- :class:`NorMuon`: Muon with per-neuron (row) second-moment normalization (arXiv 2510.05491);
- :class:`PolarGrad`: PolarSGD / PolarGradM (nuclear-norm-scaled polar factor);
- :class:`SpectralSGD`, :class:`SpectralAdam`: work D's U Σᵖ Vᵀ family;
- :class:`SimplifiedMuon`: W ← W − η polar(G);
- :func:`param_groups`, :func:`explain`: which parameter gets which rule;
- :class:`QKClip`: per-head QK-Clip (MuonClip's post-step rule), with any optimizer;
- :func:`make_optimizer`, :data:`OPTIMIZERS`: everything by name.
"""

from muonlab.optim.base import SpectralOptimizer
from muonlab.optim.groups import KINDS
from muonlab.optim.muon import Muon
from muonlab.optim.normuon import NorMuon
from muonlab.optim.polargrad import PolarGrad
from muonlab.optim.qkclip import QKClip
from muonlab.optim.registry import OPTIMIZERS, make_optimizer
from muonlab.optim.routing import explain, param_groups, route
from muonlab.optim.simplified import SimplifiedMuon
from muonlab.optim.spectral import SpectralAdam, SpectralSGD

__all__ = [
    "KINDS",
    "OPTIMIZERS",
    "Muon",
    "NorMuon",
    "PolarGrad",
    "QKClip",
    "SimplifiedMuon",
    "SpectralAdam",
    "SpectralOptimizer",
    "SpectralSGD",
    "explain",
    "make_optimizer",
    "param_groups",
    "route",
]
