"""VQ-VAE particle tokenizers: per-particle (MLP) and jet-conditional (transformer over the set).

- ``vqvae_particle`` (MPM v1 style): each particle is encoded alone by an MLP, so its token depends on
  its own features only. Defaults: codebook 512, latent 16.
- ``vqvae_conditional`` (OmniJet-alpha style): a transformer encoder sees the whole particle set, so a
  particle's token may depend on its neighbours; the decoder is a transformer over the code vectors.
  There is no positional input, so the tokenizer is permutation-equivariant, and attention is masked,
  so padding never changes a real particle's token. OmniJet-alpha: codebook 8192, latent 4.
- ``fsq``: the per-particle MLP with finite scalar quantisation (no codebook to collapse).

Only real particles reach the quantiser: latents are gathered with the mask first (M rows), which
saves the distance computation for padding and keeps padding out of the codebook statistics.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from jetfm.nn.quantizers import FSQuantizer, VectorQuantizer
from jetfm.nn.transformer import TransformerEncoder
from jetfm.tokenizers.base import (
    Tokenizer,
    TokenizerOutput,
    check_batch,
    scatter_features,
    scatter_ids,
)
from jetfm.tokenizers.config import TokenizerConfig


def mlp(d_in: int, hidden: int, d_out: int, depth: int) -> nn.Sequential:
    """``depth`` hidden GELU layers of width ``hidden`` (depth 0 = one linear layer)."""
    layers: list[nn.Module] = []
    d = d_in
    for _ in range(depth):
        layers += [nn.Linear(d, hidden), nn.GELU()]
        d = hidden
    layers.append(nn.Linear(d, d_out))
    return nn.Sequential(*layers)


class _SetNet(nn.Module):
    """Linear embed -> masked, position-free transformer -> linear head. (B, N, d_in) -> (B, N, d_out)."""

    def __init__(self, d_in: int, d_out: int, cfg: TokenizerConfig) -> None:
        super().__init__()
        self.embed = nn.Linear(d_in, cfg.hidden_dim)
        self.body = TransformerEncoder(
            cfg.hidden_dim, cfg.depth, cfg.heads, mlp_ratio=cfg.mlp_ratio, causal=False
        )
        self.head = nn.Linear(cfg.hidden_dim, d_out)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.embed(x), mask))


class VQVAETokenizer(Tokenizer):
    """Encoder -> quantiser -> decoder; tokens are the quantiser's code ids."""

    def __init__(self, config: TokenizerConfig, preprocessing: dict[str, Any] | None = None):
        super().__init__(config, preprocessing)
        c, q = config, config.quantizer
        f = c.n_features
        self.conditional = c.type == "vqvae_conditional"
        self.set_level = self.conditional
        if self.conditional:
            self.encoder: nn.Module = _SetNet(f, c.latent_dim, c)
            self.decoder: nn.Module = _SetNet(c.latent_dim, f, c)
        else:
            self.encoder = mlp(f, c.hidden_dim, c.latent_dim, c.depth)
            self.decoder = mlp(c.latent_dim, c.hidden_dim, f, c.depth)
        if q.kind == "fsq":
            self.quantizer: nn.Module = FSQuantizer(q.fsq_levels, c.latent_dim)
        else:
            self.quantizer = VectorQuantizer(
                c.codebook_size,
                c.latent_dim,
                codebook_dim=q.codebook_dim,
                ema=q.ema,
                decay=q.decay,
                commitment_weight=q.commitment_weight,
                codebook_weight=q.codebook_weight,
                kmeans_init=q.kmeans_init,
                kmeans_iters=q.kmeans_iters,
                kmeans_init_batches=q.kmeans_init_batches,
                dead_code_steps=q.dead_code_steps,
                affine=q.affine,
                chunk_size=q.chunk_size,
                backend=q.backend,
            )

    # latents of real particles (M, L) and back
    def latents(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, N, F), mask (B, N) -> encoder outputs of the real particles (M, L)."""
        if self.conditional:
            return self.encoder(x, mask)[mask]
        return self.encoder(x[mask])

    def reconstruct(self, codes: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Code vectors of the real particles (M, L) + mask (B, N) -> decoded features (M, F)."""
        if self.conditional:
            return self.decoder(scatter_features(codes, mask), mask)[mask]
        return self.decoder(codes)

    def _encode(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.quantizer.lookup(self.latents(x, mask))

    def _decode(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.reconstruct(self.quantizer.embed_ids(ids), mask)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> TokenizerOutput:
        """Training pass (guards such as dead-code replacement run here when ``self.training``)."""
        check_batch(x, mask, self.n_features)
        z = self.latents(x, mask)  # (M, L)
        q = self.quantizer(z)
        rec = self.reconstruct(q.z_q, mask)  # (M, F)
        target = x[mask]
        recon_loss = F.mse_loss(rec, target) if target.numel() else rec.sum() * 0
        return TokenizerOutput(
            recon=scatter_features(rec, mask),
            ids=scatter_ids(q.ids, mask),
            loss=recon_loss + q.loss,
            recon_loss=recon_loss,
            quant_loss=q.loss,
            perplexity=q.perplexity,
            n_replaced=q.n_replaced,
        )
