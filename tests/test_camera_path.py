"""CameraPath: absurd image sizes, non-integer sizes and unreadable files are refused clearly."""

import json
import re

import pytest
import torch

from lyra.render.camera_path import MAX_IMAGE_SIZE, CameraPath
from lyra.render.cameras import make_intrinsics


def path_args(width=64, height=48):
    return dict(c2w=torch.eye(4).expand(3, 4, 4), K=make_intrinsics(50.0, 50.0, 32.0, 24.0), width=width, height=height)


def test_absurd_sizes_are_refused_with_the_limit_named():
    assert MAX_IMAGE_SIZE == 16384
    CameraPath(**path_args(MAX_IMAGE_SIZE, 16))  # the limit itself is allowed
    for w, h in ((100_000, 100_000), (MAX_IMAGE_SIZE + 1, 16), (16, 10**9)):
        with pytest.raises(ValueError, match=rf"{w}x{h} .*at most {MAX_IMAGE_SIZE} pixels"):
            CameraPath(**path_args(w, h))
    with pytest.raises(ValueError, match=r"100000x100000 .*at most 16384"):
        CameraPath.from_dict({**CameraPath(**path_args()).to_dict(), "width": 100_000, "height": 100_000})


@pytest.mark.parametrize("width", [64.5, "64", True, None])
def test_sizes_must_be_integers(width):
    with pytest.raises(TypeError, match=r"CameraPath.width must be an int number of pixels"):
        CameraPath(**path_args(width=width))


def test_numpy_and_torch_integers_are_sizes():
    import numpy as np

    p = CameraPath(**{**path_args(), "width": np.int64(64), "height": torch.tensor(48)})
    assert (p.width, p.height) == (64, 48) and type(p.width) is int and type(p.height) is int
    assert json.loads(json.dumps(p.to_dict()))["width"] == 64


def test_invalid_json_names_the_file(tmp_path):
    path = tmp_path / "path.json"
    path.write_text('{"width": 64, "height": ')
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))} is not valid JSON .*`lyra camera-path`"):
        CameraPath.load(path)
    path.write_text(json.dumps({**CameraPath(**path_args()).to_dict(), "width": 10**6}))
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}: .*at most 16384"):
        CameraPath.load(path)
