"""``lyra cache``: check a clip cache written by ``lightning predict`` (``ClipWriter``).

    lyra cache verify DIR

``verify`` reads every shard and checks its size and sha256 against its record (with a progress
bar), checks that every record is well formed and comes from the manifest's teacher, and lists
the bad shards with the clips they hold. Exit status: 0 when every shard is sound, 1 when any is
bad (rerunning the same ``lightning predict`` command drops the bad shards and regenerates their
clips), 2 when DIR is not a readable cache (the message says why).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lyra.data.shard_store import (
    MANIFEST,
    SHARDS,
    check_identity,
    from_ranges,
    index_records,
    read_manifest,
    read_records,
    verify_shards,
)


def add_cache_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``lyra cache ...`` on the ``lyra`` command's subparsers."""
    cache = sub.add_parser("cache", help="check a clip cache (the output_dir of `lightning predict`)")
    commands = cache.add_subparsers(dest="cache_command", required=True)
    v = commands.add_parser("verify", help="check every shard's sha256; list bad shards and their clips")
    v.add_argument("dir", help="the cache directory (holds manifest.json and shards/)")
    v.add_argument("--no-progress", action="store_true", help="no progress bar")
    v.set_defaults(func=cmd_verify)


def cmd_verify(args: argparse.Namespace) -> None:
    root = Path(args.dir)
    if not (root / SHARDS).is_dir():
        raise FileNotFoundError(f"{root} is not a lyra clip cache (no {SHARDS}/ folder); write one with "
                                "`lightning predict --config configs/generate.yaml`")
    records = read_records(root)  # a malformed record, or one naming a file elsewhere, is an error here
    manifest = read_manifest(root) if (root / MANIFEST).is_file() else None
    if manifest is not None:
        check_identity(root, records, manifest["config"])
    elif records:
        check_identity(root, records, records[0]["config"])
        print(f"{root}: no {MANIFEST} (rerun the same `lightning predict` command to rebuild it); checking the "
              "shards its records list")
    stored = index_records(records)
    bad = verify_shards(root, records, progress=not args.no_progress)
    for rec in records:
        if rec["file"] in bad:
            print(f"BAD {root / SHARDS / rec['file']}: {bad[rec['file']]}; clips {rec['indices']}")
    missing = sorted(set(from_ranges(manifest["requested"])) - stored.keys()) if manifest else []
    if missing:
        print(f"{root}: {len(missing)} requested clips are not generated yet (first: {missing[:5]}); rerun the same "
              "`lightning predict` command to finish the cache")
    if bad:
        clips = sorted(i for rec in records if rec["file"] in bad for i in rec["indices"])
        print(f"{root}: {len(bad)} of {len(records)} shards bad; bad clips: {clips}. Fix: rerun the same "
              f"`lightning predict` command that wrote {root}: it drops the bad shards and regenerates their clips")
        raise SystemExit(1)
    print(f"{root}: ok, all {len(records)} shards ({len(stored)} clips) match their sha256 checksums")
