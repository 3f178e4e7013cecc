"""Teacher clip generators: procedural worlds (weight-free default) and diffusion models."""

from lyra.data.generators.base import ClipGenerator, GeneratedClip
from lyra.data.generators.gen3c import Gen3CGenerator
from lyra.data.generators.procedural import ProceduralGenerator

__all__ = ["ClipGenerator", "GeneratedClip", "Gen3CGenerator", "ProceduralGenerator"]
