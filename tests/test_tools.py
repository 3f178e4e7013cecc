"""The `lyra` command (lyra.tools) and the video / contact-sheet writers, run in-process on tiny scenes."""

import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from lyra.render.camera_path import CameraPath
from lyra.render.cameras import c2w_to_viewmat, world_to_pixels
from lyra.render.framing import TRAJECTORIES, auto_camera_path, frame_scene, render_path
from lyra.render.gaussians import Gaussians
from lyra.render.ply import load_ply, save_ply
from lyra.tools import main
from lyra.viz import contact_sheet, to_uint8, write_video


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    path = tmp_path_factory.mktemp("scene") / "scene.ply"
    assert main(["demo-scene", "--out", str(path), "--n", "400", "--seed", "3"]) == 0
    return path


def _error(capsys, argv):  # run main, expect a clean exit 2; return stderr
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


def test_demo_scene_is_deterministic_upright_and_valid(scene, tmp_path):
    g = load_ply(scene)
    assert g.num_gaussians == 400 and g.sh_degree == 0
    main(["demo-scene", "--out", str(tmp_path / "b.ply"), "--n", "400", "--seed", "3"])
    main(["demo-scene", "--out", str(tmp_path / "c.ply"), "--n", "400", "--seed", "4"])
    assert (tmp_path / "b.ply").read_bytes() == scene.read_bytes()
    assert (tmp_path / "c.ply").read_bytes() != scene.read_bytes()
    # World up is -y: everything stands on the ground plane y = 0, objects rise to negative y.
    y = g.means[:, 1]
    assert y.max() < 0.05 and y.min() < -1.0
    assert (y.abs() < 1e-6).float().mean() > 0.3  # a ground disc
    rgb = load_ply(scene, colors="rgb").colors
    assert rgb.std(dim=0).min() > 0.1  # colourful, not one flat colour


@pytest.mark.parametrize("background", ["white", "black"])
def test_render_writes_video_and_sheet(scene, tmp_path, background):
    out, sheet = tmp_path / "v.mp4", tmp_path / "s.png"
    main(["render", "--ply", str(scene), "--trajectory", "spiral", "--frames", "5", "--size", "32x24",
          "--out", str(out), "--sheet", str(sheet), "--background", background])
    video = iio.imread(out)
    assert video.shape == (5, 24, 32, 3) and video.dtype == np.uint8
    assert iio.immeta(out)["codec"] == "h264"
    corner = video[0, [0, 0, -1, -1], [0, -1, 0, -1]].astype(float).mean()  # frame 0 has the scene in its middle
    assert corner > 230 if background == "white" else corner < 25
    assert np.abs(video[:, 8:, 8:24].astype(float) - video[0, 0, 0]).mean() > 20  # the scene is there
    png = iio.imread(sheet)
    assert png.shape == (3 * 26 + 2, 2 * 34 + 2, 3)  # 5 frames, 2 columns x 3 rows is nearest square; 2-px borders
    assert np.abs(png[2:26, 2:34].astype(int) - video[0].astype(int)).mean() < 12  # first tile = frame 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.png", "v.mp4"]  # no temp files left


def test_render_is_upright(tmp_path):
    # A red blob above (world -y) a blue one must come out red on top in the video.
    n = 200
    g = torch.Generator().manual_seed(0)
    means = torch.randn(n, 3, generator=g) * 0.15
    means[: n // 2, 1] -= 0.6
    colors = torch.zeros(n, 3)
    colors[: n // 2, 0] = 1.0
    colors[n // 2:, 2] = 1.0
    gs = Gaussians(means, torch.tensor([1.0, 0, 0, 0]).expand(n, 4).clone(), torch.full((n, 3), 0.08),
                   torch.full((n,), 0.9), colors)
    save_ply(tmp_path / "rb.ply", gs)
    out = tmp_path / "rb.mp4"
    main(["render", "--ply", str(tmp_path / "rb.ply"), "--trajectory", "orbit", "--frames", "2", "--size", "32",
          "--out", str(out), "--background", "black"])
    videos = {"orbit (mp4)": iio.imread(out).astype(float) / 255}
    center, distance = frame_scene(means, 60.0, 32, 32)
    for kind in TRAJECTORIES:  # every path family, straight from the renderer
        videos[kind] = render_path(gs, auto_camera_path(kind, center, distance, 3, 32, 32), (0.0, 0.0, 0.0)).numpy()
    for kind, video in videos.items():
        for frame in video:
            top, bottom = frame[:16], frame[16:]
            assert top[..., 0].mean() > top[..., 2].mean() + 0.08, kind
            assert bottom[..., 2].mean() > bottom[..., 0].mean() + 0.08, kind


def test_camera_path_export_and_render_from_it(scene, tmp_path):
    path_json = tmp_path / "path.json"
    main(["camera-path", "--ply", str(scene), "--trajectory", "zoom-in", "--frames", "7", "--size", "40x30",
          "--out", str(path_json)])
    path = CameraPath.load(path_json)
    assert len(path) == 7 and (path.width, path.height) == (40, 30)
    # Exported from the scene: it looks at the median of the Gaussians and moves towards it.
    center = load_ply(scene).means.median(dim=0).values
    eye = path.c2w[:, :3, 3]
    assert (center - eye).norm(dim=-1).diff().lt(0).all()
    out = tmp_path / "p.mp4"
    main(["render", "--ply", str(scene), "--camera-path", str(path_json), "--out", str(out)])
    assert iio.imread(out).shape == (7, 30, 40, 3)
    main(["render", "--ply", str(scene), "--camera-path", str(path_json), "--frames", "3", "--size", "20x16",
          "--out", str(out)])
    assert iio.imread(out).shape == (3, 16, 20, 3)
    # Without a scene the path circles --center at --distance.
    main(["camera-path", "--center", "1", "2", "3", "--distance", "4", "--frames", "4", "--out", str(path_json)])
    p = CameraPath.load(path_json)
    assert torch.allclose((p.c2w[:, :3, 3] - torch.tensor([1.0, 2, 3])).norm(dim=-1), torch.full((4,), 4.0), atol=1e-4)


def test_frame_scene_keeps_the_scene_in_view(scene):
    means = load_ply(scene).means
    center, distance = frame_scene(means, 60.0, 64, 48)
    path = auto_camera_path("left", center, distance, 1, 64, 48, 60.0)
    uv, z = world_to_pixels(means, c2w_to_viewmat(path.c2w[0]), path.K[0])
    inside = (z > 0) & (uv[:, 0] >= 0) & (uv[:, 0] <= 64) & (uv[:, 1] >= 0) & (uv[:, 1] <= 48)
    assert inside.float().mean() > 0.95
    assert torch.allclose(uv[:, :].median(dim=0).values, torch.tensor([32.0, 24.0]), atol=8)


def test_errors_are_clear_and_write_nothing(scene, tmp_path, capsys):
    out = str(tmp_path / "v.mp4")
    base = ["render", "--ply", str(scene), "--out", out]
    assert "does not exist" in _error(capsys, ["render", "--ply", str(tmp_path / "nope.ply"), "--out", out])
    assert "unknown trajectory" in _error(capsys, base + ["--trajectory", "circle"])
    for bad in ("33", "0", "abc", "64x-2", "9000"):
        assert "size" in _error(capsys, base + ["--size", bad])
    assert "whole number >= 1" in _error(capsys, base + ["--frames", "0"])
    assert "fov" in _error(capsys, base + ["--fov", "200"])
    assert ".mp4" in _error(capsys, ["render", "--ply", str(scene), "--out", str(tmp_path / "v.gif")])
    (tmp_path / "bad.ply").write_text("not a ply")
    assert "not a readable PLY" in _error(capsys, ["render", "--ply", str(tmp_path / "bad.ply"), "--out", out])
    assert "either --camera-path or --trajectory" in _error(
        capsys, base + ["--camera-path", str(tmp_path / "x.json"), "--trajectory", "left"])
    assert "does not exist" in _error(capsys, base + ["--camera-path", str(tmp_path / "x.json")])
    assert "n >= 200" in _error(capsys, ["demo-scene", "--out", str(tmp_path / "s.ply"), "--n", "10"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.ply"]


def test_video_writer_and_sheet_units(tmp_path):
    frames = torch.rand(3, 6, 8, 3)
    u8 = to_uint8(frames)
    assert u8.dtype == np.uint8 and np.array_equal(u8, np.round(frames.numpy() * 255).astype(np.uint8))
    assert np.array_equal(to_uint8(torch.tensor([[[[-1.0, 0.5, 2.0]]]])), [[[[0, 128, 255]]]])
    with pytest.raises(ValueError, match="even"):
        write_video(tmp_path / "odd.mp4", torch.rand(2, 7, 8, 3))
    with pytest.raises(ValueError, match=r"\[T, H, W, 3\]"):
        write_video(tmp_path / "bad.mp4", torch.rand(6, 8, 3))
    with pytest.raises(ValueError, match="NaN"):
        write_video(tmp_path / "nan.mp4", torch.full((1, 2, 2, 3), float("nan")))
    assert list(tmp_path.iterdir()) == []
    sheet = contact_sheet(u8, max_frames=2, columns=2, border=1)
    assert sheet.shape == (6 + 2, 2 * 9 + 1, 3)
    assert np.array_equal(sheet[1:7, 1:9], u8[0]) and np.array_equal(sheet[1:7, 10:18], u8[2])  # first and last


def test_console_script_help():
    res = subprocess.run([sys.executable, "-m", "lyra.tools", "render", "--help"], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0 and "--trajectory" in res.stdout and "--camera-path" in res.stdout
