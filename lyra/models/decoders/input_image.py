"""One Gaussian per pixel of the input image: an optional layer of the static decoder.

Every trajectory of a Lyra clip starts at the input image, and GEN3C's 3D cache is that image
lifted with its depth. The decoder's own Gaussians are one per ``space_factor / density`` pixel
block, coloured through the latents, so they cannot hold the input image's pixel detail; measured
on the procedural teacher they reproduce their own source views at ~25 dB while the image warped
with its depth shows held-out views at 25-29 dB (docs/experiments.md). A decoder
built with ``input_image_gaussians=True`` adds one Gaussian per input pixel, on its pixel ray at the
input depth (sky: at ``far``), coloured by the pixel, nearly opaque, about a pixel wide; a
transposed convolution from the mixed tokens of the input frame corrects every one of its channels.
The correction starts at zero, so training starts from the lifted image and learns what to change:
colour and opacity where the image is wrong from other views, size where views come closer, depth
within the input depth's bound.

Pixel-aligned Gaussians coloured from the image are the layout of feed-forward splatting models
(Splatter Image, pixelSplat, Flash3D); Lyra's decoder does not have them. docs/experiments.md has
the measurements behind this layer.

A Gaussian a pixel wide, drawn as 3DGS renderers draw it (with a 0.3 px^2 low-pass), spreads its
colour over its neighbours: the lifted image seen from its own camera is a blurred copy of itself.
With ``colour_fit=n`` the pixels' base colours are first refined by n residual steps so that their
splats reproduce the image at its own camera (``fit_colours_to_view``), then corrected as above.

A view that sees past the input frame's edges (a zoom out, a pan) finds nothing there but what the
grid learned, and over a background that is the background. With ``border=f`` the frame's edge is
also continued beyond it by f of its width (left, right) and height (top, bottom)
(``border_gaussians``): the edge pixels' colour and depth,
replicated, as Gaussians on the rays of those virtual pixels, like the clamp-to-edge padding of an
image, so such views show a smear of the edge rather than the background.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lyra.models.decoders.activations import (
    RAW_CHANNELS,
    GaussianActivationConfig,
    activate_gaussians,
    colour_logits,
    colours_from_logits,
)
from lyra.models.decoders.layout import orient_to_world
from lyra.render.cameras import c2w_to_viewmat, pixel_rays, ray_distance
from lyra.render.gaussians import Gaussians
from lyra.render.rasterization import rasterization

# Raw channel layout (activations.py): distance, RGB (3), scale (3), quaternion (4), opacity.
_OPACITY = 11
_RGB = slice(1, 4)
_GEOMETRY_ONLY = torch.tensor([1.0, 0, 0, 0] + [1.0] * 8)  # keeps every raw channel but the colours
# Half the residual per step: on validation scenes, 2 steps of 0.5 rendered the *other* views best
# among 1-3 steps of 0.3-0.7 (docs/experiments.md, E36); an exact fit to the input view does worse.
COLOUR_FIT_STEP = 0.5


@torch.no_grad()
def fit_colours_to_view(
    gaussians: Gaussians,  # [S, H*W] one Gaussian per pixel of each image, in raster order
    image: Tensor,  # [S, H, W, 3] the colours the splats should show at their own camera
    c2w: Tensor,  # [S, 4, 4]
    K: Tensor,  # [S, 3, 3]
    steps: int,
) -> Tensor:  # [S, H*W, 3] colours in [0, 1]
    """Colours whose splats, rendered at the image's own camera the way 3DGS viewers draw them
    (0.3 px^2 low-pass, alpha compositing), show ``image``: ``steps`` residual (Van Cittert) steps
    from the image itself, each adding ``COLOUR_FIT_STEP`` of the difference between the image and
    the alpha-normalised render, so the result does not depend on the background."""
    S, H, W, _ = image.shape
    g = gaussians
    target = image.reshape(S, H * W, 3).to(g.colors.dtype)
    colours = target.clone()
    viewmats = c2w_to_viewmat(c2w.to(g.means.dtype))[:, None]  # [S, 1, 4, 4]
    for _ in range(steps):
        rgb, alpha, _ = rasterization(g.means, g.quats, g.scales, g.opacities, colours, viewmats,
                                      K.to(g.means.dtype)[:, None], W, H)  # [S, 1, H, W, 3], [S, 1, H, W, 1]
        shown = (rgb / alpha.clamp_min(1e-3))[:, 0].reshape(S, H * W, 3)
        colours = (colours + COLOUR_FIT_STEP * (target - shown)).clamp(0.0, 1.0)
    return colours


def border_pixels(border: float, height: int, width: int) -> tuple[int, int]:
    """(left / right, top / bottom) pixels of a border of ``border`` times the frame's width / height."""
    return round(border * width), round(border * height)


def border_gaussians(
    image: Tensor,  # [S, H, W, 3] the input frame in [0, 1]
    depth: Tensor,  # [S, H, W] its z-depth, 0 = unknown (sky: at ``activation.far``)
    c2w: Tensor,  # [S, 4, 4]
    K: Tensor,  # [S, 3, 3] for (H, W)
    border: float,
    activation: GaussianActivationConfig,
    opacity_raw: float,
) -> Gaussians:  # [S, (H + 2 Ph) (W + 2 Pw) - H W] in world coordinates, as the input pixels are
    """The frame's edge continued beyond it by ``border`` of its size on every side (Pw = round(border W)
    pixels left and right, Ph = round(border H) above and below): edge colour and z-depth replicated
    outwards, one Gaussian per virtual pixel on its ray, sized and oriented as the input pixels start."""
    S, H, W, _ = image.shape
    Pw, Ph = border_pixels(border, H, W)
    wide = F.pad(image.permute(0, 3, 1, 2).float(), (Pw, Pw, Ph, Ph), mode="replicate").permute(0, 2, 3, 1)
    z = F.pad(depth[:, None].float(), (Pw, Pw, Ph, Ph), mode="replicate")[:, 0]
    K_wide = K.clone()
    K_wide[:, 0, 2] += Pw  # the same camera, its image grown on every side
    K_wide[:, 1, 2] += Ph
    ring = torch.ones(H + 2 * Ph, W + 2 * Pw, dtype=torch.bool, device=image.device)
    ring[Ph:Ph + H, Pw:Pw + W] = False
    raw = torch.zeros(S, int(ring.sum()), RAW_CHANNELS, dtype=wide.dtype, device=wide.device)
    raw[..., _RGB] = colour_logits(wide[:, ring])
    raw[..., _OPACITY] = opacity_raw
    return on_pixel_rays(raw, z, c2w, K_wide, activation, ring)


def on_pixel_rays(
    raw: Tensor,  # [S, n, 12] raw channels of the pixels kept by ``keep`` (all: n = H W), raster order
    depth: Tensor,  # [S, H, W] z-depth, 0 = unknown (sky: at ``activation.far``)
    c2w: Tensor,  # [S, 4, 4]
    K: Tensor,  # [S, 3, 3] for (H, W)
    activation: GaussianActivationConfig,
    keep: Tensor | None = None,  # [H, W] bool: which pixels ``raw`` holds (None: all)
) -> Gaussians:  # [S, n] in world coordinates
    """Pixel-aligned Gaussians: each on its pixel's ray at the depth given, its scale in units of a
    pixel at that distance (the decoder's ``footprint`` mode), its orientation relative to the camera."""
    S, H, W = depth.shape
    origins, dirs = pixel_rays(c2w, K, H, W)  # [S, H, W, 3]
    distance = ray_distance(depth, dirs, c2w)
    distance = torch.where(depth > 0, distance, torch.full_like(distance, activation.far))  # sky: the far bound
    if keep is None:
        origins, dirs, distance = origins.flatten(1, 2), dirs.flatten(1, 2), distance.flatten(1, 2)
    else:
        origins, dirs, distance = origins[:, keep], dirs[:, keep], distance[:, keep]
    footprint = (1.0 / torch.sqrt(K[:, 0, 0] * K[:, 1, 1]))[:, None].expand(S, raw.shape[1])  # a pixel per unit distance
    g = activate_gaussians(raw, origins, dirs, activation, footprint=footprint, prior=distance)
    return orient_to_world(g, c2w)


class InputImageGaussians(nn.Module):
    """Pixel-aligned Gaussians of the input frame, corrected from its tokens.

    Args:
        width: channels of the decoder's tokens.
        pixels_per_token: input pixels per token along each side (``patch_size * space_factor``).
        opacity_bias: the decoder's opacity bias (opacity = sigmoid(x - opacity_bias)).
        initial_opacity: the opacity every input Gaussian starts at.
        colour_fit: residual steps that refine the pixels' base colours so their splats reproduce the
            input frame at its own camera (``fit_colours_to_view``); 0: the pixels' own colours.
        border: how far the frame's edge is continued beyond it, as a fraction of its width / height
            (``border_gaussians``; not corrected, not learned); their Gaussians come before the input
            pixels' in the output.
        colour_correction: whether the tokens correct the pixels' colours too (else only depth, size,
            orientation and opacity; the colours stay the frame's, or the fitted ones).
    """

    def __init__(self, width: int, pixels_per_token: int, opacity_bias: float, initial_opacity: float = 0.9,
                 colour_fit: int = 0, border: float = 0.0, colour_correction: bool = True) -> None:
        super().__init__()
        if not 0 < initial_opacity < 1:
            raise ValueError(f"initial_opacity must be in (0, 1), got {initial_opacity}")
        if colour_fit < 0:
            raise ValueError(f"colour_fit must be >= 0 steps, got {colour_fit}")
        if not (math.isfinite(border) and 0 <= border <= 1):
            raise ValueError(f"border must be a fraction of the frame in [0, 1], got {border}")
        self.colour_fit, self.border, self.colour_correction = colour_fit, border, colour_correction
        self.initial_opacity_raw = opacity_bias + math.log(initial_opacity / (1 - initial_opacity))
        self.correction = nn.ConvTranspose2d(width, RAW_CHANNELS, pixels_per_token, stride=pixels_per_token)
        nn.init.zeros_(self.correction.weight)  # starts at the lifted image; the weights still get gradients
        with torch.no_grad():
            self.correction.bias.zero_()
            self.correction.bias[_OPACITY] = self.initial_opacity_raw

    def forward(
        self,
        tokens: Tensor,  # [S, D, h', w'] the input frame's mixed tokens
        image: Tensor,  # [S, H, W, 3] the input image in [0, 1]
        depth: Tensor,  # [S, H, W] its z-depth, 0 = unknown (sky)
        c2w: Tensor,  # [S, 4, 4] the input camera
        K: Tensor,  # [S, 3, 3] for (H, W)
        activation: GaussianActivationConfig,
    ) -> Gaussians:  # [S, (border Gaussians +) H*W] in world coordinates, the input pixels last
        g = self._pixels(tokens, image, depth, c2w, K, activation)
        if not self.border:
            return g
        edge = border_gaussians(image, depth, c2w, K, self.border, activation, self.initial_opacity_raw)
        return Gaussians.cat([edge, g])

    def _pixels(self, tokens: Tensor, image: Tensor, depth: Tensor, c2w: Tensor, K: Tensor,
                activation: GaussianActivationConfig) -> Gaussians:  # [S, H*W], shapes as ``forward``'s
        S, H, W, _ = image.shape
        raw = self.correction(tokens.to(self.correction.weight.dtype)).permute(0, 2, 3, 1).float()  # [S, H, W, 12]
        if raw.shape[1:3] != (H, W):
            raise ValueError(f"the input frame's tokens cover {tuple(raw.shape[1:3])} pixels, the image is {(H, W)}")
        if not self.colour_correction:
            raw = raw * _GEOMETRY_ONLY.to(raw)
        correction = raw
        raw = raw + F.pad(colour_logits(image.float()), (1, RAW_CHANNELS - 4))  # the pixel's colour
        g = on_pixel_rays(raw.reshape(S, H * W, RAW_CHANNELS), depth, c2w, K, activation)
        if not self.colour_fit:
            return g
        # The fit sees the corrected geometry but no gradient: a base colour, which the correction's
        # colour channels still adjust.
        base = fit_colours_to_view(g.detach(), image, c2w, K, self.colour_fit)
        rgb = colours_from_logits(colour_logits(base) + correction.reshape(S, H * W, RAW_CHANNELS)[..., _RGB])
        return Gaussians(g.means, g.quats, g.scales, g.opacities, rgb, check_values=False)
