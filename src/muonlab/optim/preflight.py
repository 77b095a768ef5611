"""A pre-flight plan of a distributed step: who computes which matrices, bytes per rank, flops per rank.

``muonlab.plan(model_or_optimizer)`` reads the optimizer's groups, its chunks and each parameter's layout
(FSDP2, HSDP, FSDP2 over tensor parallelism, tensor parallelism, expert stacks, DDP) and works out, on the
rank that calls it and without any collective, what every rank of the mesh will do in each step: the
matrices it orthogonalizes whole (its own and the ones brought to it), the pieces it computes where they
live, the polar flops, and the bytes it will send and receive in each phase of
:func:`muonlab.distributed.comm.map_whole` (the same transfer lists the step runs, so the numbers equal what
:class:`muonlab.distributed.CommStats` counts). AdamW's step on the same layout moves nothing (it is
elementwise on each rank's shard); the traffic of the layout itself (FSDP's gathers and reduce-scatters,
tensor parallelism's activations) is the same for both and is measured by ``muonlab bench dist --layout``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from muonlab.optim.base import SpectralOptimizer
from muonlab.optim.chunks import matrix_blocks, wire_dtype
from muonlab.optim.state import local, state_dtype


@dataclass
class StepPlan:
    """Per-rank rows (``ranks``) of one step's matrix work; ``str()`` is a table."""

    ranks: list[dict] = field(default_factory=list)
    names: dict = field(default_factory=dict)  # (chunk, index) -> parameter name

    @property
    def imbalance(self) -> float | None:
        """Heaviest rank's polar flops over the mean (1.0 = perfectly even)."""
        flops = [r["flops"] for r in self.ranks]
        return max(flops) / (sum(flops) / len(flops)) if flops and sum(flops) else None

    def bytes_sent(self, rank: int) -> int:
        return sum(self.ranks[rank]["sent"].values())

    def bytes_received(self, rank: int) -> int:
        return sum(self.ranks[rank]["received"].values())

    def __str__(self) -> str:
        if not self.ranks:
            return "single process: every matrix is orthogonalized here; nothing is sent (AdamW: nothing either)"
        header = f"{'rank':>4} {'whole':>5} {'local':>5} {'polar GFLOP':>11} {'sent':>12} {'received':>12}  matrices"
        lines = [header, "-" * len(header)]
        for r in self.ranks:
            names = [self.names.get(key, str(key)) for key in r["matrices"]]
            shown = ", ".join(names[:4]) + (f", … ({len(names)})" if len(names) > 4 else "")
            lines.append(f"{r['rank']:>4} {len(r['matrices']):>5} {len(r['local']):>5} {r['flops'] / 1e9:>11.4f} "
                         f"{self.bytes_sent(r['rank']):>12,d} {self.bytes_received(r['rank']):>12,d}  {shown}")
        imbalance = self.imbalance
        lines.append(f"imbalance (max/mean polar flops): {imbalance:.3f}" if imbalance else "imbalance: -")
        lines.append("AdamW on the same layout: 0 bytes in its step (elementwise on each rank's shard); the layout's "
                     "own traffic is the same for both (measure it with `muonlab bench dist --layout ...`)")
        return "\n".join(lines)


def plan(model_or_optimizer, mesh=None, **options) -> StepPlan:
    """The :class:`StepPlan` of ``model_or_optimizer``'s next step (every parameter with a gradient).

    A model is planned with ``muonlab.Muon(muonlab.param_groups(model), distributed=mesh or "auto", **options)``;
    ``mesh`` (a DeviceMesh or ProcessGroup) matters for plain, replicated parameters (DDP)."""
    if isinstance(model_or_optimizer, nn.Module):
        from muonlab.optim.muon import Muon
        from muonlab.optim.routing import param_groups

        optimizer = Muon(param_groups(model_or_optimizer), distributed=mesh if mesh is not None else "auto", **options)
    elif isinstance(model_or_optimizer, SpectralOptimizer):
        optimizer = model_or_optimizer
    else:
        raise TypeError(f"plan() takes an nn.Module or a muonlab optimizer, got {type(model_or_optimizer).__name__}")
    chunks, names = [], {}
    for index, group in enumerate(optimizer.param_groups):
        if group["rule"] != "spectral" or not group["params"]:
            continue
        params = list(group["params"])
        settings = optimizer.group_settings(group, index)
        parts, cost = optimizer._plans.get(id(group["params"]), group["params"], params, settings,
                                           optimizer.max_scratch_bytes)
        sample = [torch.empty(0, dtype=state_dtype(p), device=local(p).device) for p in params]
        wire = wire_dtype(settings.polar, sample)
        labels = group.get("param_names")
        for part in parts:
            for position, i in enumerate(part):
                names[(len(chunks), position)] = labels[i] if labels else f"group {index}[{i}]"
            chunks.append(([params[i] for i in part], [cost[i] for i in part],
                           [matrix_blocks(params[i], settings.blocks) for i in part], wire))
    return StepPlan(optimizer._distribution.forecast(chunks), names)
