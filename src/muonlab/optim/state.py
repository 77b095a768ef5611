"""Optimizer state and the step context: what a subclass hook gets from the step in progress.

State lives in ``optimizer.state[p]`` keyed by the parameter (torch's convention, so ``state_dict`` works):
``"momentum_buffer"``; ``"exp_avg"``, ``"exp_avg_sq"``, ``"step"`` (a Python int: exact on resume) for Adam
moments. Under FSDP2 the step works on each parameter's local shard, so a hook holds local tensors;
:class:`StepContext` maps them back to their parameters for state look-ups.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch


def state_dtype(p: torch.Tensor) -> torch.dtype:
    """Optimizer state is kept in fp32 for bf16/fp16 parameters, in the parameter's dtype otherwise."""
    return torch.float32 if p.dtype in (torch.float16, torch.bfloat16) else p.dtype


def local(t: torch.Tensor) -> torch.Tensor:
    """A DTensor's local shard (checks on it are per rank; the distribution makes the ranks agree)."""
    return t.to_local() if hasattr(t, "to_local") else t


@dataclass(slots=True)
class StepContext:
    """One param group's step in progress, as the subclass hooks see it.

    ``settings``: the group's settings object (see :mod:`muonlab.optim.settings`); ``lr``, ``weight_decay``: this
    step's values (read from the group at every step); ``state``: the optimizer's state; ``owners``: id of a
    local shard → its parameter, for the parameters that are DTensors (empty otherwise)."""

    settings: Any
    lr: float
    weight_decay: float
    state: Any
    owners: dict[int, torch.Tensor] = field(default_factory=dict)
    # the optimizer's muonlab.optim.state_codec.StateStore: bf16/int8 state decoded and encoded back (None: fp32)
    store: Any = None

    def owner(self, p: torch.Tensor) -> torch.Tensor:
        """The parameter ``p`` is the local shard of (``p`` itself when it is a parameter)."""
        return self.owners.get(id(p), p)

    def state_of(self, p: torch.Tensor) -> dict:
        """The state dict of ``p``, a parameter or the local shard of one."""
        return self.state[self.owners.get(id(p), p)]

    def buffers(self, params: list[torch.Tensor], key: str = "momentum_buffer") -> list[torch.Tensor]:
        """Each parameter's state tensor ``key`` (zeros on first use), as a local tensor like ``params``, to update
        in place: the stored tensor itself for fp32 state; for the group's bf16/int8 ``state_dtype`` an fp32 copy,
        which the step encodes back once the stage that updates it is done (``store.flush()``)."""
        out = []
        fmt = getattr(self.settings, "state_dtype", "float32")
        for p in params:
            owner = self.owners.get(id(p), p)
            state = self.state[owner]
            if self.store is not None:
                out.append(self.store.buffers(state, key, owner, p, fmt, state_dtype(owner)))
                continue
            if key not in state:
                state[key] = torch.zeros_like(owner, dtype=state_dtype(owner), memory_format=torch.preserve_format)
            out.append(local(state[key]))
        return out

    def count_steps(self, params: list[torch.Tensor]) -> list[int]:
        """Advance and return each parameter's ``state["step"]`` (a Python int: exact on resume)."""
        steps = []
        for p in params:
            state = self.state_of(p)
            state["step"] = state.get("step", 0) + 1
            steps.append(state["step"])
        return steps

    def as_whole(self, p: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """A function viewing a local tensor laid out like ``p`` as the whole tensor: a DTensor with the
        parameter's placements when ``p`` is a shard of one (for the rare step that needs a reduction over
        whole matrices outside the transform), the tensor itself otherwise."""
        owner = self.owners.get(id(p), p)
        if owner is p or not hasattr(owner, "device_mesh"):
            return lambda t: t
        from torch.distributed.tensor import DTensor

        return lambda t: DTensor.from_local(
            t, owner.device_mesh, owner.placements, run_check=False, shape=owner.shape, stride=owner.stride()
        )


def rounds_params(settings, params: list[torch.Tensor]) -> bool:
    """Whether a step writes these parameters with stochastic rounding (bf16 ones, ``param_rounding`` "stochastic")."""
    return settings.param_rounding == "stochastic" and any(p.dtype == torch.bfloat16 for p in params)


# fp32 bytes of one moment the AdamW part decodes at once from bf16/int8 state (see muonlab.optim.low_precision.adamw_pieces_step)
ADAMW_PIECE_BYTES = 4 * 2**20


def adamw_pieces(params: list[torch.Tensor], limit: int) -> list[list[tuple[int, tuple[int, int] | None]]]:
    """The AdamW part's pieces of work when its state is decoded: lists of (parameter index, rows) with at most
    ``limit`` bytes of fp32 elements each; rows None for a whole tensor, (first, end) for a slice of the rows of a
    tensor larger than the limit. In the parameters' order, deterministic in their shapes."""
    pieces: list[list[tuple[int, tuple[int, int] | None]]] = []
    size = limit + 1  # start a new piece with the first tensor
    for i, p in enumerate(params):
        nbytes = p.numel() * 4
        if nbytes > limit and p.dim() >= 1 and p.shape[0] > 1:
            per_row = max(1, p.numel() // p.shape[0] * 4)
            step = max(1, limit // per_row)
            pieces += [[(i, (r, min(p.shape[0], r + step)))] for r in range(0, p.shape[0], step)]
            size = limit + 1
        elif size + nbytes <= limit:
            pieces[-1].append((i, None))
            size += nbytes
        else:
            pieces.append([(i, None)])
            size = nbytes
    return pieces
