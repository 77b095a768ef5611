import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_single_thread():
    """Every test starts from seed 0 with one intra-op thread.

    The tests use small matrices. On the shared 2-core CI/dev machines, OpenMP's second thread
    makes each tiny matmul wait for a descheduled worker (measured: 37 ms for a 16×48 @ 48×16
    product with 2 threads under load, 3 µs with 1). No result under test depends on the thread
    count; tests that need more threads (benchmarks, multi-process runs) set their own.
    """
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
