"""A small colourful Gaussian scene to try the renderer without data.

A snowman, a fir tree with a star, a rainbow ring on a post, all standing on a checkered disc.
World up is -y (lyra.render.cameras), so "above the ground" means negative y; the ground is the
plane y = 0. Shading is baked into the colours (one directional light) so shapes read in 3D.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lyra.render.gaussians import Gaussians

# Light arrives from above (-y), slightly left and in front (-z, where the default camera is).
_LIGHT = torch.tensor([-0.35, -1.0, -0.55]) / torch.tensor([-0.35, -1.0, -0.55]).norm()


def _splat(area: float, count: int) -> float:
    """Splat std of ``count`` Gaussians spread over ``area``: 0.6 x their mean spacing covers the
    surface without holes; larger splats only add overlap, which is what the CPU compositor pays for."""
    return 0.6 * math.sqrt(area / count)


def _unit(v: Tensor) -> Tensor:  # [..., 3]
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def _shade(color: Tensor, normal: Tensor) -> Tensor:  # [N, 3], [N, 3] -> [N, 3]
    lambert = (normal @ _LIGHT).clamp_min(0.0)
    return (color * (0.45 + 0.6 * lambert[:, None])).clamp(0.0, 1.0)


def _sphere(n: int, center: tuple, radius: float, g: torch.Generator) -> tuple[Tensor, Tensor]:
    normal = _unit(torch.randn(n, 3, generator=g))
    return torch.tensor(center) + radius * normal, normal


def _cone(n: int, base: tuple, radius: float, height: float, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """Lateral surface of an upright cone (apex up, i.e. at base - height * y), area-uniform."""
    frac = torch.rand(n, generator=g).sqrt()  # distance from the apex, area grows linearly with it
    phi = 2 * math.pi * torch.rand(n, generator=g)
    r = radius * frac
    pts = torch.stack([r * torch.cos(phi), -height * (1 - frac), r * torch.sin(phi)], -1) + torch.tensor(base)
    slope = radius / height
    normal = _unit(torch.stack([torch.cos(phi), -slope * torch.ones(n), torch.sin(phi)], -1))
    return pts, normal


def _torus(n: int, center: tuple, major: float, minor: float, g: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """A ring standing in the xy plane (facing the default camera); also returns its angle for hue."""
    theta = 2 * math.pi * torch.rand(n, generator=g)
    phi = 2 * math.pi * torch.rand(n, generator=g)
    ring = torch.stack([torch.cos(theta), torch.sin(theta), torch.zeros(n)], -1)
    normal = torch.cos(phi)[:, None] * ring + torch.sin(phi)[:, None] * torch.tensor([0.0, 0.0, 1.0])
    return torch.tensor(center) + major * ring + minor * normal, normal, theta


def _hue(theta: Tensor) -> Tensor:  # [N] radians -> [N, 3] saturated rainbow
    k = torch.stack([theta, theta - 2 * math.pi / 3, theta + 2 * math.pi / 3], -1)
    return 0.5 + 0.5 * torch.cos(k)


def demo_scene(n: int = 20000, seed: int = 0) -> Gaussians:
    """``n`` RGB Gaussians (unbatched), deterministic for a seed; about 3.2 x 1.4 x 3.2 world units."""
    if n < 200:
        raise ValueError(f"demo_scene needs n >= 200 Gaussians to draw every object, got {n}")
    g = torch.Generator().manual_seed(seed)
    # Share of Gaussians per object, roughly by surface area; the ground takes the rest (~46 %).
    shares = {"snow": 0.2, "nose": 0.005, "tree": 0.12, "trunk": 0.015, "star": 0.01,
              "ring": 0.14, "post": 0.02, "eyes": 0.02}
    counts = {k: max(4, int(v * n)) for k, v in shares.items()}
    parts = []  # (means [M, 3], colours [M, 3], scale per Gaussian)

    # Snowman: three stacked balls, largest at the bottom.
    balls = ((0.35, -0.33), (0.25, -0.88), (0.17, -1.27))
    area = sum(rb * rb for rb, _ in balls)
    for rb, yb in balls:
        k = max(4, int(counts["snow"] * rb * rb / area))
        pts, normal = _sphere(k, (-0.7, yb, 0.1), rb, g)
        snow = torch.tensor([0.95, 0.95, 1.0]).expand(k, 3)
        parts.append((pts, _shade(snow, normal), _splat(4 * math.pi * rb * rb, k)))
    for ex in (-0.06, 0.06):  # coal eyes on the head's front (-z)
        k = counts["eyes"] // 2
        pts, _ = _sphere(k, (-0.7 + ex, -1.31, 0.1 - 0.155), 0.025, g)
        parts.append((pts, torch.full((k, 3), 0.05), 0.012))
    k = counts["nose"]
    t = torch.rand(k, generator=g)
    pts = torch.tensor([-0.7, -1.26, 0.1 - 0.17]) + torch.stack(
        [0.03 * (1 - t) * torch.randn(k, generator=g), 0.03 * (1 - t) * torch.randn(k, generator=g), -0.18 * t], -1)
    parts.append((pts, torch.tensor([1.0, 0.5, 0.05]).expand(k, 3), 0.02))

    # Fir tree with a trunk and a star on top.
    k = counts["trunk"]
    pts, normal = _cone(k, (0.25, 0.0, 0.8), 0.08, 0.25, g)
    bark = torch.tensor([0.45, 0.28, 0.12]).expand(k, 3)
    parts.append((pts, _shade(bark, normal), _splat(math.pi * 0.08 * math.hypot(0.08, 0.25), k)))
    k = counts["tree"]
    pts, normal = _cone(k, (0.25, -0.2, 0.8), 0.4, 0.95, g)
    needles = torch.tensor([0.1, 0.6, 0.2]).expand(k, 3)
    parts.append((pts, _shade(needles, normal), _splat(math.pi * 0.4 * math.hypot(0.4, 0.95), k)))
    k = counts["star"]
    pts, normal = _sphere(k, (0.25, -1.2, 0.8), 0.07, g)
    parts.append((pts, _shade(torch.tensor([1.0, 0.85, 0.1]).expand(k, 3), normal), 0.03))

    # Rainbow ring on a post.
    k = counts["ring"]
    pts, normal, theta = _torus(k, (0.75, -0.95, -0.3), 0.38, 0.08, g)
    parts.append((pts, _shade(_hue(theta), normal), _splat(4 * math.pi ** 2 * 0.38 * 0.08, k)))
    k = counts["post"]
    h = 0.95 - 0.38 - 0.08
    phi, y = 2 * math.pi * torch.rand(k, generator=g), -h * torch.rand(k, generator=g)
    normal = torch.stack([torch.cos(phi), torch.zeros(k), torch.sin(phi)], -1)
    parts.append((torch.tensor([0.75, 0.0, -0.3]) + torch.stack([0.03 * normal[:, 0], y, 0.03 * normal[:, 2]], -1),
                  _shade(torch.tensor([0.5, 0.5, 0.55]).expand(k, 3), normal), _splat(2 * math.pi * 0.03 * h, k)))

    # Checkered ground disc.
    m = n - sum(len(p) for p, _, _ in parts)  # the ground takes the rest: exactly n in all
    r, phi = 1.6 * torch.rand(m, generator=g).sqrt(), 2 * math.pi * torch.rand(m, generator=g)
    pts = torch.stack([r * torch.cos(phi), torch.zeros(m), r * torch.sin(phi)], -1)
    check = ((pts[:, 0] / 0.4).floor() + (pts[:, 2] / 0.4).floor()).remainder(2)[:, None]
    color = torch.where(check > 0, torch.tensor([0.35, 0.55, 0.3]), torch.tensor([0.85, 0.85, 0.75]))
    parts.append((pts, _shade(color, torch.tensor([0.0, -1.0, 0.0]).expand(m, 3)), _splat(math.pi * 1.6 ** 2, m)))

    means = torch.cat([p for p, _, _ in parts])
    colors = torch.cat([c for _, c, _ in parts])
    scales = torch.cat([torch.full((len(p), 3), s) for p, _, s in parts])
    scales[-m:, 1] = 0.002  # the ground splats lie flat
    jitter = torch.exp(0.15 * torch.randn(len(means), 1, generator=g))  # avoid a visibly regular texture
    quats = torch.zeros(len(means), 4)
    quats[:, 0] = 1.0
    opacities = torch.full((len(means),), 0.95)
    return Gaussians(means, quats, scales * jitter, opacities, colors)
