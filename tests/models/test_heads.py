"""Heads: classifier invariances and losses against hand-computed values, flow matching trains."""

from __future__ import annotations

import math

import pytest
import torch

from jetfm.models import (
    ClassAttentionClassifier,
    FlowMatchingHead,
    MeanPoolClassifier,
    RegressionHead,
    TokenHead,
    class_probabilities,
    classification_loss,
    masked_mean,
)


def _hidden(B: int = 3, N: int = 7, D: int = 16):
    g = torch.Generator().manual_seed(0)
    h = torch.randn(B, N, D, generator=g)
    mask = torch.arange(N)[None] < torch.tensor([7, 4, 1])[:, None]
    return h, mask


@pytest.mark.parametrize("cls", [ClassAttentionClassifier, MeanPoolClassifier])
@pytest.mark.parametrize("n_out", [1, 4])
def test_classifiers_invariant_to_order_and_padding(cls, n_out: int) -> None:
    torch.manual_seed(0)
    head = cls(16, n_out).eval()
    h, mask = _hidden()
    logits = head(h, mask)
    assert logits.shape == (3, n_out)
    perm = torch.randperm(7)
    torch.testing.assert_close(head(h[:, perm], mask[:, perm]), logits, atol=1e-5, rtol=1e-5)
    h_pad = torch.cat([h, 50 * torch.randn(3, 3, 16)], 1)
    m_pad = torch.cat([mask, torch.zeros(3, 3, dtype=torch.bool)], 1)
    torch.testing.assert_close(head(h_pad, m_pad), logits, atol=1e-5, rtol=1e-5)
    # garbage in the padding of the original tensor is ignored too
    h_garbage = h.clone()
    h_garbage[~mask] = 1e3
    torch.testing.assert_close(head(h_garbage, mask), logits, atol=1e-5, rtol=1e-5)


def test_masked_mean_hand_computed() -> None:
    h = torch.tensor([[[1.0], [3.0], [100.0]], [[5.0], [7.0], [9.0]], [[2.0], [2.0], [2.0]]])
    mask = torch.tensor([[True, True, False], [True, True, True], [False, False, False]])
    assert masked_mean(h, mask)[:, 0].tolist() == [2.0, 7.0, 0.0]


def test_classification_losses_hand_computed() -> None:
    logits = torch.tensor([[0.0], [2.0]])
    labels = torch.tensor([1, 0])
    # BCE: -log(sigmoid(0)) = log 2 ; -log(1 - sigmoid(2)) = log(1 + e^2)
    expected = (math.log(2) + math.log(1 + math.exp(2))) / 2
    assert classification_loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)
    multi = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    expected = (math.log(3) + (math.log(math.e + 2) - 0.0)) / 2
    assert classification_loss(multi, torch.tensor([2, 1])).item() == pytest.approx(
        expected, rel=1e-6
    )
    p = class_probabilities(torch.tensor([[0.0]]))
    assert p.tolist() == [[0.5, 0.5]]


def test_token_and_regression_heads_shapes() -> None:
    h = torch.randn(5, 16)
    assert TokenHead(16, 33)(h).shape == (5, 33)
    assert TokenHead(16, 33, transform=False)(h).shape == (5, 33)
    assert RegressionHead(16, 3)(h).shape == (5, 3)


def test_flow_matching_learns_a_conditional_shift() -> None:
    """Target x1 = c + small noise: after training, samples follow the condition's value."""
    torch.manual_seed(0)
    head = FlowMatchingHead(dim=1, n_features=2, hidden=64, depth=2)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(150):
        c = torch.randn(128, 1, generator=g)
        x1 = torch.cat([c, -c], 1) + 0.05 * torch.randn(128, 2, generator=g)
        loss = head.loss(c, x1, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-20:]) / 20 < 0.5 * sum(losses[:20]) / 20
    c = torch.tensor([[-1.0], [0.0], [1.0]]).repeat_interleave(200, 0)
    s = head.sample(c, steps=20, generator=g)
    means = s.view(3, 200, 2).mean(1)
    torch.testing.assert_close(
        means, torch.tensor([[-1.0, 1.0], [0.0, 0.0], [1.0, -1.0]]), atol=0.25, rtol=0
    )
