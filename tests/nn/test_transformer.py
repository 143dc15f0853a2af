"""Masked attention and transformer encoder: equivariance, padding, causality, KV cache."""

from __future__ import annotations

import math

import pytest
import torch

from jetfm.nn import KVCache, MultiHeadAttention, TransformerEncoder


def _batch(B: int = 3, N: int = 9, D: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, N, D, generator=g)
    lengths = torch.tensor([N, 5, 1])[:B]
    mask = torch.arange(N)[None, :] < lengths[:, None]
    return x, mask


def test_attention_matches_explicit_softmax() -> None:
    torch.manual_seed(0)
    attn = MultiHeadAttention(8, 2).eval()
    x = torch.randn(1, 4, 8)
    mask = torch.tensor([[True, True, False, True]])
    out = attn(x, mask)
    # reference: per head softmax(q k^T / sqrt(d)) over the real keys only
    q, k, v = attn.qkv(x).chunk(3, -1)
    q = q.reshape(1, 4, 2, 4).transpose(1, 2)
    k = k.view(1, 4, 2, 4).transpose(1, 2)
    v = v.view(1, 4, 2, 4).transpose(1, 2)
    scores = q @ k.transpose(-1, -2) / math.sqrt(4)
    scores[..., 2] = -float("inf")
    ref = (scores.softmax(-1) @ v).transpose(1, 2).reshape(1, 4, 8)
    torch.testing.assert_close(out, attn.out(ref), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mlp,norm", [("gelu", "layernorm"), ("swiglu", "rmsnorm")])
def test_permutation_equivariance(mlp: str, norm: str) -> None:
    torch.manual_seed(1)
    enc = TransformerEncoder(16, 2, 4, mlp=mlp, norm=norm).eval()
    x, mask = _batch()
    perm = torch.randperm(x.shape[1])
    y = enc(x, mask)
    y_perm = enc(x[:, perm], mask[:, perm])
    torch.testing.assert_close(y_perm, y[:, perm], atol=1e-5, rtol=1e-5)


def test_extra_padding_changes_nothing_and_padded_outputs_zero() -> None:
    torch.manual_seed(2)
    enc = TransformerEncoder(16, 2, 4).eval()
    x, mask = _batch()
    y = enc(x, mask)
    assert torch.all(y[~mask] == 0)
    x_pad = torch.cat([x, 100 * torch.randn(3, 4, 16)], dim=1)  # garbage in the padding
    mask_pad = torch.cat([mask, torch.zeros(3, 4, dtype=torch.bool)], dim=1)
    y_pad = enc(x_pad, mask_pad)
    torch.testing.assert_close(y_pad[:, :9][mask], y[mask], atol=1e-5, rtol=1e-5)


def test_empty_jet_and_padded_queries_have_finite_grads() -> None:
    enc = TransformerEncoder(16, 2, 4, causal=False)
    x, mask = _batch()
    mask[2] = False  # a jet without real particles
    x.requires_grad_(True)
    y = enc(x, mask)
    y.pow(2).sum().backward()
    assert torch.isfinite(y).all()
    assert torch.isfinite(x.grad).all()
    assert x.grad[2].abs().max() == 0  # nothing flows from an empty jet


def test_causal_future_does_not_affect_past() -> None:
    torch.manual_seed(3)
    enc = TransformerEncoder(16, 3, 4, causal=True).eval()
    x, mask = _batch()
    y = enc(x, mask)
    x2 = x.clone()
    x2[:, 4:] = torch.randn_like(x2[:, 4:])
    y2 = enc(x2, mask)
    torch.testing.assert_close(y2[:, :4], y[:, :4])
    assert (y2[0, 4:] - y[0, 4:]).abs().max() > 1e-3  # later positions do see the change


@pytest.mark.parametrize("padded", [True, False])
def test_kv_cache_matches_full_forward(padded: bool) -> None:
    torch.manual_seed(4)
    enc = TransformerEncoder(16, 2, 4, causal=True, mlp="swiglu").eval()
    x, mask = _batch()
    if not padded:  # a sampler's cache: every position real
        mask = torch.ones_like(mask)
    full = enc(x, mask)
    cache = KVCache()
    steps = [enc(x[:, :3], mask[:, :3], cache=cache)]  # a prefix, then one position at a time
    for i in range(3, x.shape[1]):
        steps.append(enc(x[:, i : i + 1], mask[:, i : i + 1], cache=cache))
    assert cache.length == x.shape[1]
    out = torch.cat(steps, dim=1)
    torch.testing.assert_close(out[mask], full[mask], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out, full, atol=1e-5, rtol=1e-5)


def test_kv_cache_across_buffer_growth_and_reorder() -> None:
    """Steps past several growth blocks (the one-position path attends over the whole buffer,
    unwritten positions masked), with jets dropped from the batch on the way, equal the full
    forward of the surviving jets."""
    torch.manual_seed(5)
    enc = TransformerEncoder(16, 2, 4, causal=True).eval()
    T = 2 * KVCache.GROW + 5
    x = torch.randn(4, T, 16)
    full = enc(x)  # (4, T, D)
    cache = KVCache()
    rows = torch.arange(4)
    outs = []
    with torch.no_grad():
        for i in range(T):
            if i == KVCache.GROW + 3:  # drop jets 1 and 2 mid-way, as the sampler does
                keep = torch.tensor([0, 3])
                cache.reorder(keep)
                rows = rows[keep]
                outs = [o[keep] for o in outs]
            outs.append(enc(x[rows, i : i + 1], cache=cache))
            k, _, written = cache.padded(0)
            assert k.shape[2] % KVCache.GROW == 0 and written.shape == (len(rows), k.shape[2])
            assert written[:, : i + 1].all() and not written[:, i + 1 :].any()
    torch.testing.assert_close(torch.cat(outs, dim=1), full[rows], atol=1e-5, rtol=1e-5)


def test_cache_requires_causal() -> None:
    enc = TransformerEncoder(16, 1, 4)
    x, mask = _batch()
    with pytest.raises(ValueError, match="causal"):
        enc(x, mask, cache=KVCache())
