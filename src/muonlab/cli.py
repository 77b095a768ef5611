"""The ``muonlab`` command line (also ``python -m muonlab``).

Each command lives with the layer it belongs to and registers itself through a
``register(subparsers)`` function; this module only lists them. A command's ``func(args)``
returns an exit code. :class:`CLIError` (from the leaf module ``muonlab.errors``) becomes a one-line
message and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from muonlab.errors import CLIError

# Modules that add commands; each has register(subparsers). Keep heavy imports inside the commands.
COMMAND_MODULES = (
    "muonlab.bench.cli",
    "muonlab.tasks.lm.cli",
    "muonlab.experiments.cli",
)

__all__ = ["CLIError", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    from muonlab import __version__

    parser = argparse.ArgumentParser(
        prog="muonlab",
        description="Spectral optimizers (Muon, PolarGrad, U Σ^p Vᵀ, MuonClip) and the lab that tests them.",
    )
    parser.add_argument("--version", action="version", version=f"muonlab {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except CLIError as err:
        print(f"muonlab: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("muonlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
