"""Gen3CGenerator: depth -> 3D cache -> codec -> diffusers transformer, with tiny models saved and reloaded."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from transformers import (
    DepthAnythingConfig,
    DepthAnythingForDepthEstimation,
    Dinov2Config,
    DPTImageProcessor,
)

from lyra.data.codecs import DCTCodec
from lyra.data.generators.base import ClipGenerator
from lyra.data.generators.depth import MonocularDepth, disparity_to_depth
from lyra.data.generators.gen3c import (
    Gen3CGenerator,
    load_image,
    load_video_transformer,
)
from lyra.data.generators.point_cache import (
    lift_to_points,
    mask_to_latent_grid,
    plan_cache,
)
from lyra.render.cameras import (
    c2w_to_viewmat,
    intrinsics_from_fov,
    look_at,
    world_to_pixels,
)

C = 16  # DCT latent channels the tiny transformer is built for


def _tiny_wan(in_channels: int, out_channels: int) -> WanTransformer3DModel:
    return WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=4, attention_head_dim=32,
                                 in_channels=in_channels, out_channels=out_channels, text_dim=64, freq_dim=32,
                                 ffn_dim=256, num_layers=2)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    torch.manual_seed(0)
    out = {name: tmp_path_factory.mktemp(name) for name in ("wan", "depth", "depth_proc", "pipe", "vae", "wan4")}
    _tiny_wan(2 * C + 1, C).save_pretrained(out["wan"])
    _tiny_wan(2 * C + 1, C).save_pretrained(out["pipe"] / "transformer")  # a pipeline folder layout
    backbone = Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                            patch_size=14, image_size=56, out_features=["stage1", "stage2", "stage3", "stage4"],
                            reshape_hidden_states=False)
    depth = DepthAnythingForDepthEstimation(DepthAnythingConfig(
        backbone_config=backbone, neck_hidden_sizes=[16, 32, 32, 32], fusion_hidden_size=16, head_hidden_size=8,
        reassemble_hidden_size=32))
    depth.save_pretrained(out["depth"])
    depth.save_pretrained(out["depth_proc"])
    DPTImageProcessor(size={"height": 42, "width": 42}, keep_aspect_ratio=True, ensure_multiple_of=14,
                      do_pad=False).save_pretrained(out["depth_proc"])
    AutoencoderKLWan(base_dim=8, z_dim=4, num_res_blocks=1).save_pretrained(out["vae"])
    _tiny_wan(2 * 4 + 1, 4).save_pretrained(out["wan4"])
    return out


@pytest.fixture(scope="module")
def gen(dirs):
    return Gen3CGenerator(dirs["wan"], DCTCodec(latent_channels=C), depth_path=dirs["depth"], num_inference_steps=2)


def _smooth_image(H, W, seed=0):  # [H, W, 3] low-frequency colours
    low = torch.rand(1, 3, 6, 6, generator=torch.Generator().manual_seed(seed))
    return F.interpolate(low, size=(H, W), mode="bicubic", align_corners=False).clamp(0, 1)[0].permute(1, 2, 0)


def _smooth_depth(H, W):  # [H, W] a tilted, gently curved surface
    v = torch.linspace(-1, 1, H)[:, None]
    u = torch.linspace(0, 3, W)[None, :]
    return 3.0 + 0.6 * v + 0.3 * torch.sin(2 * u)


def test_depth_model_reloads_with_and_without_processor(dirs):
    img = torch.rand(2, 40, 48, 3, generator=torch.Generator().manual_seed(1))
    for key in ("depth", "depth_proc"):
        model = MonocularDepth(dirs[key], input_size=42, near=0.5, far=8.0)
        assert model.output == "relative_inverse" and (model.processor is not None) == (key == "depth_proc")
        d = model(img)
        assert d.shape == (2, 40, 48) and torch.isfinite(d).all()
        assert d.min() >= 0.5 - 1e-5 and d.max() <= 8.0 + 1e-4
        assert model(img[0]).shape == (40, 48)
    metric = MonocularDepth(dirs["depth"], output="metric")
    raw = torch.rand(1, 4, 4) * 5 + 0.1
    assert torch.equal(metric.to_depth(raw), raw)


def test_disparity_to_depth_is_inverse_and_spans_near_far():
    disp = torch.linspace(0, 1, 101).view(1, 1, 101) * 7 + 3  # unknown scale and shift
    depth = disparity_to_depth(disp, near=1.0, far=10.0)
    assert (depth[..., 1:] <= depth[..., :-1]).all()  # larger disparity = nearer
    assert depth[..., 98:].max() == pytest.approx(1.0) and depth[..., :3].min() == pytest.approx(10.0)
    # Inside the robust range depth is exactly 1 / (affine disparity): 1/depth is linear in disparity.
    inv = 1 / depth[0, 0, 10:90]
    assert torch.allclose(inv.diff(), inv.diff().mean().expand(79), atol=1e-5)
    flat = disparity_to_depth(torch.full((1, 3, 3), 0.2), 1.0, 16.0)
    assert torch.allclose(flat, torch.full_like(flat, 4.0))


def test_lifted_points_reproject_to_their_pixels_at_their_depth():
    H, W = 12, 16
    K = intrinsics_from_fov(50, W, H)
    c2w = look_at(torch.tensor([0.5, -0.2, -1.0]), torch.tensor([0.1, 0.1, 2.0]))
    depth = 1.0 + torch.rand(H, W, generator=torch.Generator().manual_seed(2)) * 4
    cloud = lift_to_points(torch.rand(H, W, 3), depth, c2w, K, point_radius_px=0.4)
    uv, z = world_to_pixels(cloud.points, c2w_to_viewmat(c2w), K)
    v, u = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    assert torch.allclose(uv, torch.stack([u, v], -1).reshape(-1, 2), atol=1e-3)
    assert torch.allclose(z, depth.reshape(-1), rtol=1e-5)
    assert torch.allclose(cloud.sigmas, 0.4 * depth.reshape(-1) / K[0, 0])


def test_first_frame_of_the_cache_reproduces_the_input():
    H, W = 32, 32
    image, depth = _smooth_image(H, W), _smooth_depth(H, W)
    plan = plan_cache(image, depth, 5, ["left", "up", "zoom_out"], fov_x_deg=60, backend="torch")
    assert torch.allclose(plan.c2w[:, 0], torch.eye(4).expand(3, 4, 4), atol=1e-5)  # input camera first
    first = plan.cache.rgb[:, 0]
    assert not plan.cache.holes[:, 0].any()
    assert (first - image).abs().max() < 0.03
    assert torch.allclose(plan.cache.depth[:, 0], depth.expand(3, H, W), rtol=0.02)
    assert not torch.allclose(plan.cache.rgb[:, -1], image.expand(3, H, W, 3), atol=0.05)  # the view moved


def test_holes_appear_where_the_camera_reveals_the_unseen():
    H, W = 32, 32
    image = _smooth_image(H, W, seed=3)
    plane = torch.full((H, W), 6.0)
    box = plane.clone()
    box[10:22, 10:22] = 2.0  # a near square in front of a far wall
    out = plan_cache(image, plane, 5, ["zoom_out"], backend="torch").cache.holes[0, -1]
    # Backing away shows the outside of the input frustum: a hole frame around a covered centre.
    assert out[0].all() and out[-1].all() and out[:, 0].all() and out[:, -1].all() and not out[H // 2, W // 2]
    holes_plane = plan_cache(image, plane, 5, ["left"], seed=1, backend="torch").cache.holes[0]
    holes_box = plan_cache(image, box, 5, ["left"], seed=1, backend="torch").cache.holes[0]
    assert not holes_box[0].any()
    # Moving sideways uncovers the wall behind the square (parallax), on top of the edge strip.
    assert holes_box[-1, 4:28, 8:24].sum() > 4 and not holes_plane[-1, 4:28, 8:24].any()


def test_mask_to_latent_grid_groups_like_a_causal_codec():
    holes = torch.zeros(2, 9, 16, 16, dtype=torch.bool)
    holes[0, 3, :8, :8] = True  # one frame of the first group of four, top-left 8x8 block
    holes[1, 0] = True  # the lone first frame
    grid = mask_to_latent_grid(holes, time_factor=4, space_factor=8, causal_first_frame=True)
    assert grid.shape == (2, 3, 2, 2)
    assert grid[0, 1, 0, 0] == 0.25 and grid[0].sum() == 0.25
    assert (grid[1, 0] == 1).all() and grid[1, 1:].sum() == 0
    assert mask_to_latent_grid(holes[:, 1:], 4, 8, causal_first_frame=False).shape == (2, 2, 2, 2)
    with pytest.raises(ValueError, match="do not fit"):
        mask_to_latent_grid(holes[:, :8], 4, 8, causal_first_frame=True)


@pytest.fixture(scope="module")
def small(gen, dirs):  # two views, same transformer, depth at 42 px: keeps repeated generations cheap
    return Gen3CGenerator(gen.transformer, gen.codec, depth_path=MonocularDepth(dirs["depth"], input_size=42),
                          num_inference_steps=2, num_views=2, trajectories=["left", "spiral"], seed=5)


def test_end_to_end_shapes_determinism_and_index_api(gen, small, tmp_path):
    assert isinstance(gen, ClipGenerator)
    image = torch.rand(40, 50, 3, generator=torch.Generator().manual_seed(4))
    a = gen.from_image(image, 5, 32, 32, seed=7, caption="a room")
    assert a.latents.shape == (6, C, 2, 4, 4) and torch.isfinite(a.latents).all()
    assert a.c2w.shape == (6, 5, 4, 4) and a.K.shape == (6, 5, 3, 3) and a.depth.shape == (6, 5, 32, 32)
    assert torch.equal(a.time, torch.zeros(6, 5)) and a.caption == "a room" and not a.depth_is_metric
    b = small.from_image(image, 5, 16, 16, seed=7)  # 2x2 latents: the cheapest size 2x2 patches allow
    assert torch.equal(b.latents, small.from_image(image, 5, 16, 16, seed=7).latents)
    assert not torch.allclose(b.latents, small.from_image(image, 5, 16, 16, seed=8).latents)
    import imageio.v3 as iio

    path = tmp_path / "input.png"
    iio.imwrite(path, (image * 255).round().to(torch.uint8).numpy())
    small.images, small.captions = [str(path)], ["c"]
    try:
        clip = small.generate(2, 5, 16, 16)  # index 2 of base seed 5 = seed 7
    finally:
        small.images, small.captions = [], []
    direct = small.from_image(load_image(str(path), 16, 16), 5, seed=7)
    assert torch.equal(clip.latents, direct.latents) and clip.caption == "c"


def test_guidance_needs_prompt_embeddings(small):
    plan = small.plan(_smooth_image(32, 32), 5, depth=_smooth_depth(32, 32))
    cond = small.condition(plan)
    assert cond.shape == (2, C + 1, 2, 4, 4)
    prompt = torch.randn(3, 64, generator=torch.Generator().manual_seed(0))
    base, original = {}, small.guidance_scale
    try:
        for scale in (1.0, 4.0):
            small.guidance_scale = scale
            base[scale] = (small.denoise(cond, None, seed=1), small.denoise(cond, prompt, seed=1))
    finally:
        small.guidance_scale = original
    assert torch.equal(base[1.0][0], base[4.0][0])  # null prompt: both CFG branches are the same model call
    assert not torch.allclose(base[1.0][1], base[4.0][1])
    with pytest.raises(ValueError, match="text_dim"):
        small.denoise(cond, torch.zeros(3, 32), seed=1)


def test_wan_vae_codec_by_path_and_pipeline_layout(dirs):
    g = Gen3CGenerator(dirs["wan4"], str(dirs["vae"]), num_inference_steps=2, num_views=2,
                       trajectories=["right", "zoom_in"])
    clip = g.from_image(_smooth_image(64, 64), 9, depth=_smooth_depth(64, 64), seed=0)
    assert clip.latents.shape == (2, 4, 3, 8, 8) and torch.isfinite(clip.latents).all()
    assert load_video_transformer(dirs["pipe"]).config.in_channels == 2 * C + 1


def test_teacher_module_turns_a_generation_into_a_clip(small):
    from lyra.models.teacher import TeacherModule

    g = Gen3CGenerator(small.transformer, small.codec, depth_path=small.depth_model, num_inference_steps=1,
                       num_views=1, trajectories=["zoom_out"], images=[_smooth_image(48, 40)], captions=["x"])
    clip = TeacherModule(g, small.codec, num_frames=5, height=32, width=32).make_clip(3)
    assert clip.latents.shape == (1, C, 2, 4, 4) and clip.rgb.shape == (1, 5, 32, 32, 3) and clip.caption == "x"
    assert torch.equal(clip.latents, g.generate(3, 5, 32, 32).latents)


def test_bfloat16_load_keeps_pinned_layers_in_fp32(dirs):
    kw = dict(num_inference_steps=2, num_views=1, trajectories=["up"])
    half = Gen3CGenerator(dirs["wan"], DCTCodec(latent_channels=C), dtype="bfloat16", **kw)
    full = Gen3CGenerator(dirs["wan"], DCTCodec(latent_channels=C), **kw)
    params = dict(half.transformer.named_parameters())
    assert params["patch_embedding.weight"].dtype == torch.bfloat16
    assert params["condition_embedder.time_embedder.linear_1.weight"].dtype == torch.float32  # Wan pins it
    image, depth = _smooth_image(32, 32), _smooth_depth(32, 32)
    a, b = (g.from_image(image, 5, depth=depth, seed=2).latents for g in (half, full))
    assert a.dtype == torch.float32 and (a - b).abs().max() < 0.05 * b.abs().max()


def test_clear_errors(dirs, gen, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_video_transformer(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="WanTransformer3DModel"):
        load_video_transformer(dirs["depth"])  # a transformers depth model is not a video transformer
    with pytest.raises(FileNotFoundError, match="does not exist"):
        MonocularDepth(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="depth-estimation"):
        MonocularDepth(dirs["wan"])
    with pytest.raises(ValueError, match=r"2\*16\+1 = 33"):
        Gen3CGenerator(dirs["wan4"], DCTCodec(latent_channels=C))
    no_depth = Gen3CGenerator(gen.transformer, gen.codec, num_inference_steps=1)
    with pytest.raises(ValueError, match="depth_path"):
        no_depth.from_image(torch.rand(32, 32, 3), 5)
    with pytest.raises(ValueError, match="no input images"):
        no_depth.generate(0, 5, 32, 32)
    with pytest.raises(ValueError, match="space_factor"):
        gen.plan(torch.rand(30, 30, 3), 5, depth=torch.ones(30, 30))
    with pytest.raises(ValueError, match="patch size"):
        gen.plan(torch.rand(40, 40, 3), 5, depth=torch.ones(40, 40))  # 5x5 latents, 2x2 patches
    with pytest.raises(ValueError, match="dtype"):
        Gen3CGenerator(gen.transformer, gen.codec, dtype="int8")
    with pytest.raises(ValueError, match="trajectories"):
        Gen3CGenerator(gen.transformer, gen.codec, trajectories=["left", "sideways"], num_views=2)
