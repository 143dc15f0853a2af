"""Tokenizers and the native store: train on a store's splits, write token ids beside its features.

``tokenize_store`` makes ``jetfm tokenize`` reproducible: token ids depend only on the tokenizer's
weights (encoding is deterministic) and the store content, and are saved under a tag derived from the
tokenizer's content hash, so a store can carry the tokens of several tokenizers side by side.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from jetfm.core.checkpoint import content_hash
from jetfm.data.features import Preprocessing, compute_features, required_particle_fields
from jetfm.data.loader import load_padded, pad_batch, with_pad_row
from jetfm.data.store import ShardReader, Store, token_path, write_tokens
from jetfm.tokenizers.base import Tokenizer
from jetfm.tokenizers.config import TokenizerConfig
from jetfm.tokenizers.train import train_tokenizer


def train_tokenizer_on_store(
    cfg: TokenizerConfig,
    store_root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    max_particles: int = 128,
    max_jets: int | None = None,
    preprocessing_jets: int = 50_000,
) -> Path:
    """Fit the standardisation on the train split, then train ``cfg`` on train (validate on val)."""
    store = Store(store_root)
    fit_on = store.read("train", limit=preprocessing_jets)
    pre = Preprocessing(feature_names=tuple(cfg.feature_names), max_particles=max_particles).fit(
        fit_on
    )
    train = load_padded(store.root, "train", pre, max_particles=max_particles, limit=max_jets)
    val = None
    if store.n_jets("val") > 0:
        val = load_padded(
            store.root, "val", pre, max_particles=max_particles, limit=cfg.train.val_jets
        )
    meta = {"store": str(store.root), "data_hash": store.content_hash}
    return train_tokenizer(cfg, train, val, pre, out_dir, meta=meta)


def token_tag(tokenizer_dir: str | os.PathLike[str]) -> str:
    """The folder name under ``store/tokens/`` for a tokenizer: ``tok-`` + 12 hex of its content hash."""
    return f"tok-{content_hash(tokenizer_dir)[:12]}"


def tokenize_store(
    tokenizer_dir: str | os.PathLike[str],
    store_root: str | os.PathLike[str],
    *,
    batch_jets: int = 1024,
    progress: bool = True,
) -> str:
    """Encode every shard of ``store_root`` and store the ids beside it; returns the token tag.

    Jets longer than the tokenizer's ``max_particles`` (from its preprocessing) are encoded on their
    leading particles, exactly as the loader presents them; the particles beyond get id -1.
    Shards whose tokens already exist are skipped (the ids would be identical).
    """
    tok = Tokenizer.from_pretrained(tokenizer_dir)
    tok.eval()
    pre = tok.preprocessing_object()
    if pre is None:
        raise ValueError(
            f"{tokenizer_dir}: tokenizer has no preprocessing.json; cannot tokenize a store"
        )
    tag = token_tag(tokenizer_dir)
    tok_hash = content_hash(tokenizer_dir)
    store = Store(store_root)
    shards = [p for s in ("train", "val", "test") for p in store.shards(s)]
    n_max = pre.max_particles
    bar = tqdm(total=store.n_jets(), desc="tokenize", unit="jet", disable=not progress)
    for path in shards:
        if token_path(store.root, tag, path).is_file():
            bar.update(ShardReader.open(path).n_jets)
            continue
        reader = ShardReader.open(path)
        try:
            data = reader.read(
                particle_fields=required_particle_fields(pre.feature_names),
                jet_fields=["pt", "eta", "phi", "mass", "energy", "label"],
            )
        finally:
            reader.close()
        x = with_pad_row(
            pre.transform(compute_features(data, pre.feature_names)).astype(np.float32)
        )
        ids = np.full(data.n_particles, -1, dtype=np.int32)
        for start in range(0, data.n_jets, batch_jets):
            idx = np.arange(start, min(start + batch_jets, data.n_jets))
            b = pad_batch(x, data.offsets, data, idx, n_max)
            with torch.no_grad():
                t = tok.encode(b["x"], b["mask"]).numpy()  # (B, N)
            mask = b["mask"].numpy()
            dest = data.offsets[idx][:, None] + np.arange(mask.shape[1])[None, :]  # (B, N)
            ids[dest[mask]] = t[mask]
            bar.update(len(idx))
        write_tokens(
            store.root, tag, path, ids, attrs={"tokenizer_hash": tok_hash, "max_particles": n_max}
        )
    bar.close()
    return tag
