"""The clip cache: safetensors shards of whole clips, a JSON record per shard, and a manifest.

Layout of a cache directory::

    manifest.json                       format, version, complete?, clip count, requested index ranges,
                                        fields (shape, dtype), teacher config (generator + codec +
                                        size), shards + sha256
    shards/clips-0000000000.safetensors clips in slots 0..n-1: tensors "<slot>/<field>" (rgb, gt_rgb
                                        uint8; latents, depth, c2w, K, time float32) and metadata
                                        "clips" = JSON [{index, caption, depth_is_metric, meta}]
    shards/clips-0000000000.json        the shard's record: format, version, file (its own shard's
                                        plain name), clip indices, sha256, bytes, teacher config, fields

Why this shape: safetensors is a standard, pickle-free, memory-mapped format that reads any one
tensor without the rest (streaming reads by index). A shard is complete exactly when its record
exists: the shard is written to a temp file and renamed, then the record likewise, so a run killed
at any instant leaves only complete shards plus debris that ``ShardWriter.prepare`` removes
(temp files, a shard whose record never landed, a shard whose checksum no longer matches); the
clips of a discarded shard are simply regenerated. Records (one file each, never rewritten) are the
truth: each carries the teacher's identity, so a lost manifest cannot let another teacher's clips
in, and the manifest is rebuilt from them, so writers on several ranks never contend for one file.
A record names only its own shard (``clips-N.json`` -> ``clips-N.safetensors``); anything else is
refused, so no record can make lyra read or delete a file outside the cache; neither can a symlink, nor
a manifest requesting more clips than the ``clips`` limit (lyra.data.shard_checks).
``lyra cache verify DIR`` checks every shard's checksum and that its header reads as its record says.

Reading also works from object storage: ``ShardReader`` / ``read_manifest`` take fsspec URLs
(``s3://bucket/clips``, ``gs://...``, ``memory://...``; ``file://`` is a local folder), so many
nodes can train from one cache (``ClipDataModule`` splits the clips by rank and worker). A remote
shard is read whole once per reader to check its sha256; later clips of it are fetched as byte
ranges (the safetensors header, then the clip's own tensors). Writing stays local: generate into a
folder, then upload it.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import safetensors.numpy
from safetensors import safe_open

from lyra.data.clip import Clip
from lyra.data.shard_store import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    RECORD_KEYS,
    SHARDS,
    FsPath,
    _diff,
    _read_slot,
    _safetensors_header,
    _stable_header,
    cache_path,
    check_identity,
    fields_of,
    from_ranges,
    index_records,
    inside,
    read_manifest,
    read_records,
    record_path,
    sha256_file,
    shard_name,
    to_ranges,
    verify_shards,
)
from lyra.utils.atomic import atomic_path, atomic_write_text


class ShardWriter:
    """Buffers clips and writes them ``clips_per_shard`` at a time; resumable (see module doc).

    Call ``prepare`` once per run (on one process when several write into one directory), then
    ``add`` clips, ``flush`` the last partial shard and ``finish``.
    """

    def __init__(self, output_dir: str | Path, clips_per_shard: int = 4) -> None:
        if not isinstance(clips_per_shard, int) or clips_per_shard < 1:
            raise ValueError(f"clips_per_shard must be a positive int, got {clips_per_shard!r}")
        self.root, self.clips_per_shard = Path(output_dir), clips_per_shard
        self.config: dict[str, Any] = {}
        self.fields: dict[str, dict[str, Any]] | None = None
        self.buffer: list[dict[str, Any]] = []  # Clip.to_numpy_dict() of clips not yet in a shard
        self.requested: set[int] = set()
        self.stored: set[int] = set()  # indices in complete shards (as of prepare) or written since

    @property
    def shard_dir(self) -> Path:
        return self.root / SHARDS

    def prepare(self, config: dict[str, Any], requested: Iterable[int] = (), cleanup: bool = True) -> None:
        """Check ``config`` (the teacher's identity) against the cache, add ``requested`` clip indices
        to the ones the cache must hold to be complete, and (``cleanup``) drop a killed run's debris."""
        config = json.loads(json.dumps(config))  # normalise tuples etc. to what JSON gives back
        self.config, self.requested = config, set(requested)
        if (self.root / MANIFEST).is_file():
            old = read_manifest(self.root)
            if old["config"] != config:
                diff = "; ".join(f"{k}: cache {a!r}, now {b!r}" for k, (a, b) in _diff(old["config"], config).items())
                raise ValueError(f"{self.root} holds clips of another teacher config ({diff}); resume with the "
                                 f"same config, or write to a new output_dir (or delete {self.root})")
            self.fields = old.get("fields")
            self.requested |= set(from_ranges(old["requested"]))
        records = read_records(self.root)  # refuses malformed records and ones naming other files
        check_identity(self.root, records, config)  # also when the manifest is lost: records are the truth
        if self.fields is None and records:
            self.fields = records[0]["fields"]
        if not cleanup:
            self.stored = set(index_records(records))
            return
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        for tmp in self.shard_dir.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)  # a shard or record being written when the run died
        bad = verify_shards(self.root, records)  # sizes and sha256: a flipped byte keeps the size
        for rec in records:
            if rec["file"] in bad:
                warnings.warn(f"{self.shard_dir / rec['file']} is {bad[rec['file']]}; its clips {rec['indices']} "
                              "will be regenerated")
                record_path(self.root, rec).unlink()  # first the record: the shard is debris from here on
        recorded = {rec["file"] for rec in records if rec["file"] not in bad}
        for shard in self.shard_dir.glob("clips-*.safetensors"):
            if shard.name not in recorded:
                shard.unlink()  # renamed into place but its record never landed, or corrupt: incomplete
        self.stored = self.completed_indices()
        self.write_manifest()

    def completed_indices(self) -> set[int]:
        return set(index_records(read_records(self.root)))

    def check(self, clips: list[Clip]) -> list[dict[str, Any]]:
        """Validate a batch before any of it is buffered (type, finiteness, field shapes, JSON meta);
        returns the clips as shard records (``Clip.to_numpy_dict``)."""
        out, ref = [], self.fields
        for clip in clips:
            if not isinstance(clip, Clip):
                raise TypeError(f"ShardWriter stores lyra Clip objects, got {type(clip).__name__}; "
                                "return Clips from predict_step (TeacherModule does)")
            clip.validate()  # NaN / Inf latents or images, inconsistent shapes
            idx = clip.meta.get("index")
            if not isinstance(idx, int) or isinstance(idx, bool) or idx < 0:
                raise ValueError(f"clip.meta['index'] must be the clip's non-negative int index, got {idx!r}")
            if idx in self.stored or any(b["meta"]["index"] == idx for b in self.buffer + out):
                raise ValueError(f"clip {idx} is already stored (or queued) in {self.root}; each index is written once "
                                 "(skip done indices, e.g. with IndexDataModule, or write to a new output_dir)")
            d = clip.to_numpy_dict()
            try:
                json.dumps({k: d[k] for k in RECORD_KEYS})
            except TypeError as err:
                raise TypeError(f"clip {idx}: meta must be JSON-serialisable to be stored ({err})") from None
            got = fields_of(d)
            ref = got if ref is None else ref
            if got != ref:
                bad = sorted(k for k in set(got) | set(ref) if got.get(k) != ref.get(k))
                raise ValueError(f"clip {idx} disagrees with the cache's clips on {bad}: "
                                 + "; ".join(f"{k}: expected {ref.get(k)}, got {got.get(k)}" for k in bad)
                                 + ". Every clip of one cache needs the same views, frames, size and fields")
            out.append(d)
        self.fields = ref
        return out

    def add(self, clips: list[Clip]) -> None:
        records = self.check(clips)
        self.buffer.extend(records)
        while len(self.buffer) >= self.clips_per_shard:
            self._write(self.buffer[: self.clips_per_shard])
            self.buffer = self.buffer[self.clips_per_shard:]

    def flush(self) -> None:
        if self.buffer:
            self._write(self.buffer)
            self.buffer = []

    def _write(self, records: list[dict[str, Any]]) -> None:
        arrays, entries = {}, []
        for slot, d in enumerate(records):
            arrays.update({f"{slot}/{k}": np.ascontiguousarray(v) for k, v in d.items() if isinstance(v, np.ndarray)})
            entries.append({"index": d["meta"]["index"], **{k: d[k] for k in RECORD_KEYS}})
        blob = _stable_header(safetensors.numpy.save(arrays, metadata={
            "format": FORMAT, "version": str(FORMAT_VERSION), "clips": json.dumps(entries)}))
        name = shard_name(entries[0]["index"])
        with atomic_path(self.shard_dir / name) as tmp:
            tmp.write_bytes(blob)
        self.stored.update(e["index"] for e in entries)
        record = {"format": FORMAT, "version": FORMAT_VERSION, "file": name, "indices": [e["index"] for e in entries],
                  "sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob), "config": self.config,
                  "fields": self.fields}
        atomic_write_text((self.shard_dir / name).with_suffix(".json"), json.dumps(record))  # now complete
        self.write_manifest()

    def write_manifest(self) -> dict[str, Any]:
        """Summary rebuilt from the records; ``complete`` = every requested clip is stored. Writers on
        several ranks may race here, which can only leave it stale (readers trust the records; ``finish``
        rewrites it until it agrees with them). Records of another teacher are refused, never summarised."""
        records = read_records(self.root)
        check_identity(self.root, records, self.config)
        stored = index_records(records)
        manifest = {"format": FORMAT, "version": FORMAT_VERSION, "complete": self.requested <= stored.keys(),
                    "num_clips": len(stored), "requested": to_ranges(self.requested), "fields": self.fields,
                    "config": self.config, "shards": [{**r, "file": f"{SHARDS}/{r['file']}"} for r in records]}
        atomic_write_text(self.root / MANIFEST, json.dumps(manifest, indent=1))
        return manifest

    def finish(self) -> dict[str, Any]:
        """Write the last partial shard and the final manifest."""
        self.flush()
        while True:  # another rank may have written a shard since our read: the last writer converges
            manifest = self.write_manifest()
            if [r["file"] for r in read_records(self.root)] == [s["file"][len(SHARDS) + 1:] for s in manifest["shards"]]:
                return manifest


class ShardReader:
    """Random access to a clip cache by clip index; verifies each shard's sha256 on first use."""

    def __init__(self, root: str | Path, allow_incomplete: bool = False, verify: bool = True) -> None:
        self.root, self.verify = cache_path(root), verify
        self.manifest = read_manifest(self.root)
        records = read_records(self.root)  # records, not the manifest, say what is done
        check_identity(self.root, records, self.manifest["config"])
        self.where = index_records(records)
        missing = sorted(set(from_ranges(self.manifest["requested"])) - self.where.keys())
        if missing and not allow_incomplete:
            raise ValueError(f"{self.root} holds an unfinished generation: {len(missing)} requested clips are not "
                             f"stored (first: {missing[:5]}); rerun the same generate command to finish it, or pass "
                             "allow_incomplete=True to read the finished shards")
        for rec, _ in self.where.values():
            if not (self.root / SHARDS / rec["file"]).is_file():
                raise FileNotFoundError(f"shard {self.root / SHARDS / rec['file']} is missing (its record lists clips "
                                        f"{rec['indices']}); restore it, or delete its .json record and rerun the "
                                        "generate command to regenerate them")
        self.indices: list[int] = sorted(self.where)
        self._verified: set[str] = set()
        self._headers: dict[str, tuple[dict[str, Any], int]] = {}  # remote shards: safetensors headers

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> Clip:
        return self.load(self.indices[position])

    def __contains__(self, index: int) -> bool:
        return index in self.where

    def shard_path(self, index: int) -> Path:
        return self.root / SHARDS / self.where[index][0]["file"]

    def _open(self, rec: dict[str, Any], blob: bytes | None = None) -> Path | FsPath:
        path = inside(self.root, SHARDS, rec["file"])
        if blob is None and not path.is_file():
            raise FileNotFoundError(f"shard {path} listed in {self.root / MANIFEST} is missing; restore it or "
                                    "regenerate: delete its .json record and rerun the generate command")
        if self.verify and rec["file"] not in self._verified:
            digest = sha256_file(path) if blob is None else hashlib.sha256(blob).hexdigest()
            if digest != rec["sha256"]:
                raise ValueError(f"shard {path} is corrupt (checksum mismatch: sha256 {digest} != {rec['sha256']} in "
                                 f"its record, clips {rec['indices']}); run `lyra cache verify {self.root}` to list "
                                 "every bad shard, then rerun the same `lightning predict` command that wrote the "
                                 "cache: it drops bad shards and regenerates their clips")
            self._verified.add(rec["file"])
        return path

    def _load_remote(self, rec: dict[str, Any], slot: int) -> dict[str, Any]:
        """A clip of a shard in object storage: the whole shard once (its sha256), then byte ranges."""
        path = self.root / SHARDS / rec["file"]
        if not path.is_file():
            self._open(rec)  # names the missing shard
        if self.verify and rec["file"] not in self._verified:
            blob = path.read_bytes()
            self._open(rec, blob)
            fetch = lambda ranges: [blob[a:b] for a, b in ranges]  # noqa: E731
            return _read_slot(path, *_safetensors_header(path, fetch), slot, fetch)
        if rec["file"] not in self._headers:
            self._headers[rec["file"]] = _safetensors_header(path, path.read_ranges)
        return _read_slot(path, *self._headers[rec["file"]], slot, path.read_ranges)

    def load(self, index: int) -> Clip:
        if index not in self.where:
            raise KeyError(f"clip {index} is not in {self.root} ({len(self)} clips, indices "
                           f"{self.indices[0] if self.indices else '-'}..{self.indices[-1] if self.indices else '-'})")
        rec, slot = self.where[index]
        if isinstance(self.root, FsPath):
            return Clip.from_numpy_dict(self._load_remote(rec, slot))
        with safe_open(self._open(rec), framework="numpy") as f:
            entry = json.loads(f.metadata()["clips"])[slot]
            prefix = f"{slot}/"
            d: dict[str, Any] = {k[len(prefix):]: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)}
        d.update({k: entry[k] for k in RECORD_KEYS})
        return Clip.from_numpy_dict(d)
