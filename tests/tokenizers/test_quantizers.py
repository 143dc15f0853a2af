"""The VQ layer: exact nearest-code search, k-means, collapse guards, EMA, STE; FSQ wrapper."""

from __future__ import annotations

import math

import pytest
import torch

from jetfm.nn.quantizers import (
    FSQuantizer,
    VectorQuantizer,
    codebook_perplexity,
    kmeans,
    nearest_code,
)


@pytest.mark.parametrize(
    ("k", "d", "backend"), [(64, 16, "matmul"), (2048, 4, "kdtree"), (2048, 4, "auto")]
)
def test_nearest_code_matches_brute_force(k: int, d: int, backend: str) -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(3000, d, generator=g)
    cb = torch.randn(k, d, generator=g)
    want = torch.cdist(z.double(), cb.double()).argmin(dim=1)
    got = nearest_code(z, cb, chunk_size=500, backend=backend)  # several chunks
    assert got.dtype == torch.long
    assert torch.equal(got, want)


def test_nearest_code_hand_values() -> None:
    cb = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    z = torch.tensor([[1.0, 1.0], [9.0, -1.0], [-1.0, 7.0], [4.9, 0.0]])
    assert nearest_code(z, cb).tolist() == [0, 1, 2, 0]
    assert nearest_code(torch.zeros(0, 2), cb).shape == (0,)


def test_perplexity_hand_values() -> None:
    assert codebook_perplexity(torch.tensor([5, 0, 0, 0])).item() == pytest.approx(1.0)
    assert codebook_perplexity(torch.tensor([3, 3, 3, 3])).item() == pytest.approx(4.0)
    # p = (1/2, 1/2, 0): exp(ln 2) = 2
    assert codebook_perplexity(torch.tensor([7, 7, 0])).item() == pytest.approx(2.0)


def test_kmeans_finds_separated_clusters() -> None:
    g = torch.Generator().manual_seed(1)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    x = centres.repeat_interleave(200, 0) + 0.1 * torch.randn(800, 2, generator=g)
    cent = kmeans(x, 4, iters=20, generator=torch.Generator().manual_seed(0))
    # each true centre has a centroid within 0.1
    d = torch.cdist(centres, cent).min(dim=1).values
    assert torch.all(d < 0.1), d


def test_weighted_kmeans_uses_weighted_means_and_moves_cells_to_heavy_rows() -> None:
    # one cluster: the centroid is the weighted mean, (0*1 + 1*1 + 4*2) / 4 = 2.25
    x = torch.tensor([[0.0], [1.0], [4.0]])
    cent = kmeans(x, 1, iters=3, weights=torch.tensor([1.0, 1.0, 2.0]))
    assert cent.item() == pytest.approx(2.25)
    # uniform points on [0, 1], rows above 0.5 weigh 100x more: most of 16 cells go there
    u = torch.rand(4000, 1, generator=torch.Generator().manual_seed(0))
    w = torch.where(u[:, 0] > 0.5, 100.0, 1.0)
    g = torch.Generator().manual_seed(0)
    heavy = int((kmeans(u, 16, iters=30, weights=w, generator=g) > 0.5).sum())
    plain = int((kmeans(u, 16, iters=30, generator=torch.Generator().manual_seed(0)) > 0.5).sum())
    assert heavy >= 12 and 6 <= plain <= 10, (heavy, plain)
    with pytest.raises(ValueError, match="weights"):
        kmeans(x, 1, weights=torch.tensor([1.0, -1.0, 1.0]))
    with pytest.raises(ValueError, match="weights"):
        kmeans(x, 1, weights=torch.ones(2))


def test_dead_code_replacement_revives_a_collapsed_codebook() -> None:
    torch.manual_seed(0)
    vq = VectorQuantizer(64, 4, kmeans_init=False, dead_code_steps=2, ema=False)
    with torch.no_grad():  # collapse: one code at the data, all others far away
        vq.embed.fill_(100.0)
        vq.embed[0].zero_()
    z = torch.randn(512, 4)
    vq.eval()
    assert vq.lookup(z).unique().numel() == 1
    vq.train()
    replaced = sum(vq(z).n_replaced for _ in range(4))
    assert replaced >= 63  # every far code was re-seeded from the encoder outputs
    vq.eval()
    used = vq.lookup(z).unique().numel()
    assert used > 40, used


def test_without_dead_code_replacement_the_collapse_stays() -> None:
    vq = VectorQuantizer(64, 4, kmeans_init=False, dead_code_steps=0, ema=True)
    with torch.no_grad():
        vq.embed.fill_(100.0)
        vq.embed[0].zero_()
        vq.embed_sum.copy_(vq.embed)
    z = torch.randn(512, 4)
    vq.train()
    for _ in range(4):
        vq(z)
    vq.eval()
    assert vq.lookup(z).unique().numel() == 1


def test_kmeans_init_runs_once_and_uses_the_latents() -> None:
    torch.manual_seed(0)
    vq = VectorQuantizer(16, 2, kmeans_init=True, dead_code_steps=0)
    z = torch.randn(1000, 2) * 0.01 + 5.0  # far from the random initial codebook
    vq.train()
    out = vq(z)
    assert bool(vq.initted)
    assert torch.allclose(vq.embed.mean(dim=0), torch.tensor([5.0, 5.0]), atol=0.01)
    assert out.perplexity.item() > 8  # codes spread over the data, not collapsed
    before = vq.embed.clone()
    vq(z + 100)  # a second batch does not re-initialise (EMA moves codes only a little)
    assert (vq.embed - before).abs().max() < 10


def test_straight_through_gradient_and_losses() -> None:
    vq = VectorQuantizer(8, 3, kmeans_init=False, ema=False, dead_code_steps=0)
    z = torch.randn(20, 3, requires_grad=True)
    vq.train()
    out = vq(z)
    # forward value = the chosen code
    assert torch.allclose(out.z_q, vq.embed[out.ids], atol=1e-6)
    (out.z_q.sum() + out.loss).backward()
    assert z.grad is not None and torch.all(z.grad.abs() > 0)
    assert vq.embed.grad is not None and vq.embed.grad.abs().sum() > 0
    # commitment 0.25 + codebook 1.0 times the same MSE
    mse = ((z.detach() - vq.embed.detach()[out.ids]) ** 2).mean()
    assert out.loss.item() == pytest.approx(1.25 * mse.item(), rel=1e-5)


def test_ema_update_moves_codes_to_cluster_means() -> None:
    vq = VectorQuantizer(2, 1, kmeans_init=False, ema=True, decay=0.5, dead_code_steps=0)
    with torch.no_grad():
        vq.embed.copy_(torch.tensor([[-1.0], [1.0]]))
        vq.embed_sum.copy_(vq.embed)
        vq.cluster_size.fill_(1.0)
    z = torch.tensor([[-3.0], [-3.0], [3.0], [3.0]])
    vq.train()
    for _ in range(30):
        vq(z)
    assert torch.allclose(vq.embed.squeeze(), torch.tensor([-3.0, 3.0]), atol=1e-3)


def test_affine_and_low_dimensional_codebook() -> None:
    vq = VectorQuantizer(32, 8, codebook_dim=2, affine=True, ema=False, kmeans_init=True)
    z = torch.randn(200, 8)
    vq.train()
    out = vq(z)
    assert out.z_q.shape == (200, 8) and vq.codebook().shape == (32, 2)
    out.loss.backward()
    assert vq.affine_scale.grad is not None
    vq.eval()
    assert torch.equal(vq.lookup(z), vq.lookup(z))
    with pytest.raises(ValueError, match="affine"):
        VectorQuantizer(8, 2, ema=True, affine=True)


def test_fsq_ids_and_codes_round_trip() -> None:
    fsq = FSQuantizer((5, 5, 3), dim=3)
    assert fsq.codebook_size == 75
    ids = torch.arange(75)
    codes = fsq.embed_ids(ids)
    assert codes.shape == (75, 3)
    # invert FSQ's bound (tanh(z) * (L - 1)(1 + 1e-3) / 2 for odd L) at each grid point: same ids back
    levels = torch.tensor([5.0, 5.0, 3.0])
    z_grid = torch.atanh(codes * (levels // 2) / ((levels - 1) * 1.001 / 2))
    assert torch.equal(fsq.lookup(z_grid), ids)
    z = torch.randn(40, 3, requires_grad=True)
    out = fsq(z)
    assert out.ids.min() >= 0 and out.ids.max() < 75 and out.loss.item() == 0.0
    out.z_q.sum().backward()
    assert z.grad is not None
    assert math.isfinite(out.perplexity.item())


def test_kmeans_init_waits_for_enough_latents() -> None:
    """With fewer latents than 2 x codes, the init waits for more batches (no duplicate codes)."""
    torch.manual_seed(0)
    vq = VectorQuantizer(100, 2, kmeans_init=True, kmeans_init_batches=3, dead_code_steps=0)
    vq.train()
    vq(torch.randn(50, 2))
    assert not bool(vq.initted)
    vq(torch.randn(50, 2))
    assert not bool(vq.initted)
    vq(torch.randn(50, 2))  # third batch: the cap is reached, init on all 150 latents
    assert bool(vq.initted)
    assert torch.cdist(vq.embed, vq.embed).add(torch.eye(100) * 1e3).min() > 1e-4
