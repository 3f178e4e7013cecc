"""`lyra render` on dynamic scene folders: camera and time together (default), --time-sweep (camera
fixed, time runs), --bullet-time T (time fixed, camera moves), the path's own times, and nerfstudio
camera paths."""

import json

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from lyra.render.camera_path import CameraPath
from lyra.render.cameras import intrinsics_from_fov, look_at
from lyra.render.formats import save_dynamic_scene
from lyra.render.gaussians import Gaussians
from lyra.render.ply import save_ply
from lyra.tools import main

COLOURS = {0.0: (1.0, 0.0, 0.0), 0.5: (0.0, 1.0, 0.0), 1.0: (0.0, 0.0, 1.0)}  # red, green, blue by time


def _blob(colour, x=0.0, n=300, seed=0):  # an opaque ball of one colour around (x, -0.5, 0)
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g) * 0.12 + torch.tensor([x, -0.5, 0.0])
    return Gaussians(means, torch.tensor([1.0, 0, 0, 0]).expand(n, 4).clone(), torch.full((n, 3), 0.06),
                     torch.full((n,), 0.95), torch.tensor(colour).expand(n, 3).clone())


@pytest.fixture
def scene(tmp_path):
    """Three time steps, a ball that changes colour (and for t=1 also moves to x=0.4)."""
    folder = tmp_path / "scene"
    save_dynamic_scene(folder, [_blob(COLOURS[0.0]), _blob(COLOURS[0.5]), _blob(COLOURS[1.0], x=0.4)], [0.0, 0.5, 1.0])
    return folder


def _video(path) -> np.ndarray:
    return iio.imread(path).astype(float) / 255


def _colour(frame) -> str:  # which of red / green / blue dominates the non-white pixels
    ink = frame[(frame.sum(-1) < 2.4)]
    assert len(ink) > 10, "the ball is not in view"
    return "rgb"[int(np.argmax(ink.mean(0)))]


def _centre_x(frame) -> float:  # mean column of the non-white pixels
    ys, xs = np.nonzero(frame.sum(-1) < 2.4)
    return float(xs.mean())


def _path(tmp_path, n=5, time=None):
    eyes = torch.stack([torch.tensor([0.3 * (i - (n - 1) / 2), -0.8, -3.0]) for i in range(n)])
    # a sideways track, every camera looking straight ahead (+z): the ball drifts across the image
    p = CameraPath(look_at(eyes, eyes + torch.tensor([0.0, 0.0, 3.0])), intrinsics_from_fov(50, 32, 32), 32, 32, time)
    p.save(tmp_path / "path.json")
    return tmp_path / "path.json"


def test_default_plays_camera_and_time_together(scene, tmp_path):
    out = tmp_path / "both.mp4"
    assert main(["render", "--ply", str(scene), "--camera-path", str(_path(tmp_path)), "--out", str(out)]) == 0
    v = _video(out)
    assert v.shape == (5, 32, 32, 3)
    # time 0 -> 1 over the frames (the path has no times); each frame shows the nearest set (a tie, 0.75,
    # goes to the earlier one): red, red, green, green, blue
    assert [_colour(f) for f in v] == ["r", "r", "g", "g", "b"]


def test_the_paths_own_times_are_used(scene, tmp_path):
    path = _path(tmp_path, time=torch.tensor([1.0, 1.0, 0.5, 0.0, 0.0]))
    out = tmp_path / "timed.mp4"
    main(["render", "--ply", str(scene), "--camera-path", str(path), "--out", str(out)])
    assert [_colour(f) for f in _video(out)] == ["b", "b", "g", "r", "r"]


def test_time_sweep_keeps_the_camera_still(scene, tmp_path):
    out = tmp_path / "sweep.mp4"
    main(["render", "--ply", str(scene), "--camera-path", str(_path(tmp_path)), "--time-sweep", "--frames", "3",
          "--out", str(out)])
    v = _video(out)
    assert [_colour(f) for f in v] == ["r", "g", "b"]
    # red and green balls sit at the same place: a fixed camera sees them at the same pixels
    assert abs(_centre_x(v[0]) - _centre_x(v[1])) < 0.5
    assert _centre_x(v[2]) - _centre_x(v[0]) > 2  # the blue ball moved right (x = 0.4)


def test_bullet_time_freezes_time_while_the_camera_moves(scene, tmp_path):
    for t, colour in ((0.0, "r"), (0.4, "g"), (1.0, "b")):
        out = tmp_path / f"bullet{t}.mp4"
        main(["render", "--ply", str(scene), "--camera-path", str(_path(tmp_path)), "--bullet-time", str(t),
              "--out", str(out)])
        v = _video(out)
        assert [_colour(f) for f in v] == [colour] * 5
    # the camera moves left -> right: the ball drifts the other way across the image
    assert _centre_x(v[0]) - _centre_x(v[-1]) > 2


def test_nerfstudio_path_renders_a_dynamic_scene(scene, tmp_path):
    # two OpenGL cameras at z = -3 looking towards +z (OpenGL looks along -z: a half turn about y)
    cams = []
    for x, t in ((-0.2, 0.0), (0.2, 1.0)):
        cams.append({"camera_to_world": [-1, 0, 0, x, 0, 1, 0, -0.5, 0, 0, -1, -3, 0, 0, 0, 1], "fov": 40,
                     "render_time": t})
    ns = tmp_path / "camera_path.json"
    ns.write_text(json.dumps({"camera_type": "perspective", "render_height": 32, "render_width": 32,
                              "camera_path": cams}))
    out = tmp_path / "ns.mp4"
    main(["render", "--ply", str(scene), "--camera-path", str(ns), "--out", str(out)])
    v = _video(out)
    assert v.shape == (2, 32, 32, 3) and [_colour(f) for f in v] == ["r", "b"]


def test_time_modes_need_a_dynamic_folder(scene, tmp_path, capsys):
    save_ply(tmp_path / "one.ply", _blob(COLOURS[0.0]))
    for flags in (["--time-sweep"], ["--bullet-time", "0.5"]):
        with pytest.raises(SystemExit) as e:
            main(["render", "--ply", str(tmp_path / "one.ply"), *flags, "--out", str(tmp_path / "x.mp4")])
        assert e.value.code == 2 and "dynamic scene folder" in capsys.readouterr().err
    for flags, match in ((["--time-sweep", "--bullet-time", "0.5"], "not both"), (["--bullet-time", "2"], "[0, 1]")):
        with pytest.raises(SystemExit):
            main(["render", "--ply", str(scene), *flags, "--out", str(tmp_path / "x.mp4")])
        assert match in capsys.readouterr().err
    (tmp_path / "notascene").mkdir()
    with pytest.raises(SystemExit):
        main(["render", "--ply", str(tmp_path / "notascene"), "--out", str(tmp_path / "x.mp4")])
    assert "index.json" in capsys.readouterr().err
    assert not (tmp_path / "x.mp4").exists()
