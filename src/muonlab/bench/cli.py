"""``muonlab bench ...``: one sub-command per benchmark module."""

from __future__ import annotations

import importlib

# sub-command -> module with add_arguments(parser) and main(args) -> int
BENCHMARKS = {
    "dist": "muonlab.bench.dist",
    "family": "muonlab.bench.family",
    "memory": "muonlab.bench.memory",
    "polar": "muonlab.bench.polar",
    "step": "muonlab.bench.step",
}


def register(subparsers) -> None:
    parser = subparsers.add_parser("bench", help="run a benchmark: prints a table and writes JSON")
    bench_sub = parser.add_subparsers(dest="bench", metavar="BENCH", required=True)
    for name, module_name in BENCHMARKS.items():
        module = importlib.import_module(module_name)
        sub = bench_sub.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0])
        module.add_arguments(sub)
        sub.set_defaults(func=module.main)
