"""``muonlab train``: train the small GPT on a corpus with any muonlab optimizer (see train.py)."""

from __future__ import annotations

import argparse
import os


def add_arguments(p: argparse.ArgumentParser) -> None:
    from muonlab.tasks.lm.model import PRESETS
    from muonlab.tasks.lm.train import DEFAULT_LR, TrainConfig

    d = TrainConfig()
    g = p.add_argument_group("data")
    g.add_argument("--data", default=None,
                   help="text file, directory, or hf:NAME[:CONFIG] (default: the Python standard library's sources)")
    g.add_argument("--tokenizer", choices=("byte", "bpe"), default=d.tokenizer,
                   help="byte (257 symbols) or bpe (trained on the training split) (default: %(default)s)")
    g.add_argument("--vocab-size", type=int, default=d.vocab_size,
                   help="BPE vocabulary size; ignored with --tokenizer byte (default: %(default)s)")
    g.add_argument("--val-fraction", type=float, default=d.val_fraction,
                   help="share of the documents held out for validation (default: %(default)s)")
    g = p.add_argument_group("model")
    g.add_argument("--model", default=d.model, choices=sorted(PRESETS), metavar="{" + ",".join(PRESETS) + "}",
                   help="size preset: micro (tests), tiny 4x128, small 6x384, medium 8x512, gpt2 12x768 "
                        "(default: %(default)s)")
    g.add_argument("--attention", choices=("mha", "gqa", "mla"), default=d.attention,
                   help="multi-head, grouped-query, or multi-head latent attention (default: %(default)s)")
    g.add_argument("--n-kv-head", type=int, default=None, help="GQA key/value heads (default: n_head/2)")
    g.add_argument("--qk-norm", action="store_true", help="RMS-normalize queries and keys (default: off)")
    g.add_argument("--untied", action="store_true", help="separate output head (default: tied to the embedding)")
    g.add_argument("--block-size", type=int, default=None, help="context length in tokens (default: the preset's)")
    g = p.add_argument_group("optimization")
    g.add_argument("--optimizer", default=d.optimizer, metavar="NAME",
                   help=f"one of {', '.join(DEFAULT_LR)}; adamw/sgd are torch's on every parameter, the others "
                        f"give hidden matrices their rule and the rest AdamW (default: %(default)s)")
    g.add_argument("--lr", type=float, default=None,
                   help="peak lr of the matrix parameters (default: tuned per optimizer: "
                        + ", ".join(f"{k} {v:g}" for k, v in DEFAULT_LR.items()) + ")")
    g.add_argument("--aux-lr", type=float, default=d.aux_lr,
                   help="AdamW lr of embeddings, head and vectors under a matrix optimizer (default: %(default)s)")
    g.add_argument("--weight-decay", type=float, default=d.weight_decay, help="decoupled weight decay (default: %(default)s)")
    g.add_argument("--cautious-wd", action="store_true",
                   help="cautious weight decay (arXiv 2510.12402) for the spectral optimizers: decay only the entries "
                        "where the weight and its update share a sign; needs --weight-decay > 0 to matter (default: off)")
    g.add_argument("--state-dtype", choices=("float32", "bfloat16", "bf16", "int8"), default=d.state_dtype,
                   help="spectral optimizers: store the optimizer state (momenta, the AdamW part's moments) in float32, "
                        "bfloat16 (stochastic rounding) or int8 (blockwise 8-bit); updated in fp32 (default: %(default)s)")
    g.add_argument("--param-dtype", choices=("float32", "bfloat16", "bf16"), default=d.param_dtype,
                   help="parameter storage: float32, or bfloat16 without an fp32 copy (the forward then runs in bf16) "
                        "(default: %(default)s)")
    g.add_argument("--param-rounding", choices=("nearest", "stochastic"), default=d.param_rounding,
                   help="with --param-dtype bf16 and a spectral optimizer: round each parameter update to bf16 to "
                        "nearest or stochastically (unbiased: small updates survive on average) (default: %(default)s)")
    g.add_argument("--warmup-steps", type=int, default=None, help="linear warm-up steps (default: 5%% of --steps)")
    g.add_argument("--grad-clip", type=float, default=d.grad_clip,
                   help="clip the global gradient norm to this; 0 disables (default: %(default)s)")
    g.add_argument("--batch-size", type=int, default=d.batch_size,
                   help="sequences per step (per rank with --parallel) (default: %(default)s)")
    g.add_argument("--steps", type=int, default=d.steps,
                   help="optimizer steps; the lr warms up, then follows a cosine to 10%% of its peak at the last step. "
                        "With --resume it may differ from the checkpoint's: the schedule is a function of "
                        "(step, --steps), so a new total recomputes the cosine and the run continues on it from the "
                        "checkpoint's step (the log prints the lr before and after); only the same --steps is an "
                        "exact resume (default: %(default)s)")
    g.add_argument("--seed", type=int, default=d.seed, help="seed of the initialization and the batches (default: %(default)s)")
    g.add_argument("--qk-clip", type=float, default=None, metavar="TAU",
                   help="QK-Clip threshold tau on each head's max attention logit (default: no clipping)")
    g.add_argument("--no-record-logits", action="store_true",
                   help="skip measuring max attention logits after each step (saves one forward; default: measured)")
    g = p.add_argument_group("run")
    g.add_argument("--eval-every", type=int, default=None,
                   help="validation every N steps and at the end (default: --steps/10 clamped to 1..50, so "
                        "even a short run draws a validation curve)")
    g.add_argument("--eval-batches", type=int, default=d.eval_batches,
                   help="fixed validation batches per evaluation (default: %(default)s)")
    g.add_argument("--ckpt-every", type=int, default=d.ckpt_every,
                   help="write OUT/checkpoint.pt every N steps; also at the end and on Ctrl-C (default: %(default)s)")
    g.add_argument("--device", default=d.device, help="cpu, cuda, cuda:N, or auto = cuda if available (default: %(default)s)")
    g.add_argument("--threads", type=int, default=None,
                   help="CPU threads; on a machine shared with other jobs, 1 is often several times faster "
                        "(default: torch's)")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the model (and a fused AdamW step on CUDA); meant for CUDA: on CPU it gains "
                        "~10%% per step after minutes of first-time compilation (BENCHMARKS.md) (default: off)")
    g.add_argument("--parallel", choices=("none", "ddp", "fsdp"), default=d.parallel,
                   help="data parallel over torchrun ranks: ddp (replicated) or fsdp (FSDP2 shards); gloo on CPU, "
                        "nccl on CUDA (default: %(default)s)")
    g.add_argument("--out", default=d.out,
                   help="output folder: checkpoint.pt, results.json, loss.png, max_logit.png; checked before "
                        "training starts (default: %(default)s)")
    g.add_argument("--resume", action="store_true",
                   help="continue from OUT/checkpoint.pt with the same flags (--steps may grow; see --steps) "
                        "(default: a fresh run, which refuses an OUT that holds a checkpoint)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar (default: a tqdm bar)")


def config_from_args(args: argparse.Namespace):
    from muonlab.tasks.lm.train import TrainConfig

    return TrainConfig(
        data=args.data, tokenizer=args.tokenizer, vocab_size=args.vocab_size, val_fraction=args.val_fraction,
        model=args.model, attention=args.attention, n_kv_head=args.n_kv_head, qk_norm=args.qk_norm,
        tie_embeddings=not args.untied, block_size=args.block_size, batch_size=args.batch_size,
        optimizer=args.optimizer, lr=args.lr, aux_lr=args.aux_lr, weight_decay=args.weight_decay,
        cautious_wd=args.cautious_wd,
        state_dtype={"bf16": "bfloat16"}.get(args.state_dtype, args.state_dtype),
        param_dtype={"bf16": "bfloat16"}.get(args.param_dtype, args.param_dtype),
        param_rounding=args.param_rounding,
        warmup_steps=args.warmup_steps, grad_clip=args.grad_clip, steps=args.steps, seed=args.seed,
        eval_every=args.eval_every, eval_batches=args.eval_batches, ckpt_every=args.ckpt_every,
        qk_clip=args.qk_clip, record_logits=not args.no_record_logits, device=args.device, threads=args.threads,
        compile=args.compile,
        out=args.out, parallel=args.parallel,
        resume=args.resume, progress=not args.no_progress,
    )


def main(args: argparse.Namespace) -> int:
    from muonlab.errors import CLIError
    from muonlab.tasks.lm.data import DataError
    from muonlab.tasks.lm.train import TrainError, train

    try:
        results = train(config_from_args(args))
    except (TrainError, DataError) as err:
        raise CLIError(str(err)) from err
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 reports
        return 130 if results["interrupted"] else (1 if results["diverged"] else 0)
    if results["interrupted"]:
        print(f"muonlab: interrupted after step {results['steps_done']}; checkpoint saved in {args.out}; "
              f"continue with the same command plus --resume")
        return 130
    if results["diverged"]:
        print(f"muonlab: training diverged (non-finite loss) at step {results['steps_done']}; try a smaller --lr")
        return 1
    print(f"final val loss {results['final_val_loss']:.4f} after {results['steps_done']} steps "
          f"({results['tokens_per_s']:,.0f} tokens/s)")
    print(f"wrote in {args.out}/: " + ", ".join(results.get("files", ["results.json"])))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a small GPT (MHA/GQA/MLA) with any optimizer, QK-Clip optional")
    add_arguments(p)
    p.set_defaults(func=main)
