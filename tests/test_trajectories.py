"""Lyra trajectory families, orbit, pose interpolation and the CameraPath JSON format."""

import json
import math
import pathlib

import pytest
import torch

from lyra.render.camera_path import CameraPath
from lyra.render.cameras import (
    WORLD_UP,
    c2w_to_viewmat,
    intrinsics_from_fov,
    look_at,
    world_to_pixels,
)
from lyra.render.rotations import quat_to_rotmat
from lyra.render.trajectories import (
    LYRA_TRAJECTORIES,
    MAGNITUDE_RANGES,
    SPIRAL_RADII,
    interpolate_poses,
    make_trajectory,
    orbit,
)

CENTER = torch.tensor([0.3, -0.4, 2.0])
EYE0 = torch.tensor([-1.0, -1.5, -1.5])
START = look_at(EYE0, CENTER)
SCALE = 2.5
UP = torch.tensor(WORLD_UP, dtype=torch.float64)


def rotation_angle(Ra, Rb):  # [..., 3, 3] x2 -> [...] radians between rotations
    cos = ((Ra.transpose(-1, -2) @ Rb).diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2
    return torch.acos(cos.clamp(-1, 1))


def test_six_families_are_the_papers():
    assert set(LYRA_TRAJECTORIES) == {"left", "right", "up", "zoom_in", "zoom_out", "spiral"}


@pytest.mark.parametrize("num_frames", [1, 2, 17, 121])
@pytest.mark.parametrize("kind", LYRA_TRAJECTORIES)
def test_frame_zero_is_start_and_camera_faces_centre(kind, num_frames):
    c2w = make_trajectory(kind, START, CENTER, num_frames, scene_scale=SCALE,
                          generator=torch.Generator().manual_seed(0))
    assert c2w.shape == (num_frames, 4, 4) and c2w.dtype == torch.float32
    assert torch.allclose(c2w[0], START, atol=1e-5)
    R = c2w[:, :3, :3].double()
    assert torch.allclose(R.transpose(-1, -2) @ R, torch.eye(3, dtype=torch.float64).expand_as(R), atol=1e-5)
    assert torch.allclose(torch.linalg.det(R), torch.ones(num_frames, dtype=torch.float64), atol=1e-5)
    to_c = CENTER.double() - c2w[:, :3, 3].double()
    assert torch.allclose(R[..., 2], to_c / to_c.norm(dim=-1, keepdim=True), atol=1e-5)  # z points at the centre
    assert ((R[..., 1] @ UP) < 0).all()  # stays upright
    K = intrinsics_from_fov(60.0, 64, 48)
    uv, depth = world_to_pixels(CENTER.expand(num_frames, 1, 3), c2w_to_viewmat(c2w), K.expand(num_frames, 3, 3))
    assert torch.allclose(uv[:, 0], torch.tensor([32.0, 24.0]).expand(num_frames, 2), atol=1e-3)
    assert (depth > 0).all()


@pytest.mark.parametrize("kind", ["left", "right", "up", "zoom_in", "zoom_out"])
def test_straight_moves_direction_and_magnitude(kind):
    x0, y0 = START[:3, 0].double(), START[:3, 1].double()
    d0 = (CENTER - EYE0).double().norm()
    lo, hi = MAGNITUDE_RANGES[kind]
    for seed in range(5):
        c2w = make_trajectory(kind, START, CENTER, 33, scene_scale=SCALE, generator=torch.Generator().manual_seed(seed))
        eye = c2w[:, :3, 3].double()
        move = eye[-1] - eye[0]
        dist_to_c = (CENTER.double() - eye).norm(dim=-1)
        assert lo * SCALE - 1e-5 <= move.norm() <= hi * SCALE + 1e-5
        unit = move / move.norm()
        if kind == "left":
            assert unit @ x0 == pytest.approx(-1.0, abs=1e-5)
        elif kind == "right":
            assert unit @ x0 == pytest.approx(1.0, abs=1e-5)
        elif kind == "up":
            assert unit @ y0 == pytest.approx(-1.0, abs=1e-5)
            assert unit @ UP > 0  # in world terms as well: the camera rises
        elif kind == "zoom_in":
            assert dist_to_c[-1] == pytest.approx((d0 - move.norm()).item(), abs=1e-5)
            assert (dist_to_c.diff() <= 1e-6).all()
        else:
            assert dist_to_c[-1] == pytest.approx((d0 + move.norm()).item(), abs=1e-5)
            assert (dist_to_c.diff() >= -1e-6).all()


def test_magnitude_is_drawn_from_the_generator_and_explicit_magnitude_wins():
    def travel(**kw):
        c2w = make_trajectory("right", START, CENTER, 9, scene_scale=SCALE, **kw)
        return (c2w[-1, :3, 3] - c2w[0, :3, 3]).norm().item()

    a = travel(generator=torch.Generator().manual_seed(1))
    assert a == travel(generator=torch.Generator().manual_seed(1))
    assert a != travel(generator=torch.Generator().manual_seed(2))
    assert travel(magnitude=0.25) == pytest.approx(0.25 * SCALE, rel=1e-5)


def test_zoom_in_never_reaches_the_centre():
    c2w = make_trajectory("zoom_in", START, CENTER, 9, scene_scale=100.0, magnitude=1.0)
    d0 = (CENTER - EYE0).norm()
    assert (CENTER - c2w[-1, :3, 3]).norm() == pytest.approx(0.1 * d0.item(), rel=1e-4)


def test_spiral_is_two_clockwise_turns_of_the_documented_ellipse():
    T = 241
    c2w = make_trajectory("spiral", START, CENTER, T, scene_scale=SCALE, magnitude=0.5)
    off = c2w[:, :3, 3].double() - EYE0.double()
    ox, oy = off @ START[:3, 0].double(), off @ START[:3, 1].double()  # screen axes of the start view (y down)
    oz = off @ START[:3, 2].double()
    rx, ry = (r * SCALE for r in SPIRAL_RADII)
    assert ox.max() == pytest.approx(rx, rel=1e-3) and ox.min() == pytest.approx(-rx, rel=1e-3)
    assert oy.max() == pytest.approx(0.0, abs=1e-5) and oy.min() == pytest.approx(-2 * ry, rel=1e-3)
    # Back on the axis after two turns, having dollied 0.5 x scale towards the centre.
    assert abs(ox[-1]) < 1e-5 and abs(oy[-1]) < 1e-5
    assert oz[-1] == pytest.approx(0.5 * SCALE, rel=1e-5)
    # Winding about the ellipse centre: +4 pi in (x right, y down) screen axes is clockwise as seen.
    ang = torch.atan2(oy + ry, ox)
    step = torch.remainder(ang.diff() + math.pi, 2 * math.pi) - math.pi
    assert step.sum().item() == pytest.approx(4 * math.pi, abs=1e-6)
    assert (step > 0).all()  # monotone: never turns back
    # Clockwise on screen: the first move goes left from the bottom of the ellipse.
    assert ox[1] < 0


@pytest.mark.parametrize("kind", LYRA_TRAJECTORIES)
def test_paths_are_smooth(kind):
    T = 121
    c2w = make_trajectory(kind, START, CENTER, T, scene_scale=SCALE, magnitude=MAGNITUDE_RANGES[kind][1])
    eye = c2w[:, :3, 3].double()
    acc = eye.diff(n=2, dim=0).norm(dim=-1)
    # Smoothstep dollies have |s''| <= 6; two spiral turns add r (4 pi)^2; per frame both scale by 1/(T-1)^2.
    bound = (6 * 0.6 + SPIRAL_RADII[0] * (4 * math.pi) ** 2) * SCALE / (T - 1) ** 2
    assert acc.max() <= bound
    R = c2w[:, :3, :3].double()
    assert rotation_angle(R[:-1], R[1:]).max() < math.radians(2.0)


def test_make_trajectory_errors():
    with pytest.raises(ValueError, match="unknown trajectory kind"):
        make_trajectory("circle", START, CENTER, 5)
    with pytest.raises(ValueError, match="num_frames"):
        make_trajectory("left", START, CENTER, 0)
    with pytest.raises(ValueError, match="scene_scale"):
        make_trajectory("left", START, CENTER, 5, scene_scale=0.0)
    with pytest.raises(ValueError, match="centre"):
        make_trajectory("left", look_at(torch.zeros(3), torch.ones(3)), torch.zeros(3), 5)
    with pytest.raises(ValueError, match=r"\[4, 4\]"):
        make_trajectory("left", START[None], CENTER, 5)


def test_orbit_circles_the_centre_from_above():
    T, radius = 24, 3.0
    c2w = orbit(CENTER, radius, T, elevation_deg=20.0).double()
    eye = c2w[:, :3, 3]
    radii = (eye - CENTER.double()).norm(dim=-1)
    assert torch.allclose(radii, torch.full((T,), radius, dtype=torch.float64), atol=1e-5)
    assert torch.allclose((eye - CENTER.double()) @ UP, torch.full((T,), radius * math.sin(math.radians(20)),
                                                                    dtype=torch.float64), atol=1e-5)
    to_c = CENTER.double() - eye
    assert torch.allclose(c2w[:, :3, 2], to_c / to_c.norm(dim=-1, keepdim=True), atol=1e-5)
    assert ((c2w[:, :3, 1] @ UP) < 0).all()
    # Equal steps, and the step after the last frame closes the loop.
    steps = torch.cat([eye.diff(dim=0), (eye[:1] - eye[-1:])]).norm(dim=-1)
    assert torch.allclose(steps, steps[0].expand(T), atol=1e-5)
    with pytest.raises(ValueError, match="radius"):
        orbit(CENTER, 0.0, 4)


def test_interpolate_poses_hits_keys_and_slerps():
    eyes = torch.tensor([[0.0, 0.0, -3.0], [2.0, -1.0, -2.0], [3.0, 0.0, 0.5]], dtype=torch.float64)
    keys = look_at(eyes, torch.zeros(3, 3, dtype=torch.float64))
    assert keys.dtype == torch.float64
    out = interpolate_poses(keys, 9)
    assert out.shape == (9, 4, 4)
    assert torch.allclose(out[[0, 4, 8]], keys, atol=1e-10)
    # Midway between keys: rotation half-way along the geodesic, position the average.
    mid = out[2]
    a, b = keys[0, :3, :3], keys[1, :3, :3]
    assert rotation_angle(a, mid[:3, :3]) == pytest.approx(rotation_angle(a, b).item() / 2, abs=1e-9)
    assert rotation_angle(mid[:3, :3], b) == pytest.approx(rotation_angle(a, b).item() / 2, abs=1e-9)
    assert torch.allclose(mid[:3, 3], (keys[0, :3, 3] + keys[1, :3, 3]) / 2, atol=1e-10)
    # Constant angular speed within a segment.
    ang = rotation_angle(out[:4, :3, :3], out[1:5, :3, :3])
    assert torch.allclose(ang, ang[0].expand(4), atol=1e-9)
    assert torch.equal(interpolate_poses(keys[:1], 3), keys[:1].expand(3, 4, 4))
    assert torch.allclose(interpolate_poses(keys, 1)[0], keys[0])
    with pytest.raises(ValueError, match="num_frames"):
        interpolate_poses(keys, 0)
    with pytest.raises(ValueError, match=r"\[K, 4, 4\]"):
        interpolate_poses(keys[0], 4)


# ---- CameraPath JSON ---------------------------------------------------------------------------------


def _path(T=5, time=True):
    c2w = make_trajectory("spiral", START, CENTER, T, magnitude=0.5)
    return CameraPath(c2w, intrinsics_from_fov(50.0, 40, 30), 40, 30, torch.linspace(0, 1, T) if time else None)


@pytest.mark.parametrize("time", [True, False])
def test_camera_path_json_round_trip(tmp_path, time):
    p = _path(time=time)
    assert p.K.shape == (5, 3, 3)  # a single K is broadcast to every frame
    p.save(tmp_path / "sub" / "path.json")
    q = CameraPath.load(tmp_path / "sub" / "path.json")
    assert torch.equal(q.c2w, p.c2w) and torch.equal(q.K, p.K)
    assert (q.width, q.height, len(q)) == (40, 30, 5)
    assert (q.time is None) == (not time)
    if time:
        assert torch.equal(q.time, p.time)
    assert json.loads((tmp_path / "sub" / "path.json").read_text())["format"] == "lyra.camera_path/1"


def test_camera_path_save_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "path.json"
    target.write_text("previous content")

    def half_write(self, text, *a, **k):
        with open(self, "w") as f:
            f.write(text[:10])
        raise OSError("disk full")

    monkeypatch.setattr(pathlib.Path, "write_text", half_write)
    with pytest.raises(OSError, match="disk full"):
        _path().save(target)
    monkeypatch.undo()
    assert target.read_text() == "previous content"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["path.json"]  # no temp file left behind


def test_camera_path_errors(tmp_path):
    good = _path().to_dict()
    for key in ("c2w", "K", "width"):
        bad = {k: v for k, v in good.items() if k != key}
        with pytest.raises(ValueError, match=f"lacks.*{key}"):
            CameraPath.from_dict(bad)
    zero_focal = torch.tensor(good["K"])
    zero_focal[2, 0, 0] = 0.0
    with pytest.raises(ValueError, match="focal"):
        CameraPath.from_dict({**good, "K": zero_focal.tolist()})
    with pytest.raises(ValueError, match=r"\[T, 3, 3\]"):
        CameraPath.from_dict({**good, "K": good["K"][:2]})
    with pytest.raises(ValueError, match="NaN"):
        CameraPath.from_dict({**good, "K": (torch.tensor(good["K"]) * float("nan")).tolist()})
    with pytest.raises(ValueError, match=r"\[T, 4, 4\]"):
        CameraPath.from_dict({**good, "c2w": good["c2w"][0]})
    scaled = torch.tensor(good["c2w"])
    scaled[1, :3, :3] *= 2.0
    with pytest.raises(ValueError, match="rigid"):
        CameraPath.from_dict({**good, "c2w": scaled.tolist()})
    with pytest.raises(ValueError, match="time"):
        CameraPath.from_dict({**good, "time": [0.0, 0.5, 1.0, 1.5, 2.0]})
    with pytest.raises(ValueError, match="size"):
        CameraPath.from_dict({**good, "width": 0})
    with pytest.raises(ValueError, match="format"):
        CameraPath.from_dict({**good, "format": "nerfstudio"})
    (tmp_path / "bad.json").write_text("[1, 2")
    with pytest.raises(ValueError):
        CameraPath.load(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError):
        CameraPath.load(tmp_path / "missing.json")


def test_camera_path_keeps_random_rigid_poses():
    q = torch.randn(7, 4, generator=torch.Generator().manual_seed(3))
    c2w = torch.eye(4).repeat(7, 1, 1)
    c2w[:, :3, :3] = quat_to_rotmat(q)
    c2w[:, :3, 3] = torch.randn(7, 3)
    p = CameraPath.from_dict(CameraPath(c2w, intrinsics_from_fov(70.0, 16, 16), 16, 16).to_dict())
    assert torch.equal(p.c2w, c2w)
