import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    """The optimizer tests use tiny matrices: one intra-op thread.

    On the shared 2-core CI/dev machines, OpenMP's second thread makes each tiny matmul wait for
    a descheduled worker (measured: 37 ms for a 16×48 @ 48×16 product with 2 threads under load,
    3 µs with 1). The numbers under test do not depend on the thread count.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
