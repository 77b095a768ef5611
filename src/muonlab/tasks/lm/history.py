"""What a training run records, and the results it reports from it.

:class:`History` holds the curves of one run: the batch loss of every step, the validation loss at each evaluation,
the max attention logit after every step (overall and per head) and the summed step time. A checkpoint stores it as
the plain dict of :meth:`History.to_dict` (the format checkpoints have always had), so a resumed run continues the
same curves. :func:`summarize` turns it into the results dict of ``results.json``, :func:`plot_results` into
``loss.png``, ``max_logit.png`` and ``telemetry.png`` (what the optimizer's steps did).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only
    import torch

    from muonlab.tasks.lm.model import GPT


@dataclass
class History:
    """The curves of one run. ``train_steps[i]`` is the number of updates done after the i-th recorded step (its
    batch loss ``train_losses[i]`` was measured before that update); ``val_steps`` count updates the same way."""

    train_steps: list[int] = field(default_factory=list)
    train_losses: list[float] = field(default_factory=list)
    val_steps: list[int] = field(default_factory=list)
    val_losses: list[float] = field(default_factory=list)
    max_attn_logit_after_step: list[float] = field(default_factory=list)
    max_attn_logit_per_head: list[list[float]] = field(default_factory=list)
    train_time_s: float = 0.0
    # what each optimizer step did (muonlab optimizers' last_step_stats): see record_telemetry
    telemetry: dict = field(default_factory=dict)

    def record_step(self, step: int, loss: float, seconds: float, logits: torch.Tensor | None) -> None:
        """One optimizer step: ``step`` updates done, its batch loss, its time, the (n_layer, n_head) max
        attention logits measured after it (None when not recorded)."""
        self.train_time_s += seconds
        self.train_steps.append(step)
        self.train_losses.append(loss)
        if logits is not None:
            self.max_attn_logit_after_step.append(float(logits.max()))
            self.max_attn_logit_per_head.append([round(v, 4) for v in logits.flatten().tolist()])

    def record_telemetry(self, step: int, stats: dict | None) -> None:
        """``opt.last_step_stats()`` after ``step`` updates, as curves: ``steps``; per group (``"<index>:<kind>"``)
        ``update_rms`` and ``orthogonality_error`` (None where the group has none); ``skipped_steps`` (running count);
        ``state_bytes`` (latest). Nothing is recorded for optimizers without the method (torch's)."""
        if stats is None:
            return
        t = self.telemetry
        t.setdefault("steps", []).append(step)
        t.setdefault("skipped_steps", []).append(stats["skipped_steps"])
        t["state_bytes"] = stats["state_bytes"]
        for group in stats["groups"]:
            name = f"{group['index']}:{group['kind']}"
            for key in ("update_rms", "orthogonality_error"):
                value = group.get(key)
                t.setdefault(key, {}).setdefault(name, []).append(None if value is None else round(value, 6))

    def record_val(self, step: int, loss: float) -> None:
        """The validation loss of the model after ``step`` updates."""
        self.val_steps.append(step)
        self.val_losses.append(loss)

    def to_dict(self) -> dict:
        """The plain dict a checkpoint stores and results.json reports (these keys, in this order)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "History":
        """Read back :meth:`to_dict` (a checkpoint's ``history``; one written before a curve existed lacks it)."""
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


def summarize(cfg, history: History, tokens_per_step: int, model: GPT) -> dict:
    """The results of a run (``cfg``: its :class:`~muonlab.tasks.lm.train.TrainConfig`, not imported here: train.py
    imports this module): its config, the model's size, the final and best validation loss, throughput, and the
    curves of ``history``. The trainer adds how the run ended (interrupted, diverged, steady throughput)."""
    n = len(history.train_steps)
    val = history.val_losses
    finite_val = [v for v in val if math.isfinite(v)]
    return {
        "config": asdict(cfg),
        "model_config": model.config.to_dict(),
        "parameters": model.num_parameters(non_embedding=False),
        "peak_lr": cfg.peak_lr,
        "steps_done": n,
        "tokens_per_step": tokens_per_step,
        "tokens_seen": n * tokens_per_step,
        "final_val_loss": val[-1] if val else None,
        "best_val_loss": min(finite_val) if finite_val else None,
        "tokens_per_s": tokens_per_step * n / history.train_time_s if history.train_time_s > 0 else None,
        **history.to_dict(),
    }


def plot_results(results: dict, out: Path) -> list[str]:
    """Write loss.png (max_logit.png when logits were recorded, telemetry.png when the optimizer reported its steps)
    into ``out``; return the file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    # the loss recorded for step s is measured before that step's update, on the model after s - 1 updates: plot it
    # at s - 1, the x of the validation loss of the same model
    ax.plot([s - 1 for s in results["train_steps"]], results["train_losses"], lw=0.8, alpha=0.6,
            label="train (batch loss before the update)")
    ax.plot(results["val_steps"], results["val_losses"], "o-", ms=3, label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(f"{results['config']['optimizer']} lr={results['peak_lr']:g}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "loss.png", dpi=120)
    plt.close(fig)
    files = ["loss.png"]
    if results["max_attn_logit_after_step"]:
        fig, ax = plt.subplots(figsize=(6, 4))
        steps = results["train_steps"][:len(results["max_attn_logit_after_step"])]
        ax.plot(steps, results["max_attn_logit_after_step"])
        tau = results["config"].get("qk_clip")
        if tau:
            ax.axhline(tau, color="k", ls="--", lw=0.8, label=f"τ = {tau:g}")
            ax.legend()
        ax.set_xlabel("step")
        ax.set_ylabel("max attention logit (all heads)")
        fig.tight_layout()
        fig.savefig(out / "max_logit.png", dpi=120)
        plt.close(fig)
        files.append("max_logit.png")
    if results.get("telemetry", {}).get("steps"):
        files.append(plot_telemetry(results, out, plt))
    return files


def plot_telemetry(results: dict, out: Path, plt) -> str:
    """telemetry.png: each group's update RMS and each spectral group's orthogonality error, per step."""
    t = results["telemetry"]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6, 6), sharex=True)
    for name, values in t.get("update_rms", {}).items():
        points = [(s, v) for s, v in zip(t["steps"], values) if v is not None]
        if points:
            top.plot(*zip(*points), lw=0.8, label=name)
    top.set_yscale("log")
    top.set_ylabel("update RMS")
    top.legend(fontsize=7)
    for name, values in t.get("orthogonality_error", {}).items():
        points = [(s, v) for s, v in zip(t["steps"], values) if v is not None]
        if points:
            bottom.plot(*zip(*points), lw=0.8, label=name)
    bottom.set_yscale("log")
    bottom.set_ylabel("‖XXᵀ/τ − I‖_F/√k (sampled block)")
    bottom.set_xlabel("step")
    cfg = results["config"]
    skipped = t["skipped_steps"][-1] if t.get("skipped_steps") else 0
    top.set_title(f"{cfg['optimizer']}: state {cfg.get('state_dtype', 'float32')} "
                  f"({t.get('state_bytes', 0) / 2**20:.2f} MiB), {skipped} skipped step(s)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "telemetry.png", dpi=120)
    plt.close(fig)
    return "telemetry.png"
