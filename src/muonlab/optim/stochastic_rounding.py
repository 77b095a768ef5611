"""bf16 stochastic rounding with counter-based random bits (:mod:`muonlab.optim.state_codec` stores state with it).

The 16 random bits of element i (its index in the whole tensor) under a key come from one fixed table of
:data:`WINDOW` = 2²⁰ entries in which every 16-bit value appears exactly 16 times, in a hashed order
(:func:`noise_table`). Global indices are cut into windows of :data:`WINDOW`; window w reads the table rotated by
a hash of (key, w) (:func:`window_rotation`): bits(i) = table[(i mod W + rotation(key, i div W)) mod W]. The key
mixes the optimizer's rounding seed, the parameter's index, the state slot and the step count
(:func:`rounding_key`), so each step every element reads an unrelated table entry: over the key, its bits are exactly
uniform and the rounding exactly unbiased. No generator state is stored, the bits do not depend on how the tensor is
sharded (the index is global), and a resumed run draws exactly the bits of the run that never stopped. Same seed,
same step → same bits, on any device.

Why a table and not a hash per element: reading a precomputed table costs one add per element, where hashing each
index (arange, two multiplies, three xor-shifts) made the bf16 state's encoding ten times dearer and its step slower
than fp32 state's (BENCHMARKS.md, issue 22).
"""

from __future__ import annotations

import warnings

import torch

WINDOW_BITS = 20
WINDOW = 1 << WINDOW_BITS  # table entries (int32: 4 MiB per device), and the global indices sharing one rotation

_MASK32 = 0xFFFFFFFF
# odd multipliers below 2³¹, so that a 32-bit value times one stays below 2⁶³ (no int64 overflow)
_MUL1, _MUL2 = 0x7FEB352D, 0x68E31DA5
_TABLES: dict[torch.device, torch.Tensor] = {}


def _mix32_int(x: int) -> int:
    """A 32-bit integer hash (xor-shift-multiply avalanche) of a Python int, for keys; a bijection of 32-bit ints."""
    x &= _MASK32
    x ^= x >> 16
    x = (x * _MUL1) & _MASK32
    x ^= x >> 15
    x = (x * _MUL2) & _MASK32
    x ^= x >> 16
    return x


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """:func:`_mix32_int` of every entry of an int64 tensor."""
    x = x & _MASK32
    x = x ^ (x >> 16)
    x = (x * _MUL1) & _MASK32
    x = x ^ (x >> 15)
    x = (x * _MUL2) & _MASK32
    return x ^ (x >> 16)


def rounding_key(seed: int, *ids: int) -> int:
    """A 32-bit key from a seed and stream ids (parameter index, state slot, step): each folded in and re-hashed,
    so that keys of nearby ids are unrelated."""
    key = _mix32_int(seed ^ 0x9E3779B9)
    for value in ids:
        key = _mix32_int(key ^ _mix32_int(value + 0x632BE5AB))
    return key


def noise_table(device=None) -> torch.Tensor:
    """The :data:`WINDOW` 16-bit values (int32) that the rounding reads: the low 16 bits of the permutation of
    0 … W − 1 that sorts the indices by their hash, so each 16-bit value appears exactly W / 2¹⁶ = 16 times. Built
    once on the CPU from integer ops alone (the same on every machine and torch version), copied once per device."""
    device = torch.device("cpu") if device is None else torch.device(device)
    table = _TABLES.get(device)
    if table is None:
        if (cpu := _TABLES.get(torch.device("cpu"))) is None:
            hashes = _mix32(torch.arange(WINDOW, dtype=torch.int64))  # distinct (a bijection): no ties to break
            cpu = _TABLES[torch.device("cpu")] = (torch.argsort(hashes) & 0xFFFF).to(torch.int32)
        table = _TABLES[device] = cpu.to(device)
    return table


def window_rotation(key: int, window: int) -> int:
    """Where window ``window`` of global indices starts reading the table under ``key``."""
    return _mix32_int(key ^ _mix32_int(window ^ 0x5BD1E995)) & (WINDOW - 1)


def table_runs(key: int, offset: int, numel: int):
    """(first position, table index, length) of the contiguous table runs that give the bits of global indices
    offset … offset + numel − 1: a new run where a window ends or the rotated table wraps around."""
    pos = 0
    while pos < numel:
        index = offset + pos
        within = index & (WINDOW - 1)
        at = (within + window_rotation(key, index >> WINDOW_BITS)) & (WINDOW - 1)
        length = min(numel - pos, WINDOW - within, WINDOW - at)
        yield pos, at, length
        pos += length


def random_bits16(numel: int, key: int, offset: int = 0, device=None) -> torch.Tensor:
    """16 uniform random bits (int32 in [0, 2¹⁶)) for each element index offset … offset + numel − 1 under ``key``
    (module docstring). A pure function of its arguments."""
    table = noise_table(device)
    runs = [table[at:at + length] for _, at, length in table_runs(key, offset, numel)]
    return torch.cat(runs) if runs else torch.empty(0, dtype=torch.int32, device=table.device)


# devices on which tensors of ≥ FUSED_MIN_ELEMENTS round in one compiled kernel (:func:`fused_round_bf16`): on a GPU
# the eager path's five small kernels per table run are bound by their launches, and a compiled call costs about
# two runs' launches (BENCHMARKS.md); on the CPU the eager kernels run at memory speed with no compile wait
FUSED_DEVICES = {"cuda"}
FUSED_MIN_ELEMENTS = WINDOW
_FUSED = {"kernel": None, "failed": None}


def _round_whole(x: torch.Tensor, table: torch.Tensor, key: int, offset: int) -> torch.Tensor:
    """The rounding of a flat fp32 ``x`` in one expression (what :func:`fused_round_bf16` compiles): each element's
    window, rotation and table entry computed from its global index, as :func:`table_runs` does run by run."""
    index = torch.arange(x.numel(), dtype=torch.int64, device=x.device) + offset
    rotation = _mix32(_mix32((index >> WINDOW_BITS) ^ 0x5BD1E995) ^ key) & (WINDOW - 1)
    noise = table[((index & (WINDOW - 1)) + rotation) & (WINDOW - 1)]
    bits = ((x.view(torch.int32) + noise) >> 16).to(torch.int16).view(torch.bfloat16)
    return bits.masked_fill(x.isnan(), float("nan"))


def fused_round_bf16(x: torch.Tensor, key: int, offset: int) -> torch.Tensor | None:
    """:func:`stochastic_round_bf16` of a flat fp32 ``x`` by one ``torch.compile``d kernel (bit for bit the same),
    or None where it cannot compile (then the caller runs the eager path; the reason is warned once)."""
    if _FUSED["failed"] is not None:
        return None
    if _FUSED["kernel"] is None:
        _FUSED["kernel"] = torch.compile(_round_whole, dynamic=True, fullgraph=True)
    try:
        return _FUSED["kernel"](x, noise_table(x.device), key, offset)
    except Exception as err:  # no compiler or backend for this device: the eager path is exact too
        _FUSED["failed"] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        warnings.warn(f"muonlab: fused stochastic rounding unavailable ({_FUSED['failed']}); using the eager path",
                      RuntimeWarning, stacklevel=3)
        return None


def stochastic_round_bf16(x: torch.Tensor, key: int, offset: int = 0, out: torch.Tensor | None = None) -> torch.Tensor:
    """fp32 → bf16 with stochastic rounding: adding 16 random bits to the fp32 bit pattern and truncating rounds
    |x| up with probability (low 16 bits)/2¹⁶, i.e. exactly its distance to the bf16 value below — unbiased.
    Values already in bf16 are unchanged; NaN stays NaN, ±Inf stays ±Inf. ``offset``: the global index of x's
    first element (a shard's), so that a sharded tensor rounds as the whole one would. Works one table run at a
    time (≤ :data:`WINDOW` elements: 4 MiB of int32 temporaries), or, on :data:`FUSED_DEVICES` and from
    :data:`FUSED_MIN_ELEMENTS` elements, in one compiled kernel (:func:`fused_round_bf16`; the same bits)."""
    if x.dtype != torch.float32:
        x = x.float()
    flat = x.reshape(-1)
    if out is None:
        out = torch.empty(x.shape, dtype=torch.bfloat16, device=x.device)
    out_flat = out.view(-1)
    if (x.device.type in FUSED_DEVICES and flat.numel() >= FUSED_MIN_ELEMENTS
            and (whole := fused_round_bf16(flat, key, offset)) is not None):
        out_flat.copy_(whole)
        return out
    out_bits = out_flat.view(torch.int16)
    table = noise_table(x.device)
    for pos, at, length in table_runs(key, offset, flat.numel()):
        part = flat[pos:pos + length]
        # int32 bits + < 2¹⁶ cannot overflow except from NaN patterns (0x7FFF….), which are put back below
        bits = torch.add(part.view(torch.int32), table[at:at + length])
        bits >>= 16  # the signed top half: sign, exponent, 7 bits of mantissa
        out_bits[pos:pos + length] = bits
        # a NaN check costs 10 adds on the CPU, a sum one (it is NaN if an input is; ∞ − ∞ only costs the check);
        # on other devices the mask is cheap and a host-side test would wait for the device
        if x.device.type != "cpu" or bool(part.sum().isnan()):
            out_flat[pos:pos + length].masked_fill_(part.isnan(), float("nan"))
    return out
