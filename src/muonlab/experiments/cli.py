"""``muonlab run EXPERIMENT`` and ``muonlab reproduce``: argument parsing and validation at the boundary.

Every bad input (unknown experiment or optimizer, non-positive κ or steps, unwritable output directory) becomes a
one-line error naming the problem (exit code 2) before anything runs; results are written atomically.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path


def _error(message: str):
    from muonlab.errors import CLIError

    return CLIError(message)


def parse_optimizers(text: str | None) -> list[str] | None:
    if text is None:
        return None
    from muonlab.experiments.runner import known_optimizers

    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise _error("--optimizers: expected a comma-separated list of optimizer names")
    known = known_optimizers()
    for n in names:
        if n not in known:
            raise _error(f"--optimizers: unknown optimizer {n!r}; known: {', '.join(sorted(known))}")
    return names


def parse_kappas(text: str | None) -> list[float] | None:
    if text is None:
        return None
    kappas = []
    for item in text.split(","):
        try:
            k = float(item)
        except ValueError:
            raise _error(f"--kappas: {item.strip()!r} is not a number") from None
        if not math.isfinite(k) or k <= 0:
            raise _error(f"--kappas: condition numbers must be positive and finite, got {item.strip()}")
        if k < 1:
            raise _error(f"--kappas: a condition number is ≥ 1, got {item.strip()}")
        kappas.append(k)
    return kappas


def check_steps(steps: int | None) -> int | None:
    if steps is not None and steps <= 0:
        raise _error(f"--steps must be a positive integer, got {steps}")
    return steps


def check_model(name: str | None) -> str | None:
    """--model of the LM experiments (lm-compare, qk-clip): a preset of muonlab.tasks.lm.model."""
    from muonlab.tasks.lm.model import preset_problem

    problem = preset_problem(name)
    if problem:
        raise _error(problem)
    return name


def check_device(name: str | None) -> str | None:
    """--device of the LM experiments: auto (CUDA if available), cpu, cuda or cuda:N, and it must exist here."""
    from muonlab.devices import device_problem

    problem = device_problem(name)
    if problem:
        raise _error(problem)
    return name


def summary_table(payload: dict) -> str:
    rows = [r for r in payload["runs"] if r.get("best")]
    lines = [f"{'optimizer':<16} {'kappa':>8} {'lr':>10} {'rho':>6} {'iters_to_tol':>12} {'final error':>12} {'wall_s':>7}"]
    for r in rows:
        k = "-" if r["kappa"] is None else f"{r['kappa']:g}"
        it = "-" if r["iters_to_tol"] is None else str(r["iters_to_tol"])
        err = r["final_error"]
        lines.append(f"{r['optimizer']:<16} {k:>8} {r['lr']:>10.3g} {r['gamma']:>6.3g} {it:>12} "
                     f"{(err if err is not None else float('nan')):>12.3e} {r['wall_s']:>7.2f}")
    return "\n".join(lines)


def cmd_run(args: argparse.Namespace) -> int:
    from muonlab.files import OutputError, atomic_directory
    from muonlab.experiments.registry import execute, resolve_experiment

    resolve_experiment(args.experiment)
    args.progress = not args.no_progress
    args.optimizers = parse_optimizers(args.optimizers)
    args.kappas = parse_kappas(args.kappas)
    check_steps(args.steps)
    check_model(args.model)
    check_device(args.device)
    out = args.out or str(Path("results") / args.experiment)
    _check_lm_compare_options(args, out)
    try:
        with atomic_directory(out) as tmp:
            payload = execute(args.experiment, args, tmp)
    except OutputError as err:
        raise _error(str(err)) from None
    print(summary_table(payload))
    print(f"wrote {Path(out).resolve() / 'results.json'} and {', '.join(payload.get('plots', []))}")
    return 0


LM_COMPARE_OPTIONS = ("device", "model", "jobs", "compile")


def _check_lm_compare_options(args: argparse.Namespace, out: str) -> None:
    """lm-compare's own options: validated here (one line each), refused for the other experiments. Its run
    folders live in OUT/runs while it runs, so that the same command resumes a killed sweep."""
    # --model and --device serve qk-clip too (checked in cmd_run); --jobs and --compile only lm-compare.
    only_lm_compare = ("jobs", "compile") if args.experiment == "qk-clip" else LM_COMPARE_OPTIONS
    given = [f"--{o}" for o in only_lm_compare if getattr(args, o, None) not in (None, False)]
    if args.experiment != "lm-compare":
        if given:
            lm_only = [g for g in given if g in ("--jobs", "--compile")]
            where = "lm-compare" if lm_only else "lm-compare and qk-clip"
            raise _error(f"{', '.join(given)}: only for {where}, not {args.experiment}")
        return
    from muonlab.experiments.lm_compare import LMCompareError, Options

    try:
        Options.from_namespace(args).check()
    except LMCompareError as err:
        raise _error(str(err)) from None
    args.runs_dir = str(Path(out) / "runs")


def cmd_reproduce(args: argparse.Namespace) -> int:
    from muonlab.files import OutputError
    from muonlab.experiments.report import reproduce

    check_steps(getattr(args, "steps", None))
    out = args.out or "reproduce"
    try:
        path = reproduce(out, quick=args.quick, seed=args.seed, progress=not args.no_progress)
    except OutputError as err:
        raise _error(str(err)) from None
    print(f"wrote {path}")
    return 0


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0, help="random seed of the data and the starts (default 0)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def register(subparsers) -> None:
    from muonlab.experiments.registry import EXPERIMENTS

    run = subparsers.add_parser(
        "run",
        help="run one experiment: step-size grid per optimizer, results.json + PNG plots",
        description="Run one experiment. Known: " + ", ".join(EXPERIMENTS),
    )
    run.add_argument("experiment", metavar="EXPERIMENT", help="one of: " + ", ".join(EXPERIMENTS))
    run.add_argument("--optimizers", help="comma-separated names as in make_optimizer, plus gd (default: per experiment)")
    run.add_argument("--kappas", help="comma-separated condition numbers (work A experiments)")
    run.add_argument("--steps", type=int, help="step budget per run (default: per experiment and optimizer)")
    run.add_argument("--out", help="output directory (default results/EXPERIMENT); replaced atomically")
    run.add_argument("--quick", action="store_true", help="smaller step-size grids and budgets")
    run.add_argument("--small", action="store_true", help="work B problems with every dimension divided by 5")
    lm = run.add_argument_group("language-model experiments (lm-compare, qk-clip)")
    lm.add_argument("--model", help="GPT preset, e.g. micro, tiny, small (default: per experiment)")
    lm.add_argument("--device", help="auto (default), cpu, cuda or cuda:N; bf16 autocast on CUDA")
    lm.add_argument("--jobs", type=int, help="runs at once: processes, one torch thread each on CPU, sharing the GPU "
                                             "on CUDA (default 2 on CPU, 1 on CUDA)")
    lm.add_argument("--compile", action="store_true", help="torch.compile each run's training step")
    _common(run)
    run.set_defaults(func=cmd_run)

    rep = subparsers.add_parser(
        "reproduce",
        help="run the reproductions and write report.md: each claim, the source's number, ours, and whether it holds",
    )
    rep.add_argument("--quick", action="store_true",
                     help="reduced sizes, grids and step budgets (minutes on a CPU; BENCHMARKS.md)")
    rep.add_argument("--out", help="output directory (default reproduce/); replaced atomically")
    _common(rep)
    rep.set_defaults(func=cmd_reproduce)
