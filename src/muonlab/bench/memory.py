"""Optimizer memory: bytes of state per parameter and the step's peak working memory, per state dtype.

For each ``state_dtype`` (fp32 / bf16 / int8) ``muonlab.Muon`` takes one warm-up step (creating its state) and one
profiled step on GPT-2-shaped parameters (``muonlab bench step``'s model: the 124M or 1B block configuration,
``--scale``). Reported per row:

- state bytes per element of the hidden matrices (Muon's momentum: 4 → 2 → 1 + 4/256) and of the AdamW part
  (embeddings and vectors: m and v, 8 → 4 → 2·(1 + 4/256); 0-/1-D tensors keep fp32 state under int8), and the
  totals. State bytes are a function of the shapes and the dtype only: the blocks of a model are identical, so
  they are measured on ``--blocks`` blocks (default 1) and scaled to the preset's block count (exact, not an
  estimate; the per-block figures are in the JSON);
- the peak working memory of one steady-state step above what was allocated before it (parameters, gradients
  and state excluded) and the net change over the step (0: nothing accumulates), as ``muonlab bench step``
  measures them (torch.profiler's allocation records on CPU, allocator statistics on CUDA), on the blocks run.

Peak memory does not depend on the machine's load, but it is measured together with the step: run it on an
idle machine when the numbers are to be recorded (BENCHMARKS.md gives the commands).
"""

from __future__ import annotations

import torch

from muonlab.bench import common
from muonlab.bench.step import CONTEXT, SCALES, VOCAB, GPT2Params, fill_gradients, is_hidden, step_memory

STATE_DTYPES = ("float32", "bfloat16", "int8")


def add_arguments(parser) -> None:
    common.add_common_arguments(parser, default_out="results/bench/memory.json")
    parser.add_argument("--scale", choices=sorted(SCALES), default="124m",
                        help="block configuration: 124m (12 blocks, width 768) or 1b (24 blocks, width 2048) (default 124m)")
    parser.add_argument("--blocks", type=int, default=1,
                        help="blocks actually built and stepped; state bytes are scaled to the preset's count (default 1)")
    parser.add_argument("--width", type=int, default=None, help="model width (default: the preset's)")
    parser.add_argument("--vocab", type=int, default=VOCAB, help="token embedding rows (default 50257)")
    parser.add_argument("--state-dtypes", default=",".join(STATE_DTYPES),
                        help="comma-separated state dtypes to measure (default: float32,bfloat16,int8)")
    parser.add_argument("--normuon", action="store_true", help="measure muonlab.NorMuon instead of muonlab.Muon")


def state_bytes(optimizer, params: list[torch.Tensor]) -> int:
    """Bytes of the optimizer-state tensors of ``params`` (this process's share of sharded ones)."""
    total = 0
    for p in params:
        for value in optimizer.state.get(p, {}).values():
            if torch.is_tensor(value):
                value = value.to_local() if hasattr(value, "to_local") else value
                total += value.numel() * value.element_size()
    return total


def measure(model, state_dtype: str, device: torch.device, normuon: bool) -> dict:
    from muonlab.optim import Muon, NorMuon, param_groups

    fill_gradients(model, torch.Generator().manual_seed(0))
    opt = (NorMuon if normuon else Muon)(param_groups(model), lr=0.02, state_dtype=state_dtype)
    opt.step()  # creates the state
    memory = step_memory(opt.step, device)
    named = dict(model.named_parameters())
    hidden = [p for n, p in named.items() if is_hidden(n, p)]
    rest = [p for n, p in named.items() if not is_hidden(n, p)]
    entry = {
        "state_dtype": state_dtype,
        "hidden_elements": sum(p.numel() for p in hidden),
        "adamw_elements": sum(p.numel() for p in rest),
        "hidden_state_bytes": state_bytes(opt, hidden),
        "adamw_state_bytes": state_bytes(opt, rest),
        **memory,
    }
    entry["hidden_bytes_per_element"] = entry["hidden_state_bytes"] / entry["hidden_elements"]
    entry["adamw_bytes_per_element"] = entry["adamw_state_bytes"] / entry["adamw_elements"]
    del opt
    return entry


def run(args) -> dict:
    device = common.setup_device(args)
    from muonlab.errors import CLIError
    from muonlab.optim.state_codec import check_state_dtype

    preset_blocks, preset_width = SCALES[args.scale]
    width = args.width if args.width is not None else preset_width
    if args.blocks < 1 or width < 2 or args.vocab < 1:
        raise CLIError("--blocks, --width and --vocab must be positive (width ≥ 2)")
    try:
        dtypes = [check_state_dtype(d.strip()) for d in args.state_dtypes.split(",") if d.strip()]
    except ValueError as err:
        raise CLIError(f"--state-dtypes: {err}") from None
    if not dtypes:
        raise CLIError("--state-dtypes: give at least one of float32, bfloat16, int8")
    blocks = min(args.blocks, preset_blocks)
    model = GPT2Params(blocks, width, args.vocab, min(CONTEXT, max(width, 8))).to(device)
    one_block = GPT2Params(1, width, 1, 1)  # the parameters of one block (and tiny embeddings, unused)
    block_elements = sum(p.numel() for n, p in one_block.named_parameters() if n.startswith("blocks."))
    rows = []
    for dtype in dtypes:
        entry = measure(model, dtype, device, args.normuon)
        # blocks are identical: their state scales with the block count; the embeddings and ln_f are counted once
        per_block = {k: entry[k] / blocks for k in ("hidden_state_bytes", "hidden_elements")}
        entry["preset_hidden_state_bytes"] = round(per_block["hidden_state_bytes"] * preset_blocks)
        entry["preset_hidden_elements"] = round(per_block["hidden_elements"] * preset_blocks)
        rows.append(entry)
    by_dtype = {e["state_dtype"]: e for e in rows}
    if "float32" in by_dtype:
        for e in rows:
            e["state_vs_float32"] = (e["hidden_state_bytes"] + e["adamw_state_bytes"]) / (
                by_dtype["float32"]["hidden_state_bytes"] + by_dtype["float32"]["adamw_state_bytes"])
    return {
        "benchmark": "memory",
        "optimizer": "NorMuon" if args.normuon else "Muon",
        "scale": args.scale,
        "blocks_measured": blocks,
        "preset_blocks": preset_blocks,
        "width": width,
        "vocab": args.vocab,
        "block_elements": block_elements,
        "environment": common.environment(device),
        "rows": rows,
    }


def report(result: dict) -> str:
    rows = []
    for e in result["rows"]:
        rows.append({
            "dtype": e["state_dtype"],
            "hidden": e["hidden_bytes_per_element"],
            "adamw": e["adamw_bytes_per_element"],
            "state": (e["hidden_state_bytes"] + e["adamw_state_bytes"]) / 2**20,
            "preset": (e["preset_hidden_state_bytes"] + e["adamw_state_bytes"]) / 2**30,
            "ratio": e.get("state_vs_float32"),
            "peak": e["peak_bytes"] / 2**20,
            "net": e["net_bytes"] / 2**20,
        })
    cols = [("dtype", "state dtype"), ("hidden", "B/elem matrices"), ("adamw", "B/elem AdamW part"),
            ("state", f"state MiB ({result['blocks_measured']} block)"),
            ("preset", f"state GiB ({result['preset_blocks']} blocks)"), ("ratio", "× fp32 state"),
            ("peak", "step peak MiB"), ("net", "net MiB")]
    env = result["environment"]
    return "\n".join([
        f"memory bench ({result['optimizer']}) on {env['device']}: --scale {result['scale']} (width {result['width']}, "
        f"vocab {result['vocab']}), {result['blocks_measured']} of {result['preset_blocks']} blocks built; load average "
        f"{env.get('load_average', 'n/a')}",
        common.format_table(rows, cols),
    ])


def main(args) -> int:
    return common.run_and_report(run, report, args)
