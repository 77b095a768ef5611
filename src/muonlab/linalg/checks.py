"""Input validation shared by the matrix functions.

Errors are raised here, at the boundary, with the parameter's name; the iterations themselves
assume a valid floating-point batch of matrices.
"""

from __future__ import annotations

import torch


def check_matrix(x: object, name: str = "x", *, check_finite: bool = True) -> torch.Tensor:
    """Return ``x`` if it is a real floating tensor of shape (..., m, n); raise a clear error otherwise."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (..., m, n), got {type(x).__name__}")
    if x.dim() < 2:
        raise ValueError(
            f"{name} must have at least 2 dimensions (..., m, n), got shape {tuple(x.shape)}; "
            "a vector has no polar factor in this sense — reshape it to (1, n) or (n, 1) if that is what you mean"
        )
    if x.is_complex():
        raise ValueError(f"{name} must be real, got complex dtype {x.dtype}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must have a floating dtype (float16/bfloat16/float32/float64), got {x.dtype}")
    if check_finite and x.numel() > 0 and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or Inf entries; the polar factor of a non-finite matrix is undefined")
    return x


def check_dtype(dtype: object, name: str = "dtype") -> torch.dtype | None:
    if dtype is None:
        return None
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point or dtype.is_complex:
        raise ValueError(f"{name} must be None or a real floating torch.dtype, got {dtype!r}")
    return dtype


def check_steps(steps: object, name: str = "steps") -> int | None:
    if steps is None:
        return None
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"{name} must be None or a non-negative int, got {steps!r}")
    return steps
