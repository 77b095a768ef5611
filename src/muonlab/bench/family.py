"""The whole optimizer family on GPT-2-small's parameters: step time, ratio to Muon, accuracy.

Every name in :data:`muonlab.optim.OPTIMIZERS` (built by ``make_optimizer`` with its defaults on
``param_groups(model)``), plus a few alternative methods (PolarGrad with QDWH, the paper's;
SimplifiedMuon with a matmul-only polar iteration). The model is
:class:`muonlab.bench.step.GPT2Params` (12 blocks; ``--quick``: 2) with fixed random gradients.

Time: median of one ``step()`` after a warm-up step that creates the state; the rows are timed
round-robin (one step of each per round) so that a shared machine's load falls on all alike, and
each ratio ``× muon`` is to ``muon``'s median in the same run. Targets (issue 11, CPU and CUDA):
polargrad ≤ 1.5×, p = ½ and ¼ (msgds, msgdq, adams, adamq) ≤ 3×, p = 0 (msgdz, adamz) ≤ 1.3×,
PolarGrad with ``method="qdwh"`` ≤ 10× on CUDA.

Accuracy of each row's matrix transform (the update direction before the shape scale, computed
by the optimizer's own ``transform`` on a one-parameter instance) on G = U diag(s) Vᵀ with s
log-spaced from 1 to 1/κ (κ = 10, 100, 1000; width × width, float32), against the exact
U diag(sᵖ) Vᵀ from the known factors:

- ``err``: ‖Y − U sᵖ Vᵀ‖_F / ‖U sᵖ Vᵀ‖_F;
- ``σ ratio``: the range of σᵢ(Y)/sᵢᵖ (both sorted) — for p = 0 the σ range of the polar factor;
- PolarGrad: ``ν err``, (ν̂ − Σ sᵢ)/Σ sᵢ for ν̂ = ⟨G, polar(G)⟩ as PolarGrad computes it, and the
  σ range of its polar factor (its update is ν̂·polar(G)).
"""

from __future__ import annotations

import math
import statistics

import torch

from muonlab.bench import common
from muonlab.bench.step import CONTEXT, VOCAB, WIDTH, GPT2Params, fill_gradients, is_hidden

KAPPAS = (10.0, 100.0, 1000.0)
# issue 11's targets: ratio of the step time to muonlab.Muon's default step, same run
TARGETS = {
    "polargrad": 1.5,
    "msgds": 3.0, "msgdq": 3.0, "adams": 3.0, "adamq": 3.0,
    "msgdz": 1.3, "adamz": 1.3,
}
CUDA_TARGETS = {**TARGETS, "polargrad_qdwh": 10.0}
# extra rows: (key, registry name, keyword overrides, label)
EXTRA_ROWS = (
    ("polargrad_qdwh", "polargrad", {"method": "qdwh"}, "polargrad, method='qdwh' (the paper's)"),
    ("simplified_muon_pe6", "simplified_muon", {"method": "polar_express_gram_norm", "steps": 6},
     "simplified_muon, method='polar_express_gram_norm', steps=6"),
    ("msgdz_keller15_bf16", "msgdz", {"method": "newton_schulz", "ns_steps": 15, "polar_dtype": torch.bfloat16},
     "msgdz, Keller ×15 in bf16 (work D's trained setting)"),
)
# bf16 matmuls are ~100× slower than fp32 on CPU: that row is for CUDA only
CUDA_ONLY_ROWS = ("msgdz_keller15_bf16",)


def add_arguments(parser) -> None:
    common.add_common_arguments(parser, default_out="results/bench/family.json")
    parser.add_argument("--blocks", type=int, default=None, help="transformer blocks (default 12; 2 with --quick)")
    parser.add_argument("--width", type=int, default=WIDTH, help="model width (default 768)")
    parser.add_argument("--vocab", type=int, default=VOCAB, help="token embedding rows (default 50257)")
    parser.add_argument("--optimizers", default="all",
                        help="comma-separated registry names and extra rows (default: all; 'muon' is always run)")


def row_specs(device: torch.device, selection: str) -> list[tuple[str, str, dict, str]]:
    """(key, registry name, overrides, label) for every row to run, muon first."""
    from muonlab.errors import CLIError
    from muonlab.optim import OPTIMIZERS

    rows = [(name, name, {}, name) for name in OPTIMIZERS]
    rows += [r for r in EXTRA_ROWS if device.type == "cuda" or r[0] not in CUDA_ONLY_ROWS]
    if selection != "all":
        wanted = [s.strip() for s in selection.split(",") if s.strip()]
        known = {r[0] for r in rows}
        unknown = [w for w in wanted if w not in known]
        if unknown:
            raise CLIError(f"--optimizers: unknown {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        rows = [r for r in rows if r[0] in wanted or r[0] == "muon"]
    return sorted(rows, key=lambda r: r[0] != "muon")


def spectral_case(n: int, kappa: float, seed: int, device: torch.device):
    """(G float32 on device, U, s, V in float64 on CPU): G = U diag(s) Vᵀ, s log-spaced 1 … 1/κ."""
    gen = torch.Generator().manual_seed(seed)
    u = common.random_orthonormal(n, n, gen)
    v = common.random_orthonormal(n, n, gen)
    s = torch.logspace(0.0, -math.log10(kappa), n, dtype=torch.float64)
    return ((u * s) @ v.mT).to(device, torch.float32), u, s, v


def transform_accuracy(key: str, name: str, overrides: dict, n: int, device: torch.device) -> dict | None:
    """Accuracy of the row's matrix transform on κ = 10, 100, 1000 (None for torch's optimizers)."""
    from muonlab.optim import make_optimizer
    from muonlab.optim.polargrad import PolarGrad, nuclear_factor, resolve_polar_method
    from muonlab.optim.settings import polar_factor

    probe = torch.nn.Parameter(torch.zeros(n, n, device=device))
    opt = make_optimizer(name, [probe], **overrides)
    groups = [g for g in opt.param_groups if g.get("rule") == "spectral"]
    if not groups:
        return None
    group = groups[0]
    settings = opt.group_settings(group)
    p = float(group.get("p", 0.0))
    out = {}
    for i, kappa in enumerate(KAPPAS):
        g, u, s, v = spectral_case(n, kappa, seed=11 + i, device=device)
        batch = g.unsqueeze(0)
        entry = {}
        if isinstance(opt, PolarGrad):
            factor = polar_factor(batch, resolve_polar_method(batch, settings.polar))
            nu = float(nuclear_factor(batch, factor).reshape(()))
            entry["nu_rel_err"] = (nu - float(s.sum())) / float(s.sum())
            y = factor[0]
        else:
            y = opt.transform(batch.clone(), settings)[0]
        y = y.detach().to("cpu", torch.float64)
        target_s = s.pow(p)
        exact = (u * target_s) @ v.mT
        entry["rel_err"] = float(torch.linalg.matrix_norm(y - exact) / torch.linalg.matrix_norm(exact))
        ratio = torch.linalg.svdvals(y) / target_s  # both descending
        entry["sigma_ratio_min"], entry["sigma_ratio_max"] = float(ratio.min()), float(ratio.max())
        out[f"{kappa:g}"] = entry
    return out


def run(args) -> dict:
    from muonlab.errors import CLIError
    from muonlab.optim import OPTIMIZERS, make_optimizer, param_groups

    device = common.setup_device(args)
    blocks = args.blocks if args.blocks is not None else (2 if args.quick else 12)
    if blocks < 1 or args.width < 2 or args.vocab < 1:
        raise CLIError("--blocks, --width and --vocab must be positive (width ≥ 2)")
    repeats = args.repeats or 3
    specs = row_specs(device, args.optimizers)
    model = GPT2Params(blocks, args.width, args.vocab, min(CONTEXT, max(args.width, 8))).to(device)
    fill_gradients(model, torch.Generator().manual_seed(0))
    hidden = [p for n, p in model.named_parameters() if is_hidden(n, p)]

    steps = {}
    for key, name, overrides, _ in specs:
        opt = make_optimizer(name, param_groups(model), **overrides)
        steps[key] = opt.step
        opt.step()  # warm-up: creates the state
    timing = common.time_round_robin(steps, repeats, device, warmup=0)
    muon_s = timing["muon"]["median_s"]
    targets = CUDA_TARGETS if device.type == "cuda" else TARGETS
    rows = []
    for key, name, overrides, label in specs:
        t = timing[key]
        spec = OPTIMIZERS[name]
        row = {
            "key": key,
            "label": label,
            "description": spec.description,
            "overrides": {k: str(v) for k, v in overrides.items()},
            "median_s": t["median_s"],
            "times_s": t["times_s"],
            "ratio_to_muon": t["median_s"] / muon_s,
            "target": targets.get(key),
        }
        if row["target"] is not None:
            row["meets_target"] = row["ratio_to_muon"] <= row["target"]
        row["accuracy"] = transform_accuracy(key, name, overrides, args.width, device)
        rows.append(row)
    return {
        "benchmark": "family",
        "quick": args.quick,
        "blocks": blocks,
        "width": args.width,
        "vocab": args.vocab,
        "repeats": repeats,
        "parameters": sum(p.numel() for p in model.parameters()),
        "hidden_matrices": len(hidden),
        "kappas": list(KAPPAS),
        "environment": common.environment(device),
        "rows": rows,
    }


def report(result: dict) -> str:
    def errs(acc, field, fmt):
        if acc is None or field not in acc[f"{KAPPAS[0]:g}"]:
            return None
        return " / ".join(fmt(acc[f"{k:g}"][field]) for k in KAPPAS)

    def ratio_range(acc, kappa):
        if acc is None:
            return None
        e = acc[f"{kappa:g}"]
        return f"[{e['sigma_ratio_min']:.3g}, {e['sigma_ratio_max']:.3g}]"

    rows = []
    for r in result["rows"]:
        acc = r["accuracy"]
        target = r.get("target")
        rows.append({
            "label": r["label"],
            "ms": r["median_s"] * 1e3,
            "ratio": r["ratio_to_muon"],
            "target": None if target is None else f"≤ {target:g}× " + ("yes" if r["meets_target"] else "NO"),
            "err": errs(acc, "rel_err", lambda v: f"{v:.1e}"),
            "sig100": ratio_range(acc, 100.0),
            "sig1000": ratio_range(acc, 1000.0),
            "nu": errs(acc, "nu_rel_err", lambda v: f"{100 * v:+.2f}%"),
        })
    kappas = "/".join(f"{k:g}" for k in KAPPAS)
    cols = [("label", "optimizer"), ("ms", "median ms"), ("ratio", "× muon"), ("target", "target"),
            ("err", f"rel. err κ={kappas}"), ("sig100", "σ/σᵖ range κ=100"), ("sig1000", "σ/σᵖ range κ=1000"),
            ("nu", f"ν err κ={kappas}")]
    env = result["environment"]
    head = (f"family bench on {env['device']} ({env.get('gpu', env['processor'] or env['machine'])}), torch "
            f"{env['torch']}: {result['blocks']} block(s), {result['hidden_matrices']} hidden matrices, "
            f"{result['parameters'] / 1e6:.1f}M parameters; {env['torch_threads']} threads, load average "
            f"{env.get('load_average', 'n/a')}; median of {result['repeats']} round-robin rounds; accuracy on "
            f"{result['width']}×{result['width']} float32 matrices")
    return head + "\n" + common.format_table(rows, cols)


def main(args) -> int:
    return common.run_and_report(run, report, args)
