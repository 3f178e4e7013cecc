"""``GaussianDecoder``: video latents + cameras -> 3D Gaussians in one forward pass.

A decoder *has* its parts: ``tokens`` (latent patches + Plucker rays), ``time`` (dynamic decoders:
source and target times), ``depth_reader`` (the input frame's depth, where it reads one), ``blocks``
(the body: the Mamba-2 / attention stack), ``head`` (tokens -> raw Gaussians on the ``layout``'s grid) and
``input_pixels`` (one Gaussian per input pixel). ``decode`` runs them for M Gaussian sets per scene;
``StaticGaussianDecoder`` (one set) and ``DynamicGaussianDecoder`` (one per target time) only say
which sets and which input frames. Saved and loaded with ``save_pretrained`` / ``from_pretrained``.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import Tensor, nn

from lyra.data.codecs.frames import latent_frame_of
from lyra.models.blocks import BlockStack, BodyConfig
from lyra.models.decoders.activations import GaussianActivationConfig, ScaleMode
from lyra.models.decoders.head import GaussianHead
from lyra.models.decoders.input_depth import hidden_from_input
from lyra.models.decoders.input_frames import InputDepthReader, InputFrames
from lyra.models.decoders.input_image import InputImageGaussians
from lyra.models.decoders.layout import GaussianFrames, GaussianLayout
from lyra.models.decoders.legacy import read_pretrained
from lyra.models.decoders.tokens import TimeEmbed, TokenEmbed
from lyra.render.gaussians import Gaussians

DENSITIES = (1, 2, 4, 8)


def decoder_class(name: str) -> "type[GaussianDecoder] | None":
    """The decoder class called ``name`` (StaticGaussianDecoder, DynamicGaussianDecoder or a user's subclass)."""
    found, todo = None, list(GaussianDecoder.__subclasses__())
    while todo and found is None:
        cls = todo.pop()
        found = cls if cls.__name__ == name else None
        todo += cls.__subclasses__()
    return found


class GaussianDecoder(ModelMixin, ConfigMixin):
    """The decoders' shared machinery; build ``StaticGaussianDecoder`` or ``DynamicGaussianDecoder``.

    Args:
        latent_channels: channels of the codec's latents (linked from the codec in the configs).
        time_factor: frames per latent frame of the codec.
        space_factor: pixels per latent pixel (each side) of the codec.
        causal_first_frame: whether the codec encodes the first frame alone.
        patch_size: latent pixels per token (each side).
        body: the token mixer (:class:`lyra.models.blocks.BodyConfig`; Lyra's by default).
        density: Gaussians per latent pixel along each side (1, 2, 4 or 8): one Gaussian per
            ``(space_factor / density)``-pixel block. Lyra: 1.
        near: closest distance along a pixel ray a Gaussian can sit.
        far: farthest distance (Lyra: 500; small procedural scenes: ~20); input pixels without depth
            (sky) sit there.
        distance_bias: distance = near (1 - w) + far w with w = sigmoid(x - distance_bias).
        max_scale: upper bound of every scale.
        scale_bias: scale = min(exp(x - scale_bias), max_scale); ``None``: Lyra's 1 - ln 0.3
            (``"footprint"`` mode: ln 2, half the Gaussian's pixel block).
        opacity_bias: opacity = sigmoid(x - opacity_bias).
        scale_mode: ``"absolute"`` (Lyra: scales in scene units) or ``"footprint"`` (in units of the
            Gaussian's pixel-block width at its distance, so they fit any scene scale).
        gaussian_frames: ``"all"`` (Lyra: the codec's temporal compression is undone, Gaussians for
            every frame) or ``"latent"`` (one frame per latent frame, the last of its group).
        latent_skip: also map every latent pixel straight to its Gaussians' raw values with a
            zero-initialised linear layer beside the body.
        latent_frames_per_view: with ``gaussian_frames="latent"``, how many latent frames of each
            trajectory emit Gaussians, evenly spaced, the first and the last included (``None``: all).
        input_depth: also read the input frame's depth (static: the input image, trajectory 0 frame
            0; dynamic: the input video's frame nearest each target time; GEN3C's 3D cache) warped
            into every source camera: it enters the tokens through a zero-initialised embed, and every
            grid Gaussian whose cell it covers starts at that depth, which the distance channel
            corrects by at most a factor exp(``input_depth_range``). ``forward`` then needs
            ``input_depth``. Not in the paper.
        input_depth_range: the largest |log| correction of an input depth (0.5: x0.61 to x1.65).
        input_depth_fill: fill holes of the warped input depth (cells no input pixel reaches, unless
            its sky does) this many cells deep from their deepest neighbour; 0: the decoder predicts
            their distance itself.
        input_depth_token_stride: the warp of the input depth that the tokens read takes one input
            pixel in k x k (the grid Gaussians' warp always reads every pixel); 1: every pixel (the
            decoders before E44); 2: at 8-pixel token cells still 4 x 4 points per cell, and the
            token warp ~10x cheaper (docs/experiments.md, E44).
        hidden_grid_opacity: log-odds added to the opacity of every grid Gaussian the input frame
            cannot show (outside its view, or behind its surface: ``hidden_from_input``), so the grid
            fills the disocclusions without veiling what the input pixels show; 0: off. Needs
            ``input_depth``. Not in the paper.
        input_image_gaussians: also emit one Gaussian per pixel of the input frame, on its ray at the
            input depth, coloured by the pixel, corrected from the input frame's tokens; they follow
            the grid's Gaussians in the output. ``forward`` then needs ``input_image``; needs
            ``input_depth``. Not in the paper.
        input_colour_fit: with ``input_image_gaussians``, refine the input pixels' base colours by this
            many residual steps so their splats, drawn as 3DGS viewers draw them, reproduce the input
            frame at its own camera (``lyra.models.decoders.input_image.fit_colours_to_view``); 0: the
            pixels' own colours. Not in the paper.
        input_border: with ``input_image_gaussians``, continue the input frame's edge beyond it by this
            fraction of its width (left, right) and height (top, bottom) (edge colour and depth
            replicated, one Gaussian per virtual pixel, not learned:
            ``lyra.models.decoders.input_image.border_gaussians``), so views that see past the input
            frame show its edge rather than the background; 0: none. Not in the paper.
        input_colour_correction: whether the input frame's tokens also correct the input pixels'
            colours (they always correct depth, size, orientation and opacity); False: the colours are
            the frame's (refined by ``input_colour_fit``). Not in the paper.
        trained_on: what the decoder was trained on (clip size, field of view, codec, teacher), written
            by ``StudentModule`` when training starts, so a saved decoder says what it can read
            (``lyra generate`` uses it); ``None`` until then. Not architecture.
    """

    config_name = "config.json"
    is_dynamic: ClassVar[bool]
    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        latent_channels: int = 16,
        time_factor: int = 4,
        space_factor: int = 8,
        causal_first_frame: bool = True,
        patch_size: int = 2,
        body: BodyConfig | None = None,
        density: int = 1,
        near: float = 0.1,
        far: float = 500.0,
        distance_bias: float = 1.65,
        max_scale: float = 0.3,
        scale_bias: float | None = None,
        opacity_bias: float = 2.0,
        scale_mode: ScaleMode = "absolute",
        gaussian_frames: GaussianFrames = "all",
        latent_skip: bool = False,
        latent_frames_per_view: int | None = None,
        input_depth: bool = False,
        input_depth_range: float = 0.5,
        input_depth_fill: int = 8,
        input_depth_token_stride: int = 1,
        input_image_gaussians: bool = False,
        trained_on: dict[str, Any] | None = None,
        hidden_grid_opacity: float = 0.0,
        input_colour_fit: int = 0,
        input_border: float = 0.0,
        input_colour_correction: bool = True,
    ) -> None:
        super().__init__()
        if type(self) is GaussianDecoder:
            raise TypeError("GaussianDecoder is the decoders' interface: build StaticGaussianDecoder or "
                            "DynamicGaussianDecoder")
        body = BodyConfig.coerce(body)
        self.register_to_config(body=asdict(body))  # config.json holds plain values
        if gaussian_frames not in ("all", "latent"):
            raise ValueError(f"gaussian_frames must be 'all' or 'latent', got {gaussian_frames!r}")
        if density not in DENSITIES or space_factor % density:
            raise ValueError(f"density must be one of {DENSITIES} and divide space_factor {space_factor}, got {density}")
        if latent_frames_per_view is not None and (gaussian_frames != "latent" or latent_frames_per_view < 1):
            raise ValueError("latent_frames_per_view needs gaussian_frames='latent' and a count >= 1 "
                             f"(got {latent_frames_per_view} with gaussian_frames={gaussian_frames!r})")
        if input_depth_fill < 0:
            raise ValueError(f"input_depth_fill must be >= 0 cells, got {input_depth_fill}")
        if input_depth_token_stride < 1:
            raise ValueError(f"input_depth_token_stride must be >= 1 pixel, got {input_depth_token_stride}")
        if not (math.isfinite(hidden_grid_opacity) and hidden_grid_opacity >= 0):
            raise ValueError(f"hidden_grid_opacity must be a finite log-odds >= 0, got {hidden_grid_opacity}")
        if hidden_grid_opacity and not input_depth:
            raise ValueError("hidden_grid_opacity finds what the input frame cannot show from its depth: build the "
                             "decoder with input_depth=True too")
        for name, value in (("input_colour_fit", input_colour_fit), ("input_border", input_border)):
            if value and not input_image_gaussians:
                raise ValueError(f"{name} works on the input image's Gaussians: build the decoder with "
                                 f"input_image_gaussians=True too (or {name}=0)")
        if input_image_gaussians and not input_depth:
            raise ValueError("input_image_gaussians places the input image's pixels at its depth: build the decoder "
                             "with input_depth=True too")
        self.activation = GaussianActivationConfig(near=near, far=far, distance_bias=distance_bias, max_scale=max_scale,
                                                   scale_bias=scale_bias, opacity_bias=opacity_bias, scale_mode=scale_mode,
                                                   prior_log_range=input_depth_range)
        self.layout = GaussianLayout(time_factor, space_factor, causal_first_frame, density, gaussian_frames,
                                     latent_frames_per_view, self.activation)
        width = body.width
        # Parts in the order the earlier single-class layout registered them, so an optimizer state
        # saved by it (parameters by position) still fits.
        self.tokens = TokenEmbed(latent_channels, width, patch_size, time_factor, space_factor, causal_first_frame)
        self.depth_reader = (InputDepthReader(width, patch_size, time_factor, causal_first_frame, input_depth_fill,
                                              input_depth_token_stride)
                             if input_depth else None)
        self.blocks = BlockStack(body)
        self.head = GaussianHead(width, latent_channels, patch_size, self.layout, latent_skip)
        self.input_pixels = (InputImageGaussians(width, patch_size * space_factor, opacity_bias,
                                                 colour_fit=input_colour_fit, border=input_border,
                                                 colour_correction=input_colour_correction)
                             if input_image_gaussians else None)
        self.time = TimeEmbed(width, patch_size, time_factor, causal_first_frame) if self.is_dynamic else None

    # ---- the shared pipeline ------------------------------------------------------------------

    def decode(
        self,
        latents: Tensor,  # [B, V, C, T', h, w]
        c2w: Tensor,  # [B, V, T, 4, 4]
        K: Tensor,  # [B, V, T, 3, 3]
        sets: int,  # M Gaussian sets per scene
        inputs: InputFrames | None = None,  # the input frame of every set (decoders that read one)
        time: Tensor | None = None,  # [B, V, T] (dynamic decoders)
        target_time: Tensor | None = None,  # [B, M] (dynamic decoders)
    ) -> Gaussians:  # [B, M, N], N = V F gh gw grid Gaussians (+ H W input pixels)
        B, V, _, Tl, h, w = latents.shape
        tokens = self.tokens(latents, c2w, K)  # [B, V, L, D]
        tokens = tokens[:, None] if self.time is None else self.time(tokens, time, target_time, (h, w))
        if self.depth_reader is not None:
            tokens = tokens + self.depth_reader.tokens(inputs, c2w, K, (Tl, h, w))
        L, D = tokens.shape[-2:]
        p = self.config.patch_size
        x = self.blocks(tokens.expand(B, sets, V, L, D).reshape(B * sets, V * L, D))
        x = x.reshape(B * sets * V, Tl, h // p, w // p, D).permute(0, 4, 1, 2, 3)  # back on the latent grid
        raw = self.head(x, latents, sets).float()  # [B, M, V, F, gh, gw, 12]
        prior = None
        if self.depth_reader is not None:
            frames = self.layout.frame_indices(c2w.shape[2]).to(c2w.device)
            prior = self.depth_reader.warp(inputs, c2w[:, :, frames], K[:, :, frames], raw.shape[4:6])[0]
        g = self.layout.to_gaussians(raw, c2w, K, prior)
        if self.config.hidden_grid_opacity:
            g = self._open_hidden(g, inputs)
        if self.input_pixels is None:
            return g
        cfg = self.config
        lat = latent_frame_of(inputs.frame, cfg.time_factor, cfg.causal_first_frame).flatten()  # [B*M]
        first = x.reshape(B * sets, V, D, Tl, h // p, w // p)[torch.arange(B * sets), 0, :, lat]  # trajectory 0
        flat = [t.flatten(0, 1) for t in (inputs.image, inputs.depth, inputs.c2w, inputs.K)]
        pixels = self.input_pixels(first, *flat, self.activation)  # [B*M, H*W]
        return Gaussians.cat([g, pixels.reshape_batch(B, sets)])

    def _open_hidden(self, g: Gaussians, inputs: InputFrames) -> Gaussians:  # batch [B, M]
        """The grid's Gaussians the input frame cannot show, made more opaque (``hidden_grid_opacity``)."""
        B, M, N = g.opacities.shape
        with torch.no_grad():  # a mask: no graph through the projection of every grid mean
            hidden = hidden_from_input(g.means.reshape(B * M, N, 3), inputs.depth.flatten(0, 1),
                                       inputs.c2w.flatten(0, 1), inputs.K.flatten(0, 1)).reshape(B, M, N)
        logit = torch.logit(g.opacities.clamp(1e-6, 1 - 1e-6))
        opacities = torch.sigmoid(logit + self.config.hidden_grid_opacity * hidden.to(logit.dtype))
        return Gaussians(g.means, g.quats, g.scales, opacities, g.colors, check_values=False)

    def input_frames(
        self,
        c2w: Tensor,  # [B, V, T, 4, 4]
        K: Tensor,  # [B, V, T, 3, 3]
        input_depth: Tensor,  # as ``forward`` takes it
        time: Tensor | None = None,  # [B, V, T] (dynamic decoders)
        target_time: Tensor | None = None,  # [B, M] (dynamic decoders)
        input_image: Tensor | None = None,  # as ``forward`` takes it
    ) -> InputFrames:
        """The input frame each of the decoder's Gaussian sets reads."""
        raise NotImplementedError

    def input_depth_prior(
        self,
        c2w: Tensor,  # [B, V, T, 4, 4] the source cameras
        K: Tensor,  # [B, V, T, 3, 3]
        input_depth: Tensor,  # as ``forward`` takes it
        time: Tensor | None = None,  # [B, V, T] (dynamic decoders)
        target_time: Tensor | None = None,  # [B, M] (dynamic decoders)
    ) -> Tensor:  # [B, (M,) V, F, gh, gw] z-depth in each grid Gaussian's source frame, 0 = none
        """The input depth each grid Gaussian starts from, laid out like ``gaussian_depths``: what the
        decoder was given, to compare the depths it outputs with (docs/evaluation.md)."""
        if self.depth_reader is None:
            raise ValueError("input_depth_prior needs a decoder built with input_depth=True")
        frames = self.layout.frame_indices(c2w.shape[2]).to(c2w.device)
        inputs = self.input_frames(c2w, K, input_depth, time, target_time)
        z = self.depth_reader.warp(inputs, c2w[:, :, frames], K[:, :, frames], self.layout.grid_size(input_depth.shape[-2:]))[0]
        return z if self.is_dynamic else z[:, 0]

    # ---- the layout's facts, for losses and reports ----------------------------------------------

    def gaussian_frame_indices(self, num_frames: int) -> Tensor:  # [F] source frames that emit Gaussians
        return self.layout.frame_indices(num_frames)

    def gaussian_depths(
        self,
        gaussians: Gaussians,  # batch [B] or [B, M], as this decoder returned them
        c2w: Tensor,  # [B, V, T, 4, 4] the source cameras
        image_size: tuple[int, int],  # (H, W) of the source frames
    ) -> Tensor:  # [B, (M,) V, F, gh, gw] camera z of every grid Gaussian in its own source frame
        return self.layout.source_depths(gaussians, c2w, image_size)

    def grid_depth(self, depth: Tensor) -> Tensor:  # [B, V, T, H, W] -> [B, V, F, gh, gw] at the block centres
        return self.layout.grid_depth(depth)

    @property
    def body(self) -> BodyConfig:
        return self.blocks.config

    @property
    def readout(self) -> nn.ConvTranspose3d:
        """The head's layer that writes the 12 raw channels of every Gaussian from the tokens."""
        return self.head.proj

    def fit_latent_skip(
        self,
        latents: Tensor,  # [S, C, T', h, w] latents of S source trajectories
        rgb: Tensor,  # [S, T, H, W, 3] the teacher's RGB decoding of them
        ridge: float = 1e-3,
    ) -> float:
        """Start the latent skip at the least-squares colour readout (``GaussianHead.fit_skip``)."""
        return self.head.fit_skip(latents, rgb, ridge)

    # ---- saving and loading -----------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any) -> "GaussianDecoder":
        """A decoder folder written by ``save_pretrained`` (also one written before lyra's decoders
        were split into parts: its tensors are renamed; settings since removed are refused with the
        way forward). ``GaussianDecoder.from_pretrained`` builds whichever decoder the folder holds."""
        if kwargs:
            raise TypeError(f"GaussianDecoder.from_pretrained takes a local folder only, got options {sorted(kwargs)}")
        name, config, state = read_pretrained(Path(pretrained_model_name_or_path))
        target = decoder_class(name)
        if target is None:
            raise ValueError(f"{pretrained_model_name_or_path} holds an unknown decoder class {name!r}")
        if cls is not GaussianDecoder and target is not cls:
            raise ValueError(f"{pretrained_model_name_or_path} holds a {name}, not a {cls.__name__}; load it with "
                             f"lyra.models.{name}.from_pretrained(...)")
        decoder = target.from_config(config)
        decoder.load_state_dict(state, strict=True)
        return decoder.eval()
