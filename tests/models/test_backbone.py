"""Backbone: equivariance, padding invariance, causal mode, registers, input kinds, save/load."""

from __future__ import annotations

import pytest
import torch

from jetfm.core.config import from_dict
from jetfm.core.errors import CheckpointError, ConfigError, InputError
from jetfm.models import Backbone, BackboneConfig


def _inputs(B: int = 3, N: int = 8, F: int = 3, V: int = 10, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, N, F, generator=g)
    tokens = torch.randint(0, V, (B, N), generator=g)
    lengths = torch.tensor([N, 5, 2])[:B]
    mask = torch.arange(N)[None] < lengths[:, None]
    return x, tokens, mask


@pytest.mark.parametrize("kind", ["features", "tokens", "hybrid"])
@pytest.mark.parametrize("n_registers", [0, 2])
@pytest.mark.parametrize("bias", [True, False])
def test_permutation_equivariant_and_padding_invariant(
    kind: str, n_registers: int, bias: bool
) -> None:
    torch.manual_seed(0)
    cfg = BackboneConfig(
        dim=16,
        depth=2,
        heads=4,
        input=kind,
        n_features=3,
        vocab_size=10,
        n_registers=n_registers,
        bias=bias,
    )
    model = Backbone(cfg).eval()
    x, tokens, mask = _inputs()
    h = model(x, mask, tokens)
    assert h.shape == (3, 8, 16)
    perm = torch.randperm(8)
    h_perm = model(x[:, perm], mask[:, perm], tokens[:, perm])
    torch.testing.assert_close(h_perm, h[:, perm], atol=1e-5, rtol=1e-5)
    # extra padded particles (with garbage content) change nothing for the real ones
    x_pad = torch.cat([x, torch.randn(3, 5, 3) * 30], 1)
    t_pad = torch.cat([tokens, torch.randint(0, 10, (3, 5))], 1)
    m_pad = torch.cat([mask, torch.zeros(3, 5, dtype=torch.bool)], 1)
    h_pad = model(x_pad, m_pad, t_pad)
    torch.testing.assert_close(h_pad[:, :8][mask], h[mask], atol=1e-5, rtol=1e-5)
    assert torch.all(h_pad[~m_pad] == 0)


def test_registers_change_output_and_are_stripped() -> None:
    torch.manual_seed(0)
    x, _, mask = _inputs()
    a = Backbone(BackboneConfig(dim=16, depth=1, heads=4, n_registers=3)).eval()
    assert a(x, mask).shape == (3, 8, 16)
    before = a(x, mask)
    with torch.no_grad():
        a.registers.copy_(torch.randn_like(a.registers))
    assert (a(x, mask) - before).abs().max() > 1e-4  # particles attend the registers


def test_causal_backbone_is_a_gpt() -> None:
    torch.manual_seed(0)
    model = Backbone(
        BackboneConfig(dim=16, depth=2, heads=4, causal=True, input="tokens", vocab_size=10)
    ).eval()
    _, tokens, _ = _inputs()
    mask = torch.ones(3, 8, dtype=torch.bool)
    h = model(None, mask, tokens)
    t2 = tokens.clone()
    t2[:, 5:] = (t2[:, 5:] + 1) % 10
    h2 = model(None, mask, t2)
    torch.testing.assert_close(h2[:, :5], h[:, :5])
    assert (h2[:, 5:] - h[:, 5:]).abs().max() > 1e-4


def test_config_validation_names_field() -> None:
    with pytest.raises(ConfigError, match="'dim'"):
        BackboneConfig(dim=30, heads=4)
    with pytest.raises(ConfigError, match="dropout"):
        BackboneConfig(dropout=1.0)
    with pytest.raises(ConfigError, match="unknown key 'depht'"):
        from_dict(BackboneConfig, {"depht": 3})
    with pytest.raises(ConfigError, match="vocab_size"):
        Backbone(BackboneConfig(dim=16, heads=4, input="tokens"))


def test_wrong_inputs_raise_input_error() -> None:
    model = Backbone(BackboneConfig(dim=16, depth=1, heads=4, n_features=3))
    with pytest.raises(InputError, match="'x'"):
        model(torch.zeros(2, 4, 5), torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(InputError, match="'mask'"):
        model(torch.zeros(2, 4, 3), torch.ones(2, 5, dtype=torch.bool))


def test_save_load_identity(tmp_path) -> None:
    torch.manual_seed(0)
    cfg = BackboneConfig(
        dim=16,
        depth=2,
        heads=4,
        mlp="swiglu",
        norm="rmsnorm",
        n_registers=2,
        input="hybrid",
        vocab_size=10,
        bias=False,
    )
    model = Backbone(cfg).eval()
    # without biases the encoder's linear layers carry weights only
    encoder_linears = [m for m in model.encoder.modules() if isinstance(m, torch.nn.Linear)]
    assert len(encoder_linears) == 2 * 4 and all(m.bias is None for m in encoder_linears)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))  # leave the init values
    model.save_pretrained(
        tmp_path / "bb", preprocessing={"feature_names": ["deta", "dphi", "log_pt"]}
    )
    again = Backbone.from_pretrained(tmp_path / "bb").eval()
    assert again.config == cfg
    x, tokens, mask = _inputs()
    assert torch.equal(again(x, mask, tokens), model(x, mask, tokens))
    assert again.preprocessing == {"feature_names": ["deta", "dphi", "log_pt"]}
    from jetfm.core.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "tok", {"w": torch.zeros(1)}, {}, kind="tokenizer")
    with pytest.raises(CheckpointError, match="backbone"):
        Backbone.from_pretrained(tmp_path / "tok")
