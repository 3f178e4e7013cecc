"""`lyra generate`'s camera paths: nerfstudio camera_path.json converted to OpenCV, lyra's own JSON, magnitudes."""

import json
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import math

import pytest
import torch

from lyra.inference.paths import load_camera_path, parse_magnitude
from lyra.render.camera_path import CameraPath, load_nerfstudio_camera_path
from lyra.render.cameras import intrinsics_from_fov, look_at


def test_nerfstudio_camera_path_is_converted_to_opencv(tmp_path):
    # An OpenGL camera 5 units along +z looking back at the origin (its -z axis), y up: identity rotation.
    gl = [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 5, 0, 0, 0, 1]
    turned = [0, 0, 1, 5, 0, 1, 0, 0, -1, 0, 0, 0, 0, 0, 0, 1]  # 90 degrees about y, at x = 5 looking along -x
    f = tmp_path / "camera_path.json"
    f.write_text(json.dumps({"camera_type": "perspective", "render_height": 48, "render_width": 64, "seconds": 2,
                             "fps": 1, "camera_path": [{"camera_to_world": gl, "fov": 90, "aspect": 4 / 3},
                                                       {"camera_to_world": turned, "fov": 60, "aspect": 4 / 3}]}))
    path = load_nerfstudio_camera_path(f)
    assert (path.width, path.height, len(path)) == (64, 48, 2) and path.time is None
    c = path.c2w[0]
    assert torch.allclose(c[:3, 3], torch.tensor([0.0, 0.0, 5.0]))
    assert torch.allclose(c[:3, 2], torch.tensor([0.0, 0.0, -1.0]))  # OpenCV forward = OpenGL -z
    assert torch.allclose(c[:3, 1], torch.tensor([0.0, -1.0, 0.0]))  # OpenCV down = OpenGL -y
    assert torch.allclose(c[:3, 0], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.allclose(path.c2w[1][:3, 2], torch.tensor([-1.0, 0.0, 0.0]), atol=1e-6)  # looks back at the origin
    # fov is vertical: focal = (H / 2) / tan(fov / 2); principal point at the centre
    assert path.K[0, 0, 0] == pytest.approx(24.0) and path.K[0, 1, 1] == pytest.approx(24.0)
    assert path.K[1, 1, 1] == pytest.approx(24.0 / math.tan(math.radians(30)), rel=1e-5)
    assert path.K[0, 0, 2] == 32.0 and path.K[0, 1, 2] == 24.0
    # the origin projects to the image centre of the first camera
    p = torch.linalg.inv(c) @ torch.tensor([0.0, 0.0, 0.0, 1.0])
    assert p[2] == pytest.approx(5.0) and p[0].abs() < 1e-6 and p[1].abs() < 1e-6
    assert torch.equal(load_camera_path(f).c2w, path.c2w)  # recognised from the content
    # render_time on every camera becomes the path's time
    d = json.loads(f.read_text())
    for cam, t in zip(d["camera_path"], (0.0, 0.5)):
        cam["render_time"] = t
    f.write_text(json.dumps(d))
    assert torch.equal(load_camera_path(f).time, torch.tensor([0.0, 0.5]))


@pytest.mark.parametrize("change, match", [
    (lambda d: d.update(camera_type="fisheye"), "fisheye"),
    (lambda d: d["camera_path"][0].update(fov=0), "fov"),
    (lambda d: d["camera_path"][0].update(camera_to_world=[1, 0, 0]), "16 numbers"),
    (lambda d: d["camera_path"][0].update(camera_to_world=[2, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]), "rigid"),
    (lambda d: d.pop("render_width"), "render_width"),
    (lambda d: d.update(camera_path=[]), "camera_path"),
])
def test_bad_nerfstudio_paths_are_named(tmp_path, change, match):
    d = {"render_height": 8, "render_width": 8,
         "camera_path": [{"camera_to_world": [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1], "fov": 50}]}
    change(d)
    f = tmp_path / "ns.json"
    f.write_text(json.dumps(d))
    with pytest.raises(ValueError, match=match) as err:
        load_camera_path(f)
    assert str(f) in str(err.value)


def test_camera_path_formats_and_magnitudes(tmp_path):
    path = CameraPath(look_at(torch.tensor([[0.0, 0, -3], [1.0, 0, -3]]), torch.zeros(2, 3)),
                      intrinsics_from_fov(60, 16, 16), 16, 16, torch.tensor([0.0, 1.0]))
    path.save(tmp_path / "p.json")
    assert torch.equal(load_camera_path(tmp_path / "p.json").c2w, path.c2w)
    (tmp_path / "other.json").write_text(json.dumps({"frames": []}))
    with pytest.raises(ValueError, match="unknown camera path format"):
        load_camera_path(tmp_path / "other.json")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_camera_path(tmp_path / "nowhere.json")
    assert parse_magnitude("0.3") == 0.3 and parse_magnitude(None) is None
    assert parse_magnitude("left=0.3, zoom-in=0.5") == {"left": 0.3, "zoom_in": 0.5}
    for bad, match in (("sideways=0.2", "unknown trajectories"), ("-1", ">= 0"), ("left=x", "name=number"),
                       ("big", "a number")):
        with pytest.raises(ValueError, match=match):
            parse_magnitude(bad)
