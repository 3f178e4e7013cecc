"""Capture readers: a procedural world filmed along a path, written in every format (COLMAP text
and binary, LLFF, RealEstate10K, transforms.json), reads back to the same cameras after the stated
normalisation, with frames that show a known point where the cameras project it; broken files
fail with errors that name the file and the field."""

import json
import shutil
import struct

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from conftest import CAPTURE_WRITERS

from lyra.data.captures import detect_format, load_frame, read_capture, sparse_depth
from lyra.render.cameras import c2w_to_viewmat, world_to_pixels

FORMATS = list(CAPTURE_WRITERS)
READER = {"colmap_text": "colmap", "colmap_binary": "colmap", "llff": "llff", "realestate10k": "realestate10k",
          "transforms_json": "transforms_json"}
STATISTIC = {"colmap_text": "points", "colmap_binary": "points", "llff": "bounds", "realestate10k": "cameras",
             "transforms_json": "points"}


def _camera_depths(points, c2w, observations=None):  # z of every point in front of (or observed by) each camera
    out = []
    for i in range(len(c2w)):
        R, t = c2w[i, :3, :3], c2w[i, :3, 3]
        pts = points if observations is None else points[observations[i]]
        z = ((pts - t) @ R)[:, 2]
        out.append(z[z > 0])
    return torch.cat(out)


def _expected_statistic(name, original, folder):
    if STATISTIC[name] == "points":
        return float(np.median(_camera_depths(original.points, original.c2w,
                                    original.observations if name.startswith("colmap") else None).numpy()))
    if STATISTIC[name] == "bounds":
        b = np.load(folder / "poses_bounds.npy")[:, 15:]
        return float(np.median(np.sqrt(b[:, 0] * b[:, 1])))
    centres = original.c2w[:, :3, 3]
    return float((centres - centres.mean(0)).norm(dim=-1).mean())


@pytest.mark.parametrize("name", FORMATS)
def test_cameras_read_back_equal_after_the_stated_normalisation(name, filmed_capture, capture_folders):
    original, folder = filmed_capture.capture, capture_folders[name]
    assert detect_format(folder) == READER[name]
    cap = read_capture(folder)
    assert cap.format == READER[name] and cap.num_frames == original.num_frames
    assert cap.normalization.startswith(STATISTIC[name])
    centres = original.c2w[:, :3, 3]
    torch.testing.assert_close(cap.origin, centres.mean(0), atol=1e-6, rtol=0)
    assert cap.scale == pytest.approx(1.0 / _expected_statistic(name, original, folder), rel=1e-6)
    # The stated map x_normalised = scale * (x_capture - origin); rotations and intrinsics unchanged.
    torch.testing.assert_close(cap.c2w[:, :3, :3], original.c2w[:, :3, :3], atol=1e-5, rtol=0)
    torch.testing.assert_close(cap.c2w[:, :3, 3], (centres - cap.origin) * cap.scale, atol=1e-5, rtol=0)
    torch.testing.assert_close(cap.c2w[:, 3], original.c2w[:, 3], atol=0, rtol=0)
    torch.testing.assert_close(cap.K, original.K, atol=1e-5, rtol=0)
    torch.testing.assert_close(cap.image_sizes, original.image_sizes)
    if STATISTIC[name] == "points":
        torch.testing.assert_close(cap.points, (original.points - cap.origin) * cap.scale, atol=1e-5, rtol=0)
    torch.testing.assert_close(cap.to_capture_units(cap.c2w[:, :3, 3]), centres, atol=1e-5, rtol=0)
    raw = read_capture(folder, normalization="none")
    assert raw.scale == 1.0 and raw.normalization == "none"
    torch.testing.assert_close(raw.c2w, original.c2w, atol=1e-5, rtol=0)


def _blob_centroid(rgb, uv, radius=2):  # brightness-weighted centroid around a pixel position
    c, r = int(uv[0]), int(uv[1])
    win = rgb[r - radius:r + radius + 1, c - radius:c + radius + 1].mean(-1).double()
    v, u = torch.meshgrid(torch.arange(r - radius, r + radius + 1) + 0.5, torch.arange(c - radius, c + radius + 1) + 0.5,
                          indexing="ij")
    w = win / win.sum()
    return torch.stack([(w * u).sum(), (w * v).sum()])


@pytest.mark.parametrize("name", FORMATS)
def test_frames_show_a_known_point_where_their_cameras_project_it(name, filmed_capture, capture_folders):
    """The marker blob sits at a known world point: after reading, normalising, the centre crop of the
    96 x 64 frames to square and the resize to 32 x 32, each frame shows it where its camera projects
    it (a half-pixel convention error would move it by 0.25 px, a frame off by one by ~0.3 px)."""
    cap = read_capture(capture_folders[name])
    P = cap.from_capture_units(filmed_capture.marker)
    checked = 0
    for i in range(cap.num_frames):
        rgb, K = load_frame(cap, i, 32, 32)
        assert rgb.shape == (32, 32, 3) and 0 <= rgb.min() and rgb.max() <= 1
        uv = world_to_pixels(P[None], c2w_to_viewmat(cap.c2w[i]), K)[0][0]
        if not (4 <= uv[0] < 28 and 4 <= uv[1] < 28):
            continue
        centroid = _blob_centroid(rgb, uv)
        assert (centroid - uv).abs().max() < 0.08, (i, centroid.tolist(), uv.tolist())
        checked += 1
    assert checked >= 10


def test_sparse_depth_is_the_exact_depth_at_the_points(filmed_capture, capture_folders):
    cap = read_capture(capture_folders["colmap_binary"])
    for i in (0, 14, 29):
        _, K = load_frame(cap, i, 64, 96)  # stored size: no crop, no resize
        depth = sparse_depth(cap, i, K, 64, 96)
        truth = filmed_capture.depth[i] * cap.scale
        known = depth > 0
        assert known.sum() > 150
        ratio = depth[known] / truth[known]
        assert (ratio - 1).abs().median() < 0.01, i  # a point and its pixel centre differ by the surface slope


def _copy(folder, tmp_path):
    return shutil.copytree(folder, tmp_path / f"{folder.name}_{len(list(tmp_path.iterdir()))}")


def _edit_line(path, old, new):
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_a_missing_image_is_named(capture_folders, tmp_path):
    folder = _copy(capture_folders["colmap_text"], tmp_path)
    (folder / "images" / "frame_00003.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"images\.txt: images: 1 of 30 listed images do not exist.*"
                                                r"frame_00003\.png"):
        read_capture(folder)
    folder = _copy(capture_folders["llff"], tmp_path)
    (folder / "images" / "00003.png").unlink()
    with pytest.raises(ValueError, match=r"poses_bounds\.npy: rows: 30 poses but 29 images"):
        read_capture(folder)
    folder = _copy(capture_folders["realestate10k"], tmp_path)
    next((folder / "clip").iterdir()).unlink()
    with pytest.raises(ValueError, match=r"clip\.txt: frames: 30 camera lines but 29 frames"):
        read_capture(folder)


def test_a_wrong_camera_count_is_named(capture_folders, tmp_path):
    folder = _copy(capture_folders["colmap_text"], tmp_path)
    _edit_line(folder / "sparse/0/cameras.txt", "# Number of cameras: 30", "# Number of cameras: 31")
    with pytest.raises(ValueError, match=r"cameras\.txt: number of cameras: the header says 31 but the file lists 30"):
        read_capture(folder)
    folder = _copy(capture_folders["colmap_binary"], tmp_path)
    path = folder / "sparse/0/cameras.bin"
    blob = bytearray(path.read_bytes())
    blob[:8] = struct.pack("<Q", 31)
    path.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match=r"cameras\.bin: camera 30: the file ends .* truncated"):
        read_capture(folder)
    blob[:8] = struct.pack("<Q", 29)
    path.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match=r"cameras\.bin: number of cameras: the file says 29 but holds \d+ more bytes"):
        read_capture(folder)


def test_a_nan_pose_is_named(capture_folders, tmp_path):
    folder = _copy(capture_folders["colmap_text"], tmp_path)
    images = folder / "sparse/0/images.txt"
    first = images.read_text().splitlines()[1]
    words = first.split()
    _edit_line(images, first, " ".join(words[:5] + ["nan"] + words[6:]))
    with pytest.raises(ValueError, match=r"images\.txt: QW QX QY QZ TX TY TZ: image 1 \(frame_00000\.png\) has a NaN"):
        read_capture(folder)
    folder = _copy(capture_folders["llff"], tmp_path)
    data = np.load(folder / "poses_bounds.npy")
    data[2, 3] = np.nan
    np.save(folder / "poses_bounds.npy", data)
    with pytest.raises(ValueError, match=r"poses_bounds\.npy: row 2: NaN or infinite pose or bounds \(00002\.png\)"):
        read_capture(folder)
    folder = _copy(capture_folders["realestate10k"], tmp_path)
    line = (folder / "clip.txt").read_text().splitlines()[3]
    _edit_line(folder / "clip.txt", line, line.rsplit(" ", 1)[0] + " inf")
    with pytest.raises(ValueError, match=r"clip\.txt line 4: pose: NaN or infinite"):
        read_capture(folder)
    folder = _copy(capture_folders["transforms_json"], tmp_path)
    top = json.loads((folder / "transforms.json").read_text())
    top["frames"][4]["transform_matrix"][0][3] = float("nan")
    (folder / "transforms.json").write_text(json.dumps(top))
    with pytest.raises(ValueError, match=r"transforms\.json: frames\[4\]\.transform_matrix: not a finite"):
        read_capture(folder)


def test_an_unknown_or_unsupported_camera_model_is_named(capture_folders, tmp_path):
    folder = _copy(capture_folders["colmap_text"], tmp_path)
    _edit_line(folder / "sparse/0/cameras.txt", "1 PINHOLE", "1 MYSTERY")
    with pytest.raises(ValueError, match=r"cameras\.txt line 2: MODEL: unknown camera model 'MYSTERY'"):
        read_capture(folder)
    folder = _copy(capture_folders["colmap_text"], tmp_path)
    line = next(ln for ln in (folder / "sparse/0/cameras.txt").read_text().splitlines() if ln.startswith("1 "))
    _edit_line(folder / "sparse/0/cameras.txt", line, line.replace("PINHOLE", "OPENCV_FISHEYE") + " 0.1 0 0 0")
    with pytest.raises(ValueError, match=r"cameras\.txt camera 1: model: camera model OPENCV_FISHEYE is not supported"
                                         r".*image_undistorter"):
        read_capture(folder)
    folder = _copy(capture_folders["colmap_binary"], tmp_path)
    path = folder / "sparse/0/cameras.bin"
    blob = bytearray(path.read_bytes())
    blob[12:16] = struct.pack("<i", 42)  # the first camera's model id
    path.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match=r"cameras\.bin: model: camera 1 has unknown camera model id 42"):
        read_capture(folder)


def test_distorted_frames_are_undistorted_to_the_pinhole_camera(tmp_path):
    """An OPENCV camera: the blob is painted where the lens puts the point; the loaded frame shows it
    where the pinhole part of the camera projects it."""
    H, W, f, cx, cy = 48, 64, 50.0, 31.0, 25.0
    coeffs = torch.tensor([-0.25, 0.06, 0.01, -0.008, 0.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    from lyra.data.captures.frames import distort

    xy = torch.tensor([0.45, -0.3], dtype=torch.float64)  # the point (0.45, -0.3, 1) in the camera
    ud = distort(xy, coeffs) * f + torch.tensor([cx, cy], dtype=torch.float64)
    v, u = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    blob = torch.exp(-((u - ud[0]) ** 2 + (v - ud[1]) ** 2) / (2 * 1.5**2))
    (tmp_path / "images").mkdir()
    iio.imwrite(tmp_path / "images" / "a.png", (blob[..., None].expand(H, W, 3) * 255).round().byte().numpy())
    model = tmp_path / "sparse" / "0"
    model.mkdir(parents=True)
    (model / "cameras.txt").write_text(f"1 OPENCV {W} {H} {f} {f} {cx} {cy} " + " ".join(map(str, coeffs[:4].tolist())))
    (model / "images.txt").write_text("1 1 0 0 0 0 0 0 1 a.png\n\n")
    cap = read_capture(tmp_path, normalization="none")
    assert cap.distortion is not None
    rgb, K = load_frame(cap, 0, H, W)
    expected = torch.tensor([f * 0.45 + cx, f * -0.3 + cy], dtype=torch.float64)
    assert (_blob_centroid(rgb, expected, radius=3) - expected).abs().max() < 0.1
    assert (ud - expected).abs().max() > 1.5  # the lens moved it: without undistortion the test would fail


def test_a_scene_decoded_in_normalised_units_returns_to_the_capture_units(capture_folders):
    from lyra.render.gaussians import Gaussians

    cap = read_capture(capture_folders["llff"])
    g = Gaussians(cap.c2w[:, :3, 3].float(), torch.tensor([[1.0, 0, 0, 0]]).expand(cap.num_frames, 4),
                  torch.full((cap.num_frames, 3), 0.1), torch.full((cap.num_frames,), 0.5),
                  torch.rand(cap.num_frames, 3))
    back = cap.gaussians_to_capture_units(g)
    raw = read_capture(capture_folders["llff"], normalization="none")
    torch.testing.assert_close(back.means.double(), raw.c2w[:, :3, 3], atol=1e-5, rtol=1e-6)  # camera centres
    torch.testing.assert_close(back.scales, g.scales / cap.scale)
