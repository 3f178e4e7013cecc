"""Size limits: what a file may claim before lyra allocates for it (docs/limits.md).

A small file can claim a huge size (a PLY header saying 4e9 vertices, an ``.spz`` saying 40 M
points, a camera path asking 16384 x 16384 frames, a manifest requesting 10^12 clips). Readers
compare every claimed size with the file's own byte size where the format allows, and with the named
limits below, *before* allocating; the message names the limit and how to raise it.

Raise a limit for one run with ``lyra --limit NAME=VALUE ...`` (repeatable) or, for any command
(``lightning`` included), the environment variable ``LYRA_LIMIT_<NAME>=VALUE``. The flag sets the
variable, so worker processes see the same limits.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from lyra.utils.errors import LyraUsageError


@dataclass(frozen=True)
class Limit:
    name: str
    default: int
    unit: str  # what is counted, for messages
    what: str  # where it applies, for docs and --help


LIMITS = {lim.name: lim for lim in (
    Limit("points", 10_000_000, "Gaussians", "Gaussians in one scene file (.ply, .splat, .spz)"),
    Limit("frames", 10_000, "frames", "frames of a camera path, a render, or a video read by lyra generate"),
    Limit("pixels", 8192 * 8192, "pixels", "pixels of one image or frame (width x height)"),
    Limit("decoded_bytes", 4 << 30, "bytes",
          "bytes one input decodes to (the arrays of an .npz, a video's frames) or one render holds "
          "(frames x width x height x 12)"),
    Limit("clips", 1_000_000, "clips", "clip indices a clip-cache manifest may request"),
    Limit("json_bytes", 64 << 20, "bytes", "bytes of one JSON file (camera path, scene index, manifest, record)"),
)}


def env_name(name: str) -> str:
    return f"LYRA_LIMIT_{name.upper()}"


def limit(name: str) -> int:
    """The current value of limit ``name``: its environment variable if set, else the default."""
    lim = LIMITS[name]
    text = os.environ.get(env_name(name))
    if text is None or not text.strip():
        return lim.default
    try:
        value = int(float(text)) if "e" in text.lower() else int(text)
    except ValueError:
        raise LyraUsageError(f"{env_name(name)}={text!r} is not a whole number; set it to a count of "
                             f"{lim.unit}, e.g. {lim.default}") from None
    if value < 1:
        raise LyraUsageError(f"{env_name(name)}={text!r} must be at least 1")
    return value


def how_to_raise(name: str) -> str:
    return f"raise it with --limit {name}=N (lyra) or {env_name(name)}=N (any command); docs/limits.md"


def check_limit(name: str, value: int, what: str) -> None:
    """Refuse ``value`` (a size some input claims or asks for) above limit ``name``.

    Args:
        name: a key of ``LIMITS``.
        value: the claimed or requested size, in the limit's unit.
        what: the file or argument making the claim, for the message.
    """
    cap = limit(name)
    if value > cap:
        unit = LIMITS[name].unit
        raise LyraUsageError(f"{what}: {value:,} {unit} is above the {name} limit of {cap:,} {unit}; if that is "
                             f"really meant, {how_to_raise(name)}")


def set_limits(pairs: list[str]) -> None:
    """Apply ``--limit NAME=VALUE`` options (they set ``LYRA_LIMIT_<NAME>`` for this process and its children)."""
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in LIMITS:
            raise LyraUsageError(f"--limit {pair!r}: expected NAME=VALUE with NAME one of {', '.join(LIMITS)}")
        os.environ[env_name(name)] = value.strip()
        limit(name)  # refuse a bad value now, naming the flag's variable


RENDER_BYTES_PER_PIXEL = 12  # rendered frames are held as float32 RGB until they are encoded


def check_render_budget(frames: int, width: int, height: int, what: str) -> None:
    """Refuse a render whose frames, frame size or frame buffer exceed the limits, before rendering.

    Args:
        frames: number of frames asked for.
        width, height: frame size in pixels.
        what: the command or file asking, for the message.
    """
    check_limit("frames", frames, f"{what} (frames asked for)")
    check_limit("pixels", width * height, f"{what} (a {width}x{height} frame)")
    check_limit("decoded_bytes", frames * width * height * RENDER_BYTES_PER_PIXEL,
                f"{what} ({frames} frames of {width}x{height}, held as float32 RGB)")
