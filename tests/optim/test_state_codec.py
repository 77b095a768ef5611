"""The state codec: stochastic rounding to bf16 and blockwise 8-bit codes, against fp64 references."""

from __future__ import annotations

import math
import shutil

import pytest
import torch

from muonlab.optim import int8_codes as i8
from muonlab.optim import state_codec as sc
from muonlab.optim import stochastic_rounding as sr


def _bf16_neighbours(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The bf16 values just below and above each fp32 x (in magnitude order), from its bit pattern."""
    bits = x.view(torch.int32).to(torch.int64)
    low = ((bits >> 16) << 16).to(torch.int32).view(torch.float32)
    high = (((bits >> 16) + 1) << 16).to(torch.int32).view(torch.float32)
    return low, high


def test_stochastic_rounding_lands_on_a_neighbour_and_keeps_bf16_values():
    x = torch.randn(10_000, generator=torch.Generator().manual_seed(0)) * 3
    out = sr.stochastic_round_bf16(x, key=5).float()
    low, high = _bf16_neighbours(x)
    assert bool(((out == low) | (out == high)).all())
    exact = x.to(torch.bfloat16).float()  # already representable: must stay as is
    assert torch.equal(sr.stochastic_round_bf16(exact, key=5).float(), exact)


def test_stochastic_rounding_is_unbiased_over_many_keys():
    # values between two bf16 neighbours at known fractions: the mean over draws converges to x, nearest does not
    base = torch.tensor([1.0, -1.0, 3.0, 1e-20, -7.5e5]).to(torch.bfloat16).float()  # bf16 values
    ulp = (_bf16_neighbours(base)[1] - base).abs()  # spacing to the next bf16 value in magnitude
    fractions = torch.tensor([0.1, 0.3, 0.05, 0.7, 0.45])
    x = base + torch.sign(base) * ulp * fractions
    draws = torch.stack([sr.stochastic_round_bf16(x, key=sr.rounding_key(0, k)).double() for k in range(4000)])
    mean = draws.mean(0)
    err = (mean - x.double()).abs() / ulp.double().abs()
    # the rounding is Bernoulli(fraction): 4000 draws, std of the mean ≤ 0.5/√4000 ≈ 0.008 ulp
    assert float(err.max()) < 0.04, err
    nearest_err = (x.to(torch.bfloat16).double() - x.double()).abs() / ulp.double().abs()
    assert float(nearest_err.max()) > 0.09  # the test can fail: nearest rounding is biased here
    # and each entry was rounded up about `fraction` of the time
    up = (draws.abs() > base.double().abs()).double().mean(0)
    assert torch.allclose(up, fractions.double(), atol=0.04)


def test_stochastic_rounding_is_reproducible_and_keyed():
    x = torch.randn(5000, generator=torch.Generator().manual_seed(1))
    a = sr.stochastic_round_bf16(x, key=sr.rounding_key(7, 3, 0, 11))
    b = sr.stochastic_round_bf16(x.clone(), key=sr.rounding_key(7, 3, 0, 11))
    assert torch.equal(a.view(torch.int16), b.view(torch.int16))  # same key → same bits
    c = sr.stochastic_round_bf16(x, key=sr.rounding_key(7, 3, 0, 12))  # next step → other bits
    assert not torch.equal(a.view(torch.int16), c.view(torch.int16))


def test_stochastic_rounding_of_a_shard_matches_the_whole_tensor():
    x = torch.randn(64, 33, generator=torch.Generator().manual_seed(2))
    key = sr.rounding_key(0, 1)
    whole = sr.stochastic_round_bf16(x, key)
    top = sr.stochastic_round_bf16(x[:20], key, offset=0)
    rest = sr.stochastic_round_bf16(x[20:], key, offset=20 * 33)
    assert torch.equal(torch.cat([top, rest]).view(torch.int16), whole.view(torch.int16))


def test_stochastic_rounding_keeps_nonfinite_and_zero():
    x = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, -0.0])
    out = sr.stochastic_round_bf16(x, key=3).float()
    assert math.isnan(out[0]) and out[1] == float("inf") and out[2] == -float("inf")
    assert out[3] == 0 and out[4] == 0


def test_stochastic_rounding_keeps_every_nan_pattern():
    # NaNs whose top mantissa bits are zero, or whose pattern is near the int32 wrap, would turn into ±Inf or ±0
    # if the random bits were added to them; ±Inf and ∞ − ∞ (a NaN sum, no NaN input) must not be touched
    patterns = [0x7F800001, 0x7F80FFFF, 0x7FFFFFFF, 0x7FC00000, 0xFF800001, 0xFFFFFFFF, 0xFFFF0000]
    nans = torch.tensor([v - (1 << 32) if v >= 1 << 31 else v for v in patterns], dtype=torch.int32).view(torch.float32)
    assert bool(nans.isnan().all())
    x = torch.cat([torch.randn(3000, generator=torch.Generator().manual_seed(3)), nans])
    for key in range(20):
        out = sr.stochastic_round_bf16(x, key=key).float()
        assert bool(out[-len(patterns):].isnan().all()) and not bool(out[:-len(patterns)].isnan().any())
    infs = torch.tensor([float("inf"), -float("inf"), 1.0, -2.5])
    assert torch.equal(sr.stochastic_round_bf16(infs, key=4).float(), infs)


def test_noise_table_is_exactly_uniform_and_the_same_everywhere():
    table = sr.noise_table()
    assert table.dtype == torch.int32 and table.numel() == sr.WINDOW
    counts = torch.bincount(table, minlength=1 << 16)
    assert counts.numel() == 1 << 16 and bool((counts == sr.WINDOW >> 16).all())  # each 16-bit value equally often
    sr._TABLES.clear()  # rebuilt from integer ops alone: the same table
    assert torch.equal(sr.noise_table(), table)


@pytest.mark.parametrize("offset", [sr.WINDOW - 700, 3 * sr.WINDOW - 1, (1 << 31) - 500, (1 << 40) + 12345])
def test_rounding_across_windows_and_large_offsets_matches_any_split(offset):
    # the bits are a function of the global index alone: any split of a range (windows, table wrap-around, indices
    # past 2³¹) gives the same result as the whole range
    x = torch.randn(3000, generator=torch.Generator().manual_seed(4))
    key = sr.rounding_key(2, 9)
    whole = sr.stochastic_round_bf16(x, key, offset=offset).view(torch.int16)
    for cut in (1, 699, 700, 701, 2999):
        parts = [sr.stochastic_round_bf16(x[:cut], key, offset=offset),
                 sr.stochastic_round_bf16(x[cut:], key, offset=offset + cut)]
        assert torch.equal(torch.cat(parts).view(torch.int16), whole)
    bits = sr.random_bits16(3000, key, offset)
    assert torch.equal(torch.cat([sr.random_bits16(5, key, offset), sr.random_bits16(2995, key, offset + 5)]), bits)
    other = sr.random_bits16(3000, sr.rounding_key(2, 10), offset)  # another key: other bits
    assert float((bits == other).double().mean()) < 0.01


def test_fused_rounding_gives_the_eager_bits(monkeypatch):
    # the one-kernel path (torch.compile; the default on CUDA) computes each element's window, rotation and table
    # entry from its index: the same bits as the eager path's runs, across windows, wrap-arounds and NaNs
    if not any(shutil.which(c) for c in ("c++", "g++", "clang++")):
        pytest.skip("inductor needs a C++ compiler on the CPU")
    monkeypatch.setitem(sr._FUSED, "failed", None)
    x = torch.randn(2 * sr.WINDOW + 333, generator=torch.Generator().manual_seed(6))
    x[::997] = float("nan")
    x[5], x[6] = float("inf"), -float("inf")
    # keys and offsets change from call to call, as in a step: the compiled kernel takes them as symbolic ints
    cases = [(21, 0), (22, sr.WINDOW - 9), (rounding_key := sr.rounding_key(5, 1, 0, 9), 1 << 40), (rounding_key, 77)]
    eager = {case: sr.stochastic_round_bf16(x, key=case[0], offset=case[1]) for case in cases}
    monkeypatch.setattr(sr, "FUSED_DEVICES", {"cpu"})
    for (key, offset), reference in eager.items():
        fused = sr.stochastic_round_bf16(x, key=key, offset=offset)
        assert sr._FUSED["failed"] is None, sr._FUSED["failed"]
        assert torch.equal(fused.view(torch.int16), reference.view(torch.int16))


def test_random_bits_are_uniform():
    bits = sr.random_bits16(1 << 16, key=sr.rounding_key(1, 2))
    assert int(bits.min()) >= 0 and int(bits.max()) < 1 << 16
    counts = torch.bincount(bits >> 12, minlength=16).double()  # 16 bins of 4096 values
    chi2 = float(((counts - counts.mean()) ** 2 / counts.mean()).sum())
    assert chi2 < 50  # 15 degrees of freedom: p ≈ 1e-5 at 50
    lowest = torch.bincount(bits & 15, minlength=16).double()  # low bits as well
    assert float(((lowest - lowest.mean()) ** 2 / lowest.mean()).sum()) < 50


def _blocks_absmax(x: torch.Tensor) -> torch.Tensor:
    """fp64 reference: each element's block absmax (blocks of BLOCK_SIZE along each flattened row)."""
    rows = x.shape[0]
    flat = x.double().reshape(rows, -1)
    length = flat.shape[1]
    out = torch.empty_like(flat)
    for start in range(0, length, i8.BLOCK_SIZE):
        part = flat[:, start:start + i8.BLOCK_SIZE]
        out[:, start:start + i8.BLOCK_SIZE] = part.abs().amax(dim=1, keepdim=True)
    return out.reshape(x.shape)


INPUTS = {
    "normal": lambda g: torch.randn(37, 300, generator=g),
    "heavy_tailed": lambda g: torch.distributions.StudentT(1.5).sample((64, 512)) * 1e-3,
    "log_uniform": lambda g: torch.randn(16, 3, 100, generator=g).sign() * torch.exp(torch.rand(16, 3, 100, generator=g) * -25),
    "zero": lambda g: torch.zeros(8, 700),
    "tiny_rows": lambda g: torch.randn(5, 3, generator=g) * 1e-30,
}


@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("name", sorted(INPUTS))
def test_blockwise_int8_error_bounds_against_fp64(name, signed):
    torch.manual_seed(0)
    x = INPUTS[name](torch.Generator().manual_seed(3)).float()
    if not signed:
        x = x * x  # a second moment: non-negative, wide range
    codes, scales = i8.quantize_blockwise(x, signed)
    assert codes.dtype == torch.uint8 and codes.shape == x.shape
    assert scales.shape == i8.blocks_per_row(x.shape)
    y = i8.dequantize_blockwise(codes, scales, signed).double()
    ref = x.double()
    absmax = _blocks_absmax(x)
    err = (y - ref).abs()
    # every element within half the widest level gap of its block's absmax (plus fp32 rounding of the product)
    bound = i8.max_quantization_error(signed) * absmax + 1e-6 * ref.abs()
    assert bool((err <= bound).all()), float((err - bound).max())
    # each block's largest element is stored exactly (up to the fp32 product), and zeros stay zero
    at_max = ref.abs() == absmax
    assert torch.allclose(y[at_max], ref[at_max], rtol=1e-6, atol=0)
    assert bool((y[ref == 0] == 0).all())
    # relative precision in the top decade of the block's absmax: half a level gap (0.9/64 signed, 0.9/128
    # unsigned, of the absmax) over at least 0.1·absmax
    top = (ref.abs() >= 0.1 * absmax) & (ref != 0)
    if bool(top.any()):
        rel = err[top] / ref.abs()[top]
        assert float(rel.max()) < (0.08 if signed else 0.04)
    if not signed:  # a positive second moment never decodes to 0
        assert bool((y[ref > 0] > 0).all())
    assert bool((y.sign() == ref.sign())[y != 0].all())


def test_dynamic_maps_have_the_documented_levels():
    signed, unsigned = i8.dynamic_map(True), i8.dynamic_map(False)
    assert signed.numel() == 255 and unsigned.numel() == 256
    assert float(signed.max()) == 1.0 and float(signed.min()) == -1.0 and 0.0 in signed.tolist()
    assert float(unsigned.min()) == 0.0 and float(unsigned.max()) == 1.0
    assert bool((unsigned[1:] > unsigned[:-1]).all())
    assert float(unsigned[1]) == pytest.approx(1e-7)  # the smallest positive level: 10^-(8-1)


def test_quantize_into_given_storage_and_round_trip_stable():
    x = torch.randn(12, 640, generator=torch.Generator().manual_seed(4))
    codes = torch.empty(x.shape, dtype=torch.uint8)
    scales = torch.empty(i8.blocks_per_row(x.shape))
    i8.quantize_blockwise(x, True, codes, scales)
    y = i8.dequantize_blockwise(codes, scales, True)
    codes2, scales2 = i8.quantize_blockwise(y, True)
    assert torch.equal(codes, codes2) and torch.equal(scales, scales2)  # decoded values re-encode to themselves


def test_int8_slices_do_not_change_the_result(monkeypatch):
    # (the rounding's own splits, windows and table runs: test_rounding_across_windows_and_large_offsets_...)
    x = torch.randn(40, 300, generator=torch.Generator().manual_seed(5))
    whole = i8.quantize_blockwise(x, True)
    monkeypatch.setattr(i8, "SLICE_ELEMENTS", 1000)
    sliced = i8.quantize_blockwise(x, True)
    assert torch.equal(whole[0], sliced[0]) and torch.equal(whole[1], sliced[1])


@pytest.mark.parametrize("value", ["fp7", "float16", None, 8, torch.float16, ["int8"]])
def test_bad_state_dtype_is_one_clear_line(value):
    with pytest.raises(ValueError, match=r"^state_dtype must be one of 'float32', 'bfloat16', 'int8'") as err:
        sc.check_state_dtype(value)
    assert "\n" not in str(err.value)


def test_state_dtype_spellings():
    assert sc.check_state_dtype(torch.float32) == "float32"
    assert sc.check_state_dtype("bf16") == "bfloat16"
    assert sc.check_state_dtype(torch.bfloat16) == "bfloat16"
    assert sc.check_state_dtype("int8") == "int8"
    with pytest.raises(ValueError, match="param_rounding must be one of 'nearest', 'stochastic'; got 'up'"):
        sc.check_param_rounding("up")


@pytest.mark.parametrize("signed", [True, False])
def test_table_encoder_picks_the_nearest_level_like_a_search(signed):
    """The bucket-table encoder against a plain nearest-level search (fp64) on values spread over all decades,
    the levels themselves and the midpoints between them."""
    levels = i8.dynamic_map(signed).double()
    mids = (levels[1:] + levels[:-1]) / 2
    g = torch.Generator().manual_seed(6)
    spread = torch.exp(-torch.rand(200_000, generator=g, dtype=torch.float64) * 20)
    if signed:
        spread = spread * torch.randn(spread.shape, generator=g, dtype=torch.float64).sign()
    values = torch.cat([spread, levels, mids, torch.tensor([1.0, 0.0])]).float()
    width = i8.BLOCK_SIZE - 1
    padded = torch.cat([values, torch.zeros(-values.numel() % width)]).reshape(-1, width)
    x = torch.cat([torch.ones(padded.shape[0], 1), padded], dim=1)  # each block's absmax is 1
    codes, scales = i8.quantize_blockwise(x, signed)
    assert bool((scales == 1).all())
    got = levels[codes[:, 1:].long()].reshape(-1)[: values.numel()]
    distance = (values.double().unsqueeze(1) - levels.unsqueeze(0)).abs()
    if not signed:  # by design a positive value takes at least the smallest positive level, never 0
        distance[:, 0] = torch.where(values > 0, float("inf"), distance[:, 0].double())
    best = distance.min(dim=1).values
    # ties at a midpoint may go either way by the fp32 rounding of the midpoint
    assert bool(((got - values.double()).abs() <= best + 1e-6 * values.double().abs() + 1e-12).all())


@pytest.mark.parametrize("fmt", ["bfloat16", "int8"])
def test_encode_decode_state_entries(fmt):
    owner = torch.zeros(6, 300)
    work = torch.randn(6, 300, generator=torch.Generator().manual_seed(8))
    state: dict = {}
    assert torch.equal(sc.decode(state, "exp_avg", owner, torch.float32), torch.zeros(6, 300))
    sc.encode(state, "exp_avg", owner, work, fmt, rounding=1)
    back = sc.decode(state, "exp_avg", owner, torch.float32)
    if fmt == "bfloat16":
        assert state["exp_avg"].dtype == torch.bfloat16 and sc.state_nbytes(state) == 6 * 300 * 2
        low, high = _bf16_neighbours(work)
        assert bool(((back == low) | (back == high)).all())
    else:
        assert state["exp_avg"].dtype == torch.uint8 and state["exp_avg_absmax"].shape == (6, 2)
        assert sc.state_nbytes(state) == 6 * 300 + 6 * 2 * 4
        assert float((back - work).abs().max()) <= i8.max_quantization_error(True) * float(work.abs().max())
    storage = state["exp_avg"].data_ptr()
    sc.encode(state, "exp_avg", owner, back, fmt, rounding=2)  # written in place, and a fixed point
    assert state["exp_avg"].data_ptr() == storage
    assert torch.equal(sc.decode(state, "exp_avg", owner, torch.float32), back)
    # a full-precision entry (an fp32 checkpoint) decodes as itself, and re-encodes into the new format
    state = {"exp_avg": work.clone()}
    assert torch.equal(sc.decode(state, "exp_avg", owner, torch.float32), work)
    sc.encode(state, "exp_avg", owner, work, "int8" if fmt == "bfloat16" else "bfloat16", rounding=3)
    assert sc.stored_format(state, "exp_avg") == ("int8" if fmt == "bfloat16" else "bfloat16")
    assert ("exp_avg_absmax" in state) == (fmt == "bfloat16")


@pytest.mark.parametrize("signed", [True, False])
def test_int8_codec_temporaries_stay_within_a_few_slices(signed):
    """The encoder's and decoder's working memory beyond their outputs, in fp32-sized temporaries of one slice:
    ≤ 3.5 encoding (magnitudes, code indices, the midpoints looked up, a comparison's bytes), ≤ 2.5 decoding (code
    indices, levels looked up) — no int64 copy of the indices, nothing left over from the previous slice (the
    tensor spans several slices, so leftovers would show)."""
    from muonlab.bench.step import profile_step_memory

    slice_elements = i8.slice_elements(torch.device("cpu"))
    length = 768
    rows = 3 * slice_elements // length + 5
    x = torch.randn(rows, length, generator=torch.Generator().manual_seed(7))
    if not signed:
        x = x.abs()
    outputs = []
    codes_bytes = x.numel() + 4 * rows * i8.blocks_per_row(x.shape)[1]
    encode = profile_step_memory(lambda: outputs.append(i8.quantize_blockwise(x, signed)))
    assert encode["peak_bytes"] <= codes_bytes + 3.5 * 4 * slice_elements, encode
    codes, scales = outputs.pop()
    decode = profile_step_memory(lambda: outputs.append(i8.dequantize_blockwise(codes, scales, signed)))
    assert decode["peak_bytes"] <= 4 * x.numel() + 2.5 * 4 * slice_elements, decode
