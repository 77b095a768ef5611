"""``muonlab run qk-clip``: max attention logits over training with and without QK-Clip, MHA and MLA (docs/math.md §5.4).

Muon at twice its default lr (logits grow faster under Muon than under Adam) trains the same model on the same
batches four times: {MHA, MLA} × {no clip, QK-Clip at τ}. Unless ``args.tau`` is given, τ is half the largest
logit the unclipped run of the same attention reached, so the clip binds. The curves are the largest per-head
max logit measured after every step (clip applied) on that step's batch. Checks written to ``results.json``:
how many steps end with max logit over τ (beyond rounding: 1e-4 in fp32 on CPU, ``BF16_TOLERANCE`` under the bf16
autocast used on CUDA), and the final validation loss with and without clipping.

Options: ``--quick`` (``micro``, 60 steps), ``--model`` (a preset), ``--steps``, ``--device`` (auto: CUDA if
available), ``--seed``; ``tau`` from Python. At GPU scale: ``muonlab run qk-clip --device cuda --model small --steps
1000`` (batch 32 on CUDA, the preset's context length).
"""

from __future__ import annotations

import math
from pathlib import Path

ATTENTIONS = ("mha", "mla")
LR_MULTIPLIER = 2.0


FP32_TOLERANCE = 1e-4   # relative excess over τ that counts as rounding in an fp32 run


def settings(args) -> dict:
    from muonlab.devices import resolve_device
    from muonlab.tasks.lm.model import preset_problem

    quick = bool(getattr(args, "quick", False))
    steps = getattr(args, "steps", None) or (60 if quick else 300)
    model = getattr(args, "model", None) or ("micro" if quick else "tiny")
    if preset_problem(model):
        raise ValueError(preset_problem(model))
    if int(steps) < 1:
        raise ValueError(f"--steps must be a positive integer, got {steps}")
    device = getattr(args, "device", None) or "auto"
    on_cuda = resolve_device(device).type == "cuda"
    return dict(
        model=model, device=device, precision="bf16 autocast" if on_cuda else "fp32",
        steps=int(steps), batch_size=32 if on_cuda else (8 if quick else 16),
        block_size=None,  # the preset's (micro 64, tiny 128, small 256)
        eval_every=max(1, int(steps) // 4), eval_batches=4 if quick else 8,
        optimizer=(getattr(args, "optimizer", None) or "muon"),
        seed=int(getattr(args, "seed", 0) or 0), data=getattr(args, "data", None),
        tau=getattr(args, "tau", None),
    )


def steps_over(curve: list, tau: float, tolerance: float) -> int:
    """How many steps ended with max logit above τ·(1 + tolerance) (a non-finite value counts as over)."""
    return sum(1 for v in curve if v is None or not math.isfinite(v) or v > tau * (1 + tolerance))


def run(args) -> dict:
    import torch

    from muonlab.files import json_safe
    from muonlab.tasks.lm.checkpoint import CHECKPOINT_NAME
    from muonlab.tasks.lm.data import prepare_data
    from muonlab.tasks.lm.train import DEFAULT_LR, TrainConfig, train

    run_settings = settings(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    token_data = prepare_data(run_settings["data"], "byte")
    torch.set_num_threads(1)
    lr = DEFAULT_LR[run_settings["optimizer"]] * LR_MULTIPLIER

    from muonlab.optim.qkclip import BF16_TOLERANCE

    tolerance = BF16_TOLERANCE if run_settings["precision"] == "bf16 autocast" else FP32_TOLERANCE

    def one(attention: str, tau: float | None) -> dict:
        run_dir = out / "runs" / f"{attention}_{'noclip' if tau is None else f'tau{tau:g}'}"
        trained = {k: run_settings[k] for k in ("data", "model", "block_size", "batch_size", "steps", "eval_every",
                                                 "eval_batches", "optimizer", "seed", "device")}
        cfg = TrainConfig(**trained, attention=attention, lr=lr,
                          qk_clip=tau, record_logits=True, progress=False, threads=1, ckpt_every=10**9,
                          out=str(run_dir), resume=(run_dir / CHECKPOINT_NAME).exists())
        print(f"qk-clip: {attention} {'no clip' if tau is None else f'tau={tau:g}'} ({run_settings['steps']} steps, "
              f"{run_settings['model']}, {run_settings['precision']})", flush=True)
        return train(cfg, token_data=token_data)

    rows = {}
    for attention in ATTENTIONS:
        free = one(attention, None)
        peak = max(free["max_attn_logit_after_step"])
        tau = float(run_settings["tau"]) if run_settings["tau"] else float(f"{0.5 * peak:.3g}")
        clipped = one(attention, tau)
        worst = max(clipped["max_attn_logit_after_step"])
        over = steps_over(clipped["max_attn_logit_after_step"], tau, tolerance)
        rows[attention] = {
            "tau": tau,
            "tolerance": tolerance,
            "peak_logit_no_clip": peak,
            "peak_logit_clip": worst,
            "steps_over_tau_clip": over,
            "steps_over_tau_no_clip": steps_over(free["max_attn_logit_after_step"], tau, tolerance),
            "steps_clip": len(clipped["max_attn_logit_after_step"]),
            "clip_holds_every_step": over == 0,
            "final_val_loss_no_clip": free["final_val_loss"],
            "final_val_loss_clip": clipped["final_val_loss"],
            "curve_no_clip": free["max_attn_logit_after_step"],
            "curve_clip": clipped["max_attn_logit_after_step"],
            "steps": free["train_steps"],
        }
    runs = [{"attention": att, "clip": clip, "tau": r["tau"] if clip else None,
             "peak_logit": r["peak_logit_clip" if clip else "peak_logit_no_clip"],
             "final_val_loss": r["final_val_loss_clip" if clip else "final_val_loss_no_clip"]}
            for att, r in rows.items() for clip in (False, True)]
    summary = {"experiment": "qk-clip", "settings": run_settings, "lr": lr, "results": rows, "runs": runs,
               "plots": ["max_logits.png"]}
    plot(rows, out / "max_logits.png", run_settings)
    lines = ["| attention | τ | peak logit, no clip | peak logit, QK-Clip | steps > τ, no clip | steps > τ, QK-Clip "
             "| val loss no clip | val loss QK-Clip |",
             "|---|---|---|---|---|---|---|---|"]
    for att, r in rows.items():
        lines.append(f"| {att.upper()} | {r['tau']:g} | {r['peak_logit_no_clip']:.2f} | {r['peak_logit_clip']:.2f} | "
                     f"{r['steps_over_tau_no_clip']} of {r['steps_clip']} | {r['steps_over_tau_clip']} of "
                     f"{r['steps_clip']} | {_fmt(r['final_val_loss_no_clip'])} | {_fmt(r['final_val_loss_clip'])} |")
    (out / "table.md").write_text(
        f"{run_settings['optimizer']} lr {lr:g}, model `{run_settings['model']}`, {run_settings['steps']} steps of "
        f"{run_settings['batch_size']} sequences, "
        f"device {run_settings['device']} ({run_settings['precision']}); over τ = above τ·(1 + {tolerance:.3g}).\n\n"
        + "\n".join(lines) + "\n")
    print((out / "table.md").read_text())
    return json_safe(summary)  # the registry writes it as results.json


def _fmt(v) -> str:
    return "—" if v is None or not math.isfinite(v) else f"{v:.4f}"


def plot(rows: dict, path: Path, run_settings: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(rows), figsize=(5 * len(rows), 3.8), squeeze=False)
    for ax, (att, r) in zip(axes[0], rows.items()):
        ax.plot(r["steps"], r["curve_no_clip"], label="no clip")
        ax.plot(r["steps"], r["curve_clip"], label=f"QK-Clip τ={r['tau']:g}")
        ax.axhline(r["tau"], color="k", ls="--", lw=0.8)
        ax.set_title(f"{att.upper()} ({run_settings['optimizer']}, {run_settings['model']})")
        ax.set_xlabel("step")
        ax.set_ylabel("max attention logit over heads")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
