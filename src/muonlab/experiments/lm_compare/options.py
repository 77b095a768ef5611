"""lm-compare's options (what the user asks for) and settings (what a sweep runs with), as dataclasses.

:class:`Options` holds the command-line values, None meaning "the default of the mode" (``quick`` or full);
:meth:`Options.check` is the one validation, :meth:`Settings.from_options` the one resolution of the defaults.
A :class:`Settings` is what the sweep, the table and results.json (``settings``) use.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

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
# Sequences x tokens per step for each model preset (small and gpt2 sized for a GPU).
BATCH = {"micro": (8, 64), "tiny": (16, 128), "small": (32, 256), "medium": (16, 512), "gpt2": (16, 1024)}


class LMCompareError(ValueError):
    """A bad lm-compare option; the message is one line naming the option."""


@dataclass(frozen=True)
class Options:
    """What ``muonlab run lm-compare`` was asked for; None: the default of the mode (``quick`` or full)."""

    out: str | Path | None = None
    quick: bool = False
    model: str | None = None
    steps: int | None = None
    device: str | None = None          # auto (None), cpu, cuda, cuda:N
    jobs: int | None = None            # runs at once
    compile: bool = False
    seed: int = 0
    data: str | None = None
    optimizers: str | list[str] | None = None
    lr_grid: tuple[float, ...] | None = None
    max_extensions: int | None = None
    from_results: str | None = None    # replay a finished sweep's folder instead of running one
    runs_dir: str | None = None        # run folders while the sweep runs (default OUT/runs)
    progress: bool = True

    @classmethod
    def from_namespace(cls, args) -> "Options":
        """The options of an argparse Namespace (the experiment registry's calling convention); attributes it lacks or
        that are None keep their defaults, other attributes (another experiment's) are ignored."""
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if getattr(args, f.name, None) is not None})

    def check(self) -> "Options":
        """Validate --model, --steps, --jobs, --device before anything runs (a one-line LMCompareError)."""
        from muonlab.devices import device_problem
        from muonlab.tasks.lm.model import preset_problem

        problem = preset_problem(self.model)
        for name in ("steps", "jobs"):
            value = getattr(self, name)
            if not problem and value is not None and (not isinstance(value, int) or value < 1):
                what = " (runs at once)" if name == "jobs" else ""
                problem = f"--{name} must be a positive integer{what}, got {value}"
        problem = problem or device_problem(self.device)
        if problem:
            raise LMCompareError(problem)
        return self


@dataclass(frozen=True)
class Settings:
    """What a sweep runs with: every default resolved (results.json keeps it as ``settings``)."""

    model: str
    steps: int
    batch_size: int
    block_size: int
    eval_every: int
    eval_batches: int
    lr_grid: tuple[float, ...]
    max_extensions: int
    seed: int
    data: str | None
    device: str
    jobs: int
    compile: bool
    step_timing_steps: int   # CPU: time per step from all optimizers taking turns in one process (measure_step_costs)
    torch: str

    @classmethod
    def from_options(cls, options: Options) -> "Settings":
        import torch

        from muonlab.devices import resolve_device

        quick = options.quick
        model = options.model or ("micro" if quick else "tiny")
        steps = int(options.steps or (40 if quick else 300))
        device = str(resolve_device(options.device))
        batch_size, block_size = (8, 64) if quick else BATCH.get(model, (16, 128))
        lr_grid = tuple(options.lr_grid or ((1.0,) if quick else LR_GRID))
        max_extensions = options.max_extensions
        if max_extensions is None:  # a one-lr grid is a fixed-lr comparison, not a sweep: nothing to bracket
            max_extensions = MAX_EXTENSIONS if len(lr_grid) > 1 else 0
        default_jobs = min(2, os.cpu_count() or 1) if device == "cpu" else 1
        return cls(model=model, steps=steps, batch_size=batch_size, block_size=block_size,
                   eval_every=max(1, steps // (4 if quick else 20)), eval_batches=4 if quick else 8, lr_grid=lr_grid,
                   max_extensions=int(max_extensions), seed=int(options.seed or 0), data=options.data, device=device,
                   jobs=int(options.jobs or default_jobs), compile=bool(options.compile),
                   step_timing_steps=12 if device == "cpu" else 0, torch=torch.__version__)

    def to_dict(self) -> dict:
        return asdict(self)


def train_settings(name: str) -> dict:
    """The trainer settings of row ``name``: its optimizer, plus a variant's overrides (:data:`VARIANTS`)."""
    return dict(VARIANTS.get(name, {"optimizer": name}))


def default_lr(name: str) -> float:
    from muonlab.tasks.lm.train import DEFAULT_LR

    return DEFAULT_LR[train_settings(name)["optimizer"]]


def parse_optimizers(value) -> list[str]:
    """The rows of the comparison: a comma-separated string or a list of names (default :data:`DEFAULT_OPTIMIZERS`)."""
    from muonlab.tasks.lm.train import DEFAULT_LR

    if not value:
        return list(DEFAULT_OPTIMIZERS)
    names = [n.strip().lower() for n in (value.split(",") if isinstance(value, str) else value) if n.strip()]
    unknown = [n for n in names if n not in DEFAULT_LR and n not in VARIANTS]
    if unknown:
        raise LMCompareError(f"--optimizers: unknown {unknown}; expected names from {sorted(DEFAULT_LR) + sorted(VARIANTS)}")
    return names


def command(settings: Settings, names: list[str]) -> str:
    """The CLI command that reproduces a sweep with ``settings``."""
    parts = ["muonlab run lm-compare", f"--model {settings.model}", f"--steps {settings.steps}",
             f"--device {settings.device}", f"--jobs {settings.jobs}"]
    if list(names) != list(DEFAULT_OPTIMIZERS):
        parts.append(f"--optimizers {','.join(names)}")
    if settings.compile:
        parts.append("--compile")
    if settings.seed:
        parts.append(f"--seed {settings.seed}")
    if settings.data:
        parts.append(f"--data {settings.data}")
    return " ".join(parts)
