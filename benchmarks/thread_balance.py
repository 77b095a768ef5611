"""How a CPU step's work splits over torch's threads, counted in per-thread CPU time (works on a loaded machine).

Run with ``OMP_WAIT_POLICY=PASSIVE`` so that a thread waiting for the others sleeps instead of spinning: its CPU
time is then the work it did, and the busiest thread's share of the total says how evenly the threads shared it
(0.5 on 2 threads is even; wall time on an idle machine is at least the busiest thread's CPU time). Counting CPU
time per thread (``/proc/self/task/*/stat``) does not depend on what else runs on the machine, unlike wall time.

    OMP_WAIT_POLICY=PASSIVE PYTHONPATH=src python benchmarks/thread_balance.py --threads 2
    OMP_WAIT_POLICY=PASSIVE PYTHONPATH=src python benchmarks/thread_balance.py --threads 2 --step muon --blocks 6

Part 1 (always): ``torch.bmm`` on batches of B = 1 … 6 products of 768×768 (60 products each). Part 2
(``--step NAME``): steps of the registry optimizer NAME on :class:`muonlab.bench.step.GPT2Params`, alternating
muonlab's batching (:func:`muonlab.optim.chunks.batch_sizes`) with every same-shape bucket in one batch.
"""

from __future__ import annotations

import argparse
import os
import statistics

import torch


def thread_ticks() -> dict[str, int]:
    """CPU time (user + system, in clock ticks) of every thread of this process."""
    ticks = {}
    for tid in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{tid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks[tid] = int(fields[11]) + int(fields[12])
    return ticks


def busiest(fn, threads: int) -> list[float]:
    """CPU seconds of the ``threads`` busiest threads while ``fn()`` runs, busiest first."""
    before = thread_ticks()
    fn()
    after = thread_ticks()
    hz = os.sysconf("SC_CLK_TCK")
    return sorted(((after[t] - before.get(t, 0)) / hz for t in after), reverse=True)[:threads]


def share(seconds: list[float]) -> float:
    return seconds[0] / sum(seconds) if sum(seconds) else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--step", default=None, help="a registry name, e.g. muon or msgdq")
    parser.add_argument("--blocks", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, {args.threads} threads")
    for batch in range(1, 7):
        a, b = torch.randn(batch, 768, 768), torch.randn(batch, 768, 768)
        out = torch.empty(batch, 768, 768)
        torch.bmm(a, b, out=out)

        def run():
            for _ in range(60 // batch):
                torch.bmm(a, b, out=out)

        seconds = busiest(run, args.threads)
        print(f"bmm, batch {batch}: per-thread CPU s {[round(s, 2) for s in seconds]}, "
              f"busiest share {share(seconds):.3f}")
    if args.step is None:
        return

    import muonlab.optim.base as base
    from muonlab.bench.step import GPT2Params, fill_gradients
    from muonlab.optim import make_optimizer, param_groups

    model = GPT2Params(args.blocks)
    fill_gradients(model, torch.Generator().manual_seed(0))
    opt = make_optimizer(args.step, param_groups(model))
    opt.step()
    balanced = base.batch_sizes
    modes = {"muonlab batching": balanced, "one batch per shape": lambda count, device: [count]}
    busiest_s = {mode: [] for mode in modes}
    try:
        for _ in range(args.pairs):
            for mode, sizes in modes.items():
                base.batch_sizes = sizes
                seconds = busiest(opt.step, args.threads)
                busiest_s[mode].append(seconds[0])
                print(f"{args.step}, {args.blocks} blocks, {mode}: per-thread CPU s {[round(s, 2) for s in seconds]}, "
                      f"busiest share {share(seconds):.3f}")
    finally:
        base.batch_sizes = balanced
    ratios = [a / b for a, b in zip(*busiest_s.values())]
    print(f"busiest thread's CPU time, muonlab batching / one batch per shape: median {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
