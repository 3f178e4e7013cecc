"""Start a decoder from trained weights (``StudentModule(init_from=...)``).

Sources: a ``save_pretrained`` folder or a Lightning checkpoint of a ``StudentModule``. A static
decoder's weights may start a dynamic decoder (Lyra's dynamic stages start from the static
multi-trajectory stage): the dynamic decoder's time embeddings are then the only weights not
loaded, and they start at zero, so it begins as the static decoder. Anything else that does not
fit is an error naming the tensors, and so are weights holding NaN or Inf.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

import torch
from safetensors.torch import load_file

from lyra.models.decoders.static import GaussianDecoder

TIME_EMBEDDINGS = ("source_time_embed.", "target_time_embed.")


def first_non_finite(named: Iterable[tuple[str, Any]]) -> tuple[str, str] | None:
    """(name, "NaN" or "Inf") of the first floating-point tensor holding a non-finite value, else
    None. One device sync for the common all-finite case; sharded (DTensor) values are checked on
    this process's shard."""
    items = [(n, t.to_local() if hasattr(t, "to_local") else t) for n, t in named
             if isinstance(t, torch.Tensor) and (t.is_floating_point() or t.is_complex())]
    if not items:
        return None
    flags = [torch.isfinite(t.detach()).all() for _, t in items]
    try:
        ok = torch.stack(flags).cpu()
    except RuntimeError:  # tensors on several devices
        ok = torch.tensor([bool(f) for f in flags])
    if bool(ok.all()):
        return None
    name, t = items[int((~ok).nonzero()[0])]
    return name, "NaN" if bool(torch.isnan(t.detach()).any()) else "Inf"


def _read_state(path: Path) -> tuple[dict[str, torch.Tensor], str | None]:
    if path.is_dir():
        cfg = path / "config.json"
        weights = path / "diffusion_pytorch_model.safetensors"
        if not cfg.is_file() or not weights.is_file():
            raise FileNotFoundError(f"{str(path)!r} is not a decoder folder written by save_pretrained "
                                    "(config.json + diffusion_pytorch_model.safetensors)")
        return load_file(weights), json.loads(cfg.read_text()).get("_class_name")
    if not path.is_file():
        raise FileNotFoundError(f"init_from: {str(path)!r} does not exist; pass a decoder folder (save_pretrained) "
                                "or a Lightning checkpoint")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001  (torch raises many kinds for a file that is not a checkpoint)
        raise ValueError(f"init_from: {str(path)!r} is not a readable Lightning checkpoint ({type(err).__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else ''})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ValueError(f"init_from: {str(path)!r} has no state_dict; it is not a Lightning checkpoint")
    state = {k[len("decoder."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("decoder.")}
    if not state:
        raise ValueError(f"init_from: {str(path)!r} holds no decoder weights (no 'decoder.*' tensors)")
    return state, ckpt.get("lyra_decoder", {}).get("class")


def load_decoder_weights(decoder: GaussianDecoder, source: str | Path) -> list[str]:
    """Load ``source`` into ``decoder`` in place; returns the names left at their initial values."""
    state, saved_class = _read_state(Path(source))
    bad = first_non_finite(state.items())
    if bad is not None:
        raise ValueError(f"init_from: {source} holds non-finite weights ({bad[0]} contains {bad[1]}); start from an "
                         "earlier checkpoint of that run, or from a decoder saved before training diverged")
    has_time = any(k.startswith(TIME_EMBEDDINGS) for k in state)
    if has_time and not decoder.is_dynamic:
        raise ValueError(f"init_from: {source} holds a dynamic decoder ({saved_class}); a static decoder would drop "
                         "its time conditioning. Use DynamicGaussianDecoder")
    own = decoder.state_dict()
    bad_shapes = {k: (tuple(v.shape), tuple(own[k].shape)) for k, v in state.items()
                  if k in own and tuple(v.shape) != tuple(own[k].shape)}
    unexpected = sorted(set(state) - set(own))
    if unexpected and all(k.startswith("depth_embed.") for k in unexpected):
        raise ValueError(f"init_from: {source} holds a decoder that reads the input image's depth (input_depth: true) "
                         "and this one does not; build it with input_depth: true, or start from a decoder trained "
                         "without it (benchmarks/configs/static_without_input_depth.yaml, dynamic_without_input_video.yaml)")
    if unexpected and all(k.startswith(("depth_embed.", "pixel_gaussians.")) for k in unexpected):
        raise ValueError(f"init_from: {source} holds a decoder with input-image Gaussians (input_image_gaussians: true) "
                         "and this one has none; build it with input_image_gaussians: true (and input_depth: true)")
    if bad_shapes or unexpected:
        raise ValueError(f"init_from: {source} does not fit this decoder's architecture (body, density, "
                         f"latent_channels, patch_size must match): shape mismatches (saved, here) {bad_shapes}, "
                         f"unknown tensors {unexpected[:8]}")
    # Branches that start as no-ops may start fresh: time embeddings (static -> dynamic) and the
    # input-image Gaussians' correction (it starts at the lifted image).
    fresh = (TIME_EMBEDDINGS if decoder.is_dynamic and not has_time else ()) + ("pixel_gaussians.",)
    missing = sorted(set(own) - set(state))
    if any(k.startswith("depth_embed.") for k in missing):
        raise ValueError(f"init_from: {source} holds a decoder that does not read the input depth (input_depth: false) "
                         "and this one does; start from a decoder trained with input_depth: true, or build this one "
                         "without it (input_depth: false, input_image_gaussians: false: "
                         "benchmarks/configs/static_without_input_depth.yaml, dynamic_without_input_video.yaml)")
    if missing and not all(k.startswith(fresh) for k in missing):
        raise ValueError(f"init_from: {source} lacks decoder tensors {missing[:8]}")
    decoder.load_state_dict(state, strict=False)
    return missing
