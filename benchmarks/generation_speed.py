"""Generation speed: jets/s of autoregressive sampling with and without the KV cache.

A GPT over particle tokens (OmniJet-alpha's setting: codebook 8192, so 8194 ids with START/STOP)
samples jets of exactly ``--length`` particles (STOP forbidden until then, so both paths do the same
work). Without the cache every step reruns the whole prefix (what OmniJet-alpha does), O(L^2) token
passes per jet; with it each step feeds one token, O(L). Both paths are timed in the same run
and take the same decisions up to float round-off (the fraction of identical jets is printed).
Untrained weights: speed does not depend on training. Prints one table with the ratio; the
target (issue 6) is >= 20x at 128 particles.

``--guided-share s`` also times class guidance (cached), with every jet guided against a share
``s`` of them guided and the rest at weight 0: the contrast class runs only for guided jets, so the
backbone sees b + g rows per step instead of 2b (top+QCD with guidance on top only: s = 0.5).

    python benchmarks/generation_speed.py [--jets 32] [--length 128] [--models 4x128,8x256]
        [--head-dtypes float32,bfloat16] [--guided-share 0.5]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jetfm.models import Backbone, BackboneConfig, TokenHead
from jetfm.models.sampler import SamplingConfig, generate_tokens, seeded_generator


def build(depth: int, dim: int, vocab: int) -> tuple[Backbone, TokenHead]:
    torch.manual_seed(0)
    cfg = BackboneConfig(
        dim=dim, depth=depth, heads=max(1, dim // 32), causal=True, input="tokens", vocab_size=vocab
    )
    return Backbone(cfg).eval(), TokenHead(dim, vocab, transform=False).eval()


def run(
    backbone: Backbone,
    head: TokenHead,
    vocab: int,
    n_jets: int,
    length: int,
    cache: bool,
    head_dtype: str = "float32",
    embed: Callable[[torch.Tensor, torch.Tensor | None, int], torch.Tensor] | None = None,
    **guide: torch.Tensor,
) -> tuple[float, torch.Tensor]:
    """Seconds to sample ``n_jets`` jets of exactly ``length`` particles, and their ids;
    ``embed`` (default: the tokens alone) and ``guide`` (labels, guidance, guide_labels) go to
    :func:`generate_tokens`."""
    cfg = SamplingConfig(
        max_length=length, min_length=length, use_cache=cache, head_dtype=head_dtype
    )

    def tokens_only(tokens: torch.Tensor, labels: torch.Tensor | None, offset: int) -> torch.Tensor:
        return backbone.embed(None, tokens)

    sync = torch.cuda.synchronize if next(backbone.parameters()).is_cuda else None
    t0 = time.perf_counter()
    out = generate_tokens(
        backbone,
        head,
        embed or tokens_only,
        n_jets=n_jets,
        start_id=vocab - 2,
        stop_id=vocab - 1,
        config=cfg,
        generator=seeded_generator(0),
        **guide,
    )
    if sync is not None:
        sync()
    return time.perf_counter() - t0, out.ids.cpu()


def time_guidance(
    backbone: Backbone, head: TokenHead, vocab: int, n_jets: int, length: int, share: float
) -> tuple[float, float]:
    """Seconds for cached class-guided sampling with every jet guided, and with the first
    ``share`` of the jets guided (the others at weight 0)."""
    classes = torch.nn.Embedding(2, backbone.config.dim).to(next(backbone.parameters()).device)

    def embed(tokens: torch.Tensor, lab: torch.Tensor | None, offset: int) -> torch.Tensor:
        assert lab is not None
        return backbone.embed(None, tokens) + classes(lab.to(tokens.device))[:, None]  # (b, T, D)

    def draw(n: int, n_guided: int, steps: int) -> float:
        labels = torch.arange(n) % 2  # (B,)
        weight = (torch.arange(n) < n_guided).float()  # (B,)
        guide = {"labels": labels, "guidance": weight, "guide_labels": 1 - labels}
        return run(backbone, head, vocab, n, steps, True, embed=embed, **guide)[0]

    draw(4, 4, 8)  # warm-up (allocator, kernels)
    return draw(n_jets, n_jets, length), draw(n_jets, round(share * n_jets), length)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jets", type=int, default=32, help="jets per batch (one batch per path)")
    ap.add_argument("--length", type=int, default=128, help="particles per jet")
    ap.add_argument("--codebook", type=int, default=8192)
    ap.add_argument("--models", default="4x128,8x256", help="depth x width, comma-separated")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--head-dtypes",
        default="float32",
        help="output-projection dtypes to time, comma-separated (float32,bfloat16)",
    )
    ap.add_argument(
        "--guided-share",
        type=float,
        default=None,
        help="also time class guidance: all jets guided vs this share guided (0.5: top only)",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    vocab = args.codebook + 2
    dev = torch.device(args.device)
    print(
        f"{args.jets} jets x {args.length} particles, vocabulary {vocab}, {dev}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    rows = []
    for spec in args.models.split(","):
        depth, dim = (int(v) for v in spec.lower().split("x"))
        backbone, head = build(depth, dim, vocab)
        backbone, head = backbone.to(dev), head.to(dev)
        for hd in args.head_dtypes.split(","):
            run(backbone, head, vocab, 4, 8, True, hd)  # warm-up (allocator, kernels)
            t_cache, ids_cache = run(backbone, head, vocab, args.jets, args.length, True, hd)
            t_full, ids_full = run(backbone, head, vocab, args.jets, args.length, False, hd)
            same = float((ids_cache == ids_full).all(dim=1).float().mean())
            rate_c, rate_f = args.jets / t_cache, args.jets / t_full
            rows.append((spec, hd, rate_c, rate_f, t_full / t_cache, same))
    print(
        "\n| model (depth x width) | head | jets/s with KV cache | jets/s without | speed-up "
        "| identical jets |"
    )
    print("|---|---|---:|---:|---:|---|")
    for spec, hd, a, b, r, same in rows:
        print(f"| {spec} | {hd} | {a:.1f} | {b:.2f} | {r:.1f}x | {100 * same:.1f}% |")
    if args.guided_share is None:
        return
    print(
        f"\n| model | jets/s, class guidance on every jet | on {args.guided_share:.0%} of them "
        "| speed-up |"
    )
    print("|---|---:|---:|---:|")
    for spec in args.models.split(","):
        depth, dim = (int(v) for v in spec.lower().split("x"))
        backbone, head = (m.to(dev) for m in build(depth, dim, vocab))
        t_all, t_share = time_guidance(
            backbone, head, vocab, args.jets, args.length, args.guided_share
        )
        print(
            f"| {spec} | {args.jets / t_all:.1f} | {args.jets / t_share:.1f} "
            f"| {t_all / t_share:.2f}x |"
        )


if __name__ == "__main__":
    main()
