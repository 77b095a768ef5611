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

``--layout hsdp|fsdp_tp|tp|ep`` (one or several, comma-separated) instead trains the Llama-style model of
:mod:`muonlab.distributed.llama` laid out that way on ``--world-size`` ranks (default 4: 2 × 2 meshes), with
AdamW and with Muon, and reports per layout: bytes per rank of a full step (max over ranks) and the ratio to
AdamW, the optimizer step's own bytes next to what :func:`muonlab.plan` predicted before the first step,
polar flops per rank and the imbalance. ``tp`` also measures the two ways to orthogonalize a tensor-parallel
weight whole: gathering it over the TP ranks to one owner and sending the pieces back (what muonlab does), and
the Gram scheme (every Newton–Schulz step all-reduces the partial Gram matrix XᵢᵀXᵢ or XᵢXᵢᵀ of the local shard).
Byte counts are deterministic; these rows carry no timings.
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


LAYOUT_DEFAULTS = dict(dim=128, heads=8, hidden=384, layers=4, vocab=512, experts=4, batch=8, length=32)


def _layout_model(layout: str, world_size: int, sizes: dict):
    from muonlab.distributed import llama

    config = llama.LlamaConfig(vocab=sizes["vocab"], dim=sizes["dim"], heads=sizes["heads"], hidden=sizes["hidden"],
                               layers=sizes["layers"], experts=sizes["experts"] if layout == "ep" else 0)
    torch.manual_seed(0)
    mesh = llama.make_mesh(layout, world_size)
    return llama.parallelize(llama.Llama(config), layout, mesh), mesh


def gram_newton_schulz(local: torch.Tensor, shard_dim: int, group, coefficients, steps: int, eps: float = 1e-7):
    """Quintic Newton–Schulz on a matrix sharded over ``group`` along ``shard_dim``, never gathering it: the
    Gram scheme. Rows sharded (dim 0): B = Σᵢ XᵢᵀXᵢ (n × n) is all-reduced and Xᵢ ← aXᵢ + Xᵢ(bB + cB²);
    columns sharded (dim 1): A = Σᵢ XᵢXᵢᵀ (m × m), Xᵢ ← aXᵢ + (bA + cA²)Xᵢ. One all-reduce per step, plus one
    scalar for the Frobenius normalization."""
    a, b, c = coefficients
    x = local.float()
    norm = (x * x).sum().reshape(1)
    dist.all_reduce(norm, group=group)
    x = x / (norm.sqrt() + eps)
    for _ in range(steps):
        gram = x.T @ x if shard_dim == 0 else x @ x.T
        dist.all_reduce(gram, group=group)
        poly = b * gram + c * gram @ gram
        x = a * x + (x @ poly if shard_dim == 0 else poly @ x)
    return x


def _tp_polar_schemes(model, world_size: int, rank: int) -> dict:
    """Bytes per rank (max over ranks is taken by the caller) of whole-matrix polar for every TP-sharded weight:
    gather to an owner and back (map_whole) vs the Gram scheme; and the largest difference of their results."""
    from muonlab.distributed.comm import CommStats, map_whole
    from muonlab.distributed.measure import CollectiveCounter
    from muonlab.distributed.plan import assign_owners
    from muonlab.distributed.resolve import layout_of
    from muonlab.linalg import polar

    coefficients, steps = (3.4445, -4.775, 2.0315), 5
    weights = [p for n, p in model.named_parameters() if hasattr(p, "placements") and p.ndim == 2]
    generator = torch.Generator().manual_seed(rank)
    inputs = [torch.randn(w.to_local().shape, generator=generator) for w in weights]
    stats = CommStats()
    layouts = [layout_of(w) for w in weights]
    owners = assign_owners([w.shape for w in weights], world_size)
    group = weights[0].device_mesh.get_group()

    def orthogonalize(tensors):
        return [polar(t, "newton_schulz", steps, coefficients=coefficients) for t in tensors]

    gathered = map_whole(orthogonalize, inputs, layouts, owners, group, stats, wrap=False)
    with CollectiveCounter(world_size, rank) as counter:
        gram = [gram_newton_schulz(x, w.placements[0].dim, group, coefficients, steps) for x, w in zip(inputs, weights)]
    difference = max(float((g - h).abs().max()) for g, h in zip(gram, gathered))
    return {"gather_bytes": stats.bytes_sent, "gram_bytes": counter.bytes_sent, "max_difference": difference,
            "weights": len(weights)}


def layout_worker(rank: int, world_size: int, layout: str, sizes: dict, polar_dtype: str = "auto") -> dict:
    """Runs inside each rank: one layout, AdamW then Muon, one measured step each after a warm-up step."""
    import muonlab
    from muonlab.distributed import llama
    from muonlab.distributed.measure import CollectiveCounter

    rows = {}
    generator = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, sizes["vocab"], (sizes["batch"], sizes["length"] + 1), generator=generator)
    for name in ("adamw", "muon"):
        model, mesh = _layout_model(layout, world_size, sizes)
        part, parts = llama.data_ranks(layout, mesh, rank)
        per = sizes["batch"] // parts
        x, y = tokens[part * per : (part + 1) * per, :-1], tokens[part * per : (part + 1) * per, 1:]
        if name == "adamw":
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
        else:
            dtype = None if polar_dtype == "auto" else getattr(torch, polar_dtype)
            optimizer = muonlab.Muon(llama.muon_groups(model, heads=layout in ("tp", "fsdp_tp")), lr=0.02,
                                     polar_dtype=dtype)
            forecast = muonlab.plan(optimizer)

        def step(counter=None):
            logits = model(x)
            nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1)).backward()
            if counter is None:
                optimizer.step()
            else:
                with CollectiveCounter(world_size, rank) as step_counter:
                    optimizer.step()
                counter["step"] = step_counter.bytes_sent
            optimizer.zero_grad(set_to_none=True)

        step()  # warm-up: lazy state, first-step checks
        distribution = getattr(optimizer, "_distribution", None)
        if distribution is not None:
            distribution.stats.reset()
        measured: dict = {}
        with CollectiveCounter(world_size, rank) as counter:
            step(measured)
        row = {"bytes_sent": counter.bytes_sent, "bytes_by_op": dict(counter.by_op), "step_bytes": measured["step"]}
        if distribution is not None:
            row.update(orth_flops=distribution.stats.flops, matrix_bytes=distribution.stats.bytes_sent,
                       planned_bytes=forecast.bytes_sent(rank), planned_flops=forecast.ranks[rank]["flops"])
        else:
            row.update(orth_flops=0.0, matrix_bytes=0, planned_bytes=0, planned_flops=0.0)
        rows[name] = row
        if layout == "tp" and name == "muon":
            rows["tp_schemes"] = _tp_polar_schemes(model, world_size, rank)
        del model, optimizer
    return rows


def run_layouts(layouts: list[str], world_size: int, sizes: dict, timeout: float = 600.0,
                polar_dtype: str = "auto") -> list[dict]:
    """One row per (layout, optimizer), aggregated over ranks; ``tp`` adds a row per polar scheme."""
    from muonlab.distributed.launch import run_on_ranks

    table = []
    for layout in layouts:
        per_rank = run_on_ranks(layout_worker, world_size, layout, sizes, polar_dtype, timeout=timeout)
        adamw_bytes = max(r["adamw"]["bytes_sent"] for r in per_rank)
        for name in ("adamw", "muon"):
            ranks = [r[name] for r in per_rank]
            flops = [r["orth_flops"] for r in ranks]
            total = max(r["bytes_sent"] for r in ranks)
            table.append({
                "layout": layout, "world_size": world_size, "optimizer": name,
                "bytes_per_rank": total,
                "bytes_vs_adamw": total / adamw_bytes if adamw_bytes else None,
                "step_bytes_per_rank": max(r["step_bytes"] for r in ranks),
                "matrix_bytes_per_rank": max(r["matrix_bytes"] for r in ranks),
                "planned_matrix_bytes_per_rank": max(r["planned_bytes"] for r in ranks),
                "plan_matches": all(r["planned_bytes"] == r["matrix_bytes"] and
                                    abs(r["planned_flops"] - r["orth_flops"]) <= 1e-6 * max(1.0, r["orth_flops"])
                                    for r in ranks),
                "orth_gflop_max": max(flops) / 1e9,
                "orth_gflop_total": sum(flops) / 1e9,
                "orth_imbalance": (max(flops) / (sum(flops) / world_size)) if sum(flops) else None,
                "bytes_by_op_rank0": ranks[0]["bytes_by_op"],
            })
        if "tp_schemes" in per_rank[0]:
            schemes = [r["tp_schemes"] for r in per_rank]
            table.append({"layout": layout, "world_size": world_size, "optimizer": "tp_polar_schemes",
                          "weights": schemes[0]["weights"],
                          "gather_bytes_per_rank": max(s["gather_bytes"] for s in schemes),
                          "gram_bytes_per_rank": max(s["gram_bytes"] for s in schemes),
                          "max_difference": max(s["max_difference"] for s in schemes)})
    return table


def format_layout_table(table: list[dict]) -> str:
    header = (f"{'layout':>8} {'W':>2} {'optimizer':>9} {'bytes/rank':>12} {'vs AdamW':>8} {'step bytes':>11} "
              f"{'planned':>11} {'orth GFLOP':>10} {'imbalance':>9}")
    lines = [header, "-" * len(header)]
    notes = []
    for row in table:
        if row["optimizer"] == "tp_polar_schemes":
            notes.append(f"{row['layout']}: whole-matrix polar of {row['weights']} TP-sharded weights, bytes sent per rank: "
                         f"gather to an owner and back {row['gather_bytes_per_rank']:,d}, Gram scheme (all-reduce per "
                         f"Newton–Schulz step) {row['gram_bytes_per_rank']:,d}; results differ by at most "
                         f"{row['max_difference']:.1e}")
            continue
        ratio, imbalance = row["bytes_vs_adamw"], row["orth_imbalance"]
        planned = f"{row['planned_matrix_bytes_per_rank']:,d}" + ("" if row["plan_matches"] else "!")
        lines.append(
            f"{row['layout']:>8} {row['world_size']:>2} {row['optimizer']:>9} {row['bytes_per_rank']:>12,d} "
            f"{(f'{ratio:.3f}' if ratio else '-'):>8} {row['step_bytes_per_rank']:>11,d} {planned:>11} "
            f"{row['orth_gflop_max']:>10.4f} {(f'{imbalance:.2f}' if imbalance else '-'):>9}"
        )
    return "\n".join(lines + notes)


def add_arguments(parser) -> None:
    parser.add_argument("--quick", action="store_true", help="width 64, 1 block, world sizes 1-2, 2 repeats")
    parser.add_argument("--world-sizes", default=None, help="comma-separated world sizes (default 1,2,3,4)")
    parser.add_argument("--width", type=int, default=None, help="model width (default 256)")
    parser.add_argument("--blocks", type=int, default=None, help="blocks (default 4)")
    parser.add_argument("--batch", type=int, default=48, help="global batch, split over the ranks (default 48)")
    parser.add_argument("--repeats", type=int, default=None, help="timed steps per configuration (default 5)")
    parser.add_argument("--polar-dtype", choices=("auto", "bfloat16", "float32"), default="auto",
                        help="Muon's iteration dtype; bfloat16 (CUDA's default) also makes matrices travel in bf16")
    parser.add_argument("--layout", default=None,
                        help="comma-separated layouts of the Llama-style model: hsdp, fsdp_tp, tp, ep (instead of DDP/FSDP rows)")
    parser.add_argument("--world-size", type=int, default=4, help="ranks for --layout (default 4: 2 × 2 meshes)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds before the ranks are killed")
    parser.add_argument("--out", default="results/bench/dist.json", help="JSON results file")


def _settings(args) -> dict:
    from muonlab.errors import CLIError

    if getattr(args, "layout", None):
        from muonlab.distributed.llama import LAYOUTS

        layouts = args.layout.split(",")
        bad = [name for name in layouts if name not in LAYOUTS or name == "fsdp"]
        if bad:
            raise CLIError(f"--layout must be comma-separated names from hsdp, fsdp_tp, tp, ep; got {args.layout!r}")
        world_size = args.world_size
        if world_size < 2 or (world_size % 2 and any(n in ("hsdp", "fsdp_tp") for n in layouts)):
            raise CLIError(f"--world-size must be at least 2, and even (at least 4) for hsdp/fsdp_tp; got {world_size}")
        sizes = dict(LAYOUT_DEFAULTS)
        if args.width:
            sizes.update(dim=args.width, hidden=2 * args.width)
        if args.blocks:
            sizes["layers"] = args.blocks
        if args.quick:
            sizes.update(dim=32, heads=4, hidden=64, vocab=64, batch=4, length=8, layers=1)
        if sizes["dim"] % sizes["heads"] or sizes["heads"] % world_size or sizes["batch"] % world_size:
            raise CLIError(f"--width must be a multiple of {sizes['heads']}, whose head count must divide among "
                           f"{world_size} ranks (and so must the batch of {sizes['batch']})")
        return {"layouts": layouts, "world_size": world_size, "sizes": sizes, "polar_dtype": args.polar_dtype}

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
    if "layouts" in settings:
        table = run_layouts(settings["layouts"], settings["world_size"], settings["sizes"], timeout=args.timeout,
                            polar_dtype=settings["polar_dtype"])
        print(format_layout_table(table))
    else:
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
