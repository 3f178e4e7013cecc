"""`lyra render`, `lyra convert` and the scene readers against hostile files (issue 22, groups 3, 4, 6, 8).

Every bad file is built here in a temp dir. Checked: PLY / .splat / .spz files that are not what they
claim, or claim more points than their bytes or the limit allow, are refused before allocation; a
dynamic scene's index cannot make lyra read a file outside its folder; renders asking for more frames
or pixels than the limits are refused before rendering; a video or scene file is read back before
"wrote" (an encoder that writes nothing, a zero-Gaussian conversion, a nonsense fps are errors); a
render with nothing in view warns; output paths that are folders, unwritable or over the file-size
limit give one line naming the file, exit 2.
"""

from __future__ import annotations

import errno
import gzip
import json
import re
import resource
import struct
import tempfile

import numpy as np
import pytest
import torch
from conftest import lyra_error as error

from lyra.render.formats import (
    load_scene,
    read_dynamic_index,
    save_dynamic_scene,
    save_scene,
    save_splat,
)
from lyra.render.gaussians import Gaussians
from lyra.render.ply import load_ply, save_ply
from lyra.tools import main
from lyra.utils.errors import LyraUsageError
from lyra.viewer import load_viewable
from lyra.viz import video as video_module
from lyra.viz.demo_scene import demo_scene

PLY_PROPS = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
             "rot_0", "rot_1", "rot_2", "rot_3"]


def gaussians(n: int, scale: float = 0.05, seed: int = 0) -> Gaussians:
    g = torch.Generator().manual_seed(seed)
    return Gaussians(torch.randn(n, 3, generator=g), torch.randn(n, 4, generator=g), torch.full((n, 3), scale),
                     torch.rand(n, generator=g) * 0.5 + 0.5, torch.rand(n, 3, generator=g))


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    path = tmp_path_factory.mktemp("scene") / "scene.ply"
    save_ply(path, demo_scene(400))
    return path


# ---- PLY files (folded from the former tests/test_hostile_files.py) ----------------------------------------


def ascii_header(count, props=PLY_PROPS) -> str:
    return ("ply\nformat ascii 1.0\n" + f"element vertex {count}\n"
            + "".join(f"property float {p}\n" for p in props) + "end_header\n")


def test_a_binary_non_ply_file_is_named(tmp_path):
    path = tmp_path / "photo.ply"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)  # a PNG with the wrong suffix
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))} is not a readable PLY file: it does not start with 'ply'"):
        load_ply(path)
    path.write_bytes(b"ply\n\xff\xfe\x00binary where the header should be\n")
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))} is not a readable PLY file: .*non-ASCII"):
        load_ply(path)


def test_a_negative_vertex_count_is_named(tmp_path):
    path = tmp_path / "neg.ply"
    path.write_text(ascii_header(-5))
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}: .*element vertex has a negative count \(-5\)"):
        load_ply(path)


@pytest.mark.parametrize("fmt", ["ascii", "binary_little_endian"])
def test_a_vertex_count_larger_than_the_file_is_refused_before_reading(tmp_path, fmt):
    path = tmp_path / "huge.ply"
    header = ascii_header(4_000_000_000).replace("ascii", fmt)
    body = "0 0 0 0 0 0 0 0 0 0 1 0 0 0\n".encode() if fmt == "ascii" else bytes(4 * len(PLY_PROPS))
    path.write_bytes(header.encode() + body)  # would allocate ~224 GB if the claim were believed
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}: the header claims 4000000000 vertex elements.*at least "
                                         rf"\d+ bytes.* only {len(body)} bytes follow the header"):
        load_ply(path)


def test_parse_errors_name_the_file_from_python(tmp_path):
    path = tmp_path / "bad.ply"
    path.write_text("ply\nformat ascii 1.0\nelement vertex many\nproperty float x\nend_header\n")
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))} is not a readable PLY file.*count"):
        load_ply(path)
    path.write_text(ascii_header(2) + "0 0 0 0 0 0 0 0 0 0 1 0 0 0\n0 0 zero 0 0 0 0 0 0 0 1 0 0 0\n")
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))} is not a readable PLY file"):
        load_ply(path)
    path.write_text(ascii_header(1).replace("end_header\n", ""))  # the header never ends
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))} is not a readable PLY file: no 'end_header'"):
        load_ply(path)


def test_a_truncated_binary_file_is_named(tmp_path):
    path = tmp_path / "cut.ply"
    save_ply(path, gaussians(50))
    path.write_bytes(path.read_bytes()[:-10])  # a copy that stopped early
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}: the header claims 50 vertex elements"):
        load_ply(path)


# ---- point counts against the limit and the bytes ----------------------------------------------------------


def test_point_counts_above_the_limit_are_refused_in_every_format(tmp_path, monkeypatch):
    g = gaussians(40)
    for suffix in (".ply", ".splat", ".spz"):
        save_scene(tmp_path / f"s{suffix}", g)
    monkeypatch.setenv("LYRA_LIMIT_POINTS", "30")
    for suffix in (".ply", ".splat", ".spz"):
        with pytest.raises(LyraUsageError, match=rf"s\{suffix}.*40 Gaussians is above the points limit of 30.*"
                                                 r"LYRA_LIMIT_POINTS"):
            load_scene(tmp_path / f"s{suffix}")
    monkeypatch.setenv("LYRA_LIMIT_POINTS", "40")
    assert all(load_scene(tmp_path / f"s{s}").num_gaussians == 40 for s in (".ply", ".splat", ".spz"))


def test_a_small_spz_claiming_millions_of_points_is_refused_before_decompressing(tmp_path):
    header = struct.pack("<IIIBBBB", 0x5053474E, 3, 40_000_000, 0, 12, 0, 0)
    path = tmp_path / "claims.spz"
    path.write_bytes(gzip.compress(header + bytes(100_000)))  # ~100 bytes of gzip for 40 M points
    with pytest.raises(LyraUsageError, match=r"claims\.spz claims 40,000,000 points .*more than a \d+-byte gzip"):
        load_scene(path)


# ---- dynamic scene folders: nothing outside the folder is read ---------------------------------------------


@pytest.mark.parametrize("entry", ["../outside/secret.ply", "ABSOLUTE", "link.ply", "sub/../../outside/secret.ply"])
def test_a_dynamic_index_cannot_name_a_file_outside_its_folder(tmp_path, capsys, entry):
    (tmp_path / "outside").mkdir()
    save_ply(tmp_path / "outside" / "secret.ply", gaussians(10))
    folder = tmp_path / "scene"
    save_dynamic_scene(folder, [gaussians(10)], [0.0])
    (folder / "link.ply").symlink_to(tmp_path / "outside" / "secret.ply")
    entry = str(tmp_path / "outside" / "secret.ply") if entry == "ABSOLUTE" else entry
    (folder / "index.json").write_text(json.dumps({"times": [0.0, 1.0], "files": ["t000.ply", entry]}))
    with pytest.raises(LyraUsageError, match=r"index\.json.*(absolute path|'\.\.' component|symlink)"):
        read_dynamic_index(folder)
    with pytest.raises(LyraUsageError, match=r"absolute path|'\.\.' component|symlink"):
        load_viewable(folder)
    err = error(capsys, ["render", "--ply", str(folder), "--out", str(tmp_path / "v.mp4")])
    assert "index.json" in err and not (tmp_path / "v.mp4").exists()


def test_a_student_named_file_linked_from_outside_is_refused(tmp_path):
    folder = tmp_path / "scene"
    folder.mkdir()
    save_ply(tmp_path / "secret.ply", gaussians(10))
    (folder / "t000_0.000.ply").symlink_to(tmp_path / "secret.ply")  # no index: names are the index
    with pytest.raises(LyraUsageError, match="symlink"):
        read_dynamic_index(folder)


def test_index_times_must_be_numbers(tmp_path):
    folder = tmp_path / "scene"
    save_dynamic_scene(folder, [gaussians(10)] * 2, [0.0, 1.0])
    for times in (["0", 1.0], [True, 1.0], [0.0, 10**400]):
        (folder / "index.json").write_text(json.dumps({"times": times, "files": ["t000.ply", "t001.ply"]}))
        with pytest.raises(LyraUsageError, match=r"index\.json: times holds"):
            read_dynamic_index(folder)


# ---- renders: sizes before rendering, outputs read back ------------------------------------------------------


def test_renders_beyond_the_limits_are_refused_before_rendering(scene, tmp_path, capsys):
    out = str(tmp_path / "v.mp4")
    assert "frames limit" in error(capsys, ["render", "--ply", str(scene), "--frames", "16384", "--out", out])
    path = json.loads(json.dumps({"format": "lyra.camera_path/1", "width": 16384, "height": 16384,
                                  "c2w": [np.eye(4).tolist()], "K": [[[8000.0, 0, 8192], [0, 8000.0, 8192], [0, 0, 1]]]}))
    (tmp_path / "big.json").write_text(json.dumps(path))
    err = error(capsys, ["render", "--ply", str(scene), "--camera-path", str(tmp_path / "big.json"), "--out", out])
    assert "268,435,456 pixels is above the pixels limit" in err and "big.json" in err
    assert "decoded_bytes limit" in error(capsys, ["render", "--ply", str(scene), "--frames", "5000", "--size", "1024",
                                                   "--out", out])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.json"]


@pytest.mark.parametrize("fps", ["1e-9", "1e12", "0", "nan"])
def test_a_nonsense_fps_is_refused(scene, tmp_path, capsys, fps):
    assert "fps" in error(capsys, ["render", "--ply", str(scene), "--fps", fps, "--frames", "2", "--size", "16",
                                   "--out", str(tmp_path / "v.mp4")])
    assert not (tmp_path / "v.mp4").exists()


def test_a_video_that_comes_out_empty_is_an_error_not_wrote(scene, tmp_path, capsys, monkeypatch):
    import imageio_ffmpeg

    def writes_nothing(path, *args, **kwargs):  # an encoder that accepts frames and writes none
        open(path, "wb").close()
        while True:
            if (yield) is None:
                continue
    monkeypatch.setattr(imageio_ffmpeg, "write_frames", writes_nothing)
    err = error(capsys, ["render", "--ply", str(scene), "--frames", "3", "--size", "16", "--out", str(tmp_path / "v.mp4")])
    assert "holds 0 frames" in err and "nothing was written" in err
    assert list(tmp_path.iterdir()) == [] and "wrote" not in capsys.readouterr().out
    assert video_module.FPS_RANGE[0] > 0


def test_converting_an_empty_scene_is_an_error(tmp_path, capsys):
    save_ply(tmp_path / "empty.ply", gaussians(0))
    err = error(capsys, ["convert", str(tmp_path / "empty.ply"), str(tmp_path / "out.splat")])
    assert "holds no Gaussians" in err and not (tmp_path / "out.splat").exists()
    with pytest.raises(LyraUsageError, match="no Gaussians"):
        save_splat(tmp_path / "out.splat", gaussians(0))
    save_ply(tmp_path / "one.ply", gaussians(3))  # the control: a scene converts and reads back
    assert main(["convert", str(tmp_path / "one.ply"), str(tmp_path / "out.splat")]) == 0
    assert "wrote" in capsys.readouterr().out and load_scene(tmp_path / "out.splat").num_gaussians == 3


@pytest.mark.parametrize("kind", ["one tiny point", "all huge", "looking away"])
def test_a_render_with_nothing_in_view_warns(tmp_path, capsys, kind):
    extra = []
    if kind == "one tiny point":
        save_ply(tmp_path / "s.ply", gaussians(1, scale=1e-6))
    elif kind == "all huge":  # too large to draw (at 1e8 they are drawn, as one flat colour: not white, no warning)
        save_ply(tmp_path / "s.ply", gaussians(50, scale=1e30))
    else:  # the scene sits at z < 0; the path's camera at the origin looks along +z
        g = gaussians(50)
        save_ply(tmp_path / "s.ply", Gaussians(g.means * 0.2 - torch.tensor([0.0, 0.0, 5.0]), g.quats, g.scales,
                                               g.opacities, g.colors))
        path = {"width": 16, "height": 16, "c2w": [np.eye(4).tolist()] * 2, "K": [[[14.0, 0, 8], [0, 14.0, 8], [0, 0, 1]]] * 2}
        (tmp_path / "away.json").write_text(json.dumps(path))
        extra = ["--camera-path", str(tmp_path / "away.json")]
    assert main(["render", "--ply", str(tmp_path / "s.ply"), *(extra or ["--frames", "2", "--size", "16"]),
                 "--out", str(tmp_path / "v.mp4")]) == 0
    captured = capsys.readouterr()
    assert "warning: every frame" in captured.err and "nothing" in captured.err
    assert "wrote" in captured.out  # a valid (if empty) video: a warning, not an error


def test_a_render_with_the_scene_in_view_does_not_warn(scene, tmp_path, capsys):
    assert main(["render", "--ply", str(scene), "--frames", "2", "--size", "16", "--out", str(tmp_path / "v.mp4")]) == 0
    assert "warning" not in capsys.readouterr().err


# ---- outputs that cannot be written ----------------------------------------------------------------------------


def test_unwritable_outputs_give_one_line_naming_the_file(scene, tmp_path, capsys, monkeypatch):
    (tmp_path / "dir.mp4").mkdir()
    assert "is a folder" in error(capsys, ["render", "--ply", str(scene), "--frames", "2", "--size", "16",
                                           "--out", str(tmp_path / "dir.mp4")])
    (tmp_path / "dir.png").mkdir()  # refused before rendering: no video is left behind either
    assert "--sheet" in error(capsys, ["render", "--ply", str(scene), "--frames", "2", "--size", "16", "--out",
                                       str(tmp_path / "ok.mp4"), "--sheet", str(tmp_path / "dir.png")])
    assert not (tmp_path / "ok.mp4").exists()
    assert "--device" in error(capsys, ["render", "--ply", str(scene), "--device", "gpu0", "--out", str(tmp_path / "v.mp4")])

    def denied(*args, **kwargs):  # what a read-only folder gives (as root, chmod does not stop writes)
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / ".v.mp4.abc123.tmp"))
    with monkeypatch.context() as m:
        m.setattr(tempfile, "mkstemp", denied)
        err = error(capsys, ["demo-scene", "--out", str(tmp_path / "ro" / "s.ply")])
    assert f"cannot write {tmp_path / 'ro' / 's.ply'}: Permission denied" in err and ".tmp" not in err


def test_the_file_size_limit_during_a_save_is_one_line(tmp_path, capsys):
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, hard))  # Python ignores SIGXFSZ: writes fail with EFBIG
    try:
        err = error(capsys, ["demo-scene", "--n", "20000", "--out", str(tmp_path / "big.ply")])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert f"writing {tmp_path / 'big.ply'} failed: File too large" in err and "ulimit -f" in err
    assert list(tmp_path.iterdir()) == []


def test_the_file_size_limit_while_ffmpeg_writes_a_video_is_named(scene, tmp_path, capsys):
    """ffmpeg is another process (killed by SIGXFSZ, no OSError here): the read-back names the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
    try:
        err = error(capsys, ["render", "--ply", str(scene), "--frames", "8", "--size", "128",
                             "--out", str(tmp_path / "v.mp4")])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert "cannot be read back" in err and "the file-size limit (ulimit -f) is 4,096 bytes" in err
    assert not (tmp_path / "v.mp4").exists()
