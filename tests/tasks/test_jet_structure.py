"""Torch jet-structure functions: particle orders and observables against hand-computed values
and FastJet."""

import numpy as np
import torch

from jetfm.tasks.jet_structure import front_pack, kt_nsubjettiness, subjet_order


def test_front_pack_keeps_order() -> None:
    x = torch.arange(5.0).reshape(1, 5, 1)
    mask = torch.tensor([[False, True, False, True, True]])
    xp, mp = front_pack(x, mask)
    assert xp[0, :3, 0].tolist() == [1.0, 3.0, 4.0] and mp[0].tolist() == [True] * 3 + [False] * 2


def test_subjet_order_hand_computed() -> None:
    """Seeded cones of R = 0.2, hardest particle first; each subjet's particles stay in pT order."""
    nan = float("nan")
    # jet 0: seeds 0 (0, 0), 1 (0.5, 0), 4 (1, 1); 2 joins 0, 3 joins 1; one padding slot
    # jet 1: seeds 0 (0, 0) and 1 (0.3, 0); 2 at (0.19, 0) is within R of both and joins the
    # nearer, 1 (0.11 away); 3 at (0.05, 0.05) joins 0
    deta = torch.tensor([[0.0, 0.5, 0.05, 0.52, 1.0, nan], [0.0, 0.3, 0.19, 0.05, nan, nan]])
    dphi = torch.tensor([[0.0, 0.0, 0.0, 0.01, 1.0, nan], [0.0, 0.0, 0.0, 0.05, nan, nan]])
    mask = torch.tensor([[True] * 5 + [False], [True] * 4 + [False] * 2])
    perm = subjet_order(deta, dphi, mask, radius=0.2)
    assert perm[0].tolist() == [0, 2, 1, 3, 4, 5]
    assert perm[1].tolist() == [0, 3, 1, 2, 4, 5]
    # a larger radius merges everything into the leading subjet: pT order again
    assert subjet_order(deta, dphi, mask, radius=5.0)[0].tolist() == list(range(6))
    # seeds first: the leading seeds, then each subjet's other particles where it stood
    assert subjet_order(deta, dphi, mask, 0.2, seeds_first=3)[0].tolist() == [0, 1, 4, 2, 3, 5]
    assert subjet_order(deta, dphi, mask, 0.2, seeds_first=2)[0].tolist() == [0, 1, 2, 3, 4, 5]
    assert subjet_order(deta, dphi, mask, 0.2, seeds_first=2)[1].tolist() == [0, 1, 3, 2, 4, 5]
    # more seeds asked for than the jet has: all of them first
    assert subjet_order(deta, dphi, mask, 0.2, seeds_first=9)[1].tolist() == [0, 1, 3, 2, 4, 5]


def test_kt_nsubjettiness_matches_fastjet() -> None:
    """The torch exclusive-kT N-subjettiness of the jet tokens agrees with the FastJet-based
    :func:`jetfm.physics.observables.nsubjettiness` on three-prong-like random jets (small-angle
    E-scheme: a few percent at most), and is 0 where a jet has too few particles. Padding and
    particle order change nothing."""

    from jetfm.physics.kinematics import ptetaphi_to_pxpypz
    from jetfm.physics.observables import nsubjettiness

    g = torch.Generator().manual_seed(0)
    B, N = 40, 24
    prong = torch.randn(B, 3, 2, generator=g) * 0.25  # (B, 3, 2) prong directions
    which = torch.randint(0, 3, (B, N), generator=g)
    ang = (
        prong.gather(1, which[..., None].expand(-1, -1, 2))
        + torch.randn(B, N, 2, generator=g) * 0.04
    )
    pt = torch.rand(B, N, generator=g).pow(3) * 80 + 1.0
    counts = torch.randint(1, N + 1, (B,), generator=g)
    counts[:4] = torch.tensor([1, 2, 3, 4])
    mask = torch.arange(N)[None] < counts[:, None]
    got = kt_nsubjettiness(pt, ang[..., 0], ang[..., 1], mask)
    m = mask.numpy()
    offsets = np.concatenate([[0], np.cumsum(m.sum(1))])
    px, py, pz = ptetaphi_to_pxpypz(
        pt.double().numpy()[m], ang[..., 0].double().numpy()[m], ang[..., 1].double().numpy()[m]
    )
    e = np.sqrt(px**2 + py**2 + pz**2)
    want = nsubjettiness(px, py, pz, e, offsets, n_max=3, R=0.8)
    for k in ("tau21", "tau32"):
        np.testing.assert_allclose(got[k].numpy(), want[k], atol=0.03, err_msg=k)
    assert got["tau21"][0] == 0 and got["tau32"][:3].tolist() == [0, 0, 0]
    # a shuffled, padded copy gives the same values
    perm = torch.randperm(N, generator=g)
    pad = lambda t: torch.cat([t[:, perm], torch.zeros_like(t[:, :5])], dim=1)  # noqa: E731
    again = kt_nsubjettiness(pad(pt), pad(ang[..., 0]), pad(ang[..., 1]), pad(mask))
    for k in ("tau21", "tau32"):
        torch.testing.assert_close(again[k], got[k], atol=1e-5, rtol=1e-4)
