"""Fixtures shared by every test folder."""

from __future__ import annotations

import pytest


@pytest.fixture()
def one_torch_thread():
    """Tiny models on a shared 2-core machine run fastest (and most predictably) on one torch thread. torch is imported
    here, not at module level, so the torch-free runtime lane collects without it."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
