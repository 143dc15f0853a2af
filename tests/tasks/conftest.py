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
