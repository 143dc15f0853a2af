"""VQ-VAE / FSQ / k-means tokenizers: shapes, masks, padding invariance, equivariance, save/load."""

from __future__ import annotations

import json

import pytest
import torch

from jetfm.core.checkpoint import content_hash
from jetfm.core.errors import CheckpointError, InputError
from jetfm.tokenizers import (
    PAD_ID,
    KMeansTokenizer,
    Tokenizer,
    TokenizerConfig,
    VQVAETokenizer,
    build_tokenizer,
)

from .conftest import gaussian_mixture_jets

SMALL = {
    "vqvae_particle": dict(codebook_size=64, latent_dim=8, hidden_dim=32, depth=2),
    "vqvae_conditional": dict(codebook_size=256, latent_dim=4, hidden_dim=32, depth=2, heads=4),
    "fsq": dict(
        codebook_size=125, latent_dim=8, hidden_dim=32, quantizer={"fsq_levels": (5, 5, 5)}
    ),
    "kmeans": dict(codebook_size=32),
}


def make(kind: str, data: dict[str, torch.Tensor] | None = None) -> Tokenizer:
    """A small tokenizer of each type, made ready to encode (k-means fitted; VQ codebook k-means-initialised)."""
    from jetfm.core.config import from_dict

    torch.manual_seed(0)
    tok = build_tokenizer(from_dict(TokenizerConfig, {"type": kind, **SMALL[kind]}))
    data = data or gaussian_mixture_jets(64, seed=5)
    if isinstance(tok, KMeansTokenizer):
        tok.fit(data["x"][data["mask"]])
    else:
        tok.train()
        tok(data["x"], data["mask"])  # runs the k-means codebook initialisation
    return tok.eval()


KINDS = list(SMALL)


@pytest.mark.parametrize("kind", KINDS)
def test_shapes_and_padding_ids(kind: str) -> None:
    tok = make(kind)
    d = gaussian_mixture_jets(10, seed=3)
    ids = tok.encode(d["x"], d["mask"])
    assert ids.shape == d["mask"].shape and ids.dtype == torch.int64
    assert torch.all(ids[~d["mask"]] == PAD_ID)
    assert torch.all((ids[d["mask"]] >= 0) & (ids[d["mask"]] < tok.codebook_size))
    rec = tok.decode(ids, d["mask"])
    assert rec.shape == d["x"].shape
    assert torch.all(rec[~d["mask"]] == 0)
    # decode without a mask infers it from the ids
    assert torch.equal(tok.decode(ids), rec)
    # deterministic: encoding twice gives the same ids, and encode leaves the codebook alone
    assert torch.equal(tok.encode(d["x"], d["mask"]), ids)


@pytest.mark.parametrize("kind", KINDS)
def test_padding_never_changes_a_real_token(kind: str) -> None:
    tok = make(kind)
    d = gaussian_mixture_jets(12, n_max=16, seed=4)
    ids = tok.encode(d["x"], d["mask"])
    # more padding columns, filled with different junk
    x2 = torch.cat([d["x"], torch.full((12, 9, 3), -55.0)], dim=1)
    x2[~torch.cat([d["mask"], torch.zeros(12, 9, dtype=torch.bool)], dim=1)] = 3.3
    m2 = torch.cat([d["mask"], torch.zeros(12, 9, dtype=torch.bool)], dim=1)
    ids2 = tok.encode(x2, m2)
    assert torch.equal(ids2[:, :16], ids)
    assert torch.all(ids2[:, 16:] == PAD_ID)
    # a jet's tokens do not depend on the other jets in the batch
    assert torch.equal(tok.encode(d["x"][3:4], d["mask"][3:4]), ids[3:4])


def test_conditional_tokenizer_is_permutation_equivariant() -> None:
    tok = make("vqvae_conditional")
    d = gaussian_mixture_jets(8, n_max=20, seed=6)
    d["mask"][:] = True  # full jets, so any permutation keeps real particles real
    perm = torch.randperm(20, generator=torch.Generator().manual_seed(0))
    ids = tok.encode(d["x"], d["mask"])
    ids_p = tok.encode(d["x"][:, perm], d["mask"][:, perm])
    assert torch.equal(ids_p, ids[:, perm])
    rec, rec_p = tok.decode(ids, d["mask"]), tok.decode(ids_p, d["mask"])
    assert torch.allclose(rec_p, rec[:, perm], atol=1e-5)


def test_conditional_token_depends_on_the_other_particles() -> None:
    """Unlike the per-particle tokenizer, the conditional one sees the set: its latents move."""
    tok = make("vqvae_conditional")
    d = gaussian_mixture_jets(4, n_max=10, seed=7)
    d["mask"][:] = True
    z = tok.latents(d["x"], d["mask"])
    x2 = d["x"].clone()
    x2[:, 5:] += 1.0  # change other particles only
    z2 = tok.latents(x2, d["mask"])
    first = torch.arange(40).view(4, 10)[:, :5].reshape(-1)
    assert not torch.allclose(z[first], z2[first], atol=1e-4)
    part = make("vqvae_particle")
    assert torch.allclose(
        part.latents(d["x"], d["mask"])[first], part.latents(x2, d["mask"])[first]
    )


@pytest.mark.parametrize("kind", KINDS)
def test_save_load_gives_identical_ids(kind: str, tmp_path) -> None:
    tok = make(kind)
    pre = {
        "feature_names": ["deta", "dphi", "log_pt"],
        "mean": [0.0, 0.0, 1.0],
        "std": [0.1, 0.1, 1.0],
    }
    tok.preprocessing = pre
    d = gaussian_mixture_jets(16, seed=8)
    ids = tok.encode(d["x"], d["mask"])
    rec = tok.decode(ids, d["mask"])
    path = tok.save_pretrained(tmp_path / "tok", meta={"note": "test"})
    assert tok.content_hash == content_hash(path)
    assert {p.name for p in path.iterdir()} >= {
        "model.safetensors",
        "config.yaml",
        "preprocessing.json",
        "meta.json",
    }
    meta = json.loads((path / "meta.json").read_text())
    assert (
        meta["kind"] == "tokenizer"
        and meta["codebook_size"] == tok.codebook_size
        and meta["note"] == "test"
    )
    back = Tokenizer.from_pretrained(path)
    assert type(back) is type(tok) and not back.training
    assert back.content_hash == tok.content_hash
    assert back.preprocessing["std"] == [0.1, 0.1, 1.0]
    assert torch.equal(back.encode(d["x"], d["mask"]), ids)
    assert torch.equal(back.decode(ids, d["mask"]), rec)
    assert back.preprocessing_object().feature_names == ("deta", "dphi", "log_pt")


def test_from_pretrained_rejects_other_kinds_and_wrong_class(tmp_path) -> None:
    from jetfm.core.checkpoint import save_checkpoint

    other = save_checkpoint(tmp_path / "m", {"w": torch.zeros(2)}, {"a": 1}, kind="backbone")
    with pytest.raises(CheckpointError, match="tokenizer"):
        Tokenizer.from_pretrained(other)
    path = make("kmeans").save_pretrained(tmp_path / "km")
    with pytest.raises(InputError, match="VQVAETokenizer"):
        VQVAETokenizer.from_pretrained(path)


def test_bad_inputs_raise_input_errors() -> None:
    tok = make("vqvae_particle")
    d = gaussian_mixture_jets(4, seed=9)
    with pytest.raises(InputError, match="3 features"):
        tok.encode(torch.zeros(4, 24, 5), d["mask"])
    with pytest.raises(InputError, match="bool mask"):
        tok.encode(d["x"], d["mask"].float())
    with pytest.raises(InputError, match="mask of shape"):
        tok.encode(d["x"], d["mask"][:, :5])
    ids = tok.encode(d["x"], d["mask"])
    ids[0, 0] = tok.codebook_size
    with pytest.raises(InputError, match="token ids in"):
        tok.decode(ids, d["mask"])
    with pytest.raises(InputError, match="preprocessing features"):
        build_tokenizer(
            TokenizerConfig(), preprocessing={"feature_names": ["deta"], "mean": [0], "std": [1]}
        )
    with pytest.raises(InputError, match="fitted"):
        KMeansTokenizer(TokenizerConfig(type="kmeans", codebook_size=4)).encode(d["x"], d["mask"])


def test_empty_batch_and_all_padding() -> None:
    tok = make("vqvae_conditional")
    x = torch.zeros(3, 5, 3)
    mask = torch.zeros(3, 5, dtype=torch.bool)
    ids = tok.encode(x, mask)
    assert torch.all(ids == PAD_ID)
    assert torch.all(tok.decode(ids, mask) == 0)


def test_length_buckets_give_the_same_tokens_as_one_jet_at_a_time() -> None:
    tok = make("vqvae_conditional")
    d = gaussian_mixture_jets(12, n_max=20, seed=10)
    d["mask"][2, :] = False  # an empty jet
    d["mask"][5, 3] = False  # a hole: real particles need not be left-aligned
    tok.bucket_jets = 3
    ids = tok.encode(d["x"], d["mask"])
    rec = tok.decode(ids, d["mask"])
    for j in range(12):
        one = tok.encode(d["x"][j : j + 1], d["mask"][j : j + 1])
        assert torch.equal(one, ids[j : j + 1])
        assert torch.allclose(tok.decode(one, d["mask"][j : j + 1]), rec[j : j + 1], atol=1e-5)
    assert torch.all(ids[2] == PAD_ID) and ids[5, 3] == PAD_ID and ids[5, 4] >= 0


@pytest.mark.parametrize("latent", [4, 16])
def test_large_codebook(latent: int) -> None:
    """16384 codes: KD-tree lookup (latent 4) or memory-bounded matmul chunks (latent 16)."""
    torch.manual_seed(0)
    tok = build_tokenizer(
        TokenizerConfig(codebook_size=16384, latent_dim=latent, hidden_dim=32)
    ).eval()
    d = gaussian_mixture_jets(40, seed=11)
    ids = tok.encode(d["x"], d["mask"])
    z = tok.latents(d["x"], d["mask"])
    want = torch.cdist(z.double(), tok.quantizer.codebook().double()).argmin(dim=1)
    assert torch.equal(ids[d["mask"]], want)
    assert tok.decode(ids, d["mask"]).shape == d["x"].shape
