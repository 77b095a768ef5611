"""Which torch device a ``--device`` value names: the one check and the one resolution of ``"auto"`` (a leaf: it
imports nothing from muonlab).

Every command that takes ``--device`` (``muonlab train``, the language-model experiments) checks it with
:func:`device_problem` before any work and turns ``"auto"`` into a device with :func:`resolve_device`.
"""

from __future__ import annotations

__all__ = ["device_problem", "resolve_device"]


def resolve_device(name: str | None):
    """The ``torch.device`` of ``name``; ``"auto"`` (or None) is CUDA when this machine has it, else the CPU."""
    import torch

    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def device_problem(name: str | None) -> str | None:
    """What is wrong with a ``--device`` value (auto, cpu, cuda or cuda:N, and it must exist here), or None."""
    if name is None or name == "auto":
        return None
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        return f"--device: expected auto, cpu, cuda or cuda:N, got {name!r}"
    if device.type not in ("cpu", "cuda"):
        return f"--device: expected auto, cpu, cuda or cuda:N, got {name!r}"
    if device.type == "cuda" and not torch.cuda.is_available():
        return f"--device {name}: CUDA is not available on this machine (torch {torch.__version__}); use --device cpu"
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        return f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)"
    return None
