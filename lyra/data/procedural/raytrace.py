"""Analytic ray casting of a ProceduralScene (no splatting, no meshes): exact hit distances.

Rays come in batches ``[B, P, 3]``: B cameras, each with its own scene time and hence its own
object poses ``[B, N, ...]``, and P rays per camera. A cheap bounding-sphere test over all
(ray, object) pairs keeps only the few pairs that can hit; the exact per-kind intersection runs
on that flat list, so cost grows with the pixels objects cover rather than with P x N.
Intersections return the distance ``t`` along the unit direction, ``inf`` on a miss. Objects
rotate only about the vertical axis (yaw): object to world is ``x_w = c x + s z, z_w = -s x + c z``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lyra.data.procedural.scene import (
    BOX,
    CYLINDER,
    GROUND_Y,
    SPHERE,
    ProceduralScene,
    object_normals,
    sky_colour,
    soft_step,
    surface_texture,
)
from lyra.render.cameras import pixel_rays

HIT_EPS = 1e-4  # ignore hits closer than this (self-intersection of shadow rays)
_TINY = 1e-12
_INF = float("inf")


def _nonzero(x: Tensor) -> Tensor:  # [...] -> [...]
    # Division by an exactly-zero direction component would give 0 * inf = NaN in the slab test.
    return torch.where(x.abs() < _TINY, torch.full_like(x, _TINY), x)


def _nearest_positive(t0: Tensor, t1: Tensor, hit: Tensor) -> Tensor:  # entry, exit, hit [...] -> [...]
    """First crossing in front of the origin of an entry/exit pair (exit if the origin is inside)."""
    t = torch.where(t0 > HIT_EPS, t0, t1)
    return torch.where(hit & (t > HIT_EPS), t, torch.full_like(t, _INF))


def to_local_xz(
    x: Tensor,  # [...] world offset from the object centre
    z: Tensor,  # [...]
    cos: Tensor,  # [...] cos(yaw)
    sin: Tensor,  # [...] sin(yaw)
) -> tuple[Tensor, Tensor]:  # object-frame x [...], z [...]
    """World offsets to the yawed object frame (inverse of the object-to-world yaw)."""
    return cos * x - sin * z, sin * x + cos * z


def ray_sphere(
    o: Tensor,  # [..., 3] ray origins
    d: Tensor,  # [..., 3] unit directions
    c: Tensor,  # [..., 3] sphere centres
    r: Tensor,  # [...] radii
) -> Tensor:  # [...]
    oc = o - c
    b = (oc * d).sum(-1)
    disc = b * b - ((oc * oc).sum(-1) - r * r)
    s = disc.clamp_min(0.0).sqrt()
    return _nearest_positive(-b - s, -b + s, disc >= 0)


def ray_box(
    o: Tensor,  # [..., 3]
    d: Tensor,  # [..., 3] unit
    c: Tensor,  # [..., 3] box centre
    cos: Tensor,  # [...] cos(yaw)
    sin: Tensor,  # [...] sin(yaw)
    half: Tensor,  # [..., 3] half sizes
) -> Tensor:  # [...]
    """Slab test in the box's own (yawed) frame."""
    rel = o - c
    ox, oz = to_local_xz(rel[..., 0], rel[..., 2], cos, sin)
    dx, dz = to_local_xz(d[..., 0], d[..., 2], cos, sin)
    o_l = torch.stack([ox, rel[..., 1], oz], -1)
    inv = 1.0 / _nonzero(torch.stack([dx, d[..., 1], dz], -1))
    ta, tb = (-half - o_l) * inv, (half - o_l) * inv
    t_near = torch.minimum(ta, tb).amax(-1)
    t_far = torch.maximum(ta, tb).amin(-1)
    return _nearest_positive(t_near, t_far, t_near <= t_far)


def ray_cylinder(
    o: Tensor,  # [..., 3]
    d: Tensor,  # [..., 3] unit
    c: Tensor,  # [..., 3] cylinder centres (middle of the axis)
    r: Tensor,  # [...] radii
    half_height: Tensor,  # [...]
) -> Tensor:  # [...]
    """Vertical capped cylinder: the infinite-cylinder interval intersected with the slab between caps."""
    rel = o - c
    rx, ry, rz = rel.unbind(-1)
    dx, dy, dz = d.unbind(-1)
    a = (dx * dx + dz * dz).clamp_min(_TINY)  # vertical rays: the side interval becomes huge
    b = rx * dx + rz * dz
    disc = b * b - a * (rx * rx + rz * rz - r * r)
    s = disc.clamp_min(0.0).sqrt()
    inv_dy = 1.0 / _nonzero(dy)
    ta, tb = (-half_height - ry) * inv_dy, (half_height - ry) * inv_dy
    t_near = torch.maximum((-b - s) / a, torch.minimum(ta, tb))
    t_far = torch.minimum((-b + s) / a, torch.maximum(ta, tb))
    return _nearest_positive(t_near, t_far, (disc >= 0) & (t_near <= t_far))


def ray_ground(
    o: Tensor,  # [..., 3]
    d: Tensor,  # [..., 3] unit
    ground_radius: float,
) -> Tensor:  # [...]
    """The floor disc ``y = GROUND_Y``, ``x^2 + z^2 <= ground_radius^2``, seen from above only."""
    t = (GROUND_Y - o[..., 1]) / _nonzero(d[..., 1])
    hx, hz = o[..., 0] + t * d[..., 0], o[..., 2] + t * d[..., 2]
    hit = (t > HIT_EPS) & (o[..., 1] < GROUND_Y) & (hx * hx + hz * hz <= ground_radius**2)
    return torch.where(hit, t, torch.full_like(t, _INF))


def _tangent_range(
    x: Tensor,  # [...] sphere centre along one image axis (camera frame)
    z: Tensor,  # [...] sphere centre depth
    r: Tensor,  # [...] radius
) -> tuple[Tensor, Tensor]:  # lowest and highest x/z slope [...], [...]
    """Range of slopes k = x/z of the planes through the camera tangent to a sphere (centre x, z; radius r)
    in front of it: the exact extent of the sphere's image along one image axis."""
    zz = (z * z - r * r).clamp_min(_TINY)
    root = (x * x + z * z - r * r).clamp_min(0.0).sqrt()
    return (x * z - r * root) / zz, (x * z + r * root) / zz


def screen_candidates(
    c2w: Tensor,  # [B, 4, 4]
    K: Tensor,  # [B, 3, 3]
    height: int,
    width: int,
    centres: Tensor,  # [B, N, 3]
    bound: Tensor,  # [N] bounding-sphere radii
) -> Tensor:  # [B, H, W, N] bool: the pixel centre lies in the object's bounding rectangle
    """Pixel-centre rays that may hit each object: the image-space bounding box of its bounding sphere
    (separable in u and v, so the per-pixel work is one AND)."""
    cam = (centres - c2w[:, None, :3, 3]) @ c2w[:, :3, :3]  # [B, N, 3] in camera axes
    x, y, z = cam.unbind(-1)
    front = z > bound * (1 + 1e-4)
    kx = _tangent_range(x, z, bound)
    ky = _tangent_range(y, z, bound)
    fx, fy, cx, cy = (K[:, i, j, None] for i, j in ((0, 0), (1, 1), (0, 2), (1, 2)))
    u = torch.arange(width, dtype=cam.dtype)[None, :, None] + 0.5  # [1, W, 1]
    v = torch.arange(height, dtype=cam.dtype)[None, :, None] + 0.5
    margin = 1e-3  # pixels; float slack so a grazing hit is never culled
    in_u = (u >= (fx * kx[0] + cx - margin)[:, None]) & (u <= (fx * kx[1] + cx + margin)[:, None])
    in_v = (v >= (fy * ky[0] + cy - margin)[:, None]) & (v <= (fy * ky[1] + cy + margin)[:, None])
    # A sphere reaching behind the camera plane has no bounded image: test it everywhere.
    straddles = (~front & (z > -bound))[:, None]
    in_u, in_v = (in_u & front[:, None]) | straddles, (in_v & front[:, None]) | straddles
    return in_v[:, :, None, :] & in_u[:, None, :, :]


def parallel_candidates(
    p: Tensor,  # [B, P, 3] ray origins
    valid: Tensor,  # [B, P] bool, rays to test at all
    direction: Tensor,  # [3] unit direction shared by all rays (e.g. towards the light)
    centres: Tensor,  # [B, N, 3]
    bound: Tensor,  # [N]
) -> Tensor:  # [B, P, N] bool
    """Parallel rays (shadow rays) that may hit each object: the object's bounding disc in the plane
    orthogonal to ``direction``, and not entirely behind the origin."""
    helper = torch.tensor([1.0, 0.0, 0.0]) if direction[0].abs() < 0.9 else torch.tensor([0.0, 0.0, 1.0])
    e1 = torch.linalg.cross(direction, helper)
    e1 = e1 / e1.norm()
    basis = torch.stack([e1, torch.linalg.cross(direction, e1), direction], -1)  # [3, 3]
    pp, cp = p @ basis, centres @ basis  # [B, P, 3], [B, N, 3]
    d1 = pp[..., 0:1] - cp[:, None, :, 0]
    d2 = pp[..., 1:2] - cp[:, None, :, 1]
    return (d1 * d1 + d2 * d2 <= bound * bound) & (pp[..., 2:3] < cp[:, None, :, 2] + bound) & valid[..., None]


def exact_pair_hits(
    scene: ProceduralScene,
    o: Tensor,  # [Q, 3]
    d: Tensor,  # [Q, 3]
    c: Tensor,  # [Q, 3] object centres
    cos: Tensor,  # [Q]
    sin: Tensor,  # [Q]
    obj: Tensor,  # [Q] object index
) -> Tensor:  # [Q] hit distance, inf on a miss
    kind, he = scene.kind[obj], scene.half_extent[obj]
    t = torch.full_like(cos, _INF)
    for k in (SPHERE, BOX, CYLINDER):
        sel = (kind == k).nonzero(as_tuple=True)[0]
        if sel.numel() == 0:
            continue
        args = o[sel], d[sel], c[sel]
        if k == SPHERE:
            t[sel] = ray_sphere(*args, he[sel, 0])
        elif k == BOX:
            t[sel] = ray_box(*args, cos[sel], sin[sel], he[sel])
        else:
            t[sel] = ray_cylinder(*args, he[sel, 0], he[sel, 1])
    return t


def resolve_candidates(
    scene: ProceduralScene,
    candidates: Tensor,  # [B, P, N] bool (any layout that flattens to rays x objects)
    o: Tensor,  # [B, P, 3] or [B, 1, 3] ray origins
    d: Tensor,  # [B, P, 3] or [3] unit directions
    centres: Tensor,  # [B, N, 3] object centres at each camera's time
    cos: Tensor,  # [B, N]
    sin: Tensor,  # [B, N]
    any_hit: bool = False,
) -> tuple[Tensor, Tensor]:  # nearest t [B * P] (inf: miss), object index [B * P] (-1: miss or any_hit)
    """Exact intersections of the candidate pairs only, reduced to the nearest hit per ray."""
    n_cam, n_obj = centres.shape[0], centres.shape[1]
    n_ray = math.prod(candidates.shape[1:-1])
    t_best = torch.full((n_cam * n_ray,), _INF)
    idx = torch.full((n_cam * n_ray,), -1, dtype=torch.long)
    if n_obj == 0:
        return t_best, idx
    ray, obj = candidates.reshape(-1, n_obj).nonzero(as_tuple=True)
    cam = torch.div(ray, n_ray, rounding_mode="floor")
    o_q = o.reshape(-1, 3)[cam] if o.shape[1] == 1 else o.reshape(-1, 3)[ray]
    d_q = d.expand(ray.shape[0], 3) if d.ndim == 1 else d.reshape(-1, 3)[ray]
    t = exact_pair_hits(scene, o_q, d_q, centres[cam, obj], cos[cam, obj], sin[cam, obj], obj)
    t_best.scatter_reduce_(0, ray, t, "amin")
    if not any_hit:  # which object gave the minimum (largest index on exact ties: deterministic)
        win = torch.isfinite(t) & (t == t_best[ray])
        idx.scatter_reduce_(0, ray[win], obj[win], "amax")
    return t_best, idx


# Camera-z depth reported for rays that hit nothing (world units): beyond every floor hit, since
# the floor disc has radius <= 40 and sampled cameras stay within ~15 of the scene centre.
SKY_DEPTH = 100.0


def cast_rays(
    scene: ProceduralScene,
    c2w: Tensor,  # [B, 4, 4] cameras
    K: Tensor,  # [B, 3, 3] intrinsics of the (height, width) image
    height: int,
    width: int,
    centres: Tensor,  # [B, N, 3] object centres at each camera's time
    yaw: Tensor,  # [B, N]
    shadows: bool = True,
) -> tuple[Tensor, Tensor]:  # rgb [B, H * W, 3] in [0, 1], camera-z depth [B, H * W]
    n_cam, n_pix = c2w.shape[0], height * width
    o, d = pixel_rays(c2w, K, height, width)
    o, d = o[:, 0, :1].reshape(-1, 3), d.reshape(-1, 3)  # [B, 3], [R, 3]
    cam = torch.arange(n_cam).repeat_interleave(n_pix)  # [R] camera of each ray
    cos, sin = yaw.cos(), yaw.sin()
    bound = scene.bounding_radius()
    cand = screen_candidates(c2w, K, height, width, centres, bound)
    t_obj, idx = resolve_candidates(scene, cand, o[:, None], d, centres, cos, sin)
    t_gnd = ray_ground(o[cam], d, scene.ground_radius)
    is_obj = t_obj < t_gnd
    t = torch.minimum(t_obj, t_gnd)
    hit = torch.isfinite(t)
    t = torch.where(hit, t, torch.zeros_like(t))
    p = o[cam] + t[:, None] * d  # [R, 3]
    albedo, normal = torch.empty_like(d), torch.tensor([0.0, -1.0, 0.0]).repeat(d.shape[0], 1)

    # Objects: local frame, normal and texture of the object each ray hit.
    oi = is_obj.nonzero(as_tuple=True)[0]
    ob, cb = idx[oi], cam[oi]
    cs, sn = cos[cb, ob], sin[cb, ob]
    rel = p[oi] - centres[cb, ob]
    qx, qz = to_local_xz(rel[:, 0], rel[:, 2], cs, sn)
    q = torch.stack([qx, rel[:, 1], qz], dim=-1)
    n_loc = object_normals(scene.kind[ob], q, scene.half_extent[ob])
    n_obj = torch.stack([cs * n_loc[:, 0] + sn * n_loc[:, 2], n_loc[:, 1], -sn * n_loc[:, 0] + cs * n_loc[:, 2]], -1)
    facing = (n_obj * d[oi]).sum(-1).abs().clamp_min(0.25)
    v = surface_texture(scene, ob, q, t[oi] / K[cb, 0, 0] / facing)[:, None]
    albedo[oi] = scene.albedo_a[ob] * (1 - v) + scene.albedo_b[ob] * v
    normal[oi] = n_obj

    # Floor: anti-aliased checker tiles.
    gi = (hit & ~is_obj).nonzero(as_tuple=True)[0]
    pg, tile = p[gi], scene.ground_tile
    s = torch.sin(torch.pi * pg[:, 0] / tile) * torch.sin(torch.pi * pg[:, 2] / tile)
    footprint = t[gi] / K[cam[gi], 0, 0] / d[gi, 1].abs().clamp_min(0.05)
    v = soft_step(s, torch.pi * footprint / tile)[:, None]
    albedo[gi] = scene.ground_a * (1 - v) + scene.ground_b * v

    light = scene.light_dir
    lambert = (normal @ light).clamp_min(0.0)
    if shadows and scene.num_objects:
        shadow_o = (p + 1e-3 * normal).reshape(n_cam, n_pix, 3)
        cand = parallel_candidates(shadow_o, hit.reshape(n_cam, n_pix), light, centres, bound)
        t_shadow, _ = resolve_candidates(scene, cand, shadow_o, light, centres, cos, sin, any_hit=True)
        lambert = torch.where(torch.isfinite(t_shadow), torch.zeros_like(lambert), lambert)
    ambient = scene.ambient * (0.85 - 0.15 * normal[:, 1])  # surfaces facing up see more sky
    rgb = albedo * (ambient + (1 - scene.ambient) * lambert)[:, None]
    # Haze towards the edge of the floor disc so it melts into the horizon.
    fog = ((pg[:, [0, 2]].norm(dim=-1) / scene.ground_radius - 0.35) / 0.65).clamp(0.0, 1.0)
    fog = (fog * fog * (3 - 2 * fog))[:, None]
    rgb[gi] = rgb[gi] * (1 - fog) + scene.sky_horizon * fog
    si = (~hit).nonzero(as_tuple=True)[0]
    rgb[si] = sky_colour(scene, d[si])
    depth = torch.where(hit, t * (d * c2w[cam, :3, 2]).sum(-1), torch.full_like(t, SKY_DEPTH))
    return rgb.clamp(0.0, 1.0).reshape(n_cam, n_pix, 3), depth.reshape(n_cam, n_pix)
