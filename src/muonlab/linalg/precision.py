"""Which dtype an iteration runs in, by device.

Matmul-only iterations are cheap in bf16 on a GPU's tensor cores, but a CPU has no fast bf16 matmul kernels
(far slower than fp32; BENCHMARKS.md). So:

- CPU (and any non-CUDA device): at least float32; float64 inputs stay float64.
- CUDA: the matmul iterations (Newton–Schulz, Polar Express, Gram NS) run in bfloat16, as in
  modded-nanogpt, dion and torch.optim.Muon; factorization-based methods (SVD, QDWH) and the
  Newton inverse-root iterations run in at least float32, because LAPACK-style kernels have
  no bf16 path and their accuracy is the point.

An explicit ``dtype=`` always wins.
"""

from __future__ import annotations

import torch

from muonlab.linalg.methods import MATMUL_METHODS  # the methods whose entry says bf16_on_cuda


def _at_least_float32(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def iteration_dtype(x: torch.Tensor, method: str, dtype: torch.dtype | None = None) -> torch.dtype:
    """The dtype to run ``method`` in for input ``x`` (``dtype`` overrides)."""
    if dtype is not None:
        return dtype
    if x.device.type == "cuda" and method in MATMUL_METHODS and x.dtype != torch.float64:
        return torch.bfloat16
    return _at_least_float32(x.dtype)
