"""Tokens -> particles -> native store, `sample` from a checkpoint, and evaluation with truth floors."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from jetfm.core.config import load_config
from jetfm.core.errors import ConfigError, InputError
from jetfm.data.features import Preprocessing, compute_features
from jetfm.data.store import Store, finalize_store, write_shard
from jetfm.evaluate.decoding import decode_to_jets, jets_from_particles, tokenize_and_decode
from jetfm.evaluate.generation import GenerationEvalConfig, evaluate_generation
from jetfm.evaluate.sampling import SampleConfig, sample
from jetfm.physics.jets import segment_sum
from jetfm.physics.kinematics import wrap_phi
from jetfm.tokenizers import KMeansTokenizer, TokenizerConfig
from tests.conftest import make_toy_jets
from tests.generation.conftest import CODEBOOK


def test_decode_matches_tokenizer_and_store_round_trip(kmeans_tokenizer, tmp_path) -> None:
    ids = torch.tensor([[3, 7, 7, 1], [12, 0, -1, -1], [5, -1, -1, -1]])
    mask = ids >= 0
    batch = decode_to_jets(ids, mask, kmeans_tokenizer, labels=np.array([0, 1, 1]))
    # by hand: centroid of each token -> physical (deta, dphi, log pT) -> particles at eta=phi=0
    pre = Preprocessing.from_dict(kmeans_tokenizer.preprocessing)
    dec = kmeans_tokenizer.decode(ids, mask).numpy().astype(np.float64)
    phys = pre.inverse_transform(dec)
    for j in range(3):
        n = int(mask[j].sum())
        want = phys[j, :n]
        want = want[np.argsort(-want[:, 2], kind="stable")]  # stored pT-descending
        sl = slice(batch.offsets[j], batch.offsets[j + 1])
        np.testing.assert_allclose(batch.particles["eta"][sl], want[:, 0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(
            batch.particles["phi"][sl], wrap_phi(want[:, 1]), rtol=1e-5, atol=1e-6
        )
        np.testing.assert_allclose(batch.particles["pt"][sl], np.exp(want[:, 2]), rtol=1e-5)
    assert batch.jets["n_particles"].tolist() == [4, 2, 1]
    # jet four-momentum = sum of the constituents; massless particles
    p = batch.particles
    for k in ("px", "py", "pz", "energy"):
        assert np.allclose(segment_sum(p[k], batch.offsets), _jet_component(batch, k), rtol=1e-5)
    e2 = p["energy"].astype(np.float64) ** 2
    m2 = e2 - p["px"] ** 2.0 - p["py"] ** 2.0 - p["pz"] ** 2.0
    assert np.all(np.abs(m2) <= 1e-4 * e2)
    # a one-particle jet has tau ratios 0, no mass and its axis on the particle
    assert batch.jets["tau21"][2] == 0 and batch.jets["mass"][2] == pytest.approx(0, abs=1e-2)
    assert batch.jets["eta"][2] == pytest.approx(batch.particles["eta"][batch.offsets[2]], abs=1e-5)
    # pt_scale multiplies every particle's pT (so the jet's pT and mass), angles unchanged
    scaled = decode_to_jets(ids, mask, kmeans_tokenizer, pt_scale=np.array([2.0, 0.5, 1.0]))
    per = np.repeat([2.0, 0.5, 1.0], batch.counts())
    np.testing.assert_allclose(scaled.particles["pt"], batch.particles["pt"] * per, rtol=1e-6)
    np.testing.assert_allclose(scaled.particles["eta"], batch.particles["eta"], atol=1e-6)
    for k in ("pt", "mass"):
        want_k = batch.jets[k] * [2.0, 0.5, 1.0]
        np.testing.assert_allclose(scaled.jets[k], want_k, rtol=1e-4, atol=1e-3)
    # into a native store and back, unchanged
    write_shard(tmp_path / "st", "g-0", batch, split="test")
    finalize_store(tmp_path / "st", classes=["a", "b"], source={"generator": "test"})
    back = Store(tmp_path / "st").read("test")
    for k in batch.particles:
        assert np.array_equal(back.particles[k], batch.particles[k])
    for k in batch.jets:
        assert np.array_equal(back.jets[k], batch.jets[k])


def _jet_component(batch, k: str) -> np.ndarray:
    j = batch.jets
    if k == "energy":
        return j["energy"]
    pt, phi, eta = (j[x].astype(np.float64) for x in ("pt", "phi", "eta"))
    return {"px": pt * np.cos(phi), "py": pt * np.sin(phi), "pz": pt * np.sinh(eta)}[k]


def test_jets_from_particles_rejects_empty_jets() -> None:
    with pytest.raises(InputError, match="at least one particle"):
        jets_from_particles(
            np.ones((2, 2)), np.zeros((2, 2)), np.zeros((2, 2)), np.array([[1, 1], [0, 0]])
        )


def test_tokenize_and_decode_is_the_tokenizer_limit(kmeans_tokenizer) -> None:
    jets = make_toy_jets(30, seed=11)
    dec = tokenize_and_decode(jets, kmeans_tokenizer)
    assert dec.n_jets == 30
    assert np.array_equal(dec.jets["label"], jets.jets["label"])
    assert np.array_equal(
        dec.counts(), np.minimum(jets.counts(), 64)
    )  # max_particles of the fixture
    # jet pT survives a 16-code tokenizer only roughly, but it is the same jets
    ratio = dec.jets["pt"] / jets.jets["pt"]
    assert 0.5 < float(np.median(ratio)) < 2.0


def test_sample_store_reproducible_and_cache_independent(ntp_checkpoint, tmp_path, capsys) -> None:
    kw = {"batch_size": 8, "max_length": 24, "seed": 7, "shard_size": 16}
    out = sample(ntp_checkpoint, 20, tmp_path / "a", **kw)
    st = Store(out)
    assert st.n_jets("test") == 20 and st.classes == ["class0", "class1"]
    b = st.read("test")
    # class-conditional model without class_label: classes in turn
    assert b.jets["label"].tolist() == [i % 2 for i in range(20)]
    assert np.all(b.counts() >= 1) and np.all(b.counts() <= 24)
    assert st.manifest["source"]["sampling"]["top_k"] == 0
    again = Store(sample(ntp_checkpoint, 20, tmp_path / "b", use_cache=False, **kw)).read("test")
    for k in b.particles:
        assert np.array_equal(b.particles[k], again.particles[k]), k
    # resume: a lost shard is redrawn identically
    shutil.rmtree(tmp_path / "b")
    sample(ntp_checkpoint, 20, tmp_path / "b", **kw)
    (tmp_path / "b" / "manifest.json").unlink()
    sorted((tmp_path / "b" / "shards").glob("*.h5"))[0].unlink()  # the first 16 jets
    capsys.readouterr()
    resumed = Store(sample(ntp_checkpoint, 20, tmp_path / "b", progress=True, **kw)).read("test")
    assert np.array_equal(resumed.particles["pt"], b.particles["pt"])
    assert "sample: 16 jets in this call, 20 in the store" in capsys.readouterr().out
    # a finished store is not overwritten by accident; other settings do not mix into a partial run
    with pytest.raises(InputError, match="overwrite"):
        sample(ntp_checkpoint, 20, tmp_path / "b", **kw)
    (tmp_path / "b" / "manifest.json").unlink()
    with pytest.raises(InputError, match="temperature"):
        sample(ntp_checkpoint, 20, tmp_path / "b", temperature=0.5, **kw)
    one = Store(sample(ntp_checkpoint, 4, tmp_path / "c", class_label="class1", **kw)).read()
    assert one.jets["label"].tolist() == [1, 1, 1, 1]
    with pytest.raises(ConfigError, match="class_label"):
        sample(ntp_checkpoint, 4, tmp_path / "d", class_label="top", **kw)
    with pytest.raises(ConfigError, match="jet_temperature"):
        sample(ntp_checkpoint, 4, tmp_path / "e", jet_temperature=1.0, **kw)  # no jet tokens


def test_evaluate_generation_toy_stores(ntp_checkpoint, toy_store, tmp_path) -> None:
    gen = sample(ntp_checkpoint, 48, tmp_path / "gen", batch_size=48, max_length=40, seed=1)
    res = evaluate_generation(gen, toy_store, out_dir=tmp_path / "eval", n_jets=48, num_batches=2)
    assert res["n_jets"] == 48 and "half" in res["truth_floor_from"]
    names = {r["metric"] for r in res["generated"]}
    assert {"w1m", "w1p", "w1efp", "fpd", "kpd", "kl_mass", "kl_n_particles"} <= names
    assert not {"kl_eta", "kl_phi"} & names
    for rows in (res["generated"], res["tokenized"]):
        for r in rows:
            assert math.isfinite(r["value"]) and math.isfinite(r["floor"]), r
            assert r["n"] == 48
    g = {r["metric"]: r for r in res["generated"]}
    t = {r["metric"]: r for r in res["tokenized"]}
    # an untrained model is far off; the tokenized reference is closer in mass
    assert g["w1m"]["value"] > g["w1m"]["floor"]
    assert t["w1m"]["value"] < g["w1m"]["value"]
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["n_jets"] == 48 and len(saved["plots"]) == 8
    assert all((tmp_path / "eval" / f"jet_{k}.png").is_file() for k in ("mass", "tau21"))
    assert "truth floor" in (tmp_path / "eval" / "metrics.md").read_text()

    # the floor can come from another split too
    def ev(out: str, **kw):
        return evaluate_generation(
            gen,
            toy_store,
            out_dir=tmp_path / out,
            reference2_split="val",
            n_jets=24,
            num_batches=2,
            plots=False,
            **kw,
        )

    res2 = ev("e2")
    assert res2["n_jets"] == 24 and "val" in res2["truth_floor_from"]
    # a floor from several pairs: the extra ones are disjoint chunks of the floor split
    res3 = ev("e3", floor_pairs=3, floor_split="train")
    one = {r["metric"]: r for r in res2["generated"]}
    for r in res3["generated"]:
        assert len(r["floor_values"]) == 3 and r["value"] == pytest.approx(
            one[r["metric"]]["value"]
        )
        assert r["floor_values"][0] == pytest.approx(one[r["metric"]]["floor"])
        assert r["floor"] == pytest.approx(np.mean(r["floor_values"]))
    assert "3 pairs" in res3["truth_floor_from"]
    assert "first-pair floor" in (tmp_path / "e3" / "metrics.md").read_text()
    with pytest.raises(ConfigError, match="floor_split"):
        GenerationEvalConfig(floor_pairs=2, split="test")
    with pytest.raises(InputError, match="floor_split"):
        ev("e4", floor_pairs=50, floor_split="train")


@pytest.mark.parametrize("name", ["sample.yaml", "sample_eval.yaml"])
def test_configs_parse(name) -> None:
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "configs" / name
    cls = SampleConfig if name == "sample.yaml" else GenerationEvalConfig
    cfg = load_config(cls, path)
    assert isinstance(cfg, cls)
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(cls, path, ["tempreature=1.0"])


def test_jet_sample_massless_observables() -> None:
    """Two back-to-back-in-phi massive particles: the massless jet mass is computed with E = |p|."""
    from jetfm.data.schema import JetBatch
    from jetfm.evaluate.generative import jet_sample_from_batch

    pt, eta, phi, m = np.array([10.0, 10.0]), np.zeros(2), np.array([0.1, -0.1]), 1.0
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), np.zeros(2)
    e = np.sqrt(pt**2 + m**2)
    jets = {"pt": [px.sum()], "eta": [0.0], "phi": [0.0], "energy": [e.sum()], "label": [0]}
    jets["mass"] = [np.sqrt(e.sum() ** 2 - px.sum() ** 2)]
    jets["n_particles"] = [2]
    part = {"px": px, "py": py, "pz": pz, "energy": e, "pt": pt, "eta": eta, "phi": phi}
    b = JetBatch(np.array([0, 2]), part, {k: np.asarray(v) for k, v in jets.items()}).cast()
    massless = jet_sample_from_batch(b)
    stored = jet_sample_from_batch(b, massless=False)
    # massless: m^2 = (|p1| + |p2|)^2 - |p1 + p2|^2 = 400 - (20 cos 0.1)^2
    assert massless.jets["mass"][0] == pytest.approx(
        np.sqrt(400 - (20 * np.cos(0.1)) ** 2), rel=1e-5
    )
    assert stored.jets["mass"][0] == pytest.approx(jets["mass"][0], rel=1e-5)
    assert stored.jets["mass"][0] > massless.jets["mass"][0]
    np.testing.assert_allclose(massless.feature("dphi")[0], [0.1, -0.1], atol=1e-6)
    np.testing.assert_allclose(massless.feature("pt_rel")[0], pt / px.sum(), rtol=1e-6)


def test_jet_token_values_are_those_of_the_decoded_jet(kmeans_tokenizer) -> None:
    """NTPTask.jet_observables (torch, in the loss) == the stored fields of decode_to_jets (numpy,
    what `jetfm sample` writes), so a jet drawn in a bin is judged by the same definition."""
    from tests.generation.conftest import make_task

    task = make_task(kmeans_tokenizer, jet_tokens=["pt", "mass", "energy", "n_particles"])
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, kmeans_tokenizer.codebook_size, (64, 20), generator=g)
    mask = torch.arange(20)[None] < torch.randint(1, 21, (64, 1), generator=g)
    obs = task.jet_observables(ids, mask)
    jets = decode_to_jets(ids, mask, kmeans_tokenizer).jets
    for name in ("pt", "mass", "energy", "n_particles"):
        np.testing.assert_allclose(obs[name].numpy(), jets[name], rtol=1e-5, atol=1e-3)


def _ntp_run_config(tok: Path, store: Path, out: Path) -> dict:
    """A tiny NTP pre-training config with jet tokens (two steps on the toy store)."""
    cfg = {
        "data": {"store": str(store), "feature_set": "kin3", "preprocessing_jets": 5000},
        "loader": {
            "batch_size": 16,
            "max_particles": 32,
            "block_size": 64,
            "group_blocks": 2,
            "drop_last": False,
        },
        "task": {
            "name": "ntp",
            "tokenizer": str(tok),
            "n_classes": 2,
            "jet_tokens": ["mass", "n_particles"],
            "jet_token_bins": 4,
            "position_embedding": True,
            "max_length": 32,
            "backbone": {"dim": 16, "depth": 1, "heads": 2, "causal": True, "input": "tokens"},
        },
        "train": {
            "output_dir": str(out),
            "max_steps": 2,
            "accelerator": "cpu",
            "devices": 1,
            "val_every": 0,
            "progress_bar": False,
            "quiet": True,
        },
    }
    return cfg


@pytest.mark.filterwarnings("ignore:.*more than max_particles")
def test_pretrain_with_jet_tokens_then_sample(kmeans_tokenizer, toy_store, tmp_path) -> None:
    """`jetfm pretrain` fits the jet tokens' bin edges on the training jets and saves them with
    the weights; `jetfm sample` draws jet bins, then particles, into a store."""
    import yaml

    from jetfm.tasks import Task
    from jetfm.train import latest_checkpoint, pretrain

    kmeans_tokenizer.save_pretrained(tmp_path / "tok")
    cfg = _ntp_run_config(tmp_path / "tok", toy_store, tmp_path / "run")
    (tmp_path / "ntp.yaml").write_text(yaml.safe_dump(cfg))
    run = pretrain(tmp_path / "ntp.yaml", [], resume=False)
    model = latest_checkpoint(run) / "model"
    task = Task.from_pretrained(model)
    # the bins are quantiles of the jets the training tokens decode to (here: every training
    # jet, cut to the loader's 32 particles), built as generated jets are built; float32 (loader)
    # vs float64 (here) standardisation can move a particle across a cell boundary, hence 2e-3
    train = tokenize_and_decode(Store(toy_store).read("train"), kmeans_tokenizer, max_particles=32)
    q = np.linspace(0, 1, 5)[1:-1]
    expected = [np.quantile(train.jets["mass"], q), np.quantile(train.counts(), q)]
    np.testing.assert_allclose(task.jet_edges.numpy(), np.array(expected), rtol=2e-3)
    out = Store(sample(model, 6, tmp_path / "gen", batch_size=6, max_length=32, seed=0))
    b = out.read("test")
    assert b.n_jets == 6 and np.all(b.counts() >= 1) and np.all(b.counts() <= 32)
    cond = {"mass": float(np.median(train.jets["mass"]))}
    out = Store(sample(model, 4, tmp_path / "cond", max_length=32, jet_condition=cond))
    assert out.n_jets("test") == 4 and out.manifest["source"]["jet_condition"] == cond
    with pytest.raises(ConfigError, match="jet_condition"):
        sample(model, 4, tmp_path / "bad", max_length=32, jet_condition={"n_particles": 10})
    # particles drawn greedily, jet tokens at temperature 1 (tested in test_sampler.py)
    out = Store(sample(model, 6, tmp_path / "jt", max_length=32, temperature=0, jet_temperature=1))
    assert out.manifest["source"]["sampling"]["prefix_temperature"] == 1
    assert out.n_jets("test") == 6
    # consistent sampling (tested in tests/tasks/test_ntp.py) runs from `jetfm sample` too
    out = Store(sample(model, 6, tmp_path / "fit", max_length=32, consistent=True, max_redraws=2))
    assert out.manifest["source"]["consistent"] is True and out.n_jets("test") == 6
    # guidance (tested in test_sampler.py) runs from `jetfm sample`, in the redraws too: the model
    # as its own guide draws the unguided jets; the other class as the contrast changes them
    kw = {"max_length": 32, "consistent": True, "max_redraws": 2}
    same = Store(sample(model, 6, tmp_path / "self", guide_checkpoint=model, guidance=1.0, **kw))
    a, b = out.read("test"), same.read("test")
    assert np.array_equal(a.offsets, b.offsets) and np.array_equal(
        a.particles["pt"], b.particles["pt"]
    )
    assert same.manifest["source"]["guide_checkpoint"].startswith(str(model.resolve()))
    cls = Store(sample(model, 6, tmp_path / "cls", guidance=3.0, **kw))
    assert not np.array_equal(cls.read("test").particles["pt"], a.particles["pt"])
    with pytest.raises(ConfigError, match="max_redraws"):
        sample(model, 4, tmp_path / "bad", consistent=True, max_redraws=-1)
    # conditioned on the jet-level bins and classes of jets drawn from a store's split
    from jetfm.evaluate.sampling import reference_jet_bins

    classes = Store(toy_store).classes
    labels, bins = reference_jet_bins(task, toy_store, "train", 5, classes, seed=1)
    pick = np.random.default_rng(1).choice(Store(toy_store).read("train").n_jets, 5, replace=False)
    picked = Store(toy_store).read("train").select(pick)
    assert labels.tolist() == picked.jets["label"].tolist()
    td = tokenize_and_decode(picked, kmeans_tokenizer, max_particles=32)
    assert (
        bins[:, 1].tolist()
        == task.jet_bins(
            {
                "mass": torch.zeros(5),
                "n_particles": torch.as_tensor(td.counts(), dtype=torch.float64),
            }
        )[:, 1].tolist()
    )
    want_mass = task.jet_bins(
        {"mass": torch.as_tensor(td.jets["mass"]), "n_particles": torch.zeros(5)}
    )[:, 0]
    assert (bins[:, 0] - want_mass).abs().max() <= 1  # float32 vs float64 standardisation
    out = Store(
        sample(model, 6, tmp_path / "ref", max_length=32, jet_condition_from=toy_store, seed=1)
    )
    got = out.read("test").jets["label"]
    assert (
        got.tolist() == reference_jet_bins(task, toy_store, "train", 6, classes, seed=1)[0].tolist()
    )
    assert "train" in out.manifest["source"]["jet_condition_from"]
    with pytest.raises(ConfigError, match="jet_condition_from"):
        sample(model, 4, tmp_path / "bad", jet_condition_from=toy_store, class_label=0)


@pytest.mark.filterwarnings("ignore:.*more than max_particles")
def test_pretrain_init_from_continues_from_a_checkpoint(
    kmeans_tokenizer, toy_store, tmp_path
) -> None:
    """`init_from` starts a run from another run's weights and jet-token bins (continued
    pre-training on another store), and refuses another architecture or another tokenizer."""
    import yaml

    from jetfm.core.checkpoint import load_checkpoint
    from jetfm.tasks import Task
    from jetfm.train import latest_checkpoint, pretrain

    kmeans_tokenizer.save_pretrained(tmp_path / "tok")
    cfg = _ntp_run_config(tmp_path / "tok", toy_store, tmp_path / "a")
    (tmp_path / "ntp.yaml").write_text(yaml.safe_dump(cfg))
    first = Task.from_pretrained(latest_checkpoint(pretrain(tmp_path / "ntp.yaml", [])) / "model")
    # continued on other jets (the val split, whose own quantiles differ) with a learning rate so
    # small that one step leaves the weights where they started
    over = [f"init_from={tmp_path / 'a'}", "data.train_split=val", "train.max_steps=1"]
    over += ["train.optimizer.lr=1.0e-12", "train.schedule.name=constant"]
    run = pretrain(tmp_path / "ntp.yaml", [*over, f"train.output_dir={tmp_path / 'b'}"])
    second = Task.from_pretrained(latest_checkpoint(run) / "model")
    assert torch.equal(second.jet_edges, first.jet_edges)
    refit = np.quantile(Store(toy_store).read("val").counts(), [0.25, 0.5, 0.75])
    assert not np.allclose(first.jet_edges[1].numpy(), refit)  # so the edges were not refitted
    a, b = first.task_state_dict(), second.task_state_dict()
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-6, rtol=0, msg=k)
    meta = load_checkpoint(latest_checkpoint(run) / "model" / "task").meta
    assert meta["init_from"]["step"] == 2
    assert meta["init_from"]["folder"].endswith("task")

    with pytest.raises(ConfigError, match=r"init_from.*same architecture"):
        pretrain(
            tmp_path / "ntp.yaml",
            [*over, "task.backbone.dim=8", f"train.output_dir={tmp_path / 'c'}"],
        )
    other = make_toy_jets(100, seed=9)
    pre = Preprocessing.for_set("kin3", max_particles=64).fit(other)
    x = torch.as_tensor(pre.transform(compute_features(other, pre.feature_names)))
    tok_cfg = TokenizerConfig(type="kmeans", codebook_size=CODEBOOK)
    tok = KMeansTokenizer(tok_cfg, preprocessing=pre.to_dict()).fit(x, seed=1, iters=2)
    tok.save_pretrained(tmp_path / "tok2")
    with pytest.raises(ConfigError, match=r"init_from.*tokenizer"):
        pretrain(
            tmp_path / "ntp.yaml",
            [*over, f"task.tokenizer={tmp_path / 'tok2'}", f"train.output_dir={tmp_path / 'd'}"],
        )
