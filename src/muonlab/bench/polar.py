"""Polar-factor methods: time, GFLOP/s against a plain matmul, and accuracy on prescribed spectra.

For each method and step count, on GPT-2-small shapes (768×768, 768×3072, 3072×768) and
matrices G = U diag(s) Vᵀ with s log-spaced from 1 to 1/κ (κ = 10 … 1e4):

- median time of ``muonlab.polar(G, method, steps)`` (float32 input by default, ``--dtype float64`` for the
  converging methods' float64 comparison; CPU iterates in the input's precision);
- achieved GFLOP/s = the method's nominal flop count / time, next to plain ``torch.mm``'s rate
  on the same product shapes, timed in the same rounds as the method (one call of each per round,
  so the load of a shared machine falls on both alike; the target: ≥ 80%);
- accuracy: the range of the output's singular values and ‖Y − UVᵀ‖_F/‖UVᵀ‖_F.

Flop counts (wide orientation m ≤ n; tall inputs are transposed): the direct quintic (rows
``*_direct`` and torch.optim.Muon's NS) 4m²n + 2m³ per step; cubic NS 4m²n per step; Gram NS
4m²n + (8·steps − 6)m³ (R₀ = X₀X₀ᵀ and the final QX₀, 2m²n each, and 8m³ per step, less 2m³ in
the first, where Q starts as the identity, and 4m³ in the last, whose R is not needed).
``newton_schulz``/``polar_express`` are counted as ``polar()`` runs them: in the Gram form for
aspect ratio ≥ 2 (float32), direct otherwise. SVD, QDWH and ZOLO-PD have no fixed matmul count: "n/a".

The converging methods (QDWH, ZOLO-PD, SVD) get a table of their own: iterations, median time, their
operation count with the factorizations (:meth:`muonlab.linalg.methods.PolarMethod.work`), and the worst
relative error and orthogonality ‖YᵀY − I‖₂ over the κ's — the same accuracy, so time compares directly.

``torch.optim.Muon``'s own Newton–Schulz runs in bfloat16 as shipped, ~100× slower than float32
on CPU: it is run once (no warm-up, no repeats) at κ = 100 only — on every shape in the full run,
on 768×768 only with ``--quick``.
"""

from __future__ import annotations

import statistics

import torch

from muonlab.bench import common
from muonlab.linalg.polar import POLAR_METHODS, polar, resolve_method, uses_gram_form
from muonlab.linalg.precision import iteration_dtype

GPT2_SHAPES = ((768, 768), (768, 3072), (3072, 768))
KAPPAS = (10.0, 1e2, 1e3, 1e4)
TIMING_KAPPA = 1e2  # the matrix the timings run on (time does not depend on κ for matmul methods)

# (method, steps); steps None = the method's default.
FULL_METHODS = (
    ("newton_schulz", 5),
    ("newton_schulz_direct", 5),
    ("polar_express", 4),
    ("polar_express", 5),
    ("polar_express_direct", 5),
    ("polar_express", 6),
    ("polar_express", 8),
    ("polar_express_gram_norm", 4),
    ("gram_newton_schulz", 5),
    ("gram_newton_schulz", 8),
    ("cubic", 24),
    ("qdwh", None),
    ("zolo_pd", None),
    ("svd", None),
    ("torch_muon_bf16", 5),
)
QUICK_METHODS = (
    ("newton_schulz", 5),
    ("newton_schulz_direct", 5),
    ("polar_express", 5),
    ("polar_express_direct", 5),
    ("polar_express", 8),
    ("polar_express_gram_norm", 4),
    ("gram_newton_schulz", 5),
    ("qdwh", None),
    ("zolo_pd", None),
    ("torch_muon_bf16", 5),
)
QUICK_SHAPES = ((768, 768), (768, 3072))
QUICK_KAPPAS = (1e2, 1e4)
TORCH_MUON = "torch_muon_bf16"
# bench-only rows: the direct quintic iteration, also where polar() would use the Gram form
DIRECT_METHODS = ("newton_schulz_direct", "polar_express_direct")
# the methods that converge to the polar factor: compared in a table of their own
CONVERGING_METHODS = ("qdwh", "zolo_pd", "svd")
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def add_arguments(parser) -> None:
    common.add_common_arguments(parser, default_out="results/bench/polar.json")
    parser.add_argument("--shapes", default=None, help="comma-separated MxN list (default: GPT-2-small shapes)")
    parser.add_argument("--kappas", default=None, help="comma-separated condition numbers (default: 10,100,1e3,1e4)")
    parser.add_argument(
        "--methods", default=None, help="comma-separated method[:steps] list (default: all; see the module docstring)"
    )
    parser.add_argument("--dtype", default="float32", help="input precision: float32 (default) or float64")


def parse_dtype(text: str) -> torch.dtype:
    from muonlab.errors import CLIError

    if text not in DTYPES:
        raise CLIError(f"--dtype: expected one of {', '.join(DTYPES)}, got {text!r}")
    return DTYPES[text]


def parse_shapes(text: str) -> tuple[tuple[int, int], ...]:
    from muonlab.errors import CLIError

    shapes = []
    for item in text.split(","):
        try:
            m, n = (int(v) for v in item.lower().split("x"))
        except ValueError:
            raise CLIError(f"--shapes: expected MxN items like 768x3072, got {item!r}") from None
        if m < 2 or n < 2:
            raise CLIError(f"--shapes: both sides must be at least 2, got {item!r}")
        shapes.append((m, n))
    return tuple(shapes)


def parse_kappas(text: str) -> tuple[float, ...]:
    from muonlab.errors import CLIError

    try:
        kappas = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise CLIError(f"--kappas: expected comma-separated numbers, got {text!r}") from None
    if any(not k >= 1 for k in kappas):
        raise CLIError(f"--kappas: condition numbers must be ≥ 1, got {text!r}")
    return kappas


def parse_methods(text: str) -> tuple[tuple[str, int | None], ...]:
    from muonlab.errors import CLIError

    known = tuple(m for m in POLAR_METHODS if m != "auto") + ("auto", TORCH_MUON) + DIRECT_METHODS
    methods = []
    for item in text.split(","):
        name, _, steps = item.partition(":")
        if name not in known:
            raise CLIError(f"--methods: unknown method {name!r}; expected one of {', '.join(known)}")
        try:
            count = int(steps) if steps else None
        except ValueError:
            raise CLIError(f"--methods: steps must be an integer in {item!r}") from None
        if count is not None and count < 1:
            raise CLIError(f"--methods: steps must be positive in {item!r}")
        methods.append((name, count))
    return tuple(methods)


def torch_muon_newton_schulz(g: torch.Tensor, steps: int) -> torch.Tensor:
    """``torch.optim.Muon``'s own iteration, as shipped (bfloat16), with its default coefficients and eps."""
    from torch.optim import _muon

    return _muon._zeropower_via_newtonschulz(g, (3.4445, -4.775, 2.0315), steps, 1e-7)


def nominal_flops(method: str, steps: int | None, m: int, n: int, work_dtype=torch.float32) -> float | None:
    """The matmul flops of one polar factor of an m×n matrix (None where there is no fixed count).

    Registered methods count what :func:`muonlab.linalg.polar.polar` actually runs (the quintics on the Gram
    matrix for aspect ratio ≥ 2 in float32+; :meth:`muonlab.linalg.methods.PolarMethod.flops`); the ``*_direct``
    rows and torch.optim.Muon's iteration always run the direct quintic.
    """
    from muonlab.linalg import iterations as it
    from muonlab.linalg.methods import POLAR_METHOD_REGISTRY, quintic_flops

    if method == "auto":
        method = "polar_express"
    if method in POLAR_METHOD_REGISTRY:
        return POLAR_METHOD_REGISTRY[method].flops(m, n, steps, uses_gram_form(m, n, work_dtype))
    small, large = min(m, n), max(m, n)
    if method in ("newton_schulz_direct", TORCH_MUON):
        return quintic_flops(it.KELLER_STEPS if steps is None else steps, small, large)
    if method == "polar_express_direct":
        return quintic_flops(it.POLAR_EXPRESS_STEPS if steps is None else steps, small, large)
    return None


def direct_quintic(g: torch.Tensor, method: str, steps: int | None) -> torch.Tensor:
    """The direct quintic iteration X ← aX + (bA + cA²)X (no Gram form), for comparison rows."""
    from muonlab.linalg import iterations as it

    x = g.to(torch.float32) if g.device.type != "cuda" else g.to(torch.bfloat16)
    wide = x.unsqueeze(0) if x.shape[-2] <= x.shape[-1] else x.mT.unsqueeze(0)
    if method == "newton_schulz_direct":
        schedule, safety = it.constant_schedule(it.KELLER_COEFFICIENTS, steps or it.KELLER_STEPS), 1.0
    else:
        schedule, safety = it.polar_express_schedule(steps or it.POLAR_EXPRESS_STEPS), it.POLAR_EXPRESS_SAFETY
    out = it.quintic_iteration(it.normalize(wide, 0.0, safety), schedule)[0]
    return out if g.shape[-2] <= g.shape[-1] else out.mT


def iteration_count(method: str, steps: int | None, m: int, n: int, work_dtype: torch.dtype) -> int | None:
    """The iterations one call runs (the registry's schedule for QDWH/ZOLO-PD; None for the SVD)."""
    from muonlab.linalg import iterations as it
    from muonlab.linalg.methods import POLAR_METHOD_REGISTRY

    registered = resolve_method(torch.empty(0, dtype=work_dtype), method)
    if registered in POLAR_METHOD_REGISTRY:
        return POLAR_METHOD_REGISTRY[registered].iterations(m, n, work_dtype, steps)
    if method in ("newton_schulz_direct", TORCH_MUON):
        return it.KELLER_STEPS if steps is None else steps
    return it.POLAR_EXPRESS_STEPS if steps is None else steps


def work_flops(method: str, steps: int | None, m: int, n: int, work_dtype: torch.dtype) -> float | None:
    """Flops with the factorizations counted (QDWH, ZOLO-PD: :meth:`PolarMethod.work`); else the matmul count."""
    from muonlab.linalg.methods import POLAR_METHOD_REGISTRY

    if method in ("qdwh", "zolo_pd") and steps is None:
        return POLAR_METHOD_REGISTRY[method].work(m, n, work_dtype)
    return nominal_flops(method, steps, m, n, work_dtype)


def make_call(method: str, steps: int | None):
    if method == TORCH_MUON:
        return lambda g: torch_muon_newton_schulz(g, 5 if steps is None else steps)
    if method in DIRECT_METHODS:
        return lambda g: direct_quintic(g, method, steps)
    return lambda g: polar(g, method, steps)


def label(method: str, steps: int | None) -> str:
    return method if steps is None else f"{method}×{steps}"


def run(args) -> dict:
    device = common.setup_device(args)
    quick = args.quick
    shapes = parse_shapes(args.shapes) if args.shapes else (QUICK_SHAPES if quick else GPT2_SHAPES)
    kappas = parse_kappas(args.kappas) if args.kappas else (QUICK_KAPPAS if quick else KAPPAS)
    methods = parse_methods(args.methods) if args.methods else (QUICK_METHODS if quick else FULL_METHODS)
    repeats = args.repeats or (3 if quick else 7)
    dtype = parse_dtype(args.dtype)
    timing_kappa = TIMING_KAPPA if TIMING_KAPPA in kappas else kappas[0]

    matrices = {
        (m, n, k): common.spectral_test_matrix(m, n, k, seed=i) for i, ((m, n), k) in enumerate(
            (shape, k) for shape in shapes for k in kappas)
    }
    rows, matmul = [], {}
    for (m, n) in shapes:
        small, large = min(m, n), max(m, n)
        # one quintic step's products: X Xᵀ (s×l·l×s), A·A (s×s·s×s), (bA + cA²)·X (s×s·s×l)
        mix, mix_flops = common.matmul_mix(
            [(small, large, small), (small, small, small), (small, small, large)], dtype, device
        )
        rates = []
        for method, steps in methods:
            if method == TORCH_MUON and quick and (m, n) != shapes[0]:
                continue
            call = make_call(method, steps)
            inputs = {k: matrices[(m, n, k)][0].to(device, dtype) for k in kappas}
            outputs = {}
            if method == TORCH_MUON:
                # bf16 matmuls on CPU have no fast kernels (BENCHMARKS.md): one call, no warm-up, at one κ; its
                # output is the accuracy sample.
                timed = common.time_round_robin(
                    {"matmul": mix,
                     "method": lambda: outputs.__setitem__(timing_kappa, call(inputs[timing_kappa]))},
                    1, device, warmup=0)
            else:
                # the plain matmul mix is timed in the same rounds as the method (paired medians)
                timed = common.time_round_robin({"matmul": mix, "method": lambda: call(inputs[timing_kappa])},
                                                repeats, device)
                for k in kappas:
                    outputs[k] = call(inputs[k])
            timing = timed["method"]
            rate = {"gflops": mix_flops / timed["matmul"]["median_s"] / 1e9}
            rates.append(rate["gflops"])
            flops = nominal_flops(method, steps, m, n)
            gflops = None if flops is None else flops / timing["median_s"] / 1e9
            accuracy = {}
            for k, y in outputs.items():
                smin, smax = common.singular_value_range(y)
                accuracy[f"{k:g}"] = {
                    "sigma_min": smin,
                    "sigma_max": smax,
                    "rel_err": common.relative_error(y, matrices[(m, n, k)][1]),
                    # ‖YᵀY − I‖₂ = max |σ² − 1| (Y of full rank min(m, n))
                    "orthogonality": max(abs(smin * smin - 1.0), abs(smax * smax - 1.0)),
                }
            work_dtype = inputs[timing_kappa].dtype if method in (TORCH_MUON, *DIRECT_METHODS) else iteration_dtype(
                inputs[timing_kappa], resolve_method(inputs[timing_kappa], method))
            rows.append({
                "method": method,
                "steps": steps,
                "label": label(method, steps),
                "shape": f"{m}x{n}",
                "dtype": str(dtype).replace("torch.", ""),
                "iterations": iteration_count(method, steps, m, n, work_dtype),
                "work_flops": work_flops(method, steps, m, n, work_dtype),
                "median_s": timing["median_s"],
                "times_s": timing["times_s"],
                "flops": flops,
                "gflops": gflops,
                "matmul_gflops": rate["gflops"],
                "fraction_of_matmul": None if gflops is None else gflops / rate["gflops"],
                "iteration_dtype": "bfloat16" if method == TORCH_MUON else "float32" if method in DIRECT_METHODS else str(
                    work_dtype).replace("torch.", ""),
                "accuracy": accuracy,
            })
        matmul[f"{m}x{n}"] = {"gflops": statistics.median(rates), "gflops_per_row": rates, "flops": mix_flops}
    return {
        "benchmark": "polar",
        "quick": quick,
        "repeats": repeats,
        "timing_kappa": timing_kappa,
        "kappas": list(kappas),
        "environment": common.environment(device),
        "matmul": matmul,
        "rows": rows,
    }


def report(result: dict) -> str:
    speed_cols = [("label", "method"), ("shape", "shape"), ("ms", "median ms"), ("gflops", "GFLOP/s"),
                  ("matmul_gflops", "matmul GFLOP/s"), ("pct", "% of matmul")]
    speed = [dict(row, ms=row["median_s"] * 1e3,
                  pct=None if row["fraction_of_matmul"] is None else 100 * row["fraction_of_matmul"])
             for row in result["rows"]]
    acc_rows = []
    for row in result["rows"]:
        for k, acc in row["accuracy"].items():
            acc_rows.append({"label": row["label"], "shape": row["shape"], "kappa": k,
                             "range": f"[{acc['sigma_min']:.3g}, {acc['sigma_max']:.3g}]", "rel_err": acc["rel_err"]})
    acc_cols = [("label", "method"), ("shape", "shape"), ("kappa", "κ"), ("range", "σ range"),
                ("rel_err", "rel. error vs SVD")]
    converging = [dict(row, ms=row["median_s"] * 1e3,
                       gflop=None if row.get("work_flops") is None else row["work_flops"] / 1e9,
                       worst_err=max(acc["rel_err"] for acc in row["accuracy"].values()),
                       worst_orth=max(acc["orthogonality"] for acc in row["accuracy"].values()))
                  for row in result["rows"] if row["method"] in CONVERGING_METHODS]
    conv_cols = [("label", "method"), ("shape", "shape"), ("dtype", "dtype"), ("iterations", "iterations"),
                 ("ms", "median ms"), ("gflop", "GFLOP (with factorizations)"),
                 ("worst_err", "max rel. error vs exact"), ("worst_orth", "max ‖YᵀY − I‖₂")]
    env = result["environment"]
    lines = [
        f"polar bench on {env['device']} ({env['torch_threads']} threads, load average "
        f"{env.get('load_average', 'n/a')}); median of {result['repeats']}; timings at κ = {result['timing_kappa']:g}",
        common.format_table(speed, speed_cols),
        "",
        common.format_table(acc_rows, acc_cols),
    ]
    if converging:
        kappas = ", ".join(f"{k:g}" for k in result["kappas"])
        lines += ["", f"Converging methods (errors: worst over κ ∈ {{{kappas}}}):",
                  common.format_table(converging, conv_cols)]
    if any(row["method"] == TORCH_MUON for row in result["rows"]):
        lines.append(f"\n{TORCH_MUON}: torch.optim.Muon's own Newton–Schulz as shipped (bfloat16), run once "
                     f"(no warm-up) at κ = {result['timing_kappa']:g}"
                     + (" on the first shape only (--quick)." if result["quick"] else "."))
    return "\n".join(lines)


def main(args) -> int:
    return common.run_and_report(run, report, args)
