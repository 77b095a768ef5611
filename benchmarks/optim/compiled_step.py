"""Eager ``opt.step()`` against ``torch.compile(opt.step)`` on GPT-2 (transformers, built from a config): median step
time after warm-up, compile time of the first steps, and how many graphs were compiled after them (must be 0).

Eager and compiled optimizers on two copies of the same model take turns step by step in one process, so that load
changes hit both alike. Writes JSON; BENCHMARKS.md lists the command.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch._dynamo.utils import counters

import muonlab


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--optimizer", default="muon")
    parser.add_argument("--state-dtype", default="float32", help="float32, bfloat16 or int8 optimizer state")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    import transformers

    config = transformers.GPT2Config(vocab_size=512, n_positions=64, n_embd=args.width, n_layer=args.layers,
                                     n_head=max(1, args.width // 64))
    torch.manual_seed(0)
    models = [transformers.GPT2LMHeadModel(config) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    opts = [muonlab.make_optimizer(args.optimizer, muonlab.param_groups(m), lr=0.02, state_dtype=args.state_dtype)
            for m in models]
    scheds = [torch.optim.lr_scheduler.LambdaLR(o, lambda s: 1.0 / (1 + 0.01 * s)) for o in opts]
    steps = [opts[0].step, torch.compile(opts[1].step)]
    ids = torch.randint(0, 512, (8, 64), generator=torch.Generator().manual_seed(0))
    times: list[list[float]] = [[], []]
    graphs_after_warmup = None
    for i in range(args.steps):
        for k in (0, 1):
            opts[k].zero_grad()
            models[k](input_ids=ids, labels=ids).loss.backward()
            start = time.perf_counter()
            steps[k]()
            times[k].append(time.perf_counter() - start)
            scheds[k].step()
        if i == args.warmup - 1:
            graphs_after_warmup = counters["stats"]["unique_graphs"]
    result = {
        "width": args.width, "layers": args.layers, "optimizer": args.optimizer, "state_dtype": args.state_dtype,
        "steps": args.steps,
        "eager_median_s": statistics.median(times[0][args.warmup:]),
        "compiled_median_s": statistics.median(times[1][args.warmup:]),
        "compiled_first_steps_s": sum(times[1][: args.warmup]),
        "graphs_compiled_after_warmup": counters["stats"]["unique_graphs"] - graphs_after_warmup,
        "threads": torch.get_num_threads(),
    }
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
