"""Lightning callbacks of lyra."""

from lyra.callbacks.clip_writer import ClipWriter
from lyra.callbacks.frame_scores import FrameScores
from lyra.callbacks.progress_log import ProgressLog, ScheduleCutWarning

__all__ = ["ClipWriter", "FrameScores", "ProgressLog", "ScheduleCutWarning"]
