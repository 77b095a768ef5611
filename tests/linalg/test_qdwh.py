"""QDWH with its weight schedule fixed on the host (no host synchronization), against float64 SVD."""

import pytest
import torch

from muonlab import polar
from muonlab.linalg.qdwh import QR_THRESHOLD, default_schedule, qdwh, qdwh_schedule
from tests.reference import rel_err, spectral_matrix


def test_schedule_from_the_unit_roundoff():
    """float32: 4 steps (2 QR, 2 Cholesky); float64: 6 (2 QR, 4 Cholesky); ℓ reaches 1 − 10u."""
    for dtype, steps in ((torch.float32, 4), (torch.float64, 6)):
        schedule = default_schedule(dtype)
        assert len(schedule) == steps
        assert [c > QR_THRESHOLD for _, _, c in schedule] == [True, True] + [False] * (steps - 2)
    assert default_schedule(torch.float64, 2) == default_schedule(torch.float64)[:2]
    # well-conditioned start: fewer steps, the last ones the Halley limit (3, 1, 3)
    short = qdwh_schedule(0.5, 1e-15)
    assert len(short) <= 3 and abs(short[-1][0] - 3.0) < 1e-3


@pytest.mark.parametrize("shape", [(64, 64), (96, 48), (48, 96)])
@pytest.mark.parametrize("kappa", [10.0, 1e3, 1e6])
def test_qdwh_float32_converges(kappa, shape):
    ref = spectral_matrix(*shape, kappa=kappa)
    out = polar(ref.matrix.float(), "qdwh")
    assert out.dtype == torch.float32
    # float32's conditioning limit: the polar factor's own sensitivity is ~ u·κ
    assert rel_err(out, ref.polar) < 2e-5 * max(1.0, kappa / 100.0)


def test_qdwh_batch_of_mixed_matrices_equals_each_alone():
    """One schedule for the whole batch: a zero, a rank-deficient and an ill-conditioned matrix do not disturb each other."""
    ill = spectral_matrix(40, 24, kappa=1e8)
    mats = [
        spectral_matrix(40, 24, kappa=10.0).matrix,
        torch.zeros(40, 24, dtype=torch.float64),
        ill.matrix,
        spectral_matrix(40, 24, kappa=10.0, rank=5).matrix,
    ]
    batch = torch.stack(mats)
    out = qdwh(batch)
    for i, m in enumerate(mats):
        assert torch.allclose(out[i], qdwh(m.unsqueeze(0))[0], rtol=0, atol=1e-12)
    assert torch.equal(out[1], torch.zeros(40, 24, dtype=torch.float64))
    assert rel_err(out[2], ill.polar) < 1e-7
