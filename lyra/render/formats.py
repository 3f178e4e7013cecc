"""Splat exchange formats besides the standard PLY: ``.splat``, ``.spz`` and dynamic scene folders.

Web splat viewers read more than the 3DGS PLY (``lyra.render.ply``): antimatter15's ``.splat`` (a
fixed 32-byte record per splat, no header) and Niantic's ``.spz`` (quantised and gzipped, ~10x
smaller than PLY), and OpenUSD (``.usda`` / ``.usdc`` / ``.usdz``, ``lyra.render.usd``: Omniverse and
Isaac Sim). ``save_scene`` / ``load_scene`` pick the format from the suffix, and a dynamic
(4D) scene is a folder of per-time files plus ``index.json`` (``save_dynamic_scene``). The layouts,
what each one loses and the measured round-trip errors are in docs/viewer.md.

``.splat`` record (little endian, 32 bytes; written most important first, as the web viewers'
converters do, so a viewer that streams the file shows the big opaque splats first)::

    x y z            float32 x 3    position
    sx sy sz         float32 x 3    linear scales
    r g b a          uint8 x 4      round(255 * RGB), round(255 * opacity); SH keeps only its DC term
    qw qx qy qz      uint8 x 4      round(128 * q + 128) of the unit quaternion, clipped to 0..255

``.spz`` lives in ``lyra.render.spz`` (through the ``gsply`` package) and is re-exported here.

Hostile files: every reader checks the size a file claims against its byte size and the ``points``
limit before allocating (``lyra.utils.limits``), and a dynamic scene's ``index.json`` may only name
files inside its own folder (no absolute paths, ``..`` or symlinks leading out: ``resolve_inside``).
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from lyra.render.gaussians import Gaussians
from lyra.render.ply import load_ply, save_ply
from lyra.render.scene_checks import check_readable, check_suffix, one_scene
from lyra.render.sh import sh0_to_rgb
from lyra.render.spz import _rdf_rub, load_spz, save_spz  # noqa: F401  (re-exported: lyra.render.formats names all formats)
from lyra.render.usd import USD_SUFFIXES, load_usd_scene, save_usd
from lyra.utils.atomic import atomic_path, atomic_write_text
from lyra.utils.errors import LyraUsageError
from lyra.utils.jsonfile import is_number, read_json
from lyra.utils.limits import check_limit
from lyra.utils.paths import resolve_inside

SPLAT_RECORD = np.dtype([("position", "<f4", (3,)), ("scale", "<f4", (3,)), ("rgba", "u1", (4,)), ("rot", "u1", (4,))])
assert SPLAT_RECORD.itemsize == 32
SUFFIXES = (".ply", ".splat", ".spz", *USD_SUFFIXES)
DYNAMIC_INDEX = "index.json"
DYNAMIC_FORMAT = "lyra.dynamic_scene/1"
# The file names lyra's student writes for dynamic test scenes (lyra.models.student): t003_0.429.ply.
_STUDENT_NAME = re.compile(r"t(\d+)_(\d+(?:\.\d+)?)\.ply")



def gaussians_rgb(gaussians: Gaussians) -> Tensor:  # [..., N, 3] in [0, 1]
    """Plain RGB of any container: RGB as held, SH through the DC term only (the view-independent
    colour, what formats and viewers without SH show), clamped to [0, 1]."""
    if gaussians.sh_degree is None:
        return gaussians.colors.clamp(0.0, 1.0)
    return sh0_to_rgb(gaussians.colors[..., 0, :]).clamp(0.0, 1.0)


def _quantize(values: Tensor, scale: float, offset: float) -> np.ndarray:  # [...] -> [...] uint8
    return torch.round(values.double() * scale + offset).clamp(0, 255).to(torch.uint8).numpy()


# ---- .splat ------------------------------------------------------------------------------------------


def save_splat(path: str | os.PathLike, gaussians: Gaussians) -> None:
    """Write one scene as an antimatter15 ``.splat`` file (layout in the module docstring), atomically.

    Colour and opacity are stored in 8 bits and the rotation in 8 bits per component, so this is a
    viewing format, not an archive: keep the PLY for anything that trains or evaluates. SH beyond the
    DC term is dropped with a warning.
    """
    path = Path(path)
    check_suffix(path, ".splat", "save")
    g = one_scene(gaussians, "save_splat")
    if g.num_gaussians == 0:
        raise LyraUsageError(f"save_splat: the scene for {path} has no Gaussians; a .splat of none is an empty file "
                             "no viewer (nor lyra) can read, so nothing was written")
    if g.sh_degree:
        warnings.warn(
            f"save_splat: {path} keeps only the DC colour of SH degree {g.sh_degree}; the view-dependent "
            f"terms are lost (save a .ply or .spz to keep them)",
            stacklevel=2,
        )
    importance = g.scales.double().prod(dim=-1) * g.opacities.double()
    order = torch.argsort(importance, descending=True, stable=True)
    q = g.quats.double()
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    records = np.zeros(g.num_gaussians, dtype=SPLAT_RECORD)
    records["position"] = g.means[order].numpy()
    records["scale"] = g.scales[order].numpy()
    records["rgba"][:, :3] = _quantize(gaussians_rgb(g)[order], 255.0, 0.0)
    records["rgba"][:, 3] = _quantize(g.opacities[order], 255.0, 0.0)
    records["rot"] = _quantize(q[order], 128.0, 128.0)
    with atomic_path(path) as tmp:
        records.tofile(tmp)


def load_splat(path: str | os.PathLike) -> Gaussians:
    """Read a ``.splat`` file: RGB colours, unit quaternions, in the file's (importance) order.

    A file whose size is not a whole number of 32-byte records, or that holds non-finite or negative
    values, raises: a ``.splat`` has no header, so that is the only way to tell a wrong or
    truncated file from a scene.
    """
    path = Path(path)
    check_suffix(path, ".splat", "load")
    size = check_readable(path, ".splat")
    if size % SPLAT_RECORD.itemsize:
        raise ValueError(
            f"{str(path)!r} is {size} bytes, not a multiple of the 32-byte .splat record "
            f"({size // 32} whole records and {size % 32} bytes left over): the file is truncated or not a .splat"
        )
    check_limit("points", size // SPLAT_RECORD.itemsize, str(path))
    records = np.fromfile(path, dtype=SPLAT_RECORD)
    means = torch.from_numpy(records["position"].copy())
    scales = torch.from_numpy(records["scale"].copy())
    for name, t in (("position", means), ("scale", scales)):
        bad = int((~torch.isfinite(t).all(dim=-1)).sum())
        if bad:
            raise ValueError(
                f"{str(path)!r}: {bad} of {len(records)} splats have a NaN or infinite {name}; the file is "
                f"corrupt or not a .splat (re-export it from the PLY)"
            )
    if bool((scales < 0).any()):
        raise ValueError(f"{str(path)!r}: negative scales; .splat stores linear scales, so this is not a .splat file")
    rgba = torch.from_numpy(records["rgba"].astype(np.float32)) / 255.0
    quats = (torch.from_numpy(records["rot"].astype(np.float32)) - 128.0) / 128.0
    norm = quats.norm(dim=-1, keepdim=True)
    identity = torch.tensor([1.0, 0.0, 0.0, 0.0])
    quats = torch.where(norm > 0, quats / norm.clamp_min(1e-12), identity)  # all-128 bytes: no rotation
    return Gaussians(means, quats, scales, rgba[:, 3].contiguous(), rgba[:, :3].contiguous())


# ---- by suffix -----------------------------------------------------------------------------------------


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(
            f"{str(path)!r}: unknown scene format {path.suffix or '(no suffix)'!r}; name the file "
            f"{', '.join('*' + s for s in SUFFIXES)}"
        )
    return suffix


def save_scene(path: str | os.PathLike, gaussians: Gaussians) -> None:
    """Write one scene in the format its suffix names: .ply (lossless), .splat, .spz, .usda/.usdc/.usdz."""
    path = Path(path)
    writers = {".ply": save_ply, ".splat": save_splat, ".spz": save_spz, **dict.fromkeys(USD_SUFFIXES, save_usd)}
    writers[_suffix(path)](path, gaussians)


def load_scene(path: str | os.PathLike) -> Gaussians:
    """Read a scene file in the format its suffix names (.ply, .spz and USD give SH, .splat RGB)."""
    path = Path(path)
    suffix = _suffix(path)
    if suffix in USD_SUFFIXES:
        return load_usd_scene(path)
    if suffix == ".ply":
        check_readable(path, "PLY")
        return load_ply(path)  # names damaged or hostile files itself
    return load_splat(path) if suffix == ".splat" else load_spz(path)


# ---- dynamic scene folders -------------------------------------------------------------------------------


def save_dynamic_scene(
    folder: str | os.PathLike,
    gaussians: Sequence[Gaussians],
    times: Sequence[float] | Tensor,  # [T] scene times in [0, 1], non-decreasing
    suffix: str = ".ply",
) -> None:
    """Write one file per scene time, ``t000.ply`` ..., then ``index.json`` listing them.

    The index is written last and atomically, so a folder whose export was interrupted has no index
    (or the previous one) rather than an index naming missing files.
    """
    folder = Path(folder)
    times = _check_times([float(t) for t in torch.as_tensor(times).reshape(-1).tolist()], folder)
    if len(gaussians) != len(times):
        raise ValueError(f"save_dynamic_scene: {len(gaussians)} Gaussian sets but {len(times)} times; pass one time per set")
    _suffix(Path("x" + suffix))
    files = [f"t{i:03d}{suffix}" for i in range(len(times))]
    folder.mkdir(parents=True, exist_ok=True)
    for name, g in zip(files, gaussians):
        save_scene(folder / name, g)
    atomic_write_text(folder / DYNAMIC_INDEX, json.dumps({"format": DYNAMIC_FORMAT, "times": times, "files": files}, indent=1))


def _check_times(times: list[float], where: Path) -> list[float]:
    if not times:
        raise ValueError(f"{where}: a dynamic scene needs at least one time")
    if not all(math.isfinite(t) and 0.0 <= t <= 1.0 for t in times):
        raise ValueError(f"{where}: times must lie in [0, 1] (normalised scene time), got {times}")
    if any(b < a for a, b in zip(times, times[1:])):
        raise ValueError(f"{where}: times must be non-decreasing, got {times}")
    return times


def read_dynamic_index(folder: str | os.PathLike) -> tuple[list[float], list[Path]]:
    """Times and file paths of a dynamic scene folder.

    Reads ``index.json``; a folder without one but whose files are all named as lyra's student
    exports them (``t003_0.429.ply``) is indexed from the names.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"dynamic scene folder {str(folder)!r} does not exist")
    index = folder / DYNAMIC_INDEX
    if not index.is_file():
        named = [(int(m.group(1)), float(m.group(2)), resolve_inside(folder, p.name, str(folder)))
                 for p in folder.iterdir() if (m := _STUDENT_NAME.fullmatch(p.name))]
        if not named or len(named) != sum(1 for p in folder.iterdir() if p.suffix.lower() in SUFFIXES):
            raise ValueError(
                f"{str(folder)!r} has no {DYNAMIC_INDEX}; a dynamic scene folder needs one: "
                f'{{"times": [0.0, 0.5, ...], "files": ["t000.ply", "t001.ply", ...]}} '
                f"(lyra.render.formats.save_dynamic_scene writes both)"
            )
        named.sort()
        return _check_times([t for _, t, _ in named], folder), [p for *_, p in named]
    d = read_json(resolve_inside(folder, DYNAMIC_INDEX, str(folder)),
                  "write it again with lyra.render.formats.save_dynamic_scene (docs/viewer.md)")
    if not isinstance(d, dict) or not isinstance(d.get("times"), list) or not isinstance(d.get("files"), list):
        raise ValueError(f'{index}: expected an object {{"times": [...], "files": [...]}}')
    if d.get("format", DYNAMIC_FORMAT) != DYNAMIC_FORMAT:
        raise ValueError(f"{index}: format {d['format']!r} is not {DYNAMIC_FORMAT!r}")
    if len(d["times"]) != len(d["files"]):
        raise ValueError(f"{index}: {len(d['times'])} times but {len(d['files'])} files; list one file per time")
    bad = [t for t in d["times"] if not is_number(t)]
    if bad:
        raise LyraUsageError(f"{index}: times holds {bad[0]!r}; write scene times as numbers in [0, 1]")
    times = _check_times([float(t) for t in d["times"]], index)
    files = [resolve_inside(folder, f, str(index)) for f in d["files"]]  # never a file outside the folder
    missing = [str(f.name) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"{index} lists files that do not exist: {', '.join(missing)}")
    return times, files


def load_dynamic_scene(folder: str | os.PathLike) -> tuple[list[Gaussians], list[float]]:
    """Every time step of a dynamic scene folder (see ``read_dynamic_index``) and its times."""
    times, files = read_dynamic_index(folder)
    return [load_scene(f) for f in files], times
