"""Masked particle modelling (MPM, arXiv 2401.13537 / 2409.12589).

A fraction of each jet's *real* particles (default 40 %, at least one per non-empty jet) is masked:
their embedded input is replaced by a learned mask vector and the model predicts them from the rest.
Targets (``MPMConfig.target``):

* ``"token"``      - ids from a frozen tokenizer (VQ-VAE / FSQ), cross-entropy;
* ``"kmeans"``     - ids from a :class:`KMeansTokenizer` (checked), cross-entropy;
* ``"regression"`` - the standardised features themselves, mean squared error;
* ``"flow"``       - conditional flow matching on the features (a generative head, so the model
  learns the full distribution of a masked particle instead of its mean).

Particle ordering (the pT rank) is information the encoder must never see - the backbone stays
permutation-equivariant - but a masked particle is otherwise indistinguishable from its masked
neighbours. So the rank enters only the prediction path: a learned rank embedding is added to the
hidden state of each masked particle right before the head (or to the re-inserted mask vector of the
MAE decoder). The rank is the particle's position among the real particles of its jet, which the
loader stores pT-descending.

With ``mae: true`` masked particles are dropped from the encoder entirely (cheaper: the encoder sees
~60 % of the particles) and re-inserted as mask vector + rank embedding for a small decoder
transformer, as in masked auto-encoders.

The head only runs on the masked particles (gathered first): a K-way head on every particle costs
more than the encoder when K is in the thousands.

Shapes: B jets, N particles, F features, D width, M masked particles in the batch, K codebook.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from jetfm.core.errors import ConfigError
from jetfm.models.backbone import Backbone, BackboneConfig
from jetfm.models.heads import FlowMatchingHead, RegressionHead, TokenHead
from jetfm.nn.transformer import TransformerEncoder
from jetfm.tasks.base import Task, TokenizerLike, check_batch, register_task

Target = Literal["token", "kmeans", "regression", "flow"]


@dataclass
class MPMConfig:
    """Masked particle modelling: backbone, what to predict, how much to mask."""

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    target: Target = "token"
    tokenizer: str | None = None  # tokenizer checkpoint folder (targets "token" / "kmeans")
    mask_fraction: float = 0.4
    rank_embedding: bool = True  # pT-rank embedding before the head (never in the backbone)
    max_rank: int = 128  # rank embedding table size; ranks beyond it share the last entry
    mae: bool = False  # drop masked particles from the encoder, decode with a small transformer
    decoder_depth: int = 1
    decoder_heads: int = 4
    head_transform: bool = True  # dense + GELU + LayerNorm before the token projection
    flow_hidden: int = 128
    flow_depth: int = 3
    flow_steps: int = 32  # Euler steps when sampling masked particles

    def __post_init__(self) -> None:
        if self.target not in ("token", "kmeans", "regression", "flow"):
            raise ConfigError(
                "one of ['token', 'kmeans', 'regression', 'flow']",
                field="task.target",
                found=repr(self.target),
            )
        if not 0.0 < self.mask_fraction < 1.0:
            raise ConfigError(
                "a fraction in (0, 1)", field="task.mask_fraction", found=self.mask_fraction
            )
        if self.backbone.causal:
            raise ConfigError(
                "a bidirectional backbone (causal: false) for masked particle modelling",
                field="task.backbone.causal",
                found=True,
            )
        if self.backbone.input != "features":
            # token or hybrid input would hand the masked particles' answer to the encoder
            raise ConfigError(
                "input 'features' (the masked particles' tokens must not be inputs)",
                field="task.backbone.input",
                found=repr(self.backbone.input),
            )
        for name in ("max_rank", "decoder_depth", "decoder_heads", "flow_hidden", "flow_depth"):
            if getattr(self, name) < 1:
                raise ConfigError(
                    "an integer >= 1", field=f"task.{name}", found=getattr(self, name)
                )
        if self.flow_steps < 1:
            raise ConfigError("an integer >= 1", field="task.flow_steps", found=self.flow_steps)
        if self.mae and self.backbone.dim % self.decoder_heads != 0:
            raise ConfigError(
                f"decoder_heads dividing backbone.dim ({self.backbone.dim})",
                field="task.decoder_heads",
                found=self.decoder_heads,
            )


def choose_masked(
    mask: Tensor, fraction: float, generator: torch.Generator | None = None
) -> Tensor:
    """Pick ``round(fraction * n)`` (at least 1) of the n real particles of each jet -> (B, N) bool.

    Uniform without replacement among real particles; never picks padding; empty jets get none.
    Random numbers come from ``generator`` (seeded masking) or torch's global generator.
    """
    n = mask.sum(dim=1)  # (B,)
    k = torch.clamp((fraction * n.float()).round().long(), min=1)
    k = torch.minimum(k, n)  # 0 for empty jets
    dev = generator.device if generator is not None else mask.device
    scores = torch.rand(mask.shape, generator=generator, device=dev).to(mask.device)  # (B, N)
    scores = scores.masked_fill(~mask, 2.0)  # padding sorts last
    rank = scores.argsort(dim=1).argsort(dim=1)  # (B, N) position in the random order
    return rank < k[:, None]


def pt_rank(mask: Tensor) -> Tensor:
    """Rank (B, N) of each real particle among the real particles of its jet (0 = leading pT).

    The loader stores particles pT-descending, so the rank is the count of real particles before.
    """
    return (mask.long().cumsum(dim=1) - 1).clamp(min=0)


@register_task("mpm")
class MPMTask(Task):
    """Masked particle modelling; see the module docstring."""

    config_class = MPMConfig

    def __init__(self, config: MPMConfig, tokenizer: TokenizerLike | None = None) -> None:
        super().__init__(config, tokenizer)
        c = config
        self.backbone = Backbone(c.backbone)
        D = c.backbone.dim
        F_ = c.backbone.n_features
        self.mask_token = nn.Parameter(torch.randn(D) * 0.02)
        self.rank_embed = nn.Embedding(c.max_rank, D) if (c.rank_embedding or c.mae) else None
        if self.rank_embed is not None:
            nn.init.normal_(self.rank_embed.weight, std=0.02)
        self.decoder = (
            TransformerEncoder(
                D,
                c.decoder_depth,
                c.decoder_heads,
                mlp_ratio=c.backbone.mlp_ratio,
                mlp=c.backbone.mlp,
                norm=c.backbone.norm,
            )
            if c.mae
            else None
        )
        if c.target in ("token", "kmeans"):
            if tokenizer is None:
                raise ConfigError(
                    f"a tokenizer checkpoint folder for target '{c.target}'",
                    field="task.tokenizer",
                    found=None,
                )
            tok_type = getattr(getattr(tokenizer, "config", None), "type", None)
            if c.target == "kmeans" and tok_type is not None and tok_type != "kmeans":
                raise ConfigError(
                    "a k-means tokenizer for target 'kmeans'",
                    field="task.tokenizer",
                    found=f"a '{tok_type}' tokenizer",
                )
            self.check_tokenizer_features(F_)
            self.head: nn.Module = TokenHead(D, tokenizer.codebook_size, c.head_transform)
        elif c.target == "regression":
            self.head = RegressionHead(D, F_)
        else:
            self.head = FlowMatchingHead(D, F_, hidden=c.flow_hidden, depth=c.flow_depth)

    # ------------------------------------------------------------------ encoding
    def _rank_embedding(self, rank: Tensor) -> Tensor:
        assert self.rank_embed is not None
        return self.rank_embed(rank.clamp(max=self.config.max_rank - 1))

    def masked_hidden(self, x: Tensor, mask: Tensor, masked: Tensor) -> Tensor:
        """Hidden states (M, D) of the masked particles, ready for the head (rank included)."""
        h = self.backbone.embed(x)  # (B, N, D)
        rank = pt_rank(mask)
        if self.decoder is None:
            h = torch.where(masked[..., None], self.mask_token.to(h.dtype), h)
            hid = self.backbone.encode(h, mask)  # (B, N, D)
            sel = hid[masked]  # (M, D)
            if self.rank_embed is not None:
                sel = sel + self._rank_embedding(rank[masked])
            return sel
        # MAE: the encoder only sees the visible particles, compacted to the front
        visible = mask & ~masked
        n_vis = int(visible.sum(dim=1).max()) if visible.numel() else 0
        order = (~visible).to(torch.int8).argsort(dim=1, stable=True)[:, :n_vis]  # (B, Nv)
        idx = order[..., None].expand(-1, -1, h.shape[-1])
        full = torch.zeros_like(h)
        if n_vis > 0:
            enc = self.backbone.encode(h.gather(1, idx), visible.gather(1, order))  # (B, Nv, D)
            full = full.scatter(1, idx, enc)  # back in place (0 at masked/padding)
        inserted = self.mask_token.to(h.dtype) + self._rank_embedding(rank)  # (B, N, D)
        dec_in = torch.where(masked[..., None], inserted, full)
        assert self.decoder is not None
        return self.decoder(dec_in, mask)[masked]  # (M, D)

    # ------------------------------------------------------------------ loss
    def loss(
        self, batch: Mapping[str, Any], generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """MPM loss on one batch; ``generator`` seeds the choice of masked particles."""
        c = self.config
        check_batch(batch, c.backbone.n_features)
        x, mask = batch["x"], batch["mask"]
        masked = choose_masked(mask, c.mask_fraction, generator)  # (B, N)
        sel = self.masked_hidden(x, mask, masked)  # (M, D)
        M = sel.shape[0]
        out: dict[str, Tensor] = {"n_masked": torch.tensor(float(M), device=x.device)}
        if M == 0:  # only empty jets: a zero loss that still touches the graph
            out["loss"] = sel.sum() * 0.0 + sum(p.sum() * 0.0 for p in self.head.parameters())
            return out
        if c.target in ("token", "kmeans"):
            assert self.tokenizer is not None
            with torch.no_grad():
                ids = self.tokenizer.encode(x, mask)  # (B, N), frozen
            target = ids[masked].long()  # (M,)
            logits = self.head(sel)  # (M, K)
            out["loss"] = F.cross_entropy(logits.float(), target)
            with torch.no_grad():
                out["accuracy"] = (logits.argmax(-1) == target).float().mean()
                top5 = logits.topk(min(5, logits.shape[-1]), dim=-1).indices
                out["top5_accuracy"] = (top5 == target[:, None]).any(-1).float().mean()
        elif c.target == "regression":
            pred = self.head(sel)  # (M, F)
            out["loss"] = F.mse_loss(pred.float(), x[masked].float())
        else:
            out["loss"] = self.head.loss(sel, x[masked], generator=generator)
        return out

    @torch.no_grad()
    def predict_masked(
        self, x: Tensor, mask: Tensor, masked: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        """Predictions (M, ...) for the particles ``masked`` (B, N): token ids for token targets,
        features (M, F) for regression, one sampled particle (M, F) for flow."""
        sel = self.masked_hidden(x, mask, masked)
        if self.config.target in ("token", "kmeans"):
            return self.head(sel).argmax(-1)
        if self.config.target == "regression":
            return self.head(sel)
        return self.head.sample(sel, steps=self.config.flow_steps, generator=generator)
