"""The linalg layer: matrix functions — pure, batched functions on (..., m, n) tensors.

No optimizer state and no torch.distributed here; the optimizers call these.
"""

from muonlab.linalg.polar import POLAR_METHODS, polar, resolve_method
from muonlab.linalg.power import POWER_METHODS, matrix_inverse_root, nuclear_norm, spectral_power

__all__ = [
    "POLAR_METHODS",
    "POWER_METHODS",
    "matrix_inverse_root",
    "nuclear_norm",
    "polar",
    "resolve_method",
    "spectral_power",
]
