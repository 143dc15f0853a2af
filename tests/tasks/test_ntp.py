"""Next-token prediction: sequence layout, causal training, class conditioning, KV-cache sampling."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from jetfm.core.errors import ConfigError, InputError
from jetfm.models import BackboneConfig
from jetfm.models.sampler import SamplingConfig
from jetfm.tasks import IGNORE_ID, NTPConfig, NTPTask, build_task
from jetfm.tasks.jet_structure import kt_nsubjettiness

from .fakes import GridTokenizer, synthetic_batch

TINY = BackboneConfig(dim=32, depth=2, heads=4, causal=True, input="tokens")


def test_sequences_hand_computed(tokenizer: GridTokenizer) -> None:
    task = NTPTask(NTPConfig(backbone=TINY), tokenizer=tokenizer)
    K = tokenizer.codebook_size  # 16: START = 16, STOP = 17
    assert (task.start_id, task.stop_id, task.config.backbone.vocab_size) == (16, 17, 18)
    x = torch.zeros(2, 3, 3)
    # bins over [-2, 2] with 4 per axis: id = 4 * bin(f0) + bin(f1)
    x[0, 0, :2] = torch.tensor([-1.5, -1.5])  # bin 0,0 -> 0
    x[0, 1, :2] = torch.tensor([1.5, 0.5])  # bin 3,2 -> 14
    x[1, 1, :2] = torch.tensor([0.5, -0.5])  # bin 2,1 -> 9 (jet 1: padding first, real second)
    mask = torch.tensor([[True, True, False], [False, True, False]])
    seq = task.build_sequences(x, mask)
    assert seq["inputs"][0].tolist() == [K, 0, 14, K + 1]
    assert seq["targets"][0].tolist() == [0, 14, K + 1, IGNORE_ID]
    assert seq["input_mask"][0].tolist() == [True, True, True, False]
    # real particles are packed to the front before building the sequence
    assert seq["inputs"][1].tolist()[:2] == [K, 9]
    assert seq["targets"][1].tolist() == [9, K + 1, IGNORE_ID, IGNORE_ID]
    assert seq["input_mask"][1].tolist() == [True, True, False, False]


def test_full_jet_gets_stop_in_extra_position(tokenizer: GridTokenizer) -> None:
    task = NTPTask(NTPConfig(backbone=TINY), tokenizer=tokenizer)
    mask = torch.ones(1, 3, dtype=torch.bool)
    seq = task.build_sequences(torch.zeros(1, 3, 3), mask)
    assert seq["targets"][0].tolist()[-1] == task.stop_id
    assert seq["input_mask"].all()


def _train(task: NTPTask, steps: int = 30) -> list[float]:
    opt = torch.optim.AdamW(task.trainable_parameters(), lr=3e-3)
    losses = []
    for step in range(steps):
        out = task.loss(synthetic_batch(B=32, N=12, seed=step % 4))
        assert torch.isfinite(out["loss"])
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(float(out["loss"].detach()))
    return losses


@pytest.mark.parametrize(
    "input_kind,n_classes,extra",
    [
        ("tokens", 0, {}),
        ("hybrid", 2, {}),
        ("tokens", 0, {"geometric_head": True}),
        ("hybrid", 0, {"geometric_head": True, "hybrid_features": "decoded"}),
        (
            "hybrid",
            2,
            {
                "geometric_head": True,
                "hybrid_features": "decoded",
                "fourier_input": True,
                "geometric_angular": True,
            },
        ),
        ("tokens", 2, {"neighbour_prior": True, "neighbour_parents": 4}),
    ],
)
def test_loss_decreases(
    input_kind: str, n_classes: int, extra: dict, tokenizer: GridTokenizer
) -> None:
    torch.manual_seed(0)
    bb = BackboneConfig(dim=32, depth=2, heads=4, causal=True, input=input_kind, n_features=3)
    task = NTPTask(NTPConfig(backbone=bb, n_classes=n_classes, **extra), tokenizer=tokenizer)
    losses = _train(task)
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.8 * first, (first, last)
    # starting point is ~log(V) for a fresh model
    assert abs(losses[0] - torch.log(torch.tensor(18.0)).item()) < 1.0
    out = task.loss(synthetic_batch(seed=7))
    assert 0 <= float(out["accuracy"]) <= 1 and 0 <= float(out["stop_accuracy"]) <= 1
    torch.testing.assert_close(out["perplexity"], out["loss"].detach().exp())


def test_loss_is_causal(tokenizer: GridTokenizer) -> None:
    """Changing the last particle changes only the last two predictions' losses, not earlier ones."""
    torch.manual_seed(0)
    task = NTPTask(NTPConfig(backbone=TINY), tokenizer=tokenizer).eval()
    b = synthetic_batch(B=1, N=6)
    b["mask"][:] = True
    seq = task.build_sequences(b["x"], b["mask"])
    logits = task.head(task.backbone(None, seq["input_mask"], tokens=seq["inputs"]))
    inputs2 = seq["inputs"].clone()
    inputs2[0, -1] = (inputs2[0, -1] + 1) % 16
    logits2 = task.head(task.backbone(None, seq["input_mask"], tokens=inputs2))
    torch.testing.assert_close(logits2[:, :-1], logits[:, :-1])
    assert (logits2[:, -1] - logits[:, -1]).abs().max() > 1e-4


def test_class_conditioning(tokenizer: GridTokenizer) -> None:
    torch.manual_seed(0)
    task = NTPTask(NTPConfig(backbone=TINY, n_classes=3), tokenizer=tokenizer).eval()
    task.requires_grad_(False)
    b = synthetic_batch(B=4, N=6)
    l0 = task.loss({**b, "label": torch.zeros(4, dtype=torch.long)})["loss"]
    l2 = task.loss({**b, "label": torch.full((4,), 2)})["loss"]
    assert abs(float(l0) - float(l2)) > 1e-6
    with pytest.raises(InputError, match="label"):
        task.loss({**b, "label": torch.full((4,), 3)})


def test_generate_matches_full_forward(tokenizer: GridTokenizer) -> None:
    """Sampling with the KV cache gives sequences whose full-forward probabilities are sane."""
    torch.manual_seed(0)
    bb = BackboneConfig(dim=32, depth=2, heads=4, causal=True, input="tokens", n_registers=2)
    task = NTPTask(NTPConfig(backbone=bb, n_classes=2), tokenizer=tokenizer).eval()
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 1, 1, 0, 1])
    ids, mask = task.generate(5, 7, labels=labels, generator=g, top_k=10)
    assert ids.shape == (5, 7) and mask.shape == (5, 7)
    assert mask[:, 0].all()  # at least one particle
    n = mask.sum(1)
    assert torch.equal(mask, torch.arange(7)[None] < n[:, None])  # contiguous
    assert ((ids[mask] >= 0) & (ids[mask] < 16)).all() and (ids[~mask] == -1).all()
    # greedy decoding with the cache equals greedy decoding by full forwards
    cache_ids, _ = task.generate(1, 4, labels=labels[:1], temperature=1e-4, generator=g)
    seq = [task.start_id]
    for _ in range(4):
        inp = torch.tensor([seq])
        h = task._embed(inp, None, labels[:1], 0)
        logits = task.head(task.backbone.encode(h, torch.ones_like(inp, dtype=torch.bool)))[0, -1]
        logits[task.start_id] = -float("inf")
        if len(seq) == 1:
            logits[task.stop_id] = -float("inf")
        nxt = int(logits.argmax())
        if nxt == task.stop_id:
            break
        seq.append(nxt)
    assert cache_ids[0, : len(seq) - 1].tolist() == seq[1:]
    x, m = task.generate_features(3, 5, labels=labels[:3], generator=g)
    assert x.shape == (3, 5, 3) and torch.equal(x[~m], torch.zeros_like(x[~m]))


def test_decoded_hybrid_features_train_as_they_sample(tokenizer: GridTokenizer) -> None:
    """hybrid_features=decoded: the loss embeds a sequence exactly as the sampler does."""
    torch.manual_seed(0)
    bb = BackboneConfig(dim=32, depth=2, heads=4, causal=True, input="hybrid", n_features=3)
    b = synthetic_batch(B=4, N=6)
    for mode, same in (("decoded", True), ("exact", False)):
        task = NTPTask(NTPConfig(backbone=bb, hybrid_features=mode), tokenizer=tokenizer).eval()
        seq = task.build_sequences(b["x"], b["mask"])
        in_loss = task._embed(seq["inputs"], seq["x_in"], None, 0)
        in_sampler = task.embed_tokens(seq["inputs"], None, 0)
        real = seq["input_mask"]
        assert torch.allclose(in_loss[real], in_sampler[real]) is same, mode
    # decoded features: the grid cell centres of the particles (zero at START)
    task = NTPTask(NTPConfig(backbone=bb, hybrid_features="decoded"), tokenizer=tokenizer)
    seq = task.build_sequences(b["x"], b["mask"])
    ids = seq["inputs"][:, 1:]
    real = (ids >= 0) & (ids < 16)
    torch.testing.assert_close(seq["x_in"][:, 1:][real], tokenizer.decode(ids[real][:, None])[:, 0])
    assert torch.equal(seq["x_in"][:, 0], torch.zeros_like(seq["x_in"][:, 0]))


def test_position_embedding_learns_where_a_cut_jet_stops(tokenizer: GridTokenizer) -> None:
    """Jets of exactly 6 particles with random tokens: only the position says when to STOP."""
    torch.manual_seed(0)
    bb = BackboneConfig(dim=32, depth=2, heads=4, causal=True, input="tokens")
    task = NTPTask(NTPConfig(backbone=bb, position_embedding=True, max_length=8), tokenizer)
    opt = torch.optim.AdamW(task.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(150):
        x = torch.rand(32, 6, 3, generator=g) * 4 - 2  # uniform over the 16 grid cells
        out = task.loss({"x": x, "mask": torch.ones(32, 6, dtype=torch.bool)})
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    task.eval()
    x = torch.rand(64, 6, 3, generator=g) * 4 - 2
    seq = task.build_sequences(x, torch.ones(64, 6, dtype=torch.bool))
    with torch.no_grad():
        h = task.backbone.encode(task._embed(seq["inputs"], None, None, 0), seq["input_mask"])
        p_stop = task.head(h).softmax(-1)[..., task.stop_id]  # (64, 7)
    assert p_stop[:, 6].mean() > 0.9  # after the 6th particle
    assert p_stop[:, :6].max() < 0.05  # never before
    with pytest.raises(InputError, match="max_length"):
        task.loss({"x": torch.zeros(2, 9, 3), "mask": torch.ones(2, 9, dtype=torch.bool)})


def test_geometric_head_ties_rows_to_code_features(tokenizer: GridTokenizer) -> None:
    from jetfm.models import GeometricTokenHead

    torch.manual_seed(0)
    task = NTPTask(NTPConfig(backbone=TINY, geometric_head=True), tokenizer=tokenizer)
    head = task.head
    assert isinstance(head, GeometricTokenHead)
    K = tokenizer.codebook_size
    codes = tokenizer.decode(torch.arange(K)[:, None])[:, 0]
    torch.testing.assert_close(head.code_features, codes)
    h = torch.randn(5, 32)
    # logits by hand: code k scores h . (w_k + g(c_k)) + b_k; START/STOP only h . w + b
    with torch.no_grad():  # away from the zero initialisation, so the geometry term counts
        head.geometry[-1].weight.normal_(0, 0.1)
    phase = 2 * math.pi * codes @ head.frequencies  # (K, n): random Fourier features of c_k
    g = head.geometry(torch.cat([phase.sin(), phase.cos()], dim=1))  # (K, D)
    torch.testing.assert_close(head.code_embedding(), g)
    w, bias = head.proj.weight, head.proj.bias
    want = torch.cat([h @ (w[:K] + g).T, h @ w[K:].T], dim=1) + bias
    torch.testing.assert_close(head(h), want)
    # codes with equal features and equal free rows get equal logits
    with torch.no_grad():
        head.code_features[3] = head.code_features[7]
        head.proj.weight[3] = head.proj.weight[7]
        head.proj.bias[3] = head.proj.bias[7]
    out = head(h)
    torch.testing.assert_close(out[:, 3], out[:, 7])
    # eval + no_grad caches the weight, and a parameter update refreshes it
    head.eval()
    with torch.no_grad():
        first = head(h)
        torch.testing.assert_close(first, out)
        head.geometry[0].weight.add_(0.5)
        second = head(h)
    head.train()
    torch.testing.assert_close(second, head(h).detach())
    assert not torch.allclose(first, second)
    with pytest.raises(ConfigError, match="head_transform"):
        NTPConfig(backbone=TINY, geometric_head=True, head_transform=True)
    with pytest.raises(ConfigError, match="hybrid_features"):
        NTPConfig(backbone=TINY, hybrid_features="both")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="geometric_angular"):
        NTPConfig(backbone=TINY, geometric_angular=True)
    task = NTPTask(NTPConfig(backbone=TINY, geometric_head=True, geometric_angular=True), tokenizer)
    f = task.head.frequencies  # (F, n): features (deta, dphi, log_pt) of the grid tokenizer
    n = f.shape[1]
    assert bool((f[2, : n // 2] == 0).all()) and bool((f[2, n // 2 :] != 0).all())
    assert bool((f[:2] != 0).all())
    with pytest.raises(ConfigError, match="fourier_input"):
        NTPConfig(backbone=TINY, geometric_head=True, fourier_input=True)  # tokens-only input


def test_config_errors(tokenizer: GridTokenizer) -> None:
    with pytest.raises(ConfigError, match="causal"):
        NTPConfig(backbone=BackboneConfig(dim=32, depth=1, heads=4, input="tokens"))
    with pytest.raises(ConfigError, match="input"):
        NTPConfig(backbone=BackboneConfig(dim=32, depth=1, heads=4, causal=True))
    with pytest.raises(ConfigError, match="vocab_size"):
        NTPTask(
            NTPConfig(
                backbone=BackboneConfig(
                    dim=32, depth=1, heads=4, causal=True, input="tokens", vocab_size=5
                )
            ),
            tokenizer=tokenizer,
        )
    with pytest.raises(ConfigError, match=r"task\.tokenizer"):
        build_task({"name": "ntp", "tokenizer": "/nonexistent/tok"})
    for p in (-0.1, 1.0):
        with pytest.raises(ConfigError, match="scheduled_sampling"):
            NTPConfig(backbone=TINY, scheduled_sampling=p)


def test_neighbour_prior_hand_computed() -> None:
    """prior_k = a_0 + sum_{s,j} a_sj exp(-|c_k - x_j|^2 / 2 sigma_s^2) over the allowed j."""
    from jetfm.models import NeighbourPrior

    codes = torch.tensor([[0.0, 0.0, 1.0], [0.1, 0.0, 2.0], [0.0, 0.3, 0.0], [1.0, 1.0, 0.0]])
    prior = NeighbourPrior(8, codes, angular=[0, 1], widths=(0.1, 0.5), key_dim=4)
    # zero query and "anywhere" layers: every allowed (scale, particle) scores like a_0
    with torch.no_grad():
        for lin in (prior.query, prior.anywhere):
            lin.weight.zero_()
            lin.bias.zero_()
    hid = torch.randn(1, 2, 8)
    feats = torch.tensor([[[0.0, 0.0, 5.0], [1.0, 1.0, -1.0]]])  # (1, P=2, F): two particles
    allowed = torch.tensor([[[True, False], [True, True]]])  # query 0 sees particle 0 only
    out = prior(hid, feats, allowed)  # (1, 2, 4)
    d2 = ((codes[:, None, :2] - feats[0, None, :, :2]) ** 2).sum(-1)  # (K, P)
    ker = [torch.exp(-d2 / (2 * w**2)) for w in (0.1, 0.5)]  # per scale (K, P)
    want0 = (1 + ker[0][:, 0] + ker[1][:, 0]) / 3  # a_0 = a_s0 = 1/3; the pT column plays no part
    want1 = (1 + ker[0].sum(1) + ker[1].sum(1)) / 5
    torch.testing.assert_close(out[0, 0], want0.log())
    torch.testing.assert_close(out[0, 1], want1.log())
    # the code on top of particle 0 gets the largest boost, the far code almost none
    assert out[0, 0, 0] > out[0, 0, 1] > out[0, 0, 2] > out[0, 0, 3]
    assert out[0, 0, 3] - math.log(1 / 3) < 0.02  # sqrt(2) away: exp(-4) from the wide scale
    # sampling's path (rows of the per-code table, one query per jet) gives the same numbers
    parents = torch.tensor([[0, 3], [2, 2]])  # (b=2, P=2) code ids
    a0, a = torch.tensor([0.2, 0.5]), torch.tensor([[0.1, 0.2, 0.3, 0.2], [0.0, 0.25, 0.25, 0.0]])
    table = prior.code_table()
    assert table.shape == (2, 4, 4) and prior.code_table() is table  # cached
    by_rows = prior.log_prior_of_codes(a0, a, parents)  # (2, K)
    by_kernels = prior.log_prior(a0[:, None], a[:, None], prior.kernels(codes[parents]))[:, 0]
    torch.testing.assert_close(by_rows, by_kernels)
    # nothing allowed: prior 1 everywhere
    none = prior(hid, feats, torch.zeros_like(allowed))
    torch.testing.assert_close(none, torch.zeros_like(none))


def test_neighbour_prior_is_causal_and_bounded(tokenizer: GridTokenizer) -> None:
    """Position i points at particles 1..i (and the leading ``neighbour_parents`` only)."""
    torch.manual_seed(0)
    cfg = NTPConfig(backbone=TINY, neighbour_prior=True, neighbour_parents=3)
    task = NTPTask(cfg, tokenizer=tokenizer).eval()
    b = synthetic_batch(B=2, N=6)
    b["mask"][:] = True
    seq = task.build_sequences(b["x"], b["mask"])
    hid = torch.randn(2, seq["inputs"].shape[1], 32)  # fixed hidden states: the prior alone
    with torch.no_grad():
        base = task.neighbour_log_prior(hid, seq["inputs"])  # (B, L, K)
        torch.testing.assert_close(base[:, 0], torch.zeros_like(base[:, 0]))  # START: none yet
        for j in (1, 3, 4):  # change particle j (sequence position j)
            changed = seq["inputs"].clone()
            changed[:, j] = (changed[:, j] + 5) % tokenizer.codebook_size
            out = task.neighbour_log_prior(hid, changed)
            torch.testing.assert_close(out[:, :j], base[:, :j])
            moved = (out[:, j:] - base[:, j:]).abs().amax()
            assert moved > 1e-4 if j <= 3 else moved == 0, (j, moved)  # particle 4: not a parent


def test_neighbour_prior_config_errors(tokenizer: GridTokenizer) -> None:
    with pytest.raises(ConfigError, match="neighbour_widths"):
        NTPConfig(backbone=TINY, neighbour_prior=True, neighbour_widths=[0.1, 0.0])
    with pytest.raises(ConfigError, match="neighbour_parents"):
        NTPConfig(backbone=TINY, neighbour_prior=True, neighbour_parents=0)

    class NoAngles(GridTokenizer):
        feature_names = ("log_pt", "log_e", "charge")

    with pytest.raises(ConfigError, match="deta and dphi"):
        NTPTask(NTPConfig(backbone=TINY, neighbour_prior=True), tokenizer=NoAngles())


@pytest.mark.parametrize("head", ["plain", "geometric", "neighbour"])
def test_save_load_identity(tmp_path, tokenizer: GridTokenizer, head: str) -> None:
    torch.manual_seed(0)
    cfg = NTPConfig(
        backbone=TINY,
        n_classes=2,
        geometric_head=head != "plain",
        neighbour_prior=head == "neighbour",
    )
    task = NTPTask(cfg, tokenizer=tokenizer).eval()
    task.save_pretrained(tmp_path / "ntp")
    # the fake tokenizer is no checkpoint folder, so rebuild with it explicitly
    from jetfm.core.checkpoint import load_checkpoint

    ckpt = load_checkpoint(tmp_path / "ntp" / "task", kind="task")
    # no jet tokens, no edges saved: checkpoints from before jet tokens existed load unchanged
    assert "jet_edges" not in ckpt.state_dict
    again = build_task(ckpt.config, tokenizer=tokenizer).eval()
    again.load_state_dict(ckpt.state_dict, strict=False)
    b = synthetic_batch(B=4, N=6)
    torch.testing.assert_close(task.loss(b)["loss"], again.loss(b)["loss"])


# ---------------------------------------------------------------------- jet tokens
JET_TOKENS = {"jet_tokens": ["pt", "n_particles"], "jet_token_bins": 4}
#: the grid tokenizer's standardisation: (deta, dphi) = 0.2 x grid centre, every particle 100 GeV
GRID_PRE = {"feature_names": ["deta", "dphi", "log_pt"], "mean": [0.0, 0.0, math.log(100.0)]}
GRID_PRE["std"] = [0.2, 0.2, 1.0]


@pytest.fixture
def jet_tokenizer() -> GridTokenizer:
    return GridTokenizer(preprocessing=GRID_PRE)


def _fit(task: NTPTask) -> None:
    task.fit_jet_statistics([synthetic_batch(seed=s) for s in range(4)])


def test_jet_observables_hand_computed(jet_tokenizer: GridTokenizer) -> None:
    """A jet token's value is that of the jet its particle tokens decode to: two massless 100 GeV
    particles at (deta, dphi) = (-0.3, -0.1) and (0.3, 0.1) (grid cells (0, 1) and (3, 2))."""
    task = NTPTask(NTPConfig(backbone=TINY, **JET_TOKENS), tokenizer=jet_tokenizer)
    ids = torch.tensor([[0 * 4 + 1, 3 * 4 + 2, 5], [6, 0, 0]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    obs = task.jet_observables(ids, mask)
    assert obs["n_particles"].tolist() == [2, 1]
    # pT: both at phi = -+0.1; m^2 = 2 pT1 pT2 (cosh d_eta - cos d_phi); E = sum pT cosh(eta)
    assert float(obs["pt"][0]) == pytest.approx(200 * math.cos(0.1), rel=1e-9)
    m = math.sqrt(2 * 100 * 100 * (math.cosh(0.6) - math.cos(0.2)))
    assert float(obs["mass"][0]) == pytest.approx(m, rel=1e-9)
    assert float(obs["energy"][0]) == pytest.approx(200 * math.cosh(0.3), rel=1e-9)
    assert float(obs["pt"][1]) == pytest.approx(100.0) and float(obs["mass"][1]) < 1e-4
    # the training sequence carries the bins of these values
    _fit(task)
    seq = task.build_sequences(jet_tokenizer.decode(ids, mask), mask)
    want = task._jet_ids(task.jet_bins(obs))
    assert torch.equal(seq["inputs"][:, 1:3], want)


def test_jet_token_sequences_hand_computed(jet_tokenizer: GridTokenizer) -> None:
    task = NTPTask(NTPConfig(backbone=TINY, **JET_TOKENS), tokenizer=jet_tokenizer)
    K = jet_tokenizer.codebook_size  # START 16, STOP 17, pt bins 18..21, multiplicity bins 22..25
    assert (task.vocab_size, task.config.backbone.vocab_size) == (26, 26)
    task.jet_edges.copy_(torch.tensor([[450.0, 500.0, 550.0], [1.5, 2.5, 3.5]]))
    x = torch.zeros(1, 3, 3)
    x[0, 0, :2] = torch.tensor([-1.5, -1.5])  # id 0
    x[0, 1, :2] = torch.tensor([1.5, 0.5])  # id 14
    mask = torch.tensor([[True, True, False]])
    bins = task.jet_bins({"pt": torch.tensor([520.0]), "n_particles": torch.tensor([2.0])})
    assert bins.tolist() == [[2, 1]]  # 500 <= 520 < 550; 1.5 <= 2 < 2.5
    seq = task.build_sequences(x, mask, bins)
    assert seq["inputs"][0].tolist() == [K, 20, 23, 0, 14, K + 1]
    assert seq["targets"][0].tolist() == [20, 23, 0, 14, K + 1, IGNORE_ID]
    assert seq["input_mask"][0].tolist() == [True] * 5 + [False]
    # the logit masks: position 0 only pT bins, position 1 only multiplicity bins, then particles
    allowed = torch.isfinite(task.vocab_mask)
    assert allowed[0].nonzero().squeeze(1).tolist() == [18, 19, 20, 21]
    assert allowed[1].nonzero().squeeze(1).tolist() == [22, 23, 24, 25]
    assert allowed[2].nonzero().squeeze(1).tolist() == [*range(K), K + 1]


def test_jet_tokens_need_fitted_edges_and_known_fields(
    tokenizer: GridTokenizer, jet_tokenizer: GridTokenizer
) -> None:
    task = NTPTask(NTPConfig(backbone=TINY, **JET_TOKENS), tokenizer=jet_tokenizer)
    with pytest.raises(ConfigError, match="fit_jet_statistics"):
        task.loss(synthetic_batch())
    with pytest.raises(ConfigError, match="fit_jet_statistics"):
        task.generate(2, 4)
    with pytest.raises(InputError, match="training jets"):
        task.fit_jet_statistics([])
    # kinematic jet tokens need the tokenizer's standardisation to undo; multiplicity does not
    with pytest.raises(ConfigError, match="preprocessing"):
        NTPTask(NTPConfig(backbone=TINY, **JET_TOKENS), tokenizer=tokenizer)
    only_n = NTPTask(NTPConfig(backbone=TINY, jet_tokens=["n_particles"]), tokenizer=tokenizer)
    _fit(only_n)
    assert torch.isfinite(only_n.loss(synthetic_batch())["loss"])
    with pytest.raises(ConfigError, match="jet_tokens"):
        NTPConfig(backbone=TINY, jet_tokens=["pt", "pt"])
    with pytest.raises(ConfigError, match="jet_tokens"):
        NTPConfig(backbone=TINY, jet_tokens=["tau43"])
    with pytest.raises(ConfigError, match="jet_token_bins"):
        NTPConfig(backbone=TINY, jet_tokens=["pt"], jet_token_bins=1)


@pytest.mark.parametrize(
    "extra", [{}, {"neighbour_prior": True, "neighbour_parents": 4, "position_embedding": True}]
)
def test_jet_tokens_train_and_condition_sampling(jet_tokenizer: GridTokenizer, extra: dict) -> None:
    """The model learns the jet tokens' marginal and the particles' dependence on them: sampled
    jets follow their drawn multiplicity bin, and cached sampling equals uncached. (Multiplicity
    first: the grid tokenizer's particles all carry 100 GeV, so pT alone fixes the multiplicity.)"""
    torch.manual_seed(0)
    bb = BackboneConfig(dim=32, depth=2, heads=4, causal=True, input="hybrid", n_features=3)
    cfg = NTPConfig(backbone=bb, n_classes=2, hybrid_features="decoded", max_length=12, **extra)
    cfg = dataclasses.replace(cfg, jet_tokens=["n_particles", "pt"], jet_token_bins=4)
    task = NTPTask(cfg, tokenizer=jet_tokenizer)
    _fit(task)
    opt = torch.optim.AdamW(task.trainable_parameters(), lr=3e-3)
    losses = []
    for step in range(60):
        out = task.loss(synthetic_batch(seed=step % 4))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append((float(out["loss"].detach()), float(out["jet_token_loss"])))
    first = [sum(v) / 5 for v in zip(*losses[:5], strict=True)]
    last = [sum(v) / 5 for v in zip(*losses[-5:], strict=True)]
    assert last[0] < 0.8 * first[0] and last[1] < first[1], (first, last)
    labels = torch.tensor([0, 1] * 100)
    runs = [
        task.sample_tokens(
            200,
            SamplingConfig(max_length=12, use_cache=cache),
            labels=labels,
            generator=torch.Generator().manual_seed(1),
        )
        for cache in (True, False)
    ]
    a, b = runs
    assert torch.equal(a.ids, b.ids) and torch.equal(a.prefix, b.prefix)
    assert a.prefix.shape == (200, 2) and 0 <= int(a.prefix.min()) and int(a.prefix.max()) < 4
    assert int(a.ids.max()) < jet_tokenizer.codebook_size  # no START/STOP/jet token among particles
    # conditioning works: jets drawn in a higher multiplicity bin are longer
    n, bin_n = a.lengths.float(), a.prefix[:, 0]
    means = [float(n[bin_n == k].mean()) for k in range(4) if int((bin_n == k).sum()) >= 10]
    assert len(means) >= 3 and means == sorted(means), means
    # conditional generation: fixing the leading jet tokens' bins from physical values
    few, many = (task.condition_bins({"n_particles": v}) for v in (3.0, 12.0))
    assert few.tolist() == [0] and many.tolist() == [3]
    forced = [
        task.sample_tokens(
            100,
            SamplingConfig(max_length=12),
            labels=labels[:100],
            generator=torch.Generator().manual_seed(2),
            jet_bins=bins.expand(100, -1),
        )
        for bins in (few, many)
    ]
    assert torch.equal(forced[0].prefix[:, :1], few.expand(100, -1))  # pT bin drawn after
    assert torch.equal(forced[1].prefix[:, :1], many.expand(100, -1))
    # and the pT bin drawn after it follows (pT = 100 GeV x multiplicity here)
    assert float(forced[1].prefix[:, 1].float().mean()) > float(
        forced[0].prefix[:, 1].float().mean()
    )
    assert float(forced[1].lengths.float().mean()) > float(forced[0].lengths.float().mean()) + 2
    with pytest.raises(ConfigError, match="prefix"):
        task.condition_bins({"pt": 300.0})  # the multiplicity is drawn first: it cannot be skipped
    with pytest.raises(InputError, match="jet_bins"):
        task.sample_tokens(
            3, SamplingConfig(max_length=8), labels=labels[:3], jet_bins=few.expand(2, -1)
        )


def test_jet_tokens_save_load_identity(tmp_path, jet_tokenizer: GridTokenizer) -> None:
    torch.manual_seed(0)
    task = NTPTask(NTPConfig(backbone=TINY, n_classes=2, **JET_TOKENS), tokenizer=jet_tokenizer)
    _fit(task)
    task.eval().save_pretrained(tmp_path / "ntp")
    from jetfm.core.checkpoint import load_checkpoint

    ckpt = load_checkpoint(tmp_path / "ntp" / "task", kind="task")
    again = build_task(ckpt.config, tokenizer=jet_tokenizer).eval()
    again.load_state_dict(ckpt.state_dict, strict=False)
    torch.testing.assert_close(again.jet_edges, task.jet_edges)
    b = synthetic_batch(B=4, N=6)
    torch.testing.assert_close(task.loss(b)["loss"], again.loss(b)["loss"])


@pytest.mark.parametrize(
    "extra", [{}, {"jet_tokens": ["n_particles"], "neighbour_prior": True, "neighbour_parents": 4}]
)
def test_scheduled_sampling_replaces_particle_inputs_only(
    tokenizer: GridTokenizer, extra: dict
) -> None:
    """Parallel scheduled sampling swaps particle inputs (never START, jet tokens, STOP or
    padding) for codes drawn at the position that predicts them; targets stay the real ones."""
    torch.manual_seed(0)
    bb = BackboneConfig(dim=32, depth=2, heads=4, causal=True, input="hybrid", n_features=3)
    cfg = NTPConfig(backbone=bb, hybrid_features="exact", scheduled_sampling=0.5, **extra)
    task = NTPTask(cfg, tokenizer=tokenizer)
    if task.n_jet_tokens:
        _fit(task)
    J, K = task.n_jet_tokens, tokenizer.codebook_size
    b = synthetic_batch(B=16, N=12)
    seq = task.build_sequences(b["x"], b["mask"])
    new = task.scheduled_inputs(seq, None, 0.5, generator=torch.Generator().manual_seed(1))
    swapped = new["swapped"]
    particle = torch.zeros_like(swapped)
    particle[:, J + 1 :] = seq["inputs"][:, J + 1 :] < K
    assert swapped.any() and not swapped[~particle].any()
    assert torch.equal(new["inputs"][~swapped], seq["inputs"][~swapped])
    assert (new["inputs"][swapped] < K).all()
    for key in ("targets", "input_mask"):
        assert torch.equal(new[key], seq[key])
    # a replaced particle reads its code's decoded features (all a sampled jet has), the others
    # keep their exact ones
    torch.testing.assert_close(new["x_in"][swapped], task.token_features(new["inputs"])[swapped])
    assert torch.equal(new["x_in"][~swapped], seq["x_in"][~swapped])

    # alignment: the draw of the position predicting particle i + 1 replaces particle i + 1.
    # Logits that put all mass on code (i + 3) % K at position i make every draw known.
    def peaked(hid: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        B, T = hid.shape[:2]
        logits = torch.full((B, T, task.vocab_size), -1e4)
        logits[:, torch.arange(T), (torch.arange(T) + 3) % K] = 0.0
        return logits

    task._particle_logits = peaked  # type: ignore[method-assign]
    new = task.scheduled_inputs(seq, None, 0.5, generator=torch.Generator().manual_seed(2))
    rows, cols = new["swapped"].nonzero(as_tuple=True)
    assert torch.equal(new["inputs"][rows, cols], (cols - J - 1 + 3) % K)
    # every draw is a code here, so each real particle is swapped with probability p = 0.5
    n = int(particle.sum())
    assert n > 100 and abs(len(rows) / n - 0.5) < 0.15


def test_scheduled_sampling_trains_and_validates_teacher_forced(tokenizer: GridTokenizer) -> None:
    """The swaps happen in training mode only: in eval mode the loss is the teacher-forced one of
    the same weights without scheduled sampling."""
    torch.manual_seed(0)
    bb = BackboneConfig(dim=32, depth=2, heads=4, causal=True, input="hybrid", n_features=3)
    cfg = NTPConfig(backbone=bb, hybrid_features="decoded", neighbour_prior=True)
    plain = NTPTask(cfg, tokenizer=tokenizer)
    ss = NTPTask(dataclasses.replace(cfg, scheduled_sampling=0.5), tokenizer=tokenizer)
    ss.load_state_dict(plain.state_dict())
    b = synthetic_batch(B=8, N=10)
    plain.eval(), ss.eval()
    assert torch.equal(ss.loss(b)["loss"], plain.loss(b)["loss"])
    ss.train()
    out = ss.loss(b)
    assert torch.isfinite(out["loss"]) and not torch.equal(out["loss"], plain.loss(b)["loss"])
    assert 0.2 < float(out["swapped"]) < 0.55  # p = 0.5, less the drawn STOPs
    out["loss"].backward()
    grads = [p.grad for p in ss.backbone.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_subjet_order_sequences(jet_tokenizer: GridTokenizer) -> None:
    """order: subjets writes the same tokens as order: pt, regrouped subjet by subjet."""
    # standardised (deta, dphi); x 0.2 gives the physical angles: particles 0 and 2 are 0.02
    # apart, 1 and 3 too, the pairs ~0.85 apart. Grid ids: 0, 15, 0 and 15; then a padding slot
    x = torch.zeros(1, 5, 3)
    x[0, :4, :2] = torch.tensor([[-1.5, -1.5], [1.5, 1.5], [-1.4, -1.5], [1.5, 1.4]])
    mask = torch.tensor([[True] * 4 + [False]])
    K = jet_tokenizer.codebook_size
    seqs = {}
    for order in ("pt", "subjets"):
        task = NTPTask(NTPConfig(backbone=TINY, order=order), tokenizer=jet_tokenizer)
        seqs[order] = task.build_sequences(x, mask)
    assert seqs["pt"]["inputs"][0].tolist() == [K, 0, 15, 0, 15, K + 1]
    assert seqs["subjets"]["inputs"][0].tolist() == [K, 0, 0, 15, 15, K + 1]
    assert seqs["subjets"]["targets"][0].tolist() == [0, 0, 15, 15, K + 1, IGNORE_ID]
    assert torch.equal(seqs["pt"]["input_mask"], seqs["subjets"]["input_mask"])
    # the model trains on them
    torch.manual_seed(0)
    assert torch.isfinite(task.loss(synthetic_batch(B=8, N=10))["loss"])
    with pytest.raises(ConfigError, match=r"task\.order"):
        NTPTask(NTPConfig(backbone=TINY, order="subjets"), tokenizer=GridTokenizer())
    with pytest.raises(ConfigError, match="order"):
        NTPConfig(backbone=TINY, order="eta")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="subjet_radius"):
        NTPConfig(backbone=TINY, subjet_radius=0.0)
    with pytest.raises(ConfigError, match="subjet_seeds_first"):
        NTPConfig(backbone=TINY, subjet_seeds_first=3)  # needs order: subjets
    with pytest.raises(ConfigError, match="subjet_seeds_first"):
        NTPConfig(backbone=TINY, order="subjets", subjet_seeds_first=-1)
    # seeds first: in pT order the two particles of subjet A (id 0) come before those of B
    # (id 15); the seeds of both go first, then each subjet's rest
    x2 = x[:, [0, 2, 1, 3, 4]]
    seqs2 = {}
    for seeds in (0, 2):
        cfg = NTPConfig(backbone=TINY, order="subjets", subjet_seeds_first=seeds)
        seqs2[seeds] = NTPTask(cfg, tokenizer=jet_tokenizer).build_sequences(x2, mask)["inputs"]
    assert seqs2[0][0].tolist() == [K, 0, 0, 15, 15, K + 1]
    assert seqs2[2][0].tolist() == [K, 0, 15, 0, 15, K + 1]


def test_multiplicity_range_matches_the_bins(jet_tokenizer: GridTokenizer) -> None:
    """Bin b of the multiplicity holds exactly the counts lo[b] .. hi[b] that ``jet_bins`` puts in
    it; a bin no integer falls in puts no bound."""
    cfg = NTPConfig(backbone=TINY, jet_tokens=["pt", "n_particles"], jet_token_bins=5, max_length=9)
    task = NTPTask(cfg, tokenizer=jet_tokenizer)
    task.jet_edges.copy_(torch.tensor([[1.0, 2.0, 3.0, 4.0], [2.0, 4.5, 4.7, 6.0]]))
    lo, hi = task.multiplicity_range()
    assert lo.tolist() == [0, 3, 0, 5, 7] and hi.tolist() == [2, 4, 9, 6, 9]
    n = torch.arange(1, 10).double()
    bins = task.jet_bins({"pt": torch.ones(9), "n_particles": n})[:, 1]  # (9,)
    for count, b in zip(n.long().tolist(), bins.tolist(), strict=True):
        assert lo[b] <= count <= hi[b] and b != 2  # (4.5, 4.7] is empty


def test_fit_to_bins_hand_computed(jet_tokenizer: GridTokenizer) -> None:
    """Two massless 100 GeV particles at (deta, dphi) = (-0.3, -0.1) and (0.3, 0.1): pT =
    200 cos(0.1), m = 200 sqrt((cosh 0.6 - cos 0.2) / 2). Drawn in pT bin (250, 350], the pT is
    scaled to 350 - 100 u; the mass scales with it, and is checked against its drawn bin."""
    cfg = NTPConfig(backbone=TINY, jet_tokens=["pt", "mass"], jet_token_bins=4)
    task = NTPTask(cfg, tokenizer=jet_tokenizer)
    task.jet_edges.copy_(torch.tensor([[150.0, 250.0, 350.0], [50.0, 80.0, 200.0]]))
    ids = torch.tensor([[0 * 4 + 1, 3 * 4 + 2]]).expand(5, -1)
    mask = torch.ones(5, 2, dtype=torch.bool)
    pt, m = 200 * math.cos(0.1), 200 * math.sqrt((math.cosh(0.6) - math.cos(0.2)) / 2)
    # pT bins 2, 2, 2 (inner), 0 and 3 (outer: the nearest pT inside); mass bins 2, 1, 1, 1, 2
    prefix = torch.tensor([[2, 2], [2, 1], [2, 1], [0, 1], [3, 2]])
    u = torch.rand(5, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    scale, ok = task.fit_to_bins(ids, mask, prefix, generator=torch.Generator().manual_seed(4))
    want = [(350 - 100 * float(u[i])) / pt for i in range(3)] + [150 / pt, 350 * (1 + 1e-6) / pt]
    assert scale.tolist() == pytest.approx(want, rel=1e-9)
    # scaled masses: 64 GeV x (1.26 .. 1.76) in (80, 200] for the inner bins; 48 and 113 outside
    assert all(80 < m * w <= 200 for w in want[:3]) and m * want[3] < 50
    assert ok.tolist() == [True, False, False, False, True]
    _, ok1 = task.fit_to_bins(ids, mask, prefix, tolerance=1)
    assert ok1.tolist() == [True, True, True, True, True]  # bin 0 of mass is 1 below bin 1


@pytest.mark.parametrize("cache", [True, False])
def test_consistent_sampling_keeps_jets_in_their_bins(
    jet_tokenizer: GridTokenizer, cache: bool
) -> None:
    """Consistent sampling draws the same jet-token bins as plain sampling (same seed), every jet
    STOPs inside its multiplicity bin, its pT (after ``pt_scale``) lies in its pT bin, and
    ``consistent`` is the truth about the mass of the kept draw. Jets off their mass bins are
    redrawn (``draws`` > 1), and more of them fit than in plain sampling."""
    torch.manual_seed(0)
    cfg = NTPConfig(backbone=TINY, n_classes=2, max_length=12, position_embedding=True)
    cfg = dataclasses.replace(cfg, jet_tokens=["n_particles", "pt", "mass"], jet_token_bins=4)
    task = NTPTask(cfg, tokenizer=jet_tokenizer)
    _fit(task)
    labels = torch.tensor([0, 1] * 40)
    scfg = SamplingConfig(max_length=12, use_cache=cache)
    plain, fit = (
        task.sample_tokens(
            80,
            scfg,
            labels=labels,
            generator=torch.Generator().manual_seed(3),
            consistent=consistent,
            max_redraws=8,
        )
        for consistent in (False, True)
    )
    assert plain.draws is None and plain.pt_scale is None
    assert fit.draws is not None and fit.consistent is not None and fit.pt_scale is not None
    assert torch.equal(plain.prefix, fit.prefix)
    lo, hi = task.multiplicity_range()
    b = fit.prefix[:, 0]
    assert bool(((fit.lengths >= lo[b]) & (fit.lengths <= hi[b])).all())
    obs = task.jet_observables(fit.ids, fit.mask)
    obs = {k: v * fit.pt_scale if k in ("pt", "mass") else v for k, v in obs.items()}
    truth = task.jet_bins(obs)
    assert float((truth[:, 1] == fit.prefix[:, 1]).float().mean()) > 0.95  # edges: float32
    assert torch.equal(fit.consistent, truth[:, 2] == fit.prefix[:, 2])
    _, plain_ok = task.fit_to_bins(plain.ids, plain.mask, plain.prefix)  # the same criterion
    assert int(fit.consistent.sum()) > int(plain_ok.sum())
    assert int(fit.draws.max()) > 1 and int(fit.draws.min()) == 1
    assert bool((fit.draws[~fit.consistent] == 9).all())  # gave up after 8 redraws
    again = task.sample_tokens(
        80,
        scfg,
        labels=labels,
        generator=torch.Generator().manual_seed(3),
        consistent=True,
        max_redraws=8,
    )
    assert torch.equal(again.ids, fit.ids) and torch.equal(again.pt_scale, fit.pt_scale)
    with pytest.raises(InputError, match="min_length"):
        task.sample_tokens(
            2, SamplingConfig(max_length=8, min_length=2), labels=labels[:2], consistent=True
        )
    with pytest.raises(InputError, match="bin_tolerance"):
        task.sample_tokens(2, scfg, labels=labels[:2], consistent=True, bin_tolerance=-1)
    no_jet = NTPTask(NTPConfig(backbone=TINY), tokenizer=jet_tokenizer)
    with pytest.raises(InputError, match="jet tokens"):
        no_jet.sample_tokens(2, SamplingConfig(), consistent=True)


def test_tau_jet_tokens_train_and_sample(jet_tokenizer: GridTokenizer) -> None:
    """N-subjettiness jet tokens are the decoded jet's exclusive-kT ratios; they fit, train and
    sample (consistently too) like the kinematic ones."""
    cfg = NTPConfig(backbone=TINY, n_classes=2, max_length=12, position_embedding=True)
    cfg = dataclasses.replace(cfg, jet_tokens=["pt", "tau21", "tau32", "n_particles"])
    task = NTPTask(cfg, tokenizer=jet_tokenizer)
    _fit(task)
    assert torch.isfinite(task.jet_edges).all()
    b = synthetic_batch(B=8, N=12)
    ids = jet_tokenizer.encode(b["x"], b["mask"])
    obs = task.jet_observables(ids, b["mask"])
    kin = jet_tokenizer.decode(ids, b["mask"])  # standardised (deta, dphi, log pT): 0.2 x grid
    want = kt_nsubjettiness(
        kin[..., 2].exp() * 100.0, kin[..., 0] * 0.2, kin[..., 1] * 0.2, b["mask"]
    )
    for k in ("tau21", "tau32"):
        torch.testing.assert_close(obs[k].float(), want[k], rtol=1e-4, atol=1e-5)
    assert torch.isfinite(task.loss(b)["loss"])
    out = task.sample_tokens(
        6,
        SamplingConfig(max_length=12),
        labels=torch.tensor([0, 1] * 3),
        consistent=True,
        max_redraws=2,
    )
    assert out.prefix.shape == (6, 4) and out.draws is not None
    with pytest.raises(ConfigError, match="preprocessing"):
        NTPTask(NTPConfig(backbone=TINY, jet_tokens=["tau32"]), tokenizer=GridTokenizer())


# ---------------------------------------------------------------------- factorised head
def test_factorised_head_nll_is_the_tokens(jet_tokenizer: GridTokenizer) -> None:
    """With a two-level tokenizer the loss is the token's NLL, -log p(cell) - log p(residual |
    cell), computed here by hand from the two heads; jet tokens and STOP are cells' peers."""
    from .fakes import TwoLevelGridTokenizer

    torch.manual_seed(0)
    tok = TwoLevelGridTokenizer(preprocessing=GRID_PRE)
    cfg = NTPConfig(backbone=TINY, factorised_head=True, **JET_TOKENS)
    task = NTPTask(cfg, tokenizer=tok).eval()
    _fit(task)
    K, C, R = 16, 4, 4
    assert (task.n_cells, task.n_residuals, task.head_size, task.vocab_size) == (4, 4, 14, 26)
    # token 14 = cell 3, residual 2; START 16 -> 4, STOP 17 -> 5, jet token 20 -> 8; IGNORE stays
    ids = torch.tensor([14, 16, 17, 20, IGNORE_ID])
    assert task.head_ids(ids).tolist() == [3, 4, 5, 8, IGNORE_ID]
    assert task.output_head().head_ids(ids[:4]).tolist() == [3, 4, 5, 8]
    b = synthetic_batch(B=6, N=8)
    seq = task.build_sequences(b["x"], b["mask"])
    with torch.no_grad():
        hid = task.backbone.encode(task._embed(seq["inputs"], None, None, 0), seq["input_mask"])
        out = task.loss(b)
        total, count = 0.0, 0
        for i in range(6):
            for p in range(seq["targets"].shape[1]):
                t = int(seq["targets"][i, p])
                if t == IGNORE_ID:
                    continue
                row = min(p, 2)  # the two jet positions, then particle positions
                logp = (task.head(hid[i, p]) + task.vocab_mask[row]).log_softmax(-1)
                if t < K:
                    res = task.residual_head(hid[i, p], torch.tensor(t // R)).log_softmax(-1)
                    total -= float(logp[t // R] + res[t % R])
                else:
                    total -= float(logp[t - K + C])
                count += 1
    assert float(out["loss"]) == pytest.approx(total / count, rel=1e-5)
    with pytest.raises(ConfigError, match="two-level"):
        NTPTask(NTPConfig(backbone=TINY, factorised_head=True), tokenizer=GridTokenizer())
    with pytest.raises(ConfigError, match="factorised_head"):
        NTPConfig(backbone=TINY, factorised_head=True, neighbour_prior=True)


@pytest.mark.parametrize("geometric", [False, True])
def test_factorised_head_trains_and_samples(tmp_path, geometric: bool) -> None:
    """A factorised model trains, samples the same jets with and without the KV cache, keeps
    the drawn multiplicity bins (head-id masks) and round-trips a save."""
    from .fakes import TwoLevelGridTokenizer

    torch.manual_seed(0)
    tok = TwoLevelGridTokenizer(preprocessing=GRID_PRE)
    bb = BackboneConfig(dim=32, depth=2, heads=4, causal=True, input="hybrid", n_features=3)
    cfg = NTPConfig(
        backbone=bb,
        n_classes=2,
        hybrid_features="decoded",
        max_length=12,
        position_embedding=True,
        factorised_head=True,
        geometric_head=geometric,
        jet_tokens=["n_particles", "pt"],
        jet_token_bins=4,
    )
    task = NTPTask(cfg, tokenizer=tok)
    _fit(task)
    losses = _train(task, steps=40)
    assert sum(losses[-5:]) < 0.8 * sum(losses[:5]), losses
    labels = torch.tensor([0, 1] * 50)
    a, b = (
        task.sample_tokens(
            100,
            SamplingConfig(max_length=12, use_cache=cache, top_k=3),
            labels=labels,
            generator=torch.Generator().manual_seed(1),
        )
        for cache in (True, False)
    )
    assert torch.equal(a.ids, b.ids) and torch.equal(a.prefix, b.prefix)
    assert int(a.ids[a.mask].min()) >= 0 and int(a.ids.max()) < 16
    assert len(set(a.ids[a.mask].tolist())) > 4  # residual codes are drawn, not just cells
    fit = task.sample_tokens(
        100,
        SamplingConfig(max_length=12),
        labels=labels,
        generator=torch.Generator().manual_seed(2),
        consistent=True,
    )
    lo, hi = task.multiplicity_range()
    n_bin = fit.prefix[:, 0]
    assert bool(((fit.lengths >= lo[n_bin]) & (fit.lengths <= hi[n_bin])).all())
    # greedy: the argmax cell, then its argmax residual code
    g = task.sample_tokens(4, SamplingConfig(max_length=12, temperature=0), labels=labels[:4])
    two = task.output_head()
    hid = torch.randn(3, 32)
    with torch.no_grad():
        cell = two.cells(hid)[:, :4].argmax(-1)
        want = cell * 4 + two.residuals(hid, cell).argmax(-1)
        got = two.draw(hid, cell, torch.rand(3), SamplingConfig(temperature=0))
    assert torch.equal(got, want) and g.ids.shape == (4, 12)
    from jetfm.core.checkpoint import load_checkpoint

    task.eval().save_pretrained(tmp_path / "ntp")
    ckpt = load_checkpoint(tmp_path / "ntp" / "task", kind="task")
    again = build_task(ckpt.config, tokenizer=tok).eval()
    missing, unexpected = again.load_state_dict(ckpt.state_dict, strict=False)
    assert not unexpected and all(k.startswith("tokenizer.") for k in missing)  # saved apart
    batch = synthetic_batch(B=4, N=6)
    torch.testing.assert_close(task.loss(batch)["loss"], again.loss(batch)["loss"])


def test_reflections_mirror_the_physical_angles(tokenizer: GridTokenizer) -> None:
    """augment_reflections: each jet's physical (deta, dphi) -> (s_eta deta, s_phi dphi), undoing
    a standardisation with nonzero means; log_pt untouched; the four images equally likely; only
    in training (validation is the plain loss); refused without the angles' preprocessing."""
    pre = {"feature_names": ["deta", "dphi", "log_pt"], "mean": [0.05, -0.02, 4.6]}
    pre["std"] = [0.2, 0.3, 1.0]
    tok = GridTokenizer(preprocessing=pre)
    cfg = NTPConfig(backbone=TINY, augment_reflections=True)
    task = NTPTask(cfg, tokenizer=tok)
    mean, std = torch.tensor(pre["mean"]), torch.tensor(pre["std"])
    x = torch.randn(4, 6, 3)  # (B, N, F) standardised
    signs = torch.tensor([[1, 1], [-1, 1], [1, -1], [-1, -1]])
    out = task.reflect(x, signs)
    phys, mirrored = x * std + mean, out * std + mean  # (B, N, F) physical
    assert torch.allclose(mirrored[..., :2], phys[..., :2] * signs[:, None], atol=1e-6)
    assert torch.equal(out[..., 2], x[..., 2]) and torch.equal(out[0], x[0])
    drawn = task.reflect(x.repeat(100, 1, 1), generator=torch.Generator().manual_seed(0))
    sgn = torch.sign((drawn * std + mean)[:, 0, :2] / (x.repeat(100, 1, 1) * std + mean)[:, 0, :2])
    combos = torch.bincount(((sgn[:, 0] > 0) * 2 + (sgn[:, 1] > 0)).long(), minlength=4)
    assert combos.sum() == 400 and int(combos.min()) > 70  # 100 expected each
    with pytest.raises(InputError, match="signs"):
        task.reflect(x, signs[:2])
    # training only: in eval mode the loss is that of the same weights without the option
    plain = NTPTask(dataclasses.replace(cfg, augment_reflections=False), tokenizer=tok)
    plain.load_state_dict(task.state_dict())
    b = synthetic_batch(B=16, N=10)
    task.eval(), plain.eval()
    assert torch.equal(task.loss(b)["loss"], plain.loss(b)["loss"])
    task.train()
    torch.manual_seed(1)
    loss = task.loss(b)["loss"]
    assert torch.isfinite(loss) and not torch.equal(loss, plain.loss(b)["loss"])
    loss.backward()
    with pytest.raises(ConfigError, match="augment_reflections"):
        NTPTask(cfg, tokenizer=GridTokenizer())
