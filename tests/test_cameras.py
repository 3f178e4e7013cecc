"""Camera conventions (lyra.render.cameras, lyra.render.rotations): round trips and geometry checks."""

import math

import pytest
import torch
import torch.nn.functional as F

from lyra.render.cameras import (
    WORLD_UP,
    c2w_to_viewmat,
    crop_intrinsics,
    intrinsics_from_fov,
    look_at,
    make_intrinsics,
    pixel_rays,
    plucker_rays,
    project_to_cameras,
    ray_distance,
    relative_to_first,
    resize_intrinsics,
    validate_intrinsics,
    viewmat_to_c2w,
    world_to_pixels,
)
from lyra.render.rotations import quat_slerp, quat_to_rotmat, rotmat_to_quat

UP = torch.tensor(WORLD_UP, dtype=torch.float64)


def random_c2w(n, seed=0, dtype=torch.float64):  # [n, 4, 4] rigid poses
    g = torch.Generator().manual_seed(seed)
    c2w = torch.zeros(n, 4, 4, dtype=dtype)
    c2w[:, :3, :3] = quat_to_rotmat(torch.randn(n, 4, generator=g, dtype=dtype))
    c2w[:, :3, 3] = torch.randn(n, 3, generator=g, dtype=dtype) * 3
    c2w[:, 3, 3] = 1
    return c2w


def axis_angle_rotmat(axis, angle):  # Rodrigues, written independently of rotations.py
    a = torch.tensor(axis, dtype=torch.float64)
    a = a / a.norm()
    k = torch.tensor([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]], dtype=torch.float64)
    return torch.eye(3, dtype=torch.float64) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k


# ---- c2w <-> viewmat, quaternions ---------------------------------------------------------------


def test_c2w_viewmat_round_trip_and_inverse():
    c2w = random_c2w(64).float()
    view = c2w_to_viewmat(c2w)
    assert torch.allclose(viewmat_to_c2w(view), c2w, atol=1e-6, rtol=0)
    assert torch.allclose(view @ c2w, torch.eye(4).expand(64, 4, 4), atol=1e-5)
    assert torch.allclose(view, torch.linalg.inv(c2w.double()).float(), atol=1e-5)
    # The camera centre maps to the camera origin; a point 2 along the optical axis to (0, 0, 2).
    p = c2w[:, :3, 3] + 2 * c2w[:, :3, 2]
    cam = (view[:, :3, :3] @ p[..., None]).squeeze(-1) + view[:, :3, 3]
    assert torch.allclose(cam, torch.tensor([0.0, 0.0, 2.0]).expand(64, 3), atol=1e-5)


def test_quaternion_rotmat_round_trip_including_half_turns():
    g = torch.Generator().manual_seed(1)
    q = torch.randn(200, 4, generator=g, dtype=torch.float64)
    # Near-180-degree rotations (w ~ 0) exercise the x/y/z branches of Shepperd's method.
    q[:50, 0] = 1e-4 * torch.randn(50, generator=g, dtype=torch.float64)
    q = q / q.norm(dim=-1, keepdim=True)
    R = quat_to_rotmat(q)
    assert torch.allclose(R.transpose(-1, -2) @ R, torch.eye(3, dtype=torch.float64).expand(200, 3, 3), atol=1e-12)
    assert torch.allclose(torch.linalg.det(R), torch.ones(200, dtype=torch.float64), atol=1e-12)
    q_back = rotmat_to_quat(R)
    assert (q_back[:, 0] >= 0).all()
    # q and -q are the same rotation: compare up to sign.
    same = torch.minimum((q_back - q).abs().amax(-1), (q_back + q).abs().amax(-1))
    assert same.max() < 1e-9
    assert torch.allclose(quat_to_rotmat(-q), R, atol=1e-12)
    assert torch.allclose(quat_to_rotmat(3.0 * q), R, atol=1e-12)  # any norm


def test_quaternion_matches_axis_angle():
    for axis, angle in [((0, 0, 1), math.pi / 2), ((1, 2, -0.5), 2.5), ((0, 1, 0), math.pi)]:
        a = torch.tensor(axis, dtype=torch.float64)
        a = a / a.norm()
        q = torch.cat([torch.tensor([math.cos(angle / 2)], dtype=torch.float64), math.sin(angle / 2) * a])
        assert torch.allclose(quat_to_rotmat(q), axis_angle_rotmat(axis, angle), atol=1e-12)
    # 90 degrees about z sends x to y (right-handed).
    R = quat_to_rotmat(torch.tensor([math.cos(math.pi / 4), 0, 0, math.sin(math.pi / 4)], dtype=torch.float64))
    ex, ey = torch.eye(3, dtype=torch.float64)[:2]
    assert torch.allclose(R @ ex, ey, atol=1e-12)


def test_slerp_is_constant_speed_on_the_short_arc():
    R0 = torch.eye(3, dtype=torch.float64)
    R1 = axis_angle_rotmat((0.3, 1, 0.2), 1.2)
    q0, q1 = rotmat_to_quat(R0), rotmat_to_quat(R1)
    for t in (0.0, 0.25, 0.5, 1.0):
        q = quat_slerp(q0, -q1 if t == 0.5 else q1, torch.tensor(t, dtype=torch.float64))  # sign must not matter
        assert torch.allclose(quat_to_rotmat(q), axis_angle_rotmat((0.3, 1, 0.2), 1.2 * t), atol=1e-10)
    # Identical endpoints (sin(theta) = 0) fall back to lerp without NaN.
    assert torch.allclose(quat_slerp(q0, q0, torch.tensor(0.3, dtype=torch.float64)), q0)


# ---- look_at ----------------------------------------------------------------------------------------


def test_look_at_identity_is_upright_opencv_camera():
    c2w = look_at(torch.tensor([0.0, 0.0, 0.0]), torch.tensor([0.0, 0.0, 5.0]))
    assert torch.allclose(c2w, torch.eye(4), atol=1e-7)


def test_look_at_axes_for_random_views():
    g = torch.Generator().manual_seed(2)
    eye = torch.randn(100, 3, generator=g, dtype=torch.float64) * 4
    target = torch.randn(100, 3, generator=g, dtype=torch.float64)
    c2w = look_at(eye, target).double()
    R = c2w[:, :3, :3]
    x, y, z = R[..., 0], R[..., 1], R[..., 2]
    assert torch.allclose(R.transpose(-1, -2) @ R, torch.eye(3, dtype=torch.float64).expand(100, 3, 3), atol=1e-5)
    assert torch.allclose(torch.linalg.det(R), torch.ones(100, dtype=torch.float64), atol=1e-5)
    fwd = (target - eye) / (target - eye).norm(dim=-1, keepdim=True)
    assert torch.allclose(z, fwd, atol=1e-6)  # z towards the target
    assert (x @ UP).abs().max() < 1e-6  # no roll: x is horizontal
    assert ((y @ UP) < 0).all()  # y points down, against world up (-y)
    # x points right: with world up -y (right-handed), forward x up is the right-hand direction.
    assert ((x * torch.cross(z, UP.expand(100, 3), dim=-1)).sum(-1) > 0).all()
    assert torch.allclose(c2w[:, :3, 3], eye, atol=1e-6)


def test_look_at_target_projects_to_principal_point_and_up_is_up():
    eye = torch.tensor([1.0, -2.0, -3.0])
    target = torch.tensor([0.2, 0.1, 0.5])
    c2w = look_at(eye, target)
    K = make_intrinsics(100.0, 110.0, 63.5, 47.25)
    view = c2w_to_viewmat(c2w)
    pts = torch.stack([target, target + 0.1 * torch.tensor(WORLD_UP), target + 0.1 * c2w[:3, 0]])
    uv, depth = world_to_pixels(pts, view, K)
    assert torch.allclose(uv[0], torch.tensor([63.5, 47.25]), atol=1e-4)
    assert depth[0] == pytest.approx((target - eye).norm().item(), rel=1e-6)
    assert uv[1, 1] < uv[0, 1] - 1  # a point above the target appears higher in the image (smaller v)
    assert uv[2, 0] > uv[0, 0] + 1  # the camera's x axis is image right
    # World +x is on the right for a camera looking along +z with up = -y.
    uv2, _ = world_to_pixels(torch.tensor([[0.5, 0.0, 5.0]]), torch.eye(4), K)
    assert uv2[0, 0] > 63.5


def test_project_to_cameras_matches_world_to_pixels():
    g = torch.Generator().manual_seed(0)
    points = torch.randn(2, 50, 3, generator=g) * 2 + torch.tensor([0.0, 0.0, 6.0])
    eyes = torch.randn(2, 3, 3, generator=g)
    views = c2w_to_viewmat(look_at(eyes.reshape(-1, 3), torch.zeros(6, 3))).reshape(2, 3, 4, 4)
    K = make_intrinsics(90.0, 80.0, 31.5, 29.0).expand(2, 3, 3, 3).clone()
    K[1, 2, 0, 1] = 3.0  # skew too
    u, v, z = project_to_cameras(points, views, K)
    uv, depth = world_to_pixels(points[:, None], views, K)  # the plain reference, points copied per camera
    assert u.shape == v.shape == z.shape == (2, 3, 50)
    assert torch.allclose(torch.stack([u, v], -1), uv, atol=1e-4)
    assert torch.allclose(z, depth, atol=1e-5)


def test_look_at_errors():
    with pytest.raises(ValueError, match="coincide"):
        look_at(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="parallel"):
        look_at(torch.tensor([0.0, 0.0, 0.0]), torch.tensor([0.0, -3.0, 0.0]))


# ---- intrinsics -------------------------------------------------------------------------------------


def test_intrinsics_from_fov_edge_rays():
    K = intrinsics_from_fov(60.0, 320, 240)
    assert K[0, 2] == 160 and K[1, 2] == 120 and K[0, 0] == K[1, 1]
    # The left and right image edges (u = 0 and u = W) are at +-fov/2.
    half = math.degrees(math.atan(K[0, 2].item() / K[0, 0].item()))
    assert half == pytest.approx(30.0, abs=1e-4)
    for bad in (0.0, 180.0, -5.0):
        with pytest.raises(ValueError, match="fov_x_deg"):
            intrinsics_from_fov(bad, 32, 32)


def test_validate_intrinsics_errors():
    validate_intrinsics(make_intrinsics(10.0, 10.0, 5.0, 5.0))
    with pytest.raises(ValueError, match=r"\[\.\.\., 3, 3\]"):
        validate_intrinsics(torch.eye(4))
    with pytest.raises(ValueError, match="focal"):
        validate_intrinsics(make_intrinsics(0.0, 10.0, 5.0, 5.0))
    with pytest.raises(ValueError, match="NaN"):
        validate_intrinsics(make_intrinsics(float("nan"), 10.0, 5.0, 5.0))


def _ramp_image(height, width):  # [1, 2, H, W]: continuous (u, v) coordinate of every pixel centre
    v, u = torch.meshgrid(torch.arange(height, dtype=torch.float64) + 0.5,
                          torch.arange(width, dtype=torch.float64) + 0.5, indexing="ij")
    return torch.stack([u, v])[None]


@pytest.mark.parametrize("new_size", [(12, 20), (40, 72), (24, 24)])
def test_resize_intrinsics_matches_interpolate_pixel_centres(new_size):
    H, W = 24, 36
    c2w = look_at(torch.tensor([0.3, -0.5, -2.0]), torch.tensor([0.0, 0.0, 0.0])).double()
    K = make_intrinsics(30.0, 33.0, 17.0, 12.5).double()
    K2 = resize_intrinsics(K, (H, W), new_size)
    # Bilinear resize (align_corners=False) of a ramp of pixel-centre coordinates tells, for each new
    # pixel, which continuous old coordinate it samples; a ramp is reproduced exactly inside the image.
    src = F.interpolate(_ramp_image(H, W), size=new_size, mode="bilinear", align_corners=False)[0]
    _, d_new = pixel_rays(c2w, K2, *new_size)
    pts = c2w[:3, 3] + 3.0 * d_new  # [h, w, 3] points seen by the new pixel centres
    uv_old, _ = world_to_pixels(pts.reshape(-1, 3), c2w_to_viewmat(c2w), K)
    uv_old = uv_old.reshape(*new_size, 2)
    inner = (slice(2, -2), slice(2, -2))  # bilinear clamps at the border
    assert torch.allclose(uv_old[inner], src.permute(1, 2, 0)[inner], atol=1e-9)
    # Projection in pixel coordinates scales by the size ratio (continuous, pixel-centre convention).
    p = torch.tensor([[0.2, -0.1, 0.4]], dtype=torch.float64)
    uv_a, _ = world_to_pixels(p, c2w_to_viewmat(c2w), K)
    uv_b, _ = world_to_pixels(p, c2w_to_viewmat(c2w), K2)
    scale = torch.tensor([new_size[1] / W, new_size[0] / H], dtype=torch.float64)
    assert torch.allclose(uv_b, uv_a * scale, atol=1e-9)


def test_resize_intrinsics_rejects_bad_sizes():
    with pytest.raises(ValueError, match="positive"):
        resize_intrinsics(make_intrinsics(1.0, 1.0, 1.0, 1.0), (0, 10), (5, 5))


def test_crop_intrinsics_matches_slicing():
    H, W, top, left, h, w = 30, 40, 7, 11, 12, 16
    c2w = look_at(torch.tensor([0.5, -1.0, -3.0]), torch.tensor([0.1, 0.0, 0.2])).double()
    K = make_intrinsics(35.0, 35.0, 20.5, 14.0).double()
    Kc = crop_intrinsics(K, top, left)
    _, d_full = pixel_rays(c2w, K, H, W)
    _, d_crop = pixel_rays(c2w, Kc, h, w)
    assert torch.allclose(d_crop, d_full[top:top + h, left:left + w], atol=1e-12)
    p = torch.tensor([[0.3, 0.2, 0.1]], dtype=torch.float64)
    uv, _ = world_to_pixels(p, c2w_to_viewmat(c2w), K)
    uvc, _ = world_to_pixels(p, c2w_to_viewmat(c2w), Kc)
    assert torch.allclose(uvc, uv - torch.tensor([left, top], dtype=torch.float64), atol=1e-9)
    # Crop then resize equals the rays of the resized crop of the ramp image.
    Kcr = resize_intrinsics(Kc, (h, w), (2 * h, 2 * w))
    _, d_cr = pixel_rays(c2w, Kcr, 2 * h, 2 * w)
    pooled = F.avg_pool2d(d_cr.permute(2, 0, 1)[None], 2)[0].permute(1, 2, 0)  # 2x2 children average
    pooled = pooled / pooled.norm(dim=-1, keepdim=True)
    assert torch.allclose(pooled, d_crop, atol=1e-4)


# ---- rays -------------------------------------------------------------------------------------------


def test_pixel_rays_go_through_inverse_intrinsics_with_skew():
    H, W = 9, 13
    c2w = random_c2w(3, seed=4)
    K = make_intrinsics(torch.tensor([20.0, 15.0, 9.0]), torch.tensor([22.0, 15.0, 8.0]),
                        torch.tensor([6.5, 6.0, 7.25]), torch.tensor([4.5, 4.0, 3.0])).double()
    K[1, 0, 1] = 1.7  # a skewed camera
    o, d = pixel_rays(c2w, K, H, W)
    assert o.shape == d.shape == (3, H, W, 3)
    v, u = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    pix = torch.stack([u, v, torch.ones_like(u)], -1).double()  # [H, W, 3]
    d_cam = torch.einsum("cij,hwj->chwi", torch.linalg.inv(K), pix)
    d_ref = torch.einsum("cij,chwj->chwi", c2w[:, :3, :3], d_cam)
    d_ref = d_ref / d_ref.norm(dim=-1, keepdim=True)
    assert torch.allclose(d, d_ref, atol=1e-12)
    assert torch.allclose(o, c2w[:, None, None, :3, 3].expand_as(o))
    # Points along each ray project back onto the pixel centre they came from.
    uv, z = world_to_pixels((o + 2.5 * d).reshape(3, -1, 3), c2w_to_viewmat(c2w), K)
    assert torch.allclose(uv, pix[..., :2].reshape(1, -1, 2).expand(3, -1, 2), atol=1e-9)
    assert (z > 0).all()


def test_plucker_rays_are_unit_direction_and_moment():
    V, T, H, W = 2, 3, 5, 7
    c2w = random_c2w(V * T, seed=5).reshape(V, T, 4, 4)
    K = make_intrinsics(6.0, 6.0, 3.5, 2.5).double().expand(V, T, 3, 3)
    pl = plucker_rays(c2w, K, H, W)
    assert pl.shape == (V, T, H, W, 6)
    m, d = pl[..., :3], pl[..., 3:]
    o, d_ref = pixel_rays(c2w, K, H, W)
    assert torch.allclose(d, d_ref)
    assert torch.allclose(d.norm(dim=-1), torch.ones(V, T, H, W, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(m, torch.cross(o, d, dim=-1), atol=1e-12)
    assert (m * d).sum(-1).abs().max() < 1e-12  # moment is orthogonal to the direction
    # The moment does not depend on which point of the line is the origin.
    for t in (-3.0, 0.7, 11.0):
        assert torch.allclose(torch.cross(o + t * d, d, dim=-1), m, atol=1e-10)
    # |moment| is the line's distance from the world origin.
    foot = o - (o * d).sum(-1, keepdim=True) * d
    assert torch.allclose(m.norm(dim=-1), foot.norm(dim=-1), atol=1e-10)


def test_relative_to_first():
    c2w = random_c2w(2 * 5, seed=6).reshape(2, 5, 4, 4)
    rel = relative_to_first(c2w)
    assert torch.allclose(rel[:, 0], torch.eye(4, dtype=torch.float64).expand(2, 4, 4), atol=1e-12)
    # Relative motion between any two frames is unchanged, and the first pose maps it back.
    i, j = 1, 4
    a = torch.linalg.inv(c2w[:, i]) @ c2w[:, j]
    b = torch.linalg.inv(rel[:, i]) @ rel[:, j]
    assert torch.allclose(a, b, atol=1e-10)
    assert torch.allclose(c2w[:, :1] @ rel, c2w, atol=1e-10)
    # Invariant to a global rigid change of the world frame.
    G = random_c2w(1, seed=7)[0]
    assert torch.allclose(relative_to_first(G @ c2w), rel, atol=1e-10)


def test_ray_distance_turns_z_depth_into_points_at_that_depth():
    c2w = look_at(torch.tensor([[0.3, -0.2, -2.0], [1.0, 0.5, 0.0]]), torch.zeros(2, 3))
    K = make_intrinsics(20.0, 24.0, 12.0, 9.0).expand(2, 3, 3)
    origins, dirs = pixel_rays(c2w, K, 18, 24)
    z = 1.0 + torch.rand(2, 18, 24)
    points = origins + dirs * ray_distance(z, dirs, c2w)[..., None]
    uv, depth = world_to_pixels(points.reshape(2, -1, 3), c2w_to_viewmat(c2w), K)
    torch.testing.assert_close(depth, z.reshape(2, -1), rtol=1e-5, atol=1e-5)
    assert (ray_distance(z, dirs, c2w) >= z - 1e-6).all()  # off-axis rays are longer than their depth
