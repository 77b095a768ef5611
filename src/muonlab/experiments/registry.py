"""Names of the experiments that ``muonlab run NAME`` knows, mapped to "module:function", and running one by name.

Each function has the signature ``run(args: argparse.Namespace) -> dict``: it writes its plots (and tables) under
``args.out`` and returns its results, which :func:`execute` writes as ``results.json`` (the one writer of that file).
Imports are lazy so the CLI starts fast.

Both the command line (``experiments/cli.py``) and the report (``experiments/report.py``) run experiments through
:func:`execute`; neither imports the other's module for it.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from muonlab.errors import CLIError

EXPERIMENTS: dict[str, str] = {
    "matfac": "muonlab.experiments.kappa_sweeps:run_matfac",
    "matfac-sym": "muonlab.experiments.kappa_sweeps:run_matfac_sym",
    "icl": "muonlab.experiments.kappa_sweeps:run_icl",
    "quadreg": "muonlab.experiments.polargrad_problems:run_quadreg",
    "logreg": "muonlab.experiments.polargrad_problems:run_logreg",
    "completion": "muonlab.experiments.polargrad_problems:run_completion",
    "lm-compare": "muonlab.experiments.lm_compare:run",
    "qk-clip": "muonlab.experiments.qk_clip:run",
}


def resolve_experiment(name: str):
    """The ``run(args) -> dict`` function of experiment ``name``; a one-line CLIError for an unknown name."""
    if name not in EXPERIMENTS:
        raise CLIError(f"unknown experiment {name!r}; known: {', '.join(EXPERIMENTS)}")
    module, func = EXPERIMENTS[name].split(":")
    return getattr(importlib.import_module(module), func)


def execute(name: str, args: argparse.Namespace, out_dir: Path) -> dict:
    """Run experiment ``name`` writing into ``out_dir`` (which must exist); returns the results payload."""
    from muonlab.files import write_json

    func = resolve_experiment(name)
    sub = argparse.Namespace(**{**vars(args), "experiment": name, "out": out_dir})
    payload = func(sub)
    write_json(Path(out_dir) / "results.json", payload)
    return payload
