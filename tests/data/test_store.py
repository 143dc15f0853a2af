from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from jetfm.core.errors import InputError
from jetfm.data.store import Store, finalize_store, read_shard, shard_exists, write_shard
from tests.conftest import make_toy_jets


def test_write_read_roundtrip(tmp_path):
    b = make_toy_jets(50, seed=1)
    write_shard(tmp_path, "train-0", b, split="train", attrs={"seed": 1})
    assert shard_exists(tmp_path, "train-0")
    back = read_shard(tmp_path / "shards/train-0.h5")
    np.testing.assert_array_equal(back.offsets, b.offsets)
    for k in b.particles:
        np.testing.assert_array_equal(back.particles[k], b.particles[k])
    part = read_shard(tmp_path / "shards/train-0.h5", 10, 20, particle_fields=["pt"])
    assert part.n_jets == 10 and list(part.particles) == ["pt"]
    np.testing.assert_array_equal(part.particles["pt"], b.select(np.arange(10, 20)).particles["pt"])


def test_manifest_counts_splits_and_hash(toy_store):
    s = Store(toy_store)
    m = s.manifest
    assert m["classes"] == ["QCD", "Tbqq"]
    assert s.n_jets("train") == 2000 and s.n_jets("val") == 300 and s.n_jets() == 2600
    assert m["particle_fields"]["pt"]["unit"] == "GeV"
    train_files = {e["file"] for e in m["splits"]["train"]["shards"]}
    test_files = {e["file"] for e in m["splits"]["test"]["shards"]}
    assert not train_files & test_files  # disjoint by construction
    cc = m["splits"]["train"]["class_counts"]
    assert sum(cc.values()) == 2000
    assert len(m["content_hash"]) == 64
    b = s.read("val")
    assert b.n_jets == 300
    assert s.read("train", limit=123).n_jets == 123


def test_hash_changes_with_content(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    write_shard(a, "train-0", make_toy_jets(20, seed=1), split="train")
    write_shard(b, "train-0", make_toy_jets(20, seed=2), split="train")
    ha = finalize_store(a, classes=["QCD", "Tbqq"], source={})["content_hash"]
    hb = finalize_store(b, classes=["QCD", "Tbqq"], source={})["content_hash"]
    assert ha != hb


def test_bad_inputs_are_named(tmp_path):
    b = make_toy_jets(10, seed=3)
    b.particles["pt"][5] = np.nan
    with pytest.raises(InputError, match=r"field 'pt'.*NaN"):
        write_shard(tmp_path, "x", b, split="train")
    assert not (tmp_path / "shards" / "x.h5").exists()
    assert not list((tmp_path / "shards").glob(".*"))  # no temporary left behind
    with pytest.raises(InputError, match="split"):
        write_shard(tmp_path, "x", make_toy_jets(5), split="training")
    empty = make_toy_jets(5)
    empty.offsets[2] = empty.offsets[1]  # make jet 1 empty
    with pytest.raises(InputError):
        write_shard(tmp_path, "y", empty, split="train")
    with pytest.raises(InputError, match=r"manifest\.json"):
        Store(tmp_path / "nowhere")


def test_labels_checked_against_classes(tmp_path):
    b = make_toy_jets(10, n_classes=3, seed=0)
    b.jets["label"][:] = 2
    write_shard(tmp_path, "train-0", b, split="train")
    with pytest.raises(InputError, match="label"):
        finalize_store(tmp_path, classes=["QCD", "Tbqq"], source={})


def test_corrupt_shard_named(tmp_path):
    write_shard(tmp_path, "train-0", make_toy_jets(10), split="train")
    p = tmp_path / "shards/train-0.h5"
    p.write_bytes(p.read_bytes()[:200])
    with pytest.raises(InputError, match=r"train-0\.h5"):
        read_shard(p)


def test_manifest_is_json(toy_store):
    m = json.loads((toy_store / "manifest.json").read_text())
    with h5py.File(toy_store / m["splits"]["train"]["shards"][0]["file"]) as f:
        assert f.attrs["split"] == "train"


def test_limited_read_spans_every_shard(tmp_path):
    """One class per shard (as simulation writes them): a limited read must still see both classes."""
    for label in (0, 1):
        b = make_toy_jets(100, seed=label)
        b.jets["label"][:] = label
        write_shard(tmp_path, f"c{label}-train", b, split="train")
    finalize_store(tmp_path, classes=["QCD", "Tbqq"], source={})
    part = Store(tmp_path).read("train", limit=51)
    assert part.n_jets == 51
    assert sorted(np.bincount(part.jets["label"]).tolist()) == [25, 26]
