"""Does ``muonlab train --compile`` pay on CPU? Eager and compiled training steps side by side in one process.

The two models start from the same weights and take turns, one step each, so that both see the same machine load
(on a shared box the load swings by 2x between separate runs). Reported: the median step time of each after
``--warmup`` steps, the first compiled step (compilation), and the loss gap between the two after the last step
(compiled kernels reorder floating-point sums, so the runs agree closely but not bitwise).

    PYTHONPATH=src python benchmarks/lm/compile_cpu.py --model tiny --steps 40 --out benchmarks/lm/compile_cpu.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from muonlab.tasks.lm.data import BatchSampler, prepare_data
from muonlab.tasks.lm.train import TrainConfig, build_model, build_optimizer, compile_for_training, train_step


def measure(optimizer: str, model: str, steps: int, warmup: int, batch_size: int, token_data) -> dict:
    cfg = TrainConfig(model=model, optimizer=optimizer, batch_size=batch_size, record_logits=False, threads=1)
    device = torch.device("cpu")
    eager, compiled = build_model(cfg, token_data.vocab_size), build_model(cfg, token_data.vocab_size)
    compile_for_training(compiled)
    sides = {"eager": (eager, build_optimizer(cfg, eager), []), "compiled": (compiled, build_optimizer(cfg, compiled), [])}
    block = eager.config.block_size
    sampler = BatchSampler(token_data.train, batch_size, block, seed=0)
    losses = {}
    for step in range(steps):
        batch = sampler.batch(step)
        for name, (m, opt, times) in sides.items():
            t0 = time.perf_counter()
            losses[name], _ = train_step(m, opt, batch, cfg, device)
            times.append(time.perf_counter() - t0)
    tokens = batch_size * block
    e, c = (statistics.median(sides[n][2][warmup:]) for n in ("eager", "compiled"))
    return {"optimizer": optimizer, "eager_s_per_step": e, "compiled_s_per_step": c, "speedup": e / c,
            "eager_tokens_per_s": tokens / e, "compiled_tokens_per_s": tokens / c,
            "first_compiled_step_s": sides["compiled"][2][0], "final_loss_gap": abs(losses["eager"] - losses["compiled"])}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--optimizers", default="adamw,muon")
    p.add_argument("--out", default=None, help="JSON file for the results")
    args = p.parse_args(argv)
    if args.steps <= args.warmup:
        p.error(f"--steps must exceed --warmup ({args.warmup}), got {args.steps}")
    torch.set_num_threads(1)
    token_data = prepare_data(None, "byte", verbose=False)
    rows = [measure(o, args.model, args.steps, args.warmup, args.batch_size, token_data)
            for o in args.optimizers.split(",")]
    print(f"model {args.model}, batch {args.batch_size}, 1 thread, torch {torch.__version__}, median of steps "
          f"{args.warmup + 1}-{args.steps}, eager and compiled alternating")
    print(f"{'optimizer':<10} {'eager tok/s':>12} {'compiled tok/s':>15} {'speedup':>8} {'1st compiled step':>18} {'loss gap':>9}")
    for r in rows:
        print(f"{r['optimizer']:<10} {r['eager_tokens_per_s']:>12,.0f} {r['compiled_tokens_per_s']:>15,.0f} "
              f"{r['speedup']:>7.2f}x {r['first_compiled_step_s']:>17.1f}s {r['final_loss_gap']:>9.2e}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"model": args.model, "batch_size": args.batch_size, "steps": args.steps, "warmup": args.warmup,
                       "torch": torch.__version__, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
