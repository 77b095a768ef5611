"""Quality cost of low-precision optimizer state and of bf16 parameters, on the CPU tiny language model.

Runs ``muonlab train`` (Muon, model tiny, the stdlib corpus) for every row × seed, two runs at a time, then writes
``table.md`` and ``results.json`` (final validation loss of every run, mean and seed spread per row) next to this
file. Usage (from the repository root)::

    PYTHONPATH=src python benchmarks/memory/quality.py --steps 200 --seeds 0,1,2 --jobs 2 --work /tmp/muonlab-quality

Quality numbers do not depend on the machine's load (the runs are deterministic per seed); times are not recorded.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROWS = {
    "fp32 state (reference)": ["--state-dtype", "float32"],
    "bf16 state (stochastic rounding)": ["--state-dtype", "bf16"],
    "int8 state (blockwise, 256)": ["--state-dtype", "int8"],
    "bf16 params, nearest rounding": ["--param-dtype", "bf16", "--param-rounding", "nearest"],
    "bf16 params, stochastic rounding": ["--param-dtype", "bf16", "--param-rounding", "stochastic"],
}


def command(row_args: list[str], seed: int, steps: int, out: Path) -> list[str]:
    return [sys.executable, "-m", "muonlab", "train", "--model", "tiny", "--optimizer", "muon", "--steps", str(steps),
            "--seed", str(seed), "--threads", "1", "--no-record-logits", "--no-progress", *row_args, "--out", str(out)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--work", default="/tmp/muonlab-quality", help="run folders")
    parser.add_argument("--rows", default=None, help="comma-separated row numbers to run (default: all)")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    names = list(ROWS)
    if args.rows:
        names = [names[int(i)] for i in args.rows.split(",")]
    runs = [(name, seed, Path(args.work) / f"row{list(ROWS).index(name)}_seed{seed}") for name in names for seed in seeds]

    def run(item):
        name, seed, out = item
        if not (out / "results.json").exists():
            subprocess.run(command(ROWS[name], seed, args.steps, out), check=True, stdout=subprocess.DEVNULL)
        return item

    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(run, runs))

    results = {}
    for name in ROWS:
        finals = {}
        for seed in seeds:
            path = Path(args.work) / f"row{list(ROWS).index(name)}_seed{seed}" / "results.json"
            if path.exists():
                r = json.loads(path.read_text())
                finals[seed] = {"final_val_loss": r["final_val_loss"],
                                "state_bytes": r.get("telemetry", {}).get("state_bytes")}
        if finals:
            losses = [f["final_val_loss"] for f in finals.values()]
            results[name] = {
                "args": ROWS[name],
                "command": "PYTHONPATH=src python " + " ".join(command(ROWS[name], 0, args.steps, Path("OUT"))[1:])
                .replace("--seed 0", "--seed S"),
                "runs": finals,
                "mean": statistics.mean(losses),
                "spread": max(losses) - min(losses),
                "std": statistics.stdev(losses) if len(losses) > 1 else 0.0,
            }
    ref = results.get("fp32 state (reference)")
    lines = [f"Muon on the tiny model (4×128), {args.steps} steps, seeds {args.seeds}; final validation loss "
             "(nats/token). Spread = max − min over the seeds; same-seed Δ: each seed's loss minus the fp32-state "
             "run's of that seed (same initialization and batches). State bytes: the whole optimizer state (the "
             "bf16-parameter rows keep fp32 state). bf16-parameter rows also run the forward in bf16.", "",
             "| row | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | spread | mean − fp32 mean | "
             "same-seed Δ vs fp32 (min … max) | state bytes |",
             "|---|" + "---|" * (len(seeds) + 5)]
    for name, r in results.items():
        cells = [f"{r['runs'][s]['final_val_loss']:.4f}" if s in r["runs"] else "—" for s in seeds]
        delta = f"{r['mean'] - ref['mean']:+.4f}" if ref else "—"
        paired = [r["runs"][s]["final_val_loss"] - ref["runs"][s]["final_val_loss"]
                  for s in seeds if ref and s in r["runs"] and s in ref["runs"]]
        r["paired_deltas"] = paired
        pair = f"{min(paired):+.4f} … {max(paired):+.4f}" if paired else "—"
        state = next((f["state_bytes"] for f in r["runs"].values() if f["state_bytes"]), None)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {r['mean']:.4f} | {r['spread']:.4f} | {delta} | {pair} | "
                     f"{state if state is not None else '—'} |")
    lines += ["", "Commands (S = seed, OUT = a fresh folder):", ""]
    lines += [f"- {name}: `{r['command']}`" for name, r in results.items()]
    (HERE / "table.md").write_text("\n".join(lines) + "\n")
    (HERE / "results.json").write_text(json.dumps({"steps": args.steps, "seeds": seeds, "rows": results}, indent=1) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
