"""Train the small GPT: warm-up + cosine, grad clipping, periodic evaluation, atomic checkpoints, exact resume.

The pieces are separate functions so that a distributed wrapper can swap any one of them:
``build_model(cfg, vocab_size)``, ``build_optimizer(cfg, model)``, ``train_step(...)``, ``evaluate(...)``;
``train(cfg)`` strings them together and writes ``cfg.out/results.json``, plots and ``checkpoint.pt``. Beside it:
``schedule.py`` (the lr schedule), ``history.py`` (the recorded curves, the results and plots made from them),
``config.py`` (:class:`TrainConfig`, the default lrs), ``checkpoint.py`` (saving, refusing and resuming checkpoints);
this module re-exports the names callers import.

Exact resume: batches are a pure function of (seed, step) (see data.py), the lr is a pure function of the step,
and the checkpoint holds the model, the optimizer state and the history; so a run stopped at step t and resumed
produces bitwise the same losses as one that never stopped (same device and threads).
"""
from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from pathlib import Path
from typing import Callable

import torch

from muonlab.devices import resolve_device
from muonlab.files import OutputError, prepare_directory, write_json
from muonlab.tasks.lm.checkpoint import (COMPILED_PREFIX, Checkpointer, load_checkpoint, save_checkpoint,
                                         uncompiled_state_dict)
from muonlab.tasks.lm.config import ADAMW_AUX_LR, DEFAULT_LR, NON_TRAJECTORY_FIELDS, TrainConfig, auto_eval_every
from muonlab.tasks.lm.data import BatchSampler, DataError, TokenData, eval_batches, prepare_data
from muonlab.tasks.lm.errors import TrainError
from muonlab.tasks.lm.history import History, plot_results, summarize
from muonlab.tasks.lm.model import GPT, preset_config
from muonlab.tasks.lm.schedule import lr_multiplier, set_lr

# torch dtype of each --param-dtype value (config.PARAM_DTYPES names them)
PARAM_TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


# ---------------------------------------------------------------------------------------------- pieces
def autocast_for(device: torch.device):
    """bf16 autocast on CUDA; fp32 on CPU (bf16 matmuls have no fast kernels there)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def compile_for_training(forward: torch.nn.Module) -> None:
    """``torch.compile`` in place (``Module.compile``) the module that runs the training forward (the model, or its
    DDP wrapper): inductor fuses the forward and its backward graph. In place, so the module keeps its type and
    ``state_dict()`` its plain keys (a ``torch.compile(model)`` wrapper would prefix them with ``_orig_mod.``):
    checkpoints load into an uncompiled model and resume exactly as before. Evaluation and max-logit measurement
    get graphs of their own (no_grad, the record flag) on first use."""
    forward.compile()


def build_model(cfg: TrainConfig, vocab_size: int) -> GPT:
    try:
        gpt_cfg = preset_config(cfg.model, vocab_size=vocab_size, attention=cfg.attention, n_kv_head=cfg.n_kv_head,
                                qk_norm=cfg.qk_norm, tie_embeddings=cfg.tie_embeddings, block_size=cfg.block_size)
    except ValueError as err:
        raise TrainError(str(err)) from err
    torch.manual_seed(cfg.seed)
    # bf16 parameters start from the fp32 initialization rounded to nearest: the same model as the fp32 run's
    return GPT(gpt_cfg).to(PARAM_TORCH_DTYPES[cfg.param_dtype])


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
        # --compile on CUDA: the fused (single-kernel) AdamW step, the optimizer half of a compiled step (plain
        # tensors only: FSDP's sharded parameters keep the default foreach step)
        fused = cfg.compile and cfg.parallel != "fsdp" and next(model.parameters()).is_cuda
        opt = torch.optim.AdamW(_adamw_groups(model, lr, cfg.weight_decay), lr=lr, betas=(0.9, 0.95), eps=1e-10,
                                **({"fused": True} if fused else {}))
    elif cfg.optimizer == "sgd":
        opt = torch.optim.SGD(_adamw_groups(model, lr, cfg.weight_decay), lr=lr, momentum=0.9)
    else:
        from muonlab.optim import make_optimizer, param_groups

        # parallel none: one process even if a process group happens to exist (e.g. a rank-0-only run)
        extra = {"cautious_wd": True} if cfg.cautious_wd else {}
        # only when asked: an optimizer from before these options is then built exactly as it was
        if cfg.state_dtype != "float32":
            extra["state_dtype"] = cfg.state_dtype
        if cfg.param_rounding != "nearest":
            extra["param_rounding"] = cfg.param_rounding
        opt = make_optimizer(cfg.optimizer, param_groups(model), lr=lr, weight_decay=cfg.weight_decay,
                             adamw_lr=cfg.aux_lr, distributed="auto" if cfg.parallel != "none" else "none", **extra)
    for group in opt.param_groups:
        group.setdefault("initial_lr", group["lr"])
    return opt


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
    if token_data is None:
        token_data = _prepare_data(cfg, par)
    model = build_model(cfg, token_data.vocab_size).to(device)
    block = model.config.block_size
    token_data.check_fits(cfg.batch_size * par.world_size, block)
    forward = par.wrap(model, model.blocks)  # DDP wrapper, or the model itself sharded in place (FSDP2)
    if cfg.compile:
        compile_for_training(forward)
    optimizer = build_optimizer(cfg, model)
    clip = _build_qk_clip(cfg, model)
    sampler = BatchSampler(token_data.train, cfg.batch_size, block, seed=cfg.seed, rank=par.rank,
                           world_size=par.world_size)
    val_batches = eval_batches(token_data.val, cfg.batch_size, block, cfg.eval_batches, seed=cfg.seed + 1234)
    checkpointer = Checkpointer(Path(cfg.out), cfg, par, model, optimizer)
    start, history, warmup = checkpointer.resume()
    if start == 0 and not history.val_steps:
        # the initial model's validation loss: every curve starts at step 0 from the same point (one extra
        # evaluation; gradient-free on fixed batches, so the training trajectory is unchanged)
        history.record_val(0, evaluate(model, val_batches, device))
    tokens_per_step = cfg.batch_size * block * par.world_size
    progress = _Progress(cfg, start, tokens_per_step, enabled=cfg.progress and par.is_main)

    model.train()
    interrupted = diverged = False
    step_times: list[float] = []  # this process's step times: the steady rate leaves out compilation and warm-up
    with _StopOnSigint() as stop:
        for step in range(start, cfg.steps):
            set_lr(optimizer, lr_multiplier(step, cfg.steps, warmup, cfg.min_lr_ratio))
            t0 = time.perf_counter()
            loss, logits = train_step(model, optimizer, sampler.batch(step), cfg, device, clip, forward)
            loss = par.mean(loss)  # each rank saw its slice: the global batch's loss
            if device.type == "cuda":
                torch.cuda.synchronize()
            step_times.append(time.perf_counter() - t0)
            history.record_step(step + 1, loss, step_times[-1], logits)
            if hasattr(optimizer, "last_step_stats"):  # muonlab optimizers: what the step did
                history.record_telemetry(step + 1, optimizer.last_step_stats())
            diverged = not math.isfinite(loss)
            if (step + 1) % cfg.eval_interval == 0 or step + 1 == cfg.steps or diverged:
                history.record_val(step + 1, evaluate(model, val_batches, device) if not diverged else float("nan"))
            progress.update(loss, history, logits)
            if on_step is not None:
                on_step(step + 1, loss)
            if diverged:
                break
            if par.any(stop.requested):  # all ranks stop at the same step
                checkpointer.save(step + 1, history, warmup)
                interrupted = True
                break
            if (step + 1) % cfg.ckpt_every == 0 or step + 1 == cfg.steps:
                checkpointer.save(step + 1, history, warmup)
    progress.close()

    results = summarize(cfg, history, tokens_per_step, model)
    results["interrupted"] = interrupted
    steady = step_times[min(3, len(step_times) // 2):]
    results["tokens_per_s_steady"] = tokens_per_step * len(steady) / sum(steady) if sum(steady) > 0 else None
    results["diverged"] = diverged
    results["parallel"] = {"strategy": par.strategy, "world_size": par.world_size}
    if par.is_main:
        out = Path(cfg.out)
        out.mkdir(parents=True, exist_ok=True)
        plots = [] if interrupted else plot_results(results, out)
        results["files"] = ["results.json", *plots, *checkpointer.files()]  # everything this run wrote into out
        write_json(out / "results.json", results)
    return results


def _prepare_data(cfg: TrainConfig, par) -> TokenData:
    """Tokenize ``cfg.data`` (cached): rank 0 builds the token cache first, the other ranks then read it."""
    if not par.is_main:
        par.barrier()
    token_data = prepare_data(cfg.data, cfg.tokenizer, cfg.vocab_size, cfg.val_fraction,
                              verbose=cfg.progress and par.is_main)
    if par.is_main:
        par.barrier()
    return token_data


def _build_qk_clip(cfg: TrainConfig, model: GPT):
    """The QK-Clip of ``cfg.qk_clip`` (τ) over the model's attention, or None."""
    if cfg.qk_clip is None:
        return None
    from muonlab.optim.qkclip import QKClip

    try:
        return QKClip(model, cfg.qk_clip)
    except ValueError as err:
        raise TrainError(f"--qk-clip: {err}") from err


class _Progress:
    """The tqdm bar of a run (rank 0, ``cfg.progress``): loss, throughput, last validation loss and max logit."""

    def __init__(self, cfg: TrainConfig, start: int, tokens_per_step: int, enabled: bool):
        self.tokens_per_step = tokens_per_step
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=cfg.steps, initial=start, desc=f"{cfg.optimizer} {cfg.model}/{cfg.attention}",
                            unit="step", dynamic_ncols=True)

    def update(self, loss: float, history: History, logits: torch.Tensor | None) -> None:
        if self.bar is None:
            return
        tok_s = self.tokens_per_step * len(history.train_steps) / max(history.train_time_s, 1e-9)
        post = {"loss": f"{loss:.3f}", "tok/s": f"{tok_s:,.0f}"}
        if history.val_losses:
            post["val"] = f"{history.val_losses[-1]:.3f}"
        if logits is not None:
            post["max_logit"] = f"{float(logits.max()):.1f}"
        self.bar.set_postfix(post, refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


__all__ = ["TrainConfig", "TrainError", "DataError", "DEFAULT_LR", "ADAMW_AUX_LR", "NON_TRAJECTORY_FIELDS",
           "auto_eval_every", "build_model", "build_optimizer", "train_step",
           "evaluate", "train", "lr_multiplier", "set_lr", "save_checkpoint", "load_checkpoint", "uncompiled_state_dict",
           "COMPILED_PREFIX", "History", "summarize", "plot_results"]
