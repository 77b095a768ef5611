"""Which parameter gets which update: ``param_groups(model)`` and ``explain(model)``.

A 2-D shape alone does not tell a hidden matrix from an embedding table, an output head or a matrix too thin to
orthogonalize (docs/math.md §4, docs/routing.md), so routing looks at the modules that own each parameter. The
criteria, in the order they are tried (first match wins), and the modifiers on top of a matrix decision are listed
in :mod:`muonlab.optim.criteria`; each can be switched off by name (``disable=("degenerate", ...)``, names from
:data:`CRITERIA`).

Matrix kinds get the spectral update; the other kinds the optimizers' built-in AdamW part.
``heads`` asks for per-head orthogonalization: ``{"*.q_proj.weight": 8, "*.qkv.weight":
{"split_sizes": (512, 512, 512), "num_heads": 8}}`` (it replaces a ``fused`` split of the same parameter).
"""

from __future__ import annotations

import fnmatch
import sys
from typing import Any, Iterable, Mapping, TextIO

import torch
from torch import nn

from muonlab.optim.criteria import (
    CRITERIA,
    HEAD_NAMES,
    MAX_ASPECT_RATIO,
    MIN_MATRIX_DIM,
    Route,
    RoutingContext,
    first_match,
    guess_output_layer,
    no_weight_decay_names,
    route_one,
)
from muonlab.optim.groups import KINDS
from muonlab.optim.pipeline import TENSOR_LAYOUTS


def looks_unrouted(names: Iterable[str]) -> list[str]:
    """The names among ``names`` that look like an embedding or an output head by name alone (a component in
    :data:`HEAD_NAMES` or ending in ``_head``, or containing "embed", or GPT-2's ``wte``/``wpe``): what a named
    parameter list routed by shape would send to the spectral update against the usual practice."""
    found = []
    for name in names:
        parts = name.split(".")
        if any(p in HEAD_NAMES or p.endswith("_head") or "embed" in p or p in ("wte", "wpe") for p in parts):
            found.append(name)
    return found


def unrouted_warning(names: list[str], params: list[torch.Tensor], optimizer: str) -> str | None:
    """The warning for a named parameter list without ``"kind"`` given to ``optimizer`` (routed by shape alone), when
    some of its ≥ 2-D tensors look like an embedding or an output head (:func:`looks_unrouted`); None otherwise."""
    unrouted = looks_unrouted([n for n, p in zip(names, params) if p.dim() >= 2])
    if not unrouted:
        return None
    return (f"{optimizer}: named parameters without a 'kind' are routed by shape alone: every ≥ 2-D tensor gets the "
            f"spectral update, including {', '.join(map(repr, unrouted[:4]))}{' …' if len(unrouted) > 4 else ''} "
            "(named like an embedding or an output head, which want AdamW). Routing by module needs the model: pass "
            "muonlab.param_groups(model) (muonlab.explain(model) shows each decision)")


def route(
    model: nn.Module,
    *,
    head_names: tuple[str, ...] = HEAD_NAMES,
    overrides: Mapping[str, str] | None = None,
    heads: Mapping[str, int | Mapping[str, Any]] | None = None,
    stack_layout: str = "batch",
    guess_head: bool = True,
    disable: Iterable[str] = (),
    min_dim: int = MIN_MATRIX_DIM,
    max_aspect: float = MAX_ASPECT_RATIO,
    router_kind: str = "matrix",
) -> list[Route]:
    """The routing decision for every trainable parameter of ``model`` (see :mod:`muonlab.optim.criteria`).

    ``disable``: names from :data:`CRITERIA` to switch off (``guess_head=False`` is ``disable=("guessed_head",)``);
    ``min_dim``/``max_aspect``: the ``degenerate`` thresholds; ``router_kind``: the kind of MoE routers."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if stack_layout not in TENSOR_LAYOUTS:
        raise ValueError(f"stack_layout must be one of {', '.join(TENSOR_LAYOUTS)}; got {stack_layout!r}")
    for pattern, kind in (overrides or {}).items():
        if kind not in KINDS:
            raise ValueError(f"overrides[{pattern!r}] must be one of {', '.join(KINDS)}; got {kind!r}")
    if isinstance(disable, str):
        disable = (disable,)
    disabled = frozenset(disable)
    unknown = sorted(disabled - set(CRITERIA))
    if unknown:
        raise ValueError(f"disable must name criteria from {', '.join(CRITERIA)}; got {', '.join(map(repr, unknown))}")
    if isinstance(min_dim, bool) or not isinstance(min_dim, int) or min_dim < 1:
        raise ValueError(f"min_dim must be a positive int, got {min_dim!r}")
    if isinstance(max_aspect, bool) or not isinstance(max_aspect, (int, float)) or not max_aspect >= 1:
        raise ValueError(f"max_aspect must be a number ≥ 1, got {max_aspect!r}")
    if router_kind not in KINDS:
        raise ValueError(f"router_kind must be one of {', '.join(KINDS)}; got {router_kind!r}")
    if not guess_head:
        disabled |= {"guessed_head"}
    ctx = RoutingContext(tuple(head_names), overrides, stack_layout, disabled, min_dim, float(max_aspect), router_kind)

    owners: dict[int, list[tuple[str, nn.Module]]] = {}
    aliases: dict[int, list[str]] = {}
    for mod_name, module in model.named_modules(remove_duplicate=False):
        for p_name, p in module.named_parameters(recurse=False):
            owners.setdefault(id(p), [])
            if all(m is not module for _, m in owners[id(p)]):
                owners[id(p)].append((mod_name, module))
            full = f"{mod_name}.{p_name}" if mod_name else p_name
            aliases.setdefault(id(p), [])
            if full not in aliases[id(p)]:
                aliases[id(p)].append(full)

    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    decided = [route_one(name, p, owners.get(id(p), []), aliases.get(id(p), [name]), ctx) for name, p in trainable]
    guess = None
    if "guessed_head" not in disabled and not any(r.kind == "head" for r in decided):
        guess = guess_output_layer(model)
    no_decay = no_weight_decay_names(model) if "no_weight_decay" not in disabled else ()
    routes = []
    for (name, p), route_ in zip(trainable, decided):
        names = aliases.get(id(p), [name])
        if guess is not None and p is guess[0] and route_.kind == "matrix" and route_.criterion != "override":
            route_ = Route(name, p, "head", f"guessed output layer: {guess[1]}", guessed=True, criteria=("guessed_head",))
        if route_.kind == "matrix":
            hit = first_match(heads, names)
            if hit is not None:
                pattern, spec = hit
                spec = {"num_heads": spec} if isinstance(spec, int) else dict(spec)
                unknown = set(spec) - {"num_heads", "split_sizes"}
                if unknown:
                    raise ValueError(f"heads[{pattern!r}] accepts num_heads and split_sizes; got {sorted(unknown)}")
                if "fused" in route_.criteria:   # the user's blocks replace the fused split
                    route_.options.pop("split_sizes", None)
                    route_.criteria = tuple(r for r in route_.criteria if r != "fused")
                    route_.reason = "; ".join(part for part in route_.reason.split("; ") if not part.startswith("fused:"))
                route_.options.update(spec)
                route_.reason += f"; heads: per-head blocks {spec} (heads[{pattern!r}])"
                route_.criteria += ("heads",)
        hit = next((n for n in names if any(fnmatch.fnmatchcase(n, pattern) for pattern in no_decay)), None)
        if hit is not None:
            route_.options["no_weight_decay"] = True
            route_.reason += "; no_weight_decay: weight decay 0 (listed by the model's no_weight_decay())"
            route_.criteria += ("no_weight_decay",)
        routes.append(route_)
    return routes


def param_groups(model: nn.Module, *, matrix_first: bool = False, **kwargs) -> list[dict]:
    """Param-group dicts for any muonlab optimizer: ``"params"``, ``"param_names"``, ``"kind"`` (and
    ``"tensor_layout"``/``"num_heads"``/``"split_sizes"``/``"transposed"`` where needed; ``"weight_decay"`` or
    ``"adamw_weight_decay"`` 0 for the model's ``no_weight_decay()`` names), in order of first appearance —
    the spectral (``"matrix"``) groups first with ``matrix_first=True``, for frameworks that report group 0's lr as
    *the* learning rate (Hugging Face's Trainer, Lightning's progress bar).

    Keyword arguments are those of :func:`route`: ``head_names``, ``overrides``, ``heads``, ``stack_layout``,
    ``guess_head``, ``disable``, ``min_dim``, ``max_aspect``, ``router_kind``.
    """
    groups: dict[tuple, dict] = {}
    for r in route(model, **kwargs):
        options = dict(r.options)
        if r.kind == "matrix" and r.param.dim() == 2 and "tensor_layout" not in options:
            options["tensor_layout"] = "flatten"  # irrelevant for 2-D: shares the conv group
        if "split_sizes" in options and options["split_sizes"] is not None:
            options["split_sizes"] = tuple(options["split_sizes"])
        if options.pop("no_weight_decay", False):
            options["weight_decay" if r.kind == "matrix" else "adamw_weight_decay"] = 0.0
        key = (r.kind, tuple(sorted(options.items())))
        if key not in groups:
            groups[key] = {"params": [], "param_names": [], "kind": r.kind, **options}
        groups[key]["params"].append(r.param)
        groups[key]["param_names"].append(r.name)
    out = list(groups.values())
    if matrix_first:
        out.sort(key=lambda g: g["kind"] != "matrix")   # stable: first appearance within each part
    return out


def explain(model: nn.Module, *, file: TextIO | None = sys.stdout, **kwargs) -> str:
    """A table of every parameter: shape, kind, update and why — ``criterion: reason``, the criterion's name (from
    :mod:`muonlab.optim.criteria`; ``disable=`` takes those names) first. Printed to ``file`` (None: not printed).

    Routes decided by the output-layer guess (10.) are marked ``(guessed)`` in the kind column, and a note after
    the table says how to override each of them."""
    rows = [("parameter", "shape", "kind", "rule", "why")]
    routes = route(model, **kwargs)
    for r in routes:
        rows.append(
            (r.name, "×".join(map(str, r.param.shape)) or "scalar", r.kind + (" (guessed)" if r.guessed else ""),
             "spectral" if r.kind == "matrix" else "AdamW", f"{r.criterion}: {r.reason}")
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths)) + "  " + row[4] for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    guessed = [r.name for r in routes if r.guessed]
    if guessed:
        undo = ", ".join(f"{n!r}: 'matrix'" for n in guessed)
        lines.append(
            f"guessed: {', '.join(guessed)} routed as the output layer (no module named like a head, no tied "
            f"embedding). If wrong, pass overrides={{{undo}}} (or guess_head=False) to param_groups/explain; if right, "
            "name the module 'head' or pass overrides={" + undo.replace("'matrix'", "'head'") + "} to make it explicit."
        )
    text = "\n".join(lines)
    if file is not None:
        print(text, file=file)
    return text
