"""Which parameter gets which rule: ``param_groups(model)`` and ``explain(model)``.

A 2-D shape alone does not tell a hidden matrix from an embedding table or an output head (SPEC §4),
so routing looks at the modules that own each parameter. Rules, first match wins:

1. ``overrides``: a glob on the parameter name → the kind you say;
2. fewer than 2 dimensions → ``"vector"`` (biases, norm gains, scalars);
3. a weight shared by an embedding and another module (tied input/output) → ``"head"``;
4. owned by ``nn.Embedding``/``nn.EmbeddingBag`` → ``"embedding"``;
5. owned by a module named like a head (``head_names``, or ending in ``_head``) → ``"head"``;
6. a conv filter → ``"matrix"``, flattened to (out, in·k…);
7. other ≥ 3-D tensors → ``"matrix"``, a batch of their last two dims (``stack_layout``);
8. other 2-D → ``"matrix"`` (hidden layer).

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

from muonlab.optim.base import KINDS
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

    routes = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        mods = owners.get(id(p), [])
        names = aliases.get(id(p), [name])
        route_ = _route_one(name, p, mods, names, head_names, overrides, stack_layout)
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


def _is_conv(mods) -> bool:
    return any(isinstance(m, nn.modules.conv._ConvNd) for _, m in mods)


def param_groups(model: nn.Module, **kwargs) -> list[dict]:
    """Param-group dicts for any muonlab optimizer: ``"params"``, ``"param_names"``, ``"kind"`` (and
    ``"tensor_layout"``/``"num_heads"``/``"split_sizes"`` where needed), in order of first appearance.

    Keyword arguments are those of :func:`route`: ``head_names``, ``overrides``, ``heads``, ``stack_layout``.
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
    """A table of every parameter: shape, kind, update rule and why. Printed to ``file`` (None: not printed)."""
    rows = [("parameter", "shape", "kind", "update", "why")]
    for r in route(model, **kwargs):
        rows.append(
            (r.name, "×".join(map(str, r.param.shape)) or "scalar", r.kind, "spectral" if r.kind == "matrix" else "AdamW", r.reason)
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths)) + "  " + row[4] for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    text = "\n".join(lines)
    if file is not None:
        print(text, file=file)
    return text
