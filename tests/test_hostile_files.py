"""Hostile or damaged files: PLY files that are not PLY, claim impossible sizes or fail to parse.
Each gives a clear error naming the file and the fix."""

from __future__ import annotations

import re

import pytest

from lyra.render.ply import load_ply, save_ply

PLY_PROPS = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
             "rot_0", "rot_1", "rot_2", "rot_3"]


# ---- PLY files ------------------------------------------------------------------------------------------


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
    import torch

    from lyra.render.gaussians import Gaussians

    path = tmp_path / "cut.ply"
    n = 50
    save_ply(path, Gaussians(torch.randn(n, 3), torch.randn(n, 4), torch.rand(n, 3), torch.rand(n), torch.rand(n, 3)))
    path.write_bytes(path.read_bytes()[:-10])  # a copy that stopped early
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}: the header claims 50 vertex elements"):
        load_ply(path)
