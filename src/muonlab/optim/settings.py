"""A param group's settings, read once: small frozen dataclasses built and validated from the group's dict.

The dict of a param group is torch's interface (``state_dict``, LR schedulers, users' own code all read and write
it); below :meth:`SpectralOptimizer.step` nothing reads it. The step reads a group in two ways:

- ``lr`` and ``weight_decay`` (:data:`LIVE_KEYS`) are read at every step, as torch's optimizers read them, because
  schedulers write them at every step (a tensor ``lr`` may even change in place);
- every other setting is read into the group's settings object (:class:`SpectralSettings` subclass of the
  optimizer, or :class:`AdamWSettings`) when the group is added or loaded, validated there, and read again only
  when one of its values in the dict changed (the step compares the values it was built from: a user who sets
  ``group["momentum"]`` between steps gets it, checked like a constructor argument).

One name per setting: the iteration count of the polar method is ``ns_steps`` everywhere below the constructors
(``steps=`` is accepted as an alias by the constructors that always took it, and in a group or a checkpoint).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

import torch

from muonlab.linalg import POLAR_METHODS, polar
from muonlab.linalg.methods import POLAR_METHOD_REGISTRY
from muonlab.optim import pipeline as pl
from muonlab.optim.state_codec import check_param_rounding, check_state_dtype

# Read from the group at every step (schedulers write them); every other key is part of the settings object.
LIVE_KEYS = ("lr", "weight_decay")


# ---------------------------------------------------------------------- checks (one line naming the parameter)
def check_nonnegative(value: Any, name: str) -> None:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            # torch.optim's wording ("Tensor lr must be 1-element"), after the group prefix if there is one
            where, _, key = name.rpartition(": ")
            where = where + ": " if where else ""
            raise ValueError(f"{where}Tensor {key} must be 1-element, got shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{name} must be a non-negative number, got {value!r}")


def check_unit_interval(value: Any, name: str, *, closed: bool = True) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1
    if ok and not closed and value == 1:
        ok = False
    if not ok:
        raise ValueError(f"{name} must be a number in [0, {'1]' if closed else '1)'}, got {value!r}")


def check_bool(value: Any, name: str) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be a bool, got {value!r}")


def check_cautious_wd(value: Any, where: str) -> None:
    check_bool(value, f"{where}cautious_wd")


def check_betas(betas: Any, name: str) -> None:
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"{name} must be a pair (beta1, beta2), got {betas!r}")
    for i, b in enumerate(betas):
        check_unit_interval(b, f"{name}[{i}]", closed=False)


def check_ns_steps(value: Any, name: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{name} must be None or a positive int, got {value!r}")


def resolve_ns_steps(ns_steps: int | None, steps: int | None) -> int | None:
    """The iteration count from a constructor taking both ``ns_steps`` and its alias ``steps``."""
    if steps is not None and ns_steps is not None and steps != ns_steps:
        raise ValueError(f"steps is an alias of ns_steps: give one, got ns_steps={ns_steps!r}, steps={steps!r}")
    name = "steps" if ns_steps is None and steps is not None else "ns_steps"
    value = ns_steps if ns_steps is not None else steps
    check_ns_steps(value, name)
    return value


def fields_of(settings: Any) -> dict[str, Any]:
    """A settings object's fields as keyword arguments (not recursing into nested settings, unlike ``asdict``)."""
    return {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}


# ---------------------------------------------------------------------- the pieces
@dataclass(frozen=True)
class Blocks:
    """How a parameter becomes the matrices its transform sees (the *shape* stage, docs/math.md §4).

    ``tensor_layout``: ≥ 3-D tensors as one flattened (out, in·k…) matrix (``"flatten"``) or a batch of their last
    two dims (``"batch"``); ``split_sizes`` cut the rows into sections (fused projections), ``num_heads`` each
    section into equal head blocks; ``transposed``: 2-D parameters stored as (in, out) — Hugging Face's ``Conv1D`` —
    are seen as the (out, in) matrix they are (rows are output features for the sections, the heads, the shape scale
    and NorMuon's row moment)."""

    tensor_layout: str = "flatten"
    num_heads: int | None = None
    split_sizes: tuple[int, ...] | None = None
    transposed: bool = False

    @property
    def whole(self) -> bool:
        """True when a matrix is one block (no sections, no heads)."""
        return self.split_sizes is None and not self.num_heads

    @classmethod
    def from_group(cls, group: Mapping, where: str = "") -> Blocks:
        layout = group["tensor_layout"]
        if layout not in pl.TENSOR_LAYOUTS:
            raise ValueError(f"{where}tensor_layout must be one of {', '.join(pl.TENSOR_LAYOUTS)}; got {layout!r}")
        heads = group["num_heads"]
        if heads is not None and (isinstance(heads, bool) or not isinstance(heads, int) or heads < 1):
            raise ValueError(f"{where}num_heads must be None or a positive int, got {heads!r}")
        sizes = group["split_sizes"]
        if sizes is not None and (
            not isinstance(sizes, (tuple, list)) or not all(isinstance(s, int) and s > 0 for s in sizes)
        ):
            raise ValueError(f"{where}split_sizes must be None or a sequence of positive ints, got {sizes!r}")
        transposed = group.get("transposed", False)   # absent from groups saved before it existed
        check_bool(transposed, f"{where}transposed")
        return cls(layout, heads, tuple(sizes) if sizes is not None else None, transposed)


@dataclass(frozen=True)
class PolarSettings:
    """Which polar iteration a transform runs: ``method`` (a :data:`muonlab.linalg.POLAR_METHODS` name),
    ``ns_steps`` (its iteration count, None: the method's default), ``ns_coefficients`` (Newton–Schulz's
    (a, b, c)) and ``polar_dtype`` (the iteration's precision, None: by device)."""

    method: str
    ns_steps: int | None = None
    ns_coefficients: tuple[float, ...] | None = None
    polar_dtype: torch.dtype | None = None

    @classmethod
    def from_group(cls, group: Mapping, where: str = "", *, method: str | None = None) -> PolarSettings:
        """From the group's ``method``/``ns_steps``/``ns_coefficients``/``polar_dtype`` (``method`` overrides the
        group's, for optimizers that resolve an alias first)."""
        method = group["method"] if method is None else method
        if method not in POLAR_METHODS:
            raise ValueError(f"{where}method must be one of {', '.join(POLAR_METHODS)}; got {method!r}")
        coefficients = group.get("ns_coefficients")
        if coefficients is not None:
            if method == "auto" or not POLAR_METHOD_REGISTRY[method].accepts_coefficients:
                takers = [name for name, m in POLAR_METHOD_REGISTRY.items() if m.accepts_coefficients]
                raise ValueError(
                    f"{where}ns_coefficients apply to method {' or '.join(map(repr, takers))}, not {method!r}"
                )
            if len(coefficients) != 3:
                raise ValueError(f"{where}ns_coefficients must be three numbers (a, b, c), got {coefficients!r}")
            coefficients = tuple(coefficients)
        ns_steps = group.get("ns_steps")
        check_ns_steps(ns_steps, f"{where}ns_steps")
        return cls(method, ns_steps, coefficients, group.get("polar_dtype"))


def polar_factor(x: torch.Tensor, settings: PolarSettings, *, eps: float = 0.0, overwrite: bool = False) -> torch.Tensor:
    """polar(x) with a group's polar settings. ``overwrite=True`` lets the iteration use x's memory: pass it only
    when nothing reads x afterwards."""
    return polar(
        x,
        settings.method,
        settings.ns_steps,
        settings.polar_dtype,
        coefficients=settings.ns_coefficients,
        eps=eps,
        check_finite=False,
        overwrite=overwrite,
    )


# ---------------------------------------------------------------------- per rule
@dataclass(frozen=True, kw_only=True)
class SpectralSettings:
    """What every spectral group has: its blocks, its shape scale rule s(A, B) (``adjust_lr_fn``, see
    :func:`muonlab.optim.pipeline.shape_scale`), ``cautious_wd``, how its state is stored (``state_dtype``, see
    :mod:`muonlab.optim.state_codec`) and how bf16 parameters are rounded (``param_rounding``). Each optimizer extends it with its own
    fields (:class:`muonlab.optim.muon.MuonSettings`, …); ``polar`` is the polar iteration of the transform when
    it has one (None otherwise), which the step also uses to weigh a matrix's work and to pick the wire dtype."""

    blocks: Blocks
    adjust_lr_fn: str | None = None
    cautious_wd: bool = False
    polar: PolarSettings | None = None
    state_dtype: str = "float32"
    param_rounding: str = "nearest"


@dataclass(frozen=True)
class AdamWSettings:
    """The built-in AdamW part's settings besides ``lr``/``weight_decay``: ``betas``, ``eps``, and as for every
    group ``state_dtype`` and ``param_rounding``."""

    betas: tuple[float, float]
    eps: float
    state_dtype: str = "float32"
    param_rounding: str = "nearest"

    @classmethod
    def from_group(cls, group: Mapping, where: str = "") -> AdamWSettings:
        check_betas(group["betas"], f"{where}betas")
        check_nonnegative(group["eps"], f"{where}eps")
        return cls(tuple(group["betas"]), group["eps"], **storage(group, where))


def storage(group: Mapping, where: str = "") -> dict[str, str]:
    """A group's ``state_dtype`` (canonical name) and ``param_rounding``, checked."""
    return dict(state_dtype=check_state_dtype(group.get("state_dtype", "float32"), where),
                param_rounding=check_param_rounding(group.get("param_rounding", "nearest"), where))


def spectral_common(group: Mapping, where: str = "") -> dict[str, Any]:
    """Validate what every spectral group has and return the base fields of its settings (keyword arguments of
    a :class:`SpectralSettings` subclass). ``lr`` and ``weight_decay`` are checked here, once; the step reads
    them live."""
    check_nonnegative(group["lr"], f"{where}lr")
    check_nonnegative(group["weight_decay"], f"{where}weight_decay")
    cautious = group.get("cautious_wd", False)
    check_cautious_wd(cautious, where)
    rule = group.get("adjust_lr_fn")
    pl.check_adjust_lr_fn(rule, where)
    return dict(blocks=Blocks.from_group(group, where), adjust_lr_fn=rule, cautious_wd=cautious,
                **storage(group, where))
