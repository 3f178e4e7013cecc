"""Rasterizer: projection parity with gsplat's PyTorch reference, image parity with an independent
brute-force float64 compositor, gradients, render modes, bad input, and CUDA parity with gsplat."""

import math

import pytest
import torch

from lyra.render import look_at
from lyra.render.cameras import c2w_to_viewmat, make_intrinsics
from lyra.render.composite_cpp import rasterize_to_pixels_cpp
from lyra.render.composite_torch import rasterize_to_pixels_torch
from lyra.render.projection import project_gaussians, quat_scale_to_covar
from lyra.render.rasterization import rasterization


def random_scene(n, seed=0, dtype=torch.float32, opacity=None, scale=0.04):
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g) - 0.5) * torch.tensor([1.6, 1.6, 1.0]) + torch.tensor([0, 0, 2.0])
    quats = torch.randn(n, 4, generator=g)
    scales = torch.exp(torch.randn(n, 3, generator=g) * 0.5) * scale  # anisotropic
    opac = torch.rand(n, generator=g) if opacity is None else torch.full((n,), opacity)
    colors = torch.rand(n, 3, generator=g)
    return [t.to(dtype) for t in (means, quats, scales, opac, colors)]


def rotated_cameras(c, width, height, seed=1):
    g = torch.Generator().manual_seed(seed)
    eyes = torch.randn(c, 3, generator=g) * 0.3
    targets = torch.tensor([0, 0, 2.0]) + torch.randn(c, 3, generator=g) * 0.2
    c2w = look_at(eyes, targets, up=torch.tensor([0.1, -1.0, 0.05]))
    K = make_intrinsics(0.8 * width, 0.85 * width, width / 2 + 1.3, height / 2 - 0.7).expand(c, 3, 3)
    return c2w_to_viewmat(c2w), K


def brute_force_composite(means2d, conics, colors, opacities, radii, depths, width, height, tile, background):
    """Sequential per-Gaussian, all-pixels float64 compositor written from gsplat's CUDA semantics."""
    means2d, conics, colors, opacities = (t.double() for t in (means2d, conics, colors, opacities))
    D = colors.shape[-1]
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    px, py = xs.double() + 0.5, ys.double() + 0.5
    T = torch.ones(height, width, dtype=torch.float64)
    out = torch.zeros(height, width, D, dtype=torch.float64)
    done = torch.zeros(height, width, dtype=torch.bool)
    tw, th = math.ceil(width / tile), math.ceil(height / tile)
    valid = (radii > 0).all(-1)
    for i in sorted(valid.nonzero().flatten().tolist(), key=lambda k: (depths[k].item(), k)):
        mx, my = means2d[i]
        rx, ry = radii[i].double() / tile
        x0 = min(max(math.floor(mx / tile - rx), 0), tw) * tile
        x1 = min(max(math.ceil(mx / tile + rx), 0), tw) * tile
        y0 = min(max(math.floor(my / tile - ry), 0), th) * tile
        y1 = min(max(math.ceil(my / tile + ry), 0), th) * tile
        in_box = (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)
        dx, dy = mx - px, my - py
        a, b, c = conics[i]
        sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
        alpha = torch.clamp(opacities[i] * torch.exp(-sigma), max=0.999)
        ok = in_box & ~done & (sigma >= 0) & (alpha >= 1 / 255)
        next_t = T * (1 - alpha)
        stop = ok & (next_t <= 1e-4)
        done |= stop
        ok &= ~stop
        out += torch.where(ok[..., None], (alpha * T)[..., None] * colors[i], 0.0)
        T = torch.where(ok, next_t, T)
    return out + T[..., None] * background.double(), 1 - T


@pytest.mark.parametrize("antialiased", [False, True])
def test_projection_matches_gsplat_reference(antialiased):
    from gsplat.cuda import (
        _torch_impl,  # a dev dependency: the parity reference must be there
    )
    means, quats, scales, opac, _ = random_scene(500, seed=3)
    viewmats, Ks = rotated_cameras(3, 96, 72)
    covars = quat_scale_to_covar(quats, scales)
    ref = _torch_impl._fully_fused_projection(means, covars, viewmats, Ks, 96, 72, eps2d=0.3,
                                               calc_compensations=antialiased)
    ours = project_gaussians(means, quats, scales, opac, viewmats, Ks, 96, 72, antialiased=antialiased,
                             opacity_aware_radius=False)
    r_radii, r_m2, r_depth, r_conics, r_comp = ref
    assert torch.equal(ours.radii, r_radii)
    v = (r_radii > 0).all(-1)
    assert v.sum() > 100
    torch.testing.assert_close(ours.means2d[v], r_m2[v], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(ours.depths[v], r_depth[v])
    torch.testing.assert_close(ours.conics[v], r_conics[v], rtol=1e-4, atol=1e-5)
    if antialiased:
        torch.testing.assert_close(ours.opacities[v], (opac[None] * r_comp)[v], rtol=1e-5, atol=1e-6)


def test_opacity_aware_radius_follows_cuda_rule():
    means, quats, scales, opac, _ = random_scene(300, seed=4)
    viewmats, Ks = rotated_cameras(1, 64, 64)
    p = project_gaussians(means, quats, scales, opac, viewmats, Ks, 64, 64)
    plain = project_gaussians(means, quats, scales, opac, viewmats, Ks, 64, 64, opacity_aware_radius=False)
    v = (p.radii > 0).all(-1)
    assert (p.radii[v] <= plain.radii[v]).all() and (p.radii[v] < plain.radii[v]).any()
    assert ((p.radii == 0).all(-1) >= (opac[None] < 1 / 255)).all()


CPU_BACKENDS = ["torch", "cpp"]  # the plain PyTorch reference and the compiled compositor
COMPOSITORS = {"torch": rasterize_to_pixels_torch, "cpp": rasterize_to_pixels_cpp}


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("opacity,aa", [(None, False), (0.9, False), (None, True)])
def test_image_matches_brute_force(opacity, aa, backend):
    means, quats, scales, opac, colors = random_scene(400, seed=5, opacity=opacity, scale=0.15 if opacity else 0.04)
    W, H = 40, 33  # not multiples of the tile size
    viewmats, Ks = rotated_cameras(2, W, H)
    bg = torch.tensor([[0.2, 0.5, 0.9], [1.0, 1.0, 1.0]])
    img, alpha, meta = rasterization(means, quats, scales, opac, colors, viewmats, Ks, W, H, backgrounds=bg,
                                     backend=backend, rasterize_mode="antialiased" if aa else "classic")
    assert meta["backend"] == backend
    for c in range(2):
        ref_img, ref_a = brute_force_composite(
            meta["means2d"][c], meta["conics"][c], colors, meta["opacities"][c], meta["radii"][c],
            meta["depths"][c], W, H, 16, bg[c])
        err = (img[c].double() - ref_img).abs()
        assert err.mean() < 1e-5 and err.max() < 1e-3, (err.mean(), err.max())
        assert (alpha[c, ..., 0].double() - ref_a).abs().max() < 1e-3
    if opacity == 0.9:
        # Transmittance stops just above 1e-4: many saturated pixels exercise the early stop.
        assert (alpha > 0.999).float().mean() > 0.2


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_batched_scenes_and_cameras_equal_separate_calls(backend):
    scenes = [random_scene(200, seed=s) for s in (7, 8)]
    stacked = [torch.stack(t) for t in zip(*scenes)]
    views = [rotated_cameras(3, 32, 24, seed=s) for s in (9, 10)]
    vm, Ks = torch.stack([v[0] for v in views]), torch.stack([v[1] for v in views])
    img, alpha, _ = rasterization(*stacked, vm, Ks, 32, 24, backend=backend)
    assert img.shape == (2, 3, 24, 32, 3) and alpha.shape == (2, 3, 24, 32, 1)
    for b in range(2):
        one, _, _ = rasterization(*scenes[b], vm[b], Ks[b], 32, 24, backend=backend)
        torch.testing.assert_close(img[b], one, atol=1e-5, rtol=0)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_gradcheck_tiny_scene_float64(backend):
    means, quats, scales, opac, colors = random_scene(6, seed=11, dtype=torch.float64)
    scales = scales * 4
    opac = opac * 0.6 + 0.2
    viewmats, Ks = rotated_cameras(1, 12, 10)
    viewmats, Ks = viewmats.double(), Ks.double()

    def f(m, q, s, o, c):
        img, a, _ = rasterization(m, q, s, o, c, viewmats, Ks, 12, 10, render_mode="RGB+ED", backend=backend,
                                  backgrounds=torch.ones(1, 3, dtype=torch.float64) * 0.3)
        return img, a

    inputs = [t.clone().requires_grad_(True) for t in (means, quats, scales, opac, colors)]
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-5, rtol=1e-3)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_gradients_match_autograd_through_brute_force(backend):
    """The custom backward equals autograd through the brute-force compositor (RGB + alpha + bg)."""
    means, quats, scales, opac, colors = random_scene(150, seed=12, opacity=0.7)
    viewmats, Ks = rotated_cameras(1, 24, 20)
    p = project_gaussians(means, quats, scales, opac, viewmats, Ks, 24, 20)
    inputs = [p.means2d[0].detach(), p.conics[0].detach(), colors, p.opacities[0].detach()]
    bg = torch.tensor([0.3, 0.6, 0.1])
    w_rgb = torch.rand(20, 24, 3, generator=torch.Generator().manual_seed(0))
    w_a = torch.rand(20, 24, generator=torch.Generator().manual_seed(1))

    ours = [t.clone().requires_grad_(True) for t in inputs] + [bg.clone().requires_grad_(True)]
    img, a = COMPOSITORS[backend](ours[0][None], ours[1][None], ours[2][None], ours[3][None],
                                  p.radii, p.depths, 24, 20, backgrounds=ours[4][None])
    ((img[0] * w_rgb).sum() + (a[0, ..., 0] * w_a).sum()).backward()

    ref = [t.double().clone().requires_grad_(True) for t in inputs] + [bg.double().clone().requires_grad_(True)]
    r_img, r_a = brute_force_composite(ref[0], ref[1], ref[2], ref[3], p.radii[0], p.depths[0], 24, 20, 16, ref[4])
    ((r_img * w_rgb).sum() + (r_a * w_a).sum()).backward()
    for o, r in zip(ours, ref):
        torch.testing.assert_close(o.grad.double(), r.grad, atol=2e-4, rtol=2e-3)


def test_render_modes_and_depth():
    means, quats, scales, opac, colors = random_scene(300, seed=13, opacity=0.95)
    viewmats, Ks = rotated_cameras(1, 32, 32)
    rgb, _, _ = rasterization(means, quats, scales, opac, colors, viewmats, Ks, 32, 32, backend="torch")
    d, a, meta = rasterization(means, quats, scales, opac, colors, viewmats, Ks, 32, 32, render_mode="D")
    ed, _, _ = rasterization(means, quats, scales, opac, colors, viewmats, Ks, 32, 32, render_mode="ED")
    both, _, _ = rasterization(means, quats, scales, opac, colors, viewmats, Ks, 32, 32, render_mode="RGB+ED")
    assert d.shape[-1] == 1 and both.shape[-1] == 4
    torch.testing.assert_close(both[..., :3], rgb)
    torch.testing.assert_close(both[..., 3:], ed)
    torch.testing.assert_close(ed, d / a.clamp_min(1e-10))
    covered = a[..., 0] > 0.5
    z = meta["depths"][meta["radii"][..., 0] > 0]
    assert (ed[..., 0][covered] >= z.min() - 1e-4).all() and (ed[..., 0][covered] <= z.max() + 1e-4).all()


def test_sh_colors_match_gsplat_reference_and_degree_zero_is_rgb():
    from gsplat.cuda import (
        _torch_impl,  # a dev dependency: the parity reference must be there
    )

    from lyra.render.sh import SH_C0, eval_sh

    g = torch.Generator().manual_seed(0)
    coeffs, dirs = torch.randn(50, 16, 3, generator=g), torch.randn(50, 3, generator=g)
    for deg in range(4):
        torch.testing.assert_close(eval_sh(deg, coeffs, dirs), _torch_impl._spherical_harmonics(deg, dirs, coeffs),
                                   atol=1e-5, rtol=1e-5)
    means, quats, scales, opac, colors = random_scene(100, seed=14)
    viewmats, Ks = rotated_cameras(2, 24, 24)
    sh = torch.zeros(100, 4, 3)
    sh[:, 0] = (colors - 0.5) / SH_C0
    a, _, _ = rasterization(means, quats, scales, opac, sh, viewmats, Ks, 24, 24, sh_degree=1)
    b, _, _ = rasterization(means, quats, scales, opac, colors, viewmats, Ks, 24, 24)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_empty_scene_and_culling():
    viewmats, Ks = rotated_cameras(2, 16, 16)
    bg = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]])
    z = torch.zeros(0, 3)
    img, a, _ = rasterization(z, torch.zeros(0, 4), z, torch.zeros(0), z, viewmats, Ks, 16, 16, backgrounds=bg)
    torch.testing.assert_close(img, bg[:, None, None].expand(2, 16, 16, 3))
    assert (a == 0).all()
    # Gaussians behind the camera are culled: identity camera, points at z < 0.
    means = torch.tensor([[0.0, 0.0, -1.0], [0.1, 0.0, -2.0]])
    img, a, meta = rasterization(means, torch.tensor([[1.0, 0, 0, 0]] * 2), torch.full((2, 3), 0.5),
                                 torch.ones(2), torch.ones(2, 3), torch.eye(4)[None], Ks[:1], 16, 16)
    assert (meta["radii"] == 0).all() and (a == 0).all()


@pytest.mark.parametrize(
    "change,match",
    [
        (lambda a: a.update(opacities=torch.ones(5)), "same N"),
        (lambda a: a.update(Ks=torch.zeros(1, 3, 3)), "focal"),
        (lambda a: a["means"].__setitem__((0, 0), float("nan")), "NaN"),
        (lambda a: a.update(render_mode="RGBD"), "render_mode"),
        (lambda a: a.update(backend="cuda"), "backend"),
        (lambda a: a.update(colors=torch.ones(4, 2, 3)), "colors"),
    ],
)
def test_bad_input_errors(change, match):
    means, quats, scales, opac, colors = random_scene(4, seed=15)
    viewmats, Ks = rotated_cameras(1, 8, 8)
    args = dict(means=means, quats=quats, scales=scales, opacities=opac, colors=colors, viewmats=viewmats,
                Ks=Ks, width=8, height=8)
    change(args)
    with pytest.raises(ValueError, match=match):
        rasterization(**args)


def test_gsplat_backend_refuses_cpu():
    means, quats, scales, opac, colors = random_scene(4, seed=16)
    viewmats, Ks = rotated_cameras(1, 8, 8)
    with pytest.raises(ValueError, match="CUDA"):
        rasterization(means, quats, scales, opac, colors, viewmats, Ks, 8, 8, backend="gsplat")


@pytest.mark.gpu
def test_torch_backend_matches_gsplat_cuda():
    from lyra.render.rasterization import gsplat_cuda_available

    if not gsplat_cuda_available():
        pytest.skip("needs CUDA and gsplat's compiled kernels")
    dev = torch.device("cuda")
    scene = [t.to(dev) for t in random_scene(5000, seed=17)]
    viewmats, Ks = (t.to(dev) for t in rotated_cameras(3, 128, 96))
    for p in scene:
        p.requires_grad_(True)
    out = {}
    for backend in ("gsplat", "torch"):
        img, a, _ = rasterization(*scene, viewmats, Ks, 128, 96, render_mode="RGB+ED", backend=backend,
                                  packed=False)
        grads = torch.autograd.grad((img[..., :3].sum() + a.sum()), scene)
        out[backend] = (img, a, grads)
    (gi, ga, gg), (ti, ta, tg) = out["gsplat"], out["torch"]
    assert (gi[..., :3] - ti[..., :3]).abs().mean() < 1e-4
    assert (ga - ta).abs().mean() < 1e-4
    for x, y in zip(gg, tg):
        assert torch.nn.functional.cosine_similarity(x.flatten(), y.flatten(), dim=0) > 0.99


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("opacity", [0.95, 0.1, None])
def test_compiled_compositor_equals_the_pytorch_reference(opacity, dtype):
    """Forward and every gradient of the compiled compositor match the PyTorch one, translucent and
    saturating scenes, several images with their own backgrounds, a 4-channel colour (RGB + depth)."""
    means, quats, scales, opac, colors = random_scene(600, seed=21, opacity=opacity, scale=0.08, dtype=dtype)
    vm, K = rotated_cameras(3, 45, 37)
    p = project_gaussians(means, quats, scales, opac, vm.to(dtype), K.to(dtype), 45, 37)
    cols = torch.cat([colors[None].expand(3, -1, -1), p.depths[..., None]], -1).detach()
    inputs = [p.means2d.detach(), p.conics.detach(), cols, p.opacities.detach(), torch.rand(3, 4, dtype=dtype)]
    gen = torch.Generator().manual_seed(3)
    w_img, w_a = torch.randn(3, 37, 45, 4, generator=gen, dtype=dtype), torch.randn(3, 37, 45, 1, generator=gen, dtype=dtype)
    out = {}
    for name, fn in COMPOSITORS.items():
        xs = [t.clone().requires_grad_(True) for t in inputs]
        img, a = fn(xs[0], xs[1], xs[2], xs[3], p.radii, p.depths.detach(), 45, 37, 16, xs[4])
        ((img * w_img).sum() + (a * w_a).sum()).backward()
        out[name] = [img.detach(), a.detach()] + [x.grad for x in xs]
    tol = 1e-9 if dtype == torch.float64 else 2e-5
    for got, want in zip(out["cpp"], out["torch"]):
        scale = want.abs().max().clamp_min(1.0)
        assert (got - want).abs().max() <= tol * scale, ((got - want).abs().max(), scale)
    if opacity == 0.95:
        assert (out["cpp"][1] > 0.999).float().mean() > 0.2  # saturated pixels exercise the early stop


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_gaussians_on_the_camera_plane_leave_every_gradient_finite(backend):
    """Regression: a Gaussian at (or just behind) the camera plane is culled, but its Jacobian at
    tz ~ 0 used to overflow; the NaN reached every gradient of the batch through autograd (seen as
    NaN weights after a training step). Culled, it must change neither the image nor any gradient."""
    means, quats, scales, opac, colors = random_scene(60, seed=41, opacity=0.8)
    viewmats = torch.eye(4)[None]  # camera coordinates are world coordinates: tz exactly as written
    Ks = torch.tensor([[[100.0, 0.0, 20.0], [0.0, 100.0, 16.0], [0.0, 0.0, 1.0]]])
    on_plane = torch.tensor([[0.2, 0.1, 1e-9], [-0.1, 0.3, -1e-7]])
    extra = [on_plane, torch.randn(2, 4), torch.full((2, 3), 0.3), torch.full((2,), 0.9), torch.rand(2, 3)]
    grads, images = [], []
    for fields in ([means, quats, scales, opac, colors],
                   [torch.cat([a, b]) for a, b in zip((means, quats, scales, opac, colors), extra)]):
        params = [t.clone().requires_grad_(True) for t in fields]
        img, alpha, meta = rasterization(*params, viewmats, Ks, 40, 32, backend=backend)
        grads.append(torch.autograd.grad(img.sum() + alpha.sum(), params))
        images.append(img.detach())
    assert (meta["radii"][0, -2:] == 0).all()  # both culled
    assert torch.isfinite(meta["conics"]).all() and torch.isfinite(meta["means2d"]).all()
    torch.testing.assert_close(images[1], images[0])
    for without, with_plane in zip(*grads):
        assert torch.isfinite(with_plane).all()
        torch.testing.assert_close(with_plane[:60], without)
        assert (with_plane[60:] == 0).all()


def test_compiled_compositor_is_the_same_for_any_thread_count():
    """Tiles run in parallel and several tiles' work lands on one Gaussian: the per-entry gradient
    slots are reduced in a fixed order, so images and gradients are bitwise equal with 1 and 2
    threads (a race or an order that depends on scheduling would break it)."""
    means, quats, scales, opac, colors = random_scene(800, seed=31, opacity=0.3, scale=0.1)
    vm, K = rotated_cameras(2, 48, 40)
    p = project_gaussians(means, quats, scales, opac, vm, K, 48, 40)
    inputs = [p.means2d.detach(), p.conics.detach(), colors[None].expand(2, -1, -1).contiguous(),
              p.opacities.detach(), torch.rand(2, 3)]
    threads = torch.get_num_threads()
    out = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            xs = [t.clone().requires_grad_(True) for t in inputs]
            img, a = rasterize_to_pixels_cpp(xs[0], xs[1], xs[2], xs[3], p.radii, p.depths.detach(), 48, 40, 16, xs[4])
            (img.square().sum() + a.sum()).backward()
            out.append([img.detach(), a.detach()] + [x.grad for x in xs])
    finally:
        torch.set_num_threads(threads)
    assert out[0][2].abs().sum() > 0  # gradients flowed
    for one, two in zip(*out):
        assert torch.equal(one, two)


def test_compiled_compositor_builds_without_openmp(monkeypatch):
    """The OpenMP build is tried first; a compiler without OpenMP still gets the compiled compositor
    (one thread), not the PyTorch fallback."""
    import torch.utils.cpp_extension as cpp_ext

    from lyra.render import composite_cpp

    calls = []

    def fake_load(name, sources, extra_cflags=(), extra_ldflags=(), verbose=False):
        calls.append((name, list(extra_cflags)))
        if "-fopenmp" in extra_cflags:
            raise RuntimeError("g++: error: unrecognized command-line option '-fopenmp'")
        return "serial build"

    monkeypatch.setattr(cpp_ext, "load", fake_load)
    composite_cpp._extension.cache_clear()
    try:
        assert composite_cpp._extension() == "serial build"
    finally:
        composite_cpp._extension.cache_clear()  # the next caller loads the real build again
    assert [c[0] for c in calls] == ["lyra_composite_cpu_omp", "lyra_composite_cpu"]
    assert "-fopenmp" not in calls[1][1]


def test_a_chunk_whose_pairs_all_lie_behind_the_stop_has_a_backward():
    """Regression: a depth chunk in which every pair is behind its pixel's early stop used to leave
    an empty record that crashed the backward (seen in a per-scene fit)."""
    from lyra.render.composite_torch import composite_backward, composite_forward

    means2d = torch.tensor([[[8.5, 8.5], [8.5, 8.5], [8.2, 7.9]]])
    # A broad front Gaussian saturates the centre; behind it, one that touches only the centre pixel
    # (its chunk then holds a single pair, excluded by the stop), and a broad one.
    conics = torch.tensor([[[2e-4, 0.0, 2e-4], [50.0, 0.0, 50.0], [2e-2, 0.0, 2e-2]]])
    colors = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])
    opac = torch.tensor([[0.999, 0.999, 0.999]])  # the second brings T to 1e-6: stop before it
    radii = torch.full((1, 3, 2), 16, dtype=torch.int32)
    depths = torch.tensor([[1.0, 2.0, 3.0]])
    accum, log_t, saved = composite_forward(means2d, conics, colors, opac, radii, depths, 16, 16, pair_budget=1)
    assert len(saved) >= 1 and all(len(p.pix) > 0 for p in saved)
    grads = composite_backward(torch.ones(256, 3), torch.zeros(256), log_t, torch.ones(1, 3), saved, conics, colors,
                               opac, 256)
    assert torch.isfinite(grads[2]).all() and grads[2][0, 1].abs().sum() == 0  # the hidden one gets nothing
    assert grads[2][0, 0].abs().sum() > 0 and grads[2][0, 2].abs().sum() > 0


def _args(n=4, seed=15, size=8):
    means, quats, scales, opac, colors = random_scene(n, seed=seed)
    viewmats, Ks = rotated_cameras(2, size, size)
    return dict(means=means, quats=quats, scales=scales, opacities=opac, colors=colors, viewmats=viewmats,
                Ks=Ks, width=size, height=size)


@pytest.mark.parametrize(
    "change,match",
    [
        (lambda a: a.update(tile_size=0), r"tile_size must be a positive int, got 0"),
        (lambda a: a.update(tile_size=-16), r"tile_size must be a positive int, got -16"),
        (lambda a: a.update(scales=a["scales"].double()), r"scales is torch.float64 .*means is torch.float32"),
        (lambda a: a.update(Ks=a["Ks"].double()), r"Ks is torch.float64 .*means is torch.float32"),
        (lambda a: a.update(near_plane=5.0, far_plane=1.0), r"0 <= near_plane < far_plane.*near_plane=5.0, "
                                                            r"far_plane=1.0"),
        (lambda a: a.update(near_plane=-0.1), r"0 <= near_plane < far_plane"),
        (lambda a: a["scales"].__setitem__((1, 2), -0.01), r"scales has negative values"),
        (lambda a: a["opacities"].__setitem__(2, 1.5), r"opacities lie outside \[0, 1\]"),
        (lambda a: a["opacities"].__setitem__(0, -0.2), r"opacities lie outside \[0, 1\]"),
        (lambda a: a["viewmats"][1, :3, :3].mul_(2.0), r"viewmats\[1\] is not a rigid world-to-camera"),
        (lambda a: a["viewmats"][0, :3, 0].neg_(), r"viewmats\[0\] is not a rigid"),  # a mirror, det -1
        (lambda a: a["viewmats"][1, 3, 0].fill_(0.5), r"viewmats\[1\] is not a rigid"),  # projective row
        (lambda a: a.update(width=100000, height=100000), r"at most 16384 pixels"),
    ],
)
def test_hostile_inputs_are_refused_not_rendered_blank(change, match):
    args = _args()
    change(args)
    with pytest.raises(ValueError, match=match):
        rasterization(**args)


def test_input_checks_read_the_device_once(monkeypatch):
    """The value checks (finiteness, ranges, focal lengths, rigid views) cost one device sync together."""
    import importlib

    rz = importlib.import_module("lyra.render.rasterization")  # the module (lyra.render exports the function)

    args, nearly = _args(n=50), _args(n=50)
    nearly["viewmats"][0, :3, :3] *= 1 + 2e-6  # a pose within float32 round-off of rigid still renders
    reads = []
    for name in ("__bool__", "item", "tolist", "__float__", "__int__"):
        original = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, *a, _o=original, _n=name: reads.append(_n) or _o(self, *a))
    monkeypatch.setattr(rz, "_rasterization_torch", lambda *a, **k: "rendered")
    monkeypatch.setattr(rz, "cpp_compositor_available", lambda: False)
    assert rz.rasterization(**args) == "rendered"
    assert len(reads) == 1, reads
    assert rz.rasterization(**nearly) == "rendered"


@pytest.mark.parametrize("per_view", [False, True])
def test_renderer_camera_chunks_equal_one_call_with_gradients(per_view):
    from lyra.render import GaussianRenderer, Gaussians

    M = 5  # cameras per scene; chunks of 2 leave a short last chunk
    fields = [torch.stack(t) for t in zip(*[random_scene(150, seed=s) for s in (3, 4)])]  # B = 2
    if per_view:  # one Gaussian set per camera: [B, M, N]
        fields = [t[:, None].expand(-1, M, *t.shape[1:]).clone() for t in fields]
    vm = torch.stack([rotated_cameras(M, 24, 20, seed=s)[0] for s in (5, 6)])
    K = torch.stack([rotated_cameras(M, 24, 20, seed=s)[1] for s in (5, 6)])
    c2w = torch.linalg.inv(vm)
    outs = []
    for chunk in (M, 2):
        leaves = [t.clone().requires_grad_(True) for t in fields]
        g = Gaussians(*leaves)
        r = GaussianRenderer(background=(0.2, 0.3, 0.4), backend="torch", camera_chunk=chunk)(g, c2w, K, 20, 24)
        (r.rgb.square().sum() + r.depth.sum() + r.alpha.sum()).backward()
        outs.append((r.rgb, r.depth, r.alpha, [t.grad for t in leaves]))
    (rgb, depth, alpha, grads), (rgb2, depth2, alpha2, grads2) = outs
    assert rgb.shape == (2, M, 20, 24, 3) and alpha.mean() > 0.05
    torch.testing.assert_close(rgb2, rgb)
    torch.testing.assert_close(depth2, depth)
    torch.testing.assert_close(alpha2, alpha)
    for a, b in zip(grads, grads2):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4)


def test_random_training_background_charges_transparency_and_evaluation_keeps_the_fixed_one():
    from lyra.render import GaussianRenderer, Gaussians

    g = Gaussians(*[t[None] for t in random_scene(150, seed=3)])
    vm, K = rotated_cameras(3, 24, 20, seed=5)
    c2w, K = torch.linalg.inv(vm)[None], K[None]
    fixed = GaussianRenderer(background=(1.0, 1.0, 1.0), backend="torch")
    rand = GaussianRenderer(background=(1.0, 1.0, 1.0), backend="torch", train_background="random")
    ref = fixed(g, c2w, K, 20, 24)
    torch.manual_seed(0)
    a, b = rand(g, c2w, K, 20, 24), rand(g, c2w, K, 20, 24)
    torch.testing.assert_close(a.alpha, ref.alpha)
    clear = ref.alpha < 0.5
    assert clear.any() and (ref.alpha > 0.99).any()
    assert (a.rgb - b.rgb).abs()[clear].mean() > 0.05  # where the scene is see-through, the background changes
    torch.testing.assert_close(a.rgb[ref.alpha > 0.999], b.rgb[ref.alpha > 0.999], atol=2e-3, rtol=0)
    # one colour behind each view: a - ref = (1 - alpha) (bg - white), so bg is constant over a view
    for m in range(3):
        where = clear[0, m]
        bg = 1.0 + (a.rgb[0, m] - ref.rgb[0, m])[where] / (1 - ref.alpha[0, m])[where][:, None]
        torch.testing.assert_close(bg, bg[:1].expand_as(bg), atol=1e-4, rtol=0)
        assert ((bg >= 0) & (bg <= 1)).all()
    rand.eval()
    torch.testing.assert_close(rand(g, c2w, K, 20, 24).rgb, ref.rgb)
    with pytest.raises(ValueError, match="train_background"):
        GaussianRenderer(train_background="noise")
