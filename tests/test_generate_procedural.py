"""`lyra generate --procedural` (CPU, no weights) with a decoder a `lightning fit` run left, and `lightning
predict` writing the same scene; the output folder's layout, progress and camera paths."""

import json
import os
import re

os.environ["HF_HUB_OFFLINE"] = "1"


import imageio.v3 as iio
import numpy as np
import pytest
import torch
from conftest import CONFIGS
from generate_fixtures import (
    BODY,
    FAST,
    STANDARD_PLY,
    TINY_CLIP,
    C,
    run_lyra,
    scene_bytes,
)
from plyfile import PlyData

from lyra.cli import main as lightning_main
from lyra.data.procedural import ProceduralWorld
from lyra.render.camera_path import CameraPath
from lyra.render.cameras import intrinsics_from_fov, look_at
from lyra.render.formats import read_dynamic_index
from lyra.render.ply import load_ply


def test_generate_procedural_with_the_trained_decoder(trained_run, tmp_path, capsys):
    out = tmp_path / "scene0"
    run_lyra(["generate", "--procedural", "0", "--decoder", str(trained_run), "--out", str(out), *FAST])
    printed = capsys.readouterr().out
    assert "peak memory: CPU RSS" in printed and f"lyra view {out / 'scene'}" in printed
    meta = json.loads((out / "meta.json").read_text())
    # the decoder is the run's final checkpoint; clip size and teacher from the decoder's own record
    decoder = meta["weights"]["decoder"]
    assert decoder["path"].endswith("final.ckpt") and decoder["kind"] == "checkpoint"
    assert decoder["sizes_from"] == "the decoder's record of its training clips"
    assert decoder["trained_on"]["num_frames"] == 5 and len(decoder["trained_on"]["generator"]["trajectories"]) == 3
    assert meta["clip"] == {**meta["clip"], "num_views": 3, "num_frames": 5, "height": 32, "width": 32}
    assert meta["clip"]["trajectories"] == ["left", "right", "up"]  # the training teacher's three views
    assert meta["times"] == [0.0, 0.25, 0.5, 0.75, 1.0] and meta["seed"] == 0
    assert set(meta["timings"]) == {"teacher", "decode", "export", "render"}
    assert all(s["seconds"] > 0 and s["cpu_peak_rss_mb"] > 100 for s in meta["timings"].values())
    assert meta["peak_memory"]["cpu_peak_rss_mb"] >= max(s["cpu_peak_rss_mb"] for s in meta["timings"].values())
    assert set(meta["fidelity_psnr"]) == {"left", "right", "up"}
    # the scene: one standard 3DGS PLY per time + index.json
    times, files = read_dynamic_index(out / "scene")
    assert times == meta["times"] and [f.name for f in files] == [f"t{i:03d}.ply" for i in range(5)]
    ply = PlyData.read(str(files[2]))
    assert [p.name for p in ply["vertex"].properties] == STANDARD_PLY
    # configs/dynamic.yaml's layout: 3 views x 2 latent frames (first and last) x 4 x 4 latent pixels x 4 x 4 Gaussians,
    # then the input frame's border (input_border 0.1875: 6 px on every side at 32 px) and one per pixel of
    # the input video's frame at that time
    border = (32 + 2 * 6) ** 2 - 32 * 32
    assert ply["vertex"].count == 3 * 2 * 4 * 4 * 4 * 4 + border + 32 * 32 == meta["num_gaussians"]
    # videos, sheet, camera paths
    assert iio.imread(out / "orbit.mp4").shape == (4, 32, 32, 3)
    assert iio.imread(out / "inputs.mp4").shape == (5, 3 * 32, 2 * 32, 3)  # rows: views; teacher | render
    assert iio.imread(out / "inputs.png").shape == (3 * 34 + 2, 8 * 34 + 2, 3)  # 4 frames x (teacher, render)
    cams = sorted(p.name for p in (out / "cameras").iterdir())
    assert cams == ["00_left.json", "01_right.json", "02_up.json", "orbit.json"]
    orbit = CameraPath.load(out / "cameras" / "orbit.json")
    assert len(orbit) == 4 and torch.equal(orbit.time, torch.linspace(0, 1, 4))
    # it renders (the scene in view, not an empty white frame)
    first = iio.imread(out / "inputs.mp4")[0, :32]
    assert np.abs(first[:, 32:].astype(float) - 255).mean() > 3
    # same seed, same bytes; nothing else left next to the output
    again = tmp_path / "again"
    run_lyra(["generate", "--procedural", "0", "--decoder", str(trained_run), "--out", str(again), *FAST])
    assert scene_bytes(again) == scene_bytes(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again", "scene0"]
    # another scene seed, another scene
    other = tmp_path / "other"
    run_lyra(["generate", "--procedural", "1", "--decoder", str(trained_run), "--out", str(other), *FAST])
    assert scene_bytes(other) != scene_bytes(out)


def test_generate_shows_a_progress_bar_for_each_long_stage(trained_run, tmp_path, capsys):
    """Without --quiet every long stage of a procedural run draws a tqdm bar on stderr (bars clear
    themselves when done); --quiet draws none."""
    from lyra.inference.progress import set_progress

    try:
        run_lyra(["generate", "--procedural", "0", "--decoder", str(trained_run), "--out", str(tmp_path / "loud"),
              "--orbit-frames", "4"])
    finally:
        set_progress(True)
    err = capsys.readouterr().err
    for stage in ("teacher: ray-trace views", "teacher: encode", "teacher: decode", "orbit"):
        assert re.search(rf"{re.escape(stage)}: +\d+%\|", err), f"no progress bar for {stage!r}"
    run_lyra(["generate", "--procedural", "0", "--decoder", str(trained_run), "--out", str(tmp_path / "quiet"), *FAST])
    assert "%|" not in capsys.readouterr().err


def test_lightning_predict_writes_the_same_scene_as_generate(trained_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ckpt = next(trained_run.rglob("final.ckpt"))
    lightning_main(["predict", "--config", str(CONFIGS / "infer" / "procedural.yaml"), *TINY_CLIP, *BODY,
                    "--data.init_args.teacher.init_args.codec.init_args.latent_channels", str(C),
                    "--data.init_args.teacher.init_args.generator.init_args.trajectories", "[left, right, up]",
                    "--trainer.callbacks.init_args.output_dir", str(tmp_path / "predict"),
                    "--trainer.callbacks.init_args.orbit_frames", "4",
                    "--trainer.enable_progress_bar", "false", "--ckpt_path", str(ckpt)])
    out = tmp_path / "predict" / "scene_000000"
    meta = json.loads((out / "meta.json").read_text())
    assert meta["weights"]["checkpoint"] == str(ckpt) and meta["times"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert {"orbit.mp4", "inputs.mp4", "inputs.png", "cameras", "scene"} <= {p.name for p in out.iterdir()}
    run_lyra(["generate", "--procedural", "0", "--decoder", str(ckpt), "--out", str(tmp_path / "cli"), *FAST])
    assert scene_bytes(out) == scene_bytes(tmp_path / "cli")  # one path: same teacher, same predict_step


def test_generate_static_along_camera_paths_with_magnitude(models, tmp_path):
    world = ProceduralWorld(2)
    eye = world.center + torch.tensor([0.0, -1.0, -4.0])
    lyra_path = tmp_path / "path.json"
    CameraPath(look_at(torch.stack([eye, eye + torch.tensor([1.0, 0, 0])]), world.center.expand(2, 3)),
               intrinsics_from_fov(60, 32, 32), 32, 32).save(lyra_path)
    ns = tmp_path / "camera_path.json"  # a hand-written nerfstudio path: 2 cameras, 0.5 units apart along x
    ns.write_text(json.dumps({"render_height": 24, "render_width": 32, "camera_path": [
        {"camera_to_world": [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1], "fov": 50},
        {"camera_to_world": [1, 0, 0, 0.5, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1], "fov": 50}]}))
    out = tmp_path / "out"
    run_lyra(["generate", "--procedural", "2", "--decoder", str(models / "static"), "--frames", "5", "--size", "32",
          "--trajectories", "left", "--magnitude", "left=0.1", "--camera-path", str(lyra_path),
          "--camera-path", str(ns), "--anchor", "--path-scale", "0.5", "--out", str(out), *FAST])
    g = load_ply(out / "scene.ply")
    assert g.num_gaussians == 3 * 5 * 4 * 4
    meta = json.loads((out / "meta.json").read_text())
    assert meta["clip"]["trajectories"] == ["left", "path_path", "path_camera_path"]  # files by name
    assert meta["weights"]["decoder"]["kind"] == "pretrained" and meta["times"] is None
    left = CameraPath.load(out / "cameras" / "00_left.json")
    travel = float((left.c2w[-1, :3, 3] - left.c2w[0, :3, 3]).norm())
    assert travel == pytest.approx(0.1 * world.scene_scale, rel=1e-4)
    anchored = CameraPath.load(out / "cameras" / "02_path_camera_path.json")
    assert torch.allclose(anchored.c2w[0], left.c2w[0], atol=1e-5)  # attached to the start view
    moved = float((anchored.c2w[-1, :3, 3] - anchored.c2w[0, :3, 3]).norm())
    assert moved == pytest.approx(0.5 * 0.5 * world.scene_scale, rel=1e-4)
