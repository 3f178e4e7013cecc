"""The compiled CPU compositor (``csrc/composite_cpu.cpp``) behind the ``"cpp"`` backend.

Same arguments, outputs and semantics as :func:`lyra.render.composite_torch.rasterize_to_pixels_torch`
(the plain PyTorch reference it is tested against), but compiled and tile-major like gsplat's CUDA
kernels: the depth-ordered Gaussians reaching each 16x16 tile are listed once (``composite_bin``),
then forward and backward run tile by tile, the tiles of every image in parallel, with per-pixel
state instead of lists of pairs and only the pixels of each Gaussian's alpha >= 1/255 ellipse
visited. Much faster than the reference on CPU, above all for translucent scenes, in O(pixels +
tile entries) memory. It is built on first use with ``torch.utils.cpp_extension`` (a C++ compiler
and ninja are needed; the build is cached per machine, by default under
``~/.cache/torch_extensions``). When it cannot be built, :func:`cpp_compositor_available` says why
once and ``backend="auto"`` falls back to the PyTorch compositor.
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from pathlib import Path

import torch
from torch import Tensor

from lyra.render.composite_torch import _tile_boxes

SOURCE = Path(__file__).with_name("csrc") / "composite_cpu.cpp"


@functools.lru_cache(maxsize=1)
def _extension():
    from torch.utils.cpp_extension import (
        load,  # pulls in the compiler toolchain; only when building
    )

    # With OpenMP the tiles run on PyTorch's own intra-op threads (the process already holds the
    # libgomp PyTorch links, so there is one thread pool); a compiler without OpenMP still gets the
    # compiled compositor, on one thread.
    try:
        return load(name="lyra_composite_cpu_omp", sources=[str(SOURCE)], extra_cflags=["-O3", "-fopenmp"],
                    extra_ldflags=["-fopenmp"], verbose=False)
    except Exception:  # noqa: BLE001  (a compiler without OpenMP fails in many ways)
        return load(name="lyra_composite_cpu", sources=[str(SOURCE)], extra_cflags=["-O3"], verbose=False)


@functools.lru_cache(maxsize=1)
def cpp_compositor_available() -> bool:
    """True when the compiled compositor builds (or was built) and loads; warns once if not."""
    if os.environ.get("LYRA_DISABLE_CPP", "") not in ("", "0"):
        return False
    try:
        _extension()
    except Exception as err:  # noqa: BLE001  (a missing compiler raises many kinds)
        warnings.warn(f"lyra's compiled CPU compositor could not be built ({type(err).__name__}: "
                      f"{str(err).splitlines()[0] if str(err) else ''}); using the PyTorch compositor, which is "
                      "several times slower. Install a C++ compiler and ninja to build it.", stacklevel=2)
        return False
    return True


def _depth_order(radii: Tensor, depths: Tensor) -> tuple[Tensor, Tensor]:  # [I, N] int64, [I] int64
    valid = (radii > 0).all(-1)
    key = torch.where(valid, depths, torch.full_like(depths, math.inf))
    return torch.argsort(key, dim=1, stable=True), valid.sum(1)


class _CompositeCpp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means2d, conics, colors, opacities, background, radii, depths, width, height, tile_size):
        x0, x1, y0, y1 = _tile_boxes(means2d, radii, width, height, tile_size)
        boxes = torch.stack([x0, x1, y0, y1], dim=-1).contiguous()
        order, n_valid = _depth_order(radii, depths)
        args = [t.contiguous() for t in (means2d, conics, colors, opacities)]
        ext = _extension()
        bins = ext.composite_bin(args[0], args[1], args[3], boxes, order, n_valid, width, height, tile_size)
        background = background.contiguous()
        render, t_final, stop, tile_last = ext.composite_forward(*args, order, n_valid, *bins, background,
                                                                 width, height, tile_size)
        ctx.save_for_backward(*args, order, n_valid, *bins, background, t_final, stop, tile_last)
        ctx.size = (width, height, tile_size)
        return render, (1.0 - t_final).to(colors.dtype)[..., None]

    @staticmethod
    def backward(ctx, grad_render, grad_alpha):
        width, height, tile_size = ctx.size
        grads = _extension().composite_backward(*ctx.saved_tensors, grad_render.contiguous(),
                                                grad_alpha[..., 0].contiguous(), width, height, tile_size)
        return (*grads, None, None, None, None, None)


def rasterize_to_pixels_cpp(
    means2d: Tensor,  # [I, N, 2]
    conics: Tensor,  # [I, N, 3]
    colors: Tensor,  # [I, N, D]
    opacities: Tensor,  # [I, N]
    radii: Tensor,  # [I, N, 2] int32
    depths: Tensor,  # [I, N]
    width: int,
    height: int,
    tile_size: int = 16,
    backgrounds: Tensor | None = None,  # [I, D]
) -> tuple[Tensor, Tensor]:  # colors [I, H, W, D], alphas [I, H, W, 1]
    if means2d.device.type != "cpu":
        raise ValueError("the compiled compositor runs on CPU tensors; use backend='gsplat' or 'torch' on CUDA")
    if backgrounds is None:
        backgrounds = torch.zeros(opacities.shape[0], colors.shape[-1], dtype=colors.dtype)
    return _CompositeCpp.apply(means2d, conics, colors, opacities, backgrounds.to(colors.dtype), radii.detach(),
                               depths.detach(), width, height, tile_size)
