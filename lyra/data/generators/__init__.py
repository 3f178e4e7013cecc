"""Teacher clip generators: procedural worlds (weight-free default) and diffusion models."""

from lyra.data.generators.base import ClipGenerator, GeneratedClip
from lyra.data.generators.procedural import ProceduralGenerator

__all__ = ["ClipGenerator", "GeneratedClip", "Gen3CGenerator", "ProceduralGenerator"]


def __getattr__(name: str):
    # Lazy: the diffusion teacher pulls in diffusers parts only when asked for.
    if name == "Gen3CGenerator":
        from lyra.data.generators.gen3c import Gen3CGenerator

        return Gen3CGenerator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
