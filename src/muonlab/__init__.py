"""muonlab: spectral (matrix-aware) optimizers and the lab that tests them."""

from muonlab.linalg import nuclear_norm, polar, spectral_power

__version__ = "0.1.0"

__all__ = ["nuclear_norm", "polar", "spectral_power", "__version__"]
