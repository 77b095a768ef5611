"""A param group from the user's dict to the optimizer's: parameters checked, split by kind, routed to a rule.

Every group has a ``"kind"`` — ``"matrix"`` (the spectral update) or ``"embedding"``/``"head"``/``"vector"`` (the
built-in AdamW part). A group without a kind (e.g. ``Muon(model.parameters())``) is split: ≥ 2-D parameters → a
matrix group, 0-/1-D → a vector group. After routing every group has ``"rule"`` ∈ :data:`RULES`; an AdamW group's
``"lr"``, ``"betas"``, ``"eps"``, ``"weight_decay"`` are the AdamW values (taken from ``adamw_lr``/… or the group's
own ``"adamw_*"`` keys), so LR schedulers scale both parts alike.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import torch

from muonlab.optim import pipeline as pl
from muonlab.optim.settings import Blocks, check_betas, check_nonnegative

KINDS = ("matrix", "embedding", "head", "vector")
RULES = ("spectral", "adamw")
# Param-group keys besides the optimizer's defaults: routing keys, and the LR schedulers' initial_lr.
GROUP_KEYS = frozenset({"params", "param_names", "kind", "rule", "initial_lr"})
# Older names of group keys, accepted in a group and in a saved checkpoint: old name → name.
RENAMED_KEYS = {"update": "rule", "steps": "ns_steps"}

# Keller Jordan's auxiliary Adam for the non-matrix parameters (github.com/KellerJordan/Muon).
ADAMW_DEFAULTS = {"adamw_lr": 3e-4, "adamw_betas": (0.9, 0.95), "adamw_eps": 1e-10, "adamw_weight_decay": 0.0}
# Keys every group carries whatever its rule: the AdamW part's, the block layout and the state's storage.
SHARED_KEYS = ("tensor_layout", "num_heads", "split_sizes", "transposed", "state_dtype", "param_rounding")


def label(group: Mapping, index: int) -> str:
    """How messages name parameter ``index`` of ``group``: its name when the group has names."""
    names = group.get("param_names")
    if names is not None:
        return f"parameter {names[index]!r}"
    return f"parameter #{index} of its group"


def rename_old_keys(group: dict, known: Iterable[str]) -> dict:
    """``group`` with the keys of :data:`RENAMED_KEYS` under their current names (when the optimizer knows the
    current name); a group giving both names with different values is refused."""
    known = set(known)
    for old, new in RENAMED_KEYS.items():
        if old in group and old not in known and new in known:
            value = group.pop(old)
            if new in group and group[new] is not None and group[new] != value:
                raise ValueError(f"{old} is the old name of {new}: give one, got {new}={group[new]!r}, {old}={value!r}")
            if new not in group or group[new] is None:
                group[new] = value
    return group


def normalize(param_group: dict, defaults: Mapping, owner: str) -> dict:
    """A copy of the user's group with ``params`` a list of floating-point tensors (names split off into
    ``param_names``), old key names renamed and unknown keys refused."""
    if not isinstance(param_group, dict):
        raise TypeError(f"param_group must be a dict, got {type(param_group).__name__}")
    group = rename_old_keys(dict(param_group), set(defaults) | GROUP_KEYS)
    unknown = sorted(set(group) - set(defaults) - GROUP_KEYS, key=str)
    if unknown:
        raise ValueError(
            f"unknown param-group key(s) {', '.join(map(repr, unknown))} for {owner}; "
            f"it accepts {', '.join(sorted(set(defaults) | GROUP_KEYS))} "
            "(the AdamW part is set with the adamw_* keys)"
        )
    if "params" not in group:
        raise ValueError("a param group needs a 'params' entry")
    params = group["params"]
    if isinstance(params, torch.Tensor):
        params = [params]
    elif isinstance(params, set):
        raise TypeError("params must be an ordered collection (list), not a set: its order changes between runs")
    params = list(params)
    names = group.get("param_names")
    named = [isinstance(p, tuple) for p in params]
    if any(named) and not all(named):  # torch.optim.Optimizer's error for a mix of (name, tensor) and tensors
        raise ValueError("all optimizer params should be with/without names. Some param names are missing")
    if params and all(named):
        if any(len(p) != 2 for p in params):
            raise ValueError("named params must be (name, tensor) pairs, as model.named_parameters() gives")
        names = [n for n, _ in params]
        params = [p for _, p in params]
    group["params"] = params
    if names is not None:
        group["param_names"] = list(names)
    for i, p in enumerate(params):
        if not isinstance(p, torch.Tensor):
            raise TypeError(f"params must be tensors, got {type(p).__name__} at position {i}")
        if p.is_complex():
            raise ValueError(f"{owner} does not support complex parameters; got {label(group, i)} with dtype {p.dtype}")
        if not p.is_floating_point():
            raise ValueError(f"parameters must be floating point; got {label(group, i)} with dtype {p.dtype}")
    return group


def match_names(groups: list[dict], group: dict) -> None:
    """Make ``group`` and the optimizer's ``groups`` all named or all unnamed, as torch.optim requires, by generating
    ``group{i}.param{j}`` names for the side that has none (see SpectralOptimizer.add_param_group)."""
    if not groups:
        return
    named = ["param_names" in g for g in groups]
    if all(named) and "param_names" not in group:
        index = len(groups)
        group["param_names"] = [f"group{index}.param{j}" for j in range(len(group["params"]))]
    elif not any(named) and "param_names" in group:
        for i, g in enumerate(groups):
            g["param_names"] = [f"group{i}.param{j}" for j in range(len(g["params"]))]


def _layout(groups) -> str:
    return ", ".join(f"{g.get('kind', '?')} ({len(g['params'])})" for g in groups)


def check_same_groups(owner: str, saved: list[Mapping], current: list[Mapping]) -> None:
    """Refuse a state dict whose groups do not have the sizes of this optimizer's, in one message that says what
    each side has and how to build the optimizer the saving one was (torch's own message names neither)."""
    if len(saved) == len(current) and all(len(s["params"]) == len(c["params"]) for s, c in zip(saved, current)):
        return
    routed = all("kind" in g for g in saved) and any(g.get("kind") != "matrix" and g.get("kind") != "vector"
                                                      for g in saved)
    how = ("it was built from muonlab.param_groups(model) (embedding/head groups): build this one the same way, "
           f"{owner}(muonlab.param_groups(model), ...), with the same routing arguments" if routed else
           "build this optimizer with the same parameter groups, in the same order, as the one that saved it")
    raise ValueError(
        f"{owner}.load_state_dict: the state dict has {len(saved)} param groups [kind (parameters): {_layout(saved)}] "
        f"and this optimizer {len(current)} [{_layout(current)}]; {how}"
    )


def split_by_kind(group: dict) -> list[dict]:
    """The group itself when it has a kind; else a matrix group of its ≥ 2-D parameters and a vector group of the
    rest (an empty group becomes an empty matrix group)."""
    kind = group.get("kind")
    if kind not in (None, "auto"):
        if kind not in KINDS:
            raise ValueError(f"param group 'kind' must be one of {', '.join(KINDS)} (or None/'auto'); got {kind!r}")
        return [group]
    params, names = group["params"], group.get("param_names")
    by_kind = {"matrix": [], "vector": []}
    for i, p in enumerate(params):
        by_kind["matrix" if p.dim() >= 2 else "vector"].append(i)
    out = []
    for sub_kind, idx in by_kind.items():
        if idx or (not params and sub_kind == "matrix"):
            sub = dict(group, params=[params[i] for i in idx], kind=sub_kind)
            if names is not None:
                sub["param_names"] = [names[i] for i in idx]
            out.append(sub)
    return out


def route(group: dict, defaults: Mapping, where: str) -> dict:
    """Fill the group's defaults and its ``"rule"``; an AdamW group gets its AdamW values as ``lr``/``betas``/…"""
    for key, default in defaults.items():
        if key.startswith("adamw_") or key in SHARED_KEYS:
            group.setdefault(key, default)
    check_adamw_part(group, where)
    if group["kind"] == "matrix":
        group["rule"] = "spectral"
        for key, default in defaults.items():
            group.setdefault(key, default)
    else:
        group["rule"] = "adamw"
        group["lr"] = group["adamw_lr"]
        group["betas"] = tuple(group["adamw_betas"])
        group["eps"] = group["adamw_eps"]
        group["weight_decay"] = group["adamw_weight_decay"]
    return group


def check_adamw_part(group: Mapping, where: str) -> None:
    """The ``adamw_*`` keys and the block layout, which every group carries whatever its rule."""
    check_nonnegative(group["adamw_lr"], f"{where}adamw_lr")
    check_betas(group["adamw_betas"], f"{where}adamw_betas")
    check_nonnegative(group["adamw_eps"], f"{where}adamw_eps")
    check_nonnegative(group["adamw_weight_decay"], f"{where}adamw_weight_decay")
    Blocks.from_group(group, where)


def check_matrices(group: Mapping, blocks: Blocks, where: str) -> None:
    """Every parameter of a matrix group is ≥ 2-D and its rows tile into the group's blocks."""
    for i, p in enumerate(group["params"]):
        if p.dim() < 2:
            raise ValueError(
                f"{where}{label(group, i)} has shape {tuple(p.shape)}: a 'matrix' group needs "
                "parameters with at least 2 dimensions (put vectors in a 'vector' group)"
            )
        if blocks.transposed and p.dim() != 2:
            raise ValueError(f"{where}{label(group, i)} has shape {tuple(p.shape)}: transposed=True applies to 2-D "
                             "weights stored as (in, out)")
        if blocks.whole:
            continue
        try:
            pl.block_shapes(p.shape, blocks)
        except ValueError as err:
            raise ValueError(f"{where}{label(group, i)}: {err}") from None


def with_grads(
    param_groups: list[dict], optimizer: str
) -> tuple[list[tuple[dict, list[torch.Tensor]]], list[torch.Tensor]]:
    """A step's work: each group with its parameters that have a gradient, and all those gradients in order. A sparse
    gradient is refused (``optimizer`` names the optimizer in the message)."""
    work: list[tuple[dict, list[torch.Tensor]]] = []
    grads: list[torch.Tensor] = []
    for group in param_groups:
        params = []
        for i, p in enumerate(group["params"]):
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError(
                    f"{optimizer} does not support sparse gradients; {label(group, i)} has one "
                    "(use nn.Embedding(sparse=False))"
                )
            params.append(p)
            grads.append(p.grad)
        work.append((group, params))
    return work, grads
