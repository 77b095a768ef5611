"""lm-compare's sweep: every optimizer over its lr grid, the grid extended while its best lies at an edge.

Each run lives in ``runs/OPTIMIZER_lrLR/`` of the output: a run killed midway resumes from its checkpoint, a finished
one is reused (its ``summary.json``) when the same command runs again. ``jobs`` runs go at once (processes; on CPU one
torch thread each, on CUDA sharing the one GPU).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path

from muonlab.experiments.lm_compare.options import Settings, default_lr, train_settings

# Fields of a run kept in results.json (and in each run's summary.json).
KEEP = ("peak_lr", "final_val_loss", "best_val_loss", "val_steps", "val_losses", "tokens_per_s", "tokens_per_s_steady",
        "tokens_seen", "diverged", "steps_done", "train_time_s")



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
    from muonlab.tasks.lm.checkpoint import CHECKPOINT_NAME
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
    if out.exists() and not (out / CHECKPOINT_NAME).exists():
        shutil.rmtree(out)                  # leftovers of a run with other settings
    cfg.resume = (out / CHECKPOINT_NAME).exists()
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


def sweep(names: list[str], settings: Settings, runs_dir: Path, run_fn=_one_run, progress: bool = True) -> tuple[list, dict]:
    """Run every optimizer over its lr grid, extending a grid whenever its best lies at an edge.

    An optimizer's next lr is planned as soon as all of its runs so far have finished, so the pool stays busy.
    Returns (all runs, {optimizer: extensions done per side})."""

    def job(name: str, lr: float) -> dict:
        cuda = settings.device.startswith("cuda")
        return dict(data=settings.data, model=settings.model, block_size=settings.block_size,
                    batch_size=settings.batch_size, steps=settings.steps, eval_every=settings.eval_every,
                    eval_batches=settings.eval_batches, **train_settings(name), lr=lr, row=name, seed=settings.seed,
                    record_logits=False, progress=False, device=settings.device, threads=None if cuda else 1,
                    compile=settings.compile, ckpt_every=max(1, settings.steps // 5),
                    out=str(runs_dir / run_dir_name(name, lr)))

    runs: dict[str, list[dict]] = {n: [] for n in names}
    extended: dict[str, dict[str, int]] = {n: {} for n in names}
    pending: dict[Future, str] = {}
    if settings.jobs > 1:
        import multiprocessing as mp

        pool = ProcessPoolExecutor(settings.jobs, mp_context=mp.get_context("spawn"))
    else:
        pool = _Inline()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(names) * len(settings.lr_grid), desc="lm-compare", unit="run", dynamic_ncols=True)
    # At most `jobs` runs in flight: an interruption stops the sweep after the runs under way.
    backlog = [(n, default_lr(n) * m) for n in names for m in settings.lr_grid]

    def fill():
        while backlog and len(pending) < settings.jobs:
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
                    lr = extension_lr(runs[name], extended[name], settings.max_extensions)
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



def measure_step_costs(names: list[str], settings: Settings, token_data, steps: int = 12, warmup: int = 2) -> dict[str, float]:
    """Seconds per training step of each optimizer, measured with all of them taking turns step by step in this
    process (one thread on CPU), so that every optimizer sees the same machine load; median after ``warmup``.

    On a shared CPU the runs' own step times swing with the load of their moment, so runs doing the same arithmetic
    disagree; these are what the time-to-target columns use there."""
    import statistics

    import torch

    from muonlab.tasks.lm.data import BatchSampler
    from muonlab.tasks.lm.train import TrainConfig, build_model, build_optimizer, train_step

    device = torch.device(settings.device)
    previous = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        sides = {}
        for name in names:
            cfg = TrainConfig(data=settings.data, model=settings.model, block_size=settings.block_size,
                              batch_size=settings.batch_size, **train_settings(name), seed=settings.seed,
                              record_logits=False, device=settings.device)
            model = build_model(cfg, token_data.vocab_size).to(device)
            sides[name] = (cfg, model, build_optimizer(cfg, model), [])
        sampler = BatchSampler(token_data.train, settings.batch_size, settings.block_size, seed=settings.seed)
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

