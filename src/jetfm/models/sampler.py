"""Batched autoregressive sampling of token sequences from a causal backbone, with a KV cache.

One sampler for every causal token model (next-token prediction, OmniJet-alpha style): the model is
passed as three pieces, so this module needs no task and works for any head or embedding:

* ``backbone`` - a causal :class:`~jetfm.models.backbone.Backbone` (``encode(h, mask, cache=)``);
* ``head``     - hidden states (b, D) -> logits (b, V);
* ``embed``    - ``embed(tokens (b, T), labels (b,) | None, offset) -> h (b, T, D)``: embeds token
  ids (and whatever else the model adds: class embedding on the START token, continuous features
  of a hybrid model, position embeddings). ``offset`` is the sequence position of ``tokens[:, 0]``:
  0 when it is the START token, the step number when the KV cache feeds one new token;
* ``logit_bias`` (optional) - ``logit_bias(hid (b, D), particles (b, T)) -> (b, V)`` added to
  the head's logits: terms that depend on the particles sampled so far (the ids of the prefix,
  START excluded), such as a pointer to earlier particles.

Each step draws one token per unfinished jet. Why the choices:

* **KV cache** (``use_cache=True``): one forward pass over the new token only, O(T) per step. The
  uncached path reruns the whole prefix every step (what OmniJet-alpha does), O(T^2) in total; both
  take identical decisions, which the tests check, so the uncached path is the reference.
* **Inverse-CDF sampling with one uniform per jet and step**, drawn for the whole batch even for
  finished jets: the random stream does not depend on which jets have finished or on cached vs
  uncached logits, so the same seed gives the same jets in both modes (``torch.multinomial`` would
  consume the generator in a shape-dependent way). The two paths compute logits in a different
  float order (differences ~1e-6), so with thousands of near-equal probabilities a draw that lands
  within that distance of a CDF boundary can still differ, rarely (the CDF is accumulated in
  float64, in two levels, to keep this rare and cheap); for small vocabularies and trained
  (peaked) models they agree exactly.
* **Finished jets leave the batch**: when a jet samples STOP its rows are dropped from the working
  batch and from the cache (:meth:`KVCache.reorder`), so it costs nothing afterwards.
* **Inference mode** (no autograd bookkeeping): a cached step is hundreds of small ops, where that
  bookkeeping is a visible share.
* ``head_dtype = "bfloat16"`` runs the output head's vocabulary projection in bfloat16
  (:func:`~jetfm.models.heads.projection_in_dtype`): faster, the same for both paths, but not the
  float32 draws.
* Filtering order: temperature, then top-k, then top-p (nucleus) on the renormalised distribution.
  ``temperature = 0`` is greedy (argmax); ``top_k = 1`` gives the same sequences.
* ``prefix_temperature`` (default: ``temperature``) applies to the first ``prefix_steps`` draws
  only: a task's conditioning tokens (a next-token model's jet tokens). A lower temperature makes
  the particles of a jet more typical of their conditionals, but applied to the jet-level draws
  it would also pull every jet towards the most common pT, mass and multiplicity bins.
* **Two-level vocabularies** (``head`` a :class:`TwoLevelHead`): the head scores cells and special
  ids (C + S logits), the chosen cell's residual code is drawn next from a second head (R logits),
  with a second uniform of its own; the token is ``cell * R + residual``. Temperature, top-k and
  top-p act on each of the two draws; ``residual_temperature`` (when set) replaces the temperature
  of the second: the cell sets a particle's coarse place, the residual code its offset within the
  cell, and the two need not be sharpened alike. ``start_id``, ``stop_id`` and ``forbidden_ids`` stay token
  ids (special ids only: a particle token cannot be forbidden without its whole cell);
  ``logit_bias`` returns logits in the head's space (cells, then the special ids,
  :meth:`TwoLevelHead.head_ids`).
* **Guidance** (``guidance`` (B,) weights): each jet's logits ``l`` become ``l + w (l - l_g)``,
  with ``l_g`` the logits of a contrast for the same prefix, so ``w > 0`` pushes each draw away
  from what the contrast would do next and ``w = 0`` leaves a jet unguided. The contrast is
  either the same model under another class (``guide_labels``: classifier-free guidance with a
  class as the negative prompt; run in the same batch and KV cache) or another model over the
  same vocabulary (``guide_model``, with the jet's own class unless ``guide_labels`` are given;
  a weaker, less-trained checkpoint of the same recipe is "autoguidance", Karras et al. 2024,
  arXiv 2406.02507: the difference points along what training added). It acts on both draws of
  a two-level head; a ``logit_bias`` (masks, a pointer prior) is taken from the jet's own model
  and class only. It runs the backbone a second time for each guided jet (w != 0) per step; jets
  with w = 0 cost nothing extra.
* STOP is forbidden until ``min_length`` particles exist (default 1: no empty jets); START is never
  sampled. A jet that reaches ``max_length`` without STOP is cut there (``stopped`` is False).

Shapes: B jets, b unfinished jets, T sequence positions so far, D width, V vocabulary, N max_length.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from jetfm.core.errors import ConfigError, InputError
from jetfm.models.backbone import Backbone
from jetfm.models.heads import projection_in_dtype
from jetfm.nn.attention import KVCache

EmbedFn = Callable[[Tensor, Tensor | None, int], Tensor]
HeadFn = Callable[[Tensor], Tensor]
LogitBiasFn = Callable[[Tensor, Tensor], Tensor]

PAD_ID = -1
HEAD_DTYPES = ("float32", "bfloat16")


@dataclass
class SamplingConfig:
    """How tokens are drawn (see the module docstring).

    ``top_k = 0`` and ``top_p = 1.0`` switch the filters off; ``temperature = 0`` is greedy.
    """

    temperature: float = 1.0
    #: temperature of the first ``prefix_steps`` draws of :func:`generate_tokens` (None: the same)
    prefix_temperature: float | None = None
    #: temperature of a two-level head's second draw, the residual code within the drawn cell
    #: (None: the same as the draw's temperature)
    residual_temperature: float | None = None
    top_k: int = 0
    top_p: float = 1.0
    max_length: int = 128  # particles per jet at most (the START/STOP tokens not counted)
    min_length: int = 1  # STOP is forbidden before this many particles
    use_cache: bool = True
    #: dtype of the output head's vocabulary projection: "bfloat16" is faster (see
    #: :func:`~jetfm.models.heads.projection_in_dtype`) but draws other jets than "float32"
    head_dtype: str = "float32"

    def __post_init__(self) -> None:
        if not (self.temperature >= 0 and np.isfinite(self.temperature)):
            raise ConfigError(
                "a finite temperature >= 0", field="temperature", found=self.temperature
            )
        pt = self.prefix_temperature
        if pt is not None and not (pt >= 0 and np.isfinite(pt)):
            raise ConfigError(
                "a finite temperature >= 0 or null", field="prefix_temperature", found=pt
            )
        rt = self.residual_temperature
        if rt is not None and not (rt >= 0 and np.isfinite(rt)):
            raise ConfigError(
                "a finite temperature >= 0 or null", field="residual_temperature", found=rt
            )
        if self.top_k < 0:
            raise ConfigError("top_k >= 0 (0 = off)", field="top_k", found=self.top_k)
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError("0 < top_p <= 1 (1 = off)", field="top_p", found=self.top_p)
        if self.max_length < 1:
            raise ConfigError("max_length >= 1", field="max_length", found=self.max_length)
        if self.head_dtype not in HEAD_DTYPES:
            raise ConfigError(
                f"one of {list(HEAD_DTYPES)}", field="head_dtype", found=self.head_dtype
            )
        if not 0 <= self.min_length <= self.max_length:
            raise ConfigError(
                f"0 <= min_length <= max_length ({self.max_length})",
                field="min_length",
                found=self.min_length,
            )


@dataclass
class TwoLevelHead:
    """A head over a two-level vocabulary (``p(token) = p(cell) p(residual | cell)``).

    Tokens ``0 .. C*R - 1`` are ``cell * R + residual``; ids from ``C*R`` on (START, STOP, ...) are
    special. ``cells`` maps hidden states (b, D) to logits (b, C + S) over the C cells and the S
    special ids in their order; ``residuals`` maps (hidden (b, D), cell (b,)) to logits (b, R).
    """

    cells: HeadFn
    residuals: Callable[[Tensor, Tensor], Tensor]
    n_cells: int
    n_residuals: int

    @property
    def n_codes(self) -> int:
        return self.n_cells * self.n_residuals

    def head_ids(self, ids: Tensor) -> Tensor:
        """Token ids (any shape) -> head ids: the cell of a particle token, special ids shifted
        to follow the cells."""
        K, C = self.n_codes, self.n_cells
        return torch.where(
            ids >= K, ids - K + C, torch.div(ids, self.n_residuals, rounding_mode="floor")
        )

    def token_ids(self, choice: Tensor, residual: Tensor) -> Tensor:
        """Head ids ``choice`` and residual codes ``residual`` (same shape) -> token ids: ``cell *
        R + residual`` for a cell, the special id for the others (their ``residual`` unused)."""
        K, C = self.n_codes, self.n_cells
        return torch.where(choice >= C, choice - C + K, choice * self.n_residuals + residual)

    def draw(
        self,
        hid: Tensor,
        choice: Tensor,
        u: Tensor,
        cfg: SamplingConfig,
        guide: tuple[Callable[[Tensor, Tensor], Tensor], Tensor, Tensor] | None = None,
    ) -> Tensor:
        """Head ids ``choice`` (b,) drawn from :attr:`cells` -> token ids (b,): a drawn cell's
        residual code is drawn from :attr:`residuals` with uniforms ``u`` (b,). ``guide`` =
        (the contrast's residual head, its hidden states (b, D'), weights (b,)) applies guidance
        to that draw (see :func:`generate_tokens`)."""
        cell = choice < self.n_cells
        residual = torch.zeros_like(choice)  # (b,)
        if bool(cell.any()):
            logits = self.residuals(hid[cell], choice[cell]).float()  # (c, R)
            if guide is not None:
                other = guide[0](guide[1][cell], choice[cell]).float()  # (c, R)
                logits = logits + guide[2][cell, None] * (logits - other)
            if cfg.residual_temperature is not None:
                cfg = dataclasses.replace(cfg, temperature=cfg.residual_temperature)
            residual[cell] = choose_tokens(logits, u[cell], cfg)
        return self.token_ids(choice, residual)


@dataclass
class SampledTokens:
    """Sampled jets: ``ids`` (B, N) int64 particle tokens, ``PAD_ID`` after the end; ``mask`` (B, N)
    bool, True = real particle (always a prefix); ``stopped`` (B,) True where the jet sampled STOP
    (False: cut at ``max_length``); ``prefix`` (B, J): what a model drew before the particles, if
    anything (a next-token model's jet-token bins); ``draws`` (B,) and ``consistent`` (B,): with
    redrawn jets (a next-token model's consistent sampling), the draws each jet took and whether
    its last one was accepted; ``pt_scale`` (B,): a factor on each jet's particle pT that the
    decoding applies (consistent sampling's fit of the jet pT to its drawn bin)."""

    ids: Tensor
    mask: Tensor
    stopped: Tensor
    prefix: Tensor | None = None
    draws: Tensor | None = None
    consistent: Tensor | None = None
    pt_scale: Tensor | None = None

    @property
    def lengths(self) -> Tensor:
        return self.mask.sum(dim=1)


def seeded_generator(seed: int, *stream: int) -> torch.Generator:
    """A CPU generator seeded from ``(seed, *stream)`` through NumPy's SeedSequence, so that batch
    ``i`` of seed ``s`` and batch ``j`` of seed ``t`` never share a stream by accident."""
    state = np.random.SeedSequence([int(seed), *map(int, stream)]).generate_state(2, np.uint64)
    return torch.Generator(device="cpu").manual_seed(int(state[0] >> np.uint64(1)))


def filter_logits(logits: Tensor, top_k: int = 0, top_p: float = 1.0) -> Tensor:
    """Set logits (b, V) outside the top-k and outside the top-p nucleus to -inf.

    The nucleus is the smallest set of most probable tokens whose probability reaches ``top_p``
    (the most probable token is always kept). Ties at the k-th value, and at the nucleus's least
    probable value, are all kept: both filters are thresholds on the value, so the result does
    not depend on how a sort orders equal values.

    The nucleus needs the probabilities in descending order, not which token holds which: on the
    CPU they are sorted by NumPy (values only), 15-20x faster than ``torch.sort`` over an
    8194-token vocabulary, whose sort with indices cost ~6x a whole cached decoding step.
    """
    neg = -float("inf")
    V = logits.shape[-1]
    if 0 < top_k < V:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]  # (b, 1)
        logits = logits.masked_fill(logits < kth, neg)
    if top_p < 1.0:
        probs = logits.float().softmax(dim=-1)  # (b, V)
        if probs.device.type == "cpu":
            desc = torch.from_numpy(-np.sort(-probs.detach().numpy(), axis=-1))  # (b, V)
        else:
            desc = probs.sort(dim=-1, descending=True).values
        before = desc.cumsum(dim=-1) - desc  # mass of the more probable tokens, in sorted order
        n_keep = (before < top_p).sum(dim=-1).clamp(min=1)  # (b,): a prefix, as before grows
        least = desc.gather(1, (n_keep - 1)[:, None])  # (b, 1) the nucleus's smallest probability
        logits = logits.masked_fill(probs < least, neg)
    return logits


_BLOCK = 128  # vocabulary block of the two-level inverse CDF


def choose_tokens(logits: Tensor, u: Tensor, cfg: SamplingConfig) -> Tensor:
    """Pick one token per row of ``logits`` (b, V) (forbidden tokens already -inf) -> (b,) int64.

    ``u`` (b,) are uniforms in [0, 1): the token is the first whose cumulative probability exceeds
    ``u`` (inverse CDF). With ``temperature == 0`` the argmax is taken and ``u`` is ignored.

    The CDF is walked in two levels: the float64 cumulative sum of per-block probability sums
    (blocks of ``_BLOCK`` tokens, each summed pairwise in float32) finds the block, then a float64
    cumulative sum inside that block only finds the token. A float32 cumsum over ~8000 near-equal
    probabilities would accumulate enough round-off to let the ~1e-6 logit differences between the
    cached and uncached passes flip draws; the two levels keep that rare without a float64 softmax
    and cumsum over the whole vocabulary, which cost more than the 8194-way output projection itself
    at every cached decoding step.
    """
    logits = logits.float()
    if cfg.temperature == 0:
        return logits.argmax(dim=-1)
    if cfg.temperature != 1.0:
        logits = logits / cfg.temperature
    logits = filter_logits(logits, cfg.top_k, cfg.top_p)
    b, V = logits.shape
    # one fused kernel: on the CPU ~3x faster than max + subtract + exp of unnormalised weights,
    # although those would spare the division
    probs = logits.softmax(dim=-1)  # (b, V) float32, 0 where -inf
    nB = -(-V // _BLOCK)  # blocks; the last one may be short
    full = (V // _BLOCK) * _BLOCK
    sums = probs[:, :full].view(b, -1, _BLOCK).sum(dim=-1)  # (b, V // BLOCK), pairwise float32
    if full < V:
        sums = torch.cat([sums, probs[:, full:].sum(dim=-1, keepdim=True)], dim=1)  # (b, nB)
    block_cdf = sums.double().cumsum(dim=-1)  # (b, nB)
    target = u.to(block_cdf) * block_cdf[:, -1]  # (b,), scaled so round-off cannot overrun
    blk = torch.searchsorted(block_cdf, target[:, None], right=True).squeeze(-1)  # (b,)
    blk = blk.clamp(max=nB - 1)
    before = torch.where(blk > 0, block_cdf.gather(1, (blk - 1).clamp(min=0)[:, None])[:, 0], 0.0)
    slot = torch.arange(_BLOCK, device=blk.device)
    cols = blk[:, None] * _BLOCK + slot  # (b, BLOCK) vocabulary index of each slot
    inner = probs.gather(1, cols.clamp(max=V - 1)).double()  # (b, BLOCK)
    inner = inner.masked_fill(cols >= V, 0.0)
    inner_cdf = inner.cumsum(dim=-1)  # (b, BLOCK)
    pos = torch.searchsorted(inner_cdf, (target - before)[:, None], right=True).squeeze(-1)
    # round-off between a block's sum and its cumulative sum can overrun the block: take its last
    # allowed token then (the chosen block always has one: its sum is > 0)
    last = torch.where(inner > 0, slot, -1).max(dim=-1).values  # (b,)
    pos = torch.minimum(pos, last)
    return (blk * _BLOCK + pos).clamp(max=V - 1)  # (b,)


def _uniforms(generator: torch.Generator | None, B: int, device: torch.device) -> Tensor:
    dev = generator.device if generator is not None else device
    return torch.rand(B, generator=generator, device=dev).to(device)


def _levels(two: TwoLevelHead | None) -> tuple[int, int] | None:
    """(cells, residual codes) of a two-level head, None for a flat one."""
    return None if two is None else (two.n_cells, two.n_residuals)


def _last_hidden(
    backbone: Backbone,
    embed: EmbedFn,
    seq: Tensor,
    labels: Tensor | None,
    step: int,
    cache: KVCache | None,
) -> Tensor:
    """Hidden state (b, D) at the newest position: with a ``cache`` the new tokens ``seq`` (b, 1)
    only, at position ``step``; without one the whole prefix ``seq`` (b, T) again."""
    if cache is not None:
        return backbone.encode(embed(seq, labels, step), None, cache=cache)[:, -1]
    return backbone.encode(embed(seq, labels, 0), None)[:, -1]


def generate_tokens(
    backbone: Backbone,
    head: HeadFn | TwoLevelHead,
    embed: EmbedFn,
    *,
    n_jets: int,
    start_id: int,
    stop_id: int,
    config: SamplingConfig | None = None,
    labels: Tensor | None = None,
    forbidden_ids: Sequence[int] = (),
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    logit_bias: LogitBiasFn | None = None,
    prefix_steps: int = 0,
    guidance: Tensor | None = None,
    guide_labels: Tensor | None = None,
    guide_model: tuple[Backbone, HeadFn | TwoLevelHead, EmbedFn] | None = None,
) -> SampledTokens:
    """Sample ``n_jets`` token sequences ``START t_1 ... t_n [STOP]`` (see the module docstring).

    ``labels`` (B,) are passed to ``embed`` (class conditioning), restricted to the unfinished jets.
    ``forbidden_ids`` are never sampled (START always is). A seeded ``generator`` (CPU or on the
    model's device) makes the result reproducible for the same seed, batch size and settings.
    ``logit_bias`` adds prefix-dependent terms to the logits (see the module docstring). The first
    ``prefix_steps`` draws use ``config.prefix_temperature`` (when set) instead of its temperature.
    A :class:`TwoLevelHead` draws a cell (or special id), then the cell's residual code.
    ``guidance`` (B,) weights switch on guidance (see the module docstring) against the same model
    under ``guide_labels`` (B,), or against ``guide_model`` = (backbone, head, embed) of another
    model over the same vocabulary, under ``guide_labels`` or else ``labels``.
    """
    cfg = config or SamplingConfig()
    prefix_cfg = cfg
    if cfg.prefix_temperature is not None:
        prefix_cfg = dataclasses.replace(cfg, temperature=cfg.prefix_temperature)
    if not backbone.config.causal:
        raise InputError("a causal backbone", field="backbone.causal", found=False)
    if n_jets < 0:
        raise InputError("n_jets >= 0", field="n_jets", found=n_jets)
    if device is None:
        device = next(backbone.parameters()).device
    device = torch.device(device)
    B, N = n_jets, cfg.max_length
    ids = torch.full((B, N), PAD_ID, dtype=torch.long, device=device)
    stopped = torch.zeros(B, dtype=torch.bool, device=device)
    if B == 0:
        return SampledTokens(ids, ids >= 0, stopped)
    if labels is not None:
        labels = torch.as_tensor(labels, device=device).long()
        if labels.shape != (B,):
            raise InputError(f"labels of shape ({B},)", field="labels", found=tuple(labels.shape))
    guided = guidance is not None
    if not guided and (guide_labels is not None or guide_model is not None):
        raise InputError(
            "guidance weights with guide_labels / guide_model", field="guidance", found=None
        )
    if guided:
        weight = torch.as_tensor(guidance, device=device, dtype=torch.float32)
        if guide_labels is not None:
            guide_labels = torch.as_tensor(guide_labels, device=device).long()
        if guide_model is None and (labels is None or guide_labels is None):
            raise InputError(
                "labels and guide_labels for class guidance (or a guide_model)",
                field="guide_labels",
                found=None,
            )
        shapes = [tuple(weight.shape)] + ([] if guide_labels is None else [guide_labels.shape])
        if any(tuple(sh) != (B,) for sh in shapes):
            raise InputError(
                f"guidance and guide_labels of shape ({B},)", field="guidance", found=shapes
            )
        if guide_labels is None:
            guide_labels = labels
    never = torch.tensor(sorted({start_id, *forbidden_ids}), dtype=torch.long, device=device)
    two = head if isinstance(head, TwoLevelHead) else None
    head_stop = stop_id
    if two is not None:  # masks act on the cells-and-specials logits
        if bool((never < two.n_codes).any()):
            raise InputError(
                f"special ids (>= {two.n_codes}) only with a two-level head",
                field="forbidden_ids",
                found=sorted({start_id, *forbidden_ids}),
            )
        never = two.head_ids(never)
        head_stop = int(two.head_ids(torch.tensor(stop_id)))
        head = two.cells
    # the contrast's pieces: this model's own (class guidance) or the guide model's
    g_head: HeadFn = head
    g_residuals = None if two is None else two.residuals
    if guide_model is not None:
        g_backbone, g_out, g_embed = guide_model
        g_two = g_out if isinstance(g_out, TwoLevelHead) else None
        if _levels(g_two) != _levels(two):
            raise InputError(
                "a guide_model with the same vocabulary (and kind of head)",
                field="guide_model",
                found=type(g_out).__name__,
            )
        g_head = g_out if g_two is None else g_two.cells
        g_residuals = None if g_two is None else g_two.residuals
    same = guided and guide_model is None  # the contrast shares this model's batch and cache

    # inference mode: no autograd bookkeeping on the many small ops of each step; ids and stopped
    # were made outside it, so they stay ordinary tensors
    with torch.inference_mode():
        if cfg.head_dtype != "float32":
            head = projection_in_dtype(head, getattr(torch, cfg.head_dtype))  # type: ignore[arg-type]
            g_head = projection_in_dtype(g_head, getattr(torch, cfg.head_dtype))  # type: ignore[arg-type]
        rows = torch.arange(B, device=device)  # original index of each unfinished jet
        seq = torch.full((B, 1), start_id, dtype=torch.long, device=device)  # (b, T)
        cache = KVCache() if cfg.use_cache else None
        g_cache = KVCache() if cfg.use_cache and guide_model is not None else None
        # the contrast runs only for the jets it changes (w != 0), in their order within rows
        g_on = weight != 0 if guided else torch.zeros(B, dtype=torch.bool, device=device)
        for step in range(N):
            lab = None if labels is None else labels[rows]
            gsel = g_on[rows]  # (b,) the unfinished jets that are guided
            g_rows = rows[gsel]  # (g,)
            glab = None if guide_labels is None else guide_labels[g_rows]
            inp, both = seq, lab
            if same:  # the contrast rows follow the jets' own rows in one batch (and cache)
                inp, both = torch.cat([seq, seq[gsel]]), torch.cat([lab, glab])
            hid = _last_hidden(backbone, embed, inp, both, step, cache)  # (b + g, D) if same
            b = seq.shape[0]
            hid_g = None  # (g, D'): the contrast's hidden states for the guided jets
            if same:
                hid, hid_g = hid[:b], hid[b:]
            elif guided and bool(gsel.any()):
                hid_g = _last_hidden(g_backbone, g_embed, seq[gsel], glab, step, g_cache)
            logits = head(hid).float()  # (b, V)
            guide = None
            if hid_g is not None and hid_g.shape[0] > 0:
                w = weight[g_rows, None]  # (g, 1)
                logits[gsel] = logits[gsel] + w * (logits[gsel] - g_head(hid_g).float())
                # the residual draw takes (b, D') states; w = 0 rows ignore theirs
                hid_all = hid_g.new_zeros(b, hid_g.shape[1])
                hid_all[gsel] = hid_g
                guide = (g_residuals, hid_all, weight[rows])
            if logit_bias is not None:
                logits = logits + logit_bias(hid, ids[rows, :step]).float()
            logits[:, never] = -float("inf")
            if step < cfg.min_length:
                logits[:, head_stop] = -float("inf")
            # drawn for all B jets: the random stream does not depend on b
            u = _uniforms(generator, B, device)[rows]
            step_cfg = prefix_cfg if step < prefix_steps else cfg
            nxt = choose_tokens(logits, u, step_cfg)  # (b,)
            if two is not None:
                nxt = two.draw(hid, nxt, _uniforms(generator, B, device)[rows], step_cfg, guide)
            done = nxt == stop_id
            keep = ~done
            ids[rows[keep], step] = nxt[keep]
            stopped[rows[done]] = True
            if not bool(keep.any()):
                break
            if bool(done.any()):
                index = keep.nonzero().squeeze(-1)
                # the kept guided jets' places in the contrast block (g,) of the caches
                g_index = (torch.cumsum(gsel.long(), 0) - 1)[index[gsel[index]]]
                rows, seq, nxt = rows[index], seq[index], nxt[index]
                if cache is not None:
                    cache.reorder(torch.cat([index, g_index + len(keep)]) if same else index)
                if g_cache is not None:
                    g_cache.reorder(g_index)
            # the cache holds the prefix, so the cached path only keeps the newest token
            seq = nxt[:, None] if cache is not None else torch.cat([seq, nxt[:, None]], dim=1)
    return SampledTokens(ids=ids, mask=ids >= 0, stopped=stopped)
