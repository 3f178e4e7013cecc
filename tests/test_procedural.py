import math

import pytest
import torch

from lyra.data.procedural import (
    SKY_DEPTH,
    ProceduralScene,
    ProceduralWorld,
    reverse_frames,
)
from lyra.data.procedural.raytrace import (
    parallel_candidates,
    resolve_candidates,
    screen_candidates,
)
from lyra.data.procedural.scene import BOX, CYLINDER, SPHERE
from lyra.render.cameras import (
    c2w_to_viewmat,
    intrinsics_from_fov,
    look_at,
    make_intrinsics,
    pixel_rays,
    world_to_pixels,
)

SMALL = dict(num_frames=5, height=24, width=32)


def _camera(eye, target, fov=60.0, width=33, height=33):
    c2w = look_at(torch.tensor(eye, dtype=torch.float32), torch.tensor(target, dtype=torch.float32))
    return c2w, intrinsics_from_fov(fov, width, height)


def _surface_distance(world: ProceduralWorld, points: torch.Tensor, time: float = 0.0) -> torch.Tensor:
    """|signed distance| of points [P, 3] to the nearest surface (floor or object), computed independently."""
    s = world.scene
    best = points[:, 1].abs()  # floor y = 0
    centres, yaw = s.poses_at(torch.tensor([time]))
    for i in range(s.num_objects):
        rel = points - centres[0, i]
        c, sn = math.cos(yaw[0, i]), math.sin(yaw[0, i])
        local = torch.stack([c * rel[:, 0] - sn * rel[:, 2], rel[:, 1], sn * rel[:, 0] + c * rel[:, 2]], -1)
        he = s.half_extent[i]
        if s.kind[i] == SPHERE:
            sdf = local.norm(dim=-1) - he[0]
        else:
            if s.kind[i] == BOX:
                q = local.abs() - he
            else:
                q = torch.stack([torch.hypot(local[:, 0], local[:, 2]) - he[0], local[:, 1].abs() - he[1]], -1)
            sdf = q.clamp_min(0).norm(dim=-1) + q.amax(-1).clamp_max(0)
        best = torch.minimum(best, sdf.abs())
    return best


def test_same_seed_is_bitwise_identical_and_seeds_differ():
    a, b, c = ProceduralWorld(7, dynamic=True), ProceduralWorld(7, dynamic=True), ProceduralWorld(8, dynamic=True)
    for name, value in vars(a.scene).items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, getattr(b.scene, name)), name
    assert a.caption == b.caption and a.scene_scale == b.scene_scale
    ca, cb = a.sample_clip(**SMALL), b.sample_clip(**SMALL)
    for key in ("rgb", "depth", "c2w", "K", "time"):
        assert torch.equal(ca[key], cb[key]), key
    assert not torch.equal(ca["rgb"], c.sample_clip(**SMALL)["rgb"])
    assert 4 <= a.scene.num_objects <= 16


def test_sphere_depth_is_analytic():
    world = ProceduralWorld.from_scene(ProceduralScene.simple(["sphere"], [[0.3, -1.0, 5.0]], [[1.0] * 3]))
    c2w, K = _camera([0.0, -1.0, 0.0], [0.0, -1.0, 1.0])
    _, depth = world.render(c2w, K, 33, 33)
    o, d = pixel_rays(c2w.double(), K.double(), 33, 33)
    # Ray-sphere in float64, written out independently of the renderer.
    oc = o - torch.tensor([0.3, -1.0, 5.0], dtype=torch.float64)
    b = (oc * d).sum(-1)
    disc = b * b - ((oc * oc).sum(-1) - 1.0)
    t = -b - disc.clamp_min(0).sqrt()
    z = t * d[..., 2]  # the camera looks along world +z
    on_sphere = disc > 1e-3
    assert on_sphere.sum() > 50
    torch.testing.assert_close(depth[on_sphere].double(), z[on_sphere], atol=1e-4, rtol=0)
    # The centre pixel looks straight at the sphere's near side... of a sphere displaced by 0.3:
    assert depth[16, 16].item() == pytest.approx(5.0 - math.sqrt(1.0 - 0.3**2), abs=1e-4)


def test_floor_depth_and_sky_depth():
    world = ProceduralWorld.from_scene(ProceduralScene.simple([], torch.zeros(0, 3), torch.zeros(0, 3)))
    c2w, K = _camera([0.0, -2.0, 0.0], [0.0, -1.0, 4.0])  # 2 units above the floor, tilted down
    rgb, depth = world.render(c2w, K, 33, 33)
    o, d = pixel_rays(c2w.double(), K.double(), 33, 33)
    t = 2.0 / d[..., 1]
    z = t * (d * c2w[:3, 2].double()).sum(-1)
    floor = (d[..., 1] > 0) & (t * d[..., [0, 2]].norm(dim=-1) < 0.9 * world.scene.ground_radius)
    assert floor.sum() > 100 and (~floor & (d[..., 1] < 0)).any()
    torch.testing.assert_close(depth[floor].double(), z[floor], atol=1e-4, rtol=1e-5)
    assert (depth[d[..., 1] < 0] == SKY_DEPTH).all()
    assert depth[floor].max() < SKY_DEPTH and rgb.min() >= 0 and rgb.max() <= 1


@pytest.mark.parametrize("dynamic", [False, True])
def test_depth_back_projects_onto_surfaces(dynamic):
    world = ProceduralWorld(3, dynamic=dynamic)
    clip = world.sample_clip(3, 40, 48, trajectories=("spiral",))
    c2w, K, depth, time = clip["c2w"][0, -1], clip["K"][0, -1], clip["depth"][0, -1], clip["time"][0, -1]
    o, d = pixel_rays(c2w, K, 40, 48)
    hit = depth < SKY_DEPTH
    assert hit.float().mean() > 0.3
    # Camera z-depth: the point sits depth / cos(angle to the optical axis) along the ray.
    points = o + (depth / (d * c2w[:3, 2]).sum(-1))[..., None] * d
    err = _surface_distance(world, points[hit], float(time))
    assert err.max() < 2e-3


def test_render_shapes_ranges_and_chunking():
    world = ProceduralWorld(1)
    clip = world.sample_clip(2, 20, 28, trajectories=("left", "up", "zoom_in"))
    c2w, K = clip["c2w"], clip["K"]
    assert clip["rgb"].shape == (3, 2, 20, 28, 3) and clip["depth"].shape == (3, 2, 20, 28)
    assert c2w.shape == (3, 2, 4, 4) and K.shape == (3, 2, 3, 3) and clip["time"].shape == (3, 2)
    assert clip["rgb"].dtype == torch.float32 and 0 <= clip["rgb"].min() and clip["rgb"].max() <= 1
    assert clip["rgb"].std() > 0.05 and (clip["depth"] > 0).all()
    assert isinstance(clip["caption"], str) and "floor" in clip["caption"]
    # Tiny chunks (bands of rows of one camera) give the same image as whole-image chunks.
    banded = ProceduralWorld(1, rays_per_chunk=60)
    rgb, depth = banded.render(c2w, K, 20, 28, clip["time"])
    torch.testing.assert_close(rgb, clip["rgb"], atol=1e-5, rtol=0)
    torch.testing.assert_close(depth, clip["depth"], atol=1e-4, rtol=1e-5)


def test_culling_never_drops_a_hit():
    world = ProceduralWorld(5, dynamic=True, num_objects=(12, 16))
    s = world.scene
    clip = world.sample_clip(2, 24, 24)
    c2w, K = clip["c2w"].reshape(-1, 4, 4), clip["K"].reshape(-1, 3, 3)
    centres, yaw = s.poses_at(clip["time"].reshape(-1))
    cos, sin = yaw.cos(), yaw.sin()
    o, d = pixel_rays(c2w, K, 24, 24)
    o, d = o[:, :1, 0], d.reshape(c2w.shape[0], -1, 3)
    culled = screen_candidates(c2w, K, 24, 24, centres, s.bounding_radius())
    every = torch.ones_like(culled)
    assert culled.float().mean() < 0.5
    t_cull, i_cull = resolve_candidates(s, culled, o, d, centres, cos, sin)
    t_all, i_all = resolve_candidates(s, every, o, d, centres, cos, sin)
    assert torch.equal(t_cull, t_all) and torch.equal(i_cull, i_all) and torch.isfinite(t_all).any()
    # Shadow rays: parallel rays from points on the floor towards the light.
    p = torch.rand(c2w.shape[0], 300, 3) * 8 - 4
    p[..., 1] = 0.0
    valid = torch.ones(p.shape[:2], dtype=torch.bool)
    shadow = parallel_candidates(p, valid, s.light_dir, centres, s.bounding_radius())
    t_cull, _ = resolve_candidates(s, shadow, p, s.light_dir, centres, cos, sin, any_hit=True)
    t_all, _ = resolve_candidates(s, torch.ones_like(shadow), p, s.light_dir, centres, cos, sin, any_hit=True)
    assert torch.equal(torch.isfinite(t_cull), torch.isfinite(t_all)) and torch.isfinite(t_all).any()


def test_dynamic_scenes_move_and_static_scenes_do_not():
    times = torch.tensor([0.0, 0.5, 1.0])
    for dynamic in (False, True):
        world = ProceduralWorld(2, dynamic=dynamic)
        c2w, K = _camera((world.center + torch.tensor([3.0, -2.0, -4.0]) * world.scene_scale / 2).tolist(),
                         world.center.tolist(), width=40, height=40)
        rgb, depth = world.render(c2w.expand(3, 4, 4), K.expand(3, 3, 3), 40, 40, times)
        change = (rgb[1:] - rgb[:1]).abs().mean()
        if dynamic:
            assert change > 1e-3 and not torch.equal(depth[0], depth[2])
        else:
            assert change == 0 and torch.equal(depth[0], depth[2])
    static, moving = ProceduralWorld(2).sample_clip(**SMALL), ProceduralWorld(2, dynamic=True).sample_clip(**SMALL)
    assert (static["time"] == 0).all()
    assert torch.equal(moving["time"][3], torch.linspace(0, 1, 5))


def test_trajectories_share_the_start_view_and_frame_the_scene():
    for seed, dynamic in ((0, False), (4, True), (9, True)):
        world = ProceduralWorld(seed, dynamic=dynamic)
        clip = world.sample_clip(**SMALL)
        first = clip["c2w"][:, 0]
        assert torch.equal(first, first[:1].expand_as(first))
        assert torch.equal(clip["rgb"][:, 0], clip["rgb"][:1, 0].expand_as(clip["rgb"][:, 0]))
        # Every camera faces the centre, above the floor, outside every object at its time.
        eyes, fwd = clip["c2w"][..., :3, 3], clip["c2w"][..., :3, 2]
        to_centre = world.center - eyes
        torch.testing.assert_close(fwd, to_centre / to_centre.norm(dim=-1, keepdim=True), atol=1e-5, rtol=0)
        assert (eyes[..., 1] < 0).all()
        centres, _ = world.scene.poses_at(clip["time"].reshape(-1))
        gap = (eyes.reshape(-1, 1, 3) - centres).norm(dim=-1) - world.scene.bounding_radius()
        assert (gap > 0).all()
        # The start view sees every object whole (its bounding sphere projects inside the image).
        uv, z = world_to_pixels(world.scene.position, c2w_to_viewmat(first[0]), clip["K"][0, 0])
        r_px = clip["K"][0, 0, 0, 0] * world.scene.bounding_radius() / z
        assert (z > 0).all()
        assert ((uv[:, 0] - r_px >= 0) & (uv[:, 0] + r_px <= SMALL["width"])).all()
        assert ((uv[:, 1] - r_px >= 0) & (uv[:, 1] + r_px <= SMALL["height"])).all()


def test_time_reversed_clip_is_consistent_frame_by_frame():
    world = ProceduralWorld(6, dynamic=True)
    T = SMALL["num_frames"]
    fwd = world.sample_clip(**SMALL, generator=torch.Generator().manual_seed(1))
    rev = world.sample_clip(**SMALL, generator=torch.Generator().manual_seed(1), reverse_time=True)
    # Same camera paths from the same start view; the scene runs backwards (time 1 -> 0).
    assert torch.equal(rev["c2w"], fwd["c2w"]) and torch.equal(rev["K"], fwd["K"])
    assert torch.equal(rev["time"], fwd["time"].flip(1)) and rev["time"][0, 0] == 1 and rev["time"][0, -1] == 0
    assert not torch.allclose(rev["rgb"][:, 0], fwd["rgb"][:, 0])
    for j in range(T):
        # Frame j shows the forward clip's frame T-1-j (its scene time) seen from the reversed clip's own pose.
        rgb, depth = world.render(rev["c2w"][:, j], rev["K"][:, j], SMALL["height"], SMALL["width"],
                                  fwd["time"][:, T - 1 - j])
        assert torch.equal(rgb, rev["rgb"][:, j]) and torch.equal(depth, rev["depth"][:, j])
    # Back in forward time order every per-frame array flips together, poses included.
    back = reverse_frames(rev)
    assert torch.equal(back["time"], fwd["time"]) and torch.equal(back["c2w"], fwd["c2w"].flip(1))
    rgb, _ = world.render(back["c2w"], back["K"], SMALL["height"], SMALL["width"], back["time"])
    assert torch.equal(rgb, back["rgb"])
    assert not torch.allclose(back["rgb"], fwd["rgb"])  # new (pose, time) pairs: a real augmentation


def test_bad_input_raises_value_error():
    world = ProceduralWorld(0)
    c2w, K = _camera([0.0, -2.0, -5.0], [0.0, -0.5, 0.0])
    with pytest.raises(ValueError, match="leading dims"):
        world.render(c2w.expand(2, 4, 4), K.expand(3, 3, 3), 8, 8)
    with pytest.raises(ValueError, match="focal"):
        world.render(c2w, make_intrinsics(0.0, 10.0, 4.0, 4.0), 8, 8)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        world.render(c2w, K, 8, 8, torch.tensor(1.5))
    with pytest.raises(ValueError, match="time"):
        world.render(c2w[None], K[None], 8, 8, torch.zeros(2))
    with pytest.raises(ValueError, match="4, 4"):
        world.render(c2w[:3], K, 8, 8)
    with pytest.raises(ValueError, match="positive"):
        world.render(c2w, K, 0, 8)
    with pytest.raises(ValueError, match="num_objects"):
        ProceduralWorld(0, num_objects=(5, 3))
    with pytest.raises(ValueError, match="unknown trajectories"):
        world.sample_clip(2, 8, 8, trajectories=("sideways",))
    with pytest.raises(ValueError, match="num_frames"):
        world.sample_clip(0, 8, 8)


def test_caption_names_what_is_in_the_scene():
    world = ProceduralWorld(11)
    kinds = {("sphere", "box", "cylinder")[k] for k in world.scene.kind.tolist()}
    for kind in kinds:
        assert kind in world.caption or kind + "es" in world.caption
    missing = {"sphere", "box", "cylinder"} - kinds
    for kind in missing:
        assert kind not in world.caption
    assert (CYLINDER in world.scene.kind.tolist()) == ("cylinder" in world.caption)
    assert (BOX in world.scene.kind.tolist()) == ("box" in world.caption)
