"""`lyra cache verify` and the clip-cache readers against hostile caches (issue 22, groups 3, 4, 6).

Every bad cache is built here in a temp dir. Checked: records that name files outside the cache, and
shards or records that are symlinks leading outside, are refused (or reported bad) and nothing outside
is read, touched or called "ok"; a manifest requesting 10^12 clips or malformed ranges is refused
before anything expands them; a shard whose checksum matches its record but whose safetensors header
training cannot read (an invalid tensor shape) is reported bad; invalid JSON names the file and the
fix. (The record and JSON cases come from the former tests/test_hostile_files.py.)
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from pathlib import Path

import pytest

from lyra.data.codecs import DCTCodec
from lyra.data.generators import ProceduralGenerator
from lyra.data.shard_store import MANIFEST, read_manifest, read_records
from lyra.data.shards import ShardReader, ShardWriter
from lyra.models.teacher import TeacherModule
from lyra.tools import main
from lyra.utils.errors import LyraUsageError

CONFIG = {"teacher": "hostile"}


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


# ---- symlinks leading out of the cache --------------------------------------------------------------------


def test_a_shard_symlinked_outside_the_cache_is_reported_bad_not_ok(tmp_path, clips, capsys):
    cache = tmp_path / "cache"
    make_cache(cache, clips)
    shard = cache / "shards" / "clips-0000000000.safetensors"
    outside = tmp_path / "elsewhere.safetensors"
    shard.rename(outside)  # the same bytes, so the checksum would match
    shard.symlink_to(outside)
    with pytest.raises(SystemExit) as exc:
        main(["cache", "verify", str(cache), "--no-progress"])
    out = capsys.readouterr().out
    assert exc.value.code == 1 and "clips-0000000000.safetensors: not read" in out and "symlink" in out
    assert "ok" not in out.splitlines()[-1]
    with pytest.raises(LyraUsageError, match="symlink"):
        ShardReader(cache).load(0)


def test_a_record_symlinked_outside_the_cache_is_refused(tmp_path, clips):
    cache = tmp_path / "cache"
    make_cache(cache, clips)
    record = cache / "shards" / "clips-0000000002.json"
    record.rename(tmp_path / "elsewhere.json")
    record.symlink_to(tmp_path / "elsewhere.json")
    for attempt in (lambda: read_records(cache), lambda: ShardReader(cache)):
        with pytest.raises(LyraUsageError, match=r"clips-0000000002\.json.*symlink"):
            attempt()


# ---- manifests claiming huge or malformed requests --------------------------------------------------------


@pytest.mark.parametrize("requested, match", [
    ([[0, 10**12]], r"1,000,000,000,000 clips is above the clips limit"),
    ([[5, 2]], r"requested holds \[5, 2\]"), ([[0, "9"]], r"requested holds"), ([[0, 1, 2]], r"requested holds"),
    ([[True, 3]], r"requested holds"),
])
def test_a_manifest_requesting_too_much_is_refused_before_expanding(tmp_path, clips, capsys, requested, match):
    make_cache(tmp_path, clips)
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    manifest["requested"] = requested
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(LyraUsageError, match=match):
        read_manifest(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(["cache", "verify", str(tmp_path), "--no-progress"])
    assert exc.value.code == 2 and re.search(match, capsys.readouterr().err)


# ---- a shard whose checksum matches but which training cannot open -----------------------------------------


def rewrite_header(shard: Path, edit) -> None:
    """Edit the safetensors header of ``shard`` and make its record agree (size, sha256): only the header lies."""
    blob = shard.read_bytes()
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + n])
    edit(header)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    blob = struct.pack("<Q", len(text)) + text + blob[8 + n:]
    shard.write_bytes(blob)
    record = shard.with_suffix(".json")
    rec = json.loads(record.read_text())
    rec.update(bytes=len(blob), sha256=hashlib.sha256(blob).hexdigest())
    record.write_text(json.dumps(rec))


@pytest.mark.parametrize("edit, problem", [
    (lambda h: h["0/latents"].update(shape=[10**6, 48]), "claims shape"),
    (lambda h: h["0/latents"].update(shape=[-1, 48]), "invalid shape"),
    (lambda h: h["0/rgb"].update(dtype="F8_E4M3"), "never hold"),
    (lambda h: h["0/rgb"].update(data_offsets=[0, 10**12]), "outside the file"),
    (lambda h: h.__setitem__("__metadata__", {"clips": "[]"}), "clip list does not match"),
])
def test_verify_reads_each_shard_as_training_does(tmp_path, clips, capsys, edit, problem):
    make_cache(tmp_path, clips)
    assert main(["cache", "verify", str(tmp_path), "--no-progress"]) == 0  # the control
    capsys.readouterr()
    rewrite_header(tmp_path / "shards" / "clips-0000000000.safetensors", edit)
    with pytest.raises(SystemExit) as exc:
        main(["cache", "verify", str(tmp_path), "--no-progress"])
    out = capsys.readouterr().out
    assert exc.value.code == 1 and "BAD" in out and problem in out and "clips [0, 1]" in out


def test_a_header_length_beyond_the_file_is_refused(tmp_path, clips, capsys):
    make_cache(tmp_path, clips)
    shard = tmp_path / "shards" / "clips-0000000002.safetensors"
    blob = bytearray(shard.read_bytes())
    blob[:8] = struct.pack("<Q", 2**60)  # a header of an exabyte
    shard.write_bytes(bytes(blob))
    record = shard.with_suffix(".json")
    record.write_text(json.dumps({**json.loads(record.read_text()), "sha256": hashlib.sha256(blob).hexdigest()}))
    with pytest.raises(SystemExit):
        main(["cache", "verify", str(tmp_path), "--no-progress"])
    assert "claims a 1,152,921,504,606,846,976-byte header" in capsys.readouterr().out
