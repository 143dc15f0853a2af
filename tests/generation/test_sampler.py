"""The autoregressive sampler: KV cache == full-prefix reruns, filters, stop/max length, seeding."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from jetfm.core.errors import ConfigError, InputError
from jetfm.data.features import Preprocessing, compute_features
from jetfm.evaluate.generative import jagged_to_padded
from jetfm.models.sampler import (
    SamplingConfig,
    TwoLevelHead,
    choose_tokens,
    filter_logits,
    generate_tokens,
    seeded_generator,
)
from tests.conftest import make_toy_jets

from .conftest import CODEBOOK, make_task


def _two_level_tokenizer():
    """A real two-level k-means tokenizer (64 cells x 8 residual codes) on toy jets."""
    from jetfm.tokenizers import KMeansTokenizer, TokenizerConfig

    jets = make_toy_jets(200, seed=3)
    pre = Preprocessing.for_set("kin3", max_particles=64).fit(jets)
    x = torch.as_tensor(pre.transform(compute_features(jets, pre.feature_names)))
    cfg = TokenizerConfig(type="kmeans", codebook_size=64, kmeans_residual_codes=8)
    return KMeansTokenizer(cfg, preprocessing=pre.to_dict()).fit(x, seed=0, iters=5).eval()


def _draw(task, n=24, seed=0, labels=None, **kw):
    cfg = SamplingConfig(**{"max_length": 20, **kw})
    return task.sample_tokens(n, cfg, labels=labels, generator=seeded_generator(seed))


@pytest.mark.parametrize(
    "settings",
    [
        {"temperature": 0.0},
        {"temperature": 1.0},
        {"temperature": 1.3, "top_k": 5},
        {"temperature": 0.8, "top_p": 0.7},
    ],
    ids=["greedy", "sampled", "top_k", "top_p"],
)
@pytest.mark.parametrize(
    "model",
    [
        {"n_classes": 2, "n_registers": 2},
        {"input_kind": "hybrid"},
        {"input_kind": "hybrid", "hybrid_features": "decoded", "geometric_head": True},
        {"position_embedding": True, "max_length": 20},
        {"neighbour_prior": True, "geometric_head": True, "n_classes": 2},
        {
            "input_kind": "hybrid",
            "hybrid_features": "decoded",
            "geometric_head": True,
            "fourier_input": True,
        },
    ],
    ids=[
        "conditional+registers",
        "hybrid",
        "decoded+geometric",
        "positions",
        "neighbour",
        "fourier",
    ],
)
def test_cached_equals_uncached(kmeans_tokenizer, settings, model) -> None:
    """Same seed: the KV-cache path and the rerun-the-whole-prefix path give identical jets."""
    task = make_task(kmeans_tokenizer, **model)
    labels = torch.tensor([0, 1] * 12) if model.get("n_classes") else None
    a = _draw(task, labels=labels, use_cache=True, **settings)
    b = _draw(task, labels=labels, use_cache=False, **settings)
    assert torch.equal(a.ids, b.ids) and torch.equal(a.mask, b.mask)
    assert torch.equal(a.stopped, b.stopped)
    if settings["temperature"] > 0 or labels is not None:
        # the untrained model stops at varied lengths, so jets really left the batch mid-way
        assert len(set(a.lengths.tolist())) >= 2, a.lengths


def test_position_embedding_bounds_the_length(kmeans_tokenizer) -> None:
    task = make_task(kmeans_tokenizer, position_embedding=True, max_length=10)
    assert _draw(task, max_length=10).mask.shape == (24, 10)
    with pytest.raises(InputError, match="max_length"):
        _draw(task, max_length=11)


def test_output_layout_and_tokens(kmeans_tokenizer) -> None:
    task = make_task(kmeans_tokenizer, n_classes=2)
    out = _draw(task, labels=torch.zeros(24, dtype=torch.long))
    n = out.mask.sum(1)
    assert torch.equal(out.mask, torch.arange(20)[None] < n[:, None])  # real particles are a prefix
    assert (n >= 1).all()  # min_length 1: no empty jet
    assert ((out.ids[out.mask] >= 0) & (out.ids[out.mask] < CODEBOOK)).all()  # no START/STOP
    assert (out.ids[~out.mask] == -1).all()
    assert torch.equal(out.stopped, n < 20) or bool(out.stopped[n < 20].all())


def test_top_k_one_is_greedy(kmeans_tokenizer) -> None:
    task = make_task(kmeans_tokenizer, n_registers=1)
    greedy = _draw(task, temperature=0.0)
    k1 = _draw(task, temperature=1.0, top_k=1, seed=5)
    p0 = _draw(task, temperature=1.0, top_p=1e-6, seed=6)
    assert torch.equal(greedy.ids, k1.ids) and torch.equal(greedy.ids, p0.ids)
    # greedy decoding ignores the seed
    assert torch.equal(greedy.ids, _draw(task, temperature=0.0, seed=99).ids)


def test_filter_logits_hand_computed() -> None:
    p = torch.tensor([[0.5, 0.05, 0.3, 0.15]])
    logits = p.log()
    k2 = filter_logits(logits, top_k=2)
    assert torch.isfinite(k2).tolist() == [[True, False, True, False]]
    # nucleus: mass before each token in sorted order is 0, 0.5, 0.8, 0.95 -> keep while < top_p
    assert torch.isfinite(filter_logits(logits, top_p=0.8)).tolist() == [[True, False, True, False]]
    assert torch.isfinite(filter_logits(logits, top_p=0.81)).tolist() == [[True, False, True, True]]
    assert torch.isfinite(filter_logits(logits, top_p=0.3)).tolist() == [
        [True, False, False, False]
    ]
    assert torch.equal(filter_logits(logits), logits)


def test_nucleus_matches_a_per_row_reference_and_keeps_ties() -> None:
    """The value-threshold nucleus equals the definition worked row by row in float64 (random
    logits, so no ties), and keeps every token tied with its least probable member."""
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(6, 300, generator=g) * 2.0
    logits[0, :250] = -float("inf")  # a row with a small support
    for top_p in (0.05, 0.5, 0.9, 0.999):
        got = torch.isfinite(filter_logits(logits, top_p=top_p))
        for row, keep in zip(logits.double(), got, strict=True):
            probs = row.softmax(dim=-1)
            order = probs.argsort(descending=True)
            before = probs[order].cumsum(dim=0) - probs[order]
            n = max(1, int((before < top_p).sum()))
            expected = torch.zeros_like(keep)
            expected[order[:n]] = True
            assert torch.equal(keep, expected), top_p
    tied = torch.tensor([[0.4, 0.2, 0.2, 0.2]]).log()  # the nucleus at 0.5 ends inside the tie
    assert torch.isfinite(filter_logits(tied, top_p=0.5)).all()
    # outside the sampler's inference mode too (logits that require grad, an empty batch)
    with_grad = logits.clone().requires_grad_()
    assert torch.equal(
        torch.isfinite(filter_logits(with_grad, top_p=0.5)),
        torch.isfinite(filter_logits(logits, top_p=0.5)),
    )
    assert filter_logits(logits[:0], top_p=0.5).shape == (0, 300)


def test_choose_tokens_restricts_support_and_matches_probabilities() -> None:
    """Inverse-CDF draws follow the filtered, renormalised distribution and never leave its support."""
    p = torch.tensor([0.4, 0.05, 0.25, 0.2, 0.1])
    n = 20000
    logits = p.log().expand(n, -1).clone()
    u = torch.rand(n, generator=torch.Generator().manual_seed(0))
    for cfg, support in (
        (SamplingConfig(top_k=3), [0, 2, 3]),
        (SamplingConfig(top_p=0.6), [0, 2]),
        (SamplingConfig(), [0, 1, 2, 3, 4]),
    ):
        idx = choose_tokens(logits, u, cfg)
        freq = torch.bincount(idx, minlength=5).float() / n
        expect = torch.zeros(5)
        expect[support] = p[support] / p[support].sum()
        assert set(idx.unique().tolist()) == set(support)
        assert torch.allclose(freq, expect, atol=4 * math.sqrt(0.25 / n)), (freq, expect)
    # temperature sharpens: at T = 0.5 probabilities go as p^2
    idx = choose_tokens(logits, u, SamplingConfig(temperature=0.5))
    p2 = p**2 / (p**2).sum()
    assert torch.allclose(torch.bincount(idx, minlength=5).float() / n, p2, atol=0.015)


def test_two_level_head_draws_cell_then_residual() -> None:
    """A two-level draw follows p(cell) p(residual | cell), maps special ids back past the K
    tokens, and at temperature 0 takes the argmax cell's argmax residual."""
    C, R = 3, 2  # tokens 0..5, then START 6, STOP 7; head ids: cells 0..2, START 3, STOP 4
    p_head = torch.tensor([0.3, 0.2, 0.1, 0.0, 0.4])
    p_res = torch.tensor([[0.9, 0.1], [0.5, 0.5], [0.2, 0.8]])

    def cells(h):
        return p_head.clamp_min(1e-30).log().expand(h.shape[0], -1)

    def residuals(h, cell):
        return p_res[cell].log()

    two = TwoLevelHead(cells, residuals, C, R)
    assert two.head_ids(torch.tensor([0, 1, 5, 6, 7])).tolist() == [0, 0, 2, 3, 4]
    n = 40000
    g = torch.Generator().manual_seed(0)
    hid = torch.zeros(n, 4)
    choice = choose_tokens(cells(hid), torch.rand(n, generator=g), SamplingConfig())
    tokens = two.draw(hid, choice, torch.rand(n, generator=g), SamplingConfig())
    freq = torch.bincount(tokens, minlength=8).float() / n
    expect = torch.cat([(p_head[:C, None] * p_res).reshape(-1), p_head[C:]])
    assert torch.allclose(freq, expect, atol=4 * math.sqrt(0.25 / n)), (freq, expect)
    greedy = SamplingConfig(temperature=0)
    first = two.draw(hid[:2], torch.tensor([2, 4]), torch.rand(2), greedy)
    assert first.tolist() == [2 * R + 1, 7]  # cell 2's likelier residual; STOP


def test_residual_temperature_acts_on_the_residual_draw_only() -> None:
    """``residual_temperature`` sharpens p(residual | cell) alone: the residual codes follow
    p^(1/T_r) (renormalised); unset, they take the draw's own temperature."""
    C, R = 2, 3
    p_res = torch.tensor([[0.5, 0.3, 0.2], [0.2, 0.2, 0.6]])

    def residuals(h, cell):
        return p_res[cell].log()

    two = TwoLevelHead(lambda h: h.new_zeros(h.shape[0], C + 2), residuals, C, R)
    n = 40000
    g = torch.Generator().manual_seed(2)
    choice = torch.arange(n) % C
    hid = torch.zeros(n, 2)
    for t_res, power in ((0.5, 2.0), (None, 1.0)):
        cfg = SamplingConfig(temperature=1.0, residual_temperature=t_res)
        tokens = two.draw(hid, choice, torch.rand(n, generator=g), cfg)
        for c in range(C):
            freq = torch.bincount(tokens[choice == c] - c * R, minlength=R).float() / (n // C)
            sharp = p_res[c] ** power
            assert torch.allclose(freq, sharp / sharp.sum(), atol=4 * math.sqrt(0.25 / (n // C)))
    greedy = two.draw(hid[:2], choice[:2], torch.rand(2), SamplingConfig(residual_temperature=0))
    assert greedy.tolist() == [0, R + 2]  # each cell's likeliest residual code
    with pytest.raises(ConfigError, match="residual_temperature"):
        SamplingConfig(residual_temperature=-1.0)


def test_residual_temperature_needs_two_level_tokens(ntp_checkpoint, tmp_path) -> None:
    """`jetfm sample` refuses a residual temperature for a model with one draw per token."""
    from jetfm.evaluate.sampling import sample

    with pytest.raises(ConfigError, match="residual_temperature"):
        sample(ntp_checkpoint, 4, tmp_path / "g", residual_temperature=0.7)


def test_two_level_guidance_tilts_the_residual_draw() -> None:
    """Class guidance on a two-level head's second draw: residual codes follow p^(1+w) / q^w
    (renormalised), with p the jet's own and q the contrast class's conditional."""
    C, R, w = 2, 3, 0.5
    p_res = torch.tensor([[0.5, 0.3, 0.2], [0.2, 0.2, 0.6]])
    q_res = torch.tensor([[0.2, 0.3, 0.5], [0.2, 0.6, 0.2]])

    def residuals(h, cell):  # h[:, 0] = 0: the jet's own label, 1: the contrast
        return torch.where(h[:, :1] > 0, q_res[cell].log(), p_res[cell].log())

    two = TwoLevelHead(lambda h: h.new_zeros(h.shape[0], C + 2), residuals, C, R)
    n = 40000
    g = torch.Generator().manual_seed(1)
    choice = torch.arange(n) % C
    own, other = torch.zeros(n, 2), torch.ones(n, 2)
    guide = (residuals, other, torch.full((n,), w))
    tokens = two.draw(own, choice, torch.rand(n, generator=g), SamplingConfig(), guide)
    for c in range(C):
        freq = torch.bincount(tokens[choice == c] - c * R, minlength=R).float() / (n // C)
        tilt = p_res[c] ** (1 + w) / q_res[c] ** w
        assert torch.allclose(freq, tilt / tilt.sum(), atol=4 * math.sqrt(0.25 / (n // C)))
    plain = two.draw(own, choice, torch.rand(n, generator=g), SamplingConfig(), None)
    assert not torch.equal(plain, tokens)


@pytest.mark.parametrize("factorised", [False, True], ids=["flat", "two-level"])
def test_class_guidance_plumbing(kmeans_tokenizer, factorised) -> None:
    """Guidance runs the contrast class in the same batch and cache: cached == uncached; weight 0,
    or the jet's own class as the contrast, give exactly the unguided jets; a real contrast
    changes them."""
    if factorised:
        task = make_task(
            _two_level_tokenizer(), n_classes=2, factorised_head=True, geometric_head=True
        )
    else:
        task = make_task(kmeans_tokenizer, n_classes=2, n_registers=2)
    n = 24
    labels = torch.tensor([0, 1] * (n // 2))

    def draw(guide_labels=None, guidance=None, use_cache=True):
        cfg = SamplingConfig(max_length=20, use_cache=use_cache)
        return task.sample_tokens(
            n,
            cfg,
            labels=labels,
            generator=seeded_generator(0),
            guide_labels=guide_labels,
            guidance=guidance,
        )

    plain = draw()
    weight = torch.full((n,), 1.5)
    guided = draw(1 - labels, weight)
    again = draw(1 - labels, weight, use_cache=False)
    assert torch.equal(guided.ids, again.ids) and torch.equal(guided.mask, again.mask)
    assert not torch.equal(guided.ids, plain.ids)
    for same in (draw(labels, weight), draw(1 - labels, torch.zeros(n))):
        assert torch.equal(same.ids, plain.ids) and torch.equal(same.stopped, plain.stopped)
    # per-jet weights: the unguided jets (w = 0) are those of the plain draw, the guided ones
    # those of the all-guided draw, although the contrast now runs for the guided jets only
    half = torch.where(labels == 1, 1.5, 0.0)
    mixed = draw(1 - labels, half)
    assert torch.equal(mixed.ids[labels == 0], plain.ids[labels == 0])
    assert torch.equal(mixed.ids[labels == 1], guided.ids[labels == 1])
    assert torch.equal(mixed.ids, draw(1 - labels, half, use_cache=False).ids)
    with pytest.raises(InputError, match="guidance"):
        task.sample_tokens(n, SamplingConfig(), labels=labels, guidance=weight)


def test_guidance_runs_the_contrast_for_guided_jets_only(kmeans_tokenizer, monkeypatch) -> None:
    """With class guidance on half the jets, each step runs the backbone on b + g rows (own jets,
    then the guided jets' contrast), not 2b: jets with w = 0 cost no extra work."""
    task = make_task(kmeans_tokenizer, n_classes=2)
    n = 16
    labels = torch.tensor([0, 1] * (n // 2))
    rows: list[int] = []
    encode = task.backbone.encode

    def counting(x, *args, **kwargs):
        rows.append(x.shape[0])
        return encode(x, *args, **kwargs)

    monkeypatch.setattr(task.backbone, "encode", counting)
    task.sample_tokens(
        n,
        SamplingConfig(max_length=12, min_length=12),  # no jet stops: b = n at every step
        labels=labels,
        generator=seeded_generator(0),
        guide_labels=1 - labels,
        guidance=torch.where(labels == 1, 2.0, 0.0),
    )
    assert rows and set(rows) == {n + n // 2}


def test_class_guidance_settings() -> None:
    """`jetfm sample`'s guidance settings -> per-class weights and contrast classes."""
    from jetfm.evaluate.sampling import class_guidance

    classes = ["QCD", "Tbqq"]
    assert class_guidance(0.0, None, classes, 2) is None
    assert class_guidance({"Tbqq": 0.0}, None, classes, 2) is None
    w, c = class_guidance({"Tbqq": 0.5}, None, classes, 2)
    assert w.tolist() == [0.0, 0.5] and c.tolist() == [1, 0]
    w, c = class_guidance(0.3, "QCD", ["QCD", "Tbqq", "Wqq"], 3)
    assert np.allclose(w, 0.3) and c.tolist() == [0, 0, 0]
    with pytest.raises(ConfigError, match="class names"):
        class_guidance({"top": 0.5}, None, classes, 2)
    with pytest.raises(ConfigError, match="contrast class"):
        class_guidance(0.5, None, ["a", "b", "c"], 3)
    with pytest.raises(ConfigError, match="contrast class"):
        class_guidance(0.5, None, ["generated"], 0)
    # another model as the contrast: each jet's own class (None), any number of classes
    w, c = class_guidance(0.5, None, ["generated"], 0, guide_model=True)
    assert w.tolist() == [0.5] and c is None
    w, c = class_guidance({"b": 1.0}, None, ["a", "b", "c"], 3, guide_model=True)
    assert w.tolist() == [0.0, 1.0, 0.0] and c is None


def test_guide_model_plumbing(kmeans_tokenizer) -> None:
    """Guidance by another model (autoguidance): cached == uncached; the model itself as its
    guide gives the unguided jets; a different guide changes them; a guide over other tokens or
    classes is refused."""
    task = make_task(kmeans_tokenizer, n_classes=2, seed=0)
    weaker = make_task(kmeans_tokenizer, n_classes=2, seed=5)
    n = 24
    labels = torch.tensor([0, 1] * (n // 2))

    def draw(guide, w=1.0, use_cache=True):
        return task.sample_tokens(
            n,
            SamplingConfig(max_length=20, use_cache=use_cache),
            labels=labels,
            generator=seeded_generator(0),
            guidance=torch.full((n,), w) if isinstance(w, float) else w,
            guide_task=guide,
        )

    plain = task.sample_tokens(
        n, SamplingConfig(max_length=20), labels=labels, generator=seeded_generator(0)
    )
    a, b = draw(weaker), draw(weaker, use_cache=False)
    assert torch.equal(a.ids, b.ids) and torch.equal(a.stopped, b.stopped)
    assert not torch.equal(a.ids, plain.ids)
    assert torch.equal(draw(task).ids, plain.ids)  # l + w (l - l) = l
    assert torch.equal(draw(weaker, w=0.0).ids, plain.ids)
    half = torch.where(labels == 1, 1.0, 0.0)  # only class 1 guided: the guide runs for it only
    mixed = draw(weaker, w=half)
    assert torch.equal(mixed.ids[labels == 0], plain.ids[labels == 0])
    assert torch.equal(mixed.ids[labels == 1], a.ids[labels == 1])
    assert torch.equal(mixed.ids, draw(weaker, w=half, use_cache=False).ids)
    for other in (make_task(kmeans_tokenizer, n_classes=3), make_task(kmeans_tokenizer)):
        with pytest.raises(InputError, match="guide model"):
            draw(other)


def test_two_level_task_samples_and_refuses_particle_forbidden_ids() -> None:
    """generate_tokens with a factorised NTP model on a real two-level k-means tokenizer:
    cached == uncached, particle tokens from every part of the vocabulary, and a forbidden
    particle token (which would forbid its whole cell) refused."""
    task = make_task(_two_level_tokenizer(), factorised_head=True, geometric_head=True)
    a = _draw(task, n=64, use_cache=True)
    b = _draw(task, n=64, use_cache=False)
    assert torch.equal(a.ids, b.ids) and torch.equal(a.mask, b.mask)
    drawn = a.ids[a.mask]
    assert int(drawn.min()) >= 0 and int(drawn.max()) < 64
    assert len(set((drawn % 8).tolist())) > 4 and len(set((drawn // 8).tolist())) > 4
    with pytest.raises(InputError, match="forbidden_ids"):
        generate_tokens(
            task.backbone,
            task.output_head(),
            task.embed_tokens,
            n_jets=2,
            start_id=task.start_id,
            stop_id=task.stop_id,
            forbidden_ids=[3],
        )


def test_stop_token_ends_sequences(kmeans_tokenizer) -> None:
    task = make_task(kmeans_tokenizer)
    with torch.no_grad():
        task.head.proj.bias[task.stop_id] = 50.0  # STOP as soon as it is allowed
    out = _draw(task)
    assert out.lengths.tolist() == [1] * 24 and out.stopped.all()
    assert (out.ids[:, 1:] == -1).all()
    out3 = _draw(task, min_length=3)
    assert out3.lengths.tolist() == [3] * 24 and out3.stopped.all()
    uncached = _draw(task, min_length=3, use_cache=False)
    assert torch.equal(out3.ids, uncached.ids)


def test_max_length_respected(kmeans_tokenizer) -> None:
    task = make_task(kmeans_tokenizer)
    with torch.no_grad():
        task.head.proj.bias[task.stop_id] = -50.0  # never stop by itself
        task.head.proj.bias[task.start_id] = 50.0  # START is forbidden however likely
    out = _draw(task, max_length=7)
    assert out.ids.shape == (24, 7)
    assert out.lengths.tolist() == [7] * 24 and not out.stopped.any()
    assert (out.ids < CODEBOOK).all()


def test_seeded_reproducibility(kmeans_tokenizer) -> None:
    task = make_task(kmeans_tokenizer, n_classes=2)
    lab = torch.ones(24, dtype=torch.long)
    a = _draw(task, labels=lab, seed=3)
    b = _draw(task, labels=lab, seed=3)
    c = _draw(task, labels=lab, seed=4)
    assert torch.equal(a.ids, b.ids)
    assert not torch.equal(a.ids, c.ids)
    # class conditioning changes what is drawn with the same random numbers
    assert not torch.equal(a.ids, _draw(task, labels=torch.zeros(24, dtype=torch.long), seed=3).ids)
    # distinct streams for distinct (seed, batch) pairs
    g = [seeded_generator(s, i).initial_seed() for s in range(3) for i in range(3)]
    assert len(set(g)) == 9


@pytest.mark.parametrize(
    "model",
    [{"geometric_head": True, "input_kind": "hybrid", "hybrid_features": "decoded"}, {}],
    ids=["geometric", "plain"],
)
def test_bfloat16_head(kmeans_tokenizer, model) -> None:
    """head_dtype bfloat16: logits within bfloat16 rounding of float32's, the same jets with and
    without the cache, and a plain callable head is refused (its projection is unknown)."""
    from jetfm.models.heads import projection_in_dtype
    from jetfm.models.sampler import generate_tokens

    task = make_task(kmeans_tokenizer, **model)
    hid = torch.randn(16, 32)
    with torch.no_grad():
        full = task.head(hid)
        low = projection_in_dtype(task.head, torch.bfloat16)(hid)
    assert low.dtype == torch.float32 and full.shape == low.shape
    # inputs and weight rounded to 8 significant bits: |error| <~ 2^-8 x sum_d |h_d w_kd|
    scale = (hid.abs() @ task.head.proj.weight.detach().abs().T).max()
    assert float((low - full).abs().max()) < 2**-7 * float(scale)
    assert not torch.equal(low, full)
    a = _draw(task, use_cache=True, head_dtype="bfloat16")
    b = _draw(task, use_cache=False, head_dtype="bfloat16")
    assert torch.equal(a.ids, b.ids) and torch.equal(a.stopped, b.stopped)
    with pytest.raises(ConfigError, match="head_dtype"):
        generate_tokens(
            task.backbone,
            lambda h: task.head(h),
            task.embed_tokens,
            n_jets=2,
            start_id=task.start_id,
            stop_id=task.stop_id,
            config=SamplingConfig(max_length=3, head_dtype="bfloat16"),
        )


@pytest.mark.parametrize(
    "model",
    [
        {"n_classes": 2, "position_embedding": True, "max_length": 20},
        {
            "input_kind": "hybrid",
            "hybrid_features": "decoded",
            "geometric_head": True,
            "fourier_input": True,
            "n_classes": 2,
        },
    ],
    ids=["tokens", "hybrid+fourier"],
)
def test_sampling_path_matches_training_forward(kmeans_tokenizer, model) -> None:
    """The hidden state the sampler computes for a prefix (embed_tokens + encode of the prefix
    alone) equals the training forward's at that position: sampling draws from the distribution
    the loss trained, for every input option."""
    task = make_task(kmeans_tokenizer, **model)
    jets = make_toy_jets(8, seed=11)
    pre = Preprocessing.from_dict(kmeans_tokenizer.preprocessing)
    feats = pre.transform(compute_features(jets, pre.feature_names).astype(np.float64))
    x, m = jagged_to_padded(feats, jets.offsets, 12)
    x, m = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(m)
    labels = torch.arange(8) % 2
    with torch.no_grad():
        seq = task.build_sequences(x, m)
        h = task._embed(seq["inputs"], seq.get("x_in"), labels, 0)
        hid = task.backbone.encode(h, seq["input_mask"])  # (B, L, D)
        for t in (0, 1, 5):
            prefix = seq["inputs"][:, : t + 1]
            h_s = task.embed_tokens(prefix, labels, 0)
            hid_s = task.backbone.encode(h_s, None)[:, -1]
            torch.testing.assert_close(hid_s, hid[:, t], rtol=1e-4, atol=1e-5)


def test_prefix_temperature_applies_to_the_first_steps_only(kmeans_tokenizer) -> None:
    """Greedy particles after two drawn prefix tokens: jets that share their first two tokens are
    identical throughout, different prefixes occur, and cache / no cache still agree."""
    from jetfm.models.sampler import generate_tokens

    task = make_task(kmeans_tokenizer, position_embedding=True, max_length=20).eval()

    def draw(use_cache: bool = True, **kw):
        cfg = SamplingConfig(max_length=20, min_length=3, use_cache=use_cache, **kw)
        return generate_tokens(
            task.backbone,
            task.head,
            task.embed_tokens,
            n_jets=64,
            start_id=task.start_id,
            stop_id=task.stop_id,
            config=cfg,
            generator=seeded_generator(0),
            prefix_steps=2,
        )

    greedy = draw(temperature=0.0)
    assert (greedy.ids == greedy.ids[:1]).all()  # no randomness at all
    mixed = draw(temperature=0.0, prefix_temperature=1.0)
    heads = {tuple(r[:2].tolist()) for r in mixed.ids}
    assert len(heads) > 1
    for h in heads:
        rows = mixed.ids[[tuple(r[:2].tolist()) == h for r in mixed.ids]]
        assert (rows == rows[:1]).all()
    assert torch.equal(
        draw(temperature=0.0, prefix_temperature=1.0, use_cache=False).ids, mixed.ids
    )
    # a prefix temperature equal to the temperature changes nothing
    a, b = draw(temperature=0.7), draw(temperature=0.7, prefix_temperature=0.7)
    assert torch.equal(a.ids, b.ids)
    with pytest.raises(ConfigError, match="prefix_temperature"):
        SamplingConfig(prefix_temperature=-0.5)


def test_bad_settings(kmeans_tokenizer) -> None:
    with pytest.raises(ConfigError, match="top_p"):
        SamplingConfig(top_p=0.0)
    with pytest.raises(ConfigError, match="temperature"):
        SamplingConfig(temperature=-1.0)
    with pytest.raises(ConfigError, match="min_length"):
        SamplingConfig(max_length=4, min_length=5)
    with pytest.raises(ConfigError, match="top_k"):
        SamplingConfig(top_k=-2)
    with pytest.raises(ConfigError, match="head_dtype"):
        SamplingConfig(head_dtype="float16")
    task = make_task(kmeans_tokenizer, n_classes=2)
    with pytest.raises(InputError, match="labels"):
        _draw(task)  # a conditional model needs labels
    with pytest.raises(InputError, match="label"):
        _draw(task, labels=torch.full((24,), 2))
    with pytest.raises(InputError, match="labels"):
        _draw(make_task(kmeans_tokenizer), labels=torch.zeros(24, dtype=torch.long))


def test_two_level_cdf_matches_full_inverse_cdf_on_large_vocabulary() -> None:
    """The blockwise float64 CDF picks the token a full float64 inverse CDF picks, and never a
    forbidden one, for a vocabulary that is not a multiple of the block size."""
    g = torch.Generator().manual_seed(3)
    b, V = 4000, 1000
    logits = torch.randn(b, V, generator=g) * 2
    logits[:, ::7] = -float("inf")  # forbidden tokens, spread over every block
    u = torch.rand(b, generator=g)
    idx = choose_tokens(logits, u, SamplingConfig())
    probs = logits.double().softmax(dim=-1)
    cdf = probs.cumsum(dim=-1)
    ref = torch.searchsorted(cdf, (u.double() * cdf[:, -1])[:, None], right=True).squeeze(-1)
    assert (idx % 7 != 0).all()
    assert (idx == ref).float().mean() > 0.999
    # u at the very top of [0, 1) stays inside the support
    top = choose_tokens(logits[:8], torch.full((8,), 1 - 1e-12), SamplingConfig())
    assert (top % 7 != 0).all() and (top < V).all()


def test_sample_tokens_checks_labels(kmeans_tokenizer) -> None:
    """The public entry point refuses labels the model cannot take, naming the field; with no
    config it samples with ``SamplingConfig()``."""
    conditional = make_task(kmeans_tokenizer, n_classes=2)
    with pytest.raises(InputError, match="class labels in"):
        conditional.sample_tokens(4, SamplingConfig(max_length=8))
    plain = make_task(kmeans_tokenizer)
    with pytest.raises(InputError, match="without class conditioning"):
        plain.sample_tokens(
            4, SamplingConfig(max_length=8), labels=torch.zeros(4, dtype=torch.long)
        )
    default = plain.sample_tokens(2, generator=seeded_generator(0))
    again = plain.sample_tokens(2, SamplingConfig(), generator=seeded_generator(0))
    assert torch.equal(default.ids, again.ids)
