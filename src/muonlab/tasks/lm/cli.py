"""``muonlab train``: train the small GPT on a corpus with any muonlab optimizer (see train.py)."""

from __future__ import annotations

import argparse
import dataclasses
import os
import typing


def _option_type(config: type, field) -> type:
    """The argparse type of a TrainConfig field: its annotation without ``| None``."""
    hint = typing.get_type_hints(config)[field.name]
    kinds = [k for k in typing.get_args(hint) if k is not type(None)] or [hint]
    return kinds[0]


def add_arguments(p: argparse.ArgumentParser, config: type | None = None) -> None:
    """One option per field of ``config`` (default :class:`TrainConfig`) that declares one (``option(...)`` in
    config.py), in its group, with the field's default: the dataclass is the one list of the trainer's settings."""
    if config is None:
        from muonlab.tasks.lm.train import TrainConfig as config

    groups: dict[str, argparse._ArgumentGroup] = {}
    for field in dataclasses.fields(config):
        spec = field.metadata.get("cli")
        if spec is None:
            continue
        group = groups.get(spec["group"]) or groups.setdefault(spec["group"], p.add_argument_group(spec["group"]))
        flag = spec["flag"] or "--" + field.name.replace("_", "-")
        kind = _option_type(config, field)
        if kind is bool:
            group.add_argument(flag, dest=field.name, action="store_false" if spec["negate"] else "store_true",
                               help=spec["help"])
            continue
        extra = {k: spec[k] for k in ("choices", "metavar") if spec[k] is not None}
        if spec["choices"] is not None and spec["aliases"]:
            extra["choices"] = (*spec["choices"], *spec["aliases"])
        group.add_argument(flag, dest=field.name, type=kind, default=field.default, help=spec["help"], **extra)


def config_from_args(args: argparse.Namespace, config: type | None = None):
    """The ``config`` (default TrainConfig) of parsed ``muonlab train`` options: each option's value, an alias
    replaced by what it stands for; fields without an option keep their defaults."""
    if config is None:
        from muonlab.tasks.lm.train import TrainConfig as config

    values = {}
    for field in dataclasses.fields(config):
        spec = field.metadata.get("cli")
        if spec is not None:
            value = getattr(args, field.name)
            values[field.name] = spec["aliases"].get(value, value) if isinstance(value, str) else value
    return config(**values)


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
