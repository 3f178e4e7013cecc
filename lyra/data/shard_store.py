"""The clip cache's files (lyra.data.shards has the layout): paths local or behind fsspec URLs, the
manifest and the shard records, checksums, index ranges. ``ShardWriter`` / ``ShardReader`` build on it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterable

import fsspec
import numpy as np
from fsspec.implementations.local import LocalFileSystem
from tqdm import tqdm

from lyra.data.shard_checks import NUMPY_DTYPES as _NUMPY_DTYPES
from lyra.data.shard_checks import check_requested, read_header, shard_layout_problem
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
