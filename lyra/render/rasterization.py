"""``lyra.render.rasterization``: gsplat's calling convention with a CPU-capable PyTorch backend.

``backend="torch"`` is our own differentiable rasterizer in plain PyTorch (projection in autograd,
compositing in :mod:`lyra.render.composite_torch`, any device); ``"cpp"`` is the same with the
compositing compiled for the CPU (:mod:`lyra.render.composite_cpp`, tested against the PyTorch
one); ``"gsplat"`` calls gsplat's CUDA kernels; ``"auto"`` picks gsplat for CUDA tensors when its
kernels load, the compiled compositor for CPU tensors when it builds, else torch.
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import torch
from torch import Tensor

from lyra.render.camera_path import MAX_IMAGE_SIZE
from lyra.render.composite_cpp import cpp_compositor_available, rasterize_to_pixels_cpp
from lyra.render.composite_torch import rasterize_to_pixels_torch
from lyra.render.projection import project_gaussians
from lyra.render.sh import eval_sh, num_sh_bases

RenderMode = Literal["RGB", "D", "ED", "RGB+D", "RGB+ED"]
RasterizeMode = Literal["classic", "antialiased"]
Backend = Literal["auto", "torch", "cpp", "gsplat"]
BACKENDS = ("auto", "torch", "cpp", "gsplat")
RENDER_MODES = ("RGB", "D", "ED", "RGB+D", "RGB+ED")


@functools.lru_cache(maxsize=1)
def gsplat_cuda_available() -> bool:
    """True when CUDA is present and gsplat's compiled kernels can be loaded."""
    if not torch.cuda.is_available():
        return False
    try:
        from gsplat.cuda._backend import _C  # noqa: F401  (optional gsplat; JIT-builds or loads its CUDA kernels)
    except Exception:
        return False
    return _C is not None


def _check_inputs(means, quats, scales, opacities, colors, viewmats, Ks, width, height, sh_degree,
                  render_mode, rasterize_mode, backend, backgrounds, tile_size=16, near_plane=0.01,
                  far_plane=1e10) -> tuple[tuple[int, ...], int, int]:
    if render_mode not in RENDER_MODES:
        raise ValueError(f"unknown render_mode {render_mode!r}; choose one of {RENDER_MODES}")
    if rasterize_mode not in ("classic", "antialiased"):
        raise ValueError(f"unknown rasterize_mode {rasterize_mode!r}; choose 'classic' or 'antialiased'")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    if int(width) <= 0 or int(height) <= 0:
        raise ValueError(f"image size must be positive, got width={width}, height={height}")
    if int(width) > MAX_IMAGE_SIZE or int(height) > MAX_IMAGE_SIZE:
        raise ValueError(f"image size {width}x{height} is too large: width and height must be at most "
                         f"{MAX_IMAGE_SIZE} pixels each; render a smaller image")
    if isinstance(tile_size, bool) or not isinstance(tile_size, int) or tile_size < 1:
        raise ValueError(f"tile_size must be a positive int, got {tile_size!r} (gsplat's default is 16)")
    if not 0 <= near_plane < far_plane:  # NaN fails too
        raise ValueError(f"need 0 <= near_plane < far_plane (the camera-space depth range kept), got "
                         f"near_plane={near_plane}, far_plane={far_plane}; otherwise every Gaussian is culled")
    tensors = (("means", means), ("quats", quats), ("scales", scales), ("opacities", opacities),
               ("colors", colors), ("viewmats", viewmats), ("Ks", Ks))
    for name, t in tensors:
        if not isinstance(t, Tensor) or not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point torch.Tensor, got "
                            f"{t.dtype if isinstance(t, Tensor) else type(t).__name__}")
        if t.dtype != means.dtype or t.device != means.device:
            raise ValueError(f"{name} is {t.dtype} on {t.device} but means is {means.dtype} on {means.device}; "
                             "pass every input in one dtype and on one device (e.g. .float() and .to(device))")
    if means.ndim < 2 or means.shape[-1] != 3:
        raise ValueError(f"means must be [..., N, 3], got {tuple(means.shape)}")
    batch, N = means.shape[:-2], means.shape[-2]
    expect = {"quats": (quats, (4,)), "scales": (scales, (3,)), "opacities": (opacities, ())}
    for name, (t, tail) in expect.items():
        if tuple(t.shape) != tuple(batch) + (N,) + tail:
            raise ValueError(f"{name} has shape {tuple(t.shape)} but means {tuple(means.shape)} implies "
                             f"{tuple(batch) + (N,) + tail}: every per-Gaussian tensor needs the same N")
    if viewmats.shape[:-3] != batch or viewmats.shape[-2:] != (4, 4):
        raise ValueError(f"viewmats must be [..., C, 4, 4] with batch dims {tuple(batch)}, got {tuple(viewmats.shape)}")
    C = viewmats.shape[-3]
    if tuple(Ks.shape) != tuple(batch) + (C, 3, 3):
        raise ValueError(f"Ks must be {tuple(batch) + (C, 3, 3)} to match viewmats, got {tuple(Ks.shape)}")
    if sh_degree is None:
        ok = colors.shape[:-1] in (tuple(batch) + (N,), tuple(batch) + (C, N))
        if not ok:
            raise ValueError(f"colors must be [..., N, D] or [..., C, N, D] (N={N}, C={C}) when sh_degree is None, "
                             f"got {tuple(colors.shape)}; for SH coefficients pass sh_degree")
    else:
        k = num_sh_bases(sh_degree)
        ok = colors.ndim >= 3 and colors.shape[-1] == 3 and colors.shape[:-2] in (
            tuple(batch) + (N,), tuple(batch) + (C, N))
        if not ok or colors.shape[-2] < k:
            raise ValueError(f"with sh_degree={sh_degree} colors must be [..., (C,) N, K, 3] with K >= {k}, "
                             f"got {tuple(colors.shape)}")
    if backgrounds is not None and backgrounds.shape[:-1] != tuple(batch) + (C,):
        raise ValueError(f"backgrounds must be [..., C, D] = {tuple(batch) + (C,)} + (D,), got {tuple(backgrounds.shape)}")
    # Values (finiteness, focal lengths, scale and opacity ranges, rigid view matrices) cost a device
    # sync: all flags are read in one, then the failing check is named.
    with torch.no_grad():
        R = viewmats[..., :3, :3]
        tol = max(1e-3, 50 * torch.finfo(viewmats.dtype).eps)  # float32 round-off of composed poses passes
        eye = torch.eye(3, dtype=R.dtype, device=R.device)
        bottom = torch.eye(4, dtype=R.dtype, device=R.device)[3]  # [0, 0, 0, 1] made on the device: no copy
        a, b, c = R[..., 0, :], R[..., 1, :], R[..., 2, :]
        det = (a[..., 0] * (b[..., 1] * c[..., 2] - b[..., 2] * c[..., 1])
               - a[..., 1] * (b[..., 0] * c[..., 2] - b[..., 2] * c[..., 0])
               + a[..., 2] * (b[..., 0] * c[..., 1] - b[..., 1] * c[..., 0]))  # no linalg kernel: any dtype
        rigid = (((R @ R.transpose(-1, -2) - eye).abs() <= tol).flatten(-2).all(-1)
                 & ((viewmats[..., 3, :] - bottom).abs() <= tol).all(-1) & (det > 0))  # [..., C]
        flags = [torch.isfinite(t).all() for _, t in tensors] + [
            ((Ks[..., 0, 0] > 0) & (Ks[..., 1, 1] > 0)).all(), (scales >= 0).all(),
            ((opacities >= 0) & (opacities <= 1)).all(), rigid.all()]
        ok = torch.stack(flags).tolist()  # the one device sync
    for (name, _), good in zip(tensors, ok):
        if not good:
            raise ValueError(f"{name} contains NaN or Inf; drop or fix those entries before rendering "
                             "(Gaussians.finite_mask() finds them)")
    if not ok[7]:
        raise ValueError("Ks has a zero or negative focal length; fx and fy are in pixels and must be > 0")
    if not ok[8]:
        raise ValueError("scales has negative values; scales are linear (pass exp(log_scales)), a negative one "
                         "renders nothing")
    if not ok[9]:
        raise ValueError("opacities lie outside [0, 1]; they are not logits (pass sigmoid(logits))")
    if not ok[10]:
        index = ", ".join(str(i) for i in (~rigid).nonzero()[0].tolist())
        raise ValueError(f"viewmats[{index}] is not a rigid world-to-camera matrix (orthonormal rotation with det +1, "
                         f"last row [0, 0, 0, 1], tolerance {tol:g}); a scaled, sheared, mirrored or projective "
                         "matrix renders wrong images. Build viewmats with lyra.render.cameras.c2w_to_viewmat "
                         "from rigid camera-to-world poses")
    return tuple(batch), N, C


def rasterization(
    means: Tensor,  # [..., N, 3]
    quats: Tensor,  # [..., N, 4] wxyz
    scales: Tensor,  # [..., N, 3]
    opacities: Tensor,  # [..., N]
    colors: Tensor,  # [..., (C,) N, D] or SH [..., (C,) N, K, 3]
    viewmats: Tensor,  # [..., C, 4, 4] world-to-camera
    Ks: Tensor,  # [..., C, 3, 3]
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    radius_clip: float = 0.0,
    eps2d: float = 0.3,
    sh_degree: int | None = None,
    packed: bool = True,
    tile_size: int = 16,
    backgrounds: Tensor | None = None,  # [..., C, D]
    render_mode: RenderMode = "RGB",
    sparse_grad: bool = False,
    absgrad: bool = False,
    rasterize_mode: RasterizeMode = "classic",
    channel_chunk: int = 32,
    distributed: bool = False,
    camera_model: Literal["pinhole"] = "pinhole",
    backend: Backend = "auto",
) -> tuple[Tensor, Tensor, dict]:  # colors [..., C, H, W, X], alphas [..., C, H, W, 1], meta
    """Render Gaussians; same arguments and returns as ``gsplat.rasterization`` for pinhole cameras.

    ``X`` is D for "RGB", 1 for "D"/"ED" and D+1 for "RGB+D"/"RGB+ED" (depth last). "D" is the
    accumulated z-depth sum(w_i z_i); "ED" divides it by the alpha. An empty scene renders the
    background; Gaussians behind the camera or outside the view are culled (radius 0).
    """
    batch, N, C = _check_inputs(means, quats, scales, opacities, colors, viewmats, Ks, width, height,
                                sh_degree, render_mode, rasterize_mode, backend, backgrounds, tile_size,
                                near_plane, far_plane)
    if camera_model != "pinhole" or sparse_grad or absgrad or distributed:
        raise ValueError("lyra.render.rasterization supports camera_model='pinhole' without sparse_grad, "
                         "absgrad or distributed; call gsplat.rasterization directly for those")
    use_gsplat = backend == "gsplat" or (backend == "auto" and means.is_cuda and gsplat_cuda_available())
    if backend == "gsplat" and not (means.is_cuda and gsplat_cuda_available()):
        raise ValueError("backend='gsplat' needs CUDA tensors and gsplat's compiled kernels; use backend='torch' "
                         "(any device) or 'auto'")
    if use_gsplat and N > 0:
        import gsplat  # optional (lyra[gsplat]): only the CUDA path needs it

        colors_out, alphas, meta = gsplat.rasterization(
            means, quats, scales, opacities, colors, viewmats, Ks, width, height, near_plane=near_plane,
            far_plane=far_plane, radius_clip=radius_clip, eps2d=eps2d, sh_degree=sh_degree, packed=packed,
            tile_size=tile_size, backgrounds=backgrounds, render_mode=render_mode,
            rasterize_mode=rasterize_mode, channel_chunk=channel_chunk)
        meta["backend"] = "gsplat"
        return colors_out, alphas, meta
    if backend == "cpp" and (means.is_cuda or not cpp_compositor_available()):
        raise ValueError("backend='cpp' needs CPU tensors and lyra's compiled compositor (a C++ compiler and ninja "
                         "to build it); use backend='torch' or 'auto'")
    use_cpp = backend == "cpp" or (backend == "auto" and not means.is_cuda and cpp_compositor_available())
    return _rasterization_torch(means, quats, scales, opacities, colors, viewmats, Ks, int(width), int(height),
                                near_plane, far_plane, radius_clip, eps2d, sh_degree, tile_size, backgrounds,
                                render_mode, rasterize_mode, batch, N, C, use_cpp)


def _rasterization_torch(means, quats, scales, opacities, colors, viewmats, Ks, width, height, near_plane,
                         far_plane, radius_clip, eps2d, sh_degree, tile_size, backgrounds, render_mode,
                         rasterize_mode, batch, N, C, use_cpp=False):
    proj = project_gaussians(means, quats, scales, opacities, viewmats, Ks, width, height, eps2d=eps2d,
                             near_plane=near_plane, far_plane=far_plane, radius_clip=radius_clip,
                             antialiased=rasterize_mode == "antialiased")
    per_camera = colors.shape[:-1 if sh_degree is None else -2] == batch + (C, N)
    if sh_degree is not None:
        campos = torch.linalg.inv(viewmats)[..., :3, 3]  # [..., C, 3]
        dirs = means[..., None, :, :] - campos[..., None, :]  # [..., C, N, 3]
        coeffs = colors if per_camera else colors[..., None, :, :, :].expand(batch + (C, N) + colors.shape[-2:])
        colors = torch.clamp_min(eval_sh(sh_degree, coeffs, dirs) + 0.5, 0.0)
    elif not per_camera:
        colors = colors[..., None, :, :].expand(batch + (C, N, colors.shape[-1]))
    if render_mode in ("D", "ED"):
        colors = proj.depths[..., None]
        if backgrounds is not None:
            backgrounds = torch.zeros(batch + (C, 1), dtype=colors.dtype, device=colors.device)
    elif render_mode in ("RGB+D", "RGB+ED"):
        colors = torch.cat([colors, proj.depths[..., None]], dim=-1)
        if backgrounds is not None:
            backgrounds = torch.cat([backgrounds, backgrounds.new_zeros(batch + (C, 1))], dim=-1)
    D = colors.shape[-1]
    I = math.prod(batch) * C
    composite = rasterize_to_pixels_cpp if use_cpp else rasterize_to_pixels_torch
    render, alphas = composite(
        proj.means2d.reshape(I, N, 2), proj.conics.reshape(I, N, 3), colors.reshape(I, N, D),
        proj.opacities.reshape(I, N), proj.radii.reshape(I, N, 2), proj.depths.reshape(I, N),
        width, height, tile_size, None if backgrounds is None else backgrounds.reshape(I, D).to(colors.dtype))
    render = render.view(batch + (C, height, width, D))
    alphas = alphas.view(batch + (C, height, width, 1))
    if render_mode in ("ED", "RGB+ED"):
        render = torch.cat([render[..., :-1], render[..., -1:] / alphas.clamp(min=1e-10)], dim=-1)
    meta = {"radii": proj.radii, "means2d": proj.means2d, "depths": proj.depths, "conics": proj.conics,
            "opacities": proj.opacities, "width": width, "height": height, "tile_size": tile_size,
            "n_cameras": C, "backend": "cpp" if use_cpp else "torch"}
    return render, alphas, meta
