"""One optimizer step on GPT-2-small's parameters: muonlab.Muon vs torch.optim.Muon vs AdamW.

Parameters: 12 blocks of q, k, v, o (768×768), MLP fc (3072×768) and proj (768×3072) with their
biases and LayerNorm gains/biases, plus the token (50257×768) and position (1024×768)
embeddings. ``--quick`` uses one block (and the embeddings). Gradients are fixed random tensors.

Rows (median time of one ``step()``, after a warm-up step that creates the state; the rows are
timed round-robin, one step of each per round, so that a shared machine's load hits all alike):

- ``muonlab.Muon`` default, and with Keller's quintic ×5 (``ns_coefficients``/``ns_steps``); one
  optimizer for the whole model (its AdamW part takes embeddings and vectors);
- ``torch.optim.Muon`` as shipped (bf16 Newton–Schulz) and with its iteration in fp32, each with
  ``torch.optim.AdamW`` (foreach, Keller's Adam settings) for the parameters it refuses;
- ``torch.optim.AdamW`` foreach and fused, on everything.

Next to each Muon row: its matmul flops (the polar iterations' nominal counts, as in
``muonlab bench polar``) divided by a plain ``torch.mm`` rate on the same product shapes measured
in the same run — the floor — and the orthogonality it reaches (singular-value range of its
update direction on κ = 100 matrices of each block shape). ``torch.optim.Muon`` as shipped is ~100×
slower on CPU: it runs one step (no warm-up), on one block in the full run and on one 768×768
matrix with ``--quick``, and its whole-model time is *estimated* by scaling with the flop count
(labelled "est."). Its orthogonality is read off that same step's update.

Peak memory (CPU): ``torch.profiler`` with ``profile_memory=True`` over one steady-state step
records every allocation and free of torch's CPU allocator; the peak of their running sum is the
step's peak working memory above what was allocated before it (parameters, gradients and state
excluded), and the sum at the end is the net change (0: nothing accumulates from step to step).
On CUDA: ``torch.cuda.max_memory_allocated`` around one step.
"""

from __future__ import annotations

import contextlib
import math
import statistics

import torch
from torch import nn

from muonlab.bench import common
from muonlab.bench.polar import nominal_flops
from muonlab.linalg.polar import resolve_method

KELLER = (3.4445, -4.775, 2.0315)
VOCAB, CONTEXT, WIDTH = 50257, 1024, 768
# --scale presets: (blocks, width)
SCALES = {"124m": (12, 768), "1b": (24, 2048)}
ORTHO_KAPPA = 100.0
# Keller Jordan's auxiliary Adam for what torch.optim.Muon refuses (github.com/KellerJordan/Muon).
AUX_ADAM = dict(lr=3e-4, betas=(0.9, 0.95), eps=1e-10, weight_decay=0.0)


class Block(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.q, self.k, self.v, self.o = (nn.Linear(width, width) for _ in range(4))
        self.fc, self.proj = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)


class GPT2Params(nn.Module):
    """GPT-2-small's parameter shapes (no forward pass: the bench feeds gradients directly)."""

    def __init__(self, blocks: int, width: int = WIDTH, vocab: int = VOCAB, context: int = CONTEXT):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, width), nn.Embedding(context, width)
        self.blocks = nn.ModuleList(Block(width) for _ in range(blocks))
        self.ln_f = nn.LayerNorm(width)


def add_arguments(parser) -> None:
    common.add_common_arguments(parser, default_out="results/bench/step.json")
    parser.add_argument("--scale", choices=sorted(SCALES), default="124m",
                        help="model preset: 124m = GPT-2 small (12 blocks, width 768), 1b = 24 blocks of width 2048 "
                             "(1.21B in the blocks); --blocks/--width override (default 124m)")
    parser.add_argument("--blocks", type=int, default=None, help="transformer blocks (default: the preset's; 1 with --quick)")
    parser.add_argument("--width", type=int, default=None, help="model width (default: the preset's)")
    parser.add_argument("--vocab", type=int, default=VOCAB, help="token embedding rows (default 50257)")
    parser.add_argument("--skip-torch-bf16", action="store_true", help="leave out torch.optim.Muon as shipped")
    parser.add_argument("--rows", default=None,
                        help="comma-separated row keys to run (default: all): muonlab_default, muonlab_polar_express, "
                             "muonlab_keller, muonlab_no_telemetry, muonlab_bf16_state, muonlab_int8_state, "
                             "muonlab_normuon, torch_muon_fp32, torch_muon_bf16, adamw_foreach, adamw_fused")
    parser.add_argument("--compile", action="store_true",
                        help="muonlab rows with compile=True (torch.compile of the matrix transform); torch's "
                             "rows stay eager (its foreach AdamW does not compile on CPU in torch 2.13)")


# ---------------------------------------------------------------- torch.optim.Muon with an fp32 iteration
def newton_schulz_fp32(grad: torch.Tensor, ns_coefficients, ns_steps: int, eps: float) -> torch.Tensor:
    """torch.optim.Muon's iteration (same steps, same normalization max(‖X‖_F, eps)) in float32."""
    a, b, c = ns_coefficients
    x = grad.float()
    tall = grad.size(0) > grad.size(1)
    if tall:
        x = x.T
    x = x / x.norm().clamp(min=eps)
    for _ in range(ns_steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if tall else x


@contextlib.contextmanager
def torch_muon_fp32_iteration():
    """Run torch.optim.Muon's Newton–Schulz in float32 inside this block (patches torch.optim._muon)."""
    from torch.optim import _muon

    original = _muon._zeropower_via_newtonschulz
    _muon._zeropower_via_newtonschulz = newton_schulz_fp32
    try:
        yield
    finally:
        _muon._zeropower_via_newtonschulz = original


# ---------------------------------------------------------------- rows
class Row:
    """A named optimizer set-up: ``make(model)`` → (step function, optimizers)."""

    def __init__(self, key, label, make, flops_fn=None, ortho_fn=None, context=contextlib.nullcontext):
        self.key, self.label, self.make, self.flops_fn, self.ortho_fn = key, label, make, flops_fn, ortho_fn
        self.context = context


def is_hidden(name: str, p: torch.Tensor) -> bool:
    return p.dim() == 2 and not name.startswith(("wte", "wpe"))


def split_params(model):
    hidden = [p for n, p in model.named_parameters() if is_hidden(n, p)]
    rest = [p for n, p in model.named_parameters() if not is_hidden(n, p)]
    return hidden, rest


def muonlab_muon(model, normuon: bool = False, **kwargs):
    from muonlab.optim import Muon, NorMuon, param_groups

    opt = (NorMuon if normuon else Muon)(param_groups(model), **kwargs)
    return opt.step, [opt]


def torch_muon(model):
    hidden, rest = split_params(model)
    muon = torch.optim.Muon(hidden)
    adamw = torch.optim.AdamW(rest, foreach=True, **AUX_ADAM)

    def step():
        muon.step()
        adamw.step()

    return step, [muon, adamw]


def adamw(model, **kwargs):
    opt = torch.optim.AdamW(model.parameters(), **kwargs)
    return opt.step, [opt]


def muonlab_ortho(**kwargs):
    """The update direction of muonlab.Muon's matrix group for one matrix (shape scale removed)."""
    from muonlab.optim import Muon

    def ortho(g):
        opt = Muon([nn.Parameter(torch.zeros_like(g))], **kwargs)
        group = next(gr for gr in opt.param_groups if gr["rule"] == "spectral")
        return opt.compute_updates([g], dict(group, adjust_lr_fn="none"))[0]

    return ortho


def muon_flops(shapes, method: str, steps: int | None, work_dtype=torch.float32) -> float:
    """Matmul flops of the polar factors of matrices of ``shapes`` (see ``muonlab bench polar``)."""
    total = 0.0
    for m, n in shapes:
        probe = torch.empty(m, n)
        total += nominal_flops(resolve_method(probe, method), steps, m, n, work_dtype)
    return total


def make_rows(skip_bf16: bool) -> list[Row]:
    from muonlab.optim.muon import DEFAULT_METHOD

    rows = [
        Row("muonlab_default", "muonlab.Muon (default)", lambda m, **kw: muonlab_muon(m, **kw),
            lambda shapes, wd: muon_flops(shapes, DEFAULT_METHOD, None, wd), muonlab_ortho()),
        Row("muonlab_polar_express", "muonlab.Muon (polar_express ×5, the previous default)",
            lambda m, **kw: muonlab_muon(m, method="polar_express", **kw),
            lambda shapes, wd: muon_flops(shapes, "polar_express", None, wd),
            muonlab_ortho(method="polar_express")),
        Row("muonlab_keller", "muonlab.Muon (Keller quintic ×5)",
            lambda m, **kw: muonlab_muon(m, ns_coefficients=KELLER, ns_steps=5, **kw),
            lambda shapes, wd: muon_flops(shapes, "newton_schulz", 5, wd), muonlab_ortho(ns_coefficients=KELLER, ns_steps=5)),
        # the default row without last_step_stats' sums and sample: the telemetry's cost is the ratio of the two
        Row("muonlab_no_telemetry", "muonlab.Muon (default, telemetry off)",
            lambda m, **kw: muonlab_muon(m, telemetry=False, **kw),
            lambda shapes, wd: muon_flops(shapes, DEFAULT_METHOD, None, wd)),
        # the default with its state (momenta, the AdamW part's moments) stored in bf16 / int8
        Row("muonlab_bf16_state", "muonlab.Muon (default, bf16 state)",
            lambda m, **kw: muonlab_muon(m, state_dtype="bfloat16", **kw),
            lambda shapes, wd: muon_flops(shapes, DEFAULT_METHOD, None, wd)),
        Row("muonlab_int8_state", "muonlab.Muon (default, int8 state)",
            lambda m, **kw: muonlab_muon(m, state_dtype="int8", **kw),
            lambda shapes, wd: muon_flops(shapes, DEFAULT_METHOD, None, wd)),
        # NorMuon = the default row + the per-row second moment: its extra step cost over muonlab_default
        Row("muonlab_normuon", "muonlab.NorMuon (default polar, β₂=0.95)",
            lambda m, **kw: muonlab_muon(m, normuon=True, **kw),
            lambda shapes, wd: muon_flops(shapes, DEFAULT_METHOD, None, wd)),
        Row("torch_muon_fp32", "torch.optim.Muon (iteration in fp32, patched)", torch_muon,
            lambda shapes, wd: muon_flops(shapes, "newton_schulz_direct", 5, wd),
            lambda g: newton_schulz_fp32(g, KELLER, 5, 1e-7), torch_muon_fp32_iteration),
    ]
    if not skip_bf16:
        rows.append(Row("torch_muon_bf16", "torch.optim.Muon (as shipped: bf16)", torch_muon,
                        lambda shapes, wd: muon_flops(shapes, "newton_schulz_direct", 5, wd)))
    rows += [
        Row("adamw_foreach", "torch.optim.AdamW (foreach)", lambda m: adamw(m, foreach=True)),
        Row("adamw_fused", "torch.optim.AdamW (fused)", lambda m: adamw(m, fused=True)),
    ]
    return rows


# ---------------------------------------------------------------- measurements
def profile_step_memory(step) -> dict:
    """Peak and net bytes allocated during ``step()``, from torch.profiler's allocation records.

    Every allocation and free the CPU allocator reports while profiling (``profile_memory=True``)
    is a node of the profiler's event tree with its signed size; the running sum in time order
    gives the peak above the memory in use before the step, and its end value the net change.
    """
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    changes = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        if node.tag == _EventType.Allocation:
            changes.append((node.start_time_ns, node.extra_fields.alloc_size))
        stack.extend(node.children)
    running = peak = 0
    for _, amount in sorted(changes):
        running += amount
        peak = max(peak, running)
    return {"peak_bytes": peak, "net_bytes": running}


def _with_context(step, context):
    def run_step():
        with context():
            step()

    return run_step


def step_memory(step, device: torch.device) -> dict:
    """Peak and net bytes of one steady-state step (profiler on CPU, allocator stats on CUDA)."""
    if device.type != "cuda":
        return profile_step_memory(step)
    common.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    step()
    common.synchronize(device)
    return {"peak_bytes": torch.cuda.max_memory_allocated(device) - before,
            "net_bytes": torch.cuda.memory_allocated(device) - before}


def state_summary(optimizers, hidden_ids) -> dict:
    """Bytes of optimizer state and the most state tensors held for any hidden matrix."""
    total, per_matrix = 0, 0
    for opt in optimizers:
        for p, state in opt.state.items():
            tensors = [v for v in state.values() if torch.is_tensor(v) and v.numel() > 1]
            total += sum(t.numel() * t.element_size() for t in tensors)
            if id(p) in hidden_ids:
                per_matrix = max(per_matrix, len(tensors))
    return {"state_bytes": total, "state_tensors_per_matrix": per_matrix}


def fill_gradients(model, generator) -> None:
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=generator).to(p.device) * 1e-2


def range_of(y) -> dict:
    lo, hi = common.singular_value_range(y)
    return {"sigma_min": lo, "sigma_max": hi}


def run(args) -> dict:
    device = common.setup_device(args)
    from muonlab.errors import CLIError

    quick = args.quick
    preset_blocks, preset_width = SCALES[args.scale]
    blocks = args.blocks if args.blocks is not None else (1 if quick else preset_blocks)
    width = args.width if args.width is not None else preset_width
    if blocks < 1 or width < 2 or args.vocab < 1:
        raise CLIError("--blocks, --width and --vocab must be positive (width ≥ 2)")
    repeats = args.repeats or (3 if quick else 5)
    # torch.optim.Muon as shipped runs bf16 matmuls, which have no fast kernels on CPU, so there it is run once
    # and scaled; on CUDA it is timed like every other row.
    estimate_torch_bf16 = device.type != "cuda"
    dtype = torch.float32
    model = GPT2Params(blocks, width, args.vocab, min(CONTEXT, max(width, 8))).to(device)
    fill_gradients(model, torch.Generator().manual_seed(0))
    named = dict(model.named_parameters())
    hidden_shapes = [tuple(p.shape) for n, p in named.items() if is_hidden(n, p)]
    hidden_ids = {id(p) for n, p in named.items() if is_hidden(n, p)}
    block_shapes = hidden_shapes[: len(hidden_shapes) // blocks]

    # The floor's rate: plain torch.mm on one quintic step's products for every block shape,
    # timed in the same round-robin as the steps.
    products = []
    for m, n in block_shapes:
        s, l = min(m, n), max(m, n)
        products += [(s, l, s), (s, s, s), (s, s, l)]
    matmul_dtype = torch.bfloat16 if device.type == "cuda" else dtype
    mix, mix_flops = common.matmul_mix(products, matmul_dtype, device)

    # The working-memory target: 3× the largest hidden matrix in fp32, plus 16 MiB (muonlab.Muon's default budget).
    largest = max(m * n for m, n in hidden_shapes) * 4
    memory_target = 3 * largest + 16 * 2**20
    ortho_shapes = sorted(set(block_shapes))
    ortho_inputs = {shape: common.spectral_test_matrix(*shape, ORTHO_KAPPA, seed=7)[0].to(device, dtype)
                    for shape in ortho_shapes}

    # Rows are timed round-robin (one step of each per round) so that load from other processes
    # on a shared machine falls on all of them alike; the medians' ratios are what we report.
    rows = make_rows(args.skip_torch_bf16)
    if args.rows:
        wanted = [k.strip() for k in args.rows.split(",") if k.strip()]
        known = [row.key for row in make_rows(False)]
        unknown = [k for k in wanted if k not in known]
        if unknown or not wanted:
            raise CLIError(f"--rows: unknown {unknown or args.rows!r}; known: {', '.join(known)}")
        rows = [row for row in rows if row.key in wanted]
    results, step_fns, states = [], {}, {}
    for row in rows:
        if row.key == "torch_muon_bf16" and estimate_torch_bf16:
            continue
        compiled = args.compile and row.key.startswith("muonlab")
        step, optimizers = row.make(model, compile=True) if compiled else row.make(model)
        step_fns[row.key] = _with_context(step, row.context)
        states[row.key] = optimizers
        step_fns[row.key]()  # warm-up: creates the state
    step_fns["plain_matmul"] = mix  # timed in the same rounds: the floor's rate under the same load
    mix()
    common.synchronize(device)
    times = {key: [] for key in step_fns}
    for _ in range(repeats):
        for key, step in step_fns.items():
            times[key].append(common.time_call(step, 1, device, warmup=0)["median_s"])
    matmul_s = statistics.median(times["plain_matmul"])
    rate = {"gflops": mix_flops / matmul_s / 1e9, "median_s": matmul_s, "flops": mix_flops}
    for row in rows:
        entry = {"key": row.key, "label": row.label}
        if row.key == "torch_muon_bf16" and estimate_torch_bf16:
            entry.update(run_torch_bf16(quick, width, block_shapes, ortho_inputs, blocks, hidden_shapes, device))
        else:
            step = step_fns.pop(row.key)
            entry.update({"median_s": statistics.median(times[row.key]), "times_s": times[row.key], "estimated": False})
            entry.update(step_memory(step, device))
            entry.update(state_summary(states.pop(row.key), hidden_ids))
            if row.ortho_fn is not None:
                entry["orthogonality"] = {f"{m}x{n}": range_of(row.ortho_fn(g)) for (m, n), g in ortho_inputs.items()}
            del step
        if row.flops_fn is not None:
            entry["matmul_flops"] = row.flops_fn(hidden_shapes, matmul_dtype)
            entry["floor_s"] = entry["matmul_flops"] / (rate["gflops"] * 1e9)
            entry["time_over_floor"] = entry["median_s"] / entry["floor_s"]
            entry["gflops"] = entry["matmul_flops"] / entry["median_s"] / 1e9
            entry["fraction_of_matmul_rate"] = entry["floor_s"] / entry["median_s"]
        if "peak_bytes" in entry:
            entry["peak_over_budget"] = entry["peak_bytes"] / memory_target
        results.append(entry)

    by_key = {e["key"]: e for e in results}
    for e in results:
        for ref in ("torch_muon_fp32", "torch_muon_bf16", "adamw_foreach"):
            if ref in by_key:
                e[f"time_vs_{ref}"] = e["median_s"] / by_key[ref]["median_s"]
    return {
        "benchmark": "step",
        "quick": quick,
        "blocks": blocks,
        "width": width,
        "vocab": args.vocab,
        "repeats": repeats,
        "parameters": sum(p.numel() for p in model.parameters()),
        "hidden_matrices": len(hidden_shapes),
        "matmul": {"dtype": str(matmul_dtype).replace("torch.", ""), **rate},
        "scale": args.scale,
        "compile": bool(args.compile),
        "largest_matrix_bytes": largest,
        "memory_target_bytes": memory_target,
        "ortho_kappa": ORTHO_KAPPA,
        "environment": common.environment(device),
        "rows": results,
    }


def run_torch_bf16(quick, width, block_shapes, ortho_inputs, blocks, hidden_shapes, device) -> dict:
    """torch.optim.Muon as shipped, one step, no warm-up; whole-model time estimated by flops."""
    shapes = [(width, width)] if quick else block_shapes
    params = [nn.Parameter(torch.zeros(shape, device=device)) for shape in shapes]
    for p in params:
        p.grad = ortho_inputs[tuple(p.shape)].clone()
    opt = torch.optim.Muon(params, lr=1.0, weight_decay=0.0)
    timing = common.time_call(opt.step, 1, device, warmup=0)
    measured_flops = muon_flops(shapes, "newton_schulz_direct", 5)
    total_flops = muon_flops(hidden_shapes, "newton_schulz_direct", 5)
    ortho = {}
    for p in params:
        m, n = p.shape
        # After one step from W = 0 with lr 1 and no decay, W = −s·O with s = √max(1, m/n).
        if f"{m}x{n}" not in ortho:
            ortho[f"{m}x{n}"] = range_of(-p.detach() / math.sqrt(max(1.0, m / n)))
    return {
        "median_s": timing["median_s"] * total_flops / measured_flops,
        "measured_s": timing["median_s"],
        "measured_on": [f"{m}x{n}" for m, n in shapes],
        "estimated": True,
        "orthogonality": ortho,
    }


def report(result: dict) -> str:
    def rng(e, shape):
        o = e.get("orthogonality", {}).get(shape)
        return None if o is None else f"[{o['sigma_min']:.3g}, {o['sigma_max']:.3g}]"

    shapes = sorted({s for e in result["rows"] for s in e.get("orthogonality", {})})
    rows = []
    for e in result["rows"]:
        row = {
            "label": e["label"] + (" est." if e.get("estimated") else ""),
            "ms": e["median_s"] * 1e3,
            "fp32": e.get("time_vs_torch_muon_fp32"),
            "adamw": e.get("time_vs_adamw_foreach"),
            "floor": None if "floor_s" not in e else e["floor_s"] * 1e3,
            "over": e.get("time_over_floor"),
            "peak": None if "peak_bytes" not in e else e["peak_bytes"] / 2**20,
            "net": None if "net_bytes" not in e else e["net_bytes"] / 2**20,
            "state": None if "state_bytes" not in e else e["state_bytes"] / 2**20,
            "rate": None if "fraction_of_matmul_rate" not in e else f"{100 * e['fraction_of_matmul_rate']:.0f}%",
            "budget": e.get("peak_over_budget"),
        }
        for s in shapes:
            row[s] = rng(e, s)
        rows.append(row)
    cols = [("label", "step"), ("ms", "median ms"), ("fp32", "× torch Muon fp32"), ("adamw", "× AdamW foreach"),
            ("floor", "floor ms"), ("over", "time/floor"), ("rate", "% of matmul rate"), ("peak", "peak MiB"),
            ("budget", "peak / target"), ("net", "net MiB"),
            ("state", "state MiB")] + [(s, f"σ range {s}") for s in shapes]
    env = result["environment"]
    by_key = {e["key"]: e for e in result["rows"]}
    lines = [
        f"step bench on {env['device']}: {result['blocks']} block(s), {result['parameters'] / 1e6:.1f}M parameters, "
        f"{result['hidden_matrices']} hidden matrices; {env['torch_threads']} threads, load average "
        f"{env.get('load_average', 'n/a')}; median of {result['repeats']}; plain matmul "
        f"{result['matmul']['gflops']:.1f} GFLOP/s ({result['matmul']['dtype']})"
        + (", compiled" if result.get("compile") else ""),
        f"memory target (3× the largest matrix in fp32 + 16 MiB): {result['memory_target_bytes'] / 2**20:.1f} MiB",
        common.format_table(rows, cols),
    ]
    b = by_key.get("torch_muon_bf16")
    if b and b.get("estimated"):  # on CUDA it is timed like every row; on CPU one step is timed and scaled
        lines.append(f"\ntorch.optim.Muon as shipped: one step measured on {', '.join(b['measured_on'])} "
                     f"({b['measured_s']:.2f} s), whole-model time estimated by flop count (est.).")
    d = by_key.get("muonlab_default")
    if d:
        parts = [f"{k}: {d[f'time_vs_{k}']:.3f}×" for k in ("torch_muon_fp32", "torch_muon_bf16")
                 if f"time_vs_{k}" in d]
        lines.append("muonlab.Muon default step time vs " + ", ".join(parts) + f"; σ ranges at κ = {result['ortho_kappa']:g}.")
    if d and "muonlab_no_telemetry" in by_key:
        lines.append(f"telemetry (last_step_stats) cost: muonlab.Muon default / telemetry off = "
                     f"{d['median_s'] / by_key['muonlab_no_telemetry']['median_s']:.3f}×.")
    for key, name in (("muonlab_bf16_state", "bf16"), ("muonlab_int8_state", "int8")):
        if d and key in by_key:
            lines.append(f"{name} state vs fp32 state: {by_key[key]['median_s'] / d['median_s']:.3f}× the step time, "
                         f"{by_key[key]['state_bytes'] / d['state_bytes']:.3f}× the state bytes.")
    if d and "muonlab_normuon" in by_key:
        lines.append(f"muonlab.NorMuon step time vs muonlab.Muon default: {by_key['muonlab_normuon']['median_s'] / d['median_s']:.3f}×.")
    return "\n".join(lines)


def main(args) -> int:
    return common.run_and_report(run, report, args)
