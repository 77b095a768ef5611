"""The trainer's checkpoints: ``out/checkpoint.pt``, written atomically, refused on resume when it does not match.

``checkpoint.pt`` is a ``torch.save``d dict: ``step`` (updates done), ``history`` (the plain dict of
:meth:`History.to_dict`), ``config`` (the run's trajectory fields, :meth:`TrainConfig.trajectory_dict`),
``world_size``, ``warmup`` (the warm-up length the run started with), and either ``model`` and ``optimizer``
(state dicts, from rank 0) or, under FSDP2, ``sharded``: the name of a folder beside it that holds every rank's
shards (``torch.distributed.checkpoint``). Together with batches that are a pure function of (seed, step) and an lr
that is a pure function of the step, this is what makes a resume bitwise exact.

:class:`Checkpointer` is the trainer's side: :meth:`~Checkpointer.save` after a step, :meth:`~Checkpointer.resume`
before the first. ``cfg`` is always the run's :class:`~muonlab.tasks.lm.train.TrainConfig` (not imported here:
train.py imports this module).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from muonlab.tasks.lm.errors import TrainError
from muonlab.tasks.lm.history import History
from muonlab.tasks.lm.schedule import default_warmup, lr_multiplier

if TYPE_CHECKING:  # annotations only
    from muonlab.distributed.parallel import Parallel

CHECKPOINT_NAME = "checkpoint.pt"
SHARDED_PREFIX = "checkpoint_dcp_step"   # FSDP2: the shards of step s are in out/checkpoint_dcp_step{s}
COMPILED_PREFIX = "_orig_mod."           # what a torch.compile(model) wrapper puts before every state_dict key


def remove_checkpoints(folder: Path) -> int:
    """Delete every run's checkpoint files under ``folder`` (``checkpoint.pt`` and FSDP2 shard folders, at any depth),
    for callers that keep only the results; returns the bytes freed."""
    freed = 0
    for path in list(folder.rglob(CHECKPOINT_NAME)):
        freed += path.stat().st_size
        path.unlink()
    for path in list(folder.rglob(f"{SHARDED_PREFIX}*")):
        if path.is_dir():
            freed += sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
            shutil.rmtree(path)
    return freed


def save_checkpoint(path: Path, payload: dict) -> None:
    """Atomic: write to a temporary file in the same folder, then os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, cfg) -> dict:
    """The payload at ``path``, if ``cfg`` may continue it: the same trajectory fields (``steps`` and
    ``eval_every`` may differ) and ``cfg.steps`` not below the checkpoint's step; otherwise a TrainError."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated or foreign file
        raise TrainError(f"cannot read checkpoint {path}: {err}") from err
    saved = payload.get("config", {})
    current = cfg.trajectory_dict()
    # a field added after the checkpoint was written: it ran with the field's default
    defaults = type(cfg)().trajectory_dict()
    saved = {**{k: v for k, v in defaults.items() if k not in saved}, **saved}
    # --steps may change (lengthen a finished run): the schedule is then recomputed, see Checkpointer.resume.
    # Evaluation settings do not touch the trajectory either (evaluation is gradient-free on fixed batches).
    free = {"steps", "eval_every"}
    diffs = [f"{k}: checkpoint {saved.get(k)!r} vs now {current[k]!r}" for k in current
             if k not in free and saved.get(k) != current[k]]
    step = int(payload.get("step", 0))
    if cfg.steps < step:
        raise TrainError(f"--steps {cfg.steps} is below the checkpoint's step {step} in {path}; "
                         f"pass --steps {step} or more")
    if diffs:
        raise TrainError(f"checkpoint {path} was written by a different configuration ("
                         + "; ".join(diffs) + "); use the same flags, or a new --out")
    return payload


def uncompiled_state_dict(state: dict) -> dict:
    """A state_dict saved from a compiled module has every key prefixed with ``_orig_mod.``; strip it."""
    if state and all(k.startswith(COMPILED_PREFIX) for k in state):
        return {k[len(COMPILED_PREFIX):]: v for k, v in state.items()}
    return state


class Checkpointer:
    """``out/checkpoint.pt`` of one run: ``model`` and ``optimizer`` are saved into it and restored from it, on every
    rank of ``parallel`` (rank 0 writes the file; under FSDP2 every rank writes its shards)."""

    def __init__(self, out: Path, cfg, parallel: Parallel, model: torch.nn.Module,
                 optimizer: torch.optim.Optimizer):
        self.out = Path(out)
        self.path = self.out / CHECKPOINT_NAME
        self.cfg = cfg
        self.parallel = parallel
        self.model = model
        self.optimizer = optimizer

    def resume(self) -> tuple[int, History, int]:
        """(the step to start at, the history so far, the warm-up length). A fresh run: (0, empty, from cfg), and
        an existing checkpoint is refused (no silent overwrite). ``cfg.resume``: the checkpoint's, after loading the
        model and optimizer state from it."""
        cfg, par = self.cfg, self.parallel
        if not cfg.resume:
            if self.path.exists():
                raise TrainError(f"{self.path} exists: pass --resume to continue it, or choose a new --out")
            return 0, History(), default_warmup(cfg.warmup_steps, cfg.steps)
        if not self.path.exists():
            raise TrainError(f"--resume: no checkpoint at {self.path}")
        payload = load_checkpoint(self.path, cfg)
        if payload.get("world_size", 1) != par.world_size:
            raise TrainError(f"checkpoint {self.path} was written by {payload.get('world_size', 1)} ranks, this run "
                             f"has {par.world_size}; resume with the same --nproc_per_node")
        if par.strategy == "fsdp":
            par.load_sharded(self.out / payload["sharded"], self.model, self.optimizer)
        else:
            self.model.load_state_dict(uncompiled_state_dict(payload["model"]))
            self.optimizer.load_state_dict(payload["optimizer"])
        start = int(payload["step"])
        # A resume may change --steps. The lr is a pure function of (step, total steps): with a new total the
        # cosine is recomputed over it and continues from the resume point (the lr jumps to the new curve's value
        # there); the warm-up keeps the length the run started with. Only an unchanged --steps is an exact resume.
        saved_steps = int(payload["config"].get("steps", cfg.steps))
        warmup = int(payload.get("warmup", default_warmup(cfg.warmup_steps, saved_steps)))
        if saved_steps != cfg.steps and par.is_main:
            before = lr_multiplier(start, saved_steps, warmup, cfg.min_lr_ratio)
            after = lr_multiplier(start, cfg.steps, warmup, cfg.min_lr_ratio)
            print(f"muonlab: resuming at step {start} with --steps {cfg.steps} (the checkpoint's run had "
                  f"{saved_steps}): the lr schedule is recomputed for {cfg.steps} steps, so the lr multiplier at "
                  f"step {start} goes from {before:.3g} (old schedule) to {after:.3g}", flush=True)
        return start, History.from_dict(payload["history"]), warmup

    def save(self, step: int, history: History, warmup: int) -> None:
        """Checkpoint after ``step`` updates; every rank calls it (it ends on a barrier)."""
        par = self.parallel
        meta = {"step": step, "history": history.to_dict(), "config": self.cfg.trajectory_dict(),
                "world_size": par.world_size, "warmup": warmup}
        if par.strategy == "fsdp":
            # Shards via torch.distributed.checkpoint in a folder named after the step; checkpoint.pt (written
            # last, atomically) points at it, so a crash in between leaves the previous pair intact.
            folder = f"{SHARDED_PREFIX}{step}"
            previous = (load_checkpoint(self.path, self.cfg).get("sharded")
                        if par.is_main and self.path.exists() else None)
            par.save_sharded(self.out / folder, self.model, self.optimizer)
            if par.is_main:
                save_checkpoint(self.path, dict(meta, sharded=folder))
                if previous and previous != folder:
                    shutil.rmtree(self.out / previous, ignore_errors=True)
        elif par.is_main:
            save_checkpoint(self.path, dict(meta, model=self.model.state_dict(),
                                            optimizer=self.optimizer.state_dict()))
        par.barrier()

    def files(self) -> list[str]:
        """The names of the checkpoint files now in ``out`` (for results.json's list of what the run wrote)."""
        return [p.name for p in (self.path, *sorted(self.out.glob(f"{SHARDED_PREFIX}*"))) if p.exists()]
