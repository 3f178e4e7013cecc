"""Which format a capture is in, and every capture under a folder.

A capture is a folder holding a COLMAP model (``sparse/0/``, ``sparse/`` or the folder itself),
an LLFF ``poses_bounds.npy``, a ``transforms.json``, or one RealEstate10K camera file with its
frames; or a RealEstate10K ``.txt`` file itself. ``find_captures`` takes either one capture or a
folder of them (a dataset split: sub-folders, and RealEstate10K ``<clip>.txt`` files beside their
``<clip>/`` frame folders).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from lyra.data.captures.capture import (
    Capture,
    CaptureFormat,
    Normalization,
    normalize_capture,
)
from lyra.data.captures.colmap import find_model_dir, read_colmap
from lyra.data.captures.llff import read_llff
from lyra.data.captures.realestate import frames_folder, read_realestate10k
from lyra.data.captures.transforms_json import read_transforms_json

FormatChoice = Literal["auto", "colmap", "llff", "realestate10k", "transforms_json"]
READERS = {"colmap": read_colmap, "llff": read_llff, "realestate10k": read_realestate10k,
           "transforms_json": read_transforms_json}


def _realestate_file(folder: Path) -> Path | None:
    texts = [p for p in folder.glob("*.txt") if p.is_file()]
    return texts[0] if len(texts) == 1 and frames_folder(texts[0]) is not None else None


def detect_format(path: Path) -> CaptureFormat | None:
    """The format of the capture at ``path``, or None when it is not one (the order decides ties)."""
    if path.is_file():
        return {".txt": "realestate10k", ".json": "transforms_json"}.get(path.suffix.lower())
    if not path.is_dir():
        return None
    if find_model_dir(path) is not None:
        return "colmap"
    if (path / "poses_bounds.npy").is_file():
        return "llff"
    if (path / "transforms.json").is_file():
        return "transforms_json"
    return "realestate10k" if _realestate_file(path) is not None else None


def find_captures(root: str | Path) -> list[Path]:
    """``root`` when it is a capture, else the captures directly inside it, sorted by name."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"capture folder {str(root)!r} does not exist")
    if detect_format(root) is not None:
        return [root]
    found = [p for p in sorted(root.iterdir()) if p.is_dir() and detect_format(p) is not None]
    found += [p for p in sorted(root.glob("*.txt")) if frames_folder(p) is not None]
    if not found:
        raise FileNotFoundError(f"{root} holds no capture: expected a COLMAP model (sparse/0/cameras.bin|txt), "
                                "poses_bounds.npy, transforms.json or a RealEstate10K <clip>.txt with its frames in "
                                "<clip>/, in the folder or in its sub-folders")
    return found


def read_capture(
    path: str | Path,
    format: FormatChoice = "auto",
    normalization: Normalization = "auto",
    unit: float = 1.0,
) -> Capture:
    """One capture, read and normalised (``lyra.data.captures.capture``: the scale statement).

    Args:
        path: the capture folder (or a RealEstate10K ``.txt`` / a ``transforms.json`` file).
        format: the reader to use; ``"auto"`` detects it (COLMAP, LLFF, transforms.json,
            RealEstate10K, in that order when a folder holds several).
        normalization: the statistic that sets the scale (``"auto"``, ``"points"``, ``"bounds"``,
            ``"cameras"``, ``"none"``).
        unit: the value that statistic takes after normalisation.
    """
    path = Path(path)
    kind = detect_format(path) if format == "auto" else format
    if kind not in READERS:
        raise FileNotFoundError(f"{path} is not a capture lyra reads (COLMAP, LLFF, RealEstate10K, transforms.json)"
                                if format == "auto" else f"format must be auto or one of {sorted(READERS)}, got {format!r}")
    if kind == "realestate10k" and path.is_dir():
        path = _realestate_file(path) or path
    return normalize_capture(READERS[kind](path), normalization, unit)
