"""Generation: image / prompt / video / procedural seed -> teacher -> decoder -> Gaussian scene.

``lyra generate`` (``lyra.inference.pipeline.generate``) and ``lightning predict`` with a config from
configs/infer/ (``GenerateDataModule`` -> ``StudentModule.predict_step`` -> ``SceneWriter``) share the
teachers, the batch and the writer. docs/generate.md has the commands and the layouts.
"""

from lyra.inference.clips import clip_batch, default_times, make_clip
from lyra.inference.data import GenerateDataModule, SceneWriter
from lyra.inference.paths import load_camera_path, parse_magnitude
from lyra.inference.pipeline import GenerateOptions, generate
from lyra.inference.teachers import ImageTeacher, ProceduralTeacher, TextToImage
from lyra.inference.video import VideoTeacher, read_cameras
from lyra.models.checkpoints import load_decoder

__all__ = ["GenerateDataModule", "GenerateOptions", "ImageTeacher", "ProceduralTeacher", "SceneWriter", "TextToImage",
           "VideoTeacher", "clip_batch", "default_times", "generate", "load_camera_path", "load_decoder", "make_clip",
           "parse_magnitude", "read_cameras"]
