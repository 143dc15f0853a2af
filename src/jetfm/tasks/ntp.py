"""Next-token prediction over pT-ordered particle tokens (OmniJet-alpha, arXiv 2403.05618).

Each jet becomes the sequence ``[START, t_1, ..., t_n, STOP]`` of its particles' token ids in
descending pT (the loader's order; ``order: subjets`` below is the alternative). A causal backbone
reads ``[START, t_1, ..., t_n]`` and predicts ``[t_1, ..., t_n, STOP]``; the loss is cross-entropy
over real positions only (padding never enters the head). Ids, with K = the tokenizer's codebook size:

* ``0 .. K-1`` particle tokens, ``START_ID = K``, ``STOP_ID = K + 1`` (vocabulary ``K + 2``);
* targets at padded positions are ``IGNORE_ID = -100``, the value cross-entropy skips.

Optional class conditioning (``n_classes > 0``) adds a learned class embedding to the START token,
so :meth:`NTPTask.generate` can sample jets of a chosen class. Sampling uses the backbone's KV cache
and feeds one token per step.

Jets longer than the loader's ``max_particles`` were already cut to their leading particles, so for
them STOP means "truncated here"; keep ``max_particles`` above the multiplicities you generate.

Optional jet tokens (``jet_tokens``, coarse to fine): J jet-level observables (jet pT, mass,
energy, N-subjettiness ratios tau21 / tau32, multiplicity), each in ``jet_token_bins`` quantile
bins fitted on the training jets, go between
START and the particles, ``[START, j_1 .. j_J, t_1 .. t_n, STOP]``. The model first draws the jet's
bins, then particles conditioned on them, so a global property such as the top mass peak is decided
once, up front, instead of emerging from 64 local decisions. Their ids follow STOP: observable j,
bin b is ``K + 2 + j * bins + b``; position j may only predict observable j's bins and the particle
positions only codes and STOP (the other logits are masked out in the loss and in sampling alike).

A jet token describes the jet that the particle tokens after it decode to (:meth:`NTPTask.
jet_observables`): the E-scheme sum of the decoded, massless particles, as many as the loader kept.
That is how :mod:`jetfm.evaluate.decoding` builds a generated jet, so a jet sampled in a mass bin
(or conditioned on ``mass: 175``) is judged by the same definition it was trained with. The stored
jet fields would not do: they sum every constituent, with hadron masses, and sit ~7% (top mass)
above the jet the model can write.

With ``order: subjets`` the particles are written subjet by subjet instead (:func:`subjet_order`):
the hardest particle's subjet first, its particles in descending pT, then the next subjet. A jet is
a set, so this changes only the factorisation the model learns: a soft particle then follows the
hard core it belongs to, where in pT order it comes after every prong's core. ``subjet_seeds_first``
puts the seeds of the leading subjets (a top jet's three prongs) before all of that, so the model
lays out the prongs before it fills any of them in.

With ``factorised_head`` and a two-level tokenizer (``kmeans_residual_codes`` R: token =
cell * R + residual code, C = K / R cells) the output is factorised as ``p(t) = p(cell) p(residual
| cell)``: one head scores the C cells and the special ids (``C + 2 + J * bins`` logits), a second
(:class:`~jetfm.models.heads.ResidualCodeHead`) the R residual codes given the true cell in
training, the drawn one in sampling. The loss is still the negative log-likelihood of the token,
comparable with a flat head's, but no (B, L, K) logits are ever built: a 65,536-token vocabulary
costs a 256-way and a 256-way softmax. "Head ids" below are ids in the first head's space: cells,
then the special ids in their order (equal to the token ids without factorisation).

Shapes: B jets, N particles, J jet tokens, L = J + N + 1 sequence positions, D width,
V = K + 2 + J * bins vocabulary, H head ids (V, or C + 2 + J * bins when factorised).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from jetfm.core.errors import ConfigError, InputError
from jetfm.models.backbone import Backbone, BackboneConfig
from jetfm.models.heads import GeometricTokenHead, NeighbourPrior, ResidualCodeHead, TokenHead
from jetfm.models.sampler import (
    SamplingConfig,
    TwoLevelHead,
    choose_tokens,
)
from jetfm.tasks.base import Task, TokenizerLike, check_batch, register_task
from jetfm.tasks.jet_structure import (
    front_pack,
    kt_nsubjettiness,
    massless_jet_kinematics,
    subjet_order,
)
from jetfm.tasks.ntp_sampling import NTPSampling

IGNORE_ID = -100

#: jet-level observables a jet token can bin: pT, mass and energy of the decoded particles' sum,
#: ``n_particles``, the multiplicity after the loader's truncation (see the module docstring), and
#: the N-subjettiness ratios ``tau21``, ``tau32`` (exclusive-kT axes, :func:`kt_nsubjettiness`)
JET_TOKEN_FIELDS = ("pt", "mass", "energy", "n_particles", "tau21", "tau32")
#: decoded features the kinematic jet tokens need (physical units after the tokenizer's
#: preprocessing is undone)
_KINEMATIC_FEATURES = ("log_pt", "deta", "dphi")


def _default_backbone() -> BackboneConfig:
    return BackboneConfig(causal=True, input="tokens")


@dataclass
class NTPConfig:
    """Next-token prediction: a causal token backbone, the frozen tokenizer, class conditioning."""

    backbone: BackboneConfig = field(default_factory=_default_backbone)
    tokenizer: str | None = None  # tokenizer checkpoint folder (required to build the task)
    n_classes: int = 0  # > 0: class-conditional START token (batch["label"] in [0, n_classes))
    head_transform: bool = False
    #: tie each code's output row to its decoded features (:class:`GeometricTokenHead`); helps
    #: large codebooks, whose codes are each seen rarely
    geometric_head: bool = False
    #: also embed a hybrid input's features through the geometric head's random Fourier features
    #: (same frequencies). The head scores code k by ``h . g(c_k)`` with ``g`` built on those
    #: features; for "the next particle sits next to particle 1" ``h`` must carry particle 1's
    #: phases at those frequencies, which an MLP of its three raw features gives only coarsely.
    #: Needs ``geometric_head`` and ``backbone.input: hybrid``; zero-initialised, so training
    #: starts from the model without it.
    fourier_input: bool = False
    #: make half of the geometric head's random frequencies act on (deta, dphi) only. Each random
    #: Fourier feature of (deta, dphi, log pT) oscillates in log pT too, so the head cannot score
    #: "near particle 1 in angle, at any pT", the dominant pattern of a jet core; angular-only
    #: features can. Needs ``geometric_head`` and deta, dphi among the tokenizer's features.
    geometric_angular: bool = False
    #: features a ``hybrid`` backbone reads in training: ``exact`` (the particles' own; richer
    #: representations for tagging) or ``decoded`` (the tokens' decoded features, which is all a
    #: generated jet has: training then matches sampling)
    hybrid_features: Literal["exact", "decoded"] = "exact"
    #: add a learned embedding of the sequence position (0 = START) to every input. The backbone
    #: itself has none (it is a set model), so without it the model can only guess how many
    #: particles it has placed, and a jet cut at the loader's max_particles must STOP at exactly
    #: that length. ``max_length`` bounds the particles per jet in training and sampling.
    position_embedding: bool = False
    max_length: int = 128
    #: add a pointer to earlier particles to the code logits (:class:`NeighbourPrior`): "the next
    #: particle sits near particle j", at the angular widths ``neighbour_widths`` (standardised
    #: deta/dphi units, one per scale, mixed by the model); needs deta and dphi among the
    #: tokenizer's features
    neighbour_prior: bool = False
    neighbour_widths: list[float] = field(default_factory=lambda: [0.05, 0.2])
    #: the pointer reaches the leading ``neighbour_parents`` particles only (pT order: they carry
    #: most of the energy), which bounds its cost at (parents x scales x K) per position
    neighbour_parents: int = 16
    #: jet-level tokens drawn before the particles (see the module docstring), from
    #: ``JET_TOKEN_FIELDS``; each is binned in ``jet_token_bins`` quantile bins of the training jets
    jet_tokens: list[str] = field(default_factory=list)
    jet_token_bins: int = 32
    #: the order particles are written in: ``pt`` (descending pT, OmniJet-alpha's) or
    #: ``subjets``: subjet by subjet (:func:`subjet_order`, seeded cones of ``subjet_radius`` in
    #: (deta, dphi)), each subjet's particles in descending pT. With ``subjets`` a jet's soft
    #: particles follow the hard particle they sit next to, instead of coming after every prong's
    #: hard core; needs deta and dphi among the tokenizer's features and its preprocessing
    order: Literal["pt", "subjets"] = "pt"
    subjet_radius: float = 0.2
    #: with ``order: subjets``: write the seeds (hardest particles) of this many leading subjets
    #: first, then every subjet's remaining particles; the model decides where the prongs sit
    #: before it fills them in (:func:`subjet_order`). 0 = off. Measured on top+QCD (BENCHMARKS.md,
    #: run N) it made the generated substructure worse, so no shipped config sets it
    subjet_seeds_first: int = 0
    #: parallel scheduled sampling (Duckworth et al., arXiv 1906.04331), a remedy for exposure
    #: bias: in training, each particle input is replaced with this probability by a token drawn
    #: from the model's own prediction for that position (one extra forward pass without
    #: gradients); the targets stay the real particles. Teacher forcing alone only ever shows the
    #: model real prefixes, while a sampled jet is built on its own, slightly wrong, particles.
    #: Validation stays teacher-forced. 0 = off
    scheduled_sampling: float = 0.0
    #: predict a two-level tokenizer's tokens as cell, then residual code (see the module
    #: docstring); needs a tokenizer with ``kmeans_residual_codes``. With ``geometric_head`` the
    #: cells' rows are tied to the cell centroids
    factorised_head: bool = False
    #: data augmentation by a jet's mirror symmetries: in training, each jet's particles are
    #: mirrored in deta and in dphi, each with probability 1/2 (one of four images per jet). The
    #: model sees (deta, dphi) relative to the jet axis and not the jet's direction, and that
    #: distribution is symmetric under both mirrors: the two beams are alike (z -> -z takes a jet
    #: at eta with its particles at deta to one at -eta with -deta) and the strong interaction
    #: conserves parity (a mirror through the beam axis, dphi -> -dphi). pT, mass, multiplicity
    #: and the N-subjettiness ratios do not change, so the model sees up to four times the
    #: distinct jets without new simulation. Validation and sampling are untouched. Measured on
    #: top+QCD (BENCHMARKS.md, session 19: 4x128, 3,000 steps on 64,000 jets) it changed
    #: neither the validation loss nor the generated jets beyond their scatter, so no shipped
    #: config sets it
    augment_reflections: bool = False

    def __post_init__(self) -> None:
        if not self.backbone.causal:
            raise ConfigError(
                "a causal backbone (causal: true) for next-token prediction",
                field="task.backbone.causal",
                found=False,
            )
        if self.backbone.input not in ("tokens", "hybrid"):
            raise ConfigError(
                "input 'tokens' or 'hybrid'",
                field="task.backbone.input",
                found=repr(self.backbone.input),
            )
        if self.n_classes < 0:
            raise ConfigError("an integer >= 0", field="task.n_classes", found=self.n_classes)
        if self.max_length < 1:
            raise ConfigError("an integer >= 1", field="task.max_length", found=self.max_length)
        if self.hybrid_features not in ("exact", "decoded"):
            raise ConfigError(
                "'exact' or 'decoded'",
                field="task.hybrid_features",
                found=repr(self.hybrid_features),
            )
        if not self.neighbour_widths or min(self.neighbour_widths) <= 0:
            raise ConfigError(
                "a non-empty list of positive widths",
                field="task.neighbour_widths",
                found=self.neighbour_widths,
            )
        if self.neighbour_parents < 1:
            raise ConfigError(
                "an integer >= 1", field="task.neighbour_parents", found=self.neighbour_parents
            )
        bad = [t for t in self.jet_tokens if t not in JET_TOKEN_FIELDS]
        if bad or len(set(self.jet_tokens)) != len(self.jet_tokens):
            raise ConfigError(
                f"distinct names from {list(JET_TOKEN_FIELDS)}",
                field="task.jet_tokens",
                found=self.jet_tokens,
            )
        if self.order not in ("pt", "subjets"):
            raise ConfigError("'pt' or 'subjets'", field="task.order", found=repr(self.order))
        if self.subjet_radius <= 0:
            raise ConfigError(
                "a positive radius", field="task.subjet_radius", found=self.subjet_radius
            )
        if self.subjet_seeds_first < 0 or (self.subjet_seeds_first and self.order != "subjets"):
            raise ConfigError(
                "an integer >= 0, and 0 unless order: subjets",
                field="task.subjet_seeds_first",
                found=f"{self.subjet_seeds_first} with order: {self.order}",
            )
        if not 0.0 <= self.scheduled_sampling < 1.0:
            raise ConfigError(
                "a probability in [0, 1)",
                field="task.scheduled_sampling",
                found=self.scheduled_sampling,
            )
        if self.jet_token_bins < 2:
            raise ConfigError(
                "an integer >= 2", field="task.jet_token_bins", found=self.jet_token_bins
            )
        if self.fourier_input and not (self.geometric_head and self.backbone.input == "hybrid"):
            raise ConfigError(
                "geometric_head: true and backbone.input: hybrid with fourier_input: true",
                field="task.fourier_input",
                found=f"geometric_head {self.geometric_head}, input '{self.backbone.input}'",
            )
        if self.geometric_angular and not self.geometric_head:
            raise ConfigError(
                "geometric_head: true with geometric_angular: true",
                field="task.geometric_angular",
                found="geometric_head false",
            )
        if self.factorised_head and (self.neighbour_prior or self.scheduled_sampling > 0):
            raise ConfigError(
                "neighbour_prior: false and scheduled_sampling: 0 with factorised_head: true",
                field="task.factorised_head",
                found=f"neighbour_prior {self.neighbour_prior}, scheduled_sampling"
                f" {self.scheduled_sampling}",
            )
        if self.geometric_head and self.head_transform:
            raise ConfigError(
                "head_transform: false with geometric_head: true",
                field="task.head_transform",
                found=True,
            )


def _angular_features(tokenizer: TokenizerLike, field: str) -> list[int]:
    """Indices of ``deta`` and ``dphi`` among the tokenizer's features (an option of ``field``
    needs them)."""
    names = list(getattr(tokenizer, "feature_names", ()))
    if "deta" not in names or "dphi" not in names:
        raise ConfigError(
            "a tokenizer with deta and dphi among its features",
            field=field,
            found=f"tokenizer features {names}",
        )
    return [names.index("deta"), names.index("dphi")]


@register_task("ntp")
class NTPTask(NTPSampling, Task):
    """Causal next-token prediction; see the module docstring."""

    config_class = NTPConfig

    def __init__(self, config: NTPConfig, tokenizer: TokenizerLike | None = None) -> None:
        if tokenizer is None:
            raise ConfigError(
                "a tokenizer checkpoint folder", field="task.tokenizer", found=config.tokenizer
            )
        K = int(tokenizer.codebook_size)
        J, n_bins = len(config.jet_tokens), config.jet_token_bins
        vocab = K + 2 + J * n_bins
        if config.backbone.vocab_size == 0:
            config = dataclasses.replace(
                config, backbone=dataclasses.replace(config.backbone, vocab_size=vocab)
            )
        elif config.backbone.vocab_size != vocab:
            raise ConfigError(
                f"codebook size + 2 + jet tokens x bins = {vocab} (or 0 to fill in)",
                field="task.backbone.vocab_size",
                found=config.backbone.vocab_size,
            )
        super().__init__(config, tokenizer)
        self.check_tokenizer_features(config.backbone.n_features)
        self.codebook_size = K
        self.start_id = K
        self.stop_id = K + 1
        self.vocab_size = vocab
        self.n_jet_tokens = J
        # both need physical angles (and pT) of the particles: fail now, not at the first batch
        if config.order == "subjets":
            self._require_kinematics("task.order", "order: subjets")
        if config.augment_reflections:
            self._require_kinematics("task.augment_reflections", "augment_reflections: true")
        if any(name != "n_particles" for name in config.jet_tokens):
            self._require_kinematics(
                "task.jet_tokens",
                "jet tokens pT/mass/energy/tau21/tau32 (use n_particles alone otherwise)",
            )
        D = config.backbone.dim
        self.backbone = Backbone(config.backbone)
        self.class_embed = nn.Embedding(config.n_classes, D) if config.n_classes > 0 else None
        # positions 0 (START), the J jet tokens, then max_length particles (the last input is
        # the one after the last particle)
        self.position_embed = (
            nn.Embedding(config.max_length + 1 + J, D) if config.position_embedding else None
        )
        if self.position_embed is not None:
            nn.init.normal_(self.position_embed.weight, std=0.02)
        # decoded standardised features of every code (K, F), each decoded on its own as a
        # one-particle jet: derived from the frozen tokenizer, so not saved with the weights
        table = None
        if config.geometric_head or config.neighbour_prior or config.backbone.input == "hybrid":
            codes = torch.arange(K)[:, None]  # (K, 1)
            with torch.no_grad():
                table = tokenizer.decode(codes, torch.ones_like(codes, dtype=torch.bool))[:, 0]
        self.code_features: Tensor | None
        self.register_buffer("code_features", table, persistent=False)
        # a two-level vocabulary (C cells x R residual codes) or a flat one (C = K, R = 1)
        R = int(getattr(getattr(tokenizer, "config", None), "kmeans_residual_codes", 0) or 0)
        if config.factorised_head and not R:
            raise ConfigError(
                "a two-level tokenizer (kmeans_residual_codes > 0) for factorised_head",
                field="task.factorised_head",
                found=f"tokenizer {config.tokenizer} with one level",
            )
        R = R if config.factorised_head else 1
        C = K // R
        self.n_cells, self.n_residuals = C, R
        self.head_size = C + vocab - K  # H: cells (or codes), then the special ids
        self.stop_head_id = C + 1  # START is head id C, STOP C + 1
        if config.geometric_head:
            cells = tokenizer.cell_centroids if R > 1 else self.code_features  # type: ignore[attr-defined]
            self.head: nn.Module = GeometricTokenHead(D, cells, n_special=vocab - K)
        else:
            self.head = TokenHead(D, self.head_size, config.head_transform)
        self.residual_head = ResidualCodeHead(D, C, R) if R > 1 else None
        if config.geometric_angular:
            angular = _angular_features(tokenizer, "task.geometric_angular")
            other = [i for i in range(self.head.frequencies.shape[0]) if i not in angular]
            with torch.no_grad():  # (F, n): the first half of the frequencies, angular only
                self.head.frequencies[other, : self.head.frequencies.shape[1] // 2] = 0.0
        self.fourier_embed: nn.Linear | None = None
        if config.fourier_input:
            n_freq = self.head.frequencies.shape[1]
            self.fourier_embed = nn.Linear(2 * n_freq, D)
            nn.init.zeros_(self.fourier_embed.weight)
            nn.init.zeros_(self.fourier_embed.bias)
        self.neighbour: NeighbourPrior | None = None
        if config.neighbour_prior:
            angular = _angular_features(tokenizer, "task.neighbour_prior")
            self.neighbour = NeighbourPrior(
                D, self.code_features, angular, widths=config.neighbour_widths
            )
        # jet tokens: quantile bin edges (J, bins - 1), NaN until fitted; saved with the weights
        # only with jet tokens, so checkpoints without them (and from before them) carry none
        self.jet_edges: Tensor
        self.register_buffer(
            "jet_edges", torch.full((J, max(n_bins - 1, 1)), float("nan")), persistent=J > 0
        )
        self._edges_checked = False
        # additive logit masks (J + 1, H) over head ids: row j < J allows observable j's bins only,
        # row J (every particle position) codes (cells) and STOP only
        allowed = torch.zeros(J + 1, self.head_size, dtype=torch.bool)
        for j in range(J):
            allowed[j, C + 2 + j * n_bins : C + 2 + (j + 1) * n_bins] = True
        allowed[J, :C] = True
        allowed[J, self.stop_head_id] = True
        self.vocab_mask: Tensor
        self.register_buffer(
            "vocab_mask",
            torch.zeros(J + 1, self.head_size).masked_fill(~allowed, float("-inf")),
            persistent=False,
        )

    # ------------------------------------------------------------------ jet tokens
    @property
    def needs_jet_statistics(self) -> bool:
        return self.n_jet_tokens > 0

    def fit_jet_statistics(self, batches: Iterable[Mapping[str, Any]]) -> None:
        """Fit each jet token's quantile bin edges on training batches (see the base class), with
        the observables :meth:`jet_observables` gives the loss."""
        values: dict[str, list[np.ndarray]] = {name: [] for name in self.config.jet_tokens}
        for batch in batches:
            check_batch(batch, None)
            x, mask = front_pack(batch["x"], batch["mask"].bool())
            with torch.no_grad():
                obs = self.jet_observables(self.tokenizer.encode(x, mask).long(), mask)
            for name in values:
                values[name].append(obs[name].double().cpu().numpy())
        q = np.linspace(0.0, 1.0, self.config.jet_token_bins + 1)[1:-1]
        rows = []
        for name, parts in values.items():
            v = np.concatenate(parts) if parts else np.zeros(0)
            v = v[np.isfinite(v)]
            if v.size == 0:
                raise InputError(
                    "training jets with finite values", field=f"jet_tokens.{name}", found="none"
                )
            rows.append(np.quantile(v, q))
        if rows:
            self.jet_edges.copy_(torch.as_tensor(np.stack(rows), dtype=torch.float32))
        self._edges_checked = False

    @torch.no_grad()
    def bins_of_jets(self, x: Tensor, mask: Tensor) -> Tensor:
        """The jet-token bins (B, J) of real jets, standardised features (B, N, F) + mask, as
        training computes them: tokenized, decoded, binned (for conditional generation on the
        jet-level values of real jets). Pass the leading ``max_length`` particles, as the loader
        does."""
        x, mask = front_pack(x, mask.bool())
        return self.jet_bins(self.jet_observables(self.tokenizer.encode(x, mask).long(), mask))

    def jet_observables(self, ids: Tensor, mask: Tensor) -> dict[str, Tensor]:
        """The jet tokens' values ``{name: (B,)}`` of particle tokens ``ids`` (B, N) + ``mask``:
        those of the jet they decode to (module docstring), as :func:`decode_to_jets` builds it.

        ``n_particles`` is the number of real tokens; pT, mass and energy come from the decoded
        ``log_pt``, ``deta``, ``dphi`` with the tokenizer's preprocessing undone.
        """
        out: dict[str, Tensor] = {"n_particles": mask.sum(dim=1).double()}
        if all(name == "n_particles" for name in self.config.jet_tokens):
            return out
        x = self.tokenizer.decode(ids.masked_fill(~mask, -1), mask)  # (B, N, F) standardised
        idx, mean, std = self._kinematic_stats
        kin = x[..., idx].double() * std.to(x.device) + mean.to(x.device)  # (B, N, 3) physical
        four = massless_jet_kinematics(kin[..., 0].exp(), kin[..., 1], kin[..., 2], mask)
        out.update(four)
        if any(name.startswith("tau") for name in self.config.jet_tokens):
            pt, deta, dphi = kin[..., 0].exp().float(), kin[..., 1].float(), kin[..., 2].float()
            taus = kt_nsubjettiness(pt, deta, dphi, mask)
            out.update({k: v.double() for k, v in taus.items()})
        return out

    def reflect(
        self, x: Tensor, signs: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """Mirror images of jets ``x`` (B, N, F) (standardised features): deta -> s_eta deta and
        dphi -> s_phi dphi with ``signs`` (B, 2) of +-1 (default: drawn at random per jet), in
        physical units, i.e. x -> s x + (s - 1) mean / std for each angle. Other features, and the
        padding mask, stay as they are (see ``NTPConfig.augment_reflections``)."""
        idx, mean, std = self._kinematic_stats
        B = x.shape[0]
        if signs is None:
            dev = x.device if generator is None else generator.device
            signs = (torch.randint(0, 2, (B, 2), generator=generator, device=dev) * 2 - 1).to(
                x.device
            )
        if tuple(signs.shape) != (B, 2):
            raise InputError(f"signs of shape ({B}, 2)", field="signs", found=tuple(signs.shape))
        out = x.clone()
        for k, col in enumerate(idx[1:]):  # deta, dphi
            s = signs[:, k, None].to(x.dtype)  # (B, 1)
            shift = float(mean[k + 1] / std[k + 1])
            out[..., col] = s * x[..., col] + (s - 1) * shift
        return out

    def _require_kinematics(self, field: str, use: str) -> None:
        """Raise unless the tokenizer has log_pt, deta, dphi and the standardisation to undo."""
        names = list(self.tokenizer.feature_names)
        pre = getattr(self.tokenizer, "preprocessing", None)
        missing = [f for f in _KINEMATIC_FEATURES if f not in names]
        if missing or pre is None:
            raise ConfigError(
                f"a tokenizer with features {list(_KINEMATIC_FEATURES)} and its preprocessing for"
                f" {use}",
                field=field,
                found=f"features {names}, preprocessing {'missing' if pre is None else 'present'}",
            )

    @functools.cached_property
    def _kinematic_stats(self) -> tuple[list[int], Tensor, Tensor]:
        """Indices of log_pt, deta, dphi among the tokenizer's features and their mean/std
        (checked in ``__init__`` by :meth:`_require_kinematics` for every option that needs them)."""
        names = list(self.tokenizer.feature_names)
        pre = self.tokenizer.preprocessing  # type: ignore[attr-defined]
        idx = [names.index(f) for f in _KINEMATIC_FEATURES]
        pre_names = list(pre["feature_names"])
        cols = [pre_names.index(f) for f in _KINEMATIC_FEATURES]
        mean = torch.as_tensor(np.asarray(pre["mean"], np.float64)[cols])
        std = torch.as_tensor(np.asarray(pre["std"], np.float64)[cols])
        return idx, mean, std

    def _check_jet_edges(self) -> None:
        if self._edges_checked or self.n_jet_tokens == 0:
            return
        if bool(torch.isnan(self.jet_edges).any()):
            raise ConfigError(
                "jet-token bin edges fitted on training jets (NTPTask.fit_jet_statistics, which"
                " jetfm pretrain calls)",
                field="task.jet_tokens",
                found="unfitted edges",
            )
        self._edges_checked = True

    def jet_bins(self, observables: Mapping[str, Tensor], m: int | None = None) -> Tensor:
        """Bin index (B, m) of the first ``m`` (default: all J) jet tokens from jet-level values
        ``{name: (B,)}``."""
        self._check_jet_edges()
        cols = [
            torch.bucketize(observables[name].float().contiguous(), self.jet_edges[j])
            for j, name in enumerate(self.config.jet_tokens[:m])
        ]
        return torch.stack(cols, dim=1)  # (B, m) in [0, bins)

    def _jet_ids(self, bins: Tensor) -> Tensor:
        """Token ids (B, m) of the first m jet tokens' bins (B, m): ``K + 2 + j * bins + b``."""
        first = torch.arange(bins.shape[1], device=bins.device) * self.config.jet_token_bins
        return self.codebook_size + 2 + first + bins.long()

    # ------------------------------------------------------------------ head ids
    def head_ids(self, ids: Tensor) -> Tensor:
        """Token ids (any shape) -> head ids (a particle token's cell, special ids after the
        cells); ``IGNORE_ID`` stays. The identity without a factorised head."""
        two = self.output_head()
        if not isinstance(two, TwoLevelHead):
            return ids
        return torch.where(ids < 0, ids, two.head_ids(ids))

    def output_head(self) -> nn.Module | TwoLevelHead:
        """The sampler's head: the token head, or both levels of a factorised one."""
        if self.residual_head is None:
            return self.head
        return TwoLevelHead(self.head, self.residual_head, self.n_cells, self.n_residuals)

    def _factorised_nll(self, hid: Tensor, targets: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:
        """Summed NLL over targets (M,) (token ids or ``IGNORE_ID``) of hidden states (M, D) with
        the head-id mask ``bias`` (H,) or (M, H) -> (sum, greedy token predictions (M,)): -log
        p(cell) - log p(residual | cell) for particle tokens, -log p(id) for special ids. The
        prediction is the argmax cell's argmax residual where the cell is right (a wrong cell
        makes a wrong token whatever its residual)."""
        two = self.output_head()
        assert isinstance(two, TwoLevelHead)
        logits = two.cells(hid).float() + bias  # (M, H)
        head_t = self.head_ids(targets)  # (M,)
        nll = F.cross_entropy(logits, head_t, ignore_index=IGNORE_ID, reduction="sum")
        pred_h = logits.detach().argmax(-1)  # (M,)
        residual = torch.zeros_like(pred_h)  # (M,) the predicted residual where the cell is right
        code = (targets >= 0) & (targets < two.n_codes)  # (M,)
        if bool(code.any()):
            cell = head_t[code]
            res = two.residuals(hid[code], cell).float()  # (m, R)
            nll = nll + F.cross_entropy(res, targets[code] % two.n_residuals, reduction="sum")
            residual[code] = res.detach().argmax(-1)
        return nll, two.token_ids(pred_h, residual)

    # ------------------------------------------------------------------ sequences
    def build_sequences(
        self, x: Tensor, mask: Tensor, jet_bins: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Token sequences of a batch: ``inputs`` (B, L), ``input_mask`` (B, L), ``targets`` (B, L)
        with ``IGNORE_ID`` at padding, and ``x_in`` (B, L, F) (features shifted like the inputs).

        With jet tokens, ``jet_bins`` (B, J) are the jets' bins; by default those of the jets the
        particle tokens decode to (:meth:`jet_observables`).
        """
        x, mask = front_pack(x, mask)
        if self.config.order == "subjets":
            idx, mean, std = self._kinematic_stats
            # physical (deta, dphi) (B, N, 2); float32, which every device has (MPS lacks float64)
            std2, mean2 = (t[1:].to(x.device, torch.float32) for t in (std, mean))
            ang = x[..., idx[1:]].float() * std2 + mean2
            perm = subjet_order(
                ang[..., 0],
                ang[..., 1],
                mask,
                self.config.subjet_radius,
                self.config.subjet_seeds_first,
            )
            x = x.gather(1, perm[..., None].expand(-1, -1, x.shape[-1]))  # (B, N, F)
            mask = mask.gather(1, perm)  # still front-packed: padding sorts last
        B, J = mask.shape[0], self.n_jet_tokens
        dev = mask.device
        with torch.no_grad():
            ids = self.tokenizer.encode(x, mask).long()  # (B, N), frozen
            if J and jet_bins is None:
                self._check_jet_edges()
                jet_bins = self.jet_bins(self.jet_observables(ids, mask))  # (B, J)
        head = torch.full((B, 1), self.start_id, dtype=torch.long, device=dev)  # (B, 1 + J)
        jet_ids = torch.empty(B, 0, dtype=torch.long, device=dev)  # (B, J)
        if J:
            assert jet_bins is not None and jet_bins.shape == (B, J)
            jet_ids = self._jet_ids(jet_bins)
            head = torch.cat([head, jet_ids], dim=1)
        inputs = torch.cat([head, ids.masked_fill(~mask, self.stop_id)], dim=1)  # (B, L)
        input_mask = torch.cat([torch.ones_like(head, dtype=torch.bool), mask], dim=1)  # (B, L)
        ignore = torch.full((B, 1), IGNORE_ID, dtype=torch.long, device=dev)
        targets = torch.cat([jet_ids, ids.masked_fill(~mask, IGNORE_ID), ignore], dim=1)  # (B, L)
        n = mask.sum(dim=1)  # (B,)
        targets[torch.arange(B, device=dev), J + n] = self.stop_id
        out = {"inputs": inputs, "input_mask": input_mask, "targets": targets}
        if self.config.backbone.input == "hybrid":
            if self.config.hybrid_features == "decoded":
                out["x_in"] = self.token_features(inputs)  # (B, L, F), as sampling sees them
            else:
                zeros = x.new_zeros(B, 1 + J, x.shape[-1])
                out["x_in"] = torch.cat([zeros, x], dim=1)  # (B, L, F)
        return out

    def token_features(self, tokens: Tensor) -> Tensor:
        """Decoded standardised features (b, T, F) of ids (b, T); zero at START/STOP/padding.

        A lookup in :attr:`code_features` (each code decoded on its own), so a token's features do
        not depend on the prefix: the same whether a sequence is fed at once or token by token.
        """
        assert self.code_features is not None  # built for hybrid input
        K = self.codebook_size
        real = (tokens >= 0) & (tokens < K)  # (b, T)
        feats = self.code_features[tokens.clamp(0, K - 1)]  # (b, T, F)
        return feats * real[..., None]

    def _embed(
        self, inputs: Tensor, x_in: Tensor | None, labels: Tensor | None, offset: int = 0
    ) -> Tensor:
        """Embed ids (B, T) at positions ``offset .. offset + T - 1`` (+ their features ``x_in``
        (B, T, F) for a hybrid backbone); the class embedding goes on position 0 (START)."""
        h = self.backbone.embed(x_in if self.config.backbone.input == "hybrid" else None, inputs)
        if self.fourier_embed is not None:
            assert x_in is not None  # hybrid input (NTPConfig)
            phase = 2 * math.pi * x_in @ self.head.frequencies  # (B, T, n)
            h = h + self.fourier_embed(torch.cat([phase.sin(), phase.cos()], dim=-1))
        if self.position_embed is not None:
            T = inputs.shape[1]
            if offset + T > self.config.max_length + 1 + self.n_jet_tokens:
                raise InputError(
                    f"at most task.max_length = {self.config.max_length} particles per jet",
                    field="max_length",
                    found=offset + T - 1 - self.n_jet_tokens,
                )
            pos = torch.arange(offset, offset + T, device=inputs.device)
            h = h + self.position_embed(pos)[None]  # (1, T, D)
        first = offset == 0
        if self.class_embed is not None and first:
            if labels is None:
                raise InputError(
                    f"class labels in [0, {self.config.n_classes}) for a class-conditional model",
                    field="label",
                    found=None,
                )
            labels = labels.long()
            if labels.numel() and (
                int(labels.min()) < 0 or int(labels.max()) >= self.config.n_classes
            ):
                raise InputError(
                    f"labels in [0, {self.config.n_classes})",
                    field="label",
                    found=f"range [{int(labels.min())}, {int(labels.max())}]",
                )
            cls = self.class_embed(labels)[:, None]  # (B, 1, D)
            h = torch.cat([h[:, :1] + cls, h[:, 1:]], dim=1)
        return h

    # ------------------------------------------------------------------ loss
    def loss(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        c = self.config
        n_feat = c.backbone.n_features if c.backbone.input == "hybrid" else None
        check_batch(batch, n_feat)
        J = self.n_jet_tokens
        x = batch["x"]  # (B, N, F)
        if self.training and c.augment_reflections:
            x = self.reflect(x)
        seq = self.build_sequences(x, batch["mask"])
        if self.training and c.scheduled_sampling > 0:
            seq = self.scheduled_inputs(seq, batch.get("label"), c.scheduled_sampling)
        h = self._embed(seq["inputs"], seq.get("x_in"), batch.get("label"), 0)
        hid = self.backbone.encode(h, seq["input_mask"])  # (B, L, D)
        out: dict[str, Tensor] = {}
        if J:
            # jet tokens: position j predicts observable j among its own bins only
            jet_logits = self.head(hid[:, :J]).float() + self.vocab_mask[:J]  # (B, J, H)
            jet_targets = self.head_ids(seq["targets"][:, :J])  # (B, J)
            jet_nll = F.cross_entropy(jet_logits.transpose(1, 2), jet_targets)
            hid, real = hid[:, J:], seq["input_mask"][:, J:]  # particle positions
            targets_all = seq["targets"][:, J:]
        else:
            real, targets_all = seq["input_mask"], seq["targets"]
        targets = targets_all[real]  # (M,)
        if self.residual_head is not None:
            nll, pred = self._factorised_nll(hid[real], targets, self.vocab_mask[J])
            loss = nll / (targets != IGNORE_ID).sum().clamp(min=1)
        elif self.neighbour is None:
            logits = self.head(hid[real]).float()  # (M, V), only real positions
            if J:
                logits = logits + self.vocab_mask[J]  # codes and STOP only
            loss = F.cross_entropy(logits, targets, ignore_index=IGNORE_ID)
            pred = logits.detach().argmax(-1)  # (M,)
        else:
            # every position (padding has IGNORE_ID targets): selecting the real rows of the
            # (B, L, V) logits would cost a copy forward and a scatter backward
            V = self.vocab_size
            full = self._particle_logits(hid, seq["inputs"])  # (B, L - J, V)
            loss = F.cross_entropy(
                full.view(-1, V), targets_all.reshape(-1), ignore_index=IGNORE_ID
            )
            pred = full.detach().argmax(-1)[real]  # (M,)
        if J:
            # the sequence's negative log-likelihood per token: jet tokens and particle tokens
            n_jet, n_part = jet_nll.new_tensor(J * hid.shape[0]), (targets != IGNORE_ID).sum()
            out["particle_loss"] = loss.detach()
            out["jet_token_loss"] = jet_nll.detach()
            loss = (jet_nll * n_jet + loss * n_part) / (n_jet + n_part)
        out["loss"] = loss
        with torch.no_grad():
            is_stop = targets == self.stop_id
            out["accuracy"] = (pred == targets).float().mean()
            out["stop_accuracy"] = (pred[is_stop] == self.stop_id).float().mean()
            out["perplexity"] = loss.detach().exp()
            if "swapped" in seq:  # share of the particle inputs that were model draws
                out["swapped"] = seq["swapped"].sum() / batch["mask"].sum().clamp(min=1)
        return out

    def _particle_logits(self, hid: Tensor, inputs: Tensor) -> Tensor:
        """Logits (B, L - J, V) of every particle position of full sequences: hidden states
        (B, L - J, D) (the last jet token's onwards) and input ids (B, L) -> head + neighbour prior
        (+ the vocabulary mask with jet tokens, as in sampling)."""
        logits = self.head(hid).float()  # (B, L - J, V)
        if self.neighbour is not None:
            log_prior = self.neighbour_log_prior(hid, inputs)  # (B, L - J, K)
            logits = logits + F.pad(log_prior, (0, self.vocab_size - self.codebook_size))
        if self.n_jet_tokens:
            logits = logits + self.vocab_mask[self.n_jet_tokens]
        return logits

    @torch.no_grad()
    def scheduled_inputs(
        self,
        seq: Mapping[str, Tensor],
        labels: Tensor | None,
        p: float,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """Parallel scheduled sampling (see ``NTPConfig.scheduled_sampling``): ``seq`` from
        :meth:`build_sequences` with each particle input replaced, with probability ``p``, by a
        token drawn from the model's teacher-forced prediction for that position; ``swapped``
        (B, L) marks the replaced inputs.

        Only particle codes are replaced, and only by particle codes (a drawn STOP keeps the real
        token), so lengths, padding and targets stay as they were; a replaced token's features
        are its decoded ones, as in sampling. Jet tokens and START are never replaced.
        """
        J, K = self.n_jet_tokens, self.codebook_size
        inputs = seq["inputs"]  # (B, L)
        h = self._embed(inputs, seq.get("x_in"), labels, 0)
        hid = self.backbone.encode(h, seq["input_mask"])[:, J:]  # (B, L - J, D)
        # position i predicts particle i + 1, which is fed back at input J + 1 + i; the last
        # position predicts STOP or nothing
        target = seq["targets"][:, J:-1]  # (B, N)
        coin = torch.rand(target.shape, generator=generator, device=inputs.device)
        chosen = (target >= 0) & (target < K) & (coin < p)  # (B, N)
        logits = self._particle_logits(hid, inputs)[:, :-1][chosen]  # (M, V)
        u = torch.rand(logits.shape[0], generator=generator, device=inputs.device)  # (M,)
        drawn = torch.zeros_like(target)  # (B, N)
        drawn[chosen] = choose_tokens(logits, u, SamplingConfig())  # the sampler's own draw
        swap = F.pad(chosen & (drawn < K), (J + 1, 0))  # (B, L); a drawn STOP keeps the real one
        new = dict(seq, swapped=swap)
        new["inputs"] = torch.where(swap, F.pad(drawn, (J + 1, 0)), inputs)
        if "x_in" in seq:
            feats = self.token_features(new["inputs"])  # (B, L, F)
            new["x_in"] = torch.where(swap[..., None], feats, seq["x_in"])
        return new

    def neighbour_log_prior(self, hid: Tensor, inputs: Tensor) -> Tensor:
        """The neighbour prior of every position of full sequences (training): hidden states
        (B, L, D) and input ids (B, L) (``START t_1 .. t_n`` + padding) -> log prior (B, L, K).

        Position i predicts particle i + 1 and may point at particles 1..i (the inputs after START
        up to and including its own), of which the leading ``neighbour_parents``. With jet tokens,
        ``hid`` holds the particle positions only (the last jet token's onwards, (B, L - J, D)),
        while ``inputs`` is the whole sequence."""
        assert self.neighbour is not None
        J = self.n_jet_tokens
        inputs = inputs[:, J:]  # the last jet token (or START) plays START's part
        L = inputs.shape[1]
        parts = inputs[:, 1 : 1 + self.config.neighbour_parents]  # (B, P) ids (STOP/pad after)
        real = parts < self.codebook_size  # (B, P)
        pos = torch.arange(L, device=inputs.device)
        allowed = (pos[1 : 1 + parts.shape[1]][None, :] <= pos[:, None])[None]  # (1, L, P)
        allowed = allowed & real[:, None, :]  # (B, L, P)
        return self.neighbour(hid, self.token_features(parts), allowed)  # (B, L, K)

    def neighbour_step_bias(self, hid: Tensor, particles: Tensor) -> Tensor:
        """The sampler's ``logit_bias``: the neighbour prior of the next particle of b jets with
        hidden states (b, D) and particles so far (b, T) -> (b, V).

        Stateless (the same with or without a KV cache): the kernel rows of the earlier particles
        are rows of the prior's per-code table, summed with their weights in one pass."""
        assert self.neighbour is not None
        parents = particles[:, : self.config.neighbour_parents]  # (b, P)
        b, P = parents.shape
        allowed = torch.ones(b, 1, P, dtype=torch.bool, device=hid.device)
        a0, a = self.neighbour.weights(hid[:, None], self.token_features(parents), allowed)
        log_prior = self.neighbour.log_prior_of_codes(a0[:, 0], a[:, 0], parents)  # (b, K)
        return F.pad(log_prior, (0, self.vocab_size - self.codebook_size))  # (b, V)

    # ------------------------------------------------------------------ sampling
    def embed_tokens(self, tokens: Tensor, labels: Tensor | None, offset: int) -> Tensor:
        """Embed tokens (b, T) at positions ``offset ..`` as :meth:`loss` does (a hybrid backbone
        reads the tokens' decoded features here; in training too with ``hybrid_features: decoded``,
        the exact particle features with ``exact``)."""
        feats = self.token_features(tokens) if self.config.backbone.input == "hybrid" else None
        return self._embed(tokens, feats, labels, offset)
