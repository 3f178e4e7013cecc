"""Procedural toy scenes: a tiled floor, a sky and 4-16 textured primitives, sampled from a seed.

World frame follows lyra.render.cameras: up is -y, so the floor is the plane ``y = GROUND_Y`` and
objects stand on it at ``y < GROUND_Y``. Objects are stored sorted by kind (spheres, boxes,
cylinders) so the ray tracer can intersect each kind as one contiguous block.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

SPHERE, BOX, CYLINDER = 0, 1, 2
KIND_NAMES = ("sphere", "box", "cylinder")
SOLID, CHECKER, STRIPES, MARBLE = 0, 1, 2, 3
TEXTURE_WORDS = ("", "checkered", "striped", "marbled")
GROUND_Y = 0.0

# Named colours so that captions say what the image shows.
PALETTE: dict[str, tuple[float, float, float]] = {
    "red": (0.80, 0.15, 0.12), "orange": (0.92, 0.50, 0.10), "yellow": (0.93, 0.80, 0.15),
    "green": (0.20, 0.62, 0.22), "teal": (0.10, 0.58, 0.58), "blue": (0.15, 0.32, 0.80),
    "purple": (0.50, 0.22, 0.68), "pink": (0.92, 0.48, 0.64), "white": (0.90, 0.90, 0.88),
    "brown": (0.50, 0.32, 0.18), "black": (0.10, 0.10, 0.12),
}
FLOOR_PALETTE: dict[str, tuple[float, float, float]] = {
    "grey": (0.55, 0.55, 0.55), "beige": (0.72, 0.64, 0.50), "green": (0.40, 0.55, 0.35),
    "brown": (0.45, 0.35, 0.26), "blue": (0.45, 0.52, 0.62),
}
NUMBER_WORDS = ("no", "a", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen")


@dataclass
class ProceduralScene:
    """Everything needed to ray-trace one scene at any time ``t`` in [0, 1]."""

    kind: Tensor  # [N] long, SPHERE / BOX / CYLINDER, sorted ascending
    position: Tensor  # [N, 3] centre of the object's motion path (its rest position if static)
    half_extent: Tensor  # [N, 3] sphere (r, r, r); box half sizes; cylinder (r, half height, r)
    yaw: Tensor  # [N] rotation about the vertical axis at t = 0 (radians)
    albedo_a: Tensor  # [N, 3] main colour
    albedo_b: Tensor  # [N, 3] second texture colour
    texture: Tensor  # [N] long, SOLID / CHECKER / STRIPES / MARBLE
    tex_freq: Tensor  # [N] texture cycles per world unit
    tex_dirs: Tensor  # [N, 3, 3] unit directions (object frame) for stripes and marble
    tex_phase: Tensor  # [N, 3]
    motion_amp: Tensor  # [N, 2] x / z amplitude of the sinusoidal path (zero: static)
    motion_freq: Tensor  # [N] path cycles over t in [0, 1]
    motion_phase: Tensor  # [N, 2]
    spin: Tensor  # [N] yaw gained over t in [0, 1] (radians)
    ground_a: Tensor = field(default_factory=lambda: torch.tensor(FLOOR_PALETTE["grey"]))  # [3]
    ground_b: Tensor = field(default_factory=lambda: torch.tensor((0.75, 0.75, 0.75)))  # [3]
    ground_tile: float = 0.5
    ground_radius: float = 20.0  # the floor is a disc (<= 40 when sampled); beyond it rays see the sky
    sky_horizon: Tensor = field(default_factory=lambda: torch.tensor((0.85, 0.88, 0.92)))  # [3]
    sky_zenith: Tensor = field(default_factory=lambda: torch.tensor((0.35, 0.55, 0.85)))  # [3]
    light_dir: Tensor = field(default_factory=lambda: torch.tensor((0.3, -0.8, -0.5)))  # [3] towards the light
    ambient: float = 0.35
    caption: str = ""

    def __post_init__(self) -> None:
        self.light_dir = self.light_dir / self.light_dir.norm()

    @property
    def num_objects(self) -> int:
        return int(self.kind.shape[0])

    def bounding_radius(self) -> Tensor:  # [N] radius of a sphere around each object (at rest)
        he = self.half_extent
        return torch.where(self.kind == SPHERE, he[:, 0],
                           torch.where(self.kind == BOX, he.norm(dim=-1), torch.hypot(he[:, 0], he[:, 1])))

    def poses_at(self, time: Tensor) -> tuple[Tensor, Tensor]:  # [B] -> centres [B, N, 3], yaw [B, N]
        """Object centres and yaw at scene times ``time``; motion is horizontal, so objects stay on the floor."""
        t = time.to(torch.float32)[:, None]
        angle = 2 * math.pi * self.motion_freq * t  # [B, N]
        offs = self.motion_amp * torch.sin(angle[..., None] + self.motion_phase)  # [B, N, 2]
        centres = self.position.expand(t.shape[0], -1, -1).clone()
        centres[..., 0] += offs[..., 0]
        centres[..., 2] += offs[..., 1]
        return centres, self.yaw + self.spin * t

    @classmethod
    def simple(
        cls,
        kinds: list[str],
        position: Tensor,  # [N, 3]
        half_extent: Tensor,  # [N, 3]
        **overrides,
    ) -> "ProceduralScene":
        """Plain-coloured static objects, e.g. for tests; pass the objects already sorted by kind."""
        n = len(kinds)
        kind = torch.tensor([KIND_NAMES.index(k) for k in kinds], dtype=torch.long)
        if (kind.diff() < 0).any():
            raise ValueError(f"objects must be sorted spheres, boxes, cylinders; got {kinds}")
        z = torch.zeros(n)
        fields = dict(
            kind=kind, position=torch.as_tensor(position, dtype=torch.float32),
            half_extent=torch.as_tensor(half_extent, dtype=torch.float32), yaw=z.clone(),
            albedo_a=torch.full((n, 3), 0.7), albedo_b=torch.full((n, 3), 0.3),
            texture=torch.zeros(n, dtype=torch.long), tex_freq=torch.ones(n),
            tex_dirs=torch.eye(3).expand(n, 3, 3).clone(), tex_phase=torch.zeros(n, 3),
            motion_amp=torch.zeros(n, 2), motion_freq=torch.ones(n), motion_phase=torch.zeros(n, 2),
            spin=z.clone(),
        )
        fields.update(overrides)
        return cls(**fields)


def describe(
    kind: Tensor,  # [N] object kinds
    colour_names: list[str],  # N palette names
    texture: Tensor,  # [N] texture kinds
    floor_name: str,
    dynamic: bool,
) -> str:
    """A short caption such as "a red checkered sphere and two blue boxes on a grey floor"."""
    groups: dict[tuple[str, str, int], int] = {}
    for k, c, tx in zip(kind.tolist(), colour_names, texture.tolist()):
        key = (c, TEXTURE_WORDS[tx], k)
        groups[key] = groups.get(key, 0) + 1
    parts = []
    for (colour, tex, k), count in groups.items():
        noun = KIND_NAMES[k] + ("es" if k == BOX and count > 1 else "s" if count > 1 else "")
        number = NUMBER_WORDS[count] if count < len(NUMBER_WORDS) else str(count)
        words = [number, colour, tex, noun]
        if number == "a" and (colour or tex or noun)[0] in "aeiou":
            words[0] = "an"
        parts.append(" ".join(w for w in words if w))
    if len(parts) <= 1:
        objects = parts[0] if parts else "nothing"
    else:
        objects = ", ".join(parts[:-1]) + " and " + parts[-1]
    verb = " moving" if dynamic else ""
    return f"{objects}{verb} on a {floor_name} tiled floor"


# ---- what surfaces look like: normals, textures, sky -------------------------------------


def object_normals(
    kind: Tensor,  # [R] kind of the object each ray hit
    local: Tensor,  # [R, 3] hit point in the object's frame
    half: Tensor,  # [R, 3] that object's half extents
) -> Tensor:  # [R, 3] unit normals in the object's frame
    sphere = local / half[..., :1]
    # Box: the face whose slab the point is most outside of; cylinder: cap vs side the same way.
    ratio = local.abs() / half
    box = torch.nn.functional.one_hot(ratio.argmax(-1), 3).to(local.dtype) * local.sign()
    radial = torch.stack([local[..., 0], torch.zeros_like(local[..., 0]), local[..., 2]], -1)
    radial_len = radial.norm(dim=-1, keepdim=True)
    cap = torch.zeros_like(local)
    cap[..., 1] = local[..., 1].sign()
    on_cap = ratio[..., 1:2] >= radial_len / half[..., :1]
    cylinder = torch.where(on_cap, cap, radial / radial_len.clamp_min(1e-12))
    k = kind[..., None]
    n = torch.where(k == SPHERE, sphere, torch.where(k == BOX, box, cylinder))
    return n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def soft_step(
    s: Tensor,  # [R] signed pattern value, edges at zero crossings
    width: Tensor,  # [R] blur width in the units of s (about one pixel footprint)
) -> Tensor:  # [R] in [0, 1]
    # Anti-aliasing: far textures fade to their mean colour instead of flickering as noise.
    return (0.5 + 0.5 * s / width.clamp_min(0.05)).clamp(0.0, 1.0)


def surface_texture(
    scene: ProceduralScene,
    obj: Tensor,  # [R] object index of each hit
    q: Tensor,  # [R, 3] hit point in the object's frame (textures move and spin with the object)
    footprint: Tensor,  # [R] world size of one pixel on the surface
) -> Tensor:  # [R] mix weight of albedo_b, in [0, 1]
    tex, f = scene.texture[obj], scene.tex_freq[obj]
    proj = (q[:, None, :] * scene.tex_dirs[obj]).sum(-1)  # [R, 3]
    phase, tau = scene.tex_phase[obj], 2 * math.pi
    checker = soft_step(torch.sin(math.pi * f[:, None] * q).prod(-1), math.pi * f * footprint)
    stripes = soft_step(torch.sin(tau * f * proj[:, 0] + phase[:, 0]), tau * f * footprint)
    warp = 0.6 * torch.sin(tau * 1.7 * f * proj[:, 1] + phase[:, 1]) + 0.3 * torch.sin(tau * 2.9 * f * proj[:, 2])
    marble = (0.5 + 0.5 * torch.sin(tau * f * proj[:, 0] + 2.0 * warp + phase[:, 0])) ** 2
    return torch.where(tex == CHECKER, checker,
                       torch.where(tex == STRIPES, stripes, torch.where(tex == MARBLE, marble, 0.0)))


def sky_colour(
    scene: ProceduralScene,
    d: Tensor,  # [R, 3] unit ray directions
) -> Tensor:  # [R, 3]
    up = (-d[..., 1:2]).clamp(0.0, 1.0) ** 0.6
    sky = scene.sky_horizon + (scene.sky_zenith - scene.sky_horizon) * up
    sun = (d @ scene.light_dir).clamp_min(0.0)[..., None] ** 48
    return (sky + 0.35 * sun).clamp(0.0, 1.0)


def _uniform(g: torch.Generator, lo: float, hi: float, *shape: int) -> Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=g)


def _place_footprints(g: torch.Generator, radii: Tensor, gap: float = 0.08) -> Tensor:  # [N] -> [N, 2]
    """Non-overlapping discs in a disc around the origin (rejection sampling, largest first)."""
    n = radii.shape[0]
    # Start from a loose packing density and grow the layout until everything fits.
    layout = math.sqrt(float(((radii + gap) ** 2).sum()) / 0.4)
    order = torch.argsort(radii, descending=True, stable=True)
    while True:
        xz = torch.zeros(n, 2)
        ok = True
        for k, i in enumerate(order.tolist()):
            reach = max(layout - float(radii[i]), 0.0)
            rho = reach * torch.rand(64, generator=g).sqrt()
            phi = 2 * math.pi * torch.rand(64, generator=g)
            cand = torch.stack([rho * phi.cos(), rho * phi.sin()], dim=-1)  # [64, 2]
            placed = order[:k]
            if k > 0:
                dist = (cand[:, None] - xz[placed][None]).norm(dim=-1)  # [64, k]
                free = (dist >= radii[placed] + radii[i] + gap).all(dim=-1)
            else:
                free = torch.ones(64, dtype=torch.bool)
            if not free.any():
                ok = False
                break
            xz[i] = cand[int(free.nonzero()[0])]
        if ok:
            return xz - 0.5 * (xz.amax(0) + xz.amin(0))  # centre the layout on the origin
        layout *= 1.1


def sample_scene(g: torch.Generator, dynamic: bool, num_objects: tuple[int, int]) -> ProceduralScene:
    """Draw a scene from ``g``; the same generator state always gives the bitwise same scene."""
    n = int(torch.randint(num_objects[0], num_objects[1] + 1, (), generator=g))
    kind = torch.randint(0, 3, (n,), generator=g).sort().values
    he = torch.empty(n, 3)
    r_sphere = _uniform(g, 0.25, 0.55, n)
    box = torch.stack([_uniform(g, 0.18, 0.45, n), _uniform(g, 0.18, 0.55, n), _uniform(g, 0.18, 0.45, n)], -1)
    cyl_r, cyl_h = _uniform(g, 0.15, 0.38, n), _uniform(g, 0.3, 0.8, n)
    he[:] = box
    he[kind == SPHERE] = r_sphere[kind == SPHERE, None].expand(-1, 3)
    he[kind == CYLINDER] = torch.stack([cyl_r, cyl_h, cyl_r], -1)[kind == CYLINDER]
    yaw = _uniform(g, 0.0, 2 * math.pi, n)

    motion_amp = torch.zeros(n, 2)
    spin = torch.zeros(n)
    motion_freq = _uniform(g, 0.5, 1.0, n)
    motion_phase = _uniform(g, 0.0, 2 * math.pi, n, 2)
    if dynamic:
        moving = torch.rand(n, generator=g) < 0.75
        moving[int(torch.randint(0, n, (), generator=g))] = True  # a dynamic scene always moves
        motion_amp = _uniform(g, 0.1, 0.3, n, 2) * moving[:, None]
        spin = _uniform(g, -math.pi, math.pi, n) * moving

    footprint = torch.where(kind == BOX, torch.hypot(he[:, 0], he[:, 2]), he[:, 0])
    xz = _place_footprints(g, footprint + motion_amp.norm(dim=-1))
    position = torch.stack([xz[:, 0], GROUND_Y - he[:, 1], xz[:, 1]], dim=-1)

    names = list(PALETTE)
    colour_idx = torch.randint(0, len(names), (n,), generator=g)
    other_idx = (colour_idx + torch.randint(1, len(names), (n,), generator=g)) % len(names)
    base = torch.tensor([PALETTE[c] for c in names])
    albedo_a = (base[colour_idx] * _uniform(g, 0.9, 1.1, n, 3)).clamp(0.0, 1.0)
    texture = torch.randint(0, 4, (n,), generator=g)
    second = torch.where(torch.rand(n, 1, generator=g) < 0.5, base[other_idx], 0.4 * albedo_a)
    albedo_b = torch.where((texture == MARBLE)[:, None], 0.45 * albedo_a + 0.55, second)
    tex_freq = torch.where(texture == CHECKER, _uniform(g, 2.0, 3.5, n),
                           torch.where(texture == STRIPES, _uniform(g, 2.5, 5.0, n), _uniform(g, 1.5, 3.0, n)))
    tex_dirs = torch.randn(n, 3, 3, generator=g)
    tex_dirs = tex_dirs / tex_dirs.norm(dim=-1, keepdim=True)
    tex_phase = _uniform(g, 0.0, 2 * math.pi, n, 3)

    floor_names = list(FLOOR_PALETTE)
    floor_name = floor_names[int(torch.randint(0, len(floor_names), (), generator=g))]
    ground_a = torch.tensor(FLOOR_PALETTE[floor_name])
    zenith = torch.stack([_uniform(g, 0.22, 0.42), _uniform(g, 0.42, 0.62), _uniform(g, 0.75, 0.95)]).squeeze(-1)
    az, el = float(_uniform(g, 0.0, 2 * math.pi)), float(_uniform(g, math.radians(35), math.radians(70)))
    layout = float((xz.norm(dim=-1) + footprint + motion_amp.norm(dim=-1)).max())
    return ProceduralScene(
        kind=kind, position=position, half_extent=he, yaw=yaw, albedo_a=albedo_a, albedo_b=albedo_b,
        texture=texture, tex_freq=tex_freq, tex_dirs=tex_dirs, tex_phase=tex_phase, motion_amp=motion_amp,
        motion_freq=motion_freq, motion_phase=motion_phase, spin=spin,
        ground_a=ground_a, ground_b=(ground_a * 1.3 + 0.05).clamp(max=1.0),
        ground_tile=float(_uniform(g, 0.4, 0.8)), ground_radius=min(max(12.0, 6.0 * layout), 40.0),
        sky_horizon=0.3 * zenith + 0.7 * torch.tensor((0.95, 0.95, 0.95)), sky_zenith=zenith,
        light_dir=torch.tensor((math.cos(el) * math.sin(az), -math.sin(el), math.cos(el) * math.cos(az))),
        ambient=float(_uniform(g, 0.25, 0.4)),
        caption=describe(kind, [names[i] for i in colour_idx.tolist()], texture, floor_name, dynamic),
    )
