"""Train the small GPT: warm-up + cosine, grad clipping, periodic evaluation, atomic checkpoints, exact resume.

The pieces are separate functions so that a distributed wrapper can swap any one of them:
``build_model(cfg, vocab_size)``, ``build_optimizer(cfg, model)``, ``train_step(...)``, ``evaluate(...)``;
``train(cfg)`` strings them together and writes ``cfg.out/results.json``, plots and ``checkpoint.pt``.

Exact resume: batches are a pure function of (seed, step) (see data.py), the lr is a pure function of the step,
and the checkpoint holds the model, the optimizer state and the history; so a run stopped at step t and resumed
produces bitwise the same losses as one that never stopped (same device and threads).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import threading
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable

import torch

from muonlab.tasks.lm.data import BatchSampler, DataError, TokenData, eval_batches, prepare_data
from muonlab.tasks.lm.model import GPT, PRESETS, preset_config

# Default peak learning rates at --model tiny, batch 16 x 128 (the lr of the matrix parameters; embeddings,
# head and vectors ride on AdamW at ADAMW_AUX_LR). Tuned by a short sweep, see BENCHMARKS.md.
DEFAULT_LR: dict[str, float] = {
    "adamw": 3e-3,
    "adam": 3e-3,
    "sgd": 0.1,
    "muon": 0.02,
    "normuon": 0.02,
    "simplified_muon": 0.02,
    "polargrad": 0.02,
    "msgd": 0.3,
    "msgds": 0.05,
    "msgdq": 0.02,
    "msgdz": 0.02,
    "adams": 0.01,
    "adamq": 0.02,
    "adamz": 0.02,
}
ADAMW_AUX_LR = 3e-3
# Config fields that do not change the trajectory: a resume may change them freely. ``steps`` is handled on its own
# (load_checkpoint): a resume may lengthen or shorten the run down to the checkpoint's step.
NON_TRAJECTORY_FIELDS = {"out", "progress", "ckpt_every", "device", "resume", "threads"}


class TrainError(ValueError):
    """A bad training configuration or checkpoint; the message says what to change."""


@dataclass
class TrainConfig:
    data: str | None = None            # path, hf:NAME, or None for the stdlib corpus
    tokenizer: str = "byte"
    vocab_size: int = 4096             # BPE only
    val_fraction: float = 0.05
    model: str = "tiny"
    attention: str = "mha"
    n_kv_head: int | None = None
    qk_norm: bool = False
    tie_embeddings: bool = True
    block_size: int | None = None      # None: the preset's
    batch_size: int = 16
    optimizer: str = "adamw"
    lr: float | None = None            # None: DEFAULT_LR[optimizer]
    aux_lr: float = ADAMW_AUX_LR       # AdamW lr for embeddings, head and vectors under a matrix optimizer
    weight_decay: float = 0.0
    warmup_steps: int | None = None    # None: 5% of steps
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    steps: int = 500
    seed: int = 0
    eval_every: int | None = None      # None: auto_eval_every(steps), about 10 evaluations per run, at most every 50
    eval_batches: int = 8
    ckpt_every: int = 100
    qk_clip: float | None = None       # τ; None: no clipping
    record_logits: bool = True
    device: str = "auto"
    threads: int | None = None         # CPU threads (torch.set_num_threads); 1 is fastest on a busy machine
    out: str = "runs/lm"
    parallel: str = "none"             # none | ddp | fsdp (launch with torchrun); batch_size is per rank
    resume: bool = False
    progress: bool = True

    def validate(self) -> "TrainConfig":
        if self.model not in PRESETS:
            raise TrainError(f"--model: unknown model {self.model!r}; expected one of {sorted(PRESETS)}")
        if self.attention not in ("mha", "gqa", "mla"):
            raise TrainError(f"--attention must be mha, gqa or mla, got {self.attention!r}")
        known = set(DEFAULT_LR)
        if self.optimizer not in known:
            raise TrainError(f"--optimizer: unknown optimizer {self.optimizer!r}; expected one of {sorted(known)}")
        for name in ("steps", "batch_size", "eval_every", "eval_batches", "ckpt_every"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise TrainError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise TrainError(f"--lr must be a positive number, got {self.lr}")
        if self.qk_clip is not None and not (math.isfinite(self.qk_clip) and self.qk_clip > 0):
            raise TrainError(f"--qk-clip must be a positive number (tau), got {self.qk_clip}")
        if self.parallel not in ("none", "ddp", "fsdp"):
            raise TrainError(f"--parallel must be none, ddp or fsdp, got {self.parallel!r}")
        if self.parallel != "none" and self.qk_clip is not None:
            raise TrainError("--qk-clip with --parallel is not supported yet: each rank would clip from its own "
                             "batch's logits; run QK-Clip experiments with --parallel none")
        if self.grad_clip < 0:
            raise TrainError(f"--grad-clip must be >= 0 (0 disables), got {self.grad_clip}")
        return self

    @property
    def eval_interval(self) -> int:
        return self.eval_every if self.eval_every is not None else auto_eval_every(self.steps)

    @property
    def peak_lr(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.optimizer]

    def trajectory_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in NON_TRAJECTORY_FIELDS}


def auto_eval_every(steps: int) -> int:
    """Evaluate about 10 times per run (so even a 30-step run draws a validation curve), at most every 50 steps."""
    return max(1, min(50, steps // 10))


# ---------------------------------------------------------------------------------------------- pieces
def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast_for(device: torch.device):
    """bf16 autocast on CUDA; fp32 on CPU (bf16 matmul is ~100x slower there)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def build_model(cfg: TrainConfig, vocab_size: int) -> GPT:
    try:
        gpt_cfg = preset_config(cfg.model, vocab_size=vocab_size, attention=cfg.attention, n_kv_head=cfg.n_kv_head,
                                qk_norm=cfg.qk_norm, tie_embeddings=cfg.tie_embeddings, block_size=cfg.block_size)
    except ValueError as err:
        raise TrainError(str(err)) from err
    torch.manual_seed(cfg.seed)
    return GPT(gpt_cfg)


def _adamw_groups(model: torch.nn.Module, lr: float, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay, "lr": lr},
            {"params": no_decay, "weight_decay": 0.0, "lr": lr}]


def build_optimizer(cfg: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """torch AdamW (SGD) on everything for 'adamw' ('sgd'), with no decay on vectors; otherwise
    muonlab.make_optimizer over muonlab.param_groups(model): the spectral rule on hidden matrices, AdamW at
    ``cfg.aux_lr`` on embeddings, the head and vectors. The schedule scales every group's lr alike."""
    lr = cfg.peak_lr
    if cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(_adamw_groups(model, lr, cfg.weight_decay), lr=lr, betas=(0.9, 0.95), eps=1e-10)
    elif cfg.optimizer == "sgd":
        opt = torch.optim.SGD(_adamw_groups(model, lr, cfg.weight_decay), lr=lr, momentum=0.9)
    else:
        from muonlab.optim import make_optimizer, param_groups

        # parallel none: one process even if a process group happens to exist (e.g. a rank-0-only run)
        opt = make_optimizer(cfg.optimizer, param_groups(model), lr=lr, weight_decay=cfg.weight_decay,
                             adamw_lr=cfg.aux_lr, distributed="auto" if cfg.parallel != "none" else "none")
    for group in opt.param_groups:
        group.setdefault("initial_lr", group["lr"])
    return opt


def lr_multiplier(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warm-up over `warmup` steps, then cosine from 1 down to `min_ratio` at the last step."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup - 1)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def set_lr(optimizer: torch.optim.Optimizer, multiplier: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * multiplier


@torch.no_grad()
def measure_max_logits(model: GPT, x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """(n_layer, n_head) max pre-softmax logits of a gradient-free forward over x."""
    model.set_record_max_logits(True)
    try:
        with autocast_for(device):
            model(x)
    finally:
        model.set_record_max_logits(False)
    return model.max_logits()


def train_step(model: GPT, optimizer: torch.optim.Optimizer, batch, cfg: TrainConfig, device: torch.device,
               clip=None, forward: torch.nn.Module | None = None) -> tuple[float, torch.Tensor | None]:
    """One optimizer step on one batch: forward, backward, grad clip, step, then QK-Clip (if any).

    Returns the batch loss and the (n_layer, n_head) max logits measured after the step on the same batch
    (clip applied), or None when recording is off. ``forward``: the module to call for the training forward
    when it is a wrapper of ``model`` (DDP); default ``model``."""
    x, y = (t.to(device, non_blocking=True) for t in batch)
    with autocast_for(device):
        _, loss = (forward or model)(x, y)
    loss.backward()
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    logits = None
    if clip is not None:
        with autocast_for(device):
            logits = clip.step(lambda: model(x))
    elif cfg.record_logits:
        logits = measure_max_logits(model, x, device)
    return float(loss.detach()), logits


@torch.no_grad()
def evaluate(model: GPT, batches, device: torch.device) -> float:
    was_training = model.training
    model.eval()
    total = 0.0
    for x, y in batches:
        with autocast_for(device):
            _, loss = model(x.to(device), y.to(device))
        total += float(loss)
    model.train(was_training)
    return total / len(batches)


# ---------------------------------------------------------------------------------------------- checkpoints
def save_checkpoint(path: Path, payload: dict) -> None:
    """Atomic: write to a temporary file in the same folder, then os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, cfg: TrainConfig) -> dict:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated or foreign file
        raise TrainError(f"cannot read checkpoint {path}: {err}") from err
    saved = payload.get("config", {})
    current = cfg.trajectory_dict()
    # --steps may change (lengthen a finished run): the schedule is then recomputed, see _train. Evaluation
    # settings do not touch the trajectory either (evaluation is gradient-free on fixed batches).
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


class _StopOnSigint:
    """While active, the first Ctrl-C asks the loop to stop after the current step (a second one aborts)."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.getsignal(signal.SIGINT)

            def handler(signum, frame):
                self.requested = True
                signal.signal(signal.SIGINT, self._previous)
            signal.signal(signal.SIGINT, handler)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


# ---------------------------------------------------------------------------------------------- the loop
def train(cfg: TrainConfig, on_step: Callable[[int, float], None] | None = None,
          token_data: TokenData | None = None) -> dict:
    """Run (or resume) training; returns the results dict also written to cfg.out/results.json.

    If interrupted (Ctrl-C), saves a checkpoint after the current step and returns results with
    ``"interrupted": True``; ``cfg.resume=True`` continues from it. ``cfg.parallel`` "ddp"/"fsdp": one
    process per rank under ``torchrun`` (see :mod:`muonlab.distributed.parallel`); rank 0 writes the files."""
    cfg.validate()
    from muonlab.distributed.parallel import setup_parallel
    from muonlab.experiments.output import OutputError, prepare_directory

    try:  # before any work: a bad --out fails in one line, not after training
        prepare_directory(cfg.out)
    except OutputError as err:
        raise TrainError(str(err)) from None

    try:
        par = setup_parallel(cfg.parallel, cfg.device)
    except ValueError as err:
        raise TrainError(str(err)) from err
    previous_threads = torch.get_num_threads()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    try:
        return _train(cfg, par, on_step, token_data)
    finally:
        torch.set_num_threads(previous_threads)
        par.close()


def _train(cfg: TrainConfig, par, on_step, token_data: TokenData | None) -> dict:
    device = par.device if par.active else resolve_device(cfg.device)
    out = Path(cfg.out)
    ckpt_path = out / "checkpoint.pt"
    if token_data is None:
        if not par.is_main:
            par.barrier()  # rank 0 builds the token cache first, the others then read it
        token_data = prepare_data(cfg.data, cfg.tokenizer, cfg.vocab_size, cfg.val_fraction,
                                  verbose=cfg.progress and par.is_main)
        if par.is_main:
            par.barrier()
    model = build_model(cfg, token_data.vocab_size).to(device)
    block = model.config.block_size
    token_data.check_fits(cfg.batch_size * par.world_size, block)
    forward = par.wrap(model, model.blocks)  # DDP wrapper, or the model itself sharded in place (FSDP2)
    optimizer = build_optimizer(cfg, model)
    clip = None
    if cfg.qk_clip is not None:
        from muonlab.optim.qkclip import QKClip

        try:
            clip = QKClip(model, cfg.qk_clip)
        except ValueError as err:
            raise TrainError(f"--qk-clip: {err}") from err
    sampler = BatchSampler(token_data.train, cfg.batch_size, block, seed=cfg.seed, rank=par.rank,
                           world_size=par.world_size)
    val_batches = eval_batches(token_data.val, cfg.batch_size, block, cfg.eval_batches, seed=cfg.seed + 1234)
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else max(1, cfg.steps // 20)
    eval_every = cfg.eval_interval

    history = {"train_steps": [], "train_losses": [], "val_steps": [], "val_losses": [],
               "max_attn_logit_after_step": [], "max_attn_logit_per_head": [], "train_time_s": 0.0}
    start = 0
    if cfg.resume:
        if not ckpt_path.exists():
            raise TrainError(f"--resume: no checkpoint at {ckpt_path}")
        payload = load_checkpoint(ckpt_path, cfg)
        if payload.get("world_size", 1) != par.world_size:
            raise TrainError(f"checkpoint {ckpt_path} was written by {payload.get('world_size', 1)} ranks, this run "
                             f"has {par.world_size}; resume with the same --nproc_per_node")
        if par.kind == "fsdp":
            par.load_sharded(out / payload["sharded"], model, optimizer)
        else:
            model.load_state_dict(payload["model"])
            optimizer.load_state_dict(payload["optimizer"])
        history = payload["history"]
        start = int(payload["step"])
        # A resume may change --steps. The lr is a pure function of (step, total steps): with a new total the
        # cosine is recomputed over it and continues from the resume point (the lr jumps to the new curve's value
        # there); the warm-up keeps the length the run started with. Only an unchanged --steps is an exact resume.
        saved_steps = int(payload["config"].get("steps", cfg.steps))
        default_warmup = cfg.warmup_steps if cfg.warmup_steps is not None else max(1, saved_steps // 20)
        warmup = int(payload.get("warmup", default_warmup))
        if saved_steps != cfg.steps and par.is_main:
            before = lr_multiplier(start, saved_steps, warmup, cfg.min_lr_ratio)
            after = lr_multiplier(start, cfg.steps, warmup, cfg.min_lr_ratio)
            print(f"muonlab: resuming at step {start} with --steps {cfg.steps} (the checkpoint's run had "
                  f"{saved_steps}): the lr schedule is recomputed for {cfg.steps} steps, so the lr multiplier at "
                  f"step {start} goes from {before:.3g} (old schedule) to {after:.3g}", flush=True)
    elif ckpt_path.exists():
        raise TrainError(f"{ckpt_path} exists: pass --resume to continue it, or choose a new --out")

    def checkpoint(step: int) -> None:
        meta = {"step": step, "history": history, "config": cfg.trajectory_dict(), "world_size": par.world_size,
                "warmup": warmup}
        if par.kind == "fsdp":
            # Shards via torch.distributed.checkpoint in a folder named after the step; checkpoint.pt (written
            # last, atomically) points at it, so a crash in between leaves the previous pair intact.
            folder = f"checkpoint_dcp_step{step}"
            previous = load_checkpoint(ckpt_path, cfg).get("sharded") if par.is_main and ckpt_path.exists() else None
            par.save_sharded(out / folder, model, optimizer)
            if par.is_main:
                save_checkpoint(ckpt_path, dict(meta, sharded=folder))
                if previous and previous != folder:
                    import shutil

                    shutil.rmtree(out / previous, ignore_errors=True)
            par.barrier()
            return
        if par.is_main:
            save_checkpoint(ckpt_path, dict(meta, model=model.state_dict(), optimizer=optimizer.state_dict()))
        par.barrier()

    if start == 0 and not history["val_steps"]:
        # the initial model's validation loss: every curve starts at step 0 from the same point (one extra
        # evaluation; gradient-free on fixed batches, so the training trajectory is unchanged)
        history["val_steps"].append(0)
        history["val_losses"].append(evaluate(model, val_batches, device))
    tokens_per_step = cfg.batch_size * block * par.world_size
    model.train()
    interrupted = diverged = False
    bar = None
    if cfg.progress and par.is_main:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=start, desc=f"{cfg.optimizer} {cfg.model}/{cfg.attention}",
                   unit="step", dynamic_ncols=True)
    with _StopOnSigint() as stop:
        for step in range(start, cfg.steps):
            set_lr(optimizer, lr_multiplier(step, cfg.steps, warmup, cfg.min_lr_ratio))
            t0 = time.perf_counter()
            loss, logits = train_step(model, optimizer, sampler.batch(step), cfg, device, clip, forward)
            loss = par.mean(loss)  # each rank saw its slice: the global batch's loss
            if device.type == "cuda":
                torch.cuda.synchronize()
            history["train_time_s"] += time.perf_counter() - t0
            history["train_steps"].append(step + 1)
            history["train_losses"].append(loss)
            if logits is not None:
                history["max_attn_logit_after_step"].append(float(logits.max()))
                history["max_attn_logit_per_head"].append([round(v, 4) for v in logits.flatten().tolist()])
            if not math.isfinite(loss):
                diverged = True
            if (step + 1) % eval_every == 0 or step + 1 == cfg.steps or diverged:
                history["val_steps"].append(step + 1)
                history["val_losses"].append(evaluate(model, val_batches, device) if not diverged else float("nan"))
            if bar is not None:
                tok_s = tokens_per_step * len(history["train_steps"]) / max(history["train_time_s"], 1e-9)
                post = {"loss": f"{loss:.3f}", "tok/s": f"{tok_s:,.0f}"}
                if history["val_losses"]:
                    post["val"] = f"{history['val_losses'][-1]:.3f}"
                if logits is not None:
                    post["max_logit"] = f"{float(logits.max()):.1f}"
                bar.set_postfix(post, refresh=False)
                bar.update(1)
            if on_step is not None:
                on_step(step + 1, loss)
            if diverged:
                break
            if par.any(stop.requested):  # all ranks stop at the same step
                checkpoint(step + 1)
                interrupted = True
                break
            if (step + 1) % cfg.ckpt_every == 0 or step + 1 == cfg.steps:
                checkpoint(step + 1)
    if bar is not None:
        bar.close()

    results = summarize(cfg, history, tokens_per_step, model)
    results["interrupted"] = interrupted
    results["diverged"] = diverged
    results["parallel"] = {"kind": par.kind, "world_size": par.world_size}
    if par.is_main:
        out.mkdir(parents=True, exist_ok=True)
        plots = [] if interrupted else plot_results(results, out)
        checkpoints = [p.name for p in (ckpt_path, *sorted(out.glob("checkpoint_dcp_step*"))) if p.exists()]
        results["files"] = ["results.json", *plots, *checkpoints]  # everything this run wrote into out
        write_json(out / "results.json", results)
    return results


def summarize(cfg: TrainConfig, history: dict, tokens_per_step: int, model: GPT) -> dict:
    n = len(history["train_steps"])
    val = history["val_losses"]
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
        "tokens_per_s": tokens_per_step * n / history["train_time_s"] if history["train_time_s"] > 0 else None,
        **{k: history[k] for k in ("train_steps", "train_losses", "val_steps", "val_losses",
                                   "max_attn_logit_after_step", "max_attn_logit_per_head", "train_time_s")},
    }


def write_json(path: Path, obj) -> None:
    def clean(o):
        if isinstance(o, float) and not math.isfinite(o):
            return None
        if isinstance(o, dict):
            return {k: clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        return o

    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(clean(obj), indent=1))
    os.replace(tmp, path)


def plot_results(results: dict, out: Path) -> list[str]:
    """Write loss.png (and max_logit.png when logits were recorded) into ``out``; return the file names."""
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
        return ["loss.png", "max_logit.png"]
    return ["loss.png"]


def config_from_dict(d: dict) -> TrainConfig:
    known = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in d.items() if k in known})


__all__ = ["TrainConfig", "TrainError", "DataError", "DEFAULT_LR", "build_model", "build_optimizer", "train_step",
           "evaluate", "train", "lr_multiplier", "save_checkpoint", "load_checkpoint"]
