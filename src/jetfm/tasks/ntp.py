"""Next-token prediction over pT-ordered particle tokens (OmniJet-alpha, arXiv 2403.05618).

Each jet becomes the sequence ``[START, t_1, ..., t_n, STOP]`` of its particles' token ids in
descending pT (the loader's order). A causal backbone reads ``[START, t_1, ..., t_n]`` and predicts
``[t_1, ..., t_n, STOP]``; the loss is cross-entropy over real positions only (padding never enters
the head). Ids, with K = the tokenizer's codebook size:

* ``0 .. K-1`` particle tokens, ``START_ID = K``, ``STOP_ID = K + 1`` (vocabulary ``K + 2``);
* targets at padded positions are ``IGNORE_ID = -100``, the value cross-entropy skips.

Optional class conditioning (``n_classes > 0``) adds a learned class embedding to the START token,
so :meth:`NTPTask.generate` can sample jets of a chosen class. Sampling uses the backbone's KV cache
and feeds one token per step.

Jets longer than the loader's ``max_particles`` were already cut to their leading particles, so for
them STOP means "truncated here"; keep ``max_particles`` above the multiplicities you generate.

Shapes: B jets, N particles, L = N + 1 sequence positions, D width, V = K + 2 vocabulary.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from jetfm.core.errors import ConfigError, InputError
from jetfm.models.backbone import Backbone, BackboneConfig
from jetfm.models.heads import TokenHead
from jetfm.nn.attention import KVCache
from jetfm.tasks.base import Task, TokenizerLike, check_batch, register_task

IGNORE_ID = -100


def _default_backbone() -> BackboneConfig:
    return BackboneConfig(causal=True, input="tokens")


@dataclass
class NTPConfig:
    """Next-token prediction: a causal token backbone, the frozen tokenizer, class conditioning."""

    backbone: BackboneConfig = field(default_factory=_default_backbone)
    tokenizer: str | None = None  # tokenizer checkpoint folder (required to build the task)
    n_classes: int = 0  # > 0: class-conditional START token (batch["label"] in [0, n_classes))
    head_transform: bool = False

    def __post_init__(self) -> None:
        if not self.backbone.causal:
            raise ConfigError(
                "a causal backbone (causal: true) for next-token prediction",
                field="task.backbone.causal",
                found=False,
            )
        if self.backbone.input not in ("tokens", "hybrid"):
            raise ConfigError(
                "input 'tokens' or 'hybrid'",
                field="task.backbone.input",
                found=repr(self.backbone.input),
            )
        if self.n_classes < 0:
            raise ConfigError("an integer >= 0", field="task.n_classes", found=self.n_classes)


def front_pack(x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Move real particles to the front of each jet, keeping their order -> (x, mask)."""
    order = (~mask).to(torch.int8).argsort(dim=1, stable=True)  # (B, N)
    x = x.gather(1, order[..., None].expand(-1, -1, x.shape[-1]))
    return x, mask.gather(1, order)


@register_task("ntp")
class NTPTask(Task):
    """Causal next-token prediction; see the module docstring."""

    config_class = NTPConfig

    def __init__(self, config: NTPConfig, tokenizer: TokenizerLike | None = None) -> None:
        if tokenizer is None:
            raise ConfigError(
                "a tokenizer checkpoint folder", field="task.tokenizer", found=config.tokenizer
            )
        K = int(tokenizer.codebook_size)
        vocab = K + 2
        if config.backbone.vocab_size == 0:
            config = dataclasses.replace(
                config, backbone=dataclasses.replace(config.backbone, vocab_size=vocab)
            )
        elif config.backbone.vocab_size != vocab:
            raise ConfigError(
                f"codebook size + 2 = {vocab} (or 0 to fill in)",
                field="task.backbone.vocab_size",
                found=config.backbone.vocab_size,
            )
        super().__init__(config, tokenizer)
        self.check_tokenizer_features(config.backbone.n_features)
        self.codebook_size = K
        self.start_id = K
        self.stop_id = K + 1
        self.vocab_size = vocab
        D = config.backbone.dim
        self.backbone = Backbone(config.backbone)
        self.class_embed = nn.Embedding(config.n_classes, D) if config.n_classes > 0 else None
        self.head = TokenHead(D, vocab, config.head_transform)

    # ------------------------------------------------------------------ sequences
    def build_sequences(self, x: Tensor, mask: Tensor) -> dict[str, Tensor]:
        """Token sequences of a batch: ``inputs`` (B, L), ``input_mask`` (B, L), ``targets`` (B, L)
        with ``IGNORE_ID`` at padding, and ``x_in`` (B, L, F) (features shifted like the inputs)."""
        x, mask = front_pack(x, mask)
        B = mask.shape[0]
        with torch.no_grad():
            ids = self.tokenizer.encode(x, mask).long()  # (B, N), frozen
        start = torch.full((B, 1), self.start_id, dtype=torch.long, device=mask.device)
        inputs = torch.cat([start, ids.masked_fill(~mask, self.stop_id)], dim=1)  # (B, L)
        input_mask = torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1)  # (B, L)
        ignore = torch.full((B, 1), IGNORE_ID, dtype=torch.long, device=mask.device)
        targets = torch.cat([ids.masked_fill(~mask, IGNORE_ID), ignore], dim=1)  # (B, L)
        n = mask.sum(dim=1)  # (B,)
        targets[torch.arange(B, device=mask.device), n] = self.stop_id
        x_in = torch.cat([torch.zeros_like(x[:, :1]), x], dim=1)  # (B, L, F)
        return {"inputs": inputs, "input_mask": input_mask, "targets": targets, "x_in": x_in}

    def _embed(
        self, inputs: Tensor, x_in: Tensor | None, labels: Tensor | None, first: bool
    ) -> Tensor:
        """Embed ids (B, T) (+ features); add the class embedding to position 0 if ``first``."""
        h = self.backbone.embed(x_in if self.config.backbone.input == "hybrid" else None, inputs)
        if self.class_embed is not None and first:
            if labels is None:
                raise InputError(
                    f"class labels in [0, {self.config.n_classes}) for a class-conditional model",
                    field="label",
                    found=None,
                )
            labels = labels.long()
            if labels.numel() and (
                int(labels.min()) < 0 or int(labels.max()) >= self.config.n_classes
            ):
                raise InputError(
                    f"labels in [0, {self.config.n_classes})",
                    field="label",
                    found=f"range [{int(labels.min())}, {int(labels.max())}]",
                )
            cls = self.class_embed(labels)[:, None]  # (B, 1, D)
            h = torch.cat([h[:, :1] + cls, h[:, 1:]], dim=1)
        return h

    # ------------------------------------------------------------------ loss
    def loss(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        c = self.config
        n_feat = c.backbone.n_features if c.backbone.input == "hybrid" else None
        check_batch(batch, n_feat)
        seq = self.build_sequences(batch["x"], batch["mask"])
        h = self._embed(seq["inputs"], seq["x_in"], batch.get("label"), first=True)
        hid = self.backbone.encode(h, seq["input_mask"])  # (B, L, D)
        real = seq["input_mask"]
        logits = self.head(hid[real]).float()  # (M, V), only real positions
        targets = seq["targets"][real]  # (M,)
        loss = F.cross_entropy(logits, targets, ignore_index=IGNORE_ID)
        out = {"loss": loss}
        with torch.no_grad():
            pred = logits.argmax(-1)
            is_stop = targets == self.stop_id
            out["accuracy"] = (pred == targets).float().mean()
            out["stop_accuracy"] = (pred[is_stop] == self.stop_id).float().mean()
            out["perplexity"] = loss.detach().exp()
        return out

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def generate(
        self,
        n_jets: int,
        max_particles: int,
        *,
        labels: Tensor | None = None,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Sample jets token by token -> ids (B, max_particles) (-1 after STOP) and mask (B, N).

        Every jet gets at least one particle (STOP is forbidden at the first step) and at most
        ``max_particles``. One forward pass per step over the new token only (KV cache).
        """
        if temperature <= 0:
            raise InputError("temperature > 0", field="temperature", found=temperature)
        dev = self.head.proj.weight.device
        B = n_jets
        F_ = self.config.backbone.n_features
        cache = KVCache()
        tok = torch.full((B, 1), self.start_id, dtype=torch.long, device=dev)
        feat = torch.zeros(B, 1, F_, device=dev)
        if labels is not None:
            labels = labels.to(dev)
        alive = torch.ones(B, dtype=torch.bool, device=dev)
        ids_out: list[Tensor] = []
        masks_out: list[Tensor] = []
        for step in range(max_particles):
            h = self._embed(tok, feat, labels, first=step == 0)
            hid = self.backbone.encode(h, alive[:, None], cache=cache)  # (B, 1, D)
            logits = self.head(hid[:, 0]).float() / temperature  # (B, V)
            logits[:, self.start_id] = -float("inf")
            if step == 0:
                logits[:, self.stop_id] = -float("inf")
            if top_k is not None and top_k < logits.shape[-1]:
                kth = logits.topk(top_k, dim=-1).values[:, -1:]
                logits = logits.masked_fill(logits < kth, -float("inf"))
            probs = logits.softmax(-1)
            if generator is not None and generator.device != probs.device:
                probs = probs.to(generator.device)  # a seeded CPU generator drives CUDA sampling
            nxt = torch.multinomial(probs, 1, generator=generator).to(dev)  # (B, 1)
            alive = alive & (nxt[:, 0] != self.stop_id)
            ids_out.append(nxt.masked_fill(~alive[:, None], -1))
            masks_out.append(alive[:, None].clone())
            if not bool(alive.any()):
                break
            tok = nxt.masked_fill(~alive[:, None], self.stop_id)
            if self.config.backbone.input == "hybrid":
                feat = self.tokenizer.decode(tok.clamp(max=self.codebook_size - 1), alive[:, None])
        ids = torch.cat(ids_out, dim=1)
        mask = torch.cat(masks_out, dim=1)
        pad = max_particles - ids.shape[1]
        if pad > 0:
            ids = F.pad(ids, (0, pad), value=-1)
            mask = F.pad(mask, (0, pad), value=False)
        return ids, mask

    @torch.no_grad()
    def generate_features(
        self, n_jets: int, max_particles: int, **kwargs: Any
    ) -> tuple[Tensor, Tensor]:
        """Sample jets and decode their tokens -> standardised features (B, N, F) and mask (B, N)."""
        ids, mask = self.generate(n_jets, max_particles, **kwargs)
        return self.tokenizer.decode(ids, mask), mask
