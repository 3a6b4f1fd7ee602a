import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """Keep the tests light on shared machines: one intra-op thread, restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
