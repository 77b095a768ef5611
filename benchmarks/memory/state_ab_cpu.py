"""bf16 (and int8) state against fp32 state in muonlab.Muon's step, paired: the steps alternate within each round
(order flipped every round) and the result is the median of the per-round ratios, which cancels the slow drifts of
a shared or throttling CPU that a ratio of two medians keeps.

    PYTHONPATH=src python benchmarks/memory/state_ab_cpu.py [--blocks 6] [--rounds 12] [--formats bfloat16]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

import muonlab
from muonlab.bench.step import GPT2Params, fill_gradients


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--blocks", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--formats", default="bfloat16", help="comma-separated state dtypes to pair with float32")
    args = parser.parse_args()
    model = GPT2Params(args.blocks)
    fill_gradients(model, torch.Generator().manual_seed(0))
    names = ["float32", *args.formats.split(",")]
    opts = {n: muonlab.Muon(muonlab.param_groups(model), lr=1e-6, state_dtype=n) for n in names}
    for opt in opts.values():
        opt.step()
        opt.step()
    print(f"{args.blocks} blocks, {torch.get_num_threads()} threads, load average {os.getloadavg()}")
    times = {n: [] for n in names}
    for r in range(args.rounds):
        for n in names if r % 2 == 0 else reversed(names):
            start = time.perf_counter()
            opts[n].step()
            times[n].append(time.perf_counter() - start)
    for n in names[1:]:
        ratios = [a / b for a, b in zip(times[n], times["float32"])]
        print(f"{n}: median step {statistics.median(times[n]) * 1e3:.0f} ms vs float32 "
              f"{statistics.median(times['float32']) * 1e3:.0f} ms; paired ratio median {statistics.median(ratios):.3f} "
              f"(rounds {min(ratios):.3f} … {max(ratios):.3f})")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
