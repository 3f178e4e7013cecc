"""Real posed captures: COLMAP, LLFF, RealEstate10K and transforms.json readers, and ``CaptureSource``.

Every reader returns a ``Capture`` in lyra's camera convention (docs/conventions.md); ``read_capture``
detects the format and normalises the scale (``lyra.data.captures.capture`` states how);
``CaptureSource`` cuts captures into clips for ``TeacherModule`` (docs/evaluation.md, "Real captures").
"""

from lyra.data.captures.capture import Capture, normalize_capture
from lyra.data.captures.colmap import read_colmap
from lyra.data.captures.depth import align_estimate, sparse_depth
from lyra.data.captures.detect import detect_format, find_captures, read_capture
from lyra.data.captures.frames import load_frame
from lyra.data.captures.llff import read_llff
from lyra.data.captures.realestate import read_realestate10k
from lyra.data.captures.source import CaptureSource, window_positions
from lyra.data.captures.transforms_json import read_transforms_json
from lyra.data.captures.writers import (
    write_colmap,
    write_llff,
    write_realestate10k,
    write_transforms_json,
)

__all__ = [
    "Capture",
    "CaptureSource",
    "align_estimate",
    "detect_format",
    "find_captures",
    "load_frame",
    "normalize_capture",
    "read_capture",
    "read_colmap",
    "read_llff",
    "read_realestate10k",
    "read_transforms_json",
    "sparse_depth",
    "window_positions",
    "write_colmap",
    "write_llff",
    "write_realestate10k",
    "write_transforms_json",
]
