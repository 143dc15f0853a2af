"""K-means tokenizer: the nearest of K centroids of the standardised particle features.

The baseline of MPM's discretisation study: no network, a particle's token depends on its own
features only, and decoding returns the centroid. Fitting is Lloyd's algorithm in torch
(:func:`jetfm.nn.quantizers.kmeans`, the same fused nearest-centroid search the VQ layer uses) on a
seeded random sample of real particles, so it is deterministic and runs on any device.

Two-level tokens (``kmeans_residual_codes`` R > 0): C = K / R cells are fitted as above; each
particle's offset from its cell's centroid, divided by the cell's (weighted) RMS spread per
feature, is then quantised by one shared k-means codebook of R residual codes. Token
``c * R + r`` decodes to ``centroid_c + spread_c * residual_r``. Why: the GPT must pick among K
tokens at each step, and the decoded jets' N-subjettiness needs K ~ 65,536 cells (BENCHMARKS.md);
one softmax over that many is too slow on a CPU. With two levels it predicts a cell (C-way), then
a residual code (R-way) whose meaning is shared by every cell.
"""

from __future__ import annotations

from typing import Any

import torch

from jetfm.core.errors import InputError
from jetfm.nn.quantizers import kmeans, nearest_code
from jetfm.tokenizers.base import Tokenizer
from jetfm.tokenizers.config import TokenizerConfig


class KMeansTokenizer(Tokenizer):
    """Tokens = nearest centroid ids; ``centroids`` (K, F) is its only state.

    With ``config.kmeans_feature_weights`` the fit and the nearest-centroid search run on the
    features times their weights; the centroids are stored (and decoded) in the unweighted units.
    """

    def __init__(self, config: TokenizerConfig, preprocessing: dict[str, Any] | None = None):
        super().__init__(config, preprocessing)
        self.register_buffer("centroids", torch.zeros(config.codebook_size, config.n_features))
        self.register_buffer("fitted", torch.tensor(False))
        R = config.kmeans_residual_codes
        if R:  # two-level tokens: their parts (see the module docstring), saved with the state
            C, F = config.n_cells, config.n_features
            self.register_buffer("cell_centroids", torch.zeros(C, F))  # (C, F) unweighted units
            self.register_buffer("cell_spread", torch.ones(C, F))  # (C, F) unweighted units
            self.register_buffer("residual_codes", torch.zeros(R, F))  # (R, F) in spreads
        #: (F,) distance weights; not state: they come from the config
        self.register_buffer(
            "feature_scale", torch.tensor(config.feature_weights()), persistent=False
        )

    @torch.no_grad()
    def fit(
        self,
        particles: torch.Tensor,
        *,
        seed: int = 0,
        iters: int | None = None,
        weights: torch.Tensor | None = None,
    ) -> KMeansTokenizer:
        """Fit the centroids to real-particle features ``particles`` (M, F) (standardised).

        ``weights`` (M,): weighted k-means (see :meth:`pt_weights` for the physics reason).
        """
        if particles.ndim != 2 or particles.shape[1] != self.n_features:
            raise InputError(
                f"(M, {self.n_features}) real-particle features",
                field="particles",
                found=tuple(particles.shape),
            )
        if particles.shape[0] < 2:
            raise InputError("at least two particles", field="particles", found=particles.shape[0])
        gen = torch.Generator(device="cpu").manual_seed(seed)
        iters = self.config.quantizer.kmeans_iters if iters is None else iters
        scale = self.feature_scale  # (F,)
        xs = particles.to(self.centroids.device).float() * scale  # (M, F) weighted units
        if weights is not None:
            weights = weights.to(xs.device).float()
        cent = kmeans(xs, self.config.n_cells, iters=iters, generator=gen, weights=weights)
        if not self.config.kmeans_residual_codes:
            self.centroids.copy_(cent / scale)
            self.fitted.fill_(True)
            return self
        # two levels: each cell's weighted RMS spread (C, F), then k-means of the offsets in it
        assign = nearest_code(xs, cent)  # (M,)
        resid = xs - cent[assign]  # (M, F)
        w = torch.ones(len(xs), device=xs.device) if weights is None else weights
        C = cent.shape[0]
        w_sum = torch.zeros(C, device=xs.device).index_add_(0, assign, w)  # (C,)
        sq = torch.zeros_like(cent).index_add_(0, assign, resid.square() * w[:, None])  # (C, F)
        spread = (sq / w_sum.clamp_min(1e-30)[:, None]).sqrt()  # (C, F)
        # a cell with one particle (or none) has no spread: give it the median of the others,
        # and keep every spread above a small floor so that no offset divides by zero
        ok = (w_sum > 0) & (spread > 0).all(dim=1)
        typical = spread[ok].median(dim=0).values if bool(ok.any()) else xs.std(dim=0)
        spread = torch.where(ok[:, None], spread, typical).clamp_min(1e-4 * float(typical.max()))
        codes = kmeans(
            resid / spread[assign],
            self.config.kmeans_residual_codes,
            iters=iters,
            generator=gen,
            weights=weights,
        )  # (R, F)
        self.cell_centroids.copy_(cent / scale)
        self.cell_spread.copy_(spread / scale)
        self.residual_codes.copy_(codes)
        table = self.cell_centroids[:, None] + self.cell_spread[:, None] * codes[None]  # (C, R, F)
        self.centroids.copy_(table.reshape(-1, self.n_features))
        self.fitted.fill_(True)
        return self

    def pt_weights(self, particles: torch.Tensor, power: float) -> torch.Tensor:
        """pT^power (M,) of standardised particles (M, F), from their ``log_pt`` feature.

        Jet mass, N-subjettiness and EFPs are pT-weighted sums over particles, so a hard particle's
        angular error moves them far more than a soft one's. Unweighted k-means spends its cells
        where particles are many (soft, wide angle); weighting by pT^power moves cells towards the
        hard core. Measured on Pythia top+QCD jets (BENCHMARKS.md), 8192 cells weighted by
        pT^0.75 bring decoded jets' W1M from 1.6x to 1.2x its truth floor and KL(tau32) from
        5.7x to 2.9x.
        """
        names = list(self.config.feature_names)
        if "log_pt" not in names:
            raise InputError(
                "'log_pt' among the features for a pT-weighted fit",
                field="train.kmeans_pt_weight",
                found=names,
            )
        i = names.index("log_pt")
        log_pt = particles[:, i].double()
        pre = self.preprocessing_object()
        if pre is not None:  # standardised -> log(pT / GeV)
            log_pt = log_pt * float(pre.std[i]) + float(pre.mean[i])
        w = torch.exp(power * (log_pt - log_pt.max()))  # scaled to <= 1: no overflow
        return w.float()

    def _check_fitted(self) -> None:
        if not bool(self.fitted):
            raise InputError(
                "a fitted k-means tokenizer (call fit first)", field="centroids", found="unfitted"
            )

    def _encode(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        self._check_fitted()
        q = self.config.quantizer
        scale = self.feature_scale  # (F,)
        R = self.config.kmeans_residual_codes
        table = self.cell_centroids if R else self.centroids  # (C, F)
        xs = x[mask]  # (M, F)
        cell = nearest_code(xs * scale, table * scale, chunk_size=q.chunk_size, backend=q.backend)
        if not R:
            return cell
        offset = (xs - self.cell_centroids[cell]) / self.cell_spread[cell]  # (M, F) in spreads
        return cell * R + nearest_code(offset, self.residual_codes, chunk_size=q.chunk_size)

    def _decode(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        self._check_fitted()
        return self.centroids[ids]
