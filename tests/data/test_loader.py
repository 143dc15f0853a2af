from __future__ import annotations

import tracemalloc

import h5py
import numpy as np
import pytest
import torch

from jetfm.data.features import Preprocessing, compute_features
from jetfm.data.loader import LoaderConfig, load_padded, make_dataloader
from jetfm.data.store import Store


@pytest.fixture(scope="module")
def pre(toy_store):
    return Preprocessing.for_set("kin3").fit(Store(toy_store).read("train"))


def _keys(batches):
    # identify a jet by its (pt, eta) which are unique in the toy sample
    return [tuple(np.round(j[:2].tolist(), 4)) for b in batches for j in b["jet"]]


def test_batches_shapes_mask_and_values(toy_store, pre):
    cfg = LoaderConfig(batch_size=64, shuffle=False, bucketing=False, max_particles=128)
    batches = list(make_dataloader(toy_store, "val", pre, cfg))
    assert len(batches) == 300 // 64
    b = batches[0]
    assert b["x"].dtype == torch.float32 and b["mask"].dtype == torch.bool
    n = b["x"].shape[1]
    assert b["mask"].shape == (64, n) and b["label"].shape == (64,) and b["jet"].shape == (64, 5)
    assert b["mask"].sum(1).max() == n  # padded to the longest jet only
    assert torch.all(b["x"][~b["mask"]] == 0)
    # first jet of the store, in order: values equal the standardised features
    data = Store(toy_store).read("val", limit=1)
    ref = pre.transform(compute_features(data, pre.feature_names))
    np.testing.assert_allclose(b["x"][0][b["mask"][0]].numpy(), ref, rtol=1e-5, atol=1e-6)


def test_epoch_covers_each_jet_once_across_ranks_and_workers(toy_store, pre):
    cfg = LoaderConfig(batch_size=50, block_size=100, group_blocks=2, drop_last=True)
    seen = []
    for rank in range(2):
        batches = list(make_dataloader(toy_store, "train", pre, cfg, rank=rank, world_size=2))
        seen.append(_keys(batches))
    assert len(seen[0]) == len(seen[1])  # ranks stay in step
    allk = seen[0] + seen[1]
    assert len(set(allk)) == len(allk)  # no jet twice
    assert len(allk) >= 2000 - 2 * 2 * 100  # at most a few blocks' tails dropped


def test_shuffle_is_seeded_and_changes_with_epoch(toy_store, pre):
    cfg = LoaderConfig(batch_size=100, seed=3)
    a = _keys(make_dataloader(toy_store, "train", pre, cfg))
    b = _keys(make_dataloader(toy_store, "train", pre, cfg))
    c = _keys(make_dataloader(toy_store, "train", pre, cfg, epoch=1))
    assert a == b
    assert a != c and sorted(a) == sorted(c)


def test_start_batch_resumes_exactly(toy_store, pre):
    cfg = LoaderConfig(batch_size=40, seed=1)
    full = list(make_dataloader(toy_store, "train", pre, cfg))
    rest = list(make_dataloader(toy_store, "train", pre, cfg, start_batch=7))
    assert len(rest) == len(full) - 7
    for x, y in zip(full[7:], rest, strict=True):
        assert torch.equal(x["x"], y["x"]) and torch.equal(x["mask"], y["mask"])


def test_workers_partition_and_resume(toy_store, pre):
    cfg = LoaderConfig(batch_size=40, seed=2, num_workers=2, block_size=200)
    full = list(make_dataloader(toy_store, "train", pre, cfg))
    keys = _keys(full)
    assert len(set(keys)) == len(keys)
    rest = list(make_dataloader(toy_store, "train", pre, cfg, start_batch=5))
    assert _keys(rest) == keys[5 * 40 :]


def test_bucketing_reduces_padding(toy_store, pre):
    def pad_frac(bucketing):
        cfg = LoaderConfig(batch_size=64, bucketing=bucketing, seed=0)
        real = tot = 0
        for b in make_dataloader(toy_store, "train", pre, cfg):
            real += int(b["mask"].sum())
            tot += b["mask"].numel()
        return 1 - real / tot

    assert pad_frac(True) < 0.5 * pad_frac(False)


def test_truncation_keeps_highest_pt_and_warns_once(toy_store, pre):
    cfg = LoaderConfig(batch_size=32, max_particles=8, shuffle=False, bucketing=False)
    with pytest.warns(UserWarning, match="max_particles=8") as rec:
        batches = list(make_dataloader(toy_store, "val", pre, cfg))
    assert len([w for w in rec if "max_particles" in str(w.message)]) == 1
    b = batches[0]
    assert b["x"].shape[1] == 8
    logpt = b["x"][..., 2]
    assert torch.all(
        logpt[:, :-1] >= logpt[:, 1:] - 1e-6
    )  # still pT-descending: the leading ones kept


def test_memory_is_bounded_by_one_group(tmp_path, pre):
    """Peak memory does not grow with the store: a 4x larger store streams in the same memory."""
    from tests.conftest import write_toy_store

    def peak(n):
        root = write_toy_store(tmp_path / f"s{n}", {"train": n}, shard_size=1000)
        cfg = LoaderConfig(batch_size=50, block_size=100, group_blocks=1)
        list(make_dataloader(root, "train", pre, cfg))  # warm caches/imports
        tracemalloc.start()
        for _ in make_dataloader(root, "train", pre, cfg):
            pass
        p = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return p, Store(root).manifest["splits"]["train"]["n_particles"] * 3 * 4

    small, _ = peak(2000)
    big, big_total = peak(8000)
    assert big < 1.5 * small
    assert big < 0.25 * big_total


def test_load_padded_matches_store(toy_store, pre):
    d = load_padded(toy_store, "test", pre, limit=20)
    assert d["x"].shape[0] == 20
    data = Store(toy_store).read("test", limit=20)
    assert d["mask"].sum().item() == data.n_particles


def test_tokens_stored_beside_features_reach_the_batch(tmp_path, pre):
    import shutil

    from jetfm.core.errors import InputError
    from jetfm.data.store import token_tags, write_tokens

    root = tmp_path / "s"
    shutil.copytree(_store_for_tokens(tmp_path), root)
    st = Store(root)
    for path in st.shards("val"):
        with h5py.File(path) as f:
            n = int(f.attrs["n_particles"])
        # token id = particle index within its shard modulo 97: checkable after shuffling
        write_tokens(root, "toy", path, np.arange(n) % 97)
    assert token_tags(root) == ["toy"]
    cfg = LoaderConfig(batch_size=16, shuffle=False, bucketing=False)
    b = next(iter(make_dataloader(root, "val", pre, cfg, tokens="toy")))
    assert b["tokens"].shape == b["mask"].shape and b["tokens"].dtype == torch.int64
    assert torch.all(b["tokens"][~b["mask"]] == -1)
    n0 = int(b["mask"][0].sum())
    assert b["tokens"][0, :n0].tolist() == list(range(n0))  # first jet of the first shard
    with pytest.raises(InputError, match="tokens"):
        make_dataloader(root, "train", pre, cfg, tokens="toy")  # train split was never tokenized
    with pytest.raises(InputError, match="shape"):
        write_tokens(root, "bad", st.shards("val")[0], np.zeros(3, dtype=np.int64))


def _store_for_tokens(tmp_path):
    from tests.conftest import write_toy_store

    return write_toy_store(tmp_path / "base", {"train": 100, "val": 100}, shard_size=50)
