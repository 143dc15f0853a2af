"""Fixtures of the task tests (the fakes themselves live in fakes.py)."""

from __future__ import annotations

import pytest
import torch

from .fakes import GridTokenizer, synthetic_batch


@pytest.fixture
def tokenizer() -> GridTokenizer:
    return GridTokenizer()


@pytest.fixture
def batch() -> dict[str, torch.Tensor]:
    return synthetic_batch()


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread; with two, a busy 2-core machine makes OpenMP spin."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
