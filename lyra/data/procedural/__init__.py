"""Weight-free procedural teacher scenes: analytic ray casting with exact RGB and metric depth."""

from lyra.data.procedural.raytrace import SKY_DEPTH
from lyra.data.procedural.scene import ProceduralScene, sample_scene
from lyra.data.procedural.world import ProceduralWorld, reverse_frames

__all__ = ["SKY_DEPTH", "ProceduralScene", "ProceduralWorld", "reverse_frames", "sample_scene"]
