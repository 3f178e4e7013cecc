"""Clips (the data contract), video codecs, procedural worlds, generators, shards, DataModules."""

from lyra.data.clip import Clip, ClipBatch
