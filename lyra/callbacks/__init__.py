"""Lightning callbacks of lyra."""

from lyra.callbacks.clip_writer import ClipWriter
from lyra.callbacks.frame_scores import FrameScores

__all__ = ["ClipWriter", "FrameScores"]
