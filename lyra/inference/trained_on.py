"""What a decoder was trained on, as ``lyra generate`` needs it: clip size, field of view, teacher.

A decoder saved by ``lightning fit`` carries the record in its own config (``trained_on``, written
by ``StudentModule`` when training starts: the teacher's description, the same one a clip cache's
manifest holds). A decoder saved before it had one falls back to the CPU configs' defaults, and the
run says so.
"""

from __future__ import annotations

from typing import Any

from lyra.models.checkpoints import DecoderInfo

DEFAULT_SIZES = {False: (17, 128, 128), True: (9, 128, 128)}  # is_dynamic -> (frames, height, width): the CPU configs
DEFAULT_FOV = 60.0


def training_facts(info: DecoderInfo, dynamic: bool) -> dict[str, Any]:
    """num_frames, height, width, fov_deg, and where known: trajectories, num_views, num_objects,
    shadows, generator and codec class paths; ``sizes_from`` says whether they came from the
    decoder's record or from defaults."""
    record = info.trained_on or {}
    frames, height, width = DEFAULT_SIZES[dynamic]
    gen = record.get("generator") or {}
    codec = record.get("codec") or {}
    out: dict[str, Any] = {
        "num_frames": record.get("num_frames", frames), "height": record.get("height", height),
        "width": record.get("width", width), "fov_deg": float(gen.get("fov_deg") or DEFAULT_FOV),
        "sizes_from": "the decoder's record of its training clips" if "num_frames" in record else
                      "defaults (the decoder was saved without a record of its training clips)",
    }
    for key in ("trajectories", "num_objects", "shadows"):
        if gen.get(key) is not None:
            out[key] = gen[key]
    if gen.get("class"):
        out["generator"] = gen["class"]
    if codec.get("class"):
        out["codec"] = codec["class"]
    return out
