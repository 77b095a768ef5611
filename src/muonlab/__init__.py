"""muonlab: spectral (matrix-aware) optimizers and the lab that tests them."""

from muonlab.linalg import nuclear_norm, polar, spectral_power
from muonlab.optim import (
    OPTIMIZERS,
    Muon,
    NorMuon,
    PolarGrad,
    QKClip,
    SimplifiedMuon,
    SpectralAdam,
    SpectralSGD,
    explain,
    make_optimizer,
    param_groups,
    plan,
)

__version__ = "0.1.0"

__all__ = [
    "OPTIMIZERS",
    "Muon",
    "NorMuon",
    "PolarGrad",
    "QKClip",
    "SimplifiedMuon",
    "SpectralAdam",
    "SpectralSGD",
    "__version__",
    "explain",
    "make_optimizer",
    "nuclear_norm",
    "param_groups",
    "plan",
    "polar",
    "spectral_power",
]
