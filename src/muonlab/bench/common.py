"""Shared pieces of the benchmarks: timing, plain-matmul rate, tables, JSON, spectra.

Every benchmark measures its ratios side by side in one run (the machines are shared and noisy):
the plain matmul rate that a method's GFLOP/s is compared with is measured in the same process,
right next to it. Times are medians over repeats, after a warm-up call.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import sys
import time
from typing import Callable, Iterable, Sequence

import torch

from muonlab.files import write_json


def add_common_arguments(parser, default_out: str) -> None:
    """Options every benchmark shares: --quick, --repeats, --out, --device, --threads."""
    parser.add_argument("--quick", action="store_true", help="a short run (well under a minute on CPU)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per row (median reported)")
    parser.add_argument("--out", default=default_out, help=f"JSON results file (default: {default_out})")
    parser.add_argument("--device", default="cpu", help="torch device to run on: cpu, cuda, cuda:N, or auto = cuda if available")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")


def setup_device(args) -> torch.device:
    """Validate --device/--threads/--repeats; returns the device."""
    from muonlab.devices import device_problem, resolve_device
    from muonlab.errors import CLIError

    if args.repeats is not None and args.repeats < 1:
        raise CLIError(f"--repeats must be a positive integer, got {args.repeats}")
    if args.threads is not None:
        if args.threads < 1:
            raise CLIError(f"--threads must be a positive integer, got {args.threads}")
        torch.set_num_threads(args.threads)
    problem = device_problem(args.device)
    if problem:
        raise CLIError(problem)
    return resolve_device(args.device)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_once(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds one ``fn()`` takes: CUDA events around it on CUDA (device time from the first kernel
    queued to the last one done, after the queue is drained), the wall clock elsewhere."""
    synchronize(device)
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    start_s = time.perf_counter()
    fn()
    return time.perf_counter() - start_s


def time_call(fn: Callable[[], object], repeats: int, device: torch.device, warmup: int = 1) -> dict:
    """Median time of ``fn()`` over ``repeats`` calls after ``warmup`` untimed calls (:func:`time_once`)."""
    for _ in range(warmup):
        fn()
    times = [time_once(fn, device) for _ in range(repeats)]
    return {"median_s": statistics.median(times), "min_s": min(times), "times_s": times}


def time_round_robin(fns: dict, repeats: int, device: torch.device, warmup: int = 1) -> dict:
    """Median wall time of each ``fns[key]()``, timed in rounds (one call of each per round).

    On a shared machine the load changes from second to second; interleaving puts the same
    load on every entry, so ratios of these medians are fair even when absolute times are not.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    synchronize(device)
    times = {key: [] for key in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            times[key].append(time_once(fn, device))
    return {key: {"median_s": statistics.median(t), "min_s": min(t), "times_s": t} for key, t in times.items()}


def matmul_mix(products: Sequence[tuple[int, int, int]], dtype: torch.dtype, device: torch.device):
    """(function running plain torch.mm on the given (m, k, n) products, their total flops)."""
    operands = [
        (torch.randn(m, k, dtype=dtype, device=device), torch.randn(k, n, dtype=dtype, device=device))
        for m, k, n in products
    ]

    def run():
        for a, b in operands:
            torch.mm(a, b)

    return run, sum(matmul_flops(*p) for p in products)


def matmul_flops(m: int, k: int, n: int) -> float:
    """Flops of an (m×k)·(k×n) product: 2mkn (one multiply and one add per term)."""
    return 2.0 * m * k * n


def random_orthonormal(rows: int, cols: int, generator: torch.Generator) -> torch.Tensor:
    """A Haar-random rows×cols matrix with orthonormal columns (float64)."""
    q, r = torch.linalg.qr(torch.randn(rows, cols, dtype=torch.float64, generator=generator))
    return q * torch.sign(torch.diagonal(r)).unsqueeze(-2)


def spectral_test_matrix(m: int, n: int, kappa: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(G, polar(G)) in float64: G = U diag(s) Vᵀ with s log-spaced from 1 to 1/κ, random U, V."""
    gen = torch.Generator().manual_seed(seed)
    r = min(m, n)
    u = random_orthonormal(m, r, gen)
    v = random_orthonormal(n, r, gen)
    s = torch.logspace(0.0, -math.log10(kappa), r, dtype=torch.float64)
    return (u * s) @ v.mT, u @ v.mT


def singular_value_range(y: torch.Tensor) -> tuple[float, float]:
    """(σ_min, σ_max) of a matrix, from float64 singular values."""
    s = torch.linalg.svdvals(y.detach().to("cpu", torch.float64))
    return float(s.min()), float(s.max())


def relative_error(y: torch.Tensor, ref: torch.Tensor) -> float:
    """‖y − ref‖_F / ‖ref‖_F in float64."""
    y = y.detach().to("cpu", torch.float64)
    return float(torch.linalg.matrix_norm(y - ref) / torch.linalg.matrix_norm(ref))


def format_table(rows: Iterable[dict], columns: Sequence[tuple[str, str]]) -> str:
    """A Markdown table of ``rows`` with ``columns`` = [(key, header)]; floats get 3-4 significant digits."""

    def cell(value) -> str:
        if value is None:
            return "n/a"
        if isinstance(value, float):
            if value == 0 or 1e-3 <= abs(value) < 1e5:
                return f"{value:.4g}"
            return f"{value:.2e}"
        return str(value)

    rows = list(rows)
    table = [[header for _, header in columns]] + [[cell(row.get(key)) for key, _ in columns] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    lines = ["| " + " | ".join(text.ljust(w) for text, w in zip(line, widths)) + " |" for line in table]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def environment(device: torch.device) -> dict:
    """What the numbers were measured on (the load average says how shared the machine was)."""
    info = {
        "command": " ".join(["muonlab"] + sys.argv[1:]) if sys.argv else "",
        "time": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }
    if hasattr(os, "getloadavg"):
        info["load_average"] = list(os.getloadavg())
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def check_out(out: str) -> None:
    """Fail before any work, in one line (exit 2), when the JSON file cannot be written."""
    from muonlab.errors import CLIError
    from muonlab.files import OutputError, prepare_file

    try:
        prepare_file(out)
    except OutputError as err:
        raise CLIError(str(err)) from None


def run_and_report(run: Callable[[object], dict], report: Callable[[dict], str], args) -> int:
    """The body of a bench's ``main``: check ``args.out``, run, print the table, write the JSON to ``args.out``."""
    check_out(args.out)
    result = run(args)
    print(report(result))
    write_json(args.out, result)
    print(f"\nwrote {args.out}")
    return 0
