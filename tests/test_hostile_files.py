"""Hostile or damaged files: clip-cache records that point outside the cache, invalid JSON, and PLY
files that are not PLY, claim impossible sizes or fail to parse. Each gives a clear error naming
the file and the fix, and touches nothing outside the cache."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lyra.data.codecs import DCTCodec
from lyra.data.generators import ProceduralGenerator
from lyra.data.shards import MANIFEST, ShardReader, ShardWriter, read_records
from lyra.models.teacher import TeacherModule
from lyra.render.ply import load_ply, save_ply

CONFIG = {"teacher": "hostile"}
PLY_PROPS = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
             "rot_0", "rot_1", "rot_2", "rot_3"]


@pytest.fixture(scope="module")
def clips():
    teacher = TeacherModule(ProceduralGenerator(seed=2, num_views=1, num_objects=(1, 2)),
                            DCTCodec(latent_channels=48), num_frames=5, height=16, width=16)
    return [teacher.make_clip(i) for i in range(4)]


def make_cache(root: Path, clips) -> None:
    w = ShardWriter(root, clips_per_shard=2)
    w.prepare(CONFIG, requested=range(len(clips)))
    w.add(clips)
    w.finish()


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---- clip cache: records must name their own shard, inside the cache --------------------------------


@pytest.mark.parametrize("bad", ["../../x.safetensors", "../clips-0000000000.safetensors", "ABSOLUTE",
                                 "shards/clips-0000000000.safetensors", "clips-0000000002.safetensors", ""])
def test_a_record_pointing_outside_the_cache_is_refused_and_nothing_outside_is_touched(tmp_path, clips, bad):
    cache = tmp_path / "cache"
    make_cache(cache, clips)
    outside = tmp_path / "x.safetensors"
    if bad == "ABSOLUTE":
        bad = str(outside)
    outside.write_bytes(b"not yours")
    (tmp_path / "x.json").write_text("not yours either")  # what the old code deleted
    record = cache / "shards" / "clips-0000000000.json"
    rec = json.loads(record.read_text())
    rec["file"] = bad
    record.write_text(json.dumps(rec))
    before, manifest = snapshot(tmp_path), (cache / MANIFEST).read_text()

    for attempt in (lambda: ShardWriter(cache, 2).prepare(CONFIG, requested=range(4)),
                    lambda: ShardWriter(cache, 2).prepare(CONFIG, requested=range(4), cleanup=False),
                    lambda: ShardReader(cache),
                    lambda: read_records(cache)):
        with pytest.raises(ValueError, match=r"clips-0000000000\.json names shard .*own shard "
                                             r"'clips-0000000000\.safetensors'"):
            attempt()
    assert snapshot(tmp_path) == before  # nothing deleted or rewritten, inside or outside the cache
    assert (cache / MANIFEST).read_text() == manifest


@pytest.mark.parametrize("damage", [
    lambda rec: rec.pop("sha256"),
    lambda rec: rec.update(indices="0,1"),
    lambda rec: rec.update(indices=[]),
    lambda rec: rec.update(indices=[0, -1]),
    lambda rec: rec.update(bytes="12"),
    lambda rec: rec.update(sha256="abc"),
])
def test_a_malformed_record_is_named(tmp_path, clips, damage):
    make_cache(tmp_path, clips)
    record = tmp_path / "shards" / "clips-0000000002.json"
    rec = json.loads(record.read_text())
    damage(rec)
    record.write_text(json.dumps(rec))
    with pytest.raises(ValueError, match=rf"{re.escape(str(record))}.*delete it and .*clips-0000000002\.safetensors"):
        ShardReader(tmp_path)


# ---- invalid JSON ---------------------------------------------------------------------------------------


def test_invalid_json_in_a_manifest_names_the_file_and_the_fix(tmp_path, clips):
    make_cache(tmp_path, clips)
    (tmp_path / MANIFEST).write_text('{"format": "lyra-clip-shards", "version": ')  # cut short
    for attempt in (lambda: ShardReader(tmp_path), lambda: ShardWriter(tmp_path, 2).prepare(CONFIG)):
        with pytest.raises(ValueError, match=rf"{re.escape(str(tmp_path / MANIFEST))} is not valid JSON .*rebuilt from the "
                                             r"shard records"):
            attempt()
    (tmp_path / MANIFEST).write_text("[1, 2]")  # valid JSON, not a manifest
    with pytest.raises(ValueError, match=rf"{re.escape(str(tmp_path / MANIFEST))} is not a lyra clip-cache manifest"):
        ShardReader(tmp_path)


def test_invalid_json_in_a_record_names_the_file_and_the_fix(tmp_path, clips):
    make_cache(tmp_path, clips)
    record = tmp_path / "shards" / "clips-0000000002.json"
    record.write_bytes(b"\x00\xff{garbage")
    for attempt in (lambda: ShardReader(tmp_path), lambda: ShardWriter(tmp_path, 2).prepare(CONFIG),
                    lambda: read_records(tmp_path)):
        with pytest.raises(ValueError, match=rf"{re.escape(str(record))} is not valid JSON .*delete it and "
                                             r".*clips-0000000002\.safetensors"):
            attempt()


# ---- PLY files ------------------------------------------------------------------------------------------


def ascii_header(count, props=PLY_PROPS) -> str:
    return ("ply\nformat ascii 1.0\n" + f"element vertex {count}\n"
            + "".join(f"property float {p}\n" for p in props) + "end_header\n")


def test_a_binary_non_ply_file_is_named(tmp_path):
    path = tmp_path / "photo.ply"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)  # a PNG with the wrong suffix
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))} is not a readable PLY file: it does not start with 'ply'"):
        load_ply(path)
    path.write_bytes(b"ply\n\xff\xfe\x00binary where the header should be\n")
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))} is not a readable PLY file: .*non-ASCII"):
        load_ply(path)


def test_a_negative_vertex_count_is_named(tmp_path):
    path = tmp_path / "neg.ply"
    path.write_text(ascii_header(-5))
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}: .*element vertex has a negative count \(-5\)"):
        load_ply(path)


@pytest.mark.parametrize("fmt", ["ascii", "binary_little_endian"])
def test_a_vertex_count_larger_than_the_file_is_refused_before_reading(tmp_path, fmt):
    path = tmp_path / "huge.ply"
    header = ascii_header(4_000_000_000).replace("ascii", fmt)
    body = "0 0 0 0 0 0 0 0 0 0 1 0 0 0\n".encode() if fmt == "ascii" else bytes(4 * len(PLY_PROPS))
    path.write_bytes(header.encode() + body)  # would allocate ~224 GB if the claim were believed
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}: the header claims 4000000000 vertex elements.*at least "
                                         rf"\d+ bytes.* only {len(body)} bytes follow the header"):
        load_ply(path)


def test_parse_errors_name_the_file_from_python(tmp_path):
    path = tmp_path / "bad.ply"
    path.write_text("ply\nformat ascii 1.0\nelement vertex many\nproperty float x\nend_header\n")
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))} is not a readable PLY file.*count"):
        load_ply(path)
    path.write_text(ascii_header(2) + "0 0 0 0 0 0 0 0 0 0 1 0 0 0\n0 0 zero 0 0 0 0 0 0 0 1 0 0 0\n")
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))} is not a readable PLY file"):
        load_ply(path)
    path.write_text(ascii_header(1).replace("end_header\n", ""))  # the header never ends
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))} is not a readable PLY file: no 'end_header'"):
        load_ply(path)


def test_a_truncated_binary_file_is_named(tmp_path):
    import torch

    from lyra.render.gaussians import Gaussians

    path = tmp_path / "cut.ply"
    n = 50
    save_ply(path, Gaussians(torch.randn(n, 3), torch.randn(n, 4), torch.rand(n, 3), torch.rand(n), torch.rand(n, 3)))
    path.write_bytes(path.read_bytes()[:-10])  # a copy that stopped early
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}: the header claims 50 vertex elements"):
        load_ply(path)
