"""The one reader of trained decoders: Lightning checkpoints, ``save_pretrained`` folders, run folders.

Training (``StudentModule.on_load_checkpoint``: resume and test), ``init_from`` (a new run from
trained weights) and ``lyra generate`` all read and check weights here, so a file that is not a
checkpoint, weights holding NaN / Inf, a decoder of another kind or architecture, and a checkpoint
written before the decoder was split into parts (``decoders.legacy``) are handled the same way
everywhere, with an error that names the file and the fix.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import torch

from lyra.models.decoders import GaussianDecoder
from lyra.models.decoders.base import decoder_class
from lyra.models.decoders.legacy import (
    convert_config,
    convert_state_dict,
    read_pretrained,
)
from lyra.utils.errors import LyraUsageError
from lyra.utils.paths import resolve_inside

DECODER_RECORD = "lyra_decoder"  # the entry StudentModule writes into its checkpoints: {"class", "config"}
FRESH_PARTS = ("time.", "input_pixels.")  # branches that start as no-ops, so a run may start them fresh
NOT_ARCHITECTURE = ("trained_on",)  # decoder settings that record facts, never compared


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


def refuse_non_finite(
    named: Iterable[tuple[str, Any]],  # (name, tensor) of the weights to check
    step: int,
    consequence: str,  # what happens instead, e.g. "training stopped"
    strategy: Any = None,  # a Lightning strategy with several ranks: all of them agree first
) -> None:
    """Never keep training on, or write, weights holding NaN / Inf."""
    bad = first_non_finite(named)
    ok = bad is None
    if strategy is not None:
        ok = strategy.reduce_boolean_decision(ok, all=True)
    if not ok:
        what = f"{bad[0]} contains {bad[1]}" if bad else "another rank's weights hold NaN or Inf"
        raise FloatingPointError(
            f"non-finite weights after training step {step}: {what} (the first such parameter); {consequence}, "
            "earlier checkpoints are kept. Resume from the last good one (--ckpt_path last) with a lower learning "
            "rate or stronger gradient clipping, or check the clips for extreme values")


def read_checkpoint(path: str | Path, mmap: bool = False) -> dict[str, Any]:
    """A Lightning checkpoint file, read without running any code it may carry (``weights_only``).
    ``mmap``: map the tensors' storage instead of reading it (a check of a local file before
    Lightning reads it itself)."""
    fix = "pass a checkpoint written by `lightning fit` (<run>/tb/version_0/checkpoints/*.ckpt) or a save_pretrained folder"
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:  # noqa: BLE001  (torch raises many kinds for a file that is not a checkpoint)
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        if "GLOBAL" in str(err):  # a pickle that names Python objects (torch says "unsupported GLOBAL"): never run
            raise ValueError(f"{path} is not a lyra / Lightning checkpoint: it holds pickled Python objects beyond "
                             f"tensors and plain values, which lyra never loads (they could run code); {fix}") from None
        raise ValueError(f"{path} is not a readable Lightning checkpoint ({type(err).__name__}: {first}); {fix}") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise ValueError(f"{path} has no state_dict: it is not a Lightning checkpoint; {fix}")
    return ckpt


@dataclass
class DecoderWeights:
    """What a weights source holds: tensors under today's names, and (when recorded) the decoder."""

    state: dict[str, torch.Tensor]
    class_name: str | None  # e.g. "DynamicGaussianDecoder"; None when the source does not say
    config: dict[str, Any] | None  # the decoder's settings; None when the source does not say


def decoder_weights(source: str | Path) -> DecoderWeights:
    """The decoder weights of a ``save_pretrained`` folder or a Lightning checkpoint of a ``StudentModule``."""
    path = Path(source)
    if path.is_dir():
        name, config, state = read_pretrained(path)
        return DecoderWeights(state, name, config)
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} does not exist; pass a decoder folder (save_pretrained) or a Lightning "
                                "checkpoint")
    ckpt = read_checkpoint(path)
    state = {k[len("decoder."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("decoder.")}
    if not state:
        raise ValueError(f"{str(path)!r} holds no decoder weights (no 'decoder.*' tensors)")
    record = ckpt.get(DECODER_RECORD) or {}
    config = record.get("config")
    return DecoderWeights(convert_state_dict(state), record.get("class"),
                          None if config is None else convert_config({k: v for k, v in config.items()
                                                                      if not k.startswith("_")}, str(path)))


def load_decoder_weights(decoder: GaussianDecoder, source: str | Path) -> list[str]:
    """``init_from``: load ``source`` into ``decoder`` in place; returns the names left at their
    initial values. A static decoder may start a dynamic one (its time embeddings start at zero,
    Lyra's dynamic stages), one without input-image Gaussians one with them (they start at the
    lifted image); anything else that does not fit is an error naming the tensors."""
    w = decoder_weights(source)
    state = w.state
    bad = first_non_finite(state.items())
    if bad is not None:
        raise ValueError(f"init_from: {source} holds non-finite weights ({bad[0]} contains {bad[1]}); start from an "
                         "earlier checkpoint of that run, or from a decoder saved before training diverged")
    has_time = any(k.startswith("time.") for k in state)
    if has_time and not decoder.is_dynamic:
        raise ValueError(f"init_from: {source} holds a dynamic decoder ({w.class_name}); a static decoder would drop "
                         "its time conditioning. Use DynamicGaussianDecoder")
    own = decoder.state_dict()
    without = ("build it with input_depth: true, or start from a decoder trained without it "
               "(benchmarks/configs/static_without_input_depth.yaml, dynamic_without_input_video.yaml)")
    unexpected = sorted(set(state) - set(own))
    if unexpected and all(k.startswith("depth_reader.") for k in unexpected):
        raise ValueError(f"init_from: {source} holds a decoder that reads the input image's depth (input_depth: true) "
                         f"and this one does not; {without}")
    if unexpected and all(k.startswith(("depth_reader.", "input_pixels.")) for k in unexpected):
        raise ValueError(f"init_from: {source} holds a decoder with input-image Gaussians (input_image_gaussians: true) "
                         "and this one has none; build it with input_image_gaussians: true (and input_depth: true)")
    bad_shapes = {k: (tuple(v.shape), tuple(own[k].shape)) for k, v in state.items()
                  if k in own and tuple(v.shape) != tuple(own[k].shape)}
    if bad_shapes or unexpected:
        raise ValueError(f"init_from: {source} does not fit this decoder's architecture (body, density, "
                         f"latent_channels, patch_size must match): shape mismatches (saved, here) {bad_shapes}, "
                         f"unknown tensors {unexpected[:8]}")
    missing = sorted(set(own) - set(state))
    if any(k.startswith("depth_reader.") for k in missing):
        raise ValueError(f"init_from: {source} holds a decoder that does not read the input depth (input_depth: false) "
                         "and this one does; start from a decoder trained with input_depth: true, or build this one "
                         "without it (input_depth: false, input_image_gaussians: false: "
                         "benchmarks/configs/static_without_input_depth.yaml, dynamic_without_input_video.yaml)")
    if missing and not all(k.startswith(FRESH_PARTS) for k in missing):
        raise ValueError(f"init_from: {source} lacks decoder tensors {missing[:8]}")
    decoder.load_state_dict(state, strict=False)
    return missing


# ---- a trained decoder for inference --------------------------------------------------------------


@dataclass
class DecoderInfo:
    source: str  # what the user passed
    path: str  # the folder or checkpoint actually loaded
    kind: str  # "pretrained" or "checkpoint"
    trained_on: dict[str, Any] = field(default_factory=dict)  # the decoder's record (empty: written before it had one)


def resolve_decoder(path: str | Path) -> tuple[Path, str]:
    """(file or folder to load, "pretrained" | "checkpoint") for a decoder folder, a checkpoint or a
    run folder (its newest ``final*.ckpt``, else ``last*.ckpt``, else ``*.ckpt``)."""
    p = Path(path)
    fix = ("pass a decoder folder (decoder.save_pretrained), a Lightning checkpoint (.ckpt) or a training run "
           "folder such as outputs/dynamic (train one with `lightning fit --config configs/dynamic.yaml`)")
    if not p.exists():
        raise FileNotFoundError(f"decoder {str(p)!r} does not exist; {fix}")
    if p.is_file():
        if p.suffix != ".ckpt":
            raise ValueError(f"decoder {str(p)!r} is a file but not a Lightning checkpoint (.ckpt); {fix}")
        return p, "checkpoint"
    if (p / "config.json").is_file():
        try:
            cls = json.loads((p / "config.json").read_text()).get("_class_name")
        except (ValueError, AttributeError, UnicodeDecodeError):
            cls = None
        if not isinstance(cls, str) or not cls.endswith("GaussianDecoder"):
            raise ValueError(f"{str(p)!r} holds {cls or 'no _class_name'!r}, not a lyra Gaussian decoder; {fix}")
        return p, "pretrained"
    ckpts = [c for c in p.rglob("*.ckpt") if c.is_file() and _inside(c, p)]
    if not ckpts:
        raise FileNotFoundError(f"{str(p)!r} is neither a decoder folder (no config.json) nor a run folder with "
                                f"checkpoints (no *.ckpt below it); {fix}")
    for prefix in ("final", "last", ""):
        picked = [c for c in ckpts if c.name.startswith(prefix)]
        if picked:
            return max(picked, key=lambda c: (c.stat().st_mtime, str(c))), "checkpoint"
    raise AssertionError("unreachable")


def _inside(path: Path, root: Path) -> bool:  # a checkpoint a run folder holds, not a link out of it
    try:
        resolve_inside(root, path.relative_to(root).as_posix(), "the run folder")
    except (LyraUsageError, ValueError):
        return False
    return True


def load_decoder(path: str | Path) -> tuple[GaussianDecoder, DecoderInfo]:
    """The decoder a folder, checkpoint or run holds (eval mode, CPU, float32), read once."""
    target, kind = resolve_decoder(path)
    w = decoder_weights(target)
    if w.class_name is None or w.config is None:
        raise ValueError(f"{str(target)!r} does not say which decoder it holds (no '{DECODER_RECORD}' entry, written by "
                         "StudentModule.on_save_checkpoint); pass a checkpoint of lyra's StudentModule or a "
                         "save_pretrained folder")
    cls = decoder_class(w.class_name)
    if cls is None:
        raise ValueError(f"{str(target)!r} holds an unknown decoder class {w.class_name!r}")
    decoder = cls.from_config(w.config)
    bad = first_non_finite(w.state.items())
    if bad is not None:
        raise ValueError(f"{target} holds non-finite weights ({bad[0]} contains {bad[1]}); use an earlier checkpoint")
    try:
        decoder.load_state_dict(w.state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{target}: the weights do not fit the decoder its settings describe ({err})") from None
    decoder = decoder.float().eval().requires_grad_(False)
    return decoder, DecoderInfo(str(path), str(target), kind, dict(decoder.config.get("trained_on") or {}))


# ---- a StudentModule checkpoint against the model it is loaded into ---------------------------------


def same_setting(a: Any, b: Any) -> bool:
    """Decoder settings as stored in a checkpoint vs the config (floats compared to rounding)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_setting(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_setting(x, y) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b))
        return numbers and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def check_student_checkpoint(
    checkpoint: dict[str, Any],  # as Lightning read it; legacy tensor names are converted in place
    decoder: GaussianDecoder,  # the model's decoder
    state: dict[str, Any] | None,  # its weights to check (None: the checkpoint's own state_dict)
    where: str,  # "checkpoint <path>", for messages
) -> None:
    """The checkpoint must hold the decoder the config builds, with the same settings and finite weights."""
    fix = ("use the config the checkpoint was trained with, or start a new run from its weights with "
           "--model.init_args.init_from")
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{where} is not a Lightning checkpoint of a StudentModule (it is not a dict)")
    if isinstance(checkpoint.get("state_dict"), dict):
        decoder_part = {k[len("decoder."):]: v for k, v in checkpoint["state_dict"].items() if k.startswith("decoder.")}
        converted = convert_state_dict(decoder_part)
        if converted is not decoder_part:  # written by the one-class decoder: today's tensor names
            rest = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("decoder.")}
            checkpoint["state_dict"] = {**rest, **{f"decoder.{k}": v for k, v in converted.items()}}
    state = checkpoint.get("state_dict") if state is None else state
    if not isinstance(state, dict):
        raise ValueError(f"{where} is not a Lightning checkpoint of a StudentModule (it has no state_dict)")
    record = checkpoint.get(DECODER_RECORD) or {}
    saved = record.get("class")
    if saved is None and any(k.startswith("decoder.") for k in state):  # written without lyra's record
        timed = any(k.startswith("decoder.time.") for k in state)
        if timed != decoder.is_dynamic:
            saved = "DynamicGaussianDecoder" if timed else "StaticGaussianDecoder"
    if saved is not None and saved != type(decoder).__name__:
        raise ValueError(f"{where} holds a {saved} but the model config builds a {type(decoder).__name__}; "
                         f"use the config the checkpoint was trained with (model.init_args.decoder.class_path: "
                         f"lyra.models.{saved}), or start a new run from its weights with model.init_args.init_from")
    saved_cfg = convert_config({k: v for k, v in (record.get("config") or {}).items() if not k.startswith("_")}, where)
    mismatched = {k: (v, decoder.config.get(k)) for k, v in saved_cfg.items()
                  if k not in NOT_ARCHITECTURE and not same_setting(v, decoder.config.get(k))}
    if mismatched:
        raise ValueError(f"decoder settings differ from the checkpoint (checkpoint, config): {mismatched}; {where}: {fix}")
    if saved_cfg.get("trained_on") and not decoder.config.get("trained_on"):
        decoder.register_to_config(trained_on=saved_cfg["trained_on"])  # the record travels with the weights
    bad = first_non_finite(state.items())
    if bad is not None:
        raise ValueError(f"{where} holds non-finite weights ({bad[0]} contains {bad[1]}); resume from an earlier "
                         "checkpoint of the run (its checkpoints/ folder), or start a new run")


def check_optimizer_state(
    saved: list[dict[str, Any]],  # the checkpoint's optimizer_states
    optimizers: list[torch.optim.Optimizer],  # the model's, freshly built
    names: dict[int, str],  # id(parameter) -> name, for messages
    where: str,
) -> None:
    """On resume, the saved optimizer state must be finite and fit this model's parameters (torch
    would load moments of another shape and fail, or broadcast them, at the first step)."""
    fix = ("resume from another checkpoint of the run, or start a new run from these weights with "
           "--model.init_args.init_from (a fresh optimizer)")
    misfit = f"the optimizer state in {where} does not fit this model"
    if len(saved) != len(optimizers):
        raise ValueError(f"{misfit}: it holds {len(saved)} optimizers, this model has {len(optimizers)}; {fix}")
    for opt, st in zip(optimizers, saved):
        groups, saved_groups = opt.param_groups, st.get("param_groups", [])
        if len(saved_groups) != len(groups):
            raise ValueError(f"{misfit}: this model's optimizer has {len(groups)} parameter groups, the "
                             f"checkpoint's has {len(saved_groups)}; {fix}")
        params: dict[Any, torch.Tensor] = {}
        for i, (a, b) in enumerate(zip(saved_groups, groups)):
            if len(a.get("params", [])) != len(b["params"]):
                raise ValueError(f"{misfit}: parameter group {i} holds {len(a.get('params', []))} parameters, this "
                                 f"model's {len(b['params'])}; {fix}")
            params.update(zip(a["params"], b["params"]))
        for pid, values in st.get("state", {}).items():
            p = params.get(pid)
            if p is None:
                raise ValueError(f"the optimizer state in {where} has state for parameter id {pid}, which none of its "
                                 f"parameter groups lists; {fix}")
            name = names.get(id(p), f"parameter {pid}")
            for key, v in values.items():
                if not isinstance(v, torch.Tensor):
                    continue
                bad = first_non_finite([(key, v)])
                if bad is not None:
                    raise ValueError(f"the optimizer state in {where} holds non-finite values: {key} of {name} "
                                     f"contains {bad[1]}; {fix}")
                if v.ndim and tuple(v.shape) != tuple(p.shape):
                    raise ValueError(f"the optimizer state in {where}: {key} of {name} has shape {tuple(v.shape)}, "
                                     f"which does not fit the parameter's shape {tuple(p.shape)}; {fix}")
