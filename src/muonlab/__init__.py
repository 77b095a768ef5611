"""muonlab: spectral (matrix-aware) optimizers and the lab that tests them.

Layers, lowest first: leaves → linalg → distributed → optim → integrations → tasks → experiments → bench, reports, cli.

Each layer imports only itself and the layers before it (``tests/test_structure.py`` holds the same order and checks
every import, lazy ones included):

- leaves: ``errors`` (:class:`~muonlab.errors.CLIError`), ``files`` (JSON results and result folders, written
  atomically; ``jsonio`` is its old name), ``devices`` (the ``--device`` check, ``"auto"``), ``experiments.claims``;
- ``linalg``: matrix functions (the polar factor, spectral powers); ``distributed``: how whole matrices travel between
  ranks; ``optim``: the optimizers and the routing of parameters; ``integrations``: adapters to other training
  libraries. This package itself re-exports the public API of those layers, so it counts as the integrations layer;
- ``tasks``: problems and the LM trainer; ``experiments``: the reproductions;
- bench, reports (``experiments/report.py`` and each work's ``*_report.py``) and the command lines (``cli.py``,
  ``*/cli.py``).
"""

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
    "hf_optimizer",
    "make_optimizer",
    "nuclear_norm",
    "param_groups",
    "peak_lrs",
    "plan",
    "polar",
    "spectral_power",
]
