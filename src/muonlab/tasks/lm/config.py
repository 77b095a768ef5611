"""The trainer's settings: :class:`TrainConfig` (one run; its fields are also the ``muonlab train`` options, see
:func:`option`), the tuned default lr of each optimizer (:data:`DEFAULT_LR`), and their one validation.

``muonlab.tasks.lm.train`` re-exports these names, where callers import them from.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from muonlab.devices import device_problem
from muonlab.distributed.parallel import PARALLEL_STRATEGIES
from muonlab.tasks.lm.data import TOKENIZERS
from muonlab.tasks.lm.errors import TrainError
from muonlab.tasks.lm.model import ATTENTION_KINDS, PRESETS, preset_problem

# The trainer's default peak lr of each optimizer of muonlab.optim.OPTIMIZERS (the lr of the matrix parameters;
# embeddings, head and vectors ride on AdamW at ADAMW_AUX_LR), tuned by a short sweep at --model tiny, batch 16 x 128
# (BENCHMARKS.md). They belong to this task, not to the optimizers: a registry default (``defaults["lr"]``) is the
# starting point for small non-LM models.
DEFAULT_LR: dict[str, float] = {
    "muon": 0.02, "normuon": 0.02, "polargrad": 0.02, "simplified_muon": 0.02,
    "msgd": 0.3, "msgds": 0.05, "msgdq": 0.02, "msgdz": 0.02,
    "adam": 0.003, "adams": 0.01, "adamq": 0.02, "adamz": 0.02,
    "adamw": 0.003, "sgd": 0.1,
}
ADAMW_AUX_LR = 3e-3
# Config fields that do not change the trajectory: a resume may change them freely. ``steps`` is handled on its own
# (load_checkpoint): a resume may lengthen or shorten the run down to the checkpoint's step.
NON_TRAJECTORY_FIELDS = {"out", "progress", "ckpt_every", "device", "resume", "threads", "compile"}
STATE_DTYPES = ("float32", "bfloat16", "int8")
PARAM_DTYPES = ("float32", "bfloat16")
PARAM_ROUNDINGS = ("nearest", "stochastic")


def option(default, help: str, *, group: str, flag: str | None = None, negate: bool = False,
           choices: tuple | None = None, metavar: str | None = None, aliases: dict | None = None):
    """A :class:`TrainConfig` field that is also a ``muonlab train`` option (``tasks/lm/cli.py`` builds the parser
    from these): ``--NAME`` with dashes unless ``flag`` says otherwise; a bool is a switch that sets True, or False
    with ``negate`` (``--untied`` clears ``tie_embeddings``); ``help`` is argparse's (``%(default)s`` works);
    ``aliases`` maps other accepted spellings to the field's value (``{"bf16": "bfloat16"}``; they join ``choices``)."""
    return field(default=default, metadata={"cli": {"help": help, "group": group, "flag": flag, "negate": negate,
                                                    "choices": choices, "metavar": metavar,
                                                    "aliases": dict(aliases or {})}})


@dataclass
class TrainConfig:
    """One training run. Every field but ``min_lr_ratio`` is a ``muonlab train`` option: a new option is one field."""

    data: str | None = option(
        None, "text file, directory, or hf:NAME[:CONFIG] (default: the Python standard library's sources)",
        group="data")
    tokenizer: str = option(
        "byte", "byte (257 symbols) or bpe (trained on the training split) (default: %(default)s)",
        group="data", choices=TOKENIZERS)
    vocab_size: int = option(4096, "BPE vocabulary size; ignored with --tokenizer byte (default: %(default)s)",
                             group="data")
    val_fraction: float = option(0.05, "share of the documents held out for validation (default: %(default)s)",
                                 group="data")
    model: str = option(
        "tiny", "size preset: micro (tests), tiny 4x128, small 6x384, medium 8x512, gpt2 12x768 (default: %(default)s)",
        group="model", choices=tuple(sorted(PRESETS)), metavar="{" + ",".join(PRESETS) + "}")
    attention: str = option(
        "mha", "multi-head, grouped-query, or multi-head latent attention (default: %(default)s)",
        group="model", choices=ATTENTION_KINDS)
    n_kv_head: int | None = option(None, "GQA key/value heads (default: n_head/2)", group="model")
    qk_norm: bool = option(False, "RMS-normalize queries and keys (default: off)", group="model")
    tie_embeddings: bool = option(True, "separate output head (default: tied to the embedding)", group="model",
                                  flag="--untied", negate=True)
    block_size: int | None = option(None, "context length in tokens (default: the preset's)", group="model")
    optimizer: str = option(
        "adamw", f"one of {', '.join(DEFAULT_LR)}; adamw/sgd are torch's on every parameter, the others give hidden "
                 "matrices their rule and the rest AdamW (default: %(default)s)",
        group="optimization", metavar="NAME")
    lr: float | None = option(
        None, "peak lr of the matrix parameters (default: tuned per optimizer: "
              + ", ".join(f"{k} {v:g}" for k, v in DEFAULT_LR.items()) + ")",
        group="optimization")
    aux_lr: float = option(
        ADAMW_AUX_LR, "AdamW lr of embeddings, head and vectors under a matrix optimizer (default: %(default)s)",
        group="optimization")
    weight_decay: float = option(0.0, "decoupled weight decay (default: %(default)s)", group="optimization")
    cautious_wd: bool = option(
        False, "cautious weight decay (arXiv 2510.12402) for the spectral optimizers: decay only the entries where the "
               "weight and its update share a sign; needs --weight-decay > 0 to matter (default: off)",
        group="optimization")
    state_dtype: str = option(
        "float32", "spectral optimizers: store the optimizer state (momenta, the AdamW part's moments) in float32, "
                   "bfloat16 (stochastic rounding) or int8 (blockwise 8-bit); updated in fp32 (default: %(default)s)",
        group="optimization", choices=STATE_DTYPES, aliases={"bf16": "bfloat16"})
    param_dtype: str = option(
        "float32", "parameter storage: float32, or bfloat16 without an fp32 copy (the forward then runs in bf16) "
                   "(default: %(default)s)", group="optimization", choices=PARAM_DTYPES, aliases={"bf16": "bfloat16"})
    param_rounding: str = option(
        "nearest", "with --param-dtype bf16 and a spectral optimizer: round each parameter update to bf16 to nearest "
                   "or stochastically (unbiased: small updates survive on average) (default: %(default)s)",
        group="optimization", choices=PARAM_ROUNDINGS)
    warmup_steps: int | None = option(None, "linear warm-up steps (default: 5%% of --steps)", group="optimization")
    min_lr_ratio: float = 0.1          # the cosine's floor, as a share of the peak lr
    grad_clip: float = option(1.0, "clip the global gradient norm to this; 0 disables (default: %(default)s)",
                              group="optimization")
    batch_size: int = option(16, "sequences per step (per rank with --parallel) (default: %(default)s)",
                             group="optimization")
    steps: int = option(
        500, "optimizer steps; the lr warms up, then follows a cosine to 10%% of its peak at the last step. With "
             "--resume it may differ from the checkpoint's: the schedule is a function of (step, --steps), so a new "
             "total recomputes the cosine and the run continues on it from the checkpoint's step (the log prints the "
             "lr before and after); only the same --steps is an exact resume (default: %(default)s)",
        group="optimization")
    seed: int = option(0, "seed of the initialization and the batches (default: %(default)s)", group="optimization")
    qk_clip: float | None = option(
        None, "QK-Clip threshold tau on each head's max attention logit (default: no clipping)",
        group="optimization", metavar="TAU")
    record_logits: bool = option(
        True, "skip measuring max attention logits after each step (saves one forward; default: measured)",
        group="optimization", flag="--no-record-logits", negate=True)
    eval_every: int | None = option(
        None, "validation every N steps and at the end (default: --steps/10 clamped to 1..50, so even a short run "
              "draws a validation curve)", group="run")
    eval_batches: int = option(8, "fixed validation batches per evaluation (default: %(default)s)", group="run")
    ckpt_every: int = option(
        100, "write OUT/checkpoint.pt every N steps; also at the end and on Ctrl-C (default: %(default)s)", group="run")
    device: str = option("auto", "cpu, cuda, cuda:N, or auto = cuda if available (default: %(default)s)", group="run")
    threads: int | None = option(
        None, "CPU threads; on a machine shared with other jobs, 1 is often several times faster (default: torch's)",
        group="run")
    compile: bool = option(
        False, "torch.compile the model (and a fused AdamW step on CUDA); meant for CUDA: on CPU the gain per step "
               "comes after minutes of first-time compilation (BENCHMARKS.md) (default: off)", group="run")
    parallel: str = option(
        "none", "data parallel over torchrun ranks: ddp (replicated) or fsdp (FSDP2 shards); gloo on CPU, nccl on "
                "CUDA (default: %(default)s)", group="run", choices=PARALLEL_STRATEGIES)
    out: str = option(
        "runs/lm", "output folder: checkpoint.pt, results.json, loss.png, max_logit.png; checked before training "
                   "starts (default: %(default)s)", group="run")
    resume: bool = option(
        False, "continue from OUT/checkpoint.pt with the same flags (--steps may grow; see --steps) (default: a fresh "
               "run, which refuses an OUT that holds a checkpoint)", group="run")
    progress: bool = option(True, "no progress bar (default: a tqdm bar)", group="run", flag="--no-progress",
                            negate=True)

    def validate(self) -> "TrainConfig":
        problem = preset_problem(self.model) or device_problem(self.device)
        if problem:
            raise TrainError(problem)
        if self.attention not in ATTENTION_KINDS:
            raise TrainError(f"--attention must be one of {', '.join(ATTENTION_KINDS)}, got {self.attention!r}")
        known = set(DEFAULT_LR)
        if self.optimizer not in known:
            raise TrainError(f"--optimizer: unknown optimizer {self.optimizer!r}; expected one of {sorted(known)}")
        for name in ("steps", "batch_size", "eval_every", "eval_batches", "ckpt_every"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise TrainError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.state_dtype not in STATE_DTYPES:
            raise TrainError(f"--state-dtype must be one of {', '.join(STATE_DTYPES)}, got {self.state_dtype!r}")
        if self.param_dtype not in PARAM_DTYPES:
            raise TrainError(f"--param-dtype must be one of {', '.join(PARAM_DTYPES)}, got {self.param_dtype!r}")
        if self.param_rounding not in PARAM_ROUNDINGS:
            raise TrainError(f"--param-rounding must be nearest or stochastic, got {self.param_rounding!r}")
        if self.optimizer in ("adamw", "sgd") and (self.state_dtype != "float32" or self.param_rounding != "nearest"):
            raise TrainError(f"--state-dtype and --param-rounding apply to the spectral optimizers, not --optimizer "
                             f"{self.optimizer}")
        if self.param_rounding == "stochastic" and self.param_dtype != "bfloat16":
            raise TrainError("--param-rounding stochastic rounds bf16 parameters: it needs --param-dtype bf16")
        if self.cautious_wd and self.optimizer in ("adamw", "sgd"):
            raise TrainError(f"--cautious-wd applies to the spectral optimizers, not --optimizer {self.optimizer}")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise TrainError(f"--lr must be a positive number, got {self.lr}")
        if self.qk_clip is not None and not (math.isfinite(self.qk_clip) and self.qk_clip > 0):
            raise TrainError(f"--qk-clip must be a positive number (tau), got {self.qk_clip}")
        if self.parallel not in PARALLEL_STRATEGIES:
            raise TrainError(f"--parallel must be one of {', '.join(PARALLEL_STRATEGIES)}, got {self.parallel!r}")
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
