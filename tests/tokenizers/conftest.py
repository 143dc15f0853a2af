"""Fixtures for tokenizer tests: one torch thread, and synthetic standardised particle sets."""

from __future__ import annotations

import pytest
import torch


def gaussian_mixture_jets(
    n_jets: int, n_max: int = 24, seed: int = 0, n_components: int = 6, spread: float = 0.3
) -> dict[str, torch.Tensor]:
    """Padded jets of 3-feature particles drawn from a fixed Gaussian mixture (centres seed 99).

    Multiplicities are uniform in [3, n_max]; padded entries are filled with large junk values so a
    test notices if padding ever leaks into a real particle's token.
    """
    centres = torch.randn(n_components, 3, generator=torch.Generator().manual_seed(99)) * 2
    g = torch.Generator().manual_seed(seed)
    comp = torch.randint(0, n_components, (n_jets, n_max), generator=g)
    x = centres[comp] + spread * torch.randn(n_jets, n_max, 3, generator=g)
    n = torch.randint(3, n_max + 1, (n_jets,), generator=g)
    mask = torch.arange(n_max)[None, :] < n[:, None]
    x = torch.where(mask[..., None], x, torch.full_like(x, 77.0))
    return {"x": x, "mask": mask}


@pytest.fixture(scope="session")
def mixture() -> dict[str, torch.Tensor]:
    return gaussian_mixture_jets(400, seed=0)


@pytest.fixture(scope="session")
def mixture_val() -> dict[str, torch.Tensor]:
    return gaussian_mixture_jets(100, seed=1)
