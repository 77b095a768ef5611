"""On CUDA: muonlab.Muon's step on 6 GPT-2-small blocks with telemetry on/off and fp32/bf16/int8 state, timed with
CUDA events in alternating order, and the ops each variant adds (torch.profiler, self CUDA and CPU time).

    PYTHONPATH=src python benchmarks/memory/gpu_step_profile.py [--blocks 6] [--rounds 15]
"""

from __future__ import annotations

import argparse
import statistics

import torch

import muonlab
from muonlab.bench.step import GPT2Params, fill_gradients

VARIANTS = {
    "fp32 state": {},
    "fp32 state, telemetry off": {"telemetry": False},
    "bf16 state": {"state_dtype": "bfloat16"},
    "int8 state": {"state_dtype": "int8"},
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--blocks", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    model = GPT2Params(args.blocks).cuda()
    fill_gradients(model, torch.Generator().manual_seed(0))
    opts = {name: muonlab.Muon(muonlab.param_groups(model), lr=1e-6, **kw) for name, kw in VARIANTS.items()}
    for opt in opts.values():
        opt.step()
        opt.step()
    torch.cuda.synchronize()
    times = {name: [] for name in opts}
    names = list(opts)
    for r in range(args.rounds):
        for name in names if r % 2 == 0 else reversed(names):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            opts[name].step()
            end.record()
            end.synchronize()
            times[name].append(start.elapsed_time(end))
    base = statistics.median(times["fp32 state"])
    for name, t in times.items():
        print(f"{name:28s} median {statistics.median(t):7.2f} ms  ({statistics.median(t) / base:.3f}× fp32 state)")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        for name in ("fp32 state", "fp32 state, telemetry off", "bf16 state"):
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                opts[name].step()
                torch.cuda.synchronize()
            events = prof.key_averages()
            kernels = sum(e.count for e in events if e.device_type.name == "CUDA")
            print(f"\n== {name}: {kernels} CUDA kernels")
            print(events.table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=40))


if __name__ == "__main__":
    main()
