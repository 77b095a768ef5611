"""Optimizer state in fewer bytes: bf16 with stochastic rounding, and blockwise 8-bit codes.

A state tensor (a momentum, Adam's m or v) is *stored* in one of :data:`STATE_DTYPES` and *updated* in fp32:
each step decodes it (one chunk of parameters at a time, so the working set stays bounded), updates it, and
encodes it back.

``"float32"``
    today's state: the tensor itself, updated in place (4 bytes per element).
``"bfloat16"``
    2 bytes per element, written back with **stochastic rounding** (:func:`stochastic_round_bf16`): x rounds up
    to the next bf16 value with probability equal to its distance from the one below, so E[round(x)] = x and an
    EMA whose increments are below bf16's resolution still moves on average (nearest rounding would freeze it).
``"int8"``
    blockwise 8-bit (Dettmers et al., "8-bit Optimizers via Block-wise Quantization", arXiv 2110.02861): the
    tensor's rows (index 0; the rest flattened) are cut into blocks of :data:`BLOCK_SIZE` = 256 consecutive
    elements, each block stores its absmax a = max|x| as fp32 and every element as one code c with
    x ≈ a·map[c], on a *dynamic* map (:func:`dynamic_map`): signed for momenta and Adam's m, unsigned for Adam's
    v (whose 8th bit then adds precision instead of a sign). 1 + 4/256 ≈ 1.016 bytes per element. Blocks never
    straddle rows, so a tensor sharded along dim 0 (FSDP2's default) has its scales sharded the same way, and a
    checkpoint's layout does not depend on the sharding. Codes round to the nearest map level (deterministic);
    a positive v never rounds to 0 (it takes the smallest level), so m/(√v + ε) cannot blow up from quantization.
    0-/1-D tensors (biases, gains: a few KB) keep fp32 state.

The random bits of stochastic rounding come from a counter-based generator (:func:`random_bits16`): a hash of
(key, element index), where the key mixes the optimizer's rounding seed, the parameter's index, the state slot
and the step count (all Python ints kept in the optimizer state). No generator state is stored, the bits do not
depend on how the tensor is sharded (the element index is global), and a resumed run draws exactly the bits of
the run that never stopped. Same seed, same step → same bits, on any device.
"""

from __future__ import annotations

import functools
import math

import torch

STATE_DTYPES = ("float32", "bfloat16", "int8")
# accepted spellings -> canonical name
_ALIASES = {"float32": "float32", "fp32": "float32", torch.float32: "float32",
            "bfloat16": "bfloat16", "bf16": "bfloat16", torch.bfloat16: "bfloat16",
            "int8": "int8", torch.int8: "int8"}
PARAM_ROUNDINGS = ("nearest", "stochastic")
BLOCK_SIZE = 256
# elements the encoders process at once: bounds their int64/fp32 temporaries (≤ 8 MiB each)
SLICE_ELEMENTS = 1 << 20


def _slice(device: torch.device) -> int:
    return SLICE_ELEMENTS
_MASK32 = 0xFFFFFFFF
# odd multipliers below 2³¹, so that a 32-bit value times one stays below 2⁶³ (no int64 overflow)
_MUL1, _MUL2 = 0x7FEB352D, 0x68E31DA5
_WEYL = 0x2C1B3C6D  # odd: i ↦ i·_WEYL is a bijection mod 2³²


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


# ---------------------------------------------------------------- counter-based random bits
def _mix32_int(x: int) -> int:
    """A 32-bit integer hash (xor-shift-multiply avalanche) of a Python int, for keys."""
    x &= _MASK32
    x ^= x >> 16
    x = (x * _MUL1) & _MASK32
    x ^= x >> 15
    x = (x * _MUL2) & _MASK32
    x ^= x >> 16
    return x


def rounding_key(seed: int, *ids: int) -> int:
    """A 32-bit key from a seed and stream ids (parameter index, state slot, step): each folded in and re-hashed,
    so that keys of nearby ids are unrelated."""
    key = _mix32_int(seed ^ 0x9E3779B9)
    for value in ids:
        key = _mix32_int(key ^ _mix32_int(value + 0x632BE5AB))
    return key


def _as_int32(value: int) -> int:
    value &= _MASK32
    return value - (1 << 32) if value >= 1 << 31 else value


def random_bits16(numel: int, key: int, offset: int = 0, device=None) -> torch.Tensor:
    """16 uniform random bits (int32 in [0, 2¹⁶)) for each element index offset … offset + numel − 1 under ``key``:
    the top half of a 32-bit hash of (index, key). A pure function of its arguments.

    The hash runs in int32 with wrapping multiplies (the cheapest integer ops on every device): h = i·A + key,
    then h ^= h ≫ 15, h ·= B, h ^= h ≫ 16 (logical shifts, i.e. arithmetic ones masked). Index i·A alone is a
    Weyl sequence (evenly spread bits within a tensor); the key, a hash of the step, moves every element to an
    unrelated point each step; the xor-shift-multiply mixes the top bits that are used."""
    if offset + numel <= 1 << 31:
        h = torch.arange(offset, offset + numel, dtype=torch.int32, device=device)
    else:  # indices past 2³¹: fold the high word in, then wrap to int32
        wide = torch.arange(offset, offset + numel, dtype=torch.int64, device=device)
        wide = (wide & _MASK32) ^ (((wide >> 32) * _MUL2) & _MASK32)
        h = torch.where(wide >= 1 << 31, wide - (1 << 32), wide).to(torch.int32)
    h.mul_(_WEYL).add_(_as_int32(key))
    h.bitwise_xor_((h >> 15).bitwise_and_(0x1FFFF))
    h.mul_(_as_int32(_MUL1))
    h.bitwise_xor_((h >> 16).bitwise_and_(0xFFFF))
    return (h >> 16).bitwise_and_(0xFFFF)


def stochastic_round_bf16(x: torch.Tensor, key: int, offset: int = 0, out: torch.Tensor | None = None) -> torch.Tensor:
    """fp32 → bf16 with stochastic rounding: adding 16 random bits to the fp32 bit pattern and truncating rounds
    |x| up with probability (low 16 bits)/2¹⁶, i.e. exactly its distance to the bf16 value below — unbiased.
    Values already in bf16 are unchanged; NaN stays NaN, ±Inf stays ±Inf. ``offset``: the global index of x's
    first element (a shard's), so that a sharded tensor rounds as the whole one would. Works slice by slice."""
    if x.dtype != torch.float32:
        x = x.float()
    flat = x.reshape(-1)
    if out is None:
        out = torch.empty(x.shape, dtype=torch.bfloat16, device=x.device)
    out_flat = out.view(-1)
    size = _slice(x.device)
    for start in range(0, flat.numel(), size):
        part = flat[start:start + size]
        # int32 bits + < 2¹⁶ cannot overflow except from NaN patterns (0x7FFF….), which are put back below
        bits = random_bits16(part.numel(), key, offset + start, part.device).add_(part.view(torch.int32))
        rounded = (bits >> 16).to(torch.int16).view(torch.bfloat16)  # the signed top half: sign, exponent, 7 bits
        out_flat[start:start + size] = torch.where(part.isnan(), part.to(torch.bfloat16), rounded)
    return out


# ---------------------------------------------------------------- blockwise 8-bit
@functools.lru_cache(maxsize=None)
def _dynamic_levels(signed: bool) -> tuple[float, ...]:
    magnitude_bits = 7 if signed else 8
    levels = {0.0}
    for decade in range(magnitude_bits):
        count = 2 ** (magnitude_bits - 1 - decade)
        for j in range(count):
            value = 10.0 ** -decade * (0.1 + 0.9 * (j + 1) / count)
            levels.add(value)
            if signed:
                levels.add(-value)
    return tuple(sorted(levels))


@functools.lru_cache(maxsize=None)
def _map_on(signed: bool, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """(levels, magnitude midpoints + [inf], bucket table, index of level 0) of a map on ``device``.

    The encoder finds the nearest level of a magnitude v ∈ [0, 1] without a search: v's fp32 bits ≫ 12 name a
    bucket of relative width ≤ 2⁻¹¹, and ``table[bucket]`` counts the midpoints below the bucket's lowest value.
    Adjacent midpoints are ≥ 0.9/128 apart relative to their value (far wider than a bucket), so at most one lies
    inside a bucket: code = table[bucket] + (v > midpoint[table[bucket]])."""
    levels64 = torch.tensor(_dynamic_levels(signed), dtype=torch.float64)
    magnitudes = levels64[levels64 >= 0]
    midpoints = ((magnitudes[1:] + magnitudes[:-1]) / 2).float()
    lows = (torch.arange(0, (0x3F800000 >> 12) + 1, dtype=torch.int32) << 12).view(torch.float32)
    table = torch.bucketize(lows, midpoints).to(torch.int16)
    midpoints = torch.cat([midpoints, torch.tensor([float("inf")])])
    zero = int((levels64 < 0).sum())
    return levels64.to(device, torch.float32), midpoints.to(device), table.to(device), zero


def dynamic_map(signed: bool, device=None) -> torch.Tensor:
    """The sorted levels of the dynamic map in [−1, 1] (signed) or [0, 1] (unsigned).

    Dettmers' dynamic tree layout: after the sign bit (signed maps), the magnitude's bits are split between a
    decade d (10^−d … 10^−d+1, d = 0 … b − 1) and a linear fraction with 2^(b−1−d) levels in it — many levels
    near the block's absmax, fewer and fewer down to 10^−(b−1) · 0.1·… . b = 7 magnitude bits for signed maps
    (255 levels: 0 and ±127), b = 8 for unsigned (256 levels: 0 and 255). 1.0 is a level, so each block's
    largest element is stored exactly."""
    return _map_on(bool(signed), torch.device(device or "cpu"))[0]


def blocks_per_row(shape) -> tuple[int, int]:
    """(rows, blocks per row) of a ≥ 2-D tensor of ``shape``: rows along dim 0, each the rest flattened and cut
    into ⌈row length / BLOCK_SIZE⌉ blocks (the last one shorter when the length is not a multiple)."""
    rows = int(shape[0])
    length = math.prod(int(s) for s in shape[1:])
    return rows, -(-length // BLOCK_SIZE) if length else 0


def quantizable(t: torch.Tensor) -> bool:
    """Whether int8 state applies to a tensor like ``t`` (≥ 2-D, not empty); other state stays fp32."""
    return t.dim() >= 2 and t.numel() > 0


def _padded_blocks(x: torch.Tensor, rows: int, nblocks: int) -> torch.Tensor:
    flat = x.reshape(rows, -1)
    pad = nblocks * BLOCK_SIZE - flat.shape[1]
    if pad:
        flat = torch.nn.functional.pad(flat, (0, pad))
    return flat.reshape(rows, nblocks, BLOCK_SIZE)


def _row_slices(rows: int, row_length: int, device: torch.device):
    step = max(1, _slice(device) // max(row_length, 1))
    for start in range(0, rows, step):
        yield start, min(rows, start + step)


def quantize_blockwise(x: torch.Tensor, signed: bool, codes: torch.Tensor | None = None,
                       scales: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """x (≥ 2-D, floating) → (codes: uint8 shaped like x, scales: fp32 (rows, blocks per row)).

    Per block: a = max|x| (0 for an all-zero block, whose codes are then the map's 0), codes the nearest level
    of x/a on :func:`dynamic_map` (``signed`` False: x must be ≥ 0, and x > 0 never rounds to 0). Writes into
    ``codes``/``scales`` when given. Row slice by row slice (bounded temporaries)."""
    rows, nblocks = blocks_per_row(x.shape)
    length = x.numel() // max(rows, 1)
    _, midpoints, table, zero = _map_on(bool(signed), x.device)
    if codes is None:
        codes = torch.empty(x.shape, dtype=torch.uint8, device=x.device)
    if scales is None:
        scales = torch.empty((rows, nblocks), dtype=torch.float32, device=x.device)
    x_rows, code_rows = x.reshape(rows, length), codes.view(rows, length)
    for start, stop in _row_slices(rows, length, x.device):
        blocks = _padded_blocks(x_rows[start:stop].float(), stop - start, nblocks)
        magnitude = blocks.abs()
        absmax = magnitude.amax(dim=-1)
        scales[start:stop] = absmax
        # |x|/a ≤ 1 exactly (IEEE division is monotone); a zero block divides by 1
        magnitude.div_(torch.where(absmax > 0, absmax, 1.0).unsqueeze(-1))
        below = table[magnitude.view(torch.int32) >> 12].int()  # int32 indices: half the temporaries of int64
        index = below.add_(magnitude > midpoints[below])
        if signed:
            index = torch.where(blocks < 0, zero - index, zero + index)
        else:  # a positive second moment never becomes 0
            index = torch.where(magnitude > 0, index.clamp(min=1), index)
        code_rows[start:stop] = index.reshape(stop - start, -1)[:, :length].to(torch.uint8)
    return codes, scales


def dequantize_blockwise(codes: torch.Tensor, scales: torch.Tensor, signed: bool,
                         out: torch.Tensor | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """codes, scales (from :func:`quantize_blockwise`) → a·map[c], shaped like ``codes`` (into ``out`` if given)."""
    rows, nblocks = blocks_per_row(codes.shape)
    length = codes.numel() // max(rows, 1)
    levels = _map_on(bool(signed), codes.device)[0]
    if out is None:
        out = torch.empty(codes.shape, dtype=dtype, device=codes.device)
    code_rows, out_rows = codes.reshape(rows, length), out.view(rows, length)
    for start, stop in _row_slices(rows, length, codes.device):
        values = levels[code_rows[start:stop].int()]
        values = _padded_blocks(values, stop - start, nblocks)
        values.mul_(scales[start:stop].unsqueeze(-1))
        out_rows[start:stop] = values.reshape(stop - start, -1)[:, :length]
    return out


def max_quantization_error(signed: bool) -> float:
    """The largest |x/a − map(x/a)| over x/a ∈ [−1, 1] (or [0, 1]): half the widest gap between levels — the bound
    :func:`quantize_blockwise` guarantees on every element, relative to its block's absmax a."""
    levels = _dynamic_levels(bool(signed))
    return max(b - a for a, b in zip(levels, levels[1:])) / 2


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


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if hasattr(t, "to_local") else t


def _sharded_like(local: torch.Tensor, owner: torch.Tensor, shape=None) -> torch.Tensor:
    """``local`` as the state of ``owner``: itself for a plain parameter, a DTensor with the parameter's mesh and
    placements (global shape ``shape``, default the parameter's) for a DTensor one."""
    if not hasattr(owner, "device_mesh"):
        return local
    from torch.distributed.tensor import DTensor

    shape = torch.Size(shape if shape is not None else owner.shape)
    stride = tuple(math.prod(shape[i + 1:]) for i in range(len(shape)))
    return DTensor.from_local(local, owner.device_mesh, owner.placements, run_check=False, shape=shape, stride=stride)


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


def decode(state: dict, key: str, local_like: torch.Tensor, dtype: torch.dtype,
           rows: tuple[int, int] | None = None) -> torch.Tensor:
    """A new local tensor in ``dtype`` holding ``state[key]`` (zeros when absent), whatever its stored format; only
    its rows ``rows`` = (first, end) of the local tensor when given (int8 blocks never straddle rows)."""
    fmt = stored_format(state, key)
    if fmt is None:
        return torch.zeros(_rows(local_like, rows).shape, dtype=dtype, device=local_like.device)
    stored = _rows(_local(state[key]), rows)
    if fmt == "int8":
        out = dequantize_blockwise(stored, _rows(_local(state[key + ABSMAX_SUFFIX]), rows), key not in UNSIGNED_KEYS)
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
    stored = _rows(_local(state[key]), rows)
    if fmt == "bfloat16":
        per_row = stored.numel() // stored.shape[0] if stored.dim() and stored.shape[0] else 0
        offset = global_offset(owner) + (rows[0] * per_row if rows is not None else 0)
        stochastic_round_bf16(work, rounding, offset, out=stored)
        return
    quantize_blockwise(work, key not in UNSIGNED_KEYS, stored, _rows(_local(state[key + ABSMAX_SUFFIX]), rows))


def state_nbytes(state: dict) -> int:
    """Bytes of the tensors in one parameter's state (local shards: this rank's share)."""
    return sum(_local(v).numel() * _local(v).element_size() for v in state.values() if torch.is_tensor(v))


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
            return _rows(_local(state[key]), rows)
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
        for state, key, owner, work, fmt, rows in self.pending:
            encode(state, key, owner, work, fmt, self.key(state, owner, slot_of(key)), rows)
        self.pending.clear()

    def round_params(self, params: list[torch.Tensor], works: list[torch.Tensor], states: list[dict],
                     owners: list[torch.Tensor], starts: list[int] | None = None) -> None:
        """Write fp32 ``works`` into the bf16 local ``params`` with stochastic rounding; ``starts``: the index of each
        one's first element in its local parameter (when it is a slice of it)."""
        starts = starts or [0] * len(params)
        for p, w, state, owner, start in zip(params, works, states, owners, starts):
            stochastic_round_bf16(w, self.key(state, owner, PARAM_SLOT), global_offset(owner) + start, out=p)
