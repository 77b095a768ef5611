"""Optimizer state in fewer bytes: bf16 with stochastic rounding, and blockwise 8-bit codes.

A state tensor (a momentum, Adam's m or v) is *stored* in one of :data:`STATE_DTYPES` and *updated* in fp32:
each step decodes it (one chunk of parameters at a time, so the working set stays bounded), updates it, and
encodes it back.

``"float32"``
    today's state: the tensor itself, updated in place (4 bytes per element).
``"bfloat16"``
    2 bytes per element, written back with **stochastic rounding**
    (:func:`muonlab.optim.stochastic_rounding.stochastic_round_bf16`): x rounds up to the next bf16 value with
    probability equal to its distance from the one below, so E[round(x)] = x and an EMA whose increments are below
    bf16's resolution still moves on average (nearest rounding would freeze it).
``"int8"``
    blockwise 8-bit (Dettmers et al., "8-bit Optimizers via Block-wise Quantization", arXiv 2110.02861,
    :mod:`muonlab.optim.int8_codes`): the tensor's rows (index 0; the rest flattened) are cut into blocks of
    ``BLOCK_SIZE`` = 256 consecutive elements, each block stores its absmax a = max|x| as fp32 and every element as
    one code c with x ≈ a·map[c], on a *dynamic* map (:func:`muonlab.optim.int8_codes.dynamic_map`): signed for
    momenta and Adam's m, unsigned for Adam's v (whose 8th bit then adds precision instead of a sign). 1 + 4/256 ≈
    1.016 bytes per element. Blocks never straddle rows, so a tensor sharded along dim 0 (FSDP2's default) has its
    scales sharded the same way, and a checkpoint's layout does not depend on the sharding. Codes round to the
    nearest map level (deterministic); a positive v never rounds to 0 (it takes the smallest level), so
    m/(√v + ε) cannot blow up from quantization. 0-/1-D tensors (biases, gains: a few KB) keep fp32 state.

The random bits of stochastic rounding come from a counter-based generator
(:func:`muonlab.optim.stochastic_rounding.random_bits16`): a fixed table of exactly uniform 16-bit values read at
a rotation that hashes (key, element index ÷ 2²⁰), where the key mixes the optimizer's rounding seed, the
parameter's index, the state slot and the step count (all Python ints kept in the optimizer state). No generator
state is stored, the bits do not depend on how the tensor is sharded (the element index is global), and a resumed
run draws exactly the bits of the run that never stopped. Same seed, same step → same bits, on any device.
"""

from __future__ import annotations

import math

import torch

from muonlab.optim.int8_codes import blocks_per_row, dequantize_blockwise, quantizable, quantize_blockwise
from muonlab.optim.state import local, state_dtype
from muonlab.optim.stochastic_rounding import rounding_key, stochastic_round_bf16

STATE_DTYPES = ("float32", "bfloat16", "int8")
# accepted spellings -> canonical name
_ALIASES = {"float32": "float32", "fp32": "float32", torch.float32: "float32",
            "bfloat16": "bfloat16", "bf16": "bfloat16", torch.bfloat16: "bfloat16",
            "int8": "int8", torch.int8: "int8"}
PARAM_ROUNDINGS = ("nearest", "stochastic")


def check_state_dtype(value, where: str = "") -> str:
    """The canonical name of a ``state_dtype`` setting; one clear ValueError for anything else."""
    try:
        name = _ALIASES.get(value)
    except TypeError:  # unhashable
        name = None
    if name is None:
        raise ValueError(f"{where}state_dtype must be one of 'float32', 'bfloat16', 'int8' (or torch.float32, "
                         f"torch.bfloat16); got {value!r}")
    return name


def check_param_rounding(value, where: str = "") -> str:
    if value not in PARAM_ROUNDINGS:
        raise ValueError(f"{where}param_rounding must be one of {', '.join(map(repr, PARAM_ROUNDINGS))}; got {value!r}")
    return value


# ---------------------------------------------------------------- state entries in a stored format
# Each state tensor's stream of random bits: (rounding seed, parameter index, slot, step).
SLOTS = {"momentum_buffer": 0, "exp_avg": 1, "exp_avg_sq": 2}
PARAM_SLOT = 3
# Adam's second moment is non-negative: the unsigned map (its 8th bit adds precision instead of a sign)
UNSIGNED_KEYS = frozenset({"exp_avg_sq"})
# int8 state: state[key] holds the uint8 codes, state[key + ABSMAX_SUFFIX] the fp32 absmax of each block
ABSMAX_SUFFIX = "_absmax"


def slot_of(key: str) -> int:
    return SLOTS.get(key, 4 + sum(map(ord, key)))


def _sharded_like(shard: torch.Tensor, owner: torch.Tensor, shape=None) -> torch.Tensor:
    """``shard`` (a local tensor) as the state of ``owner``: itself for a plain parameter, a DTensor with the
    parameter's mesh and placements (global shape ``shape``, default the parameter's) for a DTensor one."""
    if not hasattr(owner, "device_mesh"):
        return shard
    from torch.distributed.tensor import DTensor

    shape = torch.Size(shape if shape is not None else owner.shape)
    stride = tuple(math.prod(shape[i + 1:]) for i in range(len(shape)))
    return DTensor.from_local(shard, owner.device_mesh, owner.placements, run_check=False, shape=shape, stride=stride)


def check_row_sharding(owner: torch.Tensor, where: str = "") -> None:
    """int8 state keeps one absmax per block of a row: a DTensor parameter must be sharded along dim 0 only."""
    for placement in getattr(owner, "placements", ()):
        if placement.is_shard() and placement.dim % owner.dim() != 0:
            raise ValueError(f"{where}state_dtype 'int8' needs parameters sharded along dim 0 (as FSDP2 does by "
                             f"default); got a parameter of shape {tuple(owner.shape)} sharded along dim {placement.dim}")


def global_offset(owner: torch.Tensor) -> int:
    """The flat index, in the whole parameter, of this rank's first local element (0 for a plain tensor). For a
    parameter sharded along dim 0 the local elements are the consecutive indices from there, so stochastic
    rounding draws the bits the whole tensor would."""
    if not hasattr(owner, "device_mesh"):
        return 0
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    _, offsets = compute_local_shape_and_global_offset(owner.shape, owner.device_mesh, owner.placements)
    strides = [math.prod(owner.shape[i + 1:]) for i in range(owner.dim())]
    return int(sum(o * s for o, s in zip(offsets, strides)))


def stored_format(state: dict, key: str) -> str | None:
    """How ``state[key]`` is stored: "int8", "bfloat16", the name of another float dtype, or None (absent)."""
    value = state.get(key)
    if value is None:
        return None
    if key + ABSMAX_SUFFIX in state and value.dtype == torch.uint8:
        return "int8"
    return str(value.dtype).removeprefix("torch.")


def _rows(t: torch.Tensor, rows: tuple[int, int] | None) -> torch.Tensor:
    return t if rows is None else t[rows[0]:rows[1]]


@torch.compiler.disable  # eager under torch.compile(opt.step): see StateStore._decoded
def decode(state: dict, key: str, local_like: torch.Tensor, dtype: torch.dtype,
           rows: tuple[int, int] | None = None) -> torch.Tensor:
    """A new local tensor in ``dtype`` holding ``state[key]`` (zeros when absent), whatever its stored format; only
    its rows ``rows`` = (first, end) of the local tensor when given (int8 blocks never straddle rows)."""
    fmt = stored_format(state, key)
    if fmt is None:
        return torch.zeros(_rows(local_like, rows).shape, dtype=dtype, device=local_like.device)
    stored = _rows(local(state[key]), rows)
    if fmt == "int8":
        out = dequantize_blockwise(stored, _rows(local(state[key + ABSMAX_SUFFIX]), rows), key not in UNSIGNED_KEYS)
        return out if out.dtype == dtype else out.to(dtype)
    return stored.to(dtype=dtype, copy=True)


def allocate(state: dict, key: str, owner: torch.Tensor, local_like: torch.Tensor, fmt: str) -> None:
    """Storage for ``state[key]`` in format ``fmt``, sharded like ``owner``, holding zeros (int8: zero scales)."""
    device = local_like.device
    if fmt == "bfloat16":
        state.pop(key + ABSMAX_SUFFIX, None)
        state[key] = _sharded_like(torch.zeros(local_like.shape, dtype=torch.bfloat16, device=device), owner)
        return
    if fmt != "int8":
        raise ValueError(f"allocate: format must be 'bfloat16' or 'int8', got {fmt!r}")
    rows, nblocks = blocks_per_row(owner.shape)
    state[key] = _sharded_like(torch.zeros(local_like.shape, dtype=torch.uint8, device=device), owner)
    state[key + ABSMAX_SUFFIX] = _sharded_like(
        torch.zeros((local_like.shape[0], nblocks), dtype=torch.float32, device=device), owner, (rows, nblocks))


def encode(state: dict, key: str, owner: torch.Tensor, work: torch.Tensor, fmt: str, rounding: int,
           rows: tuple[int, int] | None = None) -> None:
    """Store the local tensor ``work`` as ``state[key]`` (its rows ``rows`` when given) in format ``fmt``
    ("bfloat16" or "int8"), in place into the existing storage when it has that format (the DTensor wrapper stays),
    new storage sharded like ``owner`` otherwise. ``rounding``: the key of this write's stochastic-rounding bits."""
    if stored_format(state, key) != fmt:
        if rows is not None:
            raise ValueError(f"encode: rows of {key!r} can only be written into storage already in {fmt!r}")
        allocate(state, key, owner, work, fmt)
    stored = _rows(local(state[key]), rows)
    if fmt == "bfloat16":
        per_row = stored.numel() // stored.shape[0] if stored.dim() and stored.shape[0] else 0
        offset = global_offset(owner) + (rows[0] * per_row if rows is not None else 0)
        stochastic_round_bf16(work, rounding, offset, out=stored)
        return
    quantize_blockwise(work, key not in UNSIGNED_KEYS, stored, _rows(local(state[key + ABSMAX_SUFFIX]), rows))


def state_nbytes(state: dict) -> int:
    """Bytes of the tensors in one parameter's state (local shards: this rank's share)."""
    return sum(local(v).numel() * local(v).element_size() for v in state.values() if torch.is_tensor(v))


class StateStore:
    """The optimizer's state as one step sees it: fp32 work tensors decoded from each group's stored format,
    written back (:meth:`flush`) once the moment stage has updated them.

    ``"float32"`` state (and int8 state of 0-/1-D tensors) is today's: the stored tensor itself, updated in place,
    created in :func:`full_precision_dtype` of its parameter. ``"bfloat16"``/``"int8"``: :meth:`buffers` decodes a
    chunk's entries into new fp32 tensors and remembers them; :meth:`flush` encodes them back and drops them, so at
    most one chunk's work tensors are alive. The stochastic-rounding key of a write is (``seed``, the parameter's
    index in the optimizer, the state slot, the parameter's ``state["rounding_step"]``), which :meth:`count`
    advances once per step."""

    def __init__(self, seed: int = 0) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"rounding_seed must be an int, got {seed!r}")
        self.seed = seed
        self.pending: list[tuple[dict, str, torch.Tensor, torch.Tensor, str]] = []
        self.index: dict[int, int] = {}  # id(parameter) -> its position in the optimizer's param groups

    def reindex(self, param_groups) -> None:
        self.index = {id(p): i for i, p in enumerate(p for g in param_groups for p in g["params"])}

    def key(self, state: dict, owner: torch.Tensor, slot: int) -> int:
        return rounding_key(self.seed, self.index.get(id(owner), 0), slot, state.get("rounding_step", 0))

    @staticmethod
    @torch.compiler.disable  # eager: a traced step would specialize on the Python int (see _decoded)
    def count(state: dict) -> None:
        state["rounding_step"] = state.get("rounding_step", 0) + 1

    def buffers(self, state: dict, key: str, owner: torch.Tensor, local_like: torch.Tensor, fmt: str,
                dtype: torch.dtype, rows: tuple[int, int] | None = None) -> torch.Tensor:
        """The work tensor of ``state[key]`` (zeros on first use), local like ``local_like``, in ``dtype``; only the
        local rows ``rows`` = (first, end) when given (a slice of a large tensor, so that the work stays small)."""
        if fmt == "int8" and not quantizable(owner):
            fmt = "float32"
        stored = stored_format(state, key)
        if fmt == "float32":
            if stored is None:
                state[key] = torch.zeros_like(owner, dtype=dtype, memory_format=torch.preserve_format)
            elif stored != str(dtype).removeprefix("torch."):  # a bf16/int8 checkpoint loaded into fp32 state
                state[key] = _sharded_like(decode(state, key, local_like, dtype), owner)
                state.pop(key + ABSMAX_SUFFIX, None)
            return _rows(local(state[key]), rows)
        return self._decoded(state, key, owner, local_like, fmt, dtype, rows)

    # The codecs run eagerly under torch.compile(opt.step) (a graph break on each side). Their rounding keys are
    # Python ints that change every step: traced, dynamo makes them symbolic after the first change, and inductor's
    # C++ code for the per-element hash the bits then came from typed it as float and did not compile (torch 2.13,
    # CPU). Eager, the codecs give the state bit for bit what an eager step gives from the same fp32 work tensors
    # (on CUDA the rounding calls its own compiled kernel, tested with keys changing from call to call).
    @torch.compiler.disable
    def _decoded(self, state: dict, key: str, owner: torch.Tensor, local_like: torch.Tensor, fmt: str,
                 dtype: torch.dtype, rows: tuple[int, int] | None) -> torch.Tensor:
        stored = stored_format(state, key)
        if rows is not None and stored != fmt:  # first use, or state saved in another format: re-store it whole
            if stored is None:
                allocate(state, key, owner, local_like, fmt)
            else:
                encode(state, key, owner, decode(state, key, local_like, dtype), fmt, self.key(state, owner, slot_of(key)))
        work = decode(state, key, local_like, dtype, rows)  # updated in the full-precision dtype (fp64 for fp64 params)
        self.pending.append((state, key, owner, work, fmt, rows))
        return work

    def flush(self) -> None:
        """Encode every pending work tensor into its stored format."""
        if self.pending:  # fp32 state has none: no graph break in its traced step
            self._encode_pending()

    @torch.compiler.disable  # eager: see _decoded
    def _encode_pending(self) -> None:
        for state, key, owner, work, fmt, rows in self.pending:
            encode(state, key, owner, work, fmt, self.key(state, owner, slot_of(key)), rows)
        self.pending.clear()

    @torch.compiler.disable  # eager: see _decoded
    def round_params(self, params: list[torch.Tensor], works: list[torch.Tensor], states: list[dict],
                     owners: list[torch.Tensor], starts: list[int] | None = None) -> None:
        """Write fp32 ``works`` into the bf16 local ``params`` with stochastic rounding; ``starts``: the index of each
        one's first element in its local parameter (when it is a slice of it)."""
        starts = starts or [0] * len(params)
        for p, w, state, owner, start in zip(params, works, states, owners, starts):
            stochastic_round_bf16(w, self.key(state, owner, PARAM_SLOT), global_offset(owner) + start, out=p)


# ---------------------------------------------------------------- loading a checkpoint
def keep_saved_dtypes(state: dict, saved_state: dict, saved_groups: list, param_groups: list) -> None:
    """Put back, in ``state``, every floating tensor of ``saved_state`` (a loaded state dict's, its parameters
    numbered in ``saved_groups``' order) whose dtype torch's load changed. torch.optim.Optimizer casts every floating
    state tensor to its parameter's dtype, which would round the fp32 moments of bf16/fp16 parameters; resuming must
    be exact."""
    saved_ids = [i for g in saved_groups for i in g["params"]]
    params = [p for g in param_groups for p in g["params"]]
    for saved_id, p in zip(saved_ids, params):
        for key, value in saved_state.get(saved_id, {}).items():
            current = state[p].get(key)
            if torch.is_tensor(value) and torch.is_tensor(current) and current.dtype != value.dtype:
                state[p][key] = value.to(device=p.device, copy=True)


def convert_state(state: dict, store: StateStore, param_groups: list, formats: list[str]) -> None:
    """Re-store every moment of ``param_groups[i]`` in state dtype ``formats[i]`` (after loading a checkpoint saved
    with another one)."""
    for group, fmt in zip(param_groups, formats):
        for p in group["params"]:
            entries = state.get(p, {})
            for key in SLOTS:
                if key in entries:
                    store.buffers(entries, key, p, local(p), fmt, state_dtype(p))
            store.flush()
