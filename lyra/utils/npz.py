"""Reading a user's ``.npz`` (numpy.savez) with every array's claimed size checked before it is read.

An ``.npz`` is a zip of ``.npy`` files; each ``.npy`` header states a shape and dtype, and each zip
entry states its uncompressed size. A 370-byte file can claim a 1 TiB array, and a few megabytes of
deflated zeros can expand to gigabytes. So, before any array is decompressed: the zip entry's size
must be one deflate can produce from its compressed bytes, the array the header states must fit in
that entry, no array may hold Python objects (pickles), and the total must be within the
``decoded_bytes`` limit.
"""

from __future__ import annotations

import math
import os
import zipfile
from pathlib import Path
from typing import Collection

import numpy as np

from lyra.utils.errors import LyraUsageError
from lyra.utils.limits import check_limit

_DEFLATE_MAX_RATIO = 1100  # deflate expands about 1032:1 at most (measured: 1032.6 for zeros); a margin above
_SLACK = 4096  # headers and tiny files compress badly: allow a little over the ratio


def _claimed_bytes(zf: zipfile.ZipFile, info: zipfile.ZipInfo, p: Path) -> int:
    """Bytes the array in ``info`` claims, after checking that claim against the entry's own sizes."""
    if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
        raise LyraUsageError(f"{p}: {info.filename} claims {info.file_size:,} bytes but stores {info.compress_size:,}; "
                             "the file is damaged or hostile, write it again with numpy.savez")
    if info.file_size > _DEFLATE_MAX_RATIO * info.compress_size + _SLACK:
        raise LyraUsageError(f"{p}: {info.filename} claims {info.file_size:,} bytes from {info.compress_size:,} "
                             "compressed ones, more than compression can give; the file is damaged or hostile")
    with zf.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise LyraUsageError(f"{p}: {info.filename} is .npy version {version}; write it with numpy.savez")
    if dtype.hasobject:
        raise LyraUsageError(f"{p}: {info.filename} holds Python objects (a pickle), which lyra never loads; store "
                             "numbers (float32 or float64)")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > info.file_size:
        raise LyraUsageError(f"{p}: {info.filename} claims a {shape} {dtype} array ({nbytes:,} bytes) but holds "
                             f"{info.file_size:,} bytes; the file is truncated or hostile, write it again")
    return nbytes


def read_npz(path: str | os.PathLike, fix: str, keys: Collection[str] | None = None) -> dict[str, np.ndarray]:
    """The arrays of ``path`` (key -> array), sizes checked first (module doc).

    Args:
        path: the ``.npz`` file.
        fix: how to write a good file, appended to the messages.
        keys: read only these arrays (the others are neither counted nor decompressed); None: all.
    """
    p = Path(path)
    try:
        with zipfile.ZipFile(p) as zf:
            members = [i for i in zf.infolist() if i.filename.endswith(".npy")
                       and (keys is None or i.filename[:-len(".npy")] in keys)]
            total = sum(_claimed_bytes(zf, info, p) for info in members)
        check_limit("decoded_bytes", total, f"{p} (its arrays)")
        with np.load(p, allow_pickle=False) as z:
            return {k: np.asarray(z[k]) for k in z.files if keys is None or k in keys}
    except LyraUsageError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as err:
        raise LyraUsageError(f"{p} is not a readable .npz file ({type(err).__name__}: {err}); {fix}") from None


def npz_keys(path: str | os.PathLike) -> list[str]:
    """The names of the arrays in ``path`` (nothing is decompressed)."""
    with zipfile.ZipFile(path) as zf:
        return sorted(n[:-len(".npy")] for n in zf.namelist() if n.endswith(".npy"))
