"""CLIP score of prompts against renders (lyra.metrics.clip_score, EvalReport's student/clip/score):
a tiny open_clip model built offline, trained for a few steps to tell a red from a blue square,
saved to a file and loaded back by path; scores checked against hand computations."""

import json
import logging

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

open_clip = pytest.importorskip("open_clip")

from conftest import synthetic_batch, tiny_student  # noqa: E402

from lyra.eval.report import EvalConfig, EvalReport, format_table  # noqa: E402
from lyra.metrics import CLIPScore, clip_score  # noqa: E402

ARCH = "lyra-test-tiny-clip"
TINY = {"embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}
RED, BLUE = "a red square", "a blue square"
MEAN = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)


def squares(colour, n, H=32, W=32, seed=0):
    """n noisy images of one colour, quantised to 8 bits (PIL round-trips them exactly)."""
    g = torch.Generator().manual_seed(seed)
    img = torch.tensor(colour).expand(n, H, W, 3) + 0.1 * torch.randn(n, H, W, 3, generator=g)
    return (img.clamp(0, 1) * 255).round() / 255


def striped(H, W, seed=0):
    """8-bit images whose left quarter is red and the rest blue: cropping and squashing differ."""
    img = squares((0.1, 0.2, 0.9), 2, H, W, seed=seed)
    img[:, :, : W // 4] = squares((0.9, 0.1, 0.1), 2, H, W // 4, seed=seed + 1)
    return img


def nchw(images):  # [N, H, W, 3] at the model's size -> normalised model input, by hand
    return (images.permute(0, 3, 1, 2) - MEAN) / STD


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """(model, weights file): registered under ARCH, trained to match colour captions."""
    folder = tmp_path_factory.mktemp("clip")
    (folder / f"{ARCH}.json").write_text(json.dumps(TINY))
    open_clip.add_model_config(folder / f"{ARCH}.json")
    torch.manual_seed(0)
    model = open_clip.create_model(ARCH, pretrained=None)
    tokens = open_clip.get_tokenizer(ARCH)([RED, BLUE])
    images = nchw(torch.cat([squares((0.9, 0.1, 0.1), 8, seed=1), squares((0.1, 0.2, 0.9), 8, seed=2)]))
    labels = torch.tensor([0] * 8 + [1] * 8)
    model.token_embedding.requires_grad_(False)  # 49408 x 32: most of the cost, not needed to learn two captions
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    for _ in range(8):
        img = torch.nn.functional.normalize(model.encode_image(images), dim=-1)
        txt = torch.nn.functional.normalize(model.encode_text(tokens), dim=-1)
        loss = torch.nn.functional.cross_entropy(10 * img @ txt.T, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    weights = folder / "tiny_clip.pt"
    torch.save(model.state_dict(), weights)
    return model, weights


@torch.no_grad()
def by_hand(model, images, captions):
    """100 * max(cos, 0) per image, with open_clip's own PIL preprocessing and the same model."""
    from PIL import Image

    preprocess = open_clip.image_transform(model.visual.image_size, is_train=False)
    x = torch.stack([preprocess(Image.fromarray((im * 255).round().byte().numpy())) for im in images])
    img = model.encode_image(x)
    txt = model.encode_text(open_clip.get_tokenizer(ARCH)(captions))
    cos = torch.nn.functional.cosine_similarity(img, txt, dim=-1)
    return 100 * cos.clamp_min(0)


def test_clip_score_is_100_times_clamped_cosine():
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    t = torch.tensor([[3.0, 0.0], [1.0, 0.0], [0.0, -1.0]])
    torch.testing.assert_close(clip_score(a, t), torch.tensor([100.0, 100 / 2 ** 0.5, 0.0]))


def test_score_equals_hand_computation_at_and_off_the_model_size(tiny_clip):
    model, weights = tiny_clip
    scorer = CLIPScore(ARCH, str(weights))
    assert scorer.image_size == (32, 32) and scorer.resize_mode == "shortest"
    images = torch.cat([squares((0.9, 0.1, 0.1), 2, seed=5), squares((0.1, 0.2, 0.9), 2, seed=6)])
    want = by_hand(model, images, [RED])
    got = scorer(images, RED)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert got.mean() > 1.0  # not a clamped-to-zero coincidence
    # Renders of another shape go through the model's preprocessing (shorter side to 32, centre
    # crop): PIL's bicubic on 8-bit images vs torch's on floats agree to a fraction of a point.
    for H, W in [(48, 64), (80, 40)]:
        wide = striped(H, W, seed=7)
        torch.testing.assert_close(scorer(wide, BLUE), by_hand(model, wide, [BLUE]), atol=0.1, rtol=0)
    # leading dimensions are kept: [V, F, H, W, 3] -> [V, F]
    assert scorer(images.reshape(2, 2, 32, 32, 3), RED).shape == (2, 2)


def test_matching_captions_score_higher_than_swapped(tiny_clip):
    model, weights = tiny_clip
    scorer = CLIPScore(ARCH, weights)
    images = torch.cat([squares((0.9, 0.1, 0.1), 3, seed=11), squares((0.1, 0.2, 0.9), 3, seed=12)])
    matching, swapped = [RED] * 3 + [BLUE] * 3, [BLUE] * 3 + [RED] * 3
    got_match, got_swap = scorer(images, matching), scorer(images, swapped)
    torch.testing.assert_close(got_match, by_hand(model, images, matching), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got_swap, by_hand(model, images, swapped), atol=1e-4, rtol=1e-4)
    assert got_match.mean() > got_swap.mean() + 10
    with pytest.raises(ValueError, match="2 captions for 6 images"):
        scorer(images, [RED, BLUE])


def renders_of(batch):
    return batch.rgb  # the teacher frames stand in for renders: [B, V, F, H, W, 3]


def test_report_skips_clip_score_once_with_a_message_when_no_weights(caplog):
    report = EvalReport(EvalConfig(lpips_net="alex", baselines=[]))
    assert report.clip is None
    with caplog.at_level(logging.WARNING, logger="lyra.eval.report"):
        for seed in range(3):
            batch = synthetic_batch(seed=seed)  # captioned "plane"
            rec = report.add(batch, renders_of(batch))
            assert "clip" not in rec[0]["student"]
    notes = [r.getMessage() for r in caplog.records if "CLIP score skipped" in r.getMessage()]
    assert len(notes) == 1
    assert "evaluation.clip_model and evaluation.clip_weights" in notes[0]
    # only the weights missing: the message names that setting
    caplog.clear()
    report = EvalReport(EvalConfig(lpips_net="alex", baselines=[], clip_model="ViT-B-32"))
    with caplog.at_level(logging.WARNING, logger="lyra.eval.report"):
        report.add(synthetic_batch(), renders_of(synthetic_batch()))
    notes = [r.getMessage() for r in caplog.records if "CLIP score skipped" in r.getMessage()]
    assert len(notes) == 1 and "set evaluation.clip_weights (" in notes[0]
    # no captions: nothing to skip, nothing said
    caplog.clear()
    report = EvalReport(EvalConfig(lpips_net="alex", baselines=[]))
    batch = synthetic_batch()
    batch.captions = [""]
    with caplog.at_level(logging.WARNING, logger="lyra.eval.report"):
        report.add(batch, renders_of(batch))
    assert not [r for r in caplog.records if "CLIP" in r.getMessage()]


def test_missing_or_invalid_weights_are_named_when_the_report_is_built(tiny_clip, tmp_path):
    _, weights = tiny_clip
    missing = tmp_path / "nowhere" / "clip.pt"
    with pytest.raises(FileNotFoundError, match=f"CLIP weights file {missing} not found"):
        EvalReport(EvalConfig(lpips_net="alex", baselines=[], clip_model=ARCH, clip_weights=str(missing)))
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=f"CLIP weights file {garbage} does not load into the open_clip {ARCH}"):
        EvalReport({"lpips_net": "alex", "baselines": [], "clip_model": ARCH, "clip_weights": str(garbage)})
    partial = tmp_path / "partial.pt"
    state = torch.load(weights)
    torch.save({k: v for k, v in state.items() if not k.startswith("visual.")}, partial)
    with pytest.raises(ValueError, match=f"(?s){partial} does not load .*Missing key"):
        CLIPScore(ARCH, partial)
    with pytest.raises(ValueError, match="clip_model is not"):
        EvalConfig(clip_weights=str(weights))
    with pytest.raises(ValueError, match="'no-such-arch' is not an open_clip architecture"):
        CLIPScore("no-such-arch", weights)
    with pytest.raises(ValueError, match="not an open_clip architecture"):
        CLIPScore("hf-hub:someone/clip", weights)


def test_preprocessing_of_the_architecture_tags_and_quick_gelu_checks(tiny_clip):
    from lyra.metrics.clip_score import _tag_preprocess

    # SigLIP weights are normalised to [-1, 1] and squashed: taken from the tags' metadata (no download)
    siglip = _tag_preprocess(open_clip, "ViT-B-16-SigLIP", None)
    assert tuple(siglip["mean"]) == (0.5, 0.5, 0.5) and siglip["resize_mode"] == "squash"
    with pytest.raises(ValueError, match="differ in image preprocessing.*clip_pretrained_tag"):
        _tag_preprocess(open_clip, "ViT-L-14", None)
    assert _tag_preprocess(open_clip, "ViT-L-14", "openai")["mean"] == open_clip.OPENAI_DATASET_MEAN
    with pytest.raises(ValueError, match="not an open_clip pretrained tag of ViT-L-14"):
        _tag_preprocess(open_clip, "ViT-L-14", "no-such-tag")
    _, weights = tiny_clip
    with pytest.raises(ValueError, match="quick_gelu=True.*ViT-B-32-quickgelu"):
        CLIPScore("ViT-B-32", weights, pretrained_tag="openai")


def test_lightning_test_report_holds_clip_score(tiny_clip, tmp_path):
    from test_student import heldout_batches

    model, weights = tiny_clip
    batches = heldout_batches(2)
    batches[0].captions, batches[1].captions = [RED], [BLUE]
    module = tiny_student(evaluation={"lpips_net": "alex", "baselines": [], "clip_model": ARCH,
                                      "clip_weights": str(weights)})
    t = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_checkpointing=False,
                  default_root_dir=tmp_path)
    t.test(module, dataloaders=DataLoader(batches, batch_size=None))
    scenes = json.loads((tmp_path / "test" / "scenes.json").read_text())
    summary = json.loads((tmp_path / "test" / "summary.json").read_text())
    # by hand: the same renders (32 x 32 = the model's size: normalise only), every target frame
    want = []
    with torch.no_grad():
        for batch, caption in zip(batches, [RED, BLUE]):
            rgb = module.render_targets(module(batch), batch).rgb.reshape(batch.rgb.shape)[0].flatten(0, 1)
            img = model.encode_image(nchw(rgb.clamp(0, 1)))
            txt = model.encode_text(open_clip.get_tokenizer(ARCH)([caption]))
            want.append(float((100 * torch.nn.functional.cosine_similarity(img, txt).clamp_min(0)).mean()))
    got = [s["student"]["clip"]["score"] for s in scenes]
    assert got == pytest.approx(want, abs=1e-3)
    assert summary["student/clip/score"] == pytest.approx(sum(want) / 2, abs=1e-3)
    assert summary["student/clip/score@right"] == pytest.approx(summary["student/clip/score"])
    assert t.logged_metrics["test/student/clip/score"] == pytest.approx(summary["student/clip/score"])
    table = (tmp_path / "test" / "summary.md").read_text()
    assert f"CLIP score, caption vs student renders (100 x max(cos, 0), samples with a caption): " \
           f"{summary['student/clip/score']:.2f}, right " in table
    assert table == format_table(summary) and "| student |" in table
