"""Jet classification on a (pre-trained) backbone: the fine-tuning task.

A :class:`ClassifyTask` is a backbone plus a classifier head (ParT-style class attention, or masked
mean pooling + MLP) trained with cross-entropy (BCE with one logit for two classes). Three regimes
share one architecture, so their results compare like for like:

* ``frozen``   - backbone weights fixed (``requires_grad = False``, kept in eval mode), head trained;
* ``finetune`` - everything trained, the backbone at ``backbone_lr_factor`` times the learning rate
  (the factor is declared by :meth:`ClassifyTask.lr_factors` and applied by the fine-tuning loop);
* ``scratch``  - the same architecture with random initial weights.

Input sequences (``ClassifyConfig.sequence``):

* ``"set"`` - a feature backbone (masked particle modelling): the padded particles as they are;
* ``"ntp"`` - a token backbone from next-token prediction: the jet becomes ``[START, t_1, ..., t_n]``
  exactly as in pre-training (tokens from the frozen tokenizer, pT order), so a frozen backbone
  sees the inputs it was trained on. Not reproduced (fine-tuning warns,
  :func:`jetfm.train.finetune.pretraining_inputs_not_reproduced`): the pre-training task's jet
  tokens, decoded hybrid features, position and Fourier input embeddings, which the generation recipe
  (``configs/ntp_gen8192.yaml``) turns on; the default ``configs/ntp.yaml`` uses none of them.

Why a causal (NTP) backbone stays causal by default: the hidden state at position ``i`` then means
what it meant in pre-training (a summary of the first ``i`` particles), so frozen features are the
pre-trained ones exactly, and the last real position summarises the whole jet. The class-attention
head attends over *all* positions, so nothing is lost by causality at the pooling step. Switching
such a backbone to bidirectional attention (``bidirectional: true`` in the fine-tuning config) is
offered for the ``finetune``/``scratch`` regimes, where the weights can adapt to the new mask.

Shapes: B jets, N particles, L = N + 1 positions of an NTP sequence, F features, D width, C outputs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from jetfm.core.errors import ConfigError, InputError
from jetfm.models.backbone import Backbone, BackboneConfig
from jetfm.models.heads import (
    ClassAttentionClassifier,
    MeanPoolClassifier,
    class_probabilities,
    classification_loss,
)
from jetfm.tasks.base import Task, TokenizerLike, check_batch, register_task
from jetfm.tasks.jet_structure import front_pack

Regime = Literal["frozen", "finetune", "scratch"]
HeadKind = Literal["class_attention", "mean"]
SequenceKind = Literal["set", "ntp"]
REGIMES: tuple[str, ...] = ("frozen", "finetune", "scratch")


@dataclass
class ClassifyConfig:
    """Backbone (architecture as in pre-training) + classifier head + regime.

    ``n_classes = 2`` gives one logit (sigmoid / BCE), more classes one logit each (softmax / CE).
    ``head_heads = 0`` takes the backbone's number of heads.
    """

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    n_classes: int = 2
    class_names: list[str] = field(default_factory=list)
    head: HeadKind = "class_attention"
    head_depth: int = 2
    head_heads: int = 0
    head_hidden: int = 0  # mean-pool MLP width; 0 = backbone width
    head_dropout: float = 0.0
    sequence: SequenceKind = "set"
    tokenizer: str | None = None  # tokenizer folder (token/hybrid backbones)
    regime: Regime = "finetune"
    backbone_lr_factor: float = 0.1
    freeze_steps: int = 0  # finetune: train the head alone for this many first steps

    def __post_init__(self) -> None:
        if self.n_classes < 2:
            raise ConfigError("an integer >= 2", field="task.n_classes", found=self.n_classes)
        if self.class_names and len(self.class_names) != self.n_classes:
            raise ConfigError(
                f"{self.n_classes} class names (n_classes)",
                field="task.class_names",
                found=self.class_names,
            )
        if self.head not in ("class_attention", "mean"):
            raise ConfigError(
                "one of ['class_attention', 'mean']", field="task.head", found=repr(self.head)
            )
        if self.regime not in REGIMES:
            raise ConfigError(f"one of {list(REGIMES)}", field="task.regime", found=self.regime)
        if self.sequence not in ("set", "ntp"):
            raise ConfigError("one of ['set', 'ntp']", field="task.sequence", found=self.sequence)
        if self.head_depth < 1:
            raise ConfigError("an integer >= 1", field="task.head_depth", found=self.head_depth)
        heads = self.head_heads or self.backbone.heads
        if self.head_heads < 0 or self.backbone.dim % heads:
            raise ConfigError(
                f"0 or a divisor of backbone.dim ({self.backbone.dim})",
                field="task.head_heads",
                found=self.head_heads,
            )
        if self.head_hidden < 0:
            raise ConfigError("an integer >= 0", field="task.head_hidden", found=self.head_hidden)
        if not 0.0 <= self.head_dropout < 1.0:
            raise ConfigError(
                "a number in [0, 1)", field="task.head_dropout", found=self.head_dropout
            )
        if not 0.0 < self.backbone_lr_factor <= 10.0:
            raise ConfigError(
                "a number in (0, 10]",
                field="task.backbone_lr_factor",
                found=self.backbone_lr_factor,
            )
        if self.freeze_steps < 0:
            raise ConfigError("an integer >= 0", field="task.freeze_steps", found=self.freeze_steps)
        if self.sequence == "set" and self.backbone.input != "features":
            raise ConfigError(
                "sequence 'ntp' for a token or hybrid backbone",
                field="task.sequence",
                found=f"'set' with backbone.input '{self.backbone.input}'",
            )

    @property
    def n_outputs(self) -> int:
        return 1 if self.n_classes == 2 else self.n_classes


@register_task("classify")
class ClassifyTask(Task):
    """Backbone + classifier head; see the module docstring."""

    config_class = ClassifyConfig

    def __init__(self, config: ClassifyConfig, tokenizer: TokenizerLike | None = None) -> None:
        super().__init__(config, tokenizer)
        c = config
        self.start_id: int | None = None
        if c.sequence == "ntp":
            if tokenizer is None:
                raise ConfigError(
                    "a tokenizer checkpoint folder for a token backbone",
                    field="task.tokenizer",
                    found=c.tokenizer,
                )
            K = int(tokenizer.codebook_size)
            if c.backbone.vocab_size < K + 2:
                raise ConfigError(
                    f"codebook size + 2 = {K + 2} or more (start and stop tokens of next-token"
                    " prediction, and its jet tokens if any)",
                    field="task.backbone.vocab_size",
                    found=c.backbone.vocab_size,
                )
            self.start_id = K
            self.stop_id = K + 1
        self.backbone = Backbone(c.backbone)
        D = c.backbone.dim
        if c.head == "class_attention":
            self.head: nn.Module = ClassAttentionClassifier(
                D,
                c.n_outputs,
                heads=c.head_heads or c.backbone.heads,
                depth=c.head_depth,
                dropout=c.head_dropout,
            )
        else:
            self.head = MeanPoolClassifier(
                D, c.n_outputs, hidden=c.head_hidden or None, dropout=c.head_dropout
            )
        if c.regime == "frozen":
            self.backbone.requires_grad_(False)

    # ------------------------------------------------------------------ regimes
    @property
    def backbone_frozen(self) -> bool:
        return self.config.regime == "frozen"

    def train(self, mode: bool = True) -> ClassifyTask:
        super().train(mode)
        if self.backbone_frozen:
            self.backbone.eval()  # a frozen backbone keeps its inference behaviour (no dropout)
        return self

    def lr_factors(self) -> dict[str, float]:
        """Learning-rate multipliers by parameter-name prefix (read by the fine-tuning loop)."""
        if self.config.regime == "finetune" and self.config.backbone_lr_factor != 1.0:
            return {"backbone.": self.config.backbone_lr_factor}
        return {}

    # ------------------------------------------------------------------ forward
    def encode(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Hidden states (B, L, D) fed to the head and their mask (B, L)."""
        mask = mask.to(torch.bool)
        if self.config.sequence == "set":
            return self.backbone(x, mask), mask
        assert self.tokenizer is not None and self.start_id is not None
        x, mask = front_pack(x, mask)  # the loader already does this
        B = mask.shape[0]
        with torch.no_grad():
            ids = self.tokenizer.encode(x, mask).long()  # (B, N), frozen
        ids = ids.masked_fill(~mask, self.stop_id)  # a valid id at padding (never attended)
        start = torch.full((B, 1), self.start_id, dtype=torch.long, device=mask.device)
        inputs = torch.cat([start, ids], dim=1)  # (B, L)
        seq_mask = torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1)  # (B, L)
        x_in = None
        if self.config.backbone.input == "hybrid":
            x_in = torch.cat([torch.zeros_like(x[:, :1]), x], dim=1)  # (B, L, F)
        h = self.backbone.encode(self.backbone.embed(x_in, inputs), seq_mask)  # (B, L, D)
        return h, seq_mask

    def logits(self, x: Tensor, mask: Tensor) -> Tensor:
        """Class logits (B, C) (C = 1 for a binary task) for particles x (B, N, F), mask (B, N)."""
        h, m = self.encode(x, mask)
        return self.head(h, m)

    def predict_proba(self, x: Tensor, mask: Tensor) -> Tensor:
        """Class probabilities (B, n_classes); a binary task gives [p0, p1]."""
        return class_probabilities(self.logits(x, mask))

    def loss(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        c = self.config
        # a token backbone: the tokenizer checks the feature count when it encodes
        n_feat = c.backbone.n_features if c.backbone.input != "tokens" else None
        check_batch(batch, n_feat, keys=("label",))
        labels = batch["label"].long()
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= c.n_classes):
            raise InputError(
                f"labels in [0, {c.n_classes})",
                field="label",
                found=f"range [{int(labels.min())}, {int(labels.max())}]",
            )
        logits = self.logits(batch["x"], batch["mask"])  # (B, C)
        loss = classification_loss(logits.float(), labels)
        with torch.no_grad():
            if logits.shape[-1] == 1:
                pred = (logits[:, 0] > 0).long()
            else:
                pred = logits.argmax(-1)
            acc = (pred == labels).float().mean()
        return {"loss": loss, "accuracy": acc}


class ClassifierScores(nn.Module):
    """``(x (B, N, F), mask (B, N)) -> (logits (B, C), probs (B, n_classes))``: the exported graph."""

    def __init__(self, task: ClassifyTask) -> None:
        super().__init__()
        self.task = task

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        logits = self.task.logits(x, mask.to(torch.bool))
        return logits, class_probabilities(logits)


# ---------------------------------------------------------------------- pre-trained checkpoints
def resolve_backbone_dir(path: str | os.PathLike[str]) -> Path:
    """Find the backbone checkpoint folder in anything a pre-training run leaves behind.

    Accepts a backbone folder itself, a task/model folder holding ``backbone/`` (what
    ``Task.save_pretrained`` writes, also a classifier), a step folder (``model/backbone``), or a
    run folder (its newest step folder, via ``checkpoints/last.json``).
    """
    p = Path(path)
    if (p / "model.safetensors").is_file() and (p / "meta.json").is_file():
        kind = json.loads((p / "meta.json").read_text(encoding="utf-8")).get("kind")
        if kind == "backbone":
            return p
        if (p.parent / "backbone" / "model.safetensors").is_file():
            return p.parent / "backbone"
        raise InputError(
            "a backbone checkpoint (kind 'backbone')", file=p, field="kind", found=repr(kind)
        )
    for sub in ("backbone", "model/backbone", "classifier/backbone"):
        if (p / sub / "model.safetensors").is_file():
            return p / sub
    last_json = p / "checkpoints" / "last.json"  # a run folder (layout of jetfm.train.resume)
    if last_json.is_file():
        last = p / "checkpoints" / json.loads(last_json.read_text(encoding="utf-8"))["folder"]
        if (last / "model" / "backbone" / "model.safetensors").is_file():
            return last / "model" / "backbone"
    raise InputError(
        "a backbone folder, a task/step folder with backbone/, or a pre-training run folder",
        file=p,
        field="pretrained",
        found="no backbone checkpoint inside" if p.exists() else "no such folder",
    )


def backbone_sequence(config: BackboneConfig) -> SequenceKind:
    """How a backbone reads jets: token/hybrid or causal backbones were trained as NTP sequences."""
    return "ntp" if (config.input != "features" or config.causal) else "set"


def classifier_dir(path: str | os.PathLike[str]) -> Path:
    """The ``task/`` folder of a classifier: accepts a fine-tuning run folder, ``classifier/``, a
    step folder's ``model/``, or the ``task/`` folder itself."""
    p = Path(path)
    for sub in ("classifier/task", "task", "model/task", ""):
        q = p / sub if sub else p
        if (q / "model.safetensors").is_file() and (q / "meta.json").is_file():
            meta = json.loads((q / "meta.json").read_text(encoding="utf-8"))
            if meta.get("task") == "classify":
                return q
    raise InputError(
        "a classifier folder written by `jetfm finetune` (classifier/ or its task/)",
        file=p,
        field="classifier",
        found="no classifier checkpoint inside" if p.exists() else "no such folder",
    )


def load_classifier(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> ClassifyTask:
    """Load a fine-tuned classifier (any folder :func:`classifier_dir` accepts), in eval mode."""
    task = ClassifyTask.from_pretrained(classifier_dir(path), map_location=map_location)
    assert isinstance(task, ClassifyTask)
    return task.eval()
