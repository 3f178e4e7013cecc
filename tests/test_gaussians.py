import inspect

import pytest
import torch

from lyra.render.gaussians import Gaussians


def make(n=6, batch=(), k=None, seed=0, requires_grad=False):
    gen = torch.Generator().manual_seed(seed)
    colors = torch.rand(*batch, n, 3, generator=gen) if k is None else torch.randn(*batch, n, k, 3, generator=gen)
    g = Gaussians(
        means=torch.randn(*batch, n, 3, generator=gen).requires_grad_(requires_grad),
        quats=torch.randn(*batch, n, 4, generator=gen),
        scales=torch.rand(*batch, n, 3, generator=gen) + 0.01,
        opacities=torch.rand(*batch, n, generator=gen),
        colors=colors,
    )
    return g


def assert_same(a: Gaussians, b: Gaussians):
    for name in ("means", "quats", "scales", "opacities", "colors"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_shape_facts_and_colour_layout():
    g = make(5, batch=(2, 3), k=9)
    assert g.num_gaussians == 5 and g.batch_shape == (2, 3) and g.sh_degree == 2
    assert make(5).sh_degree is None and make(5, k=1).sh_degree == 0 and make(5, k=16).sh_degree == 3
    # Same colours shape [4, 4, 3]: SH degree 1 for unbatched means, RGB for a batch of 4.
    sh = Gaussians(torch.zeros(4, 3), torch.ones(4, 4), torch.ones(4, 3), torch.ones(4), torch.zeros(4, 4, 3))
    rgb = Gaussians(torch.zeros(4, 4, 3), torch.ones(4, 4, 4), torch.ones(4, 4, 3), torch.ones(4, 4),
                    torch.zeros(4, 4, 3))
    assert (sh.sh_degree, sh.batch_shape) == (1, ()) and (rgb.sh_degree, rgb.batch_shape) == (None, (4,))
    assert "N=4" in repr(rgb)


def test_inconsistent_shapes_name_field_and_shapes():
    g = make(6)
    with pytest.raises(ValueError, match=r"quats has shape \(7, 4\).*means \(6, 3\)"):
        Gaussians(g.means, torch.randn(7, 4), g.scales, g.opacities, g.colors)
    with pytest.raises(ValueError, match=r"opacities has shape \(3, 6\)"):
        Gaussians(torch.randn(2, 6, 3), torch.randn(2, 6, 4), torch.ones(2, 6, 3), torch.rand(3, 6),
                  torch.rand(2, 6, 3))
    with pytest.raises(ValueError, match="perfect square"):
        Gaussians(g.means, g.quats, g.scales, g.opacities, torch.randn(6, 5, 3))
    with pytest.raises(ValueError, match="colors"):
        Gaussians(g.means, g.quats, g.scales, g.opacities, torch.randn(6, 4))
    with pytest.raises(TypeError, match=r"quats.*\.float\(\)"):
        Gaussians(g.means, torch.ones(6, 4, dtype=torch.long), g.scales, g.opacities, g.colors)
    with pytest.raises(ValueError, match="scales is torch.float64"):
        Gaussians(g.means, g.quats, g.scales.double(), g.opacities, g.colors)


def test_value_checks_and_finite_mask():
    g = make(6, k=4)
    means = g.means.clone()
    means[2, 1] = float("nan")
    with pytest.raises(ValueError, match=r"means has 1 non-finite.*finite_mask"):
        Gaussians(means, g.quats, g.scales, g.opacities, g.colors)
    with pytest.raises(ValueError, match="exp"):
        Gaussians(g.means, g.quats, torch.log(g.scales), g.opacities, g.colors)
    with pytest.raises(ValueError, match="sigmoid"):
        Gaussians(g.means, g.quats, g.scales, g.opacities * 3 - 1, g.colors)
    colors = g.colors.clone()
    colors[4, 3, 2] = float("inf")
    bad = Gaussians(means, g.quats, g.scales, g.opacities, colors, check_values=False)
    assert bad.finite_mask().tolist() == [True, True, False, True, False, True]
    kept = bad.select(bad.finite_mask())
    assert kept.num_gaussians == 4 and torch.equal(kept.colors, g.colors[[0, 1, 3, 5]])
    kept.validate()  # what is left passes the value checks


def test_getitem_indexes_batch_dims_only():
    g = make(5, batch=(3,), k=4)
    one = g[1]
    assert one.batch_shape == () and torch.equal(one.colors, g.colors[1]) and torch.equal(one.opacities, g.opacities[1])
    assert g[1:].batch_shape == (2,) and torch.equal(g[1:].means, g.means[1:])
    assert g[torch.tensor([True, False, True])].batch_shape == (2,)
    with pytest.raises(IndexError, match="select"):
        one[0]  # unbatched: no batch dims to index
    with pytest.raises(IndexError, match="select"):
        g[0, 1]
    with pytest.raises(IndexError, match="Ellipsis"):
        g[..., 0]


def test_select_masks_indices_and_slices():
    g = make(6, batch=(2,))
    mask = torch.tensor([True, False, True, True, False, False])
    assert torch.equal(g.select(mask).means, g.means[:, mask])
    assert torch.equal(g.select(torch.tensor([5, -1, 0])).scales, g.scales[:, [5, 5, 0]])
    assert torch.equal(g.select(slice(1, 3)).opacities, g.opacities[:, 1:3])
    per_batch = torch.tensor([[0, 3], [4, 1]])
    sel = g.select(per_batch)
    for b in range(2):
        assert torch.equal(sel.means[b], g.means[b, per_batch[b]])
        assert torch.equal(sel.colors[b], g.colors[b, per_batch[b]])
    bmask = torch.tensor([[True, False, False, True, False, False], [False, True, False, False, False, True]])
    sel = g.select(bmask)
    assert torch.equal(sel.quats[0], g.quats[0, [0, 3]]) and torch.equal(sel.quats[1], g.quats[1, [1, 5]])
    with pytest.raises(ValueError, match="ragged"):
        g.select(torch.tensor([[True] * 6, [False] * 6]))
    with pytest.raises(TypeError):
        g.select(torch.tensor([0.5]))


def test_prune_top_k_per_batch_element_keeps_order_and_gradients():
    g = make(50, batch=(3,), k=4, requires_grad=True)
    pruned = g.prune_top_k(7)
    assert pruned.batch_shape == (3,) and pruned.num_gaussians == 7
    for b in range(3):
        ranked = sorted(range(50), key=lambda i: -float(g.opacities[b, i]))[:7]
        expected = sorted(ranked)  # original order kept
        assert torch.equal(pruned.means[b], g.means[b, expected])
        assert torch.equal(pruned.colors[b], g.colors[b, expected])
    pruned.means.sum().backward()
    kept_rows = (g.means.grad != 0).all(-1)
    assert kept_rows.sum(-1).tolist() == [7, 7, 7]
    assert torch.equal(kept_rows, torch.isin(g.opacities, pruned.opacities))
    with pytest.raises(ValueError, match="k=51"):
        g.prune_top_k(51)


def test_prune_fraction_keeps_lyra_top_20_percent():
    g = make(10)
    p = g.prune_fraction()
    assert p.num_gaussians == 2
    assert set(p.opacities.tolist()) == set(sorted(g.opacities.tolist())[-2:])
    assert make(3).prune_fraction(0.2).num_gaussians == 1  # never prunes a scene to nothing
    assert make(100).prune_fraction(0.2).num_gaussians == 20
    with pytest.raises(ValueError, match="keep"):
        g.prune_fraction(0.0)


def test_cat_to_detach_to_dict():
    a, b = make(3, batch=(2,), k=4, seed=1), make(5, batch=(2,), k=4, seed=2)
    c = Gaussians.cat([a, b])
    assert c.num_gaussians == 8 and torch.equal(c.colors[:, 3:], b.colors) and torch.equal(c.means[:, :3], a.means)
    with pytest.raises(ValueError, match="sh_degree"):
        Gaussians.cat([a, make(3, batch=(2,), k=9)])
    # along a batch dim: sets of the same size joined (the dynamic decoder's target times, decoded in chunks)
    sets = Gaussians.cat([make(3, batch=(2, 1), seed=1), make(3, batch=(2, 2), seed=2)], batch_dim=1)
    assert sets.batch_shape == (2, 3) and sets.num_gaussians == 3
    with pytest.raises(ValueError, match="must match but along the dim joined"):
        Gaussians.cat([make(3, batch=(2, 1)), make(4, batch=(2, 1))], batch_dim=1)
    d = c.to(torch.float64)
    assert d.dtype == torch.float64 and d.colors.dtype == torch.float64
    assert_same(d.to(torch.float32), c)
    assert not make(4, requires_grad=True).detach().means.requires_grad
    import gsplat

    params = list(inspect.signature(gsplat.rasterization).parameters)
    assert list(c.to_dict()) == params[:5]  # splats straight into rasterization(**g.to_dict(), ...)

