"""The real-capture protocol's per-frame scores (lyra.callbacks.FrameScores): one row per held-out
truth frame, naming the capture image, that average to the report's per-sample numbers."""

import json

import lightning as L
import pytest
import torch
from conftest import TINY_BODY, tiny_student

from lyra.callbacks import FrameScores
from lyra.data import ClipDataModule, DCTCodec
from lyra.data.captures import CaptureSource
from lyra.models import TeacherModule
from lyra.models.decoders import StaticGaussianDecoder


def test_frame_scores_name_each_frame_and_average_to_the_report(capture_folders, tmp_path):
    root = tmp_path / "captures"  # two of the five formats, to stay quick
    root.mkdir()
    for name in ("colmap_binary", "colmap_text"):
        (root / name).symlink_to(capture_folders[name], target_is_directory=True)
    source = CaptureSource(num_views=3, layout="split")
    teacher = TeacherModule(source, DCTCodec(latent_channels=8), num_frames=5, height=32, width=32)
    data = ClipDataModule(teacher=teacher, root=str(root), num_views=2, num_test_clips=None, test_heldout=[-1],
                          test_target_frames=3)
    torch.manual_seed(0)
    decoder = StaticGaussianDecoder(latent_channels=8, body=TINY_BODY, far=20.0, input_depth=True)
    model = tiny_student(lpips=False, decoder=decoder,
                         evaluation={"lpips_net": "alex", "baselines": ["nearest", "input_warp"]})
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path, callbacks=[FrameScores()])
    trainer.test(model, datamodule=data)
    rows = json.loads((tmp_path / "test" / "frames.json").read_text())
    records = json.loads((tmp_path / "test" / "scenes.json").read_text())
    assert len(records) == 2 and len(rows) == 2 * 2  # two captures x truth frames 2 and 4 of the held-out part
    assert {r["capture"] for r in rows} == {"colmap_binary", "colmap_text"}
    first = rows[0]
    assert first["heldout"] == "sub2" and first["frame"] == 2 and first["capture_frame"] == 10
    assert first["image"] == "frame_00010.png" and first["against"] == "truth"
    for rec in records:
        mine = [r for r in rows if r["scene"] == rec["scene"]]
        for method in ("student", "nearest", "input_warp"):
            for metric in ("psnr", "ssim", "lpips"):
                mean = sum(r[f"{method}_{metric}"] for r in mine) / len(mine)
                assert mean == pytest.approx(rec[method]["truth"][metric], rel=1e-4, abs=1e-5), (method, metric)
    assert (tmp_path / "test" / "frames.csv").read_text().splitlines()[0].startswith("scene,heldout,frame,against")
