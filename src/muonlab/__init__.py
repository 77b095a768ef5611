"""muonlab: spectral (matrix-aware) optimizers and the lab that tests them."""

from muonlab.integrations import hf_optimizer, peak_lrs
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
    "hf_optimizer",
    "make_optimizer",
    "nuclear_norm",
    "param_groups",
    "peak_lrs",
    "polar",
    "spectral_power",
]
