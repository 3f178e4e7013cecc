"""CLIP score between a text prompt and rendered frames (docs/evaluation.md, "Prompts").

The standard CLIPScore (Hessel et al. 2021, on torchmetrics' 0-100 scale)::

    score = 100 * max(cos(image_embedding, text_embedding), 0)

computed with an `open_clip <https://github.com/mlfoundations/open_clip>`_ model that is built
offline: the architecture is an open_clip config name (``"ViT-B-32"``, or one registered with
``open_clip.add_model_config``), created with ``pretrained=None``, and the weights come from a
local file only (``torch.save(model.state_dict())``, open_clip's ``.bin`` / ``.pt`` /
``.safetensors`` checkpoints, a dict with a ``state_dict`` entry). Nothing is downloaded.

Renders are lyra's channels-last ``[..., H, W, 3]`` images in [0, 1]; they reach the model
through the model's own preprocessing (open_clip's ``resize_mode``: ``shortest`` = shorter side
to the model's image size then centre crop, ``longest`` = longer side then centre pad,
``squash`` = straight resize; bicubic or bilinear; normalised with the model's mean / std),
done on tensors so renders stay on their device.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# What a pretrained tag's config contributes to preprocessing (open_clip.PreprocessCfg fields).
_PREPROCESS_KEYS = ("mean", "std", "interpolation", "resize_mode", "fill_color")


def clip_score(image_emb: Tensor, text_emb: Tensor) -> Tensor:
    """``100 * max(cos(image_emb, text_emb), 0)`` over the last dimension (broadcasting)."""
    cos = F.cosine_similarity(image_emb.float(), text_emb.float(), dim=-1)
    return 100 * cos.clamp_min(0)


def _import_open_clip():
    try:
        import open_clip  # optional (open-clip-torch): only the CLIP score needs it
    except ImportError as err:
        raise ImportError("the CLIP score needs open_clip: pip install open-clip-torch "
                          "(or unset evaluation.clip_weights to skip the CLIP score)") from err
    return open_clip


def _tag_preprocess(open_clip, model_name: str, tag: str | None) -> dict:
    """Preprocessing of the weights' pretrained tag (metadata only), or of every published tag of
    the architecture when they all agree; {} when the architecture has no published weights."""
    tags = list(open_clip.list_pretrained_tags_by_model(model_name))
    if tag is not None:
        cfg = open_clip.get_pretrained_cfg(model_name, tag)
        if not cfg:
            raise ValueError(f"evaluation.clip_pretrained_tag {tag!r} is not an open_clip pretrained tag of "
                             f"{model_name}; choose one of {tags} (it only selects the preprocessing: "
                             "nothing is downloaded)")
        return cfg
    found: dict[tuple, list[str]] = {}
    for t in tags:
        cfg = open_clip.get_pretrained_cfg(model_name, t)
        key = tuple((k, tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in sorted(cfg.items())
                    if k in _PREPROCESS_KEYS and v is not None)
        found.setdefault(key, []).append(t)
    if len(found) > 1:
        groups = "; ".join(f"{dict(k) or 'open_clip defaults'}: {v}" for k, v in found.items())
        raise ValueError(f"open_clip's published {model_name} weights differ in image preprocessing ({groups}); "
                         "set evaluation.clip_pretrained_tag to the tag the weights file comes from")
    return open_clip.get_pretrained_cfg(model_name, tags[0]) if tags else {}


class CLIPScore(nn.Module):
    """CLIP score of images against captions with a local open_clip checkpoint.

    Args:
        model_name: open_clip architecture (``open_clip.list_models()``), e.g. ``"ViT-B-32"``.
        weights: local checkpoint file of that architecture.
        pretrained_tag: the open_clip tag the weights come from (e.g. ``"laion2b_s34b_b79k"``),
            read for its preprocessing only; needed only where the architecture's published
            weights disagree on preprocessing (an error says so).
        batch_size: images per forward pass of the image tower.

    Raises, before any scoring: ``FileNotFoundError`` for a missing weights file,
    ``ValueError`` for an unknown architecture or weights that do not load into it.
    """

    def __init__(self, model_name: str, weights: str | Path, pretrained_tag: str | None = None,
                 batch_size: int = 32) -> None:
        super().__init__()
        path = Path(weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"CLIP weights file {path} not found (evaluation.clip_weights); point it at a local "
                f"checkpoint of the open_clip {model_name} architecture, or unset it to skip the CLIP score")
        open_clip = _import_open_clip()
        if ":" in model_name or model_name.replace("/", "-") not in open_clip.list_models():
            raise ValueError(
                f"evaluation.clip_model {model_name!r} is not an open_clip architecture name; choose one of "
                "open_clip.list_models() (e.g. 'ViT-B-32') or register a config with open_clip.add_model_config "
                "(hub and local-dir: names are not accepted: weights come from evaluation.clip_weights)")
        model_name = model_name.replace("/", "-")
        tag_cfg = _tag_preprocess(open_clip, model_name, pretrained_tag)
        tag_quick = bool(tag_cfg.get("quick_gelu", False))
        if pretrained_tag is not None and tag_quick != _uses_quick_gelu(open_clip, model_name):
            other = f"{model_name}-quickgelu" if tag_quick else model_name.removesuffix("-quickgelu")
            raise ValueError(f"open_clip's {pretrained_tag!r} weights were trained with quick_gelu={tag_quick} but "
                             f"{model_name} uses quick_gelu={not tag_quick}; set evaluation.clip_model to the "
                             f"matching architecture ({other})")
        try:
            with _open_clip_logging():
                model = open_clip.create_model(model_name, pretrained=None, device="cpu")
        except Exception as err:  # e.g. a Hugging Face text tower whose config is not cached offline
            raise RuntimeError(f"could not build the open_clip architecture {model_name} offline "
                               f"({type(err).__name__}: {err})") from err
        try:
            with _open_clip_logging():
                open_clip.load_checkpoint(model, str(path), strict=True)
        except Exception as err:
            raise ValueError(f"CLIP weights file {path} does not load into the open_clip {model_name} architecture "
                             f"({type(err).__name__}: {str(err)[:500]}); evaluation.clip_weights must hold that "
                             "architecture's weights (a state dict, open_clip .bin/.pt/.safetensors)") from err
        try:
            with _open_clip_logging():
                self.tokenizer = open_clip.get_tokenizer(model_name)
        except Exception as err:
            raise RuntimeError(f"could not load the tokenizer of open_clip {model_name} offline "
                               f"({type(err).__name__}: {err})") from err
        self.model = model.eval().requires_grad_(False)
        cfg = dict(open_clip.get_model_preprocess_cfg(model))
        cfg.update({k: tag_cfg[k] for k in _PREPROCESS_KEYS if tag_cfg.get(k) is not None})
        size = cfg["size"]
        self.image_size = (size, size) if isinstance(size, int) else tuple(size)
        self.resize_mode = cfg.get("resize_mode", "shortest")
        self.interpolation = "bilinear" if cfg.get("interpolation") == "bilinear" else "bicubic"
        self.fill = float(cfg.get("fill_color", 0)) / 255
        if self.resize_mode not in ("shortest", "longest", "squash"):
            raise ValueError(f"unknown open_clip resize_mode {self.resize_mode!r} for {model_name}")
        self.register_buffer("mean", torch.tensor(cfg["mean"], dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg["std"], dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.model_name, self.weights, self.batch_size = model_name, str(path), batch_size
        self._text_cache: dict[tuple[str, str], Tensor] = {}

    # ---- preprocessing ------------------------------------------------------------------------

    def _resize(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        if tuple(x.shape[-2:]) == tuple(size):
            return x
        return F.interpolate(x, size=size, mode=self.interpolation, align_corners=False, antialias=True).clamp(0, 1)

    def preprocess(self, images: Tensor) -> Tensor:
        """``[N, H, W, 3]`` in [0, 1] -> ``[N, 3, h, w]`` normalised model input."""
        x = images.clamp(0, 1).permute(0, 3, 1, 2).float()
        h, w = x.shape[-2:]
        th, tw = self.image_size
        if self.resize_mode == "squash":
            x = self._resize(x, (th, tw))
        else:
            if self.resize_mode == "shortest" and th == tw:  # torchvision Resize(int): shorter side to size
                short, long = (h, w) if h <= w else (w, h)
                new_long = int(th * long / short)
                x = self._resize(x, (th, new_long) if h <= w else (new_long, th))
            else:  # open_clip's ResizeKeepRatio
                ratio = (max if self.resize_mode == "longest" else min)(h / th, w / tw)
                x = self._resize(x, (round(h / ratio), round(w / ratio)))
            x = self._center_crop_or_pad(x, th, tw)
        return (x - self.mean) / self.std

    def _center_crop_or_pad(self, x: Tensor, th: int, tw: int) -> Tensor:
        h, w = x.shape[-2:]
        if th > h or tw > w:
            pad = [(tw - w) // 2 if tw > w else 0, (tw - w + 1) // 2 if tw > w else 0,
                   (th - h) // 2 if th > h else 0, (th - h + 1) // 2 if th > h else 0]
            x = F.pad(x, pad, value=self.fill)
            h, w = x.shape[-2:]
        top, left = int(round((h - th) / 2.0)), int(round((w - tw) / 2.0))
        return x[..., top:top + th, left:left + tw]

    # ---- embeddings and scores ----------------------------------------------------------------

    @torch.no_grad()
    def encode_images(self, images: Tensor) -> Tensor:  # [N, H, W, 3] -> [N, D]
        out = [self.model.encode_image(self.preprocess(images[i:i + self.batch_size]))
               for i in range(0, images.shape[0], self.batch_size)]
        return torch.cat(out).float()

    @torch.no_grad()
    def encode_texts(self, captions: Sequence[str]) -> Tensor:  # -> [len(captions), D]
        device = self.mean.device
        missing = [c for c in dict.fromkeys(captions) if (c, str(device)) not in self._text_cache]
        if missing:
            emb = self.model.encode_text(self.tokenizer(missing).to(device)).float()
            self._text_cache.update({(c, str(device)): e for c, e in zip(missing, emb)})
        return torch.stack([self._text_cache[(c, str(device))] for c in captions])

    @torch.no_grad()
    def forward(self, images: Tensor, captions: str | Sequence[str]) -> Tensor:
        """CLIP score of each image: ``images`` ``[..., H, W, 3]`` in [0, 1]; ``captions`` one
        string for all of them or one per image (``len == prod(...)``). Returns ``[...]``."""
        lead = images.shape[:-3]
        flat = images.reshape(-1, *images.shape[-3:])
        if isinstance(captions, str):
            captions = [captions]
        elif len(captions) != flat.shape[0]:
            raise ValueError(f"{len(captions)} captions for {flat.shape[0]} images: give one caption or one per image")
        text = self.encode_texts(list(captions))
        return clip_score(self.encode_images(flat), text).reshape(lead)


@contextmanager
def _open_clip_logging():
    """open_clip logs through the root logger (``logging.info(...)``, which installs a stderr handler
    on a bare root logger): keep the root logger as it was, and drop the "initialized randomly"
    warning of ``pretrained=None`` (the weights load next)."""
    root = logging.getLogger()
    quiet = logging.Filter()
    quiet.filter = lambda record: "initialized randomly" not in record.getMessage()  # type: ignore[method-assign]
    null = logging.NullHandler() if not root.handlers else None  # keeps logging.warning from basicConfig()
    root.addFilter(quiet)
    if null is not None:
        root.addHandler(null)
    try:
        yield
    finally:
        root.removeFilter(quiet)
        if null is not None:
            root.removeHandler(null)


def _uses_quick_gelu(open_clip, model_name: str) -> bool:
    return bool((open_clip.get_model_config(model_name) or {}).get("quick_gelu", False))
