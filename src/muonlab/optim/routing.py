"""Which parameter gets which rule: ``param_groups(model)`` and ``explain(model)``.

A 2-D shape alone does not tell a hidden matrix from an embedding table or an output head (docs/math.md §4),
so routing looks at the modules that own each parameter. Rules, first match wins:

1. ``overrides``: a glob on the parameter name → the kind you say;
2. fewer than 2 dimensions → ``"vector"`` (biases, norm gains, scalars);
3. a weight shared by an embedding and another module (tied input/output) → ``"head"``;
4. owned by ``nn.Embedding``/``nn.EmbeddingBag`` → ``"embedding"``;
5. owned by a module named like a head (``head_names``, or ending in ``_head``) → ``"head"``;
6. **guessed output layer** (only when no parameter is a head by rules 1, 3 or 5, and ``guess_head=True``): the weight of the
   *last* ``nn.Linear`` in registration order → ``"head"`` when either
   a. it maps an embedding's width back to that embedding's rows (``in_features == embedding_dim`` and
      ``out_features == num_embeddings != embedding_dim``: a vocabulary projection, untied), or
   b. no other ``nn.Linear`` takes ``out_features`` inputs (its output feeds no further linear layer: the logits of
      ``nn.Sequential(..., nn.Linear(128, 10))``);
7. a conv filter → ``"matrix"``, flattened to (out, in·k…);
8. other ≥ 3-D tensors → ``"matrix"``, a batch of their last two dims (``stack_layout``);
9. other 2-D → ``"matrix"`` (hidden layer).

Why rule 6 looks only at the last Linear: a hidden layer's outputs are always some layer's inputs, so a Linear whose
width no other Linear reads is an output; but widths coincide (vocab 512 = 4 × d_model 128 makes an MLP's up-projection
look like a vocabulary projection; a 16-row position table of a width-16 model matches every width-16 layer), so the
guess is confined to the one layer that output layers almost always are, the last one registered, and rule a asks for
both of the embedding's sizes. A model that registers its head first, or ends with a layer whose width happens to match another
Linear's input (e.g. ``nn.Linear(16, 16)`` after ``nn.Linear(16, 16)``), is not recognised: name the module ``head``
(or pass ``head_names``), or say it with ``overrides={"fc.weight": "head"}``. Guessed routes are marked ``guessed``
and :func:`explain` lists them with the override that undoes them (``overrides={"NAME": "matrix"}``, or
``guess_head=False`` for none).

Matrix kinds get the spectral update; the other kinds the optimizers' built-in AdamW part.
``heads`` asks for per-head orthogonalization: ``{"*.q_proj.weight": 8, "*.qkv.weight":
{"split_sizes": (512, 512, 512), "num_heads": 8}}``.
"""

from __future__ import annotations

import fnmatch
import sys
from dataclasses import dataclass, field
from typing import Any, Mapping, TextIO

import torch
from torch import nn

from muonlab.optim.groups import KINDS
from muonlab.optim.pipeline import TENSOR_LAYOUTS

HEAD_NAMES = ("head", "lm_head", "classifier", "output_layer")
EMBEDDING_TYPES = (nn.Embedding, nn.EmbeddingBag)


@dataclass
class Route:
    """One parameter's routing decision."""

    name: str
    param: torch.Tensor
    kind: str
    reason: str
    options: dict[str, Any] = field(default_factory=dict)
    guessed: bool = False   # decided by the output-layer heuristic (rule 6), not by a name, a tie or an override


def _matches(patterns: Mapping[str, Any] | None, names: list[str]) -> tuple[str, Any] | None:
    for pattern, value in (patterns or {}).items():
        if any(fnmatch.fnmatchcase(n, pattern) for n in names):
            return pattern, value
    return None


def route(
    model: nn.Module,
    *,
    head_names: tuple[str, ...] = HEAD_NAMES,
    overrides: Mapping[str, str] | None = None,
    heads: Mapping[str, int | Mapping[str, Any]] | None = None,
    stack_layout: str = "batch",
    guess_head: bool = True,
) -> list[Route]:
    """The routing decision for every trainable parameter of ``model`` (see module docstring)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if stack_layout not in TENSOR_LAYOUTS:
        raise ValueError(f"stack_layout must be one of {', '.join(TENSOR_LAYOUTS)}; got {stack_layout!r}")
    for pattern, kind in (overrides or {}).items():
        if kind not in KINDS:
            raise ValueError(f"overrides[{pattern!r}] must be one of {', '.join(KINDS)}; got {kind!r}")

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
    decided = [
        _route_one(name, p, owners.get(id(p), []), aliases.get(id(p), [name]), head_names, overrides, stack_layout)
        for name, p in trainable
    ]
    guess = _guess_output_layer(model) if guess_head and not any(r.kind == "head" for r in decided) else None
    routes = []
    for (name, p), route_ in zip(trainable, decided):
        names = aliases.get(id(p), [name])
        if guess is not None and p is guess[0] and route_.kind == "matrix" and not route_.reason.startswith("override"):
            route_ = Route(name, p, "head", f"guessed output layer: {guess[1]}", guessed=True)
        if route_.kind == "matrix":
            hit = _matches(heads, names)
            if hit is not None:
                pattern, spec = hit
                spec = {"num_heads": spec} if isinstance(spec, int) else dict(spec)
                unknown = set(spec) - {"num_heads", "split_sizes"}
                if unknown:
                    raise ValueError(f"heads[{pattern!r}] accepts num_heads and split_sizes; got {sorted(unknown)}")
                route_.options.update(spec)
                route_.reason += f"; per-head blocks {spec} (heads[{pattern!r}])"
        routes.append(route_)
    return routes


def _route_one(name, p, mods, names, head_names, overrides, stack_layout) -> Route:
    hit = _matches(overrides, names)
    if hit is not None:
        pattern, kind = hit
        options = {"tensor_layout": "flatten" if _is_conv(mods) else stack_layout} if kind == "matrix" and p.dim() >= 3 else {}
        return Route(name, p, kind, f"override {pattern!r}", options)
    if p.dim() < 2:
        what = "scalar" if p.dim() == 0 else "1-D (bias, norm gain or other vector)"
        return Route(name, p, "vector", what)
    embeds = [n for n, m in mods if isinstance(m, EMBEDDING_TYPES)]
    others = [n or "<root>" for n, m in mods if not isinstance(m, EMBEDDING_TYPES)]
    if embeds and others:
        return Route(name, p, "head", f"tied: shared by embedding {embeds[0]!r} and {others[0]!r}")
    if embeds:
        return Route(name, p, "embedding", f"weight of {type(mods[0][1]).__name__} {embeds[0]!r}")
    for mod_name, _ in mods:
        last = mod_name.rsplit(".", 1)[-1]
        if last in head_names or last.endswith("_head"):
            return Route(name, p, "head", f"module named {last!r} (an output head)")
    if _is_conv(mods):
        shape = tuple(p.shape)
        return Route(
            name, p, "matrix", f"conv filter {shape} flattened to ({shape[0]}, {p[0].numel()})", {"tensor_layout": "flatten"}
        )
    if p.dim() >= 3:
        batch = p.shape[:-2].numel()
        if stack_layout == "batch":
            why = f"{p.dim()}-D stack: {batch} matrices of {tuple(p.shape[-2:])}"
        else:
            why = f"{p.dim()}-D tensor flattened to ({p.shape[0]}, {p[0].numel()})"
        return Route(name, p, "matrix", why, {"tensor_layout": stack_layout})
    return Route(name, p, "matrix", "2-D hidden matrix")


def _guess_output_layer(model: nn.Module) -> tuple[torch.Tensor, str] | None:
    """Rule 6 of the module docstring: (weight, reason) of the last trainable nn.Linear if it looks like the
    model's output layer, else None."""
    # frozen Linears count as layers (a frozen head still makes the layer before it hidden); only a trainable
    # last one can be routed
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears or not linears[-1][1].weight.requires_grad:
        return None
    name, last = linears[-1]
    what = f"last nn.Linear {name or '<root>'!r}"
    tables = {(m.embedding_dim, m.num_embeddings) for m in model.modules() if isinstance(m, EMBEDDING_TYPES)}
    if (last.in_features, last.out_features) in tables and last.in_features != last.out_features:
        return last.weight, (f"{what} maps the embedding's width {last.in_features} to its {last.out_features} rows "
                             "(a vocabulary projection)")
    if all(m.in_features != last.out_features for _, m in linears[:-1]):
        return last.weight, f"{what}, its {last.out_features} outputs feed no other Linear"
    return None


def _is_conv(mods) -> bool:
    return any(isinstance(m, nn.modules.conv._ConvNd) for _, m in mods)


def param_groups(model: nn.Module, **kwargs) -> list[dict]:
    """Param-group dicts for any muonlab optimizer: ``"params"``, ``"param_names"``, ``"kind"`` (and
    ``"tensor_layout"``/``"num_heads"``/``"split_sizes"`` where needed), in order of first appearance.

    Keyword arguments are those of :func:`route`: ``head_names``, ``overrides``, ``heads``, ``stack_layout``,
    ``guess_head``.
    """
    groups: dict[tuple, dict] = {}
    for r in route(model, **kwargs):
        options = dict(r.options)
        if r.kind == "matrix" and r.param.dim() == 2 and "tensor_layout" not in options:
            options["tensor_layout"] = "flatten"  # irrelevant for 2-D: shares the conv group
        if "split_sizes" in options and options["split_sizes"] is not None:
            options["split_sizes"] = tuple(options["split_sizes"])
        key = (r.kind, tuple(sorted(options.items())))
        if key not in groups:
            groups[key] = {"params": [], "param_names": [], "kind": r.kind, **options}
        groups[key]["params"].append(r.param)
        groups[key]["param_names"].append(r.name)
    return list(groups.values())


def explain(model: nn.Module, *, file: TextIO | None = sys.stdout, **kwargs) -> str:
    """A table of every parameter: shape, kind, update rule and why. Printed to ``file`` (None: not printed).

    Routes decided by the output-layer guess (rule 6) are marked ``(guessed)`` in the kind column, and a note after
    the table says how to override each of them."""
    rows = [("parameter", "shape", "kind", "rule", "why")]
    routes = route(model, **kwargs)
    for r in routes:
        rows.append(
            (r.name, "×".join(map(str, r.param.shape)) or "scalar", r.kind + (" (guessed)" if r.guessed else ""),
             "spectral" if r.kind == "matrix" else "AdamW", r.reason)
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
