"""Clips (the data contract), video codecs, procedural worlds, generators, shards, DataModules.

The data contract (shapes, units, what 0 depth means): docs/conventions.md ("The data contract").
"""

from lyra.data.clip import Clip, ClipBatch
from lyra.data.codecs import DCTCodec, DiffusersVideoVAE, VideoCodec
from lyra.data.datamodule import SPLIT_OFFSETS, ClipDataModule, IndexDataModule
from lyra.data.generators import ClipGenerator, GeneratedClip, ProceduralGenerator
from lyra.data.procedural import ProceduralWorld
from lyra.data.shards import ShardReader, ShardWriter

__all__ = [
    "SPLIT_OFFSETS",
    "Clip",
    "ClipBatch",
    "ClipDataModule",
    "ClipGenerator",
    "DCTCodec",
    "DiffusersVideoVAE",
    "GeneratedClip",
    "IndexDataModule",
    "ProceduralGenerator",
    "ProceduralWorld",
    "ShardReader",
    "ShardWriter",
    "VideoCodec",
]
