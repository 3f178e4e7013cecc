"""Lightning callbacks of lyra."""

from lyra.callbacks.clip_writer import ClipWriter

__all__ = ["ClipWriter"]
