"""What the last step did (:meth:`muonlab.optim.base.SpectralOptimizer.last_step_stats`), recorded during the step.

The update RMS per group is one reduction per transformed batch; the orthogonality sample is one small Gram matrix
of one block per step. Both stay on the device as tensors until ``last_step_stats`` reads them, so a step adds no
host synchronization.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch

from muonlab.optim.state_codec import state_nbytes

# rows (or columns) of the sampled block whose Gram matrix the telemetry measures
TELEMETRY_SAMPLE = 128


class Telemetry:
    """The step's statistics (keyed by id of a group's settings object), kept as tensors (no host sync in the step)
    until last_step_stats reads them. The tensors persist and are written in place, so that a step keeps no new
    allocation; a step adds one reduction and one multiply-add per transformed batch and one small Gram matrix."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.active = False  # inside a step (compute_updates is also called outside one)
        self.steps = 0
        self.skipped = 0
        self.sample_due = False
        self.sums: dict[int, torch.Tensor] = {}  # Σ‖s·D‖² of this step's batches
        self.counts: dict[int, int] = {}  # Σ numel of them (absent: no batch this step)
        self.ortho: dict[int, torch.Tensor] = {}
        self.sampled: set[int] = set()

    def begin_step(self) -> None:
        self.steps += 1
        self.active = self.sample_due = self.enabled
        self.counts.clear()
        self.sampled.clear()

    def add_batch(self, key: int, out: torch.Tensor) -> None:
        norm = torch.linalg.vector_norm(out, dtype=torch.promote_types(out.dtype, torch.float32)).float()
        acc = self.sums.get(key)
        if acc is None or acc.device != norm.device:
            acc = self.sums[key] = torch.zeros((), dtype=torch.float32, device=norm.device)
        if key not in self.counts:
            acc.zero_()
            self.counts[key] = 0
        acc.addcmul_(norm, norm)
        self.counts[key] += out.numel()
    def sample(self, key: int, out: torch.Tensor) -> None:
        """‖XXᵀ/τ − I‖_F/√k of one block of a transform's output (see SpectralOptimizer.last_step_stats)."""
        self.sample_due = False
        x = out[0]
        if x.shape[0] > x.shape[1]:
            x = x.T
        x = x[:TELEMETRY_SAMPLE].float()
        gram = x @ x.T
        k = gram.shape[0]
        tau = torch.diagonal(gram).sum() / k
        gram.div_(tau.clamp(min=torch.finfo(gram.dtype).tiny)).diagonal().sub_(1)
        error = torch.where(tau > 0, torch.linalg.matrix_norm(gram) / k**0.5, float("nan"))
        held = self.ortho.get(key)
        if held is None or held.device != error.device:
            held = self.ortho[key] = torch.zeros((), dtype=torch.float32, device=error.device)
        held.copy_(error)
        self.sampled.add(key)

    def of(self, key: int) -> tuple[float | None, float | None]:
        count = self.counts.get(key)
        rms = None if not count else float(self.sums[key]) ** 0.5 / count**0.5
        return rms, float(self.ortho[key]) if key in self.sampled else None


def step_stats(telemetry: Telemetry, groups: Sequence[Mapping], settings: Sequence, state: Mapping) -> dict:
    """What an optimizer's last step did (its ``last_step_stats()``), per group — cheap enough to read every step:

    - ``update_rms``: RMS of the update direction per unit lr, √(Σ‖s·D‖²_F / Σ numel) over the group's
      matrices, D the transform's output and s its shape scale (decay excluded; NorMuon's row normalization
      keeps each block's norm, PolarGrad's ``polar_first`` scales D by ν afterwards); one reduction per
      transformed batch, on the rank that transformed it; None for AdamW groups;
    - ``orthogonality_error``: for one sampled block X of the group's transform output (the first block of the
      first batch the step transforms, so a curve follows one matrix; its first ≤ 128 rows, or columns when X
      is tall), ‖XXᵀ/τ − I‖_F/√k with τ = tr(XXᵀ)/k: 0 when the
      block's singular values are all equal (an exact polar factor, any scale); the RMS relative spread of σ²
      otherwise. Measured on the rank that transformed the block (None where this rank transformed none);
    - ``state_bytes``: bytes of the group's optimizer state on this rank; ``state_dtype``;
    - at the top: ``step`` (steps taken) and ``skipped_steps`` (steps skipped on non-finite gradients), both
      counted by this optimizer object since its construction, and ``state_bytes`` (all groups).

    ``telemetry=False`` at construction leaves out the update RMS and the sample (None).
    ``groups``: the optimizer's param groups, ``settings``: each one's settings object, ``state``: its state.
    """
    stats = []
    for index, (group, group_settings) in enumerate(zip(groups, settings)):
        rms, ortho = telemetry.of(id(group_settings))
        stats.append({
            "index": index,
            "kind": group["kind"],
            "rule": group["rule"],
            "state_dtype": group_settings.state_dtype,
            "update_rms": rms,
            "orthogonality_error": ortho,
            "state_bytes": sum(state_nbytes(state[p]) for p in group["params"] if p in state),
        })
    return {"step": telemetry.steps, "skipped_steps": telemetry.skipped,
            "state_bytes": sum(g["state_bytes"] for g in stats), "groups": stats}
