"""CaptureSource: captures cut into Lyra clips that TeacherModule encodes and ClipDataModule serves,
with depth from the sparse points or from an estimator aligned to them."""

import pytest
import torch
from transformers import (
    DepthAnythingConfig,
    DepthAnythingForDepthEstimation,
    Dinov2Config,
)

from lyra.data import ClipDataModule, DCTCodec, ProceduralGenerator
from lyra.data.captures import (
    CaptureSource,
    align_estimate,
    find_captures,
    load_frame,
    read_capture,
    sparse_depth,
    window_positions,
)
from lyra.data.generators.depth import MonocularDepth
from lyra.data.procedural import SKY_DEPTH, ProceduralWorld
from lyra.models import TeacherModule

UNITS = 3.7  # film_procedural's default world units


def teacher(source, T=5, size=32):
    return TeacherModule(source, DCTCodec(latent_channels=16), num_frames=T, height=size, width=size)


@pytest.mark.parametrize("layout", ["interleaved", "split"])
def test_every_trajectory_starts_at_the_input_frame_and_the_window_is_dealt_once(layout):
    pos = window_positions(4, 6, layout)
    assert pos.shape == (4, 6) and (pos[:, 0] == 0).all()
    assert sorted(pos[:, 1:].reshape(-1).tolist()) == list(range(1, 1 + 4 * 5))
    steps = pos[:, 2:] - pos[:, 1:-1]
    assert (steps == (4 if layout == "interleaved" else 1)).all()


def test_a_clip_holds_the_capture_frames_cameras_and_depth(capture_folders):
    folder = capture_folders["colmap_binary"]
    source = CaptureSource(str(folder), num_views=3, layout="split", frame_stride=2, clips_per_capture=2)
    clip = teacher(source).make_clip(1)
    cap = source.capture(0)
    k, frames = source.frame_indices(1, 5)
    assert k == 0 and frames[0, 0] == frames[-1, -1] - 2 * 12 and frames[-1, -1] == cap.num_frames - 1  # last window
    assert clip.latents.shape[:2] == (3, 16) and clip.rgb.shape == (3, 5, 32, 32, 3)
    for v, t in [(0, 0), (1, 3), (2, 4)]:
        rgb, K = load_frame(cap, int(frames[v, t]), 32, 32)
        torch.testing.assert_close(clip.gt_rgb[v, t], rgb)
        torch.testing.assert_close(clip.K[v, t], K.float())
        torch.testing.assert_close(clip.c2w[v, t], cap.c2w[frames[v, t]].float())
        torch.testing.assert_close(clip.depth[v, t], sparse_depth(cap, int(frames[v, t]), K, 32, 32))
    assert torch.equal(clip.gt_rgb[:, 0], clip.gt_rgb[:1, 0].expand(3, -1, -1, -1))  # one input frame starts all
    assert clip.depth_is_metric and (clip.depth > 0).float().mean() > 0.05
    meta = clip.meta["capture"]
    assert meta["name"] == folder.name and meta["frames"] == frames.tolist()
    assert meta["images"][1][3] == cap.image_paths[frames[1, 3]].name
    assert meta["normalization"]["scale"] == pytest.approx(cap.scale)
    assert clip.meta["trajectories"] == ["sub0", "sub1", "sub2"]


def test_clip_indices_cycle_through_the_captures_of_a_folder(capture_folders):
    root = capture_folders["colmap_text"].parent
    names = [p.name for p in find_captures(root)]
    assert names == sorted(capture_folders)  # the five formats, each detected, in name order
    source = CaptureSource(str(root), num_views=2, depth="none", clips_per_capture=2)
    assert source.num_clips == 10
    assert source.frame_indices(3, 5)[0] == 1 and source.frame_indices(13, 5)[0] == 1
    assert torch.equal(source.frame_indices(2_000_003, 5)[1], source.frame_indices(3, 5)[1])


def test_unusable_settings_and_captures_are_refused_by_name(capture_folders):
    folder = capture_folders["colmap_text"]
    with pytest.raises(ValueError, match=r"30 frames, but a clip of 6 trajectories x 9 frames at frame_stride 1 "
                                         r"needs 49"):
        CaptureSource(str(folder), num_views=6).generate(0, 9, 32, 32)
    with pytest.raises(ValueError, match=r"clip\.txt: points: this realestate10k capture has no sparse points.*"
                                         r"depth='estimator'"):
        CaptureSource(str(capture_folders["realestate10k"]), num_views=2).generate(0, 5, 32, 32)
    with pytest.raises(ValueError, match="depth='estimator' needs depth_model"):
        CaptureSource(str(folder), depth="estimator")
    with pytest.raises(ValueError, match=r"no root: set the capture folder \(--data.init_args.root DIR\)"):
        CaptureSource().num_clips


def test_the_data_module_points_a_teacher_at_a_capture_folder_and_tests_every_clip(capture_folders):
    root = capture_folders["colmap_text"].parent
    source = CaptureSource(num_views=3, layout="split", depth="sparse")
    data = ClipDataModule(teacher=teacher(source), root=str(capture_folders["colmap_binary"]), num_views=2,
                          target_frames=2, num_test_clips=None, test_heldout=[-1], test_target_frames=3)
    assert source.root == str(capture_folders["colmap_binary"]) and data.split_indices("test") == [2_000_000]
    batches = list(data.test_dataloader())
    assert len(batches) == 1
    meta = batches[0].meta[0]
    assert meta["heldout_name"] == "sub2" and meta["truth_frames"] == [1, 2]
    assert meta["capture"]["frames"][2] == [0, 9, 10, 11, 12]  # split: the last part of 1 + 3 x 4 frames
    assert batches[0].gt_rgb is not None and batches[0].src_depth is not None
    with pytest.raises(ValueError, match=r"root=.* names a capture folder, but the teacher's generator "
                                         r"\(ProceduralGenerator\) reads no captures"):
        ClipDataModule(teacher=teacher(ProceduralGenerator(num_views=2)), root=str(root))


def _true_depth(source, index, T, size):  # [V*T, size, size] exact z-depth of the clip's frames, normalised units
    _, frames = source.frame_indices(index, T)
    cap = source.capture(0)
    Ks = torch.stack([load_frame(cap, f, size, size)[1] for f in frames.reshape(-1).tolist()]).float()
    c2w = cap.c2w[frames.reshape(-1)].clone()
    c2w[:, :3, 3] = cap.to_capture_units(c2w[:, :3, 3]) / UNITS
    _, depth = ProceduralWorld(0).render(c2w.float(), Ks, size, size)
    return torch.where(depth >= SKY_DEPTH, torch.zeros_like(depth), depth * UNITS * cap.scale)


def test_an_estimate_aligned_to_the_sparse_points_recovers_the_depth_and_a_misaligned_one_does_not(
        filmed_capture, capture_folders):
    cap = read_capture(capture_folders["colmap_binary"])
    _, K = load_frame(cap, 7, 64, 96)
    sparse = sparse_depth(cap, 7, K, 64, 96)
    truth = filmed_capture.depth[7] * cap.scale
    known = truth > 0
    disparity = torch.where(known, 0.7 / truth.clamp_min(1e-6) + 0.05, torch.full_like(truth, 0.05))
    depth, metric = align_estimate(disparity, sparse, "relative_inverse")
    assert metric and (depth[known] / truth[known] - 1).abs().quantile(0.9) < 3e-3
    depth, _ = align_estimate(truth * 0.37, sparse, "metric")
    assert (depth[known] / truth[known] - 1).abs().max() < 1e-3
    # The same estimate one pixel off its frame: the depth edges land on the wrong pixels, and the check sees it.
    depth, _ = align_estimate(torch.roll(disparity, 1, dims=1), sparse, "relative_inverse")
    assert (depth[known] / truth[known] - 1).abs().quantile(0.9) > 0.01


class _KnownDisparity:
    """A depth estimator that returns the exact disparity (times 0.7, plus 0.05) of the frames it is shown, in order."""

    output = "relative_inverse"

    def __init__(self, depth):  # [M, H, W]
        self.queue = list(torch.where(depth > 0, 0.7 / depth.clamp_min(1e-6) + 0.05, torch.full_like(depth, 0.05)))

    def raw(self, images):  # [B, H, W, 3] -> [B, H, W]
        out, self.queue = torch.stack(self.queue[:len(images)]), self.queue[len(images):]
        return out


def test_capture_source_aligns_an_estimator_to_each_frame(capture_folders):
    source = CaptureSource(str(capture_folders["colmap_text"]), num_views=3, depth="estimator", depth_model="unused")
    truth = _true_depth(source, 0, 5, 32)
    source.estimator = _KnownDisparity(truth)
    clip = source.generate(0, 5, 32, 32)
    assert clip.depth_is_metric and not source.estimator.queue
    got, want = clip.depth.reshape(-1, 32, 32), truth
    known = want > 0
    error = (got[known] / want[known] - 1).abs()  # the sparse points sit off pixel centres: a small fit error
    assert error.median() < 0.01 and error.quantile(0.9) < 0.03


@pytest.fixture(scope="module")
def tiny_depth_model(tmp_path_factory):
    torch.manual_seed(0)
    backbone = Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                            patch_size=14, image_size=56, out_features=["stage1", "stage2", "stage3", "stage4"],
                            reshape_hidden_states=False)
    folder = tmp_path_factory.mktemp("depth_anything")
    DepthAnythingForDepthEstimation(DepthAnythingConfig(
        backbone_config=backbone, neck_hidden_sizes=[16, 32, 32, 32], fusion_hidden_size=16, head_hidden_size=8,
        reassemble_hidden_size=32)).save_pretrained(folder)
    return folder


def test_a_local_transformers_depth_model_supplies_aligned_depth(capture_folders, tiny_depth_model):
    source = CaptureSource(str(capture_folders["colmap_text"]), num_views=2, depth="estimator",
                           depth_model=str(tiny_depth_model))
    clip = teacher(source).make_clip(0)
    assert isinstance(source.estimator, MonocularDepth)  # loaded from the folder, nothing downloaded
    assert clip.depth.shape == (2, 5, 32, 32) and torch.isfinite(clip.depth).all() and (clip.depth >= 0).all()
    assert clip.depth_is_metric
