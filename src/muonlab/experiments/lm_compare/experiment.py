"""``muonlab run lm-compare`` end to end: options → settings → sweep → table, plot and results; or the replay of a
finished sweep (the report's lm section)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from muonlab.experiments.lm_compare.options import Options, Settings, command, parse_optimizers
from muonlab.experiments.lm_compare.plots import plot_curves
from muonlab.experiments.lm_compare.sweep import best_run, measure_step_costs, run_dir_name, sweep
from muonlab.experiments.lm_compare.table import build_table, markdown_table, spearman


def committed_results(root: Path) -> Path | None:
    """The most complete finished lm-compare result in the folders of ``root`` (e.g. a checkout's benchmarks/lm/):
    most optimizers, then CUDA over CPU, then most tokens per run. None when there is none."""
    found = []
    for path in sorted(root.glob("*/results.json")) if root.is_dir() else []:
        try:
            payload = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if payload.get("experiment") != "lm-compare" or not payload.get("table"):
            continue
        st = payload.get("settings", {})
        tokens = st.get("steps", 0) * st.get("batch_size", 0) * st.get("block_size", 0)
        found.append(((len(payload["table"]), str(st.get("device", "cpu")).startswith("cuda"), tokens), path.parent))
    return max(found, key=lambda f: f[0])[1] if found else None


def replay(source: Path, out: Path) -> dict:
    """Copy a finished sweep's results.json, table.md and curves.png into ``out`` (the report's lm section)."""
    payload = json.loads((source / "results.json").read_text())
    for name in ("table.md", "curves.png"):
        if (source / name).exists():
            shutil.copyfile(source / name, out / name)
    payload["replayed_from"] = str(source)
    return payload


def run(options) -> dict:
    """Run the sweep of ``options`` (:class:`Options`, or the registry's argparse Namespace) into ``options.out``:
    table.md, curves.png and the run folders; returns the results payload (JSON-clean) that the registry writes
    as results.json."""
    from muonlab.files import json_safe
    from muonlab.tasks.lm.data import prepare_data

    if not isinstance(options, Options):
        options = Options.from_namespace(options)
    out = Path(options.out)
    if options.from_results:
        out.mkdir(parents=True, exist_ok=True)
        return replay(Path(options.from_results), out)
    settings = Settings.from_options(options.check())
    names = parse_optimizers(options.optimizers)
    out.mkdir(parents=True, exist_ok=True)
    # Run folders: beside the final output when the CLI says where that is (they survive a crash and are reused by
    # the same command), else inside the output.
    runs_dir = Path(options.runs_dir or out / "runs")
    runs_dir.mkdir(parents=True, exist_ok=True)
    token_data = prepare_data(settings.data, "byte")  # tokenize once, before the workers start
    token_data.check_fits(settings.batch_size, settings.block_size)
    print(f"lm-compare: {len(names)} optimizers x {len(settings.lr_grid)} lrs (+ extensions), {settings.model} model, "
          f"{settings.steps} steps of {settings.batch_size}x{settings.block_size} tokens on {settings.device}, "
          f"{settings.jobs} at once; runs in {runs_dir}", flush=True)
    start = time.perf_counter()
    runs, extended = sweep(names, settings, runs_dir, progress=options.progress)
    wall = time.perf_counter() - start
    used = {run_dir_name(r["optimizer"], r["peak_lr"]) for r in runs}
    for stale in runs_dir.iterdir():  # folders of earlier sweeps with other optimizers or lrs
        if stale.name not in used:
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    if runs_dir.resolve() != (out / "runs").resolve():
        shutil.rmtree(out / "runs", ignore_errors=True)
        shutil.move(str(runs_dir), str(out / "runs"))  # the run summaries go with the results
    step_cost = None
    if settings.step_timing_steps:
        step_cost = measure_step_costs(names, settings, token_data, steps=settings.step_timing_steps)
    table = build_table(runs, extended, step_cost)
    rho = spearman([r["rank_ours_among_D"] for r in table if "rank_work_D" in r],
                   [r["rank_work_D"] for r in table if "rank_work_D" in r])
    best = {r["optimizer"]: best_run([x for x in runs if x["optimizer"] == r["optimizer"]]) for r in table}
    target = next((r["final_val_loss"] for r in table if r["optimizer"] == "adamw"), None)
    summary = {"experiment": "lm-compare", "command": command(settings, names), "settings": settings.to_dict(),
               "optimizers": names, "table": table, "spearman_rank_vs_work_D": rho, "step_cost_s": step_cost,
               "wall_s": wall, "runs": runs, "plots": ["curves.png"]}
    (out / "table.md").write_text(markdown_table(table, settings, rho))
    plot_curves({n: b for n, b in best.items() if b is not None}, out / "curves.png", target)
    print((out / "table.md").read_text())
    return json_safe(summary)
