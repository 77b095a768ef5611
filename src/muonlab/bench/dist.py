"""Distributed Muon vs AdamW on local gloo ranks: orthogonalization flops per rank, bytes per step, step time.

For each world size W (default 1–4) one set of W CPU processes trains the same transformer-shaped
stack of linear layers under DDP and under FSDP2 (``fully_shard``), with ``muonlab.Muon`` and with
``torch.optim.AdamW``, on the same global batch split evenly over the ranks. Per configuration:

- ``bytes/rank``: what this rank sent in every collective of one full step (forward, backward,
  optimizer), counted by :class:`muonlab.distributed.measure.CollectiveCounter` (max over ranks);
- ``vs AdamW``: that over AdamW's bytes in the same set-up (Moonshot bounds distributed Muon by 1.25×);
- ``orth GFLOP``: Newton–Schulz flops of the matrices the rank orthogonalized per step (max over
  ranks) and the imbalance max/mean;
- ``step ms``: median wall time of a full step (max over ranks), after warm-up.

CPU timings with W > cores are oversubscribed: they show overhead, not scaling.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import tempfile
import time

import torch
import torch.distributed as dist
from torch import nn


class Block(nn.Module):
    """Attention-shaped and MLP-shaped matrices (qkv d→3d, proj d→d, fc d→4d, fc2 4d→d) with residuals."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.proj = nn.Linear(width, width, bias=False)
        self.fc = nn.Linear(width, 4 * width, bias=False)
        self.fc2 = nn.Linear(4 * width, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(self.norm(x)).chunk(3, dim=-1)
        x = x + self.proj(torch.tanh(q * k) * v)
        return x + self.fc2(torch.relu(self.fc(x)))


class Stack(nn.Module):
    def __init__(self, width: int, blocks: int, inputs: int = 32, outputs: int = 16) -> None:
        super().__init__()
        self.embed = nn.Linear(inputs, width)
        self.blocks = nn.ModuleList(Block(width) for _ in range(blocks))
        self.head = nn.Linear(width, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def _build(parallel: str, optimizer_name: str, width: int, blocks: int, world_size: int, polar_dtype=None):
    import muonlab

    torch.manual_seed(0)
    model = Stack(width, blocks)
    if parallel == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh("cpu", (world_size,))
        for block in model.blocks:
            fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
        wrapped = model
    else:
        wrapped = nn.parallel.DistributedDataParallel(model) if world_size > 1 else model
    if optimizer_name == "adamw":
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    else:
        # embed and head go to Muon's AdamW part (routing by name), the block matrices to Muon
        optimizer = muonlab.Muon(muonlab.param_groups(model), lr=0.02, weight_decay=0.1, polar_dtype=polar_dtype)
    return model, wrapped, optimizer


def bench_worker(rank: int, world_size: int, width: int, blocks: int, batch: int, repeats: int, polar_dtype: str) -> dict:
    """Runs inside each rank: every (parallel, optimizer) configuration, one after the other."""
    from muonlab.distributed.measure import CollectiveCounter

    rows = []
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 32, generator=generator)
    y = torch.randn(batch, 16, generator=generator)
    per_rank = batch // world_size
    x, y = x[rank * per_rank : (rank + 1) * per_rank], y[rank * per_rank : (rank + 1) * per_rank]
    for parallel in ("ddp", "fsdp"):
        for name in ("adamw", "muon"):
            dtype = None if polar_dtype == "auto" else getattr(torch, polar_dtype)
            model, wrapped, optimizer = _build(parallel, name, width, blocks, world_size, dtype)

            def step():
                loss = nn.functional.mse_loss(wrapped(x), y)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

            step()  # warm-up: lazy state, first-step checks
            distribution = getattr(optimizer, "_distribution", None)
            if distribution is not None:
                distribution.stats.reset()
            with CollectiveCounter(world_size, rank) as counter:
                step()
            flops = distribution.stats.flops if distribution is not None else 0.0
            times = []
            for _ in range(repeats):
                dist.barrier()
                start = time.perf_counter()
                step()
                times.append(time.perf_counter() - start)
            rows.append(
                {
                    "parallel": parallel,
                    "optimizer": name,
                    "bytes_sent": counter.bytes_sent,
                    "bytes_by_op": dict(counter.by_op),
                    "orth_flops": flops,
                    "step_s": statistics.median(times),
                }
            )
            del model, wrapped, optimizer
    return {"rows": rows}


def add_arguments(parser) -> None:
    parser.add_argument("--quick", action="store_true", help="width 64, 1 block, world sizes 1-2, 2 repeats")
    parser.add_argument("--world-sizes", default=None, help="comma-separated world sizes (default 1,2,3,4)")
    parser.add_argument("--width", type=int, default=None, help="model width (default 256)")
    parser.add_argument("--blocks", type=int, default=None, help="blocks (default 4)")
    parser.add_argument("--batch", type=int, default=48, help="global batch, split over the ranks (default 48)")
    parser.add_argument("--repeats", type=int, default=None, help="timed steps per configuration (default 5)")
    parser.add_argument("--polar-dtype", choices=("auto", "bfloat16", "float32"), default="auto",
                        help="Muon's iteration dtype; bfloat16 (CUDA's default) also makes matrices travel in bf16")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds before the ranks are killed")
    parser.add_argument("--out", default="results/bench/dist.json", help="JSON results file")


def _settings(args) -> dict:
    from muonlab.errors import CLIError

    world_sizes = args.world_sizes or ("1,2" if args.quick else "1,2,3,4")
    try:
        sizes = [int(w) for w in world_sizes.split(",")]
    except ValueError:
        raise CLIError(f"--world-sizes must be comma-separated integers, got {world_sizes!r}") from None
    if not sizes or any(w < 1 or w > 16 for w in sizes):
        raise CLIError(f"--world-sizes must be between 1 and 16, got {world_sizes!r}")
    width = args.width or (64 if args.quick else 256)
    blocks = args.blocks or (1 if args.quick else 4)
    repeats = args.repeats or (2 if args.quick else 5)
    for name, value in (("--width", width), ("--blocks", blocks), ("--repeats", repeats), ("--batch", args.batch)):
        if value < 1:
            raise CLIError(f"{name} must be a positive integer, got {value}")
    for w in sizes:
        if args.batch % w:
            raise CLIError(f"--batch {args.batch} must be divisible by every world size (got {w})")
    return {"world_sizes": sizes, "width": width, "blocks": blocks, "batch": args.batch, "repeats": repeats,
            "polar_dtype": args.polar_dtype}


def run(settings: dict, timeout: float = 600.0) -> list[dict]:
    """All rows: one per (world size, parallel, optimizer), aggregated over ranks."""
    from muonlab.distributed.launch import run_on_ranks

    table = []
    for world_size in settings["world_sizes"]:
        per_rank = run_on_ranks(
            bench_worker,
            world_size,
            settings["width"],
            settings["blocks"],
            settings["batch"],
            settings["repeats"],
            settings["polar_dtype"],
            timeout=timeout,
        )
        for index, row in enumerate(per_rank[0]["rows"]):
            ranks = [r["rows"][index] for r in per_rank]
            flops = [r["orth_flops"] for r in ranks]
            table.append(
                {
                    "world_size": world_size,
                    "parallel": row["parallel"],
                    "optimizer": row["optimizer"],
                    "bytes_per_rank": max(r["bytes_sent"] for r in ranks),
                    "bytes_by_op_rank0": row["bytes_by_op"],
                    "orth_gflop_max": max(flops) / 1e9,
                    "orth_gflop_total": sum(flops) / 1e9,
                    "orth_imbalance": (max(flops) / (sum(flops) / world_size)) if sum(flops) else None,
                    "step_ms": 1e3 * max(r["step_s"] for r in ranks),
                }
            )
    for row in table:
        if row["optimizer"] == "muon":
            base = next(
                r for r in table
                if r["optimizer"] == "adamw" and r["world_size"] == row["world_size"] and r["parallel"] == row["parallel"]
            )
            row["bytes_vs_adamw"] = row["bytes_per_rank"] / base["bytes_per_rank"] if base["bytes_per_rank"] else None
    return table


def format_table(table: list[dict]) -> str:
    header = f"{'W':>2} {'parallel':>8} {'optimizer':>9} {'bytes/rank':>12} {'vs AdamW':>8} {'orth GFLOP':>10} {'imbalance':>9} {'step ms':>8}"
    lines = [header, "-" * len(header)]
    for row in table:
        ratio = row.get("bytes_vs_adamw")
        imbalance = row["orth_imbalance"]
        lines.append(
            f"{row['world_size']:>2} {row['parallel']:>8} {row['optimizer']:>9} {row['bytes_per_rank']:>12,d} "
            f"{(f'{ratio:.3f}' if ratio else '-'):>8} {row['orth_gflop_max']:>10.4f} "
            f"{(f'{imbalance:.2f}' if imbalance else '-'):>9} {row['step_ms']:>8.1f}"
        )
    return "\n".join(lines)


def main(args) -> int:
    from muonlab.bench.common import check_out

    settings = _settings(args)
    check_out(args.out)
    table = run(settings, timeout=args.timeout)
    print(format_table(table))
    payload = {
        "benchmark": "dist",
        "command": "muonlab bench dist " + " ".join(sys.argv[1:]).split("dist", 1)[-1].strip(),
        "settings": settings,
        "environment": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "backend": "gloo",
        },
        "rows": table,
    }
    out_dir = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=out_dir, delete=False, suffix=".tmp") as handle:
        json.dump(payload, handle, indent=2)
    os.replace(handle.name, args.out)
    print(f"wrote {args.out}")
    return 0
