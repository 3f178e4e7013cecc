"""Niantic's ``.spz`` (quantised, gzipped; ~10x smaller than PLY) through the ``gsply`` package.

``pip install 'lyra[formats]'``: Niantic's own Python bindings (PyPI ``spz``) ship only as a Rust
source package whose build downloads crates, which fails offline. SPZ stores positions in a
right-up-back (RUB, OpenGL) frame; lyra's world is right-down-front (RDF, OpenCV, the 3DGS PLY
convention), so y and z are mirrored on the way in and out, with the matching quaternion and SH sign
changes. Layout, losses and measured round-trip errors: docs/viewer.md.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from lyra.render.gaussians import Gaussians
from lyra.render.scene_checks import check_readable, check_suffix, one_scene
from lyra.render.sh import rgb_to_sh0
from lyra.utils.atomic import atomic_path
from lyra.utils.errors import LyraUsageError
from lyra.utils.limits import check_limit

# Mirroring y and z (RDF <-> RUB) is a half turn about x. Each real SH basis function of
# lyra.render.sh is even or odd under it; these are the signs, in the 3DGS coefficient order.
_RDF_RUB_SH_SIGNS = torch.tensor([1, -1, -1, 1, -1, 1, 1, -1, 1, -1, 1, -1, -1, 1, -1, 1], dtype=torch.float32)
_SPZ_OPACITY_EPS = 1e-6
_SPZ_MAX_FRACTIONAL_BITS = 12  # Niantic's default: positions on a 1/4096 grid
_SPZ_POSITION_LIMIT = 2**23 - 1  # positions are signed 24-bit fixed point
_SPZ_LOG_SCALE_RANGE = (-10.0, 255 / 16 - 10.0)  # log scales are stored as uint8 (log s + 10) * 16
_GZIP_HEADER = struct.Struct("<IIIBBBB")  # magic, version, points, SH degree, fractional bits, flags, reserved
_NGSP_HEADER = struct.Struct("<IIIBBBBI")  # v4: the same fields, stream count, table-of-contents offset
_NGSP_MAGIC = 0x5053474E  # "NGSP", also the first field of the gzip container's header
_SH_DIM = {0: 0, 1: 3, 2: 8, 3: 15}  # higher SH coefficients per channel by degree
_DEFLATE_MAX_RATIO = 1100  # deflate expands about 1032:1 at most (measured: 1032.6 for zeros); a margin above


def _gsply():
    try:
        import gsply  # noqa: F401  (optional, lyra[formats]: only .spz needs it)
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
    check_suffix(path, ".spz", "save")
    GSData, create_ply_format, _, write_spz = _gsply()
    g = one_scene(gaussians, "save_spz")
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


def _check_claimed_points(path: Path, size: int) -> None:
    """Refuse a file whose header claims more points than the ``points`` limit, or (gzip) more bytes
    than deflate can expand ``size`` bytes to, before gsply decompresses and allocates them."""
    with open(path, "rb") as f:
        head = f.read(_NGSP_HEADER.size)
    if head[:2] == b"\x1f\x8b":  # legacy gzip container: the 16-byte header is the start of the stream
        try:
            with gzip.open(path, "rb") as z:
                head = z.read(_GZIP_HEADER.size)
        except (OSError, EOFError, zlib.error) as err:
            raise LyraUsageError(f"{path} is not a readable .spz file ({err}); re-export it") from None
        if len(head) < _GZIP_HEADER.size:
            raise LyraUsageError(f"{path} is not a readable .spz file (its header is cut short); re-export it")
        magic, version, n, sh_degree = _GZIP_HEADER.unpack(head)[:4]
        need = (9 + 1 + 3 + 3 + 4 + 3 * _SH_DIM.get(sh_degree, 0)) * n
        if need > _DEFLATE_MAX_RATIO * size:
            raise LyraUsageError(f"{path} claims {n:,} points ({need:,} bytes of data), more than a {size:,}-byte gzip "
                                 "file can hold: the header is damaged or hostile; re-export the file")
    elif len(head) >= _NGSP_HEADER.size and _NGSP_HEADER.unpack(head)[0] == _NGSP_MAGIC:
        n = _NGSP_HEADER.unpack(head)[2]
    else:
        return  # not a container gsply knows: it names the problem
    check_limit("points", int(n), str(path))


def load_spz(path: str | os.PathLike) -> Gaussians:
    """Read a ``.spz`` (any version gsply reads: gzip v1-v3, zstd v4) as SH colours ``[N, K, 3]``.

    The point count in the header is checked (``points`` limit; for gzip, against what the file's
    size can decompress to) before anything is decompressed."""
    path = Path(path)
    check_suffix(path, ".spz", "load")
    size = check_readable(path, ".spz")
    _check_claimed_points(path, size)
    *_, read_spz, _ = _gsply()
    try:
        data = read_spz(path)
    except (ValueError, OSError, EOFError, IndexError, zlib.error) as err:  # a damaged gzip stream: zlib.error
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
