"""Self-describing checkpoint folders, shared by tokenizers, backbones and classifiers.

Layout of a folder written by :func:`save_checkpoint`::

    model.safetensors    weights (no pickle)
    config.yaml          the resolved component config
    preprocessing.json   feature order + standardisation stats (if the model consumes features)
    tokenizer/           the tokenizer this model depends on (a full checkpoint folder), or
    meta.json            jetfm version, git sha, kind, step, data hash, tokenizer content hash, ...

The folder is written under a temporary name and renamed when complete. :func:`content_hash` is a
SHA-256 over the weights, config and preprocessing, so a dependent model can check on load that it is
paired with the same tokenizer it was trained with.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from jetfm.core.atomic import atomic_path, write_json_atomic
from jetfm.core.config import to_dict
from jetfm.core.errors import CheckpointError

WEIGHTS = "model.safetensors"
CONFIG = "config.yaml"
PREPROCESSING = "preprocessing.json"
META = "meta.json"
TOKENIZER = "tokenizer"


def git_sha() -> str | None:
    """The git commit of the jetfm source tree, if it is a checkout (None for an installed wheel)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` returns."""

    path: Path
    state_dict: dict[str, Any]
    config: dict[str, Any]
    preprocessing: dict[str, Any] | None
    meta: dict[str, Any]

    @property
    def tokenizer_path(self) -> Path | None:
        p = self.path / TOKENIZER
        return p if p.is_dir() else None


def save_checkpoint(
    path: str | os.PathLike[str],
    state_dict: dict[str, Any],
    config: Any,
    *,
    kind: str,
    preprocessing: dict[str, Any] | None = None,
    tokenizer: str | os.PathLike[str] | None = None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint folder atomically and return its path.

    ``config`` is a config dataclass or a plain dict. ``tokenizer`` is the folder of a tokenizer
    checkpoint that this model depends on; it is copied inside and its content hash recorded.
    """
    from safetensors.torch import save_file

    import jetfm

    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.mkdir(parents=True)
        tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
        save_file(tensors, str(tmp / WEIGHTS), metadata={"kind": kind})
        cfg = config if isinstance(config, dict) else to_dict(config)
        (tmp / CONFIG).write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
        if preprocessing is not None:
            write_json_atomic(tmp / PREPROCESSING, preprocessing)
        full_meta: dict[str, Any] = {
            "format": "jetfm-checkpoint",
            "format_version": 1,
            "kind": kind,
            "jetfm_version": jetfm.__version__,
            "git_sha": git_sha(),
        }
        if tokenizer is not None:
            tok = Path(tokenizer)
            if not (tok / WEIGHTS).is_file():
                raise CheckpointError(f"{tok}: not a checkpoint folder (no {WEIGHTS})")
            shutil.copytree(tok, tmp / TOKENIZER)
            full_meta["tokenizer_hash"] = content_hash(tok)
        full_meta.update(meta or {})
        full_meta["content_hash"] = content_hash(tmp)
        write_json_atomic(tmp / META, full_meta)
    return path


def load_checkpoint(path: str | os.PathLike[str], *, kind: str | None = None) -> Checkpoint:
    """Read a checkpoint folder; missing parts, a wrong kind or a changed tokenizer raise CheckpointError."""
    from safetensors.torch import load_file

    path = Path(path)
    for name in (WEIGHTS, CONFIG, META):
        if not (path / name).is_file():
            raise CheckpointError(f"{path}: not a jetfm checkpoint folder (missing {name})")
    meta = json.loads((path / META).read_text(encoding="utf-8"))
    if kind is not None and meta.get("kind") != kind:
        raise CheckpointError(
            f"{path}: field 'kind': expected a '{kind}' checkpoint, found '{meta.get('kind')}'"
        )
    if "tokenizer_hash" in meta:
        tok = path / TOKENIZER
        if not tok.is_dir():
            raise CheckpointError(
                f"{path}: depends on a tokenizer but has no '{TOKENIZER}/' folder"
            )
        found = content_hash(tok)
        if found != meta["tokenizer_hash"]:
            raise CheckpointError(
                f"{tok}: field 'tokenizer_hash': expected {meta['tokenizer_hash']}, found {found}"
                " (the tokenizer was changed after this model was trained)"
            )
    try:
        state = load_file(str(path / WEIGHTS))
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"{path / WEIGHTS}: unreadable weights ({exc})") from exc
    config = yaml.safe_load((path / CONFIG).read_text(encoding="utf-8")) or {}
    pre = None
    if (path / PREPROCESSING).is_file():
        pre = json.loads((path / PREPROCESSING).read_text(encoding="utf-8"))
    return Checkpoint(path=path, state_dict=state, config=config, preprocessing=pre, meta=meta)


def content_hash(path: str | os.PathLike[str]) -> str:
    """SHA-256 over weights, config and preprocessing of a checkpoint folder (not meta.json)."""
    path = Path(path)
    h = hashlib.sha256()
    for name in (WEIGHTS, CONFIG, PREPROCESSING):
        f = path / name
        if f.is_file():
            h.update(name.encode())
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()
