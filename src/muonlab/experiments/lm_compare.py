"""``muonlab run lm-compare``: work D's optimizer ranking (docs/math.md §5.3) on a small GPT, plus AdamW, Muon, PolarGrad.

Every optimizer trains the same model on the same batches (equal tokens) for each lr of a short sweep around its
default (``DEFAULT_LR`` × ``LR_GRID``); its best run by final validation loss represents it. Written under
``args.out``: ``results.json`` (every run), ``table.md`` (best validation loss per optimizer, our rank next to work
D's, steps to reach AdamW's final validation loss), ``curves.png`` (validation curves of the best runs).
"""

from __future__ import annotations

import json
import math
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

# docs/math.md §5.3: work D (arXiv 2602.04669), GPT-2 124M on OpenWebText, best final validation loss (lr).
WORK_D = {
    "adams": (2.870, 1e-2), "adam": (2.871, 4e-3), "adamq": (2.872, 2e-2), "msgdq": (2.876, 4e-2),
    "adamz": (2.879, 7e-3), "msgdz": (2.887, 7e-3), "msgds": (2.895, 2e-1), "msgd": (3.092, 5.0),
}
DEFAULT_OPTIMIZERS = ("adamw", "muon", "polargrad", "msgd", "msgds", "msgdq", "msgdz", "adam", "adams", "adamq", "adamz")
LR_GRID = (0.5, 1.0, 2.0)
LABELS = {"msgd": "mSGD", "msgds": "mSGDS", "msgdq": "mSGDQ", "msgdz": "mSGDZ", "adam": "Adam", "adams": "AdamS",
          "adamq": "AdamQ", "adamz": "AdamZ", "adamw": "AdamW", "muon": "Muon", "polargrad": "PolarGrad"}


def settings(args) -> dict:
    quick = bool(getattr(args, "quick", False))
    steps = getattr(args, "steps", None) or (40 if quick else 300)
    return dict(
        model=getattr(args, "model", None) or ("micro" if quick else "tiny"),
        steps=int(steps),
        batch_size=8 if quick else 16,
        block_size=64 if quick else 128,
        eval_every=max(1, int(steps) // (4 if quick else 20)),
        eval_batches=4 if quick else 8,
        lr_grid=tuple(getattr(args, "lr_grid", None) or ((1.0,) if quick else LR_GRID)),
        seed=int(getattr(args, "seed", 0) or 0),
        data=getattr(args, "data", None),
        workers=int(getattr(args, "workers", None) or (2 if (os.cpu_count() or 1) >= 2 else 1)),
    )


def parse_optimizers(value) -> list[str]:
    from muonlab.tasks.lm.train import DEFAULT_LR

    if not value:
        return list(DEFAULT_OPTIMIZERS)
    names = [n.strip().lower() for n in (value.split(",") if isinstance(value, str) else value) if n.strip()]
    unknown = [n for n in names if n not in DEFAULT_LR]
    if unknown:
        raise ValueError(f"--optimizers: unknown {unknown}; expected names from {sorted(DEFAULT_LR)}")
    return names


def _one_run(job: dict) -> dict:
    from muonlab.tasks.lm.train import TrainConfig, train

    cfg = TrainConfig(**job)
    res = train(cfg)
    keep = ("peak_lr", "final_val_loss", "best_val_loss", "val_steps", "val_losses", "train_steps", "train_losses",
            "tokens_per_s", "tokens_seen", "diverged", "steps_done")
    return {"optimizer": cfg.optimizer, **{k: res[k] for k in keep}}


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


def run(args) -> dict:
    import torch

    from muonlab.tasks.lm.data import prepare_data
    from muonlab.tasks.lm.train import DEFAULT_LR, write_json

    s = settings(args)
    names = parse_optimizers(getattr(args, "optimizers", None))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    token_data = prepare_data(s["data"], "byte")  # tokenize once, before the workers start
    token_data.check_fits(s["batch_size"], s["block_size"])
    jobs = []
    for name in names:
        for mult in s["lr_grid"]:
            lr = DEFAULT_LR[name] * mult
            run_dir = out / "runs" / f"{name}_lr{lr:.3g}"
            jobs.append(dict(data=s["data"], model=s["model"], block_size=s["block_size"], batch_size=s["batch_size"],
                             steps=s["steps"], eval_every=s["eval_every"], eval_batches=s["eval_batches"],
                             optimizer=name, lr=lr, seed=s["seed"], record_logits=False, progress=False,
                             threads=1, ckpt_every=10**9, out=str(run_dir),
                             resume=(run_dir / "checkpoint.pt").exists()))
    print(f"lm-compare: {len(jobs)} runs ({len(names)} optimizers x {len(s['lr_grid'])} lrs), "
          f"{s['model']} model, {s['steps']} steps of {s['batch_size']}x{s['block_size']} tokens, {s['workers']} workers",
          flush=True)
    from tqdm import tqdm

    show_bar = getattr(args, "progress", True)  # --no-progress silences the bar
    runs = []
    if s["workers"] > 1:
        import multiprocessing as mp

        with ProcessPoolExecutor(s["workers"], mp_context=mp.get_context("spawn")) as pool:
            for r in tqdm(pool.map(_one_run, jobs), total=len(jobs), desc="lm-compare", disable=not show_bar):
                runs.append(r)
    else:
        torch.set_num_threads(1)
        for job in tqdm(jobs, desc="lm-compare", disable=not show_bar):
            runs.append(_one_run(job))

    def score(r):
        v = r["final_val_loss"]
        return v if (v is not None and math.isfinite(v) and not r["diverged"]) else math.inf

    best = {}
    for r in runs:
        if r["optimizer"] not in best or score(r) < score(best[r["optimizer"]]):
            best[r["optimizer"]] = r
    adamw_target = score(best["adamw"]) if "adamw" in best else None
    table = []
    for name, r in sorted(best.items(), key=lambda kv: score(kv[1])):
        row = {"optimizer": name, "best_lr": r["peak_lr"], "final_val_loss": None if score(r) == math.inf else score(r),
               "lr_at_grid_edge": r["peak_lr"] in (DEFAULT_LR[name] * min(s["lr_grid"]), DEFAULT_LR[name] * max(s["lr_grid"]))
               and len(s["lr_grid"]) > 1,
               "tokens_per_s": r["tokens_per_s"]}
        if adamw_target is not None and math.isfinite(adamw_target):
            reach = steps_to_reach(r["val_steps"], r["val_losses"], adamw_target)
            row["steps_to_adamw_final"] = reach
            row["step_ratio_vs_adamw"] = None if reach is None else reach / s["steps"]
        table.append(row)
    ours_d = [row["optimizer"] for row in table if row["optimizer"] in WORK_D and row["final_val_loss"] is not None]
    theirs = sorted(ours_d, key=lambda n: WORK_D[n][0])
    for row in table:
        if row["optimizer"] in ours_d:
            row["rank_ours_among_D"] = ours_d.index(row["optimizer"]) + 1
            row["rank_work_D"] = theirs.index(row["optimizer"]) + 1
            row["work_D_val_loss"], row["work_D_lr"] = WORK_D[row["optimizer"]]
    spearman = _spearman([r["rank_ours_among_D"] for r in table if "rank_work_D" in r],
                         [r["rank_work_D"] for r in table if "rank_work_D" in r])
    summary = {"experiment": "lm-compare", "settings": s, "optimizers": names, "table": table,
               "spearman_rank_vs_work_D": spearman, "runs": runs, "plots": ["curves.png"]}
    write_json(out / "results.json", summary)
    (out / "table.md").write_text(markdown_table(table, s, spearman))
    plot_curves(best, out / "curves.png", adamw_target)
    print((out / "table.md").read_text())
    return json.loads((out / "results.json").read_text())  # JSON-clean (non-finite -> null)


def _spearman(a: list[int], b: list[int]) -> float | None:
    n = len(a)
    if n < 2:
        return None
    d2 = sum((x - y) ** 2 for x, y in zip(a, b))
    return 1.0 - 6.0 * d2 / (n * (n * n - 1))


def markdown_table(table: list[dict], s: dict, spearman) -> str:
    lines = [f"Model `{s['model']}`, {s['steps']} steps x {s['batch_size']}x{s['block_size']} tokens, "
             f"lr grid x{list(s['lr_grid'])} around each default, seed {s['seed']}.", "",
             "| optimizer | best lr | final val loss | steps to AdamW's final (ratio) | our rank (D's 8) | work D rank | work D loss (lr) |",
             "|---|---|---|---|---|---|---|"]
    for r in table:
        loss = "diverged" if r["final_val_loss"] is None else f"{r['final_val_loss']:.4f}"
        edge = " (grid edge)" if r["lr_at_grid_edge"] else ""
        reach = r.get("steps_to_adamw_final")
        reach_s = "—" if reach is None else f"{reach:.0f} ({r['step_ratio_vs_adamw']:.2f}x)"
        d = (f"{r['work_D_val_loss']:.3f} ({r['work_D_lr']:g})" if "work_D_val_loss" in r else "—")
        lines.append(f"| {LABELS.get(r['optimizer'], r['optimizer'])} | {r['best_lr']:.3g}{edge} | {loss} | {reach_s} | "
                     f"{r.get('rank_ours_among_D', '—')} | {r.get('rank_work_D', '—')} | {d} |")
    if spearman is not None:
        lines += ["", f"Spearman rank correlation with work D over the shared optimizers: {spearman:.2f}"]
    return "\n".join(lines) + "\n"


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
