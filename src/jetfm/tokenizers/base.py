"""The tokenizer interface: standardised particle features <-> integer tokens, with save/load.

Every tokenizer maps a padded batch ``x`` (B, N, F) of *standardised* particle features with its
padding ``mask`` (B, N) (True = real particle) to token ids (B, N) int64, padding ids = -1, and back.
Only real particles are ever encoded or decoded, so padding never changes a real particle's token.

A tokenizer is saved as a jetfm checkpoint folder of kind ``"tokenizer"`` (``model.safetensors``,
``config.yaml`` = its :class:`~jetfm.tokenizers.config.TokenizerConfig`, ``preprocessing.json`` = the
:class:`jetfm.data.features.Preprocessing` it was trained with, so decoded tokens can be mapped back
to physical units, and ``meta.json``). Its :attr:`content_hash` lets a model trained on its tokens
check on load that it is paired with the same tokenizer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from jetfm.core.checkpoint import content_hash, load_checkpoint, save_checkpoint
from jetfm.core.config import from_dict
from jetfm.core.errors import InputError
from jetfm.tokenizers.config import TokenizerConfig

PAD_ID = -1
KIND = "tokenizer"


@dataclass
class TokenizerOutput:
    """A training forward pass: reconstruction, tokens and the losses/statistics to log."""

    recon: torch.Tensor  # (B, N, F) decoded standardised features, zero at padding
    ids: torch.Tensor  # (B, N) int64, PAD_ID at padding
    loss: torch.Tensor  # scalar to minimise
    recon_loss: torch.Tensor  # scalar MSE over real particles
    quant_loss: torch.Tensor  # scalar commitment/codebook loss
    perplexity: torch.Tensor  # scalar, of this batch's code usage
    n_replaced: int = 0  # dead codes re-seeded this step


def check_batch(x: torch.Tensor, mask: torch.Tensor, n_features: int) -> None:
    """Raise InputError unless x is (B, N, F) floating with F = n_features and mask is bool (B, N)."""
    if not isinstance(x, torch.Tensor) or x.ndim != 3:
        raise InputError("a (B, N, F) tensor", field="x", found=getattr(x, "shape", type(x)))
    if x.shape[-1] != n_features:
        raise InputError(f"{n_features} features (last axis)", field="x", found=x.shape[-1])
    if not isinstance(mask, torch.Tensor) or mask.shape != x.shape[:2]:
        raise InputError(
            f"a mask of shape {tuple(x.shape[:2])}",
            field="mask",
            found=getattr(mask, "shape", type(mask)),
        )
    if mask.dtype != torch.bool:
        raise InputError("a bool mask (True = real particle)", field="mask", found=mask.dtype)


def scatter_ids(flat: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Put per-real-particle ids (M,) back into a padded (B, N) int64 tensor (PAD_ID elsewhere)."""
    out = torch.full(mask.shape, PAD_ID, dtype=torch.long, device=mask.device)
    out[mask] = flat.to(torch.long)
    return out


def scatter_features(flat: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-real-particle rows (M, F) -> padded (B, N, F), zero at padding (keeps gradient)."""
    b, n = mask.shape
    out = flat.new_zeros(b, n, flat.shape[-1])
    return out.masked_scatter(mask[..., None], flat)


class Tokenizer(nn.Module):
    """Base class. Subclasses implement :meth:`_encode` / :meth:`_decode` on one chunk of jets."""

    #: jets per internal chunk in encode/decode (bounds memory for whole-dataset calls)
    chunk_jets: int = 4096
    #: True where a particle's token depends on the whole jet (encode/decode then bucket by length)
    set_level: bool = False
    #: jets per length bucket for set-level tokenizers
    bucket_jets: int = 256

    def __init__(self, config: TokenizerConfig, preprocessing: dict[str, Any] | None = None):
        super().__init__()
        self.config = config
        self.preprocessing = preprocessing
        self.content_hash: str | None = None
        if preprocessing is not None:
            names = tuple(preprocessing.get("feature_names", ()))
            if names != tuple(config.feature_names):
                raise InputError(
                    f"preprocessing features equal to the tokenizer's {list(config.feature_names)}",
                    field="preprocessing.feature_names",
                    found=list(names),
                )

    # ---- properties ------------------------------------------------------------------------------
    @property
    def codebook_size(self) -> int:
        return int(self.config.codebook_size)

    @property
    def n_features(self) -> int:
        return self.config.n_features

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Names of the (standardised) particle features it reads, in column order."""
        return tuple(self.config.feature_names)

    @property
    def device(self) -> torch.device:
        for t in self.parameters():
            return t.device
        for t in self.buffers():
            return t.device
        return torch.device("cpu")

    # ---- to implement ----------------------------------------------------------------------------
    def _encode(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, N, F), mask (B, N) -> ids of the real particles, (M,) int64 in mask order."""
        raise NotImplementedError

    def _decode(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """ids (M,) of the real particles, mask (B, N) -> decoded features (M, F)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> TokenizerOutput:
        raise NotImplementedError(f"{type(self).__name__} is not trained by gradient descent")

    def _chunks(self, mask: torch.Tensor) -> list[tuple[torch.Tensor, int]]:
        """Jet index groups (and their width) for encode/decode; jets without particles are skipped.

        Per-particle tokenizers gather the real particles anyway: contiguous chunks of
        :attr:`chunk_jets`. Set-level tokenizers (attention cost grows with the padded width) get
        length buckets: jets sorted by width, :attr:`bucket_jets` at a time, each group cut to its own
        widest jet, so a batch of mostly short jets does not pay for its longest one.
        """
        n = mask.shape[1]
        width = ((torch.arange(1, n + 1, device=mask.device) * mask).amax(dim=1)).cpu()  # (B,)
        keep = torch.nonzero(width > 0).squeeze(1)
        if not self.set_level:
            return [
                (keep[s : s + self.chunk_jets], n) for s in range(0, len(keep), self.chunk_jets)
            ]
        order = keep[torch.argsort(width[keep], stable=True)]
        return [
            (order[s : s + self.bucket_jets], int(width[order[s : s + self.bucket_jets]].max()))
            for s in range(0, len(order), self.bucket_jets)
        ]

    # ---- public API ------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Standardised features x (B, N, F) + mask (B, N) -> token ids (B, N) int64, -1 at padding.

        Deterministic and free of side effects (collapse guards only run in :meth:`forward`).
        """
        check_batch(x, mask, self.n_features)
        dev = self.device
        out = torch.full(mask.shape, PAD_ID, dtype=torch.long)
        for idx, w in self._chunks(mask):
            xb = x[idx, :w].to(dev, torch.float32)
            mb = mask[idx, :w].to(dev)
            out[idx, :w] = scatter_ids(self._encode(xb, mb), mb).cpu()
        return out.to(x.device)

    @torch.no_grad()
    def decode(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Token ids (B, N) (+ mask, default ``ids >= 0``) -> standardised features (B, N, F), 0 at padding."""
        if not isinstance(ids, torch.Tensor) or ids.ndim != 2:
            raise InputError(
                "a (B, N) tensor of token ids", field="ids", found=getattr(ids, "shape", None)
            )
        if mask is None:
            mask = ids >= 0
        if mask.shape != ids.shape or mask.dtype != torch.bool:
            raise InputError(
                f"a bool mask of shape {tuple(ids.shape)}",
                field="mask",
                found=(mask.shape, mask.dtype),
            )
        real = ids[mask]
        if real.numel() and (int(real.min()) < 0 or int(real.max()) >= self.codebook_size):
            raise InputError(
                f"token ids in [0, {self.codebook_size}) at real particles",
                field="ids",
                found=f"range [{int(real.min())}, {int(real.max())}]",
            )
        dev = self.device
        out = torch.zeros(*ids.shape, self.n_features)
        for idx, w in self._chunks(mask):
            mb = mask[idx, :w].to(dev)
            ib = ids[idx, :w].to(dev)[mb]
            out[idx, :w] = scatter_features(self._decode(ib, mb).float(), mb).cpu()
        return out.to(ids.device)

    def preprocessing_object(self) -> Any:
        """The :class:`jetfm.data.features.Preprocessing` this tokenizer was trained with (or None)."""
        if self.preprocessing is None:
            return None
        from jetfm.data.features import Preprocessing

        return Preprocessing.from_dict(self.preprocessing)

    # ---- save / load -----------------------------------------------------------------------------
    def save_pretrained(
        self, path: str | os.PathLike[str], meta: dict[str, Any] | None = None
    ) -> Path:
        """Write a ``tokenizer`` checkpoint folder atomically; sets and returns via :attr:`content_hash`."""
        full_meta = {
            "tokenizer_type": self.config.type,
            "codebook_size": self.codebook_size,
            "n_features": self.n_features,
        }
        full_meta.update(meta or {})
        out = save_checkpoint(
            path,
            self.state_dict(),
            self.config,
            kind=KIND,
            preprocessing=self.preprocessing,
            meta=full_meta,
        )
        self.content_hash = content_hash(out)
        return out

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
    ) -> Tokenizer:
        """Rebuild a tokenizer (any type) from its checkpoint folder, in eval mode."""
        from jetfm.tokenizers import build_tokenizer

        ckpt = load_checkpoint(path, kind=KIND)
        cfg = from_dict(TokenizerConfig, ckpt.config, file=str(Path(path) / "config.yaml"))
        tok = build_tokenizer(cfg, preprocessing=ckpt.preprocessing)
        if not isinstance(tok, cls):
            raise InputError(
                f"a {cls.__name__} checkpoint", file=path, field="type", found=cfg.type
            )
        tok.load_state_dict(ckpt.state_dict, strict=True)
        tok.to(map_location)
        tok.eval()
        tok.content_hash = content_hash(path)
        return tok
