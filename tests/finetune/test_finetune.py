"""finetune(): labelled subsets, regimes through the real training loop, checkpoints, predict."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from jetfm.core.config import from_dict
from jetfm.core.errors import InputError
from jetfm.data.store import Store
from jetfm.evaluate.metrics import roc_auc
from jetfm.evaluate.predict import classifier_preprocessing, predict, score
from jetfm.tasks.classify import load_classifier
from jetfm.train import load_training_state
from jetfm.train.finetune import (
    FinetuneConfig,
    balanced_subset,
    class_map,
    finetune,
    load_labelled,
    load_pretrained,
)

from .conftest import quiet_train


def _cfg(pretrained: Path | None, store: Path, out: Path, **kw: object) -> FinetuneConfig:
    train = kw.pop("train", {})
    base = {
        "pretrained": None if pretrained is None else str(pretrained),
        "data": {"store": str(store), "n_labels": 200, "val_split": None},
        "loader": {"batch_size": 32, "max_particles": 64},
        "head": {"depth": 1},
        "train": quiet_train(out, **train),
        **kw,
    }
    return from_dict(FinetuneConfig, base)


def test_balanced_subset_is_seeded_nested_and_balanced() -> None:
    labels = np.array([0] * 70 + [1] * 20 + [-1] * 10)
    a = balanced_subset(labels, 30, 2, seed=3)
    assert np.bincount(labels[a]).tolist() == [15, 15] and len(set(a)) == 30
    assert np.array_equal(a, balanced_subset(labels, 30, 2, seed=3))
    assert set(balanced_subset(labels, 10, 2, seed=3)) <= set(a)  # nested in n
    assert not np.array_equal(np.sort(a), np.sort(balanced_subset(labels, 30, 2, seed=4)))
    assert np.bincount(labels[balanced_subset(labels, 5, 2, seed=0)]).tolist() == [3, 2]
    with pytest.raises(InputError, match="n_labels"):
        balanced_subset(labels, 50, 2, seed=0)  # class 1 has only 20 jets
    assert len(balanced_subset(labels, None, 2, seed=0)) == 90  # all usable jets


def test_finetune_learns_a_separable_toy_problem(
    mpm_run: Path, toy_store: Path, tmp_path: Path
) -> None:
    cfg = _cfg(
        mpm_run,
        toy_store,
        tmp_path / "ft",
        data={"store": str(toy_store), "n_labels": 400, "val_split": "val", "val_jets": 64},
        train={"max_steps": 40, "optimizer": {"lr": 3e-3}, "val_every": 20, "val_batches": 1},
    )
    out = finetune(cfg)
    assert out == tmp_path / "ft" / "classifier"
    labelled = json.loads((tmp_path / "ft" / "labelled.json").read_text())
    assert labelled["class_counts"] == [200, 200] and labelled["regime"] == "finetune"
    clf = load_classifier(out)
    pre = classifier_preprocessing(out)
    assert pre.to_dict() == load_pretrained(mpm_run).preprocessing.to_dict()  # never refitted
    st = Store(toy_store)
    test = load_labelled(st, "test", class_map(st.classes, []), pre)
    probs = score(clf, test, pre, max_particles=64)
    auc = roc_auc(test.labels, probs[:, 1])
    assert auc > 0.9, auc  # ~0.999 measured: the toy classes differ in width and multiplicity
    # predict(): every test jet in store order, the same scores, metrics in the attributes
    path = predict(tmp_path / "ft", toy_store, "test")
    with h5py.File(path) as f:
        np.testing.assert_allclose(f["scores"][...], probs, atol=1e-5)
        assert np.array_equal(f["label"][...], test.labels)
        assert json.loads(f.attrs["classes"]) == ["QCD", "Tbqq"]
        assert json.loads(f.attrs["metrics"])["auc"] == pytest.approx(auc, abs=1e-4)
    # saved classifier == trained weights of the final step; reloading is exact
    again = load_classifier(out)
    b = {k: v[:16] for k, v in next(iter([_padded(test, pre)])).items()}
    assert torch.equal(clf.logits(b["x"], b["mask"]), again.logits(b["x"], b["mask"]))
    with pytest.raises(InputError, match="output"):
        finetune(cfg)  # an existing run is never overwritten silently


def _padded(test, pre):  # one padded batch of the test set
    from jetfm.train.finetune import InMemoryJets

    return next(InMemoryJets(test, pre, 64, 64, shuffle=False)())


def test_frozen_backbone_is_unchanged_and_head_trains(
    mpm_run: Path, toy_store: Path, tmp_path: Path
) -> None:
    out = finetune(
        _cfg(mpm_run, toy_store, tmp_path / "fr", regime="frozen", train={"max_steps": 3})
    )
    before = load_pretrained(mpm_run).state_dict
    after = load_file(str(out / "backbone" / "model.safetensors"))
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    clf = load_classifier(out)
    assert clf.config.regime == "frozen"
    torch.manual_seed(0)  # the head's initial weights of this run (train.seed = 0)
    from jetfm.train.finetune import build_classifier

    init = build_classifier(
        _cfg(mpm_run, toy_store, tmp_path / "x", regime="frozen"),
        load_pretrained(mpm_run),
        ["a", "b"],
    )
    assert not torch.equal(init.head.fc.weight, clf.head.fc.weight)


def test_lr_factor_and_frozen_warmup_in_the_loop(
    mpm_run: Path, toy_store: Path, tmp_path: Path
) -> None:
    cfg = _cfg(
        mpm_run,
        toy_store,
        tmp_path / "ft",
        backbone_lr_factor=0.1,
        freeze_steps=2,
        train={
            "max_steps": 3,
            "checkpoint_every": 2,
            "keep_last": 3,
            "optimizer": {"lr": 1e-3},
            "schedule": {"name": "constant"},
        },
    )
    finetune(cfg)
    ckpts = sorted((tmp_path / "ft" / "checkpoints").glob("step-*"))
    assert [c.name for c in ckpts] == ["step-0000002", "step-0000003"]
    st = load_training_state(ckpts[-1])
    groups = st.optimizer["param_groups"]
    n_backbone = len(load_pretrained(mpm_run).state_dict)
    assert sorted({g["lr"] for g in groups}) == pytest.approx([1e-4, 1e-3])
    assert sum(len(g["params"]) for g in groups if g["lr_factor"] == 0.1) == n_backbone
    pre = load_pretrained(mpm_run).state_dict
    w2 = load_file(str(ckpts[0] / "model" / "backbone" / "model.safetensors"))
    w3 = load_file(str(ckpts[1] / "model" / "backbone" / "model.safetensors"))
    assert all(torch.equal(pre[k], w2[k]) for k in pre)  # warm-up: backbone untouched
    assert any(not torch.equal(pre[k], w3[k]) for k in pre)  # then it trains


def test_ntp_backbone_finetunes_and_reloads(
    ntp_model: Path, toy_store: Path, tmp_path: Path
) -> None:
    cfg = _cfg(ntp_model, toy_store, tmp_path / "ntp", bidirectional=True, train={"max_steps": 2})
    out = finetune(cfg)
    assert (out / "task" / "tokenizer" / "model.safetensors").is_file()
    clf = load_classifier(out)
    assert clf.config.sequence == "ntp" and not clf.config.backbone.causal
    st = Store(toy_store)
    pre = classifier_preprocessing(out)
    test = load_labelled(st, "test", class_map(st.classes, []), pre, first=20)
    probs = score(clf, test, pre, max_particles=64)
    assert probs.shape == (20, 2) and np.allclose(probs.sum(1), 1.0, atol=1e-5)


def test_scratch_without_checkpoint_and_class_selection(toy_store: Path, tmp_path: Path) -> None:
    cfg = _cfg(
        None,
        toy_store,
        tmp_path / "sc",
        regime="scratch",
        backbone={"dim": 16, "depth": 1, "heads": 2, "n_features": 3},
        data={
            "store": str(toy_store),
            "n_labels": 40,
            "val_split": None,
            "classes": ["Tbqq", "QCD"],
        },
        train={"max_steps": 2},
    )
    out = finetune(cfg)
    clf = load_classifier(out)
    assert clf.config.class_names == ["Tbqq", "QCD"]  # relabelled in the requested order
    meta = json.loads((out / "task" / "meta.json").read_text())
    assert meta["pretrained"] is None and meta["classes"] == ["Tbqq", "QCD"]
    with pytest.raises(InputError, match=r"data\.classes"):
        class_map(["QCD", "Tbqq"], ["Wqq"])
