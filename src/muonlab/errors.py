"""Errors shared across the layers, and the one check of a ``--device`` value (a leaf module: it imports nothing
from muonlab).

Any layer may raise :class:`CLIError` for a bad command-line input; ``muonlab.cli.main`` turns it into one line on
stderr and exit code 2. Keeping it here lets the commands of lower layers (bench, tasks, experiments) raise it without
importing the top-level command line.
"""


class CLIError(Exception):
    """A user error at the command line: printed as one line, exit code 2."""


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
