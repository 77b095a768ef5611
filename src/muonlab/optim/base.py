"""SpectralOptimizer: the one base class behind Muon, PolarGrad, the Ψ_p family and SimplifiedMuon.

It owns everything the optimizers share, so each subclass only says how its moment and its
matrix transform are computed:

- **routing**: every parameter group has a ``"kind"`` — ``"matrix"`` (spectral update) or
  ``"embedding"``/``"head"``/``"vector"`` (the built-in AdamW part). A group without a kind
  (e.g. ``Muon(model.parameters())``) is split on construction: ≥ 2-D parameters → a matrix
  group, 0-/1-D → a vector group. After construction every group has ``"update"`` ∈
  {"spectral", "adamw"}; an AdamW group's ``"lr"``, ``"betas"``, ``"eps"``, ``"weight_decay"`` are the
  AdamW values (taken from ``adamw_lr``/… or the group's own ``"adamw_*"`` keys), so LR schedulers
  scale both parts alike.
- **shapes**: conv filters flattened to (out, in·k…), stacks (``tensor_layout="batch"``) as
  batches, per-head blocks (``num_heads``) and fused projections (``split_sizes``).
- **the matrix hook**: :meth:`SpectralOptimizer.compute_updates` maps the list of moment tensors of
  one chunk to their updates, batching same-shape blocks into one transform call. It is a pure
  function of whole matrices (it reads and writes no optimizer state), which the distribution runs
  once per matrix on its owner rank.
- **a bounded working set**: the step streams chunk by chunk (moment → transform → apply), each chunk
  sized by ``max_scratch_bytes`` (:meth:`SpectralOptimizer.scratch_budget`).
- **non-finite gradients**: one fused check over all gradients before anything is touched;
  ``on_nonfinite="skip"`` (default) skips the whole step with a warning naming the parameters,
  ``"raise"`` raises.
- **distribution**: ``distributed="auto"``: the optimizer constructs a
  :class:`muonlab.distributed.optimizer.OptimizerDistribution` from that setting and the parameters'
  layout (a plain dependency, below this layer); the step asks it to agree across ranks on skipping
  and to run :meth:`compute_updates` on whole matrices (``map_matrices``), passing parameter lists
  and tensors only. Everything elementwise runs here, on local tensors (FSDP2 shards in place).
- **state** lives in ``self.state[p]``: ``"momentum_buffer"``; ``"exp_avg"``, ``"exp_avg_sq"``,
  ``"step"`` (a Python int) for Adam moments (the AdamW part and SpectralAdam).
"""

from __future__ import annotations

import warnings
from abc import ABCMeta, abstractmethod
from collections import defaultdict
from typing import Any, Iterable

import torch
from torch.optim import Optimizer

from muonlab.distributed.optimizer import OptimizerDistribution
from muonlab.linalg import POLAR_METHODS, polar
from muonlab.linalg.methods import POLAR_METHOD_REGISTRY, quintic_flops
from muonlab.linalg.precision import iteration_dtype
from muonlab.optim import pipeline as pl
from muonlab.optim import state_codec as sc

KINDS = ("matrix", "embedding", "head", "vector")
NONFINITE_POLICIES = ("skip", "raise")
# Param-group keys besides the optimizer's defaults: routing keys, and the LR schedulers' initial_lr.
GROUP_KEYS = frozenset({"params", "param_names", "kind", "update", "initial_lr"})

# Keller Jordan's auxiliary Adam for the non-matrix parameters (github.com/KellerJordan/Muon).
ADAMW_DEFAULTS = {"adamw_lr": 3e-4, "adamw_betas": (0.9, 0.95), "adamw_eps": 1e-10, "adamw_weight_decay": 0.0}

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


def check_cautious_wd(value: Any, where: str) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{where}cautious_wd must be a bool, got {value!r}")


def check_betas(betas: Any, name: str) -> None:
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"{name} must be a pair (beta1, beta2), got {betas!r}")
    for i, b in enumerate(betas):
        check_unit_interval(b, f"{name}[{i}]", closed=False)


class SpectralOptimizer(Optimizer, metaclass=ABCMeta):
    """Base class: AdamW part, routing, shapes, batching, non-finite policy (see module docstring).

    Subclasses implement :meth:`spectral_inputs` (update moment state, return the matrices to
    transform), :meth:`transform` (one (B, m, n) batch → its update direction) and, when the
    update is not simply ``W ← (1 − ηλ)W − η·update``, :meth:`apply_updates`.

    Options every subclass accepts as keywords (its ``**options``): ``adamw_lr``, ``adamw_betas``,
    ``adamw_eps``, ``adamw_weight_decay`` (the AdamW part; Keller Jordan's auxiliary Adam by
    default), ``tensor_layout`` (``"flatten"`` or ``"batch"`` for ≥ 3-D tensors), ``num_heads``,
    ``split_sizes`` (per-head / fused-projection blocks), ``on_nonfinite`` (``"skip"`` or
    ``"raise"``), ``distributed`` (``"auto"``, ``"none"``, a ProcessGroup or a 1-D DeviceMesh),
    ``max_scratch_bytes`` (the step's working-memory budget, see :meth:`scratch_budget`), ``compile``
    (torch.compile the matrix transform), ``cautious_wd`` (per group: decay only the entries whose
    parameter and update share a sign, see :meth:`apply_updates`), ``state_dtype`` (per group: ``"float32"``,
    ``"bfloat16"`` or ``"int8"``, how the moments are stored, see :mod:`muonlab.optim.state_codec`),
    ``param_rounding`` (per group: ``"nearest"`` or ``"stochastic"`` rounding of bf16 parameters' updates),
    ``rounding_seed`` (the seed of every stochastic rounding) and ``telemetry`` (record :meth:`last_step_stats`'s
    update RMS and orthogonality sample; True).
    """

    def __init__(
        self,
        params: Iterable,
        defaults: dict,
        *,
        adamw_lr: float = ADAMW_DEFAULTS["adamw_lr"],
        adamw_betas: tuple[float, float] = ADAMW_DEFAULTS["adamw_betas"],
        adamw_eps: float = ADAMW_DEFAULTS["adamw_eps"],
        adamw_weight_decay: float = ADAMW_DEFAULTS["adamw_weight_decay"],
        tensor_layout: str = "flatten",
        num_heads: int | None = None,
        split_sizes: tuple[int, ...] | None = None,
        on_nonfinite: str = "skip",
        distributed="auto",
        max_scratch_bytes: int | None = None,
        compile: bool = False,
        cautious_wd: bool = False,
        state_dtype="float32",
        param_rounding: str = "nearest",
        rounding_seed: int = 0,
        telemetry: bool = True,
    ) -> None:
        self._distribution = OptimizerDistribution(distributed)
        self._store = sc.StateStore(rounding_seed)
        if not isinstance(telemetry, bool):
            raise ValueError(f"telemetry must be a bool, got {telemetry!r}")
        self._telemetry = _Telemetry(telemetry)
        if on_nonfinite not in NONFINITE_POLICIES:
            raise ValueError(f"on_nonfinite must be one of {', '.join(NONFINITE_POLICIES)}; got {on_nonfinite!r}")
        self.on_nonfinite = on_nonfinite
        if max_scratch_bytes is not None and (
            isinstance(max_scratch_bytes, bool) or not isinstance(max_scratch_bytes, int) or max_scratch_bytes < 1
        ):
            raise ValueError(f"max_scratch_bytes must be None or a positive int (bytes), got {max_scratch_bytes!r}")
        self.max_scratch_bytes = max_scratch_bytes
        if not isinstance(compile, bool):
            raise ValueError(f"compile must be a bool, got {compile!r}")
        # The matrix transform is where the flops are and it is a pure function of one batch: compiled, it
        # fuses the iteration's elementwise work. The rest of the step keeps Python-int step counts (exact
        # resume), which a compiled step would specialize on and recompile for at every step.
        self._compiled_transform = torch.compile(self.transform) if compile else None
        # id(local shard) -> its parameter, for the step in progress (state is keyed by the parameter)
        self._param_of: dict[int, torch.Tensor] = {}
        self._plans: dict[int, tuple] = {}  # id(group) -> (key, chunks, costs): see _step_plan
        # True while compute_updates calls transform on a batch nobody reads afterwards (see _polar)
        self.may_overwrite_batch = False
        defaults = dict(
            defaults,
            adamw_lr=adamw_lr,
            adamw_betas=tuple(adamw_betas) if isinstance(adamw_betas, list) else adamw_betas,
            adamw_eps=adamw_eps,
            adamw_weight_decay=adamw_weight_decay,
            tensor_layout=tensor_layout,
            num_heads=num_heads,
            split_sizes=split_sizes,
            cautious_wd=cautious_wd,
            state_dtype=sc.check_state_dtype(state_dtype, ""),
            param_rounding=param_rounding,
        )
        check_cautious_wd(cautious_wd, "")
        self._check_common(defaults, "")
        if isinstance(params, torch.Tensor):
            # torch.optim.Optimizer's type and wording, so that a drop-in behaves the same
            raise TypeError("params argument given to the optimizer should be an iterable of Tensors or dicts, "
                            f"but got {torch.typename(params)}")
        super().__init__(params, defaults)
        self._store.reindex(self.param_groups)
        self._distribution.validate([(g["params"], g["update"] == "spectral") for g in self.param_groups])

    # ------------------------------------------------------------------ construction / routing
    def _check_common(self, group: dict, where: str) -> None:
        check_nonnegative(group["adamw_lr"], f"{where}adamw_lr")
        check_betas(group["adamw_betas"], f"{where}adamw_betas")
        check_nonnegative(group["adamw_eps"], f"{where}adamw_eps")
        check_nonnegative(group["adamw_weight_decay"], f"{where}adamw_weight_decay")
        group["state_dtype"] = sc.check_state_dtype(group["state_dtype"], where)
        sc.check_param_rounding(group["param_rounding"], where)
        if group["state_dtype"] == "int8":
            for i, p in enumerate(group.get("params", ())):
                sc.check_row_sharding(p, f"{where}{self._label(group, i)}: ")
        if group["tensor_layout"] not in pl.TENSOR_LAYOUTS:
            raise ValueError(
                f"{where}tensor_layout must be one of {', '.join(pl.TENSOR_LAYOUTS)}; got {group['tensor_layout']!r}"
            )
        heads = group["num_heads"]
        if heads is not None and (isinstance(heads, bool) or not isinstance(heads, int) or heads < 1):
            raise ValueError(f"{where}num_heads must be None or a positive int, got {heads!r}")
        sizes = group["split_sizes"]
        if sizes is not None and (
            not isinstance(sizes, (tuple, list)) or not all(isinstance(s, int) and s > 0 for s in sizes)
        ):
            raise ValueError(f"{where}split_sizes must be None or a sequence of positive ints, got {sizes!r}")

    def check_spectral_group(self, group: dict, where: str) -> None:
        """Validate a matrix group's hyperparameters (subclasses extend; raise ValueError naming the key)."""
        check_nonnegative(group["lr"], f"{where}lr")
        check_nonnegative(group["weight_decay"], f"{where}weight_decay")
        check_cautious_wd(group.get("cautious_wd", False), where)

    def add_param_group(self, param_group: dict) -> None:
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, got {type(param_group).__name__}")
        group = dict(param_group)
        unknown = sorted(set(group) - set(self.defaults) - GROUP_KEYS, key=str)
        if unknown:
            raise ValueError(
                f"unknown param-group key(s) {', '.join(map(repr, unknown))} for {type(self).__name__}; "
                f"it accepts {', '.join(sorted(set(self.defaults) | GROUP_KEYS))} "
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
                raise ValueError(
                    f"{type(self).__name__} does not support complex parameters; got {self._label(group, i)} "
                    f"with dtype {p.dtype}"
                )
            if not p.is_floating_point():
                raise ValueError(f"parameters must be floating point; got {self._label(group, i)} with dtype {p.dtype}")

        kind = group.get("kind")
        if kind in (None, "auto"):
            by_update = {"matrix": [], "vector": []}
            for i, p in enumerate(params):
                by_update["matrix" if p.dim() >= 2 else "vector"].append(i)
            for sub_kind, idx in by_update.items():
                if idx or (not params and sub_kind == "matrix"):
                    sub = dict(group, params=[params[i] for i in idx], kind=sub_kind)
                    if names is not None:
                        sub["param_names"] = [group["param_names"][i] for i in idx]
                    self._add_routed(sub)
            return
        if kind not in KINDS:
            raise ValueError(f"param group 'kind' must be one of {', '.join(KINDS)} (or None/'auto'); got {kind!r}")
        self._add_routed(group)

    def _add_routed(self, group: dict) -> None:
        where = f"param group {len(self.param_groups)} ({group['kind']}): "
        for key, default in self.defaults.items():
            if key.startswith("adamw_") or key in ("tensor_layout", "num_heads", "split_sizes", "state_dtype",
                                                    "param_rounding"):
                group.setdefault(key, default)
        self._check_common(group, where)
        if group["kind"] == "matrix":
            group["update"] = "spectral"
            for key, default in self.defaults.items():
                group.setdefault(key, default)
            self.check_spectral_group(group, where)
            for i, p in enumerate(group["params"]):
                if p.dim() < 2:
                    raise ValueError(
                        f"{where}{self._label(group, i)} has shape {tuple(p.shape)}: a 'matrix' group needs "
                        "parameters with at least 2 dimensions (put vectors in a 'vector' group)"
                    )
                try:
                    rows = pl.matrix_batch(p.detach(), group["tensor_layout"]).shape[1]
                    if group["split_sizes"] is not None or group["num_heads"]:
                        pl.row_sections(rows, group["split_sizes"], group["num_heads"])
                except ValueError as err:
                    raise ValueError(f"{where}{self._label(group, i)}: {err}") from None
        else:
            group["update"] = "adamw"
            group["lr"] = group["adamw_lr"]
            group["betas"] = tuple(group["adamw_betas"])
            group["eps"] = group["adamw_eps"]
            group["weight_decay"] = group["adamw_weight_decay"]
        super().add_param_group(group)

    @staticmethod
    def _label(group: dict, index: int) -> str:
        names = group.get("param_names")
        if names is not None:
            return f"parameter {names[index]!r}"
        return f"parameter #{index} of its group"

    # ------------------------------------------------------------------ the step
    @torch.no_grad()
    def step(self, closure=None):
        """One optimization step over all groups (skipped as a whole on non-finite gradients)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        work: list[tuple[dict, list[torch.Tensor]]] = []
        grads: list[torch.Tensor] = []
        for group in self.param_groups:
            params = []
            for i, p in enumerate(group["params"]):
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError(
                        f"{type(self).__name__} does not support sparse gradients; {self._label(group, i)} has one "
                        "(use nn.Embedding(sparse=False))"
                    )
                params.append(p)
                grads.append(p.grad)
            work.append((group, params))
        finite = _all_finite(grads) if grads else True
        # Every rank must take the same decision (a rank skipping alone would hang the others).
        finite = self._distribution.agree(
            [g["params"] for g in self.param_groups], [(g["update"], params) for g, params in work], finite
        )
        if not finite:
            self._telemetry.skipped += 1
            self._handle_nonfinite()
            return loss
        self._telemetry.begin_step()
        for group, params in work:
            if not params:
                continue
            # All arithmetic runs on plain local tensors: a DTensor's shard (FSDP2) is updated in place
            # through its local view, so no elementwise op needs a DTensor sharding rule (some have none
            # on older torch), and no op pays DTensor dispatch. Whole matrices travel only in the
            # distribution's map_matrices.
            local_params = [_local(p) for p in params]
            self._param_of = {id(lp): p for lp, p in zip(local_params, params) if lp is not p}
            # Half-precision parameters keep fp32 state: fp16 cannot hold Adam's v (g² underflows).
            grads = [_local(p.grad) for p in params]
            grads = [g if g.dtype == state_dtype(p) else g.to(state_dtype(p)) for g, p in zip(grads, params)]
            if group["state_dtype"] == "bfloat16" or self._rounds_params(group, params):
                for p in params:  # the step count of this step's stochastic-rounding keys
                    self._store.count(self.state[p])
            try:
                if group["update"] == "adamw":
                    self._adamw_step(group, params, local_params, grads)
                else:
                    self._spectral_step(group, params, local_params, grads)
            finally:
                self._param_of = {}
                self._store.pending.clear()
        return loss

    def load_state_dict(self, state_dict: dict) -> None:
        """torch's load, then the saved floating state keeps its saved dtype (fp32 state of half params).

        torch.optim.Optimizer casts every floating state tensor to its parameter's dtype, which
        would round the fp32 moments of bf16/fp16 parameters; resuming must be exact.
        """
        # how state is stored is this optimizer's choice, not the checkpoint's: keep it, convert the state below
        storage = [(g["state_dtype"], g["param_rounding"]) for g in self.param_groups]
        super().load_state_dict(state_dict)
        for group, (fmt, rounding) in zip(self.param_groups, storage):
            group["state_dtype"], group["param_rounding"] = fmt, rounding
        self._store.reindex(self.param_groups)
        saved_ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        for saved_id, p in zip(saved_ids, params):
            for key, value in state_dict["state"].get(saved_id, {}).items():
                current = self.state[p].get(key)
                if torch.is_tensor(value) and torch.is_tensor(current) and current.dtype != value.dtype:
                    self.state[p][key] = value.to(device=p.device, copy=True)
        self._convert_state()

    def _convert_state(self) -> None:
        """Re-store every moment in its group's state dtype (after loading a checkpoint saved with another one)."""
        for p in (p for g in self.param_groups for p in g["params"]):
            state = self.state.get(p, {})
            for key in sc.SLOTS:
                if key in state:
                    self._buffers([p], key)
            self._store.flush()

    def _handle_nonfinite(self) -> None:
        bad = []
        for group in self.param_groups:
            for i, p in enumerate(group["params"]):
                if p.grad is not None and not bool(torch.isfinite(_local(p.grad)).all()):
                    bad.append(self._label(group, i).removeprefix("parameter "))
        message = f"non-finite (NaN/Inf) gradient in {', '.join(bad)}"
        if self.on_nonfinite == "raise":
            raise FloatingPointError(f"{type(self).__name__}: {message}")
        warnings.warn(
            f"{type(self).__name__}: {message}; step skipped, parameters and optimizer state unchanged",
            RuntimeWarning,
            stacklevel=3,
        )

    def _adamw_step(self, group: dict, owners: list[torch.Tensor], params: list[torch.Tensor],
                    grads: list[torch.Tensor]) -> None:
        """AdamW on the group; with stored low-precision state (or stochastically rounded bf16 parameters) chunk by
        chunk of the scratch budget, so that only one chunk's fp32 moments (and parameters) are decoded at once."""
        rounded = self._rounds_params(group, owners)
        if group["state_dtype"] == "float32" and not rounded:
            chunks = [list(range(len(params)))]
        else:
            chunks = byte_chunks(owners, self.scratch_budget(group, owners) // 3)
        beta1, beta2 = group["betas"]
        for chunk in chunks:
            chunk_params = [params[i] for i in chunk]
            exp_avgs = self._buffers(chunk_params, "exp_avg")
            exp_avg_sqs = self._buffers(chunk_params, "exp_avg_sq")
            steps = self._count_steps(chunk_params)
            targets = [p.float() for p in chunk_params] if rounded else chunk_params
            pl.adamw_update(
                targets,
                [grads[i] for i in chunk],
                exp_avgs,
                exp_avg_sqs,
                steps,
                lr=pl.to_scalar(group["lr"]),
                beta1=beta1,
                beta2=beta2,
                eps=group["eps"],
                weight_decay=group["weight_decay"],
            )
            self._store.flush()
            if rounded:
                self._round_params(chunk_params, targets)

    def _spectral_step(
        self, group: dict, params: list[torch.Tensor], local_params: list[torch.Tensor], grads: list[torch.Tensor]
    ) -> None:
        """Moment → transform → apply, one chunk of parameters at a time (a bounded working set).

        Parameters whose blocks have the same shapes are batched together, up to the chunk size the
        scratch budget allows (:meth:`scratch_budget`); each chunk's moment inputs, transformed updates
        and their application are done before the next chunk starts, so the step's extra memory is
        that of one chunk, not of every matrix at once."""
        chunks, cost = self._step_plan(group, params)
        wire = wire_dtype(group, grads)
        scratch = self.inputs_are_scratch(group)
        for chunk in chunks:
            chunk_params = [local_params[i] for i in chunk]
            chunk_grads = [grads[i] for i in chunk]
            inputs = self.spectral_inputs(group, chunk_params, chunk_grads)
            self._store.flush()  # the moments are final: encode them before the transform's memory peak
            updates = self._distribution.map_matrices(
                lambda whole: self.compute_updates(whole, group, inputs_are_scratch=scratch),
                inputs,
                [params[i] for i in chunk],
                [cost[i] for i in chunk],
                comm_dtype=wire,
            )
            del inputs
            self.apply_updates(group, chunk_params, chunk_grads, updates)
            self._store.flush()  # state an apply_updates read and updated (PolarGrad's polar-first momentum)
            del updates

    def _step_plan(self, group: dict, params: list[torch.Tensor]) -> tuple[list[list[int]], list[float]]:
        """The chunks and each matrix's cost for this group's step; computed once and reused while the
        parameters with gradients, the budget and the settings that shape the blocks stay the same (a step's
        Python work should not grow with planning it anew)."""
        key = (tuple(id(p) for p in params), self.max_scratch_bytes,
               *(str(group.get(k)) for k in ("tensor_layout", "num_heads", "split_sizes", "method", "ns_steps", "steps")))
        cached = self._plans.get(id(group))
        if cached is not None and cached[0] == key:
            return cached[1], cached[2]
        cost = [block_cost(pl.block_shapes(p.shape, group), group) for p in params]
        limit = self._distribution.chunk_bytes(group["params"], self.scratch_budget(group, params))
        chunks = plan_chunks(params, group, limit)
        self._plans[id(group)] = (key, chunks, cost)
        return chunks, cost

    def scratch_budget(self, group: dict, params: list[torch.Tensor]) -> int:
        """Bytes of working memory one step may use beyond parameters, gradients and state.

        ``max_scratch_bytes`` when set; by default 3× the group's largest matrix (in its state dtype)
        plus 16 MiB: a matrix is transformed with about three copies of itself alive (its input and two
        iterates), and small matrices batch together up to the 16 MiB."""
        if self.max_scratch_bytes is not None:
            return self.max_scratch_bytes
        largest = max((p.numel() * torch.finfo(state_dtype(p)).bits // 8 for p in params), default=0)
        return 3 * largest + DEFAULT_SCRATCH_FLOOR

    # ------------------------------------------------------------------ subclass hooks
    @abstractmethod
    def spectral_inputs(
        self, group: dict, params: list[torch.Tensor], grads: list[torch.Tensor]
    ) -> list[torch.Tensor]:
        """Update this group's moment state; return the tensors to transform (parameter-shaped)."""

    @abstractmethod
    def transform(self, x: torch.Tensor, group: dict) -> torch.Tensor:
        """The update direction of a (B, m, n) batch of matrices (before the shape scale).

        Return a new tensor, or ``x`` itself (never another view of it): the caller scales the
        result in place unless it is ``x``, and ``x`` may share memory with the optimizer state.
        """

    def apply_updates(
        self, group: dict, params: list[torch.Tensor], grads: list[torch.Tensor], updates: list[torch.Tensor]
    ) -> None:
        """W ← (1 − ηλ)W − η·update (decoupled decay with the unscaled lr, as torch.optim.Muon).

        With the group's ``cautious_wd`` (cautious weight decay, Chen et al., arXiv 2510.12402) the decay
        acts only where the parameter and the update share a sign, i.e. where the step already shrinks
        |W|: W ← W − ηλ·W∘1[W∘U ≥ 0] − η·U. Decayed entries get exactly (1 − ηλ)W, as without the mask."""
        lr = pl.to_scalar(group["lr"])
        self._telemetry.add_updates(group, updates)
        rounded = self._rounds_params(group, params)
        targets = [p.float() for p in params] if rounded else params
        if group["weight_decay"]:
            keep = 1 - lr * group["weight_decay"]
            if group.get("cautious_wd", False):
                for p, u in zip(targets, updates):
                    p.copy_(torch.where(p * u >= 0, p * keep, p))
            else:
                torch._foreach_mul_(targets, keep)
        torch._foreach_add_(targets, updates, alpha=-lr)
        if rounded:
            self._round_params(params, targets)

    def compute_updates(
        self, inputs: list[torch.Tensor], group: dict, *, inputs_are_scratch: bool = False
    ) -> list[torch.Tensor]:
        """The matrix work of one step: ``inputs[i]`` (parameter-shaped) → its scaled update.

        Each input is cut into blocks (:func:`muonlab.optim.pipeline.to_blocks`); blocks of equal
        (m, n, dtype, device) across all inputs are concatenated into one (B, m, n) batch and
        transformed by one :meth:`transform` call, then multiplied by the shape scale s(m, n) of
        ``group["adjust_lr_fn"]`` and reassembled. Pure: no optimizer state is read or written,
        and ``inputs`` are not modified unless ``inputs_are_scratch`` (the step passes it when its moment
        inputs are new tensors, so that the iteration may use their memory) — the function the
        distribution runs on each matrix's owner.
        """
        blocks = [pl.to_blocks(x, group) for x in inputs]
        buckets: dict[tuple, list[tuple[int, int]]] = defaultdict(list)
        for i, bl in enumerate(blocks):
            for j, b in enumerate(bl):
                buckets[(b.shape[-2], b.shape[-1], b.dtype, b.device)].append((i, j))
        results: list[list[torch.Tensor | None]] = [[None] * len(bl) for bl in blocks]
        rule = group.get("adjust_lr_fn", "none")
        for (rows, cols, _, _), idx in buckets.items():
            parts = [blocks[i][j] for i, j in idx]
            batch = parts[0] if len(parts) == 1 else torch.cat(parts)
            # The transform may overwrite a batch that is a fresh concatenation, or the scratch inputs
            # themselves (a view of one input is its only block here when the input is whole).
            self.may_overwrite_batch = len(parts) > 1 or (inputs_are_scratch and len(blocks[idx[0][0]]) == 1)
            out = (self._compiled_transform or self.transform)(batch, group)
            self.may_overwrite_batch = False
            if self._telemetry.sample_due:
                self._telemetry.sample(group, out)
            scale = pl.shape_scale(rows, cols, rule)
            if scale != 1.0:
                # In place unless the transform handed back its input (Ψ₁ is the identity).
                out = out * scale if out is batch else out.mul_(scale)
            del batch  # a concatenated copy is scratch: free it before the next bucket's
            pieces = out.split([p.shape[0] for p in parts]) if len(parts) > 1 else (out,)
            for (i, j), piece in zip(idx, pieces):
                results[i][j] = piece
        return [pl.from_blocks(r, x, group) for r, x in zip(results, inputs)]

    # ------------------------------------------------------------------ shared helpers
    def _state(self, p: torch.Tensor) -> dict:
        """The state dict of ``p``, a parameter or (during a step) the local shard of one."""
        return self.state[self._param_of.get(id(p), p)]

    def _as_whole(self, p: torch.Tensor):
        """A function viewing a local tensor laid out like ``p`` as the whole tensor: a DTensor with the
        parameter's placements when ``p`` is a shard of one (for the rare step that needs a reduction over
        whole matrices outside the transform), the tensor itself otherwise."""
        owner = self._param_of.get(id(p), p)
        if owner is p or not hasattr(owner, "device_mesh"):
            return lambda t: t
        from torch.distributed.tensor import DTensor

        return lambda t: DTensor.from_local(
            t, owner.device_mesh, owner.placements, run_check=False, shape=owner.shape, stride=owner.stride()
        )

    def _buffers(self, params: list[torch.Tensor], key: str = "momentum_buffer") -> list[torch.Tensor]:
        """Each parameter's state tensor ``key`` (zeros on first use), as a local tensor like ``params``, to update in
        place: the stored tensor itself for fp32 state; for bf16/int8 state an fp32 copy that the step encodes back
        once the moment stage is done (:class:`muonlab.optim.state_codec.StateStore`)."""
        out = []
        for p in params:
            owner = self._param_of.get(id(p), p)
            fmt = self._format_of.get(id(owner), "float32")
            out.append(self._store.buffers(self.state[owner], key, owner, p, fmt, state_dtype(owner)))
        return out

    def _rounds_params(self, group: dict, params: list[torch.Tensor]) -> bool:
        """Whether this step writes the group's parameters with stochastic rounding (bf16 parameters only)."""
        return group["param_rounding"] == "stochastic" and any(p.dtype == torch.bfloat16 for p in params)

    def _round_params(self, params: list[torch.Tensor], works: list[torch.Tensor]) -> None:
        """Write the fp32 ``works`` into the local ``params``: bf16 ones with stochastic rounding, others as is."""
        bf16 = [i for i, p in enumerate(params) if p.dtype == torch.bfloat16]
        owners = [self._param_of.get(id(params[i]), params[i]) for i in bf16]
        self._store.round_params([params[i] for i in bf16], [works[i] for i in bf16],
                                 [self.state[o] for o in owners], owners)
        for i, p in enumerate(params):
            if p.dtype != torch.bfloat16:
                p.copy_(works[i])

    @property
    def _format_of(self) -> dict[int, str]:
        """id(parameter) → its group's state dtype (rebuilt when the groups change)."""
        key = tuple((id(g), g["state_dtype"], len(g["params"])) for g in self.param_groups)
        if getattr(self, "_formats", (None,))[0] != key:
            self._formats = (key, {id(p): g["state_dtype"] for g in self.param_groups for p in g["params"]})
        return self._formats[1]

    def last_step_stats(self) -> dict:
        """What the last step did, per group — cheap enough to read every step:

        - ``update_rms``: RMS of the update the matrices took per unit lr, √(Σ‖U‖²_F / Σ numel) over the group's
          parameters (U after the shape scale and any row normalization; decay excluded); None for AdamW groups;
        - ``orthogonality_error``: for one sampled block X of the group's transform output (a different block each
          step; its first ≤ 128 rows, or columns when X is tall), ‖XXᵀ/τ − I‖_F/√k with τ = tr(XXᵀ)/k: 0 when the
          block's singular values are all equal (an exact polar factor, any scale); the RMS relative spread of σ²
          otherwise. Measured on the rank that transformed the block (None where this rank transformed none);
        - ``state_bytes``: bytes of the group's optimizer state on this rank; ``state_dtype``;
        - at the top: ``step`` (steps taken), ``skipped_steps`` (steps skipped on non-finite gradients),
          ``state_bytes`` (all groups)."""
        groups = []
        for index, group in enumerate(self.param_groups):
            rms, ortho = self._telemetry.of(group)
            groups.append({
                "index": index,
                "kind": group["kind"],
                "rule": group["update"],
                "state_dtype": group["state_dtype"],
                "update_rms": rms,
                "orthogonality_error": ortho,
                "state_bytes": sum(sc.state_nbytes(self.state[p]) for p in group["params"] if p in self.state),
            })
        return {"step": self._telemetry.steps, "skipped_steps": self._telemetry.skipped,
                "state_bytes": sum(g["state_bytes"] for g in groups), "groups": groups}

    def _count_steps(self, params: list[torch.Tensor]) -> list[int]:
        """Advance and return each parameter's ``state["step"]`` (a Python int: exact on resume)."""
        steps = []
        for p in params:
            state = self._state(p)
            state["step"] = state.get("step", 0) + 1
            steps.append(state["step"])
        return steps

    def _polar(self, x: torch.Tensor, group: dict, eps: float = 0.0, overwrite: bool = False) -> torch.Tensor:
        """polar(x) with the group's method settings. ``overwrite=True`` lets the iteration use x's memory:
        pass it (as ``self.may_overwrite_batch``) only from a transform that does not read x afterwards."""
        steps = group.get("ns_steps", group.get("steps"))
        return polar(
            x,
            group["method"],
            steps,
            group.get("polar_dtype"),
            coefficients=group.get("ns_coefficients"),
            eps=eps,
            check_finite=False,
            overwrite=overwrite,
        )

    def inputs_are_scratch(self, group: dict) -> bool:
        """Whether :meth:`spectral_inputs` returns new tensors (True) rather than state or gradients (False):
        the transform may then use their memory."""
        return False


# Scratch a step may use on top of 3× the largest matrix (see SpectralOptimizer.scratch_budget).
DEFAULT_SCRATCH_FLOOR = 16 * 2**20


def plan_chunks(params: list[torch.Tensor], group: dict, limit: int) -> list[list[int]]:
    """Indices of ``params`` in chunks of at most ``limit`` bytes of matrices (in their state dtype; a
    matrix larger than that is a chunk of its own). Parameters with the same block shapes, dtype and
    device are taken one after the other, so that they share chunks and batch into one transform call.

    Deterministic in the parameters' order and shapes, so every rank of a distributed run plans the same chunks."""
    buckets: dict[tuple, list[int]] = {}
    for i, p in enumerate(params):
        key = (pl.block_shapes(p.shape, group), p.dtype, str(p.device))
        buckets.setdefault(key, []).append(i)
    chunks: list[list[int]] = []
    current, size = [], 0
    for members in buckets.values():
        for i in members:
            nbytes = params[i].numel() * torch.finfo(state_dtype(params[i])).bits // 8
            if current and size + nbytes > limit:
                chunks.append(current)
                current, size = [], 0
            current.append(i)
            size += nbytes
    if current:
        chunks.append(current)
    return chunks


def byte_chunks(params: list[torch.Tensor], limit: int) -> list[list[int]]:
    """Indices of ``params`` in order, in chunks of at most ``limit`` bytes (in their state dtype; a larger one
    alone): the AdamW part's chunks when its moments are decoded from a low-precision format."""
    chunks: list[list[int]] = []
    size = 0
    for i, p in enumerate(params):
        nbytes = p.numel() * torch.finfo(state_dtype(p)).bits // 8
        if chunks and chunks[-1] and size + nbytes <= limit:
            chunks[-1].append(i)
            size += nbytes
        else:
            chunks.append([i])
            size = nbytes
    return chunks


def block_cost(sections, group: dict) -> float:
    """Flops of transforming one parameter's blocks with the group's polar method (the registry's count; the
    quintic ×5 count for methods without a fixed one, e.g. SVD or QDWH, and for the Ψ_p powers): the weight of
    a matrix in the distributed work split, where only ratios between matrices of one group matter."""
    method = POLAR_METHOD_REGISTRY.get(group.get("method"))
    steps = group.get("ns_steps", group.get("steps"))
    total = 0.0
    for count, rows, cols in sections:
        flops = method.flops(rows, cols, steps) if method is not None else None
        if flops is None:
            flops = quintic_flops(5, min(rows, cols), max(rows, cols))
        total += count * flops
    return total


def wire_dtype(group: dict, inputs: list[torch.Tensor]) -> torch.dtype | None:
    """The dtype whole matrices travel in between ranks: the polar iteration's own precision when it is
    lower than theirs (bf16 on CUDA: the owner would round to it anyway, so sending bf16 halves the bytes
    for a rounding of the same size); None (exact) otherwise, e.g. fp32 on CPU."""
    method = group.get("method")
    if not inputs or not isinstance(method, str) or method not in POLAR_METHODS:
        return None
    sample = inputs[0]
    wire = iteration_dtype(sample, method, group.get("polar_dtype"))
    narrower = torch.finfo(wire).bits < torch.finfo(sample.dtype).bits
    return wire if narrower and all(x.dtype == sample.dtype for x in inputs) else None


def state_dtype(p: torch.Tensor) -> torch.dtype:
    """Optimizer state is kept in fp32 for bf16/fp16 parameters, in the parameter's dtype otherwise."""
    return torch.float32 if p.dtype in (torch.float16, torch.bfloat16) else p.dtype


def check_polar_method(group: dict, where: str) -> None:
    method = group["method"]
    if method not in POLAR_METHODS:
        raise ValueError(f"{where}method must be one of {', '.join(POLAR_METHODS)}; got {method!r}")
    coefficients = group.get("ns_coefficients")
    if coefficients is not None:
        if method == "auto" or not POLAR_METHOD_REGISTRY[method].accepts_coefficients:
            takers = [name for name, m in POLAR_METHOD_REGISTRY.items() if m.accepts_coefficients]
            raise ValueError(f"{where}ns_coefficients apply to method {' or '.join(map(repr, takers))}, not {method!r}")
        if len(coefficients) != 3:
            raise ValueError(f"{where}ns_coefficients must be three numbers (a, b, c), got {coefficients!r}")
    steps = group.get("ns_steps", group.get("steps"))
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ValueError(f"{where}steps must be None or a positive int, got {steps!r}")


def _all_finite(grads: list[torch.Tensor]) -> bool:
    """One host sync per device: no NaN/Inf in any gradient.

    On accelerators, max|g| per tensor in one foreach kernel. On CPU, min and max per tensor
    (``torch.aminmax``; both propagate NaN, and ±Inf shows in one of them): the same answer, but the
    CPU inf-norm kernel is ~12× slower (122 vs 11 ms on a 50257×768 embedding gradient, one thread),
    which was most of muonlab.Muon's step overhead over torch.optim.Muon in ``muonlab bench step``.
    """
    by_device: dict[torch.device, list[torch.Tensor]] = defaultdict(list)
    for g in map(_local, grads):
        if g.numel():
            by_device[g.device].append(g)
    for device, device_grads in by_device.items():
        if device.type == "cpu":
            extremes = [v for g in device_grads for v in torch.aminmax(g)]
        else:
            extremes = torch._foreach_norm(device_grads, float("inf"))
        if not bool(torch.stack([v.float() for v in extremes]).isfinite().all()):
            return False
    return True


def _local(t: torch.Tensor) -> torch.Tensor:
    """A DTensor's local shard (checks on it are per rank; the distribution makes the ranks agree)."""
    return t.to_local() if hasattr(t, "to_local") else t


# rows (or columns) of the sampled block whose Gram matrix the telemetry measures
TELEMETRY_SAMPLE = 128


class _Telemetry:
    """The step's statistics, kept as tensors (no host sync in the step) until last_step_stats reads them. The
    tensors persist and are written in place, so that a step keeps no new allocation."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.steps = 0
        self.skipped = 0
        self.sample_due = False
        self.sums: dict[int, torch.Tensor] = {}  # id(group) -> Σ‖U‖² of this step's updates
        self.counts: dict[int, int] = {}  # id(group) -> Σ numel of them (absent: no update this step)
        self.ortho: dict[int, torch.Tensor] = {}
        self.sampled: set[int] = set()

    def begin_step(self) -> None:
        self.steps += 1
        self.sample_due = self.enabled
        self.counts.clear()
        self.sampled.clear()

    def add_updates(self, group: dict, updates: list[torch.Tensor]) -> None:
        if not updates or not self.enabled:
            return
        norms = torch._foreach_norm(updates)
        total = torch.stack([n.float() for n in norms]).square().sum()
        key = id(group)
        acc = self.sums.get(key)
        if acc is None or acc.device != total.device:
            acc = self.sums[key] = torch.zeros((), dtype=torch.float32, device=total.device)
        if key not in self.counts:
            acc.zero_()
            self.counts[key] = 0
        acc.add_(total)
        self.counts[key] += sum(u.numel() for u in updates)

    def sample(self, group: dict, out: torch.Tensor) -> None:
        """‖XXᵀ/τ − I‖_F/√k of one block of a transform's output (see SpectralOptimizer.last_step_stats)."""
        self.sample_due = False
        x = out[self.steps % out.shape[0]]
        if x.shape[0] > x.shape[1]:
            x = x.T
        x = x[:TELEMETRY_SAMPLE].float()
        gram = x @ x.T
        k = gram.shape[0]
        tau = torch.diagonal(gram).sum() / k
        gram.div_(tau.clamp(min=torch.finfo(gram.dtype).tiny)).diagonal().sub_(1)
        error = torch.where(tau > 0, torch.linalg.matrix_norm(gram) / k**0.5, float("nan"))
        key = id(group)
        held = self.ortho.get(key)
        if held is None or held.device != error.device:
            held = self.ortho[key] = torch.zeros((), dtype=torch.float32, device=error.device)
        held.copy_(error)
        self.sampled.add(key)

    def of(self, group: dict) -> tuple[float | None, float | None]:
        key = id(group)
        count = self.counts.get(key)
        rms = None if not count else float(self.sums[key]) ** 0.5 / count**0.5
        return rms, float(self.ortho[key]) if key in self.sampled else None
