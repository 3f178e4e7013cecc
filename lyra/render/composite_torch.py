"""Front-to-back alpha compositing of projected Gaussians in plain PyTorch (any device).

Semantics follow gsplat's CUDA ``rasterize_to_pixels`` exactly: a Gaussian touches every pixel
of every 16x16 tile its bounding box overlaps; per pixel, in depth order,
``alpha = min(0.999, opacity * exp(-sigma))``, pairs with ``alpha < 1/255`` (or ``sigma < 0``)
are skipped, and compositing stops *before* the Gaussian that would bring the transmittance to
``<= 1e-4``.

How it stays fast and lean without a per-tile loop:
- Gaussians are processed in depth-ordered chunks, all images at once. Pixels that saturate are
  dropped, and a Gaussian whose tile box holds no live pixel (an integral-image query) is skipped
  before any work, so an opaque scene only ever touches a small fraction of its Gaussians.
- For each Gaussian we enumerate its exact pixel set: rows of its tile box that meet the
  ``alpha >= 1/255`` ellipse, and on each row the column interval solved from the quadratic
  (widened by a pixel and then filtered by the exact alpha test, so rounding cannot drop pairs).
- Transmittance is a segmented scan of ``log(1 - alpha)`` in float64 over pairs sorted by pixel
  (a stable sort keeps depth order); a global float32 cumsum would lose precision.
- The backward pass is a custom ``autograd.Function`` that keeps only the contributing pairs and
  walks the chunks back to front with a per-pixel "colour behind" accumulator, so it needs
  neither an autograd graph of pixels x Gaussians nor a second sort.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from lyra.render.projection import (
    ALPHA_THRESHOLD,  # one threshold for culling and compositing
)

MAX_ALPHA = 0.999
LOG_T_MIN = math.log(1e-4)


def _tile_boxes(means2d: Tensor, radii: Tensor, width: int, height: int, tile_size: int):
    """Pixel boxes [x0, x1) x [y0, y1) covered by the tiles each Gaussian's bounding box touches."""
    tw, th = math.ceil(width / tile_size), math.ceil(height / tile_size)
    r = radii.to(means2d.dtype) / tile_size
    t = means2d / tile_size
    x0 = (torch.floor(t[..., 0] - r[..., 0]).clamp(0, tw).long() * tile_size).clamp(max=width)
    x1 = (torch.ceil(t[..., 0] + r[..., 0]).clamp(0, tw).long() * tile_size).clamp(max=width)
    y0 = (torch.floor(t[..., 1] - r[..., 1]).clamp(0, th).long() * tile_size).clamp(max=height)
    y1 = (torch.ceil(t[..., 1] + r[..., 1]).clamp(0, th).long() * tile_size).clamp(max=height)
    return x0, x1, y0, y1


def _take(x: Tensor, idx: Tensor) -> Tensor:
    """x[idx] along dim 0; index_select is several times faster than advanced indexing on CPU."""
    return x.index_select(0, idx)


def _expand(starts: Tensor, counts: Tensor) -> tuple[Tensor, Tensor]:
    """For segments (start, count): owner index of every element and its value start + offset."""
    total = int(counts.sum())
    owner = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts, output_size=total)
    first = torch.cumsum(counts, 0) - counts
    offset = torch.repeat_interleave(starts - first, counts, output_size=total)
    return owner, offset + torch.arange(total, device=counts.device)


def _segment_ids(sorted_keys: Tensor) -> tuple[Tensor, Tensor]:
    """Segment id of each element of a sorted key array, and the index of each segment's first element."""
    new = torch.ones_like(sorted_keys, dtype=torch.bool)
    new[1:] = sorted_keys[1:] != sorted_keys[:-1]
    return torch.cumsum(new, 0) - 1, new.nonzero().squeeze(1)


class Pairs(NamedTuple):
    """Contributing (pixel, Gaussian) pairs of one chunk, sorted by pixel then depth."""

    pix: Tensor  # [P] flat pixel index over all images
    gauss: Tensor  # [P] flat Gaussian index over all images
    alpha: Tensor  # [P]
    t_before: Tensor  # [P] transmittance in front of the pair
    dx: Tensor  # [P] mean minus pixel centre
    dy: Tensor  # [P]
    falloff: Tensor  # [P] exp(-sigma)


@torch.no_grad()
def composite_forward(
    means2d: Tensor,  # [I, N, 2]
    conics: Tensor,  # [I, N, 3]
    colors: Tensor,  # [I, N, D]
    opacities: Tensor,  # [I, N]
    radii: Tensor,  # [I, N, 2] int, 0 = culled
    depths: Tensor,  # [I, N]
    width: int,
    height: int,
    tile_size: int = 16,
    pair_budget: int = 300_000,
) -> tuple[Tensor, Tensor, list[Pairs]]:
    """Returns accumulated colour [I*H*W, D] (no background), log transmittance [I*H*W] (float64)
    and the contributing pairs of every chunk, front chunk first."""
    I, N = opacities.shape
    D = colors.shape[-1]
    hw = height * width
    dev = means2d.device
    accum = torch.zeros(I * hw, D, dtype=torch.float64, device=dev)
    log_t = torch.zeros(I * hw, dtype=torch.float64, device=dev)
    done = torch.zeros(I * hw, dtype=torch.bool, device=dev)
    saved: list[Pairs] = []
    if I == 0 or N == 0 or not (radii > 0).any():
        return accum, log_t, saved

    valid = (radii > 0).all(-1)
    order = torch.argsort(torch.where(valid, depths, torch.full_like(depths, math.inf)), dim=1, stable=True)
    n_valid = valid.sum(1)
    m2, q, op = means2d.reshape(I * N, 2), conics.reshape(I * N, 3), opacities.reshape(I * N)
    col = colors.reshape(I * N, D)
    bx0, bx1, by0, by1 = (b.reshape(-1) for b in _tile_boxes(means2d, radii, width, height, tile_size))
    # alpha >= 1/255  <=>  sigma <= L = ln(255 * opacity): a Gaussian's pixels lie in that ellipse.
    level = torch.log(op.clamp_min(ALPHA_THRESHOLD) / ALPHA_THRESHOLD)
    det_q = (q[:, 0] * q[:, 2] - q[:, 1] ** 2).clamp_min(1e-20)
    ext_y = torch.sqrt(2 * level * q[:, 0] / det_q)
    area = (math.pi * 2 * level / det_q.sqrt()).clamp(max=((bx1 - bx0) * (by1 - by0)).to(level.dtype)) + 1
    key_dtype = torch.int32 if I * hw < 2**31 - 1 else torch.int64
    ranked = (torch.arange(I, device=dev)[:, None] * N + order)  # [I, N] flat ids in depth order
    bx0, bx1, by0, by1, area = (_take(t, ranked.reshape(-1)).view(I, N) for t in (bx0, bx1, by0, by1, area))
    img_base = torch.arange(I, device=dev)[:, None] * ((height + 1) * (width + 1))
    max_valid = int(n_valid.max())
    lo = 0
    while lo < max_valid:
        # Live (unsaturated) pixels in each remaining Gaussian's tile box, by integral image. Chunk
        # ends where the expected number of live pairs reaches the budget, so chunks stay small
        # in memory while the saturated tail of an opaque scene is skipped in one step.
        live = torch.zeros(I, height + 1, width + 1, dtype=torch.int32, device=dev)
        live[:, 1:, 1:] = (~done).view(I, height, width).int().cumsum(1).cumsum(2)
        live = live.view(-1)
        live_rows = torch.zeros(I * height, width + 1, dtype=torch.int32, device=dev)
        live_rows[:, 1:] = (~done).view(I * height, width).int().cumsum(1)
        live_rows = live_rows.view(-1)
        x0, x1, y0, y1 = bx0[:, lo:max_valid], bx1[:, lo:max_valid], by0[:, lo:max_valid], by1[:, lo:max_valid]
        r0w, r1w = img_base + y0 * (width + 1), img_base + y1 * (width + 1)
        n_live = (live.take(r1w + x1) - live.take(r0w + x1) - live.take(r1w + x0) + live.take(r0w + x0))
        in_range = torch.arange(lo, max_valid, device=dev)[None] < n_valid[:, None]
        n_live = torch.where(in_range, n_live, 0)
        box = ((x1 - x0) * (y1 - y0)).clamp_min(1)
        est = torch.cumsum((area[:, lo:max_valid] * n_live / box).sum(0).double(), 0)
        hi = lo + int(torch.searchsorted(est, torch.tensor([float(pair_budget)], dtype=est.dtype))) + 1
        hi = min(hi, max_valid)
        sel = (n_live[:, : hi - lo] > 0).reshape(-1).nonzero().squeeze(1)  # image-major, depth order
        S = hi - lo
        img, loc = sel // S, sel % S
        flat = ranked.reshape(-1).take(img * N + loc + lo)
        x0, x1, y0, y1 = (t.reshape(-1).take(img * (max_valid - lo) + loc) for t in (x0, x1, y0, y1))
        lo = hi
        if len(flat) == 0:
            continue
        # Rows of the tile box that meet the ellipse (one pixel of slack; the exact test comes later).
        my = _take(m2[:, 1], flat)
        ey = _take(ext_y, flat)
        r0 = torch.maximum(y0, torch.ceil(my - ey - 0.5).long() - 1)
        r1 = torch.minimum(y1 - 1, torch.floor(my + ey - 0.5).long() + 1)
        nrow = (r1 - r0 + 1).clamp_min(0)
        owner, row = _expand(r0, nrow)
        g = torch.repeat_interleave(flat, nrow)
        qg = _take(q, g)
        a, b, c = qg[:, 0], qg[:, 1], qg[:, 2]
        mg = _take(m2, g)
        mx = mg[:, 0]
        dy = mg[:, 1] - (row.to(m2.dtype) + 0.5)
        # Column interval on that row: a dx^2 + 2 b dy dx + c dy^2 <= 2 L, with dx = mx - px.
        disc = (b * dy) ** 2 - a * (c * dy * dy - 2 * _take(level, g))
        root = torch.sqrt(disc.clamp_min(0))
        c0 = torch.maximum(torch.repeat_interleave(x0, nrow), torch.ceil(mx - (-b * dy + root) / a - 0.5).long() - 1)
        c1 = torch.minimum(torch.repeat_interleave(x1, nrow) - 1,
                           torch.floor(mx - (-b * dy - root) / a - 0.5).long() + 1)
        ncol = torch.where(disc >= 0, c1 - c0 + 1, torch.zeros_like(c0)).clamp_min(0)
        # Drop row segments whose pixels are all saturated (a per-row prefix count of live pixels).
        row_id = (torch.repeat_interleave(img, nrow) * height + row) * (width + 1)
        lo_c, hi_c = c0.clamp(0, width), (c1 + 1).clamp(0, width)
        ncol = torch.where(live_rows.take(row_id + hi_c) - live_rows.take(row_id + lo_c) > 0, ncol, 0)
        # Per-row constants, repeated (contiguously) to the row's pixels.
        row_base = ((row_id // (width + 1)) * width).to(key_dtype)
        per_row = torch.stack([mx, 0.5 * a, b * dy, 0.5 * c * dy * dy, _take(op, g)], dim=1)
        pair_row, colx = _expand(c0, ncol)
        pr = torch.repeat_interleave(per_row, ncol, dim=0)
        pix = torch.repeat_interleave(row_base, ncol) + colx.to(key_dtype)
        dx = pr[:, 0] - (colx.to(m2.dtype) + 0.5)
        sigma = dx * (pr[:, 1] * dx + pr[:, 2]) + pr[:, 3]
        falloff = torch.exp(-sigma)
        alpha = torch.clamp(pr[:, 4] * falloff, max=MAX_ALPHA)
        del pr, colx
        hit = (sigma >= 0) & (alpha >= ALPHA_THRESHOLD) & ~_take(done, pix)
        sel = hit.nonzero().squeeze(1)
        if len(sel) == 0:
            continue
        pix, alpha, dx, falloff, prow = (_take(t, sel) for t in (pix, alpha, dx, falloff, pair_row))
        del pair_row, sigma, hit, sel

        # Per-pixel front-to-back scan. Pairs were made Gaussian by Gaussian in depth order, so a
        # stable sort by pixel leaves each pixel's pairs in depth order.
        pix, perm = torch.sort(pix, stable=True)
        alpha, dx, falloff, prow = (_take(t, perm) for t in (alpha, dx, falloff, prow))
        pix = pix.long()
        seg, first = _segment_ids(pix)
        log1m = torch.log1p(-alpha.double())
        excl = torch.cumsum(log1m, 0) - log1m
        log_t_before = _take(log_t, pix) + (excl - _take(_take(excl, first), seg))
        include = log_t_before + log1m > LOG_T_MIN
        done[pix[~include]] = True
        inc = include.nonzero().squeeze(1)
        if len(inc) == 0:
            continue  # every pair of this chunk lies behind a pixel's stop: nothing to save
        pix, alpha, dx, falloff, prow, log1m, log_t_before = (
            _take(t, inc) for t in (pix, alpha, dx, falloff, prow, log1m, log_t_before))
        gauss = _take(g, prow)
        t_before = torch.exp(log_t_before)
        accum.index_add_(0, pix, (alpha.double() * t_before)[:, None] * _take(col, gauss).double())
        log_t.index_add_(0, pix, log1m)
        saved.append(Pairs(pix, gauss, alpha, t_before.to(alpha.dtype), dx, _take(dy, prow), falloff))
    return accum, log_t, saved


def composite_backward(
    grad_color: Tensor,  # [I*H*W, D]
    grad_alpha: Tensor,  # [I*H*W]
    log_t: Tensor,  # [I*H*W] final log transmittance
    background: Tensor,  # [I, D]
    saved: list[Pairs],
    conics: Tensor,  # [I, N, 3]
    colors: Tensor,  # [I, N, D]
    opacities: Tensor,  # [I, N]
    hw: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    I, N = opacities.shape
    D = colors.shape[-1]
    q, op, col = conics.reshape(I * N, 3), opacities.reshape(I * N), colors.reshape(I * N, D)
    t_final = torch.exp(log_t)
    g = grad_color.double()
    # "behind": colour composited behind the current pair in its pixel; starts as the background's share.
    behind = t_final[:, None] * background.double().repeat_interleave(hw, 0)
    v_bg = (t_final[:, None] * g).view(I, hw, D).sum(1)
    v_m2 = torch.zeros(I * N, 2, dtype=q.dtype, device=q.device)
    v_q, v_col, v_op = torch.zeros_like(q), torch.zeros_like(col), torch.zeros_like(op)
    for p in reversed(saved):
        c = _take(col, p.gauss).double()
        a64, tb = p.alpha.double(), p.t_before.double()
        w = a64 * tb
        wc = w[:, None] * c
        seg, first = _segment_ids(p.pix)
        csum = torch.cumsum(wc, 0)
        last = torch.cat([first[1:] - 1, first.new_tensor([len(p.pix) - 1])])
        # Colour behind each pair: later chunks + background, plus later pairs of this pixel here.
        behind_k = _take(behind, p.pix) + (_take(_take(csum, last), seg) - csum)
        gp = _take(g, p.pix)
        one_m = 1.0 - a64
        v_alpha = (gp * (tb[:, None] * c - behind_k / one_m[:, None])).sum(-1)
        v_alpha = v_alpha + _take(grad_alpha, p.pix).double() * _take(t_final, p.pix) / one_m
        v_col.index_add_(0, p.gauss, (w[:, None] * gp).to(col.dtype))
        free = _take(op, p.gauss) * p.falloff < MAX_ALPHA  # the 0.999 clamp has no gradient
        v_alpha = torch.where(free, v_alpha, 0.0)
        v_op.index_add_(0, p.gauss, (v_alpha * p.falloff).to(op.dtype))
        v_sigma = (-v_alpha * a64).to(q.dtype)
        dx, dy = p.dx, p.dy
        qq = _take(q, p.gauss)
        v_q.index_add_(0, p.gauss, v_sigma[:, None] * torch.stack([0.5 * dx * dx, dx * dy, 0.5 * dy * dy], -1))
        v_m2.index_add_(0, p.gauss, v_sigma[:, None] * torch.stack(
            [qq[:, 0] * dx + qq[:, 1] * dy, qq[:, 1] * dx + qq[:, 2] * dy], -1))
        behind.index_add_(0, p.pix, wc)
    return (v_m2.view(I, N, 2), v_q.view(I, N, 3), v_col.view(I, N, D), v_op.view(I, N),
            v_bg.to(background.dtype))


class _Composite(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means2d, conics, colors, opacities, background, radii, depths, width, height, tile_size):
        I = opacities.shape[0]
        accum, log_t, saved = composite_forward(
            means2d, conics, colors, opacities, radii, depths, width, height, tile_size)
        t_final = torch.exp(log_t)
        hw = height * width
        rgb = accum + t_final[:, None] * background.double().repeat_interleave(hw, 0)
        ctx.save_for_backward(conics, colors, opacities, background, log_t)
        ctx.saved_pairs = saved
        ctx.size = (width, height)
        D = colors.shape[-1]
        return (rgb.to(colors.dtype).view(I, height, width, D),
                (1.0 - t_final).to(colors.dtype).view(I, height, width, 1))

    @staticmethod
    def backward(ctx, grad_rgb, grad_alpha):
        conics, colors, opacities, background, log_t = ctx.saved_tensors
        width, height = ctx.size
        I, D = opacities.shape[0], colors.shape[-1]
        grads = composite_backward(
            grad_rgb.reshape(I * height * width, D), grad_alpha.reshape(-1), log_t, background,
            ctx.saved_pairs, conics, colors, opacities, height * width)
        return (*grads, None, None, None, None, None)


def rasterize_to_pixels_torch(
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
    if backgrounds is None:
        backgrounds = torch.zeros(opacities.shape[0], colors.shape[-1], dtype=colors.dtype, device=colors.device)
    return _Composite.apply(means2d, conics, colors, opacities, backgrounds, radii.detach(), depths.detach(),
                            width, height, tile_size)
