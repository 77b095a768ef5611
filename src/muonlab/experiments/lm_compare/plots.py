"""lm-compare's plot: the validation curves of each optimizer's best run."""

from __future__ import annotations

import math
from pathlib import Path

from muonlab.experiments.lm_compare.table import LABELS


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
