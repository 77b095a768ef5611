"""Ψ_¼ by spectral_power(method="gram"): matmul flops against Muon's polar factor, and accuracy vs float64 SVD.

Deterministic (FlopCounterMode counts the products; no timing), so it can run on a loaded machine:

    PYTHONPATH=src python benchmarks/quarter_power.py [--quick] [--step]

Prints, per shape, GFLOP of Ψ_¼ and of Muon's default polar (``polar_express_gram_norm``, 4 steps), their
ratio, the 2-block ratio (8 × 768², 2 × 768×3072, 2 × 3072×768, the weights of ``bench family --quick``),
and the relative Frobenius error ‖Ψ − Ψ_exact‖_F/‖Ψ_exact‖_F in float32 for log-spaced spectra.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.reference: the exact spectra

from muonlab import polar, spectral_power  # noqa: E402
from tests.reference import rel_err, spectral_matrix  # noqa: E402

BLOCK_SHAPES = {(768, 768): 8, (768, 3072): 2, (3072, 768): 2}  # per 2 GPT-2-small blocks


def flops(fn, x) -> int:
    with FlopCounterMode(display=False) as counter:
        fn(x)
    return counter.get_total_flops()


def step_flops() -> None:
    """Matmul flops of one whole optimizer step on the 2-block model of ``bench family --quick``."""
    from muonlab.bench.step import CONTEXT, VOCAB, WIDTH, GPT2Params, fill_gradients
    from muonlab.optim import make_optimizer, param_groups

    model = GPT2Params(2, WIDTH, VOCAB, min(CONTEXT, WIDTH))
    fill_gradients(model, torch.Generator().manual_seed(0))
    counts = {}
    for name in ("muon", "msgdq", "adamq"):
        opt = make_optimizer(name, param_groups(model))
        opt.step()  # warm-up: creates the state
        counts[name] = flops(lambda _: opt.step(), None)
    for name, count in counts.items():
        print(f"flops step (2 blocks) {name}: {count / 1e9:.1f} GFLOP, {count / counts['muon']:.3f}x muon")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="κ ≤ 1000 and one seed")
    parser.add_argument("--p", type=float, default=0.25)
    parser.add_argument("--step", action="store_true", help="also count one whole step of muon, msgdq, adamq")
    args = parser.parse_args()
    p = args.p
    total_power = total_polar = 0
    for shape, count in BLOCK_SHAPES.items():
        x = torch.randn(*shape)
        fp = flops(lambda t: spectral_power(t, p, "gram"), x)
        fm = flops(lambda t: polar(t, "polar_express_gram_norm"), x)
        total_power += count * fp
        total_polar += count * fm
        print(f"flops {shape[0]}x{shape[1]}: psi {fp / 1e9:.3f} GFLOP, muon polar {fm / 1e9:.3f}, ratio {fp / fm:.3f}"
              f" ({fp / (2 * 768**3):.1f} products of 768^3)")
    print(f"flops 2 blocks: psi {total_power / 1e9:.1f} GFLOP, muon polar {total_polar / 1e9:.1f}, "
          f"ratio {total_power / total_polar:.3f}")
    if args.step:
        step_flops()
    kappas = (10.0, 100.0, 1e3) if args.quick else (10.0, 100.0, 1e3, 1e4)
    shapes = [(768, 768), (768, 3072), (3072, 768), (48, 96), (96, 48), (64, 64), (12, 120)]
    print("rel. error (fp32, max over seeds) | " + " | ".join(f"κ={k:g}" for k in kappas))
    for shape in shapes:
        row = []
        for kappa in kappas:
            worst = 0.0
            for seed in range(1 if args.quick or shape[0] * shape[1] > 10**5 else 3):
                ref = spectral_matrix(*shape, kappa=kappa, generator=torch.Generator().manual_seed(seed))
                worst = max(worst, rel_err(spectral_power(ref.matrix.float(), p, "gram"), ref.power(p)))
            row.append(f"{worst:.2e}")
        print(f"{shape[0]}x{shape[1]} | " + " | ".join(row))
    ref = spectral_matrix(40, 30, kappa=10.0, rank=7)
    print(f"rank 7 of 40x30, κ=10: {rel_err(spectral_power(ref.matrix.float(), p, 'gram'), ref.power(p)):.2e}")
    ref = spectral_matrix(256, 768, kappa=100.0, rank=64)
    print(f"rank 64 of 256x768, κ=100: {rel_err(spectral_power(ref.matrix.float(), p, 'gram'), ref.power(p)):.2e}")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
