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

``.spz`` goes through the ``gsply`` package (``pip install 'lyra[formats]'``): Niantic's own
Python bindings (PyPI ``spz``) ship only as a Rust source package whose build downloads crates,
which fails offline. SPZ stores positions in a right-up-back (RUB, OpenGL) frame; lyra's world
is right-down-front (RDF, OpenCV, the 3DGS PLY convention), so y and z are mirrored on the way in
and out, with the matching quaternion and SH sign changes.
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
from lyra.render.sh import rgb_to_sh0, sh0_to_rgb
from lyra.render.usd import USD_SUFFIXES, load_usd_scene, save_usd
from lyra.utils.atomic import atomic_path, atomic_write_text

SPLAT_RECORD = np.dtype([("position", "<f4", (3,)), ("scale", "<f4", (3,)), ("rgba", "u1", (4,)), ("rot", "u1", (4,))])
assert SPLAT_RECORD.itemsize == 32
SUFFIXES = (".ply", ".splat", ".spz", *USD_SUFFIXES)
DYNAMIC_INDEX = "index.json"
DYNAMIC_FORMAT = "lyra.dynamic_scene/1"
# The file names lyra's student writes for dynamic test scenes (lyra.models.student): t003_0.429.ply.
_STUDENT_NAME = re.compile(r"t(\d+)_(\d+(?:\.\d+)?)\.ply")

# Mirroring y and z (RDF <-> RUB) is a half turn about x. Each real SH basis function of
# lyra.render.sh is even or odd under it; these are the signs, in the 3DGS coefficient order.
_RDF_RUB_SH_SIGNS = torch.tensor([1, -1, -1, 1, -1, 1, 1, -1, 1, -1, 1, -1, -1, 1, -1, 1], dtype=torch.float32)
_SPZ_OPACITY_EPS = 1e-6
_SPZ_MAX_FRACTIONAL_BITS = 12  # Niantic's default: positions on a 1/4096 grid
_SPZ_POSITION_LIMIT = 2**23 - 1  # positions are signed 24-bit fixed point
_SPZ_LOG_SCALE_RANGE = (-10.0, 255 / 16 - 10.0)  # log scales are stored as uint8 (log s + 10) * 16


# ---- shared helpers --------------------------------------------------------------------------------


def _check_suffix(path: Path, suffix: str, verb: str) -> None:
    if path.suffix.lower() != suffix:
        raise ValueError(
            f"{str(path)!r} does not end in {suffix}; {verb}_{suffix[1:]} only handles {suffix} files, "
            f"use lyra.render.formats.{verb}_scene to pick the format from the suffix"
        )


def _check_readable(path: Path, kind: str) -> int:
    if not path.is_file():
        raise FileNotFoundError(f"{kind} file {str(path)!r} does not exist")
    size = path.stat().st_size
    if size == 0:
        raise ValueError(f"{str(path)!r} is empty (0 bytes); it is not a {kind} file, re-export the scene")
    return size


def _one_scene(gaussians: Gaussians, fn: str) -> Gaussians:
    """An unbatched float32 CPU copy with non-finite Gaussians dropped (as save_ply does)."""
    if not isinstance(gaussians, Gaussians):
        raise TypeError(f"{fn} takes a lyra.render.Gaussians, got {type(gaussians).__name__}")
    if gaussians.batch_shape:
        raise ValueError(
            f"{fn} writes one scene but got batch_shape {tuple(gaussians.batch_shape)}; save each element g[i]"
        )
    g = gaussians.detach().to("cpu", torch.float32)
    finite = g.finite_mask()
    dropped = int((~finite).sum())
    if dropped:
        warnings.warn(f"{fn}: dropping {dropped} of {g.num_gaussians} Gaussians with non-finite values", stacklevel=3)
        g = g.select(finite)
    g.validate(values=True)
    return g


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
    _check_suffix(path, ".splat", "save")
    g = _one_scene(gaussians, "save_splat")
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
    _check_suffix(path, ".splat", "load")
    size = _check_readable(path, ".splat")
    if size % SPLAT_RECORD.itemsize:
        raise ValueError(
            f"{str(path)!r} is {size} bytes, not a multiple of the 32-byte .splat record "
            f"({size // 32} whole records and {size % 32} bytes left over): the file is truncated or not a .splat"
        )
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


# ---- .spz (through gsply) ------------------------------------------------------------------------------


def _gsply():
    try:
        import gsply  # noqa: F401
        from gsply.gsdata import create_ply_format
        from gsply.spz import read_spz, write_spz
    except ImportError as err:
        raise ImportError(
            f".spz needs the gsply package ({err}); install it with pip install 'lyra[formats]' "
            f"(or save a .ply / .splat instead)"
        ) from None
    return gsply.GSData, create_ply_format, read_spz, write_spz


def _rdf_rub(
    means: Tensor,  # [N, 3]
    quats: Tensor,  # [N, 4] wxyz
    sh: Tensor,  # [N, K, 3]
) -> tuple[Tensor, Tensor, Tensor]:
    """Mirror y and z (its own inverse: RDF -> RUB and RUB -> RDF)."""
    flip = torch.tensor([1.0, -1.0, -1.0])
    qflip = torch.tensor([1.0, 1.0, -1.0, -1.0])
    return means * flip, quats * qflip, sh * _RDF_RUB_SH_SIGNS[: sh.shape[1], None]


def save_spz(path: str | os.PathLike, gaussians: Gaussians) -> None:
    """Write one scene as a Niantic ``.spz`` (gzip container, version 3), atomically.

    Positions use 24-bit fixed point with 12 fractional bits (Niantic's default, 1/4096 units) unless
    the scene is too large for that, then fewer. Opacity, colour, log-scale and SH are 8-bit, the
    rotation 'smallest three' at 9 bits; tolerances in docs/viewer.md. RGB colours are stored as
    the DC term; SH degrees 0-3 are kept.
    """
    path = Path(path)
    _check_suffix(path, ".spz", "save")
    GSData, create_ply_format, _, write_spz = _gsply()
    g = _one_scene(gaussians, "save_spz")
    sh = rgb_to_sh0(g.colors)[:, None, :] if g.sh_degree is None else g.colors
    q = g.quats / g.quats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    means, quats, sh = _rdf_rub(g.means, q, sh)
    extent = float(means.abs().max()) if g.num_gaussians else 0.0
    bits = _SPZ_MAX_FRACTIONAL_BITS
    while bits > 0 and extent * 2**bits > _SPZ_POSITION_LIMIT:
        bits -= 1
    if bits == 0:
        raise ValueError(
            f"save_spz: a position reaches {extent:.4g} units, beyond what .spz's 24-bit positions hold with "
            f"any precision (< {_SPZ_POSITION_LIMIT / 2:.4g}); recentre or rescale the scene, or save a .ply"
        )
    log_scales = torch.log(g.scales.double().clamp_min(1e-30))
    clamped = int(((log_scales < _SPZ_LOG_SCALE_RANGE[0]) | (log_scales > _SPZ_LOG_SCALE_RANGE[1])).any(-1).sum())
    if clamped:
        warnings.warn(
            f"save_spz: {clamped} of {g.num_gaussians} Gaussians have a scale outside the .spz range "
            f"[{math.exp(_SPZ_LOG_SCALE_RANGE[0]):.3g}, {math.exp(_SPZ_LOG_SCALE_RANGE[1]):.3g}]; it is clamped",
            stacklevel=2,
        )
    loud = int((sh[:, 1:].abs() > 1).sum())
    if loud:
        warnings.warn(
            f"save_spz: {loud} higher-order SH coefficients outside [-1, 1] are clamped (.spz stores them in 8 bits)",
            stacklevel=2,
        )
    opacity = torch.logit(g.opacities.double().clamp(_SPZ_OPACITY_EPS, 1 - _SPZ_OPACITY_EPS))
    data = GSData(
        means=means.numpy(),
        scales=log_scales.float().numpy(),
        quats=quats.numpy(),
        opacities=opacity.float().numpy(),
        sh0=sh[:, 0].contiguous().numpy(),
        shN=sh[:, 1:].contiguous().numpy(),
        _format=create_ply_format(g.sh_degree or 0),
    )
    with atomic_path(path) as tmp:
        write_spz(tmp, data, version=3, fractional_bits=bits)


def load_spz(path: str | os.PathLike) -> Gaussians:
    """Read a ``.spz`` (any version gsply reads: gzip v1-v3, zstd v4) as SH colours ``[N, K, 3]``."""
    path = Path(path)
    _check_suffix(path, ".spz", "load")
    _check_readable(path, ".spz")
    *_, read_spz, _ = _gsply()
    try:
        data = read_spz(path)
    except (ValueError, OSError, EOFError, IndexError) as err:
        raise ValueError(f"{str(path)!r} is not a readable .spz file ({err}); re-export it") from None
    n = int(data.means.shape[0])
    sh0 = torch.from_numpy(np.asarray(data.sh0, dtype=np.float32).reshape(n, 1, 3))
    rest = data.shN
    rest = torch.zeros(n, 0, 3) if rest is None or np.asarray(rest).size == 0 else \
        torch.from_numpy(np.asarray(rest, dtype=np.float32).reshape(n, -1, 3))
    means, quats, sh = _rdf_rub(
        torch.from_numpy(np.asarray(data.means, dtype=np.float32)),
        torch.from_numpy(np.asarray(data.quats, dtype=np.float32)),
        torch.cat([sh0, rest], dim=1),
    )
    g = Gaussians(
        means=means,
        quats=quats,
        scales=torch.exp(torch.from_numpy(np.asarray(data.scales, dtype=np.float32))),
        opacities=torch.sigmoid(torch.from_numpy(np.asarray(data.opacities, dtype=np.float32).reshape(n))),
        colors=sh,
        check_values=False,
    )
    bad = int((~g.finite_mask()).sum())
    if bad:
        raise ValueError(f"{str(path)!r}: {bad} of {n} splats decode to non-finite values; the file is corrupt")
    g.validate(values=True)
    return g


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
        from plyfile import PlyParseError

        _check_readable(path, "PLY")
        try:
            return load_ply(path)
        except PlyParseError as err:
            raise ValueError(f"{str(path)!r} is not a readable PLY file ({err}); pass a 3DGS PLY") from None
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
        named = [(int(m.group(1)), float(m.group(2)), p) for p in folder.iterdir() if (m := _STUDENT_NAME.fullmatch(p.name))]
        if not named or len(named) != sum(1 for p in folder.iterdir() if p.suffix.lower() in SUFFIXES):
            raise ValueError(
                f"{str(folder)!r} has no {DYNAMIC_INDEX}; a dynamic scene folder needs one: "
                f'{{"times": [0.0, 0.5, ...], "files": ["t000.ply", "t001.ply", ...]}} '
                f"(lyra.render.formats.save_dynamic_scene writes both)"
            )
        named.sort()
        return _check_times([t for _, t, _ in named], folder), [p for *_, p in named]
    try:
        d = json.loads(index.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{index}: not valid JSON ({err})") from None
    if not isinstance(d, dict) or not isinstance(d.get("times"), list) or not isinstance(d.get("files"), list):
        raise ValueError(f'{index}: expected an object {{"times": [...], "files": [...]}}')
    if d.get("format", DYNAMIC_FORMAT) != DYNAMIC_FORMAT:
        raise ValueError(f"{index}: format {d['format']!r} is not {DYNAMIC_FORMAT!r}")
    if len(d["times"]) != len(d["files"]):
        raise ValueError(f"{index}: {len(d['times'])} times but {len(d['files'])} files; list one file per time")
    times = _check_times([float(t) for t in d["times"]], index)
    files = [folder / f for f in d["files"]]
    missing = [str(f.name) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"{index} lists files that do not exist: {', '.join(missing)}")
    return times, files


def load_dynamic_scene(folder: str | os.PathLike) -> tuple[list[Gaussians], list[float]]:
    """Every time step of a dynamic scene folder (see ``read_dynamic_index``) and its times."""
    times, files = read_dynamic_index(folder)
    return [load_scene(f) for f in files], times
