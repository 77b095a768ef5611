"""``muonlab run lm-compare``: work D's optimizer ranking (docs/math.md §5.3) on a small GPT, plus AdamW, Muon, PolarGrad.

Every optimizer trains the same model on the same batches (equal tokens) for each lr of a sweep around its default
(``DEFAULT_LR`` × ``LR_GRID``); its best run by final validation loss represents it. The sweep *brackets* the best:
when an optimizer's best lr is the smallest (largest) it tried, the grid is extended on that side by ÷2 (×2), up to
``max_extensions`` times per side; a best still at an edge after that is marked in the table.

``jobs`` runs go at once (processes; on CPU one torch thread each, on CUDA sharing the one GPU). Each run lives in
``runs/OPTIMIZER_lrLR/`` of the output: a run killed midway resumes from its checkpoint, a finished one is reused
(its ``summary.json``) when the same command runs again. Written under ``args.out``: ``results.json`` (every run,
with its wall-clock and training time), ``table.md`` (per optimizer: best final validation loss, steps and training
time to reach tuned AdamW's final validation loss with the ratios to AdamW, our rank next to work D's),
``curves.png`` (validation curves of the best runs).

Time to the target = the interpolated step at which the validation curve first reaches it × the run's mean
training time per step (``train_time_s / steps``: forward, backward and optimizer step, evaluation excluded).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path

# docs/math.md §5.3: work D (arXiv 2602.04669), GPT-2 124M on OpenWebText, best final validation loss (lr).
WORK_D = {
    "adams": (2.870, 1e-2), "adam": (2.871, 4e-3), "adamq": (2.872, 2e-2), "msgdq": (2.876, 4e-2),
    "adamz": (2.879, 7e-3), "msgdz": (2.887, 7e-3), "msgds": (2.895, 2e-1), "msgd": (3.092, 5.0),
}
# The seeds' optimizers (AdamW, Muon, PolarGrad, work D's eight), then NorMuon (beyond the seeds: arXiv 2510.05491).
DEFAULT_OPTIMIZERS = ("adamw", "muon", "polargrad", "msgd", "msgds", "msgdq", "msgdz", "adam", "adams", "adamq", "adamz",
                      "normuon", "muon_wd", "muon_cwd")
# Rows that are an optimizer with other trainer settings: cautious weight decay (arXiv 2510.12402) only differs from
# plain decay when there is decay, and the sweep trains with none, so it is compared with Muon at decay 0.1 both ways.
VARIANTS = {
    "muon_wd": {"optimizer": "muon", "weight_decay": 0.1},
    "muon_cwd": {"optimizer": "muon", "weight_decay": 0.1, "cautious_wd": True},
}
LR_GRID = (0.5, 1.0, 2.0)
MAX_EXTENSIONS = 3  # per side: at most 8x beyond the initial grid
LABELS = {"msgd": "mSGD", "msgds": "mSGDS", "msgdq": "mSGDQ", "msgdz": "mSGDZ", "adam": "Adam", "adams": "AdamS",
          "adamq": "AdamQ", "adamz": "AdamZ", "adamw": "AdamW", "muon": "Muon", "polargrad": "PolarGrad",
          "normuon": "NorMuon", "muon_wd": "Muon wd 0.1", "muon_cwd": "Muon cautious wd 0.1"}


def train_settings(name: str) -> dict:
    """The trainer settings of row ``name``: its optimizer, plus a variant's overrides (:data:`VARIANTS`)."""
    return dict(VARIANTS.get(name, {"optimizer": name}))


def default_lr(name: str) -> float:
    from muonlab.tasks.lm.train import DEFAULT_LR

    return DEFAULT_LR[train_settings(name)["optimizer"]]
# Sequences x tokens per step for each model preset (the GPU runs: small 32x256, gpt2 16x1024).
BATCH = {"micro": (8, 64), "tiny": (16, 128), "small": (32, 256), "medium": (16, 512), "gpt2": (16, 1024)}
# Fields of a run kept in results.json (and in each run's summary.json).
KEEP = ("peak_lr", "final_val_loss", "best_val_loss", "val_steps", "val_losses", "tokens_per_s", "tokens_per_s_steady",
        "tokens_seen", "diverged", "steps_done", "train_time_s")


class LMCompareError(ValueError):
    """A bad lm-compare option; the message is one line naming the option."""


# ---------------------------------------------------------------------------------------------- options
def check_options(args) -> None:
    """Validate --device, --model, --steps, --jobs before anything runs (one-line LMCompareError)."""
    from muonlab.errors import device_problem
    from muonlab.tasks.lm.model import PRESETS

    model = getattr(args, "model", None)
    if model is not None and model not in PRESETS:
        raise LMCompareError(f"--model: unknown model {model!r}; expected one of {', '.join(PRESETS)}")
    steps = getattr(args, "steps", None)
    if steps is not None and (not isinstance(steps, int) or steps < 1):
        raise LMCompareError(f"--steps must be a positive integer, got {steps}")
    jobs = getattr(args, "jobs", None)
    if jobs is not None and (not isinstance(jobs, int) or jobs < 1):
        raise LMCompareError(f"--jobs must be a positive integer (runs at once), got {jobs}")
    problem = device_problem(getattr(args, "device", None))
    if problem:
        raise LMCompareError(problem)


def settings(args) -> dict:
    import torch

    quick = bool(getattr(args, "quick", False))
    model = getattr(args, "model", None) or ("micro" if quick else "tiny")
    steps = int(getattr(args, "steps", None) or (40 if quick else 300))
    device = getattr(args, "device", None) or "auto"
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    batch_size, block_size = (8, 64) if quick else BATCH.get(model, (16, 128))
    lr_grid = tuple(getattr(args, "lr_grid", None) or ((1.0,) if quick else LR_GRID))
    default_jobs = min(2, os.cpu_count() or 1) if device == "cpu" else 1
    return dict(
        model=model,
        steps=steps,
        batch_size=batch_size,
        block_size=block_size,
        eval_every=max(1, steps // (4 if quick else 20)),
        eval_batches=4 if quick else 8,
        lr_grid=lr_grid,
        # a one-lr grid is a fixed-lr comparison, not a sweep: nothing to bracket
        max_extensions=int(getattr(args, "max_extensions", None) if getattr(args, "max_extensions", None) is not None
                           else (MAX_EXTENSIONS if len(lr_grid) > 1 else 0)),
        seed=int(getattr(args, "seed", 0) or 0),
        data=getattr(args, "data", None),
        device=device,
        jobs=int(getattr(args, "jobs", None) or default_jobs),
        compile=bool(getattr(args, "compile", False)),
        # CPU: time per step from all optimizers taking turns in one process (see measure_step_costs)
        step_timing_steps=12 if device == "cpu" else 0,
        torch=torch.__version__,
    )


def parse_optimizers(value) -> list[str]:
    from muonlab.tasks.lm.train import DEFAULT_LR

    if not value:
        return list(DEFAULT_OPTIMIZERS)
    names = [n.strip().lower() for n in (value.split(",") if isinstance(value, str) else value) if n.strip()]
    unknown = [n for n in names if n not in DEFAULT_LR and n not in VARIANTS]
    if unknown:
        raise LMCompareError(f"--optimizers: unknown {unknown}; expected names from {sorted(DEFAULT_LR) + sorted(VARIANTS)}")
    return names


# ---------------------------------------------------------------------------------------------- lr grids
def score(run: dict) -> float:
    """Final validation loss; a diverged or unfinished run scores +inf."""
    v = run.get("final_val_loss")
    return v if (v is not None and math.isfinite(v) and not run.get("diverged")) else math.inf


def best_run(runs: list[dict]) -> dict | None:
    """Lowest final validation loss; ties go to the smaller lr (the safer one). None if every run diverged."""
    finite = [r for r in runs if math.isfinite(score(r))]
    return min(finite, key=lambda r: (score(r), r["peak_lr"])) if finite else None


def edge_of(runs: list[dict]) -> str | None:
    """'low' / 'high' when the best lr is the smallest / largest tried (or every run diverged: 'low'), else None."""
    lrs = sorted(r["peak_lr"] for r in runs)
    b = best_run(runs)
    if b is None:
        return "low"
    if len(lrs) < 2:
        return None
    if b["peak_lr"] == lrs[0]:
        return "low"
    if b["peak_lr"] == lrs[-1]:
        return "high"
    return None


def extension_lr(runs: list[dict], extended: dict[str, int], max_extensions: int) -> float | None:
    """The next lr to try so that the grid brackets the best, or None when it does (or the limit is reached).

    ``extended`` counts the extensions done so far per side ('low', 'high') and is updated when one is proposed."""
    side = edge_of(runs)
    if side is None or extended.get(side, 0) >= max_extensions:
        return None
    lrs = [r["peak_lr"] for r in runs]
    extended[side] = extended.get(side, 0) + 1
    return min(lrs) / 2.0 if side == "low" else max(lrs) * 2.0


# ---------------------------------------------------------------------------------------------- one run
def run_dir_name(optimizer: str, lr: float) -> str:
    return f"{optimizer}_lr{lr:.4g}"


def _one_run(job: dict) -> dict:
    """Train one (optimizer, lr) in ``job['out']``: reuse a finished run with the same configuration, resume an
    unfinished one from its checkpoint, start afresh otherwise. Leaves only ``summary.json`` in the folder."""
    from muonlab.tasks.lm.train import TrainConfig, TrainError, train

    job = dict(job)
    row = job.pop("row", None)  # the table row: the optimizer's name, or a variant's (VARIANTS)
    cfg = TrainConfig(**job)
    out = Path(cfg.out)
    summary_path = out / "summary.json"
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
        # same trajectory, and the same device and compile flag (they change the timing)
        if summary.get("config") == cfg.trajectory_dict() and summary.get("timing") == [cfg.device, cfg.compile]:
            return dict(summary["run"], reused=True)
    if out.exists() and not (out / "checkpoint.pt").exists():
        shutil.rmtree(out)                  # leftovers of a run with other settings
    cfg.resume = (out / "checkpoint.pt").exists()
    start = time.perf_counter()
    try:
        res = train(cfg)
    except TrainError as err:
        if not cfg.resume:
            raise
        print(f"lm-compare: {out.name}: cannot resume ({err}); starting afresh", flush=True)
        shutil.rmtree(out)
        cfg.resume = False
        res = train(cfg)
    run = {"optimizer": row or cfg.optimizer, **{k: res.get(k) for k in KEEP},
           "wall_s": time.perf_counter() - start, "resumed": cfg.resume}
    if res.get("interrupted"):
        return dict(run, interrupted=True)
    from muonlab.files import write_json

    write_json(summary_path, {"config": cfg.trajectory_dict(), "timing": [cfg.device, cfg.compile], "run": run})
    for f in out.iterdir():                 # the checkpoint and plots are not needed once the summary exists
        if f != summary_path:
            shutil.rmtree(f) if f.is_dir() else f.unlink()
    return dict(run, reused=False)


class _Inline:
    """A one-worker 'pool' that runs each job in this process when it is submitted."""

    def submit(self, fn, *args) -> Future:
        fut: Future = Future()
        try:
            fut.set_result(fn(*args))
        except BaseException as err:  # noqa: BLE001 - handed to the caller through the future
            fut.set_exception(err)
        return fut

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def sweep(names: list[str], s: dict, runs_dir: Path, run_fn=_one_run, progress: bool = True) -> tuple[list, dict]:
    """Run every optimizer over its lr grid, extending a grid whenever its best lies at an edge.

    An optimizer's next lr is planned as soon as all of its runs so far have finished, so the pool stays busy.
    Returns (all runs, {optimizer: extensions done per side})."""

    def job(name: str, lr: float) -> dict:
        cuda = s["device"].startswith("cuda")
        steps = s["steps"]
        return dict(data=s["data"], model=s["model"], block_size=s["block_size"], batch_size=s["batch_size"],
                    steps=steps, eval_every=s["eval_every"], eval_batches=s["eval_batches"], **train_settings(name), lr=lr,
                    row=name,
                    seed=s["seed"], record_logits=False, progress=False, device=s["device"],
                    threads=None if cuda else 1, compile=s["compile"], ckpt_every=max(1, steps // 5),
                    out=str(runs_dir / run_dir_name(name, lr)))

    runs: dict[str, list[dict]] = {n: [] for n in names}
    extended: dict[str, dict[str, int]] = {n: {} for n in names}
    pending: dict[Future, str] = {}
    if s["jobs"] > 1:
        import multiprocessing as mp

        pool = ProcessPoolExecutor(s["jobs"], mp_context=mp.get_context("spawn"))
    else:
        pool = _Inline()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(names) * len(s["lr_grid"]), desc="lm-compare", unit="run", dynamic_ncols=True)
    # At most `jobs` runs in flight: an interruption stops the sweep after the runs under way.
    backlog = [(n, default_lr(n) * m) for n in names for m in s["lr_grid"]]

    def fill():
        while backlog and len(pending) < s["jobs"]:
            name, lr = backlog.pop(0)
            pending[pool.submit(run_fn, job(name, lr))] = name

    with pool:
        fill()
        while pending:
            done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
            for fut in done:
                name = pending.pop(fut)
                r = fut.result()
                if r.get("interrupted"):
                    raise KeyboardInterrupt(f"lm-compare: run {name} lr {r['peak_lr']:g} interrupted")
                runs[name].append(r)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix_str(f"{name} lr {r['peak_lr']:.3g}: {score(r):.4f}", refresh=False)
                if name not in pending.values() and all(n != name for n, _ in backlog):
                    # all of this optimizer's runs are in: bracket its best
                    lr = extension_lr(runs[name], extended[name], s["max_extensions"])
                    if lr is not None:
                        if bar is not None:
                            bar.total += 1
                            bar.refresh()
                        backlog.append((name, lr))
            fill()
    if bar is not None:
        bar.close()
    ordered = [r for n in names for r in sorted(runs[n], key=lambda r: r["peak_lr"])]
    return ordered, extended


# ---------------------------------------------------------------------------------------------- the table
def steps_to_reach(val_steps: list[int], val_losses: list[float], target: float) -> float | None:
    """First step at which the validation curve reaches `target`, linearly interpolated between evaluations."""
    prev_s, prev_v = 0, None
    for s, v in zip(val_steps, val_losses):
        if v is not None and math.isfinite(v) and v <= target:
            if prev_v is None or prev_v == v:
                return float(s)
            return prev_s + (s - prev_s) * (prev_v - target) / (prev_v - v)
        prev_s, prev_v = s, v
    return None


def seconds_per_step(run: dict) -> float | None:
    t, n = run.get("train_time_s"), run.get("steps_done")
    return t / n if t and n else None


def measure_step_costs(names: list[str], s: dict, token_data, steps: int = 12, warmup: int = 2) -> dict[str, float]:
    """Seconds per training step of each optimizer, measured with all of them taking turns step by step in this
    process (one thread on CPU), so that every optimizer sees the same machine load; median after ``warmup``.

    On a shared CPU the runs' own step times swing with the load (2x between runs doing the same arithmetic);
    these are what the time-to-target columns use there."""
    import statistics

    import torch

    from muonlab.tasks.lm.data import BatchSampler
    from muonlab.tasks.lm.train import TrainConfig, build_model, build_optimizer, train_step

    device = torch.device(s["device"])
    previous = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        sides = {}
        for name in names:
            cfg = TrainConfig(data=s["data"], model=s["model"], block_size=s["block_size"], batch_size=s["batch_size"],
                              **train_settings(name), seed=s["seed"], record_logits=False, device=s["device"])
            model = build_model(cfg, token_data.vocab_size).to(device)
            sides[name] = (cfg, model, build_optimizer(cfg, model), [])
        sampler = BatchSampler(token_data.train, s["batch_size"], s["block_size"], seed=s["seed"])
        for step in range(warmup + steps):
            batch = sampler.batch(step)
            for cfg, model, opt, times in sides.values():
                t0 = time.perf_counter()
                train_step(model, opt, batch, cfg, device)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
        return {name: statistics.median(times[warmup:]) for name, (_, _, _, times) in sides.items()}
    finally:
        torch.set_num_threads(previous)


def build_table(runs: list[dict], extended: dict | None = None, step_cost: dict[str, float] | None = None) -> list[dict]:
    """One row per optimizer (best lr first by final validation loss), with steps and training time to reach tuned
    AdamW's final validation loss and their ratios to AdamW's own (its full run). Time per step: ``step_cost`` (see
    measure_step_costs) where given, else the run's own mean."""
    step_cost = step_cost or {}

    def seconds_per_step_of(run: dict) -> float | None:
        return step_cost.get(run["optimizer"]) or seconds_per_step(run)

    by_opt: dict[str, list[dict]] = {}
    for r in runs:
        by_opt.setdefault(r["optimizer"], []).append(r)
    best = {n: best_run(rs) for n, rs in by_opt.items()}
    adamw = best.get("adamw")
    target = score(adamw) if adamw is not None else None
    adamw_steps = adamw["steps_done"] if adamw is not None else None
    adamw_time = adamw_steps * seconds_per_step_of(adamw) if adamw is not None and seconds_per_step_of(adamw) else None
    table = []
    for name, rs in by_opt.items():
        b = best[name]
        lrs = sorted(r["peak_lr"] for r in rs)
        row = {"optimizer": name, "best_lr": None if b is None else b["peak_lr"],
               "final_val_loss": None if b is None else score(b), "lrs_tried": lrs,
               "lr_at_grid_edge": edge_of(rs) if len(rs) > 1 else None,
               "extensions": dict((extended or {}).get(name, {})),
               "s_per_step": None if b is None else seconds_per_step_of(b),
               "s_per_step_run": None if b is None else seconds_per_step(b),
               "tokens_per_s": None if b is None else b.get("tokens_per_s")}
        if b is not None and target is not None:
            reach = steps_to_reach(b["val_steps"], b["val_losses"], target)
            row["steps_to_adamw_final"] = reach
            row["step_ratio_vs_adamw"] = None if reach is None else reach / adamw_steps
            sps = row["s_per_step"]
            row["time_to_adamw_final_s"] = None if reach is None or sps is None else reach * sps
            row["time_ratio_vs_adamw"] = (None if row["time_to_adamw_final_s"] is None or not adamw_time
                                          else row["time_to_adamw_final_s"] / adamw_time)
        table.append(row)
    table.sort(key=lambda row: math.inf if row["final_val_loss"] is None else row["final_val_loss"])
    ours_d = [row["optimizer"] for row in table if row["optimizer"] in WORK_D and row["final_val_loss"] is not None]
    theirs = sorted(ours_d, key=lambda n: WORK_D[n][0])
    for row in table:
        if row["optimizer"] in ours_d:
            row["rank_ours_among_D"] = ours_d.index(row["optimizer"]) + 1
            row["rank_work_D"] = theirs.index(row["optimizer"]) + 1
            row["work_D_val_loss"], row["work_D_lr"] = WORK_D[row["optimizer"]]
    return table


def _spearman(a: list[int], b: list[int]) -> float | None:
    n = len(a)
    if n < 2:
        return None
    d2 = sum((x - y) ** 2 for x, y in zip(a, b))
    return 1.0 - 6.0 * d2 / (n * (n * n - 1))


def _fmt_time(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"


def markdown_table(table: list[dict], s: dict, spearman) -> str:
    grid = ", ".join(f"{m:g}" for m in s["lr_grid"])
    lines = [f"Model `{s['model']}`, {s['steps']} steps x {s['batch_size']}x{s['block_size']} tokens, device "
             f"{s['device']}{' (compiled)' if s.get('compile') else ''}, {s['jobs']} run(s) at once, torch "
             f"{s.get('torch', '?')}, seed {s['seed']}. lr grid x[{grid}] around each default, extended x2 / ÷2 "
             f"while the best is at an edge (at most {s['max_extensions']} times per side).", "",
             "Time = training time (forward, backward, step; no evaluation) to reach tuned AdamW's final validation "
             "loss: interpolated step x time per step; "
             + (f"ms/step: median of {s['step_timing_steps']} steps with all optimizers taking turns in one process "
                "(same machine load for all; each run's own mean, which carries the load of its moment, is in "
                "results.json)." if s.get("step_timing_steps") else
                "ms/step: the run's own mean." + (" Runs shared the device." if s["jobs"] > 1 else "")), "",
             "| optimizer | best lr | lrs tried | final val loss | steps to AdamW's final (ratio) | time to AdamW's final "
             "(ratio) | ms/step | our rank (D's 8) | work D rank | work D loss (lr) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in table:
        loss = "diverged" if r["final_val_loss"] is None else f"{r['final_val_loss']:.4f}"
        edge = f" (at {r['lr_at_grid_edge']} edge)" if r.get("lr_at_grid_edge") else ""
        best_lr = "—" if r["best_lr"] is None else f"{r['best_lr']:.3g}{edge}"
        reach = r.get("steps_to_adamw_final")
        reach_s = "—" if reach is None else f"{reach:.0f} ({r['step_ratio_vs_adamw']:.2f}x)"
        t = r.get("time_to_adamw_final_s")
        time_s = "—" if t is None else (_fmt_time(t) + ("" if r.get("time_ratio_vs_adamw") is None
                                                       else f" ({r['time_ratio_vs_adamw']:.2f}x)"))
        ms = "—" if r.get("s_per_step") is None else f"{1000 * r['s_per_step']:.0f}"
        d = (f"{r['work_D_val_loss']:.3f} ({r['work_D_lr']:g})" if "work_D_val_loss" in r else "—")
        lines.append(f"| {LABELS.get(r['optimizer'], r['optimizer'])} | {best_lr} | {len(r['lrs_tried'])} | {loss} | "
                     f"{reach_s} | {time_s} | {ms} | {r.get('rank_ours_among_D', '—')} | {r.get('rank_work_D', '—')} "
                     f"| {d} |")
    if spearman is not None:
        lines += ["", f"Spearman rank correlation with work D over the shared optimizers: {spearman:.2f}"]
    still = [LABELS.get(r["optimizer"], r["optimizer"]) for r in table if r.get("lr_at_grid_edge")]
    if still:
        lines += ["", f"Best lr still at a grid edge (extension limit reached): {', '.join(still)}."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- the experiment
def command(s: dict, names: list[str]) -> str:
    """The CLI command that reproduces a sweep with settings ``s``."""
    parts = ["muonlab run lm-compare", f"--model {s['model']}", f"--steps {s['steps']}", f"--device {s['device']}",
             f"--jobs {s['jobs']}"]
    if list(names) != list(DEFAULT_OPTIMIZERS):
        parts.append(f"--optimizers {','.join(names)}")
    if s.get("compile"):
        parts.append("--compile")
    if s["seed"]:
        parts.append(f"--seed {s['seed']}")
    if s.get("data"):
        parts.append(f"--data {s['data']}")
    return " ".join(parts)


COMMITTED = Path(__file__).resolve().parents[3] / "benchmarks" / "lm"  # in a source checkout


def committed_results(root: Path | None = None) -> Path | None:
    """The most complete committed lm-compare result under ``root`` (benchmarks/lm/ of a source checkout): most
    optimizers, then CUDA over CPU, then most tokens per run. None when there is none (an installed package)."""
    root = COMMITTED if root is None else root
    found = []
    for path in sorted(root.glob("*/results.json")) if root.is_dir() else []:
        try:
            p = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if p.get("experiment") != "lm-compare" or not p.get("table"):
            continue
        st = p.get("settings", {})
        tokens = st.get("steps", 0) * st.get("batch_size", 0) * st.get("block_size", 0)
        found.append(((len(p["table"]), str(st.get("device", "cpu")).startswith("cuda"), tokens), path.parent))
    return max(found, key=lambda f: f[0])[1] if found else None


def replay(source: Path, out: Path) -> dict:
    """Copy a finished sweep's results.json, table.md and curves.png into ``out`` (the report's lm section)."""
    payload = json.loads((source / "results.json").read_text())
    for name in ("table.md", "curves.png"):
        if (source / name).exists():
            shutil.copyfile(source / name, out / name)
    payload["replayed_from"] = str(source)
    return payload


def run(args) -> dict:
    from muonlab.tasks.lm.data import prepare_data
    from muonlab.files import write_json

    if getattr(args, "from_results", None):
        Path(args.out).mkdir(parents=True, exist_ok=True)
        return replay(Path(args.from_results), Path(args.out))
    check_options(args)
    s = settings(args)
    names = parse_optimizers(getattr(args, "optimizers", None))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # Run folders: beside the final output when the CLI says where that is (they survive a crash and are reused by
    # the same command), else inside args.out.
    runs_dir = Path(getattr(args, "runs_dir", None) or out / "runs")
    runs_dir.mkdir(parents=True, exist_ok=True)
    token_data = prepare_data(s["data"], "byte")  # tokenize once, before the workers start
    token_data.check_fits(s["batch_size"], s["block_size"])
    print(f"lm-compare: {len(names)} optimizers x {len(s['lr_grid'])} lrs (+ extensions), {s['model']} model, "
          f"{s['steps']} steps of {s['batch_size']}x{s['block_size']} tokens on {s['device']}, {s['jobs']} at once; "
          f"runs in {runs_dir}", flush=True)
    start = time.perf_counter()
    runs, extended = sweep(names, s, runs_dir, progress=bool(getattr(args, "progress", True)))
    wall = time.perf_counter() - start
    used = {run_dir_name(r["optimizer"], r["peak_lr"]) for r in runs}
    for stale in runs_dir.iterdir():  # folders of earlier sweeps with other optimizers or lrs
        if stale.name not in used:
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    if runs_dir.resolve() != (out / "runs").resolve():
        shutil.rmtree(out / "runs", ignore_errors=True)
        shutil.move(str(runs_dir), str(out / "runs"))  # the run summaries go with the results
    step_cost = None
    if s["step_timing_steps"]:
        step_cost = measure_step_costs(names, s, token_data, steps=s["step_timing_steps"])
    table = build_table(runs, extended, step_cost)
    spearman = _spearman([r["rank_ours_among_D"] for r in table if "rank_work_D" in r],
                         [r["rank_work_D"] for r in table if "rank_work_D" in r])
    best = {r["optimizer"]: best_run([x for x in runs if x["optimizer"] == r["optimizer"]]) for r in table}
    target = next((r["final_val_loss"] for r in table if r["optimizer"] == "adamw"), None)
    summary = {"experiment": "lm-compare", "command": command(s, names), "settings": s, "optimizers": names,
               "table": table,
               "spearman_rank_vs_work_D": spearman, "step_cost_s": step_cost, "wall_s": wall, "runs": runs, "plots": ["curves.png"]}
    write_json(out / "results.json", summary)
    (out / "table.md").write_text(markdown_table(table, s, spearman))
    plot_curves({n: b for n, b in best.items() if b is not None}, out / "curves.png", target)
    print((out / "table.md").read_text())
    return json.loads((out / "results.json").read_text())  # JSON-clean (non-finite -> null)


def plot_curves(best: dict, path: Path, target, title: str | None = None) -> None:
    """Validation curves of each optimizer's best run: the whole run from step 0 (left) and the final stretch, where
    the optimizers separate, zoomed (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    colors = plt.cm.tab20.colors
    for ax in axes:
        for i, (name, r) in enumerate(best.items()):
            ax.plot(r["val_steps"], r["val_losses"], marker="o", ms=2, color=colors[(2 * i) % 20 + (2 * i) // 20],
                    ls="--" if name.startswith("adam") and name != "adamw" else "-",
                    label=f"{LABELS.get(name, name)} ({r['peak_lr']:.3g})")
        if target is not None and math.isfinite(target):
            ax.axhline(target, color="k", ls="--", lw=0.8, label="AdamW final")
        ax.set_xlabel("step")
        ax.set_ylabel("validation loss (nats/token)")
    axes[0].set_xlim(left=0)  # every run starts from the same initial model's loss at step 0
    axes[0].set_title("whole run (step 0 = the initial model)", fontsize=9)
    finals = [r["val_losses"][-1] for r in best.values()
              if r["val_losses"] and r["val_losses"][-1] is not None and math.isfinite(r["val_losses"][-1])]
    last = max((r["val_steps"][-1] for r in best.values() if r["val_steps"]), default=0)
    if finals and last > 0:
        axes[1].set_xlim(last / 2, last * 1.02)
        axes[1].set_ylim(min(finals) - 0.05, min(max(finals), min(finals) + 1.0) + 0.1)
    axes[1].set_title("second half, zoomed", fontsize=9)
    axes[1].legend(fontsize=7, ncol=2)
    fig.suptitle(title or "lm-compare: validation loss of each optimizer at its best lr (legend: lr); "
                          "same model, batches and tokens", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
