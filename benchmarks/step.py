"""Thin script for ``muonlab bench step`` (same options): python benchmarks/step.py --quick"""

import sys

from muonlab.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["bench", "step", *sys.argv[1:]]))
