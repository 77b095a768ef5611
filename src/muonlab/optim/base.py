"""SpectralOptimizer: the one base class behind Muon, NorMuon, PolarGrad, the Ψ_p family and SimplifiedMuon.

A step, for each param group (docs/design.md draws it):

1. **settings**: the group's settings object, read from its dict when the group was added or loaded
   (:mod:`muonlab.optim.settings`); ``lr``/``weight_decay`` read now;
2. **chunks**: the group's matrices in chunks that fit the scratch budget, planned once (:mod:`.chunks`);
3. per chunk, the stages of :mod:`muonlab.optim.pipeline`: **moment** (:meth:`spectral_inputs`, on local
   tensors) → **owners**: the distribution runs :meth:`compute_updates` (shape → **polar** transform → scale) once
   per whole matrix on its owner rank → **apply** (:meth:`apply_updates`: decay and the update, on local tensors).

AdamW groups (``rule == "adamw"``) take one fused AdamW step instead. Everything a hook needs from the step in
progress comes as an argument: the :class:`muonlab.optim.state.StepContext` or the settings object.
"""

from __future__ import annotations

import warnings
from abc import ABCMeta, abstractmethod
from typing import Iterable, Mapping

import torch
from torch.optim import Optimizer

from muonlab.distributed.optimizer import OptimizerDistribution
from muonlab.optim import groups as gr
from muonlab.optim import pipeline as pl
from muonlab.optim import state_codec as sc
from muonlab.optim.chunks import ChunkPlans, matrix_blocks, scratch_budget, transform_batches, wire_dtype
from muonlab.optim.groups import ADAMW_DEFAULTS
from muonlab.optim.low_precision import adamw_pieces_step, round_params
from muonlab.optim.nonfinite import all_finite, check_policy, handle_nonfinite
from muonlab.optim.routing import unrouted_warning
from muonlab.optim.settings import LIVE_KEYS, AdamWSettings, SpectralSettings, check_cautious_wd
from muonlab.optim.state import StepContext, local, rounds_params, state_dtype
from muonlab.optim.telemetry import Telemetry, step_stats


class SpectralOptimizer(Optimizer, metaclass=ABCMeta):
    """Base class: AdamW part, routing, shapes, batching, non-finite policy (see module docstring).

    Subclasses implement :meth:`spectral_settings` (read and validate a matrix group's settings into their
    :class:`~muonlab.optim.settings.SpectralSettings` subclass), :meth:`spectral_inputs` (update moment state,
    return the matrices to transform), :meth:`transform` (one (B, m, n) batch → its update direction) and, when
    the update is not simply ``W ← (1 − ηλ)W − η·update``, :meth:`apply_updates`.

    Options every subclass accepts as keywords (its ``**options``): ``adamw_lr``, ``adamw_betas``,
    ``adamw_eps``, ``adamw_weight_decay`` (the AdamW part; Keller Jordan's auxiliary Adam by
    default), ``tensor_layout`` (``"flatten"`` or ``"batch"`` for ≥ 3-D tensors), ``num_heads``,
    ``split_sizes`` (per-head / fused-projection blocks), ``on_nonfinite`` (``"skip"`` or
    ``"raise"``), ``distributed`` (``"auto"``, ``"none"``, a ProcessGroup or a DeviceMesh),
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
        self._telemetry = Telemetry(telemetry)
        check_policy(on_nonfinite)
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
        self._plans = ChunkPlans(self._distribution.chunk_bytes)
        # id(group) -> (the values its settings were read from, the settings): see group_settings
        self._settings: dict[int, tuple[tuple, object]] = {}
        check_cautious_wd(cautious_wd, "")
        defaults = dict(
            defaults,
            adamw_lr=adamw_lr,
            adamw_betas=tuple(adamw_betas) if isinstance(adamw_betas, list) else adamw_betas,
            adamw_eps=adamw_eps,
            adamw_weight_decay=adamw_weight_decay,
            tensor_layout=tensor_layout,
            num_heads=num_heads,
            split_sizes=split_sizes,
            # per group, set by routing (a weight stored as (in, out)); not an optimizer-wide option
            transposed=False,
            cautious_wd=cautious_wd,
            state_dtype=sc.check_state_dtype(state_dtype, ""),
            param_rounding=sc.check_param_rounding(param_rounding, ""),
        )
        gr.check_adamw_part(defaults, "")
        self.spectral_settings(defaults, "")  # the constructor's arguments, checked once before any group
        # The keys each rule's settings are read from (every default but the live ones and the AdamW part's).
        self._setting_keys = {
            "spectral": tuple(k for k in defaults if k not in LIVE_KEYS and not k.startswith("adamw_")),
            "adamw": ("betas", "eps", "state_dtype", "param_rounding"),
        }
        if isinstance(params, torch.Tensor):
            # torch.optim.Optimizer's type and wording, so that a drop-in behaves the same
            raise TypeError("params argument given to the optimizer should be an iterable of Tensors or dicts, "
                            f"but got {torch.typename(params)}")
        super().__init__(params, defaults)
        self._distribution.validate(
            [(g["params"], g["rule"] == "spectral", g.get("param_names")) for g in self.param_groups]
        )

    # ------------------------------------------------------------------ groups and their settings
    def add_param_group(self, param_group: dict) -> None:
        """torch's ``add_param_group``, with muonlab's routing: a group without ``"kind"`` is split (≥ 2-D → spectral,
        the rest → AdamW). Groups with and without names mix: a group added without names after named ones
        (Lightning's ``BaseFinetuning``, any ``opt.add_param_group({"params": ...})`` after
        ``param_groups(model)``) gets generated names ``group{i}.param{j}``, and named groups added to unnamed ones
        give those generated names (torch.optim requires all or none)."""
        group = gr.normalize(param_group, self.defaults, type(self).__name__)
        gr.match_names(self.param_groups, group)
        if group.get("kind") in (None, "auto") and group.get("param_names"):
            message = unrouted_warning(group["param_names"], group["params"], type(self).__name__)
            if message:
                warnings.warn(message, UserWarning, stacklevel=3)
        for routed in gr.split_by_kind(group):
            where = f"param group {len(self.param_groups)} ({routed['kind']}): "
            gr.route(routed, self.defaults, where)
            settings = self._read_settings(routed, where)
            if routed["rule"] == "spectral":
                self.check_matrix_params(routed, settings, where)
            if settings.state_dtype == "int8":
                for i, p in enumerate(routed["params"]):
                    sc.check_row_sharding(p, f"{where}{gr.label(routed, i)}: ")
            routed["state_dtype"] = settings.state_dtype  # the canonical name ("bf16", torch.bfloat16 → "bfloat16")
            super().add_param_group(routed)
            self._settings[id(self.param_groups[-1])] = (self._setting_values(self.param_groups[-1]), settings)
        self._store.reindex(self.param_groups)

    def _setting_values(self, group: Mapping) -> tuple:
        return tuple(group.get(k) for k in self._setting_keys[group["rule"]])

    def _read_settings(self, group: Mapping, where: str):
        if group["rule"] == "adamw":
            return AdamWSettings.from_group(group, where)
        return self.spectral_settings(group, where)

    def group_settings(self, group: Mapping, index: int | None = None):
        """The settings object of one of this optimizer's param groups (read again, and checked, when a value it
        was read from has changed in the group's dict since)."""
        values = self._setting_values(group)
        cached = self._settings.get(id(group))
        if cached is not None and cached[0] == values:
            return cached[1]
        if index is None:
            index = next((i for i, g in enumerate(self.param_groups) if g is group), len(self.param_groups))
        settings = self._read_settings(group, f"param group {index} ({group.get('kind')}): ")
        self._settings[id(group)] = (values, settings)
        return settings

    def check_matrix_params(self, group: Mapping, settings: SpectralSettings, where: str) -> None:
        """Refuse parameters a matrix group cannot take (subclasses extend; raise ValueError naming the parameter)."""
        gr.check_matrices(group, settings.blocks, where)

    @abstractmethod
    def spectral_settings(self, group: Mapping, where: str) -> SpectralSettings:
        """Read and validate a matrix group's settings (``where`` prefixes every message, e.g. "param group 1
        (matrix): "). Start from :func:`muonlab.optim.settings.spectral_common`."""

    def load_state_dict(self, state_dict: dict) -> None:
        """torch's load, accepting the older names of group keys (``"update"``, ``"steps"``), then every group's
        settings read again, and the saved floating state keeps its saved dtype (fp32 state of half params).

        torch.optim.Optimizer casts every floating state tensor to its parameter's dtype, which
        would round the fp32 moments of bf16/fp16 parameters; resuming must be exact.
        """
        known = set(self.defaults) | gr.GROUP_KEYS
        state_dict = dict(state_dict, param_groups=[gr.rename_old_keys(dict(g), known) for g in state_dict["param_groups"]])
        gr.check_same_groups(type(self).__name__, state_dict["param_groups"], self.param_groups)
        # how state is stored is this optimizer's choice, not the checkpoint's: keep it, convert the state below
        storage = [(g["state_dtype"], g["param_rounding"]) for g in self.param_groups]
        super().load_state_dict(state_dict)
        for group, (fmt, rounding) in zip(self.param_groups, storage):
            group["state_dtype"], group["param_rounding"] = fmt, rounding
        self._store.reindex(self.param_groups)
        self._settings.clear()
        formats = [self.group_settings(group, index).state_dtype for index, group in enumerate(self.param_groups)]
        sc.keep_saved_dtypes(self.state, state_dict["state"], state_dict["param_groups"], self.param_groups)
        sc.convert_state(self.state, self._store, self.param_groups, formats)

    # ------------------------------------------------------------------ the step
    @torch.no_grad()
    def step(self, closure=None):
        """One optimization step over all groups (skipped as a whole on non-finite gradients)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        work, grads = gr.with_grads(self.param_groups, type(self).__name__)
        finite = all_finite(grads) if grads else True
        # Every rank must take the same decision (a rank skipping alone would hang the others).
        finite = self._distribution.agree(
            [g["params"] for g in self.param_groups], [(g["rule"], params) for g, params in work], finite
        )
        if not finite:
            self._telemetry.skipped += 1
            handle_nonfinite(type(self).__name__, self.param_groups, self.on_nonfinite)
            return loss
        self._telemetry.begin_step()
        try:
            self._step_groups(work)
        finally:
            self._telemetry.active = False
        return loss

    def _step_groups(self, work: list[tuple[dict, list[torch.Tensor]]]) -> None:
        for index, (group, params) in enumerate(work):
            if not params:
                continue
            # All arithmetic runs on plain local tensors: a DTensor's shard (FSDP2) is updated in place
            # through its local view, so no elementwise op needs a DTensor sharding rule (some have none
            # on older torch), and no op pays DTensor dispatch. Whole matrices travel only in the
            # distribution's map_matrices.
            local_params = [local(p) for p in params]
            # Half-precision parameters keep fp32 state: fp16 cannot hold Adam's v (g² underflows).
            grads = [local(p.grad) for p in params]
            grads = [g if g.dtype == state_dtype(p) else g.to(state_dtype(p)) for g, p in zip(grads, params)]
            ctx = StepContext(
                self.group_settings(group, index),
                pl.to_scalar(group["lr"]),
                group["weight_decay"],
                self.state,
                {id(lp): p for lp, p in zip(local_params, params) if lp is not p},
                self._store,
            )
            if ctx.settings.state_dtype == "bfloat16" or rounds_params(ctx.settings, params):
                for p in params:  # the step count in this step's stochastic-rounding keys
                    self._store.count(self.state[p])
            try:
                if group["rule"] == "adamw":
                    self._adamw_step(ctx, params, local_params, grads)
                else:
                    self._spectral_step(ctx, group["params"], params, local_params, grads)
            finally:
                self._store.pending.clear()

    # Eager under torch.compile(opt.step): the bias corrections read Python-int step counts (exact resume), which a
    # traced step would bake in as constants and recompile for at every step.
    @torch.compiler.disable
    def _adamw_step(self, ctx: StepContext, owners: list[torch.Tensor], params: list[torch.Tensor],
                    grads: list[torch.Tensor]) -> None:
        """AdamW on the group: one fused update of fp32 state; with bf16/int8 state (or stochastically rounded bf16
        parameters) piece by piece (:func:`muonlab.optim.low_precision.adamw_pieces_step`)."""
        settings = ctx.settings
        rounded = rounds_params(settings, owners)
        beta1, beta2 = settings.betas
        hyper = dict(lr=ctx.lr, beta1=beta1, beta2=beta2, eps=settings.eps, weight_decay=ctx.weight_decay)
        if settings.state_dtype == "float32" and not rounded:
            exp_avgs = ctx.buffers(params, "exp_avg")
            exp_avg_sqs = ctx.buffers(params, "exp_avg_sq")
            pl.adamw_update(params, grads, exp_avgs, exp_avg_sqs, ctx.count_steps(params), **hyper)
            return
        adamw_pieces_step(ctx, owners, params, grads, ctx.count_steps(params), rounded, **hyper)

    def _spectral_step(
        self,
        ctx: StepContext,
        group_params: list[torch.Tensor],
        params: list[torch.Tensor],
        local_params: list[torch.Tensor],
        grads: list[torch.Tensor],
    ) -> None:
        """Moment → (owners: shape → transform → scale) → apply, one chunk of parameters at a time.

        Parameters whose blocks have the same shapes are batched together, up to the chunk size the
        scratch budget allows (:meth:`scratch_budget`); each chunk's moment inputs, transformed updates
        and their application are done before the next chunk starts, so the step's extra memory is
        that of one chunk, not of every matrix at once."""
        settings = ctx.settings
        chunks, cost = self._plans.get(id(group_params), group_params, params, settings, self.max_scratch_bytes)
        wire = wire_dtype(settings.polar, grads)
        scratch = self.inputs_are_scratch(settings)

        def whole_matrices(inputs: list[torch.Tensor], sections: list | None = None) -> list[torch.Tensor]:
            return self.compute_updates(inputs, settings, inputs_are_scratch=scratch, sections=sections)

        for chunk in chunks:
            chunk_params = [local_params[i] for i in chunk]
            chunk_grads = [grads[i] for i in chunk]
            inputs = self.spectral_inputs(ctx, chunk_params, chunk_grads)
            self._store.flush()  # the moments are final: encode them before the transform's memory peak
            updates = self._distribution.map_matrices(
                whole_matrices, inputs, [params[i] for i in chunk], [cost[i] for i in chunk], comm_dtype=wire,
                blocks=[matrix_blocks(params[i], settings.blocks) for i in chunk],
            )
            del inputs
            self.apply_updates(ctx, chunk_params, chunk_grads, updates)
            self._store.flush()  # state an apply_updates read and updated (PolarGrad's polar-first momentum)
            del updates

    def scratch_budget(self, group: Mapping, params: list[torch.Tensor]) -> int:
        """Bytes of working memory one step of ``group`` may use beyond parameters, gradients and state
        (:func:`muonlab.optim.chunks.scratch_budget`)."""
        return scratch_budget(self.max_scratch_bytes, params)

    # ------------------------------------------------------------------ subclass hooks
    @abstractmethod
    def spectral_inputs(
        self, ctx: StepContext, params: list[torch.Tensor], grads: list[torch.Tensor]
    ) -> list[torch.Tensor]:
        """The moment stage: update this chunk's moment state; return the tensors to transform (parameter-shaped)."""

    @abstractmethod
    def transform(self, x: torch.Tensor, settings: SpectralSettings, *, overwrite: bool = False) -> torch.Tensor:
        """The update direction of a (B, m, n) batch of matrices (before the shape scale).

        Return a new tensor, or ``x`` itself (never another view of it): the caller scales the
        result in place unless it is ``x``, and ``x`` may share memory with the optimizer state.
        ``overwrite``: nobody reads ``x`` afterwards, so the transform may use its memory (see
        :func:`muonlab.optim.settings.polar_factor`) — only if it does not read ``x`` itself after that.
        """

    def inputs_are_scratch(self, settings: SpectralSettings) -> bool:
        """Whether :meth:`spectral_inputs` returns new tensors (True) rather than state or gradients (False):
        the transform may then use their memory."""
        return False

    def apply_updates(
        self, ctx: StepContext, params: list[torch.Tensor], grads: list[torch.Tensor], updates: list[torch.Tensor]
    ) -> None:
        """The decay stage: W ← (1 − ηλ)W − η·update (decoupled decay with the unscaled lr, as torch.optim.Muon).

        With the group's ``cautious_wd`` (cautious weight decay, Chen et al., arXiv 2510.12402) the decay
        acts only where the parameter and the update share a sign, i.e. where the step already shrinks
        |W|: W ← W − ηλ·W∘1[W∘U ≥ 0] − η·U. Decayed entries get exactly (1 − ηλ)W, as without the mask."""
        lr = ctx.lr
        keep = 1 - lr * ctx.weight_decay
        rounded = rounds_params(ctx.settings, params)
        if torch.compiler.is_compiling() and not rounded:
            # Traced (torch.compile(opt.step)): per-tensor ops, whose float operands dynamo keeps symbolic after the
            # first change; a foreach op's Scalar argument would be baked in and recompiled for at every scheduler
            # step. The compiler fuses the loop.
            for p, u in zip(params, updates):
                if ctx.weight_decay:
                    p.copy_(torch.where(p * u >= 0, p * keep, p) if ctx.settings.cautious_wd else p * keep)
                p.sub_(u * lr)
            return
        targets = [p.float() for p in params] if rounded else params
        if ctx.weight_decay:
            if ctx.settings.cautious_wd:
                for p, u in zip(targets, updates):
                    p.copy_(torch.where(p * u >= 0, p * keep, p))
            else:
                torch._foreach_mul_(targets, keep)
        torch._foreach_add_(targets, updates, alpha=-lr)
        if rounded:
            round_params(ctx, params, targets)

    def last_step_stats(self) -> dict:
        """What the last step did, per group (update RMS, orthogonality sample, state bytes) and in all (steps
        taken, steps skipped, state bytes): :func:`muonlab.optim.telemetry.step_stats` gives each entry's formula."""
        settings = [self.group_settings(group, index) for index, group in enumerate(self.param_groups)]
        return step_stats(self._telemetry, self.param_groups, settings, self.state)

    def compute_updates(
        self,
        inputs: list[torch.Tensor],
        settings: SpectralSettings | Mapping,
        *,
        inputs_are_scratch: bool = False,
        sections: list | None = None,
    ) -> list[torch.Tensor]:
        """The matrix work of one step: ``inputs[i]`` (parameter-shaped) → its scaled update.

        Shape, one :meth:`transform` call per batch of same-shape blocks, and scale, reassembled
        (:func:`muonlab.optim.chunks.transform_batches` gives the batching and the scale s(m, n) of the settings'
        ``adjust_lr_fn``). ``settings``: a group's settings object, or a param-group dict
        (read and checked here). Pure: no optimizer state is read or written, and ``inputs`` are not modified
        unless ``inputs_are_scratch`` (the step passes it when its moment inputs are new tensors, so that the
        iteration may use their memory) — the function the distribution runs on each matrix's owner.
        ``sections[i]``: the row sections of ``inputs[i]`` when it is a piece holding some of a parameter's
        blocks (a tensor-parallel shard of whole heads, :mod:`muonlab.distributed.blocks`); None: the group's.
        """
        if isinstance(settings, Mapping):
            settings = self.spectral_settings(settings, "")
        return transform_batches(inputs, settings, self._compiled_transform or self.transform, self._telemetry,
                                 inputs_are_scratch=inputs_are_scratch, sections=sections)

