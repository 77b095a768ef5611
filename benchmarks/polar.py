"""Thin script for ``muonlab bench polar`` (same options): python benchmarks/polar.py --quick"""

import sys

from muonlab.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["bench", "polar", *sys.argv[1:]]))
