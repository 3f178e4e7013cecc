"""The one evaluation protocol (docs/evaluation.md): held-out sampling, baselines, the report.

``lightning test`` (``StudentModule.test_step``) and ``benchmarks/`` both use it.
"""

from lyra.data.splits import heldout_split, source_duplicates, target_frames
from lyra.eval.baselines import (
                                 BASELINES,
                                 SceneFitConfig,
                                 fit_scene,
                                 input_image_warp,
                                 nearest_frame,
                                 nearest_source_frames,
                                 source_parallax,
)
from lyra.eval.geometry import depth_errors, median_log_error
from lyra.eval.regions import region_scores
from lyra.eval.report import EvalConfig, EvalReport
from lyra.eval.summary import format_table, parallax_bin_labels, summarize

__all__ = [
    "BASELINES",
    "EvalConfig",
    "EvalReport",
    "SceneFitConfig",
    "fit_scene",
    "depth_errors",
    "format_table",
    "heldout_split",
    "input_image_warp",
    "median_log_error",
    "nearest_frame",
    "parallax_bin_labels",
    "region_scores",
    "nearest_source_frames",
    "source_duplicates",
    "source_parallax",
    "summarize",
    "target_frames",
]
