"""Checks on a clip cache's files beyond their checksums (lyra.data.shards): hostile or damaged caches.

- Confinement: a local cache's manifest, records and shards are opened only inside the cache folder
  (``resolve_inside``): a shard or record that is a symlink leading elsewhere is refused, so a cache
  can neither make lyra read nor report "ok" for a file outside it.
- Sizes: a manifest's ``requested`` ranges must be [start, stop) pairs of non-negative ints, and their
  total is checked against the ``clips`` limit before any range is expanded; a safetensors header's
  length is checked against the file's size before it is read.
- Layout: a shard whose sha256 matches its record can still be unreadable (a record rewritten along
  with a damaged shard): ``shard_layout_problem`` parses the header the way training reads it (known
  dtypes, shapes that match their byte ranges, inside the file, one clip entry per record index, the
  record's fields) so ``lyra cache verify`` never says "ok" for a shard training cannot open.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

import numpy as np

from lyra.utils.errors import LyraUsageError
from lyra.utils.limits import check_limit

# safetensors dtype names -> numpy (little-endian, as the format stores them)
NUMPY_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
                "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?"}
_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2,
             "U8": 1, "BOOL": 1}
MAX_HEADER_BYTES = 100 << 20  # safetensors' own limit on its JSON header


def check_requested(requested: Any, where: Any) -> list[list[int]]:
    """A manifest's ``requested`` ranges: ``[[start, stop], ...]`` ints with 0 <= start < stop, their total
    within the ``clips`` limit (checked before anything expands them)."""
    def is_int(x: Any) -> bool:
        return isinstance(x, int) and not isinstance(x, bool)

    total = 0
    for r in requested:
        if not (isinstance(r, list) and len(r) == 2 and all(map(is_int, r)) and 0 <= r[0] < r[1]):
            raise LyraUsageError(f"{where}: requested holds {r!r}, not a [start, stop) pair of clip indices with "
                                 "0 <= start < stop; delete the manifest and rerun the same `lightning predict` "
                                 "command (it is rebuilt from the shard records)")
        total += r[1] - r[0]
    check_limit("clips", total, f"{where} (clips requested)")
    return requested


def read_header(path: Path, size: int, read) -> tuple[dict[str, Any], int]:
    """(header, offset of the data) of a safetensors file of ``size`` bytes; ``read(start, end)`` gives bytes.

    The header's claimed length is checked against the file before it is read."""
    if size < 8:
        raise ValueError(f"shard {path} is {size} bytes, too short for a safetensors header")
    (n,) = struct.unpack("<Q", read(0, 8))
    if n > size - 8 or n > MAX_HEADER_BYTES:
        raise ValueError(f"shard {path} claims a {n:,}-byte header, but the file has {size - 8:,} bytes after its "
                         "length field: it is damaged or not a safetensors file")
    try:
        header = json.loads(read(8, 8 + n))
    except (ValueError, RecursionError) as err:
        raise ValueError(f"shard {path} has no readable safetensors header ({type(err).__name__})") from None
    if not isinstance(header, dict):
        raise ValueError(f"shard {path}: its safetensors header is a JSON {type(header).__name__}, not an object")
    return header, 8 + n


def _tensor_problem(name: str, entry: Any, data_bytes: int) -> str | None:
    if not isinstance(entry, dict):
        return f"tensor {name!r} has no description"
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in _ITEMSIZE:
        return f"tensor {name!r} has dtype {dtype!r}, which lyra's caches never hold"
    if not (isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
        return f"tensor {name!r} has an invalid shape {shape!r}"
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)
            and 0 <= offsets[0] <= offsets[1] <= data_bytes):
        return f"tensor {name!r} has byte range {offsets!r} outside the file's {data_bytes} data bytes"
    if math.prod(shape) * _ITEMSIZE[dtype] != offsets[1] - offsets[0]:
        return (f"tensor {name!r} claims shape {shape} of {dtype} ({math.prod(shape) * _ITEMSIZE[dtype]} bytes) "
                f"in a {offsets[1] - offsets[0]}-byte range")
    return None


def shard_layout_problem(path: Path, rec: dict[str, Any]) -> str | None:
    """None when the shard at ``path`` can be read as its record describes, else what is wrong."""
    size = path.stat().st_size
    with path.open("rb") as f:
        def read(start: int, end: int) -> bytes:
            f.seek(start)
            return f.read(end - start)
        try:
            header, base = read_header(path, size, read)
        except ValueError as err:
            return f"unreadable ({err})"
    data_bytes = size - base
    for name, entry in header.items():
        if name != "__metadata__":
            problem = _tensor_problem(name, entry, data_bytes)
            if problem:
                return f"unreadable: {problem}"
    try:
        clips = json.loads((header.get("__metadata__") or {})["clips"])
    except (KeyError, TypeError, ValueError, RecursionError):
        return "unreadable: its header has no clip list (__metadata__.clips)"
    if not isinstance(clips, list) or [c.get("index") if isinstance(c, dict) else None for c in clips] != rec["indices"]:
        return f"its clip list does not match its record's clips {rec['indices']}"
    for slot in range(len(clips)):
        fields = {k.split("/", 1)[1]: {"shape": v["shape"], "dtype": str(_numpy_name(v["dtype"]))}
                  for k, v in header.items() if k.startswith(f"{slot}/")}
        if fields != rec["fields"]:
            diff = sorted(k for k in set(fields) | set(rec["fields"]) if fields.get(k) != rec["fields"].get(k))
            return f"clip slot {slot} does not hold the cache's fields (differs in {diff})"
    return None


def _numpy_name(dtype: str) -> str:  # numpy's own names, as records store fields ("float32", "uint8")
    return str(np.dtype(NUMPY_DTYPES[dtype]))
