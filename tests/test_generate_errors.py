"""`lyra generate`: bad inputs refused, named, before any long work; nothing left behind by a failure."""

import json
import os

os.environ["HF_HUB_OFFLINE"] = "1"


import imageio.v3 as iio
import numpy as np
import pytest
from generate_fixtures import (
    FAST,
    image_args,
    lyra_error,
    no_output,
    run_lyra,
    smooth_image,
    video_inputs,
)

from lyra.inference.outputs import OUTPUT_MARKER
from lyra.render.formats import read_dynamic_index
from lyra.tools import main


def test_bad_inputs_are_named_before_any_work(models, tmp_path, capsys, no_long_work):
    out = tmp_path / "out"
    proc = ["generate", "--procedural", "0", "--out", str(out), *FAST]
    image = ["generate", "--out", str(out), "--decoder", str(models / "static"), *image_args(models), *FAST]
    # decoders
    err = lyra_error(capsys, [*proc, "--decoder", str(tmp_path / "nowhere")])
    assert "does not exist" in err and "lightning fit --config configs/dynamic.yaml" in err
    err = lyra_error(capsys, [*proc, "--decoder", str(models / "depth")])
    assert "not a lyra Gaussian decoder" in err and str(models / "depth") in err
    (tmp_path / "empty").mkdir()
    assert "no *.ckpt" in lyra_error(capsys, [*proc, "--decoder", str(tmp_path / "empty")])
    # sizes
    err = lyra_error(capsys, [*proc, "--decoder", str(models / "static"), "--frames", "6", "--size", "32"])
    assert "6 frames" in err and "5, 9" in err and "--frames" in err
    # images: mode, size, format
    iio.imwrite(tmp_path / "grey.png", smooth_image(48, 48)[..., 0])
    err = lyra_error(capsys, [*image, "--image", str(tmp_path / "grey.png")])
    assert "greyscale" in err and "grey.png" in err
    iio.imwrite(tmp_path / "small.png", smooth_image(16, 16))
    err = lyra_error(capsys, [*image, "--image", str(tmp_path / "small.png")])
    assert "smaller than the 32x32 clip" in err and "small.png" in err
    rgba = np.concatenate([smooth_image(48, 48), np.full((48, 48, 1), 100, np.uint8)], axis=-1)
    iio.imwrite(tmp_path / "alpha.png", rgba)
    assert "transparent" in lyra_error(capsys, [*image, "--image", str(tmp_path / "alpha.png")])
    (tmp_path / "photo.tiff").write_bytes(b"II*\x00")
    assert "unknown image format '.tiff'" in lyra_error(capsys, [*image, "--image", str(tmp_path / "photo.tiff")])
    # teacher folders
    err = lyra_error(capsys, [*image, "--image", str(models / "photo.png"), "--depth-model", str(tmp_path / "nodepth")])
    assert "does not exist" in err and "nodepth" in err
    err = lyra_error(capsys, ["generate", "--image", str(models / "photo.png"), "--decoder", str(models / "static"),
                          "--teacher", str(models / "pipe"), "--depth-model", str(models / "depth"), "--frames", "5",
                          "--size", "32", "--out", str(out)])
    assert "does not fit the decoder" in err and "latent_channels" in err  # a 4-channel VAE for an 8-channel decoder
    assert "--t2i" in lyra_error(capsys, [*image, "--prompt", "a cat"])
    # videos and cameras
    video, cams, arrays = video_inputs(tmp_path, frames=9, depth=False)
    vid = ["generate", "--video", str(video), "--decoder", str(models / "dynamic"), "--vae", "dct", "--frames", "5",
           "--size", "32", "--out", str(out), *FAST]
    np.savez(tmp_path / "short.npz", c2w=arrays["c2w"][:8], K=arrays["K"][:8])
    err = lyra_error(capsys, [*vid, "--cameras", str(tmp_path / "short.npz")])
    assert "has 9 frames but" in err and "holds 8 cameras" in err and "short.npz" in err
    bent = arrays["c2w"].copy()
    bent[3, :3, :3] *= 1.1
    np.savez(tmp_path / "bent.npz", c2w=bent, K=arrays["K"])
    err = lyra_error(capsys, [*vid, "--cameras", str(tmp_path / "bent.npz")])
    assert "c2w[3] is not a rigid camera-to-world pose" in err and "bent.npz" in err and "SVD" in err
    (tmp_path / "cams.json").write_text("{}")
    assert "unknown camera file format '.json'" in lyra_error(capsys, [*vid, "--cameras", str(tmp_path / "cams.json")])
    assert "--cameras" in lyra_error(capsys, vid)
    (tmp_path / "clip.gif").write_bytes(b"GIF89a")
    err = lyra_error(capsys, ["generate", "--video", str(tmp_path / "clip.gif"), "--cameras", str(cams), "--decoder",
                          str(models / "dynamic"), "--vae", "dct", "--out", str(out)])
    assert "unknown video format '.gif'" in err
    # camera paths, sources, output folder
    (tmp_path / "weird.json").write_text(json.dumps({"poses": []}))
    err = lyra_error(capsys, [*proc, "--decoder", str(models / "static"), "--camera-path", str(tmp_path / "weird.json")])
    assert "unknown camera path format" in err and "weird.json" in err
    assert "exactly one source" in lyra_error(capsys, ["generate", "--procedural", "0", "--image", "x.png", "--decoder", "d"])
    assert "static decoder" in lyra_error(capsys, [*proc, "--decoder", str(models / "static"), "--times", "0,1"])
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert "--overwrite" in lyra_error(capsys, [*proc, "--decoder", str(models / "static")])
    assert (out / "keep.txt").read_text() == "mine"
    out.joinpath("keep.txt").unlink()
    out.rmdir()
    no_output(out)


def test_a_failure_mid_run_leaves_no_output_folder(models, tmp_path, monkeypatch):
    from lyra.inference import pipeline

    def broken(*a, **k):
        raise RuntimeError("disk full")
    monkeypatch.setattr(pipeline, "write_views", broken)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="disk full"):
        main(["generate", "--procedural", "0", "--decoder", str(models / "static"), "--frames", "5", "--size", "32",
              "--trajectories", "left", "--out", str(out), *FAST])
    no_output(out)
    # and --overwrite keeps the old folder (one lyra wrote: it has the marker) until the new one is complete
    out.mkdir()
    (out / "old.txt").write_text("old")
    (out / OUTPUT_MARKER).write_text("")
    with pytest.raises(RuntimeError, match="disk full"):
        main(["generate", "--procedural", "0", "--decoder", str(models / "static"), "--frames", "5", "--size", "32",
              "--trajectories", "left", "--out", str(out), "--overwrite", *FAST])
    assert sorted(p.name for p in out.iterdir()) == [OUTPUT_MARKER, "old.txt"]


def test_a_decoder_that_reads_the_video_depth_needs_it_in_the_camera_file(models, tmp_path, capsys):
    video, cams, _ = video_inputs(tmp_path, depth=False)
    out = tmp_path / "out"
    err = lyra_error(capsys, ["generate", "--video", str(video), "--cameras", str(cams), "--decoder",
                          str(models / "dynamic_video"), "--vae", "dct", "--frames", "5", "--size", "32",
                          "--out", str(out), *FAST])
    assert "input_depth" in err and "depth" in err
    no_output(out)
    video, cams, _ = video_inputs(tmp_path, depth=True)
    run_lyra(["generate", "--video", str(video), "--cameras", str(cams), "--decoder", str(models / "dynamic_video"),
          "--vae", "dct", "--frames", "5", "--size", "32", "--times", "0,1", "--out", str(out), *FAST])
    times, files = read_dynamic_index(out / "scene")
    assert times == [0.0, 1.0] and len(files) == 2
