"""Standard 3DGS PLY I/O: the layout of the reference 3DGS (INRIA) code, read by web splat viewers.

One ``vertex`` element, binary little-endian float32, properties in this order::

    x y z  nx ny nz  f_dc_0..2  f_rest_0..(3 (K - 1) - 1)  opacity  scale_0..2  rot_0..3

Encodings (the file stores pre-activation values, the container holds activated ones):
- ``opacity`` = logit(opacity), opacities clamped into [1e-6, 1 - 1e-6] first (so 0 and 1 do not
  round-trip exactly); loaded back through a sigmoid.
- ``scale_i`` = log(scale), scales clamped to the smallest normal float32 first (so 0 loads back as
  ~1.2e-38); loaded back through exp.
- ``rot_0..3`` = quaternion w, x, y, z as held (not normalised).
- ``f_dc_c`` = SH DC coefficient of channel c; plain RGB is stored as ``(rgb - 0.5) / SH_C0``.
- ``f_rest_j``: the higher SH coefficients ``[N, K - 1, 3]`` channel-major, i.e. all of R, then G,
  then B (transposed to ``[N, 3, K - 1]`` and flattened), as the reference code writes them.
- ``nx ny nz`` are zeros (the reference writes them; nothing reads them).

Round trip: means, quats and SH coefficients are bit-exact; opacities and scales go through
float32 logit/log and back, so they agree to a few float32 ulps; RGB goes through the SH_C0 affine
map and agrees to about one float32 ulp of 1.0 (measured in tests/test_ply.py).
"""

from __future__ import annotations

import math
import os
import re
import struct
import warnings
from typing import Literal

import numpy as np
import torch
from plyfile import PlyData, PlyElement, PlyParseError

from lyra.render.gaussians import Gaussians
from lyra.render.sh import rgb_to_sh0, sh0_to_rgb
from lyra.utils.atomic import atomic_path
from lyra.utils.limits import check_limit

OPACITY_EPS = 1e-6
_SCALE_FLOOR = float(np.finfo(np.float32).tiny)
_REQUIRED = (
    "x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
    "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3",
)
_F_REST = re.compile(r"f_rest_(\d+)")


# Bytes of one value of each PLY scalar type (binary formats).
_PLY_TYPE_BYTES = {"char": 1, "int8": 1, "uchar": 1, "uint8": 1, "short": 2, "int16": 2, "ushort": 2, "uint16": 2,
                   "int": 4, "int32": 4, "uint": 4, "uint32": 4, "float": 4, "float32": 4, "double": 8, "float64": 8}
_HEADER_LIMIT = 1 << 20  # bytes searched for 'end_header'


def _check_ply_header(path: str | os.PathLike) -> None:
    """Refuse files that are not PLY, or whose header is damaged or claims more data than the file
    holds, with the path in the message, before plyfile allocates arrays of the claimed size."""
    size = os.path.getsize(path)  # FileNotFoundError names the path
    with open(path, "rb") as f:
        head = f.read(min(size, _HEADER_LIMIT))
    if not (head.startswith(b"ply\n") or head.startswith(b"ply\r\n")):
        raise ValueError(f"{path} is not a readable PLY file: it does not start with 'ply' (first bytes "
                         f"{head[:8]!r}); pass a 3DGS PLY file")
    fmt, elements, offset, ended = None, [], 0, False  # elements: [name, count, [property byte sizes]]
    for number, raw in enumerate(head.split(b"\n")[:-1], start=1):
        offset += len(raw) + 1
        try:
            line = raw.decode("ascii").strip()
        except UnicodeDecodeError:
            raise ValueError(f"{path} is not a readable PLY file: header line {number} holds non-ASCII bytes "
                             f"({raw[:40]!r}); a PLY header is ASCII text, is this a PLY file?") from None
        words = line.split()
        if line == "end_header":
            ended = True
            break
        if not words:
            continue
        if words[0] == "format" and len(words) >= 2:
            fmt = words[1]
        elif words[0] == "element" and len(words) == 3:
            try:
                count = int(words[2])
            except ValueError:
                raise ValueError(f"{path} is not a readable PLY file: header line {number} gives element "
                                 f"{words[1]} the count {words[2]!r}, not an integer") from None
            if count < 0:
                raise ValueError(f"{path}: the PLY header is damaged: element {words[1]} has a negative count "
                                 f"({count}); re-export the file from the tool that made it")
            elements.append([words[1], count, []])
        elif words[0] == "property" and elements:
            if len(words) >= 2 and words[1] == "list":  # an empty list still stores its count
                elements[-1][2].append(_PLY_TYPE_BYTES.get(words[2], 1) if len(words) > 2 else 1)
            else:
                elements[-1][2].append(_PLY_TYPE_BYTES.get(words[1], 1) if len(words) > 1 else 1)
    if not ended:
        where = "in the file" if size <= _HEADER_LIMIT else f"in its first {_HEADER_LIMIT} bytes"
        raise ValueError(f"{path} is not a readable PLY file: no 'end_header' line {where}; the file is cut "
                         "short or is not a PLY file")
    available, need = size - offset, 0
    for name, count, props in elements:
        # ASCII: at least one character and one separator per value (the last newline may be missing).
        need += count * (sum(props) if fmt != "ascii" else 2 * len(props))
        if need - (fmt == "ascii") > available:
            raise ValueError(f"{path}: the header claims {count} {name} elements, which need at least {need} "
                             f"bytes, but only {available} bytes follow the header; the file is truncated (copy "
                             "it again) or its header count is wrong")
    for name, count, _ in elements:  # the file holds them: still refuse more than the limit allows
        if name == "vertex":
            check_limit("points", count, f"{path} (its vertex count)")


def ply_property_names(num_sh_coeffs: int) -> list[str]:
    """Vertex property names, in file order, for K = ``num_sh_coeffs`` SH coefficients (1 for RGB)."""
    rest = [f"f_rest_{j}" for j in range(3 * (num_sh_coeffs - 1))]
    return ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", *rest,
            "opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]


def save_ply(path: str | os.PathLike, gaussians: Gaussians) -> None:
    """Write one (unbatched) set of Gaussians as a standard 3DGS PLY, atomically.

    Gaussians with any non-finite value are dropped with a warning; negative scales or opacities
    outside [0, 1] (possible only in a container built with ``check_values=False``) raise.
    """
    if not isinstance(gaussians, Gaussians):
        raise TypeError(f"save_ply takes a lyra.render.Gaussians, got {type(gaussians).__name__}")
    if gaussians.batch_shape:
        raise ValueError(
            f"save_ply writes one scene but got batch_shape {tuple(gaussians.batch_shape)}; "
            f"save each element with save_ply(path_i, g[i])"
        )
    g = gaussians.detach().to("cpu", torch.float32)
    finite = g.finite_mask()
    dropped = int((~finite).sum())
    if dropped:
        warnings.warn(
            f"save_ply: dropping {dropped} of {g.num_gaussians} Gaussians with non-finite values",
            stacklevel=2,
        )
        g = g.select(finite)
    g.validate(values=True)

    n = g.num_gaussians
    if g.sh_degree is None:
        dc = rgb_to_sh0(g.colors.double()).float()
        rest = torch.zeros(n, 0)
    else:
        dc = g.colors[:, 0, :]
        rest = g.colors[:, 1:, :].transpose(1, 2).flatten(start_dim=1)
    opacity = torch.logit(g.opacities.double().clamp(OPACITY_EPS, 1.0 - OPACITY_EPS)).float()
    log_scales = torch.log(g.scales.double().clamp_min(_SCALE_FLOOR)).float()
    columns = torch.cat(
        [g.means, torch.zeros(n, 3), dc, rest, opacity[:, None], log_scales, g.quats], dim=1
    ).numpy()  # [N, P] float32, in ply_property_names order

    names = ply_property_names(rest.shape[1] // 3 + 1)
    # Each float32 row already is one vertex record: view it as the structured dtype, no copy.
    records = np.ascontiguousarray(columns, dtype="<f4").view([(name, "<f4") for name in names])[:, 0]
    ply = PlyData([PlyElement.describe(records, "vertex")], text=False, byte_order="<")
    with atomic_path(path) as tmp:
        ply.write(str(tmp))


def load_ply(path: str | os.PathLike, *, colors: Literal["sh", "rgb"] = "sh") -> Gaussians:
    """Read a 3DGS PLY (ours or another tool's: any property order, extra properties, no normals).

    ``colors="sh"`` returns SH coefficients ``[N, K, 3]`` (degree 0 gives K = 1); ``colors="rgb"``
    returns ``clamp(f_dc * SH_C0 + 0.5, 0, 1)`` as ``[N, 3]`` and needs a degree-0 file.
    Gaussians with non-finite values are dropped with a warning.
    """
    if colors not in ("sh", "rgb"):
        raise ValueError(f"load_ply: colors must be 'sh' or 'rgb', got {colors!r}")
    _check_ply_header(path)  # before plyfile allocates what the header claims
    try:
        ply = PlyData.read(str(path))
    except (PlyParseError, UnicodeDecodeError, ValueError, struct.error) as err:
        raise ValueError(f"{path} is not a readable PLY file ({type(err).__name__}: {err}); pass a 3DGS PLY "
                         "(binary or ASCII, a 'vertex' element with x y z f_dc_0..2 opacity scale_0..2 "
                         "rot_0..3)") from err
    if "vertex" not in ply:
        raise ValueError(f"{path}: no 'vertex' element; is this a 3DGS PLY?")
    vertex = ply["vertex"]
    names = {p.name for p in vertex.properties}
    missing = [name for name in _REQUIRED if name not in names]
    if missing:
        raise ValueError(
            f"{path}: vertex lacks required 3DGS propert{'y' if len(missing) == 1 else 'ies'} "
            f"{', '.join(missing)}; a 3DGS PLY needs x y z f_dc_0..2 opacity scale_0..2 rot_0..3"
        )
    rest_ids = sorted(int(m.group(1)) for name in names if (m := _F_REST.fullmatch(name)))
    if rest_ids != list(range(len(rest_ids))):
        gap = next(j for j in range(len(rest_ids) + 1) if j not in rest_ids)
        raise ValueError(f"{path}: f_rest_* properties skip f_rest_{gap}; they must be numbered 0..M-1")
    k = len(rest_ids) // 3 + 1
    if len(rest_ids) % 3 or math.isqrt(k) ** 2 != k:
        raise ValueError(
            f"{path}: {len(rest_ids)} f_rest_* properties is not 3 (K - 1) for a square K = (d + 1)^2 "
            f"(0, 9, 24 or 45 for SH degree 0..3)"
        )

    def read(*props: str) -> torch.Tensor:  # [N, len(props)] float64 (exact for float32 files)
        return torch.from_numpy(np.stack([np.asarray(vertex[p], dtype=np.float64) for p in props], axis=1))

    n = vertex.count
    dc = read("f_dc_0", "f_dc_1", "f_dc_2")
    if colors == "rgb":
        if k != 1:
            raise ValueError(
                f"{path}: load_ply(colors='rgb') needs an SH degree 0 file, this one has degree "
                f"{math.isqrt(k) - 1}; load with colors='sh' to keep the view-dependent colour"
            )
        color_tensor = sh0_to_rgb(dc).clamp(0.0, 1.0).float()
    else:
        rest = (read(*(f"f_rest_{j}" for j in rest_ids)).reshape(n, 3, k - 1).transpose(1, 2)
                if rest_ids else torch.zeros(n, 0, 3, dtype=torch.float64))
        color_tensor = torch.cat([dc[:, None, :], rest], dim=1).float()
    g = Gaussians(
        means=read("x", "y", "z").float(),
        quats=read("rot_0", "rot_1", "rot_2", "rot_3").float(),
        scales=torch.exp(read("scale_0", "scale_1", "scale_2")).float(),
        opacities=torch.sigmoid(read("opacity")[:, 0]).float(),
        colors=color_tensor,
        check_values=False,
    )
    finite = g.finite_mask()
    dropped = int((~finite).sum())
    if dropped:
        warnings.warn(f"load_ply: dropping {dropped} of {n} Gaussians with non-finite values in {path}", stacklevel=2)
        g = g.select(finite)
    return g
