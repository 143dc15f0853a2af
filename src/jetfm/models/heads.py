"""Prediction heads that sit on a backbone's hidden states; a task pairs one with a target and a loss.

* :class:`TokenHead` - logits over token ids (masked particle modelling, next-token prediction);
* :class:`GeometricTokenHead` - the same, with each code's output row tied to its decoded features,
  so neighbouring codes share what is learned about them;
* :class:`ResidualCodeHead` - the second level of a two-level vocabulary: logits over residual
  codes given the hidden state and the cell drawn first;
* :class:`NeighbourPrior` - a log-prior over codes near earlier particles (a pointer mixture), added
  to a token head's logits in next-token generation;
* :class:`RegressionHead` - continuous per-particle outputs (e.g. standardised features);
* :class:`FlowMatchingHead` - a conditional flow-matching velocity field (rectified flow) over
  particle features, trained by :meth:`~FlowMatchingHead.loss`, sampled by integrating the ODE;
* :class:`ClassAttentionClassifier` - a class token attending over the particles (as in ParT);
* :class:`MeanPoolClassifier` - masked mean pooling + MLP.

Classifiers return ``(B, n_outputs)`` logits: ``n_outputs = 1`` for a binary task (sigmoid /
BCE), ``n_outputs = C`` for C classes (softmax / CE); :func:`classification_loss` handles both.
Heads never import plotting.

Shapes: B jets, N particles, M selected particles, F features, D width, K vocabulary size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from jetfm.core.errors import ConfigError
from jetfm.nn.attention import MultiHeadAttention
from jetfm.nn.transformer import Mlp


def _version_key(*tensors: Tensor) -> tuple[int, ...]:
    """Identity and in-place version of each tensor: a cache derived from them is stale once
    the key changes (a parameter update, a reload into new storage)."""
    return tuple(v for t in tensors for v in (t.data_ptr(), t._version))


#: floor of a neighbour prior before its log: finite where a_0 underflows and no kernel reaches
_PRIOR_FLOOR = 1e-30


class TokenHead(nn.Module):
    """hidden (..., D) -> logits (..., K), through a small transform (dense + GELU + LayerNorm).

    The transform before the vocabulary projection (as in BERT's prediction head) lets the
    backbone's output stay a general representation rather than being shaped by one vocabulary.
    """

    def __init__(self, dim: int, vocab_size: int, transform: bool = True) -> None:
        super().__init__()
        self.transform: nn.Module = (
            nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.LayerNorm(dim))
            if transform
            else nn.Identity()
        )
        self.proj = nn.Linear(dim, vocab_size)

    def forward(self, h: Tensor) -> Tensor:
        return self.proj(self.transform(h))


class GeometricTokenHead(nn.Module):
    """hidden (..., D) -> logits (..., K + S) over K codes with known features and S special ids.

    A plain projection learns every code's output row from that code's own occurrences; with 8192
    codes and ~100 training particles per code that is a noisy estimate. Here the row of code k is
    ``w_k + g(c_k)``: a free row plus a learned function ``g`` of the code's decoded (standardised)
    features ``c_k`` (K, F). ``g`` is an MLP on random Fourier features of ``c_k``, so ``h . g(c)``
    can form a bump around any point of feature space: "the next particle is near (deta, dphi)"
    then raises the logits of every code near there, not just of the codes seen there in training.
    Special ids (START, STOP) keep free rows only.

    In eval mode without gradients the effective weight (K + S, D) is computed once and reused
    until a parameter changes (tracked by the parameters' version counters), so KV-cached sampling
    pays for ``g`` once per call, not at every step.
    """

    def __init__(
        self,
        dim: int,
        code_features: Tensor,
        n_special: int,
        n_frequencies: int = 64,
        frequency_scale: float = 3.0,
    ) -> None:
        super().__init__()
        if code_features.ndim != 2 or code_features.shape[0] < 1:
            raise ValueError(f"code_features must be (K, F), got {tuple(code_features.shape)}")
        k, f = code_features.shape
        self.n_special = int(n_special)
        self.register_buffer("code_features", code_features.detach().float().clone())  # (K, F)
        # (F, n) random frequencies in cycles per standardised unit; saved with the weights
        self.register_buffer("frequencies", torch.randn(f, n_frequencies) * frequency_scale)
        self.geometry = nn.Sequential(
            nn.Linear(2 * n_frequencies, dim), nn.GELU(), nn.Linear(dim, dim)
        )
        # zero output layer: training starts from the plain projection (the initial loss stays at
        # ~log V instead of being blown up by large random geometry terms); its gradient is not zero
        nn.init.zeros_(self.geometry[-1].weight)
        nn.init.zeros_(self.geometry[-1].bias)
        self.proj = nn.Linear(dim, k + self.n_special)
        self._cache: tuple[tuple[int, ...], Tensor] | None = None  # (key, weight)

    def code_embedding(self) -> Tensor:
        """g(c_k) for every code: (K, D)."""
        phase = 2 * math.pi * self.code_features @ self.frequencies  # (K, n)
        return self.geometry(torch.cat([phase.sin(), phase.cos()], dim=-1))

    def weight(self) -> Tensor:
        """The effective output weight (K + S, D)."""
        geo = self.code_embedding()  # (K, D)
        pad = geo.new_zeros(self.n_special, geo.shape[1])
        return self.proj.weight + torch.cat([geo, pad])

    def forward(self, h: Tensor) -> Tensor:
        if self.training or torch.is_grad_enabled():
            self._cache = None
            return F.linear(h, self.weight(), self.proj.bias)
        key = _version_key(*self.parameters(), self.code_features, self.frequencies)
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, self.weight())
        return F.linear(h, self._cache[1], self.proj.bias)


class ResidualCodeHead(nn.Module):
    """hidden (..., D) and a cell id (...,) -> logits (..., R) over R residual codes.

    The second factor of ``p(token) = p(cell) p(residual | cell)`` for a two-level tokenizer
    (``kmeans_residual_codes``): R is shared by all C cells and a residual code means the same
    relative place in every cell, so one R-way projection serves them all; the cell enters as a
    learned embedding added before a GELU layer. Cost per position: O(D^2 + R D), against
    O(C R D) for one softmax over every token.
    """

    def __init__(self, dim: int, n_cells: int, n_codes: int) -> None:
        super().__init__()
        self.cell_embed = nn.Embedding(n_cells, dim)
        nn.init.normal_(self.cell_embed.weight, std=0.02)
        self.hidden = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, n_codes)

    def forward(self, h: Tensor, cell: Tensor) -> Tensor:
        z = F.gelu(self.hidden(h) + self.cell_embed(cell))  # (..., D)
        return self.proj(self.norm(z))  # (..., R)


def projection_in_dtype(head: nn.Module, dtype: torch.dtype) -> Callable[[Tensor], Tensor]:
    """``head`` (a :class:`TokenHead` or :class:`GeometricTokenHead`) as a function hidden (b, D)
    -> float32 logits (b, V) whose vocabulary projection runs in ``dtype`` (inputs and weight
    rounded, products accumulated in float32 by the matmul kernel); the transform before it and the
    bias stay float32.

    Why: at sampling batch sizes the (V, D) projection is about half of a KV-cached decoding step
    on the CPU, and in bfloat16 it runs ~4x faster there (tensor cores on a GPU). Rounding moves a
    logit by ~1e-2, so the draws are not those of float32 (the distribution is, to that precision).
    The weight is cast once, when the function is built: build it per sampling call, not while
    training.
    """
    if isinstance(head, GeometricTokenHead):
        weight, transform = head.weight(), nn.Identity()
    elif isinstance(head, TokenHead):
        weight, transform = head.proj.weight, head.transform
    else:
        raise ConfigError(
            "a TokenHead or GeometricTokenHead for a reduced-precision projection",
            field="head_dtype",
            found=type(head).__name__,
        )
    w = weight.detach().to(dtype)  # (V, D)
    bias = head.proj.bias

    def project(h: Tensor) -> Tensor:
        logits = F.linear(transform(h).to(dtype), w).float()  # (b, V)
        return logits if bias is None else logits + bias

    return project


class NeighbourPrior(nn.Module):
    """A log-prior (..., K) over the next particle's code that favours codes near earlier particles.

    Particles in a jet come in tight clusters: the two photons of a pi0 fly within ~0.01 in
    (eta, phi), and soft radiation surrounds the harder particles it came from. A softmax over 8192
    codes can only express "next to the particle placed three steps ago" by learning one bump per
    location in its weights, which an undertrained model does poorly (its jets come out too
    diffuse). This module states it directly, as a mixture over earlier particles (a pointer):

        prior_k = a_0 + sum_{s, j} a_sj * exp(-|c_k - x_j|^2 / (2 sigma_s^2))

    with ``c_k`` a code's angular position, ``x_j`` that of earlier particle j, fixed widths
    ``sigma_s`` (one per scale; the mixture over scales stands in for a learned width and keeps the
    kernel rows free of gradients, which would cost more than the rest of the model), and weights
    ``a`` from one softmax over "anywhere" (a_0, from the hidden state) and every (scale, earlier
    particle) pair (query from the hidden state, key from the particle's decoded features, so
    harder particles can be preferred). The task adds ``log prior`` to the code logits: the base
    head still sets the pT and the broad angular shape, the prior sharpens it around the chosen
    particle. With no earlier particle the prior is 1 everywhere (log 0). Special ids (START/STOP)
    get no prior. Training calls :meth:`forward` (each jet's kernel rows, one batched product over
    all positions); sampling calls :meth:`log_prior_of_codes` (rows of a per-code table). Measured
    in BENCHMARKS.md (run D): a much lower loss and real collinear pairs, but free-running samples
    with cores tighter than simulation.

    ``code_features`` (K, F): the decoded standardised features of every code; ``angular``: the
    columns of the angular features (deta, dphi) in them; ``widths``: sigma per scale, in
    standardised units. Shapes: P earlier particles, S scales.
    """

    def __init__(
        self,
        dim: int,
        code_features: Tensor,
        angular: Sequence[int],
        widths: Sequence[float] = (0.05, 0.2),
        key_dim: int = 32,
    ) -> None:
        super().__init__()
        if code_features.ndim != 2:
            raise ValueError(f"code_features must be (K, F), got {tuple(code_features.shape)}")
        if not widths or min(widths) <= 0:
            raise ValueError(f"widths must be positive, got {list(widths)}")
        f = code_features.shape[1]
        self.angular = [int(a) for a in angular]
        self.n_scales = len(widths)
        self.key_dim = key_dim
        code_angles = code_features[:, self.angular].detach().float().clone()  # (K, A)
        self.register_buffer("code_angles", code_angles, persistent=False)
        self.register_buffer("widths", torch.tensor([float(w) for w in widths]), persistent=False)
        S = self.n_scales
        self.query = nn.Linear(dim, S * key_dim)
        self.anywhere = nn.Linear(dim, 1)
        self.key = nn.Sequential(nn.Linear(f, dim), nn.GELU(), nn.Linear(dim, S * key_dim))
        self._table: tuple[tuple[int, ...], Tensor] | None = None  # (key, code_table())

    @torch.no_grad()
    def kernels(self, feats: Tensor) -> Tensor:
        """Kernel rows (B, S, P, K) of P earlier particles with standardised features (B, P, F)."""
        return self._kernels(feats[..., self.angular].float())

    def _kernels(self, x: Tensor) -> Tensor:
        """Kernel rows (B, S, P, K) of particles at angular positions x (B, P, A)."""
        c = self.code_angles  # (K, A)
        # |c - x|^2 = |c|^2 + |x|^2 - 2 c.x
        d2 = (c * c).sum(-1) + (x * x).sum(-1)[..., None] - 2 * x @ c.T  # (B, P, K)
        scale = -0.5 / self.widths**2  # (S,)
        return torch.exp(d2.clamp_min(0)[:, None] * scale[None, :, None, None])  # (B, S, P, K)

    def weights(self, hid: Tensor, feats: Tensor, allowed: Tensor) -> tuple[Tensor, Tensor]:
        """Mixture weights: a_0 (B, T) and a (B, T, S * P) for queries ``hid`` (B, T, D) over
        earlier particles ``feats`` (B, P, F); ``allowed`` (B, T, P) marks which each may use."""
        B, T, _ = hid.shape
        P = feats.shape[1]
        S, d = self.n_scales, self.key_dim
        q = self.query(hid).view(B, T, S, d)  # (B, T, S, d)
        k = self.key(feats.to(hid.dtype)).view(B, P, S, d)  # (B, P, S, d)
        scores = torch.einsum("btsd,bpsd->btsp", q, k) * d**-0.5  # (B, T, S, P)
        scores = scores.masked_fill(~allowed[:, :, None], float("-inf")).reshape(B, T, S * P)
        logits = torch.cat([self.anywhere(hid), scores], dim=-1).float()  # (B, T, 1 + S * P)
        w = logits.softmax(dim=-1)
        return w[..., 0], w[..., 1:]

    @torch.no_grad()
    def code_table(self) -> Tensor:
        """Kernel rows of every code as the earlier particle: (S, K, K), cached until the code
        positions change. Sampling reads rows of it (:meth:`log_prior_of_codes`) instead of
        keeping per-jet kernel rows, which had to be copied whenever finished jets left the batch
        (most of the sampling time). 4 S K^2 bytes: 0.5 GB for two scales of 8192 codes."""
        key = _version_key(self.code_angles, self.widths)
        if self._table is None or self._table[0] != key:
            K = self.code_angles.shape[0]
            c = self.code_angles[None]  # (1, K, A)
            # (S, <= 512, K) per chunk: bounded peak memory
            rows = [self._kernels(c[:, i : i + 512])[0] for i in range(0, K, 512)]
            self._table = (key, torch.cat(rows, dim=1))
        return self._table[1]

    def log_prior_of_codes(self, a0: Tensor, a: Tensor, parents: Tensor) -> Tensor:
        """log prior (b, K) of one query per jet from weights a_0 (b,), a (b, S * P) and the
        earlier particles' code ids (b, P): weighted sums of rows of :meth:`code_table`."""
        b, P = parents.shape
        prior = a0[:, None] + _PRIOR_FLOOR  # (b, 1)
        if P == 0:
            return prior.log().expand(b, self.code_angles.shape[0])
        table = self.code_table()  # (S, K, K)
        w = a.view(b, self.n_scales, P)  # (b, S, P)
        for s in range(self.n_scales):
            bag = F.embedding_bag(parents, table[s], per_sample_weights=w[:, s], mode="sum")
            prior = prior + bag  # (b, K)
        return prior.log()

    def log_prior(self, a0: Tensor, a: Tensor, kernels: Tensor) -> Tensor:
        """log prior (B, T, K) from the weights of :meth:`weights` and kernel rows (B, S, P, K)."""
        B, S, P, K = kernels.shape
        # the floor goes in with a_0, so no extra pass over (B, T, K) clamps it
        prior = torch.baddbmm(a0[..., None] + _PRIOR_FLOOR, a, kernels.reshape(B, S * P, K))
        return prior.log()

    def forward(self, hid: Tensor, feats: Tensor, allowed: Tensor) -> Tensor:
        """log prior (B, T, K) of T queries ``hid`` (B, T, D) over earlier particles ``feats``
        (B, P, F), query t using the particles where ``allowed[:, t]`` (B, T, P) is True."""
        a0, a = self.weights(hid, feats, allowed)
        return self.log_prior(a0, a, self.kernels(feats))


class RegressionHead(nn.Module):
    """hidden (..., D) -> values (..., F) through an MLP with one hidden layer."""

    def __init__(self, dim: int, out_features: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or dim
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, out_features))

    def forward(self, h: Tensor) -> Tensor:
        return self.net(h)


def _rand(
    fn: str, shape: tuple[int, ...], generator: torch.Generator | None, like: Tensor
) -> Tensor:
    """``torch.rand``/``randn`` on ``like``'s device and dtype, drawn from ``generator``'s device
    (a seeded CPU generator then also works for CUDA tensors)."""
    dev = generator.device if generator is not None else like.device
    out = getattr(torch, fn)(shape, generator=generator, device=dev)
    return out.to(device=like.device, dtype=like.dtype)


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Sinusoidal embedding of times ``t`` (M,) in [0, 1] -> (M, dim)."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half
    )  # (half,)
    args = 1000.0 * t.float()[:, None] * freqs[None]  # (M, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb.to(t.dtype)


class FlowMatchingHead(nn.Module):
    """Velocity field ``v(x_t, t | h)`` over F features, conditioned on a hidden state h (D,).

    Trained with the conditional flow-matching (rectified flow) loss: with noise ``x0 ~ N(0, 1)``,
    target ``x1`` and ``t ~ U(0, 1)``, ``x_t = (1 - t) x0 + t x1`` and the regression target is the
    straight-line velocity ``x1 - x0``. Unlike regression it models the full conditional
    distribution of a masked particle rather than its mean.
    """

    def __init__(
        self, dim: int, n_features: int, hidden: int = 128, depth: int = 3, time_dim: int = 32
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.n_features = n_features
        self.time_dim = time_dim
        self.cond = nn.Linear(dim, hidden)
        self.inp = nn.Linear(n_features + time_dim, hidden)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, hidden), nn.SiLU())
            for _ in range(depth)
        )
        self.out = nn.Linear(hidden, n_features)

    def forward(self, x_t: Tensor, t: Tensor, h: Tensor) -> Tensor:
        """Velocity (M, F) at points ``x_t`` (M, F), times ``t`` (M,), conditions ``h`` (M, D)."""
        z = self.inp(torch.cat([x_t, timestep_embedding(t, self.time_dim)], dim=-1))
        z = z + self.cond(h)  # (M, hidden)
        for block in self.blocks:
            z = z + block(z)
        return self.out(z)

    def loss(self, h: Tensor, x1: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Mean squared error of the predicted velocity for targets ``x1`` (M, F), conditions h (M, D)."""
        M = x1.shape[0]
        x0 = _rand("randn", tuple(x1.shape), generator, x1)
        t = _rand("rand", (M,), generator, x1)
        x_t = (1 - t[:, None]) * x0 + t[:, None] * x1
        v = self(x_t, t, h)
        return F.mse_loss(v, x1 - x0)

    @torch.no_grad()
    def sample(
        self, h: Tensor, steps: int = 32, generator: torch.Generator | None = None
    ) -> Tensor:
        """Draw one particle (M, F) per condition ``h`` (M, D) by Euler integration from t=0 to 1."""
        M = h.shape[0]
        x = _rand("randn", (M, self.n_features), generator, h)
        dt = 1.0 / steps
        for i in range(steps):
            t = torch.full((M,), i * dt, device=h.device, dtype=h.dtype)
            x = x + dt * self(x, t, h)
        return x


def masked_mean(h: Tensor, mask: Tensor) -> Tensor:
    """Mean of h (B, N, D) over real particles (B, N) -> (B, D); an empty jet gives zeros."""
    m = mask.to(h.dtype)[..., None]  # (B, N, 1)
    return (h * m).sum(1) / m.sum(1).clamp(min=1.0)


class MeanPoolClassifier(nn.Module):
    """Masked mean over particles, then an MLP -> logits (B, n_outputs). Permutation-invariant."""

    def __init__(
        self, dim: int, n_outputs: int, hidden: int | None = None, dropout: float = 0.0
    ) -> None:
        super().__init__()
        hidden = hidden or dim
        self.net = nn.Sequential(
            nn.LayerNorm(dim),
            nn.Linear(dim, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, n_outputs),
        )

    def forward(self, h: Tensor, mask: Tensor) -> Tensor:
        return self.net(masked_mean(h, mask))


class ClassAttentionBlock(nn.Module):
    """The class token attends over [class token, particles]; particles are not updated (CaiT/ParT)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, heads, dropout=dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, mlp_ratio, "gelu", dropout)

    def forward(self, cls: Tensor, h: Tensor, mask: Tensor) -> Tensor:
        """cls (B, 1, D), particles h (B, N, D), mask (B, N) -> cls (B, 1, D)."""
        u = self.norm1(torch.cat([cls, h], dim=1))  # (B, 1 + N, D)
        key_mask = torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1)
        cls = cls + self.attn(u[:, :1], key_mask, context=u)
        return cls + self.mlp(self.norm2(cls))


class ClassAttentionClassifier(nn.Module):
    """ParT-style classifier: a learned class token, ``depth`` class-attention blocks, a linear map.

    Attention respects the padding mask, so the logits are invariant to particle order and padding.
    """

    def __init__(
        self,
        dim: int,
        n_outputs: int,
        heads: int = 8,
        depth: int = 2,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.blocks = nn.ModuleList(
            ClassAttentionBlock(dim, heads, mlp_ratio, dropout) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, n_outputs)

    def forward(self, h: Tensor, mask: Tensor) -> Tensor:
        """Particles h (B, N, D) with mask (B, N) -> logits (B, n_outputs)."""
        mask = mask.to(torch.bool)
        cls = self.cls_token.to(h.dtype).expand(h.shape[0], -1, -1)  # (B, 1, D)
        for block in self.blocks:
            cls = block(cls, h, mask)
        return self.fc(self.norm(cls[:, 0]))


def classification_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """BCE-with-logits for one output column (binary labels 0/1), cross-entropy for C > 1 columns."""
    if logits.shape[-1] == 1:
        return F.binary_cross_entropy_with_logits(logits[:, 0], labels.to(logits.dtype))
    return F.cross_entropy(logits, labels.long())


def class_probabilities(logits: Tensor) -> Tensor:
    """Logits (B, C) -> probabilities (B, C); a single binary column becomes (B, 2) [p0, p1]."""
    if logits.shape[-1] == 1:
        p1 = torch.sigmoid(logits[:, 0])
        return torch.stack([1 - p1, p1], dim=-1)
    return logits.softmax(-1)
