"""Fuzzing the readers (issue 22): random truncations, byte flips and field edits of valid PLY, .splat,
.spz, camera-path (lyra and nerfstudio), dynamic-index, .npz and clip-cache manifest files.

Asserted, for every mutated file: either a valid result, or an expected error (a ValueError /
TypeError / OSError family) whose message names the file or its folder; never another exception (an
IndexError, a RecursionError, a MemoryError...). And the whole run's peak memory (``ru_maxrss`` of a
fresh interpreter, after imports and the valid files) grows by less than ``RSS_BOUND_MB``: no mutated
file allocates what it claims. Fixed seed, a modest number of cases, so it runs in seconds.
"""

from __future__ import annotations

import gzip
import io
import json
import random
import resource
import subprocess
import sys
import zipfile
from pathlib import Path

CASES_PER_FORMAT = 30
RSS_BOUND_MB = 300
HOSTILE_VALUES = [10**12, -1, 0, 1e308, float("nan"), "12", True, None, [], {}, [[[[[]]]]], 64.5, -(10**30)]


def _gaussians(n: int, seed: int = 0):
    import torch

    from lyra.render.gaussians import Gaussians

    g = torch.Generator().manual_seed(seed)
    return Gaussians(torch.randn(n, 3, generator=g), torch.randn(n, 4, generator=g), torch.rand(n, 3, generator=g) * 0.1,
                     torch.rand(n, generator=g), torch.rand(n, 3, generator=g))


def _valid_files(root: Path) -> dict[str, Path]:
    """One valid file of every format the readers take."""
    import numpy as np
    import torch

    from lyra.data.shards import ShardWriter
    from lyra.render.camera_path import CameraPath
    from lyra.render.cameras import intrinsics_from_fov, look_at
    from lyra.render.formats import save_dynamic_scene, save_scene

    files = {}
    for suffix in (".ply", ".splat", ".spz"):
        files[suffix] = root / f"scene{suffix}"
        save_scene(files[suffix], _gaussians(200))
    eye = torch.tensor([[0.0, 0, -3], [0.5, 0, -3], [1.0, 0, -3]])
    c2w = look_at(eye, torch.zeros(3, 3))
    K = intrinsics_from_fov(60, 64, 48)
    files["path.json"] = root / "path.json"
    CameraPath(c2w, K, 64, 48, torch.tensor([0.0, 0.5, 1.0])).save(files["path.json"])
    files["nerfstudio.json"] = root / "nerfstudio.json"
    files["nerfstudio.json"].write_text(json.dumps({"render_width": 64, "render_height": 48, "camera_path": [
        {"camera_to_world": torch.eye(4).reshape(-1).tolist(), "fov": 50.0, "render_time": t} for t in (0.0, 1.0)]}))
    save_dynamic_scene(root / "dyn", [_gaussians(50, s) for s in range(2)], [0.0, 1.0])
    files["index.json"] = root / "dyn" / "index.json"
    files["cams.npz"] = root / "cams.npz"
    np.savez(files["cams.npz"], c2w=c2w.double().numpy(), K=K.expand(3, 3, 3).numpy(), depth=np.full((3, 48, 64), 3.0))
    writer = ShardWriter(root / "cache", 2)
    writer.prepare({"teacher": "fuzz"}, requested=range(4))
    writer.write_manifest()
    files["manifest.json"] = root / "cache" / "manifest.json"
    return files


def _read(kind: str, path: Path):
    from lyra.data.shard_store import read_manifest
    from lyra.inference.paths import load_camera_path
    from lyra.inference.video import read_cameras
    from lyra.render.formats import load_dynamic_scene, load_scene

    if kind in (".ply", ".splat", ".spz"):
        return load_scene(path)
    if kind in ("path.json", "nerfstudio.json"):
        return load_camera_path(path)
    if kind == "index.json":
        return load_dynamic_scene(path.parent)
    if kind == "cams.npz":
        return read_cameras(path)
    return read_manifest(path.parent)


def _edit_json(data, rng: random.Random):
    """``data`` with one value somewhere in it replaced by a hostile one."""
    spots, stack = [], [(data, None, None)]
    while stack:
        node, parent, key = stack.pop()
        if parent is not None:
            spots.append((parent, key))
        if isinstance(node, dict):
            stack.extend((v, node, k) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((v, node, i) for i, v in enumerate(node))
    parent, key = rng.choice(spots)
    parent[key] = rng.choice(HOSTILE_VALUES)
    return data


def _mutate(kind: str, blob: bytes, rng: random.Random) -> bytes:
    choice = rng.random()
    if choice < 0.3:  # cut short anywhere
        return blob[:rng.randrange(len(blob))]
    if kind.endswith(".json") and choice < 0.8:
        return json.dumps(_edit_json(json.loads(blob), rng)).encode()
    if kind == ".spz" and choice < 0.8:  # edit the point count or the SH degree inside the gzip stream
        raw = bytearray(gzip.decompress(blob))
        offset, size = rng.choice([(8, 4), (12, 1), (13, 1)])
        raw[offset:offset + size] = rng.getrandbits(8 * size).to_bytes(size, "little")
        return gzip.compress(bytes(raw))
    if kind == ".ply" and choice < 0.8:  # edit the vertex count in the header
        return blob.replace(b"element vertex 200", f"element vertex {rng.choice([0, 201, 10**6, 10**12, -7])}".encode())
    if kind == ".npz" and choice < 0.8:  # edit a shape in an .npy header
        out, src = io.BytesIO(), zipfile.ZipFile(io.BytesIO(blob))
        with zipfile.ZipFile(out, "w") as dst:
            for info in src.infolist():
                data = src.read(info)
                if rng.random() < 0.5:
                    data = data.replace(b"(3, ", f"({rng.choice([0, 10**9, 10**13])}, ".encode(), 1)
                dst.writestr(info.filename, data)
        return out.getvalue()
    flipped = bytearray(blob)  # flip a few bytes anywhere
    for _ in range(rng.randint(1, 8)):
        flipped[rng.randrange(len(flipped))] = rng.getrandbits(8)
    return bytes(flipped)


def fuzz(root: Path, seed: int) -> dict:
    from lyra.utils.errors import EXPECTED_ERRORS

    files = _valid_files(root)
    for kind, path in files.items():
        _read(kind, path)  # every valid file reads
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rng, problems, outcomes = random.Random(seed), [], {"valid": 0, "error": 0}
    for kind, path in files.items():
        valid = path.read_bytes()
        for case in range(CASES_PER_FORMAT):
            path.write_bytes(_mutate(kind, valid, rng))
            try:
                _read(kind, path)
                outcomes["valid"] += 1
            except EXPECTED_ERRORS as err:
                outcomes["error"] += 1
                if path.name not in str(err) and path.parent.name not in str(err):
                    problems.append(f"{kind} case {case}: {type(err).__name__} does not name the file: {err}")
            except Exception as err:  # noqa: BLE001  (what this test is looking for)
                problems.append(f"{kind} case {case}: unexpected {type(err).__name__}: {str(err)[:300]}")
        path.write_bytes(valid)
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline) / 1024
    return {"problems": problems, "outcomes": outcomes, "rss_growth_mb": grown}


def test_mutated_files_give_a_clear_error_or_a_valid_result_with_bounded_memory(tmp_path):
    done = subprocess.run([sys.executable, __file__, str(tmp_path), "0"], capture_output=True, text=True, timeout=600,
                          env={"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin",
                               "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert not report["problems"], "\n".join(report["problems"][:20])
    assert report["outcomes"]["error"] > CASES_PER_FORMAT  # the mutations do reach the readers' checks
    assert report["rss_growth_mb"] < RSS_BOUND_MB, report


if __name__ == "__main__":
    print(json.dumps(fuzz(Path(sys.argv[1]), int(sys.argv[2]))))
