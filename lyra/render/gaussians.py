"""`Gaussians`: a typed container for 3D Gaussian splats, shaped like gsplat's rasterization inputs.

Activated values throughout (what a rasterizer consumes): linear scales, opacities in [0, 1],
wxyz quaternions (any norm). Colours are plain RGB ``[..., N, 3]`` or SH coefficients
``[..., N, K, 3]`` with ``K = (degree + 1) ** 2``; which one is told by rank relative to ``means``,
so an unbatched SH tensor ``[N, K, 3]`` is never mistaken for batched RGB ``[B, N, 3]``.
Storage encodings (logit, log, RGB as SH DC) belong to ``lyra.render.ply``, not here.
"""

from __future__ import annotations

import math
from dataclasses import KW_ONLY, InitVar, dataclass
from typing import Any, Sequence

import torch
from torch import Tensor

_FIELDS = ("means", "quats", "scales", "opacities", "colors")


@dataclass(eq=False)
class Gaussians:
    means: Tensor  # [..., N, 3]
    quats: Tensor  # [..., N, 4] wxyz, not necessarily normalised
    scales: Tensor  # [..., N, 3] linear (not log), >= 0
    opacities: Tensor  # [..., N] in [0, 1] (not logit)
    colors: Tensor  # [..., N, 3] RGB or [..., N, K, 3] SH coefficients
    _: KW_ONLY
    # False skips the value checks (finiteness, ranges): they cost a device sync, and it lets
    # callers hold non-finite splats long enough to find them with finite_mask().
    check_values: InitVar[bool] = True

    def __post_init__(self, check_values: bool) -> None:
        self.validate(values=check_values)

    # ---- validation -------------------------------------------------------------------------

    def validate(self, values: bool = True) -> None:
        """Check shapes, dtypes and devices; with ``values`` also finiteness and ranges."""
        for name in _FIELDS:
            t = getattr(self, name)
            if not isinstance(t, Tensor):
                raise TypeError(f"Gaussians.{name} must be a torch.Tensor, got {type(t).__name__}")
            if not t.is_floating_point():
                raise TypeError(f"Gaussians.{name} must be floating point, got {t.dtype}; convert it with .float()")
        if self.means.ndim < 2 or self.means.shape[-1] != 3:
            raise ValueError(f"Gaussians.means must be [..., N, 3], got {tuple(self.means.shape)}")
        lead = tuple(self.means.shape[:-1])  # (*batch, N)
        rgb = self.colors.ndim == len(lead) + 1
        expected = {
            "quats": lead + (4,),
            "scales": lead + (3,),
            "opacities": lead,
            "colors": lead + ((3,) if rgb else tuple(self.colors.shape[-2:-1]) + (3,)),
        }
        for name, want in expected.items():
            got = tuple(getattr(self, name).shape)
            if got != want:
                hint = "[..., N, 3] RGB or [..., N, K, 3] SH" if name == "colors" else str(want)
                raise ValueError(
                    f"Gaussians.{name} has shape {got}, inconsistent with means {tuple(self.means.shape)} "
                    f"(batch {lead[:-1]}, N={lead[-1]}); expected {hint}"
                )
        if self.colors.ndim == self.means.ndim + 1:
            k = self.colors.shape[-2]
            if k < 1 or math.isqrt(k) ** 2 != k:
                raise ValueError(
                    f"Gaussians.colors has K={k} SH coefficients; K must be a perfect square (d + 1)^2 "
                    f"(1, 4, 9, 16 for degree 0..3)"
                )
        for name in _FIELDS[1:]:
            t = getattr(self, name)
            if t.device != self.means.device or t.dtype != self.means.dtype:
                raise ValueError(
                    f"Gaussians.{name} is {t.dtype} on {t.device} but means is {self.means.dtype} on "
                    f"{self.means.device}; move all fields to one dtype and device"
                )
        if values:
            self._validate_values()

    def _validate_values(self) -> None:
        for name in _FIELDS:
            bad = int((~torch.isfinite(getattr(self, name))).sum())
            if bad:
                raise ValueError(
                    f"Gaussians.{name} has {bad} non-finite values; build with check_values=False and "
                    f"drop them with g.select(g.finite_mask())"
                )
        if bool((self.scales < 0).any()):
            raise ValueError("Gaussians.scales has negative values; scales are linear, pass exp(log_scales)")
        if bool(((self.opacities < 0) | (self.opacities > 1)).any()):
            raise ValueError("Gaussians.opacities lie outside [0, 1]; they are not logits, pass sigmoid(logits)")

    # ---- shape facts ------------------------------------------------------------------------

    @property
    def batch_shape(self) -> torch.Size:
        return self.means.shape[:-2]

    @property
    def num_gaussians(self) -> int:
        return self.means.shape[-2]

    @property
    def sh_degree(self) -> int | None:
        """None for plain RGB colours, else the SH degree d with K = (d + 1)^2."""
        if self.colors.ndim == self.means.ndim:
            return None
        return math.isqrt(self.colors.shape[-2]) - 1

    @property
    def device(self) -> torch.device:
        return self.means.device

    @property
    def dtype(self) -> torch.dtype:
        return self.means.dtype

    def __repr__(self) -> str:
        return (
            f"Gaussians(N={self.num_gaussians}, batch_shape={tuple(self.batch_shape)}, "
            f"sh_degree={self.sh_degree}, dtype={self.dtype}, device={self.device})"
        )

    # ---- whole-container transforms -------------------------------------------------------------

    def _map(self, fn) -> "Gaussians":
        # Derived containers reuse checked (or deliberately unchecked) values: skip the value sync.
        return Gaussians(*(fn(getattr(self, n)) for n in _FIELDS), check_values=False)

    def to(self, *args: Any, **kwargs: Any) -> "Gaussians":
        """Same arguments as ``Tensor.to`` (device and/or dtype), applied to every field."""
        return self._map(lambda t: t.to(*args, **kwargs))

    def detach(self) -> "Gaussians":
        return self._map(Tensor.detach)

    def reshape_batch(self, *shape: int) -> "Gaussians":
        """The same Gaussians under another batch shape of as many sets (``[B*M]`` -> ``[B, M]``)."""
        if math.prod(shape) != math.prod(self.batch_shape):
            raise ValueError(f"cannot reshape batch {tuple(self.batch_shape)} to {shape}: the set count differs")
        return self._map(lambda t: t.reshape(*shape, *t.shape[len(self.batch_shape):]))

    def to_dict(self) -> dict[str, Tensor]:
        """Field tensors keyed like ``gsplat.rasterization``'s arguments (pass ``sh_degree`` separately)."""
        return {n: getattr(self, n) for n in _FIELDS}

    @classmethod
    def cat(cls, items: Sequence["Gaussians"], batch_dim: int | None = None) -> "Gaussians":
        """Concatenate along N (default; batch shapes must match), or along batch dim ``batch_dim``
        (the other batch dims and N must match); colour layouts (RGB / SH degree) must match."""
        items = list(items)
        if not items:
            raise ValueError("Gaussians.cat needs at least one Gaussians")
        first = items[0]
        for i, g in enumerate(items[1:], start=1):
            a = tuple(g.batch_shape) + (g.num_gaussians,)
            b = tuple(first.batch_shape) + (first.num_gaussians,)
            if batch_dim is None:
                a, b = a[:-1], b[:-1]
            else:
                a, b = a[:batch_dim] + a[batch_dim + 1:], b[:batch_dim] + b[batch_dim + 1:]
            if a != b or g.sh_degree != first.sh_degree:
                raise ValueError(
                    f"Gaussians.cat: item {i} has batch_shape {tuple(g.batch_shape)}, {g.num_gaussians} Gaussians and "
                    f"sh_degree {g.sh_degree}, item 0 has {tuple(first.batch_shape)}, {first.num_gaussians} and "
                    f"{first.sh_degree}; they must match but along the dim joined")
        dim = len(first.batch_shape) if batch_dim is None else batch_dim
        return cls(*(torch.cat([getattr(g, n) for g in items], dim=dim) for n in _FIELDS), check_values=False)

    # ---- indexing --------------------------------------------------------------------------------

    def __getitem__(self, idx: Any) -> "Gaussians":
        """Index the batch dims only (``g[0]`` -> one scene); pick Gaussians along N with ``select``."""
        key = idx if isinstance(idx, tuple) else (idx,)
        used = 0
        for k in key:
            if k is Ellipsis:
                raise IndexError("Gaussians[...] does not accept Ellipsis; index the batch dims explicitly")
            if k is not None:
                used += k.ndim if isinstance(k, Tensor) and k.dtype == torch.bool else 1
        if used > len(self.batch_shape):
            raise IndexError(
                f"Gaussians[...] indexes batch dims only, and batch_shape is {tuple(self.batch_shape)}; "
                f"use g.select(mask_or_indices) to pick Gaussians along N"
            )
        return self._map(lambda t: t[idx])

    def select(self, idx: Tensor | slice) -> "Gaussians":
        """Pick Gaussians along N.

        ``idx`` is a slice, a bool mask ``[N]`` or ``[*batch, N]`` (every batch element must keep the
        same count), or integer indices ``[M]`` (shared by the batch) or ``[*batch, M]``.
        """
        b = len(self.batch_shape)
        if isinstance(idx, slice):
            return self._map(lambda t: t[(slice(None),) * b + (idx,)])
        idx = torch.as_tensor(idx, device=self.device)
        if idx.dtype == torch.bool:
            idx = self._mask_to_indices(idx)
        elif idx.is_floating_point() or idx.is_complex():
            raise TypeError(f"select takes a bool mask or integer indices, got {idx.dtype}")
        idx = torch.where(idx < 0, idx + self.num_gaussians, idx)  # Python-style negative indices
        if idx.ndim != 1 and tuple(idx.shape[:-1]) != tuple(self.batch_shape):
            raise ValueError(
                f"select indices must be [M] or [*batch, M] with batch {tuple(self.batch_shape)}, "
                f"got {tuple(idx.shape)}"
            )
        lead = idx.reshape((1,) * b + idx.shape[-1:]) if idx.ndim == 1 else idx

        def gather(t: Tensor) -> Tensor:
            trailing = t.ndim - b - 1
            ix = lead.reshape(lead.shape + (1,) * trailing)
            return torch.take_along_dim(t, ix, dim=b)

        return self._map(gather)

    def _mask_to_indices(self, mask: Tensor) -> Tensor:  # [N] or [*batch, N] -> [M] or [*batch, M]
        if mask.ndim == 1:
            if mask.shape[0] != self.num_gaussians:
                raise ValueError(f"select mask has length {mask.shape[0]}, expected N={self.num_gaussians}")
            return mask.nonzero().squeeze(-1)
        if tuple(mask.shape) != tuple(self.means.shape[:-1]):
            raise ValueError(f"select mask must be [N] or {tuple(self.means.shape[:-1])}, got {tuple(mask.shape)}")
        counts = mask.sum(-1)
        if bool((counts != counts.reshape(-1)[0]).any()):
            raise ValueError(
                "select mask keeps a different number of Gaussians per batch element; the result would be "
                "ragged: index one scene first (g[i].select(mask[i]))"
            )
        keep = int(counts.reshape(-1)[0]) if counts.numel() else 0
        # A stable sort puts kept positions first while preserving their original order.
        return torch.sort((~mask).to(torch.uint8), dim=-1, stable=True).indices[..., :keep]

    def finite_mask(self) -> Tensor:  # [..., N] bool: True where every field of a Gaussian is finite
        b = len(self.batch_shape)
        mask = torch.ones(self.means.shape[:-1], dtype=torch.bool, device=self.device)
        for name in _FIELDS:
            t = torch.isfinite(getattr(self, name))
            mask &= t.flatten(start_dim=b + 1).all(-1) if t.ndim > b + 1 else t
        return mask

    # ---- pruning (Lyra keeps the top 20 % by opacity) -------------------------------------------------

    def prune_top_k(self, k: int) -> "Gaussians":
        """Keep the ``k`` most opaque Gaussians of each batch element, in their original order."""
        n = self.num_gaussians
        if not 0 <= k <= n:
            raise ValueError(f"prune_top_k: k={k} must lie in [0, N={n}]")
        top = torch.topk(self.opacities.detach(), k, dim=-1, sorted=False).indices
        return self.select(torch.sort(top, dim=-1).values)

    def prune_fraction(self, keep: float = 0.2) -> "Gaussians":
        """Keep ``round(keep * N)`` (at least one, when N > 0) most opaque Gaussians per batch element."""
        if not 0.0 < keep <= 1.0:
            raise ValueError(f"prune_fraction: keep={keep} must lie in (0, 1]")
        n = self.num_gaussians
        return self.prune_top_k(min(n, max(1, round(keep * n))) if n else 0)

