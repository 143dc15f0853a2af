"""Sampling from a next-token model: plain, conditioned on jet-token bins, and consistent.

:class:`NTPSampling` holds the sampling side of :class:`~jetfm.tasks.ntp.NTPTask` (which inherits
it): one pass of the one sampler (:func:`~jetfm.models.sampler.generate_tokens`) with the jet-token
masks and forced bins as its ``logit_bias``, the redraw loop of consistent sampling, and the checks
that fit a generated jet to its drawn bins. It is kept apart from the task so that the training
side (sequences, embedding, loss) and the generation side each stay readable on their own.

It reads the task's pieces (``backbone``, ``output_head()``, ``embed_tokens``, ``head_ids``,
``vocab_mask``, ``jet_edges``, ``jet_bins``, ``jet_observables``, ``config``, the special ids) and
adds no weights. Shapes: B jets, N particles, J jet tokens, H head ids (see :mod:`jetfm.tasks.ntp`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from jetfm.core.errors import ConfigError, InputError
from jetfm.models.sampler import SampledTokens, SamplingConfig, generate_tokens


def _same_tokenizer(a: Any, b: Any) -> bool:
    """Whether two tokenizers are the same: by content hash when both were saved or loaded, else
    by their weights."""
    if a is b:
        return True
    if a is None or b is None:
        return False
    ha, hb = getattr(a, "content_hash", None), getattr(b, "content_hash", None)
    if ha is not None and hb is not None:
        return bool(ha == hb)
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k].cpu(), sb[k].cpu()) for k in sa)


class NTPSampling:
    """The sampling methods of :class:`~jetfm.tasks.ntp.NTPTask` (a mixin; see the module
    docstring for the task attributes it uses)."""

    # provided by NTPTask (declared for readers and type checkers)
    config: Any
    n_jet_tokens: int
    head_size: int
    stop_head_id: int
    start_id: int
    stop_id: int
    jet_edges: Tensor
    vocab_mask: Tensor
    tokenizer: Any
    neighbour: Any
    backbone: Any

    @torch.no_grad()
    def sample_tokens(
        self,
        n_jets: int,
        config: SamplingConfig | None = None,
        *,
        labels: Tensor | None = None,
        generator: torch.Generator | None = None,
        jet_bins: Tensor | None = None,
        consistent: bool = False,
        max_redraws: int = 10,
        bin_tolerance: int = 0,
        guidance: Tensor | None = None,
        guide_labels: Tensor | None = None,
        guide_task: Any = None,
    ) -> SampledTokens:
        """Run the one sampler, :func:`~jetfm.models.sampler.generate_tokens`, on this model's
        pieces (backbone, head, embedding, neighbour prior) in eval mode. ``labels`` (B,): the
        classes of a class-conditional model (required for one, refused without);
        ``config`` (default: ``SamplingConfig()``) must not go past the position embedding.

        With jet tokens the sampler first draws the J jet-level bins (returned as ``prefix``
        (B, J), bin indices), then ``config.max_length`` particles at most. ``jet_bins`` (B, m),
        m <= J, fixes the first m of them instead of drawing them (conditional generation: the
        rest, and the particles, are drawn given them; see :meth:`condition_bins`).

        ``consistent`` (jet tokens only): every jet must reproduce its drawn bins, as every
        training jet does by construction (:meth:`fit_to_bins`):

        * STOP is allowed only inside the multiplicity bin;
        * with a pT token, the particles' pT are scaled by one common factor (``pt_scale`` (B,)
          of the result) that puts the jet pT in its bin (uniformly within it; the open outer
          bins keep the nearest pT inside them). A 4x128 GPT's particles sum to the drawn pT bin
          for a few percent of the jets only, so redrawing them would take ~30 draws per jet;
          the scale leaves the particles' pT fractions and angles as drawn;
        * a jet whose mass / energy (after the scale) lie more than ``bin_tolerance`` bins off
          has its particles redrawn, given the same bins, up to ``max_redraws`` times (the last
          draw is kept if none fits).

        The bins keep the model's distribution; the particles are drawn from the model restricted
        to the jets that agree with them. ``draws`` (B,) and ``consistent`` (B,) of the result
        say how many draws each jet took and whether it fits.

        ``guidance`` (B,) weights: guidance (:func:`~jetfm.models.sampler.generate_tokens`) against
        this model under ``guide_labels`` (B,), or against ``guide_task``, another next-token
        model over the same tokens and jet-token bins (:meth:`check_guide`), in every draw and
        redraw."""
        n_classes = int(self.config.n_classes)
        if n_classes > 0 and labels is None:
            raise InputError(
                f"class labels in [0, {n_classes}) for a class-conditional model",
                field="labels",
                found=None,
            )
        if n_classes == 0 and labels is not None:
            raise InputError(
                "no labels (the model was trained without class conditioning)",
                field="labels",
                found="labels",
            )
        config = config or SamplingConfig()
        if self.config.position_embedding and config.max_length > self.config.max_length:
            raise InputError(
                f"max_length <= {self.config.max_length} (the model's position embedding ends there)",
                field="max_length",
                found=config.max_length,
            )
        if guide_task is not None:
            self.check_guide(guide_task)
        guide = {"guidance": guidance, "guide_labels": guide_labels, "guide_task": guide_task}
        if consistent:
            return self._sample_consistent(
                n_jets,
                config,
                labels=labels,
                generator=generator,
                jet_bins=jet_bins,
                max_redraws=max_redraws,
                bin_tolerance=bin_tolerance,
                **guide,
            )
        return self._sample(
            n_jets, config, labels=labels, generator=generator, jet_bins=jet_bins, **guide
        )

    def _sample_consistent(
        self,
        n_jets: int,
        config: SamplingConfig,
        *,
        labels: Tensor | None,
        generator: torch.Generator | None,
        jet_bins: Tensor | None,
        max_redraws: int,
        bin_tolerance: int,
        guidance: Tensor | None = None,
        guide_labels: Tensor | None = None,
        guide_task: Any = None,
    ) -> SampledTokens:
        """:meth:`sample_tokens` with ``consistent=True``."""
        if not self.n_jet_tokens:
            raise InputError(
                "a model with jet tokens for consistent sampling",
                field="consistent",
                found="no jet tokens",
            )
        if max_redraws < 0:
            raise InputError("max_redraws >= 0", field="max_redraws", found=max_redraws)
        if bin_tolerance < 0:
            raise InputError("bin_tolerance >= 0", field="bin_tolerance", found=bin_tolerance)
        if config.min_length > 1:  # it could forbid the STOP that a small bin's top forces
            raise InputError(
                "min_length 1 with consistent sampling (the multiplicity bin sets the length)",
                field="min_length",
                found=config.min_length,
            )
        kw = {"stop_in_bin": True, "generator": generator}
        guide = {"guidance": guidance, "guide_labels": guide_labels}
        out = self._sample(
            n_jets, config, labels=labels, jet_bins=jet_bins, guide_task=guide_task, **kw, **guide
        )
        assert out.prefix is not None
        ids, mask, stopped, prefix = out.ids, out.mask, out.stopped, out.prefix
        fit = functools.partial(self.fit_to_bins, generator=generator, tolerance=bin_tolerance)
        scale, ok = fit(ids, mask, prefix)  # (B,) each
        draws = torch.ones(n_jets, dtype=torch.long, device=ids.device)
        for _ in range(max_redraws):
            rows = (~ok).nonzero().squeeze(-1)  # (r,)
            if rows.numel() == 0:
                break
            lab = None if labels is None else labels[rows.to(labels.device)]
            sub = {k: None if v is None else v[rows.to(v.device)] for k, v in guide.items()}
            again = self._sample(
                len(rows),
                config,
                labels=lab,
                jet_bins=prefix[rows],
                guide_task=guide_task,
                **kw,
                **sub,
            )
            ids[rows], mask[rows], stopped[rows] = again.ids, again.mask, again.stopped
            scale[rows], ok[rows] = fit(again.ids, again.mask, prefix[rows])
            draws[rows] += 1
        return SampledTokens(
            ids, mask, stopped, prefix=prefix, draws=draws, consistent=ok, pt_scale=scale
        )

    def _sample(
        self,
        n_jets: int,
        config: SamplingConfig,
        *,
        labels: Tensor | None = None,
        generator: torch.Generator | None = None,
        jet_bins: Tensor | None = None,
        stop_in_bin: bool = False,
        guidance: Tensor | None = None,
        guide_labels: Tensor | None = None,
        guide_task: Any = None,
    ) -> SampledTokens:
        """One pass of the sampler (:meth:`sample_tokens` without the redraws)."""
        J = self.n_jet_tokens
        bias = self.neighbour_step_bias if self.neighbour is not None else None
        if J:
            self._check_jet_edges()
            config = dataclasses.replace(
                config, max_length=config.max_length + J, min_length=config.min_length + J
            )
            stop_range = None
            if stop_in_bin and "n_particles" in self.config.jet_tokens:
                device = next(self.parameters()).device
                stop_range = tuple(t.to(device) for t in self.multiplicity_range())
            bias = functools.partial(
                self._jet_token_step_bias,
                forced=self._forced(jet_bins, n_jets),
                stop_range=stop_range,
            )
        elif jet_bins is not None:
            raise InputError(
                "no jet_bins (the model has no jet tokens)", field="jet_bins", found="jet_bins"
            )
        guide_model = None
        if guide_task is not None:
            guide_task.eval()
            guide_model = (guide_task.backbone, guide_task.output_head(), guide_task.embed_tokens)
        was_training = self.training
        self.eval()
        try:
            out = generate_tokens(
                self.backbone,
                self.output_head(),
                self.embed_tokens,
                n_jets=n_jets,
                start_id=self.start_id,
                stop_id=self.stop_id,
                config=config,
                labels=labels,
                generator=generator,
                logit_bias=bias,
                prefix_steps=J,  # the jet tokens take config.prefix_temperature
                guidance=guidance,
                guide_labels=guide_labels,
                guide_model=guide_model,
            )
        finally:
            self.train(was_training)
        if not J:
            return out
        prefix = out.ids[:, :J] - self._jet_ids(out.ids.new_zeros(1, J))  # (B, J) bin indices
        return SampledTokens(
            ids=out.ids[:, J:], mask=out.mask[:, J:], stopped=out.stopped, prefix=prefix
        )

    def check_guide(self, other: Any) -> None:
        """Refuse a guide model that does not speak this model's token sequences: the same
        tokenizer (content hash), vocabulary, special ids, jet tokens and jet-token bin edges, so
        that both score the same prefix as the same jet."""
        mine = (
            self.head_size,
            self.start_id,
            self.stop_id,
            tuple(self.config.jet_tokens),
            int(self.config.n_classes),
        )
        theirs = (
            getattr(other, "head_size", None),
            getattr(other, "start_id", None),
            getattr(other, "stop_id", None),
            tuple(getattr(getattr(other, "config", None), "jet_tokens", ())),
            int(getattr(getattr(other, "config", None), "n_classes", -1)),
        )
        same_tok = _same_tokenizer(self.tokenizer, getattr(other, "tokenizer", None))
        same_edges = self.n_jet_tokens == 0 or (
            other.jet_edges.shape == self.jet_edges.shape
            and torch.equal(other.jet_edges.cpu(), self.jet_edges.cpu())
        )
        if mine != theirs or not same_tok or not same_edges:
            raise InputError(
                "a guide model with this model's tokenizer, vocabulary, classes, jet tokens and "
                "jet-token bin edges",
                field="guide_checkpoint",
                found=f"(head size, START, STOP, jet tokens, classes) {theirs} vs {mine}; "
                f"same tokenizer: {same_tok}; same jet-token edges: {same_edges}",
            )

    def condition_bins(self, values: Mapping[str, float]) -> Tensor:
        """Bins (m,) of physical jet values ``{name: value}`` (GeV for pt/mass/energy) for
        :meth:`sample_tokens`'s ``jet_bins``. The names must be the first m of ``jet_tokens``, in
        order: tokens are drawn in that order, so a later one cannot be fixed while an earlier one
        is drawn without it (that would need Bayes' rule, not a forward pass)."""
        names = list(values)
        order = list(self.config.jet_tokens)
        if names != order[: len(names)]:
            raise ConfigError(
                f"the leading jet tokens of the model, in order: a prefix of {order}",
                field="jet_condition",
                found=names,
            )
        obs = {k: torch.tensor([float(v)], device=self.jet_edges.device) for k, v in values.items()}
        return self.jet_bins(obs, len(names))[0]  # (m,)

    def _forced(self, jet_bins: Tensor | None, n_jets: int) -> Tensor | None:
        """Forced jet-token ids (B, m) of ``jet_bins`` (B, m) bin indices (None: all drawn)."""
        if jet_bins is None:
            return None
        n_bins = self.config.jet_token_bins
        if (
            jet_bins.ndim != 2
            or jet_bins.shape[0] != n_jets
            or jet_bins.shape[1] > self.n_jet_tokens
        ):
            raise InputError(
                f"jet_bins of shape ({n_jets}, m <= {self.n_jet_tokens})",
                field="jet_bins",
                found=tuple(jet_bins.shape),
            )
        if jet_bins.numel() and (int(jet_bins.min()) < 0 or int(jet_bins.max()) >= n_bins):
            raise InputError(f"bins in [0, {n_bins})", field="jet_bins", found=jet_bins.tolist())
        return self._jet_ids(jet_bins)

    def _jet_token_step_bias(
        self,
        hid: Tensor,
        prefix: Tensor,
        forced: Tensor | None = None,
        stop_range: tuple[Tensor, Tensor] | None = None,
    ) -> Tensor:
        """The sampler's ``logit_bias`` with jet tokens: step ``T < J`` draws jet token T among its
        bins (or takes ``forced[:, T]`` (B, m) if T < m), later steps codes and STOP (+ the
        neighbour prior over the particles so far). No jet finishes before step J, so every row
        of the batch is still there while jet tokens are drawn.

        ``stop_range`` (:meth:`multiplicity_range`, (bins,) each): STOP only where the particle
        count lies in the drawn multiplicity bin, forbidden below it, forced at its top."""
        T, J = prefix.shape[1], self.n_jet_tokens
        if forced is not None and T < forced.shape[1]:
            bias = hid.new_full((hid.shape[0], self.head_size), float("-inf"))  # (B, H)
            return bias.scatter(1, self.head_ids(forced[:, T : T + 1]).to(hid.device), 0.0)
        bias = self.vocab_mask[min(T, J)].expand(hid.shape[0], -1)  # (b, H)
        if T >= J and self.neighbour is not None:
            bias = bias + self.neighbour_step_bias(hid, prefix[:, J:])
        if T >= J and stop_range is not None:
            j = self.config.jet_tokens.index("n_particles")
            lo, hi = stop_range
            b = prefix[:, j] - self._jet_ids(prefix.new_zeros(1, j + 1))[0, j]  # (b,) bins
            n = T - J  # particles placed so far
            too_few, enough = n < lo[b], n >= hi[b]  # (b,) each
            bias = bias.clone()
            bias[too_few, self.stop_head_id] = float("-inf")
            bias[enough] = float("-inf")
            bias[enough, self.stop_head_id] = 0.0
        return bias

    def multiplicity_range(self) -> tuple[Tensor, Tensor]:
        """The particle counts of each multiplicity bin: ``lo`` (bins,), ``hi`` (bins,) with bin b
        holding the integers ``lo[b] .. hi[b]`` (``torch.bucketize``: ``edge[b-1] < n <= edge[b]``);
        the last bin ends at ``max_length``. A bin no integer falls in (two quantile edges within
        one integer) puts no bound (0, max_length): no training jet had it, so a drawn one is the
        model's error, not a constraint to keep."""
        self._check_jet_edges()
        j = self.config.jet_tokens.index("n_particles")
        edges = self.jet_edges[j].double().cpu()  # (bins - 1,)
        inf = torch.tensor([math.inf], dtype=torch.float64)
        lower = torch.cat([-inf, edges])  # (bins,): edge[b - 1]
        upper = torch.cat([edges, inf])  # (bins,): edge[b]
        lo = (torch.floor(lower) + 1).clamp(min=0, max=self.config.max_length)
        hi = torch.floor(upper).clamp(min=0, max=self.config.max_length)
        empty = lo > hi
        lo[empty], hi[empty] = 0, self.config.max_length
        return lo.long(), hi.long()

    def fit_to_bins(
        self,
        ids: Tensor,
        mask: Tensor,
        prefix: Tensor,
        *,
        generator: torch.Generator | None = None,
        tolerance: int = 0,
    ) -> tuple[Tensor, Tensor]:
        """Fit generated jets to their drawn bins ``prefix`` (B, J): particle tokens ``ids``
        (B, N) + ``mask`` -> ``scale`` (B,), the common factor on the particles' pT that puts the
        jet pT in its drawn bin (1 without a pT token), and ``ok`` (B,): every other jet token's
        value, after the scale (mass and energy scale with it, the multiplicity does not), lies
        within ``tolerance`` bins of the drawn one.

        An inner pT bin's target is uniform within it (``generator``); the outer bins are open,
        so a jet there keeps the nearest pT inside its bin (its own, if it already lies in it).
        """
        obs = self.jet_observables(ids, mask)  # {name: (B,)} float64
        names = list(self.config.jet_tokens)
        scale = torch.ones(ids.shape[0], dtype=torch.float64, device=ids.device)
        if "pt" in names:
            j = names.index("pt")
            edges = self.jet_edges[j].double().to(ids.device)  # (bins - 1,)
            b = prefix[:, j].to(ids.device)  # (B,)
            pt = obs["pt"]
            inf = torch.tensor([math.inf], dtype=torch.float64, device=ids.device)
            lo, hi = torch.cat([-inf, edges])[b], torch.cat([edges, inf])[b]  # (B,) each
            u = torch.rand(len(b), generator=generator, dtype=torch.float64)
            inner = torch.isfinite(lo) & torch.isfinite(hi)
            # a bin is (lo, hi] (u in [0, 1)); the open top bin's nearest pT is just above lo
            inside = torch.where(torch.isfinite(lo), lo + lo.abs() * 1e-6, lo)
            target = torch.where(inner, hi - (hi - lo) * u.to(ids.device), pt.clamp(inside, hi))
            scale = target / pt.clamp(min=1e-12)
            obs = {k: v * scale if k in ("pt", "mass", "energy") else v for k, v in obs.items()}
        bins = self.jet_bins(obs)  # (B, J)
        off = (bins.to(prefix.device) - prefix).abs()  # (B, J)
        if "pt" in names:
            off[:, names.index("pt")] = 0  # in its bin by construction (up to float32 binning)
        return scale, (off <= tolerance).all(dim=1)

    @torch.no_grad()
    def generate(
        self,
        n_jets: int,
        max_particles: int,
        *,
        labels: Tensor | None = None,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float = 1.0,
        min_length: int = 1,
        use_cache: bool = True,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Sample jets token by token -> ids (B, max_particles) (-1 after STOP) and mask (B, N).

        Delegates to the one sampler, :func:`jetfm.models.sampler.generate_tokens` (KV cache,
        temperature / top-k / top-p, STOP forbidden before ``min_length``; temperature 0 = greedy).
        """
        cfg = SamplingConfig(
            temperature=temperature,
            top_k=top_k or 0,
            top_p=top_p,
            max_length=max_particles,
            min_length=min_length,
            use_cache=use_cache,
        )
        out = self.sample_tokens(n_jets, cfg, labels=labels, generator=generator)
        return out.ids, out.mask

    @torch.no_grad()
    def generate_features(
        self, n_jets: int, max_particles: int, **kwargs: Any
    ) -> tuple[Tensor, Tensor]:
        """Sample jets and decode their tokens -> standardised features (B, N, F) and mask (B, N)."""
        ids, mask = self.generate(n_jets, max_particles, **kwargs)
        return self.tokenizer.decode(ids, mask), mask
