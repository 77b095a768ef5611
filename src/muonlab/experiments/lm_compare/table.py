"""lm-compare's table: per optimizer its best run, the steps and training time to reach tuned AdamW's final
validation loss (with the ratios to AdamW's), and our rank among work D's eight next to theirs; as rows and as
Markdown.

Time to the target = the interpolated step at which the validation curve first reaches it × the run's mean
training time per step (``train_time_s / steps``: forward, backward and optimizer step, evaluation excluded), or the
interleaved measurement of :func:`~muonlab.experiments.lm_compare.sweep.measure_step_costs` where given.
"""

from __future__ import annotations

import math

from muonlab.experiments.lm_compare.options import Settings
from muonlab.experiments.lm_compare.sweep import best_run, edge_of, score

# docs/math.md §5.3: work D (arXiv 2602.04669), GPT-2 124M on OpenWebText, best final validation loss (lr).
WORK_D = {
    "adams": (2.870, 1e-2), "adam": (2.871, 4e-3), "adamq": (2.872, 2e-2), "msgdq": (2.876, 4e-2),
    "adamz": (2.879, 7e-3), "msgdz": (2.887, 7e-3), "msgds": (2.895, 2e-1), "msgd": (3.092, 5.0),
}
LABELS = {"msgd": "mSGD", "msgds": "mSGDS", "msgdq": "mSGDQ", "msgdz": "mSGDZ", "adam": "Adam", "adams": "AdamS",
          "adamq": "AdamQ", "adamz": "AdamZ", "adamw": "AdamW", "muon": "Muon", "polargrad": "PolarGrad",
          "normuon": "NorMuon", "muon_wd": "Muon wd 0.1", "muon_cwd": "Muon cautious wd 0.1"}



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


def spearman(a: list[int], b: list[int]) -> float | None:
    n = len(a)
    if n < 2:
        return None
    d2 = sum((x - y) ** 2 for x, y in zip(a, b))
    return 1.0 - 6.0 * d2 / (n * (n * n - 1))


def _fmt_time(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"


def markdown_table(table: list[dict], settings: Settings, rho: float | None) -> str:
    grid = ", ".join(f"{m:g}" for m in settings.lr_grid)
    lines = [f"Model `{settings.model}`, {settings.steps} steps x {settings.batch_size}x{settings.block_size} tokens, "
             f"device {settings.device}{' (compiled)' if settings.compile else ''}, {settings.jobs} run(s) at once, torch "
             f"{settings.torch}, seed {settings.seed}. lr grid x[{grid}] around each default, extended x2 / ÷2 "
             f"while the best is at an edge (at most {settings.max_extensions} times per side).", "",
             "Time = training time (forward, backward, step; no evaluation) to reach tuned AdamW's final validation "
             "loss: interpolated step x time per step; "
             + (f"ms/step: median of {settings.step_timing_steps} steps with all optimizers taking turns in one "
                "process (same machine load for all; each run's own mean, which carries the load of its moment, is in "
                "results.json)." if settings.step_timing_steps else
                "ms/step: the run's own mean." + (" Runs shared the device." if settings.jobs > 1 else "")), "",
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
    if rho is not None:
        lines += ["", f"Spearman rank correlation with work D over the shared optimizers: {rho:.2f}"]
    still = [LABELS.get(r["optimizer"], r["optimizer"]) for r in table if r.get("lr_at_grid_edge")]
    if still:
        lines += ["", f"Best lr still at a grid edge (extension limit reached): {', '.join(still)}."]
    return "\n".join(lines) + "\n"

