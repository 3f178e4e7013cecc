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
from types import SimpleNamespace
from typing import Any, Iterable

import fsspec
import numpy as np
from fsspec.implementations.local import LocalFileSystem
import safetensors.numpy
from safetensors import safe_open
from tqdm import tqdm

from lyra.data.clip import Clip
from lyra.data.shard_checks import NUMPY_DTYPES as _NUMPY_DTYPES
from lyra.data.shard_checks import check_requested, read_header, shard_layout_problem
from lyra.utils.atomic import atomic_path, atomic_write_text
from lyra.utils.jsonfile import read_json
from lyra.utils.paths import resolve_inside

FORMAT = "lyra-clip-shards"
FORMAT_VERSION = 2  # 2: records carry format, version, config and fields
MANIFEST = "manifest.json"
SHARDS = "shards"
RECORD_KEYS = ("caption", "depth_is_metric", "meta")  # non-array entries of Clip.to_numpy_dict


class FsPath:
    """The few ``pathlib`` operations the cache reader uses, on an fsspec URL (read-only)."""

    def __init__(self, url: str, fs: fsspec.AbstractFileSystem | None = None) -> None:
        self.url = str(url).rstrip("/")
        self.fs = fs if fs is not None else fsspec.core.url_to_fs(self.url)[0]
        self.path = self.fs._strip_protocol(self.url)

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"FsPath({self.url!r})"

    def __truediv__(self, part: str) -> "FsPath":
        return FsPath(f"{self.url}/{part}", self.fs)

    @property
    def name(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def parent(self) -> "FsPath":
        return FsPath(self.url.rsplit("/", 1)[0], self.fs)

    def with_suffix(self, suffix: str) -> "FsPath":
        stem = self.name.rsplit(".", 1)[0] if "." in self.name else self.name
        return self.parent / (stem + suffix)

    def is_file(self) -> bool:
        return self.fs.isfile(self.path)

    def stat(self) -> SimpleNamespace:
        return SimpleNamespace(st_size=self.fs.size(self.path))

    def read_bytes(self) -> bytes:
        return self.fs.cat_file(self.path)

    def open(self, mode: str = "rb"):
        return self.fs.open(self.path, mode)

    def glob(self, pattern: str) -> list["FsPath"]:  # direct children only, as the reader needs
        return [self / p.rstrip("/").rsplit("/", 1)[-1] for p in sorted(self.fs.glob(f"{self.path}/{pattern}"))]

    def read_ranges(self, ranges: list[tuple[int, int]]) -> list[bytes]:
        return self.fs.cat_ranges([self.path] * len(ranges), [a for a, _ in ranges], [b for _, b in ranges])


def cache_path(root: str | Path | FsPath) -> Path | FsPath:
    """A cache location: a local ``Path``, or an ``FsPath`` for an fsspec URL (``file://`` gives a Path)."""
    if isinstance(root, (Path, FsPath)):
        return root
    if "://" not in str(root):
        return Path(root)
    fs, path = fsspec.core.url_to_fs(str(root))
    if isinstance(fs, LocalFileSystem):
        return Path(path)
    return FsPath(str(root), fs)


def inside(root: Path | FsPath, *parts: str) -> Path | FsPath:
    """``root / parts`` for a cache file; in a local cache resolved and refused if it leads outside
    (a symlink to elsewhere). Object stores have no symlinks."""
    if isinstance(root, FsPath):
        return FsPath(f"{root.url}/{'/'.join(parts)}", root.fs)
    return resolve_inside(root, "/".join(parts), f"clip cache {root}")


def _safetensors_header(path: Path | FsPath, fetch) -> tuple[dict[str, Any], int]:
    """(header, offset of the data) of a safetensors file read through ``fetch([(start, end)])``."""
    try:
        return read_header(path, path.stat().st_size, lambda a, b: fetch([(a, b)])[0])
    except ValueError as err:
        raise ValueError(f"{err}; {_REGENERATE}") from None


def _read_slot(path: Path | FsPath, header: dict[str, Any], base: int, slot: int, fetch) -> dict[str, Any]:
    """The arrays and record entries of clip ``slot`` of a shard, fetching only its tensors' bytes."""
    prefix = f"{slot}/"
    names = [k for k in header if k.startswith(prefix)]
    blobs = fetch([(base + header[k]["data_offsets"][0], base + header[k]["data_offsets"][1]) for k in names])
    d: dict[str, Any] = {}
    for k, blob in zip(names, blobs):
        dtype = _NUMPY_DTYPES.get(header[k]["dtype"])
        if dtype is None:
            raise ValueError(f"shard {path} stores {k} as {header[k]['dtype']}, which lyra's caches never hold; "
                             f"{_REGENERATE}")
        d[k[len(prefix):]] = np.frombuffer(blob, dtype=dtype).reshape(header[k]["shape"]).copy()
    entry = json.loads(header["__metadata__"]["clips"])[slot]
    d.update({k: entry[k] for k in RECORD_KEYS})
    return d


def _stable_header(blob: bytes) -> bytes:
    """safetensors writes ``__metadata__`` from a hash map, in an order that changes from call to call;
    rewrite the header with sorted metadata keys so the same clips always give the same bytes (and
    sha256) — a regenerated shard must match its first write."""
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + n])
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)  # the data section stays 8-byte aligned, as safetensors writes it
    return len(text).to_bytes(8, "little") + text + blob[8 + n:]


def shard_name(first_index: int) -> str:
    return f"clips-{first_index:010d}.safetensors"


_REGENERATE = "rerun the same `lightning predict` command (it regenerates missing clips)"


def _load_json(path: Path | FsPath, fix: str) -> Any:
    if isinstance(path, Path):
        return read_json(path, fix)  # size-limited, nesting errors named
    try:
        return json.loads(path.read_bytes())
    except (ValueError, RecursionError) as err:  # JSONDecodeError, bytes that are not UTF-8, deep nesting
        raise ValueError(f"{path} is not valid JSON ({type(err).__name__}: {err}); {fix}") from None


def read_manifest(root: str | Path) -> dict[str, Any]:
    path = inside(cache_path(root), MANIFEST)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {root} is not a lyra clip cache; write one with "
                                "`lightning predict --config configs/generate.yaml` (ClipWriter callback)")
    fix = f"delete it and {_REGENERATE}: the manifest is rebuilt from the shard records"
    manifest = _load_json(path, fix)
    if not isinstance(manifest, dict):
        raise ValueError(f"{path} is not a lyra clip-cache manifest (a JSON {type(manifest).__name__}, not an "
                         f"object); {fix}")
    if manifest.get("format") != FORMAT or manifest.get("version") != FORMAT_VERSION:
        raise ValueError(f"{path} is format {manifest.get('format')!r} v{manifest.get('version')}, this lyra "
                         f"reads {FORMAT!r} v{FORMAT_VERSION}; regenerate the cache with this version")
    for key, kind in (("requested", list), ("config", dict), ("fields", (dict, type(None)))):
        if not isinstance(manifest.get(key), kind):
            raise ValueError(f"{path} is not a lyra clip-cache manifest ({key!r} is missing or malformed); {fix}")
    check_requested(manifest["requested"], path)  # before anything expands the ranges
    return manifest


def _is_index(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def check_record(rec: Any, path: Path) -> dict[str, Any]:
    """A shard record read from ``path`` (``shards/clips-N.json``), checked: it must name its own shard
    ``clips-N.safetensors`` (a plain name in the same folder, never a path) and hold well-formed fields."""
    own = path.with_suffix(".safetensors").name
    fix = f"delete it and its shard {own} and {_REGENERATE}"
    if not isinstance(rec, dict):
        raise ValueError(f"{path} is not a valid shard record (a JSON {type(rec).__name__}, not an object); {fix}")
    if rec.get("format") != FORMAT or rec.get("version") != FORMAT_VERSION:
        raise ValueError(f"{path} is a shard record of format {rec.get('format')!r} v{rec.get('version')}, this "
                         f"lyra reads {FORMAT!r} v{FORMAT_VERSION}; regenerate the cache with this version (write "
                         f"to a new output_dir, or delete {path.parent.parent})")
    if rec.get("file") != own:
        raise ValueError(f"{path} names shard {rec.get('file')!r}, but a record may only name its own shard {own!r} "
                         f"(a plain file name in {path.parent}); this record was not written by lyra and nothing it "
                         f"names was read or deleted: {fix}")
    problems = []
    if not (isinstance(rec.get("indices"), list) and rec["indices"] and all(map(_is_index, rec["indices"]))
            and len(set(rec["indices"])) == len(rec["indices"])):
        problems.append(f"indices {rec.get('indices')!r} are not distinct non-negative ints")
    sha = rec.get("sha256")
    if not (isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)):
        problems.append(f"sha256 {sha!r} is not a hex digest")
    if not _is_index(rec.get("bytes")):
        problems.append(f"bytes {rec.get('bytes')!r} is not a size")
    if not isinstance(rec.get("config"), dict):
        problems.append("config (the teacher's identity) is missing")
    if not isinstance(rec.get("fields"), dict):
        problems.append("fields are missing")
    if problems:
        raise ValueError(f"{path} is not a valid shard record ({'; '.join(problems)}); {fix}")
    return rec


def read_records(root: str | Path) -> list[dict[str, Any]]:
    """Records of every completed shard, checked (``check_record``), sorted by first clip index."""
    root = cache_path(root)
    paths = [inside(root, SHARDS, p.name) for p in sorted((root / SHARDS).glob("clips-*.json"), key=str)]
    recs = [check_record(_load_json(p, f"delete it and its shard {p.with_suffix('.safetensors').name} and "
                                       f"{_REGENERATE}"), p) for p in paths]
    return sorted(recs, key=lambda r: r["indices"][0])


def record_path(root: str | Path, rec: dict[str, Any]) -> Path:
    return (cache_path(root) / SHARDS / rec["file"]).with_suffix(".json")


def check_identity(root: str | Path, records: Iterable[dict[str, Any]], config: dict[str, Any]) -> None:
    """Every record must come from the teacher ``config`` (records are the truth, not the manifest)."""
    for rec in records:
        if rec["config"] != config:
            diff = "; ".join(f"{k}: cache {a!r}, now {b!r}" for k, (a, b) in _diff(rec["config"], config).items())
            raise ValueError(f"{record_path(root, rec)} holds clips of another teacher config ({diff}); one cache "
                             f"holds one teacher's clips: resume with the cache's config, write to a new output_dir, "
                             f"or delete the foreign shards (their .json records and .safetensors files)")


def sha256_file(path: Path, progress: tqdm | None = None) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
            if progress is not None:
                progress.update(len(block))
    return digest.hexdigest()


def shard_problem(root: str | Path, rec: dict[str, Any], progress: tqdm | None = None) -> str | None:
    """None when the record's shard is present with its recorded size and sha256, else what is wrong."""
    try:
        path = inside(cache_path(root), SHARDS, rec["file"])
    except ValueError as err:
        return f"not read: {err}"
    if not path.is_file():
        return "missing"
    size = path.stat().st_size
    if size != rec["bytes"]:
        return f"truncated or overwritten ({size} bytes, its record says {rec['bytes']})"
    digest = sha256_file(path, progress)
    if digest != rec["sha256"]:
        return f"corrupt (checksum mismatch: sha256 {digest} != {rec['sha256']} in its record)"
    return shard_layout_problem(path, rec) if isinstance(path, Path) else None


def verify_shards(root: str | Path, records: list[dict[str, Any]], progress: bool | None = None,
                  ) -> dict[str, str]:
    """{shard file: problem} for every record whose shard is missing, truncated or fails its sha256.
    ``progress``: a tqdm bar over the bytes read (None: only on a terminal)."""
    bad = {}
    with tqdm(total=sum(r["bytes"] for r in records), unit="B", unit_scale=True, desc="verifying shards",
              disable=None if progress is None else not progress, leave=False) as bar:
        for rec in records:
            problem = shard_problem(root, rec, bar)
            if problem is not None:
                bad[rec["file"]] = problem
    return bad


def index_records(records: Iterable[dict[str, Any]]) -> dict[int, tuple[dict[str, Any], int]]:
    """clip index -> (shard record, slot); two shards holding one index is an error, never a silent pick."""
    where: dict[int, tuple[dict[str, Any], int]] = {}
    for rec in records:
        for slot, idx in enumerate(rec["indices"]):
            if idx in where:
                raise ValueError(f"clip {idx} is stored twice, in {where[idx][0]['file']} and {rec['file']}; two "
                                 "runs wrote into one cache at once. Delete one shard and its .json record")
            where[idx] = (rec, slot)
    return where


def to_ranges(indices: Iterable[int]) -> list[list[int]]:
    """Sorted [start, stop) runs of a set of ints (compact JSON for large requests)."""
    out: list[list[int]] = []
    for i in sorted(set(indices)):
        if out and out[-1][1] == i:
            out[-1][1] += 1
        else:
            out.append([i, i + 1])
    return out


def from_ranges(ranges: Iterable[Iterable[int]]) -> list[int]:
    return [i for a, b in ranges for i in range(a, b)]


def fields_of(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{field: {shape, dtype}} of a clip's stored arrays (``Clip.to_numpy_dict`` output): what every
    clip of a cache must share."""
    return {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in record.items() if isinstance(v, np.ndarray)}


def _diff(a: Any, b: Any, prefix: str = "") -> dict[str, tuple[Any, Any]]:
    """Leaves that differ between two JSON-like configs, by dotted key."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = {}
        for k in sorted(set(a) | set(b)):
            out.update(_diff(a.get(k), b.get(k), f"{prefix}{k}."))
        return out
    return {} if a == b else {prefix.rstrip("."): (a, b)}


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
