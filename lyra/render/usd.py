"""OpenUSD export of Gaussian scenes, for Omniverse / Isaac Sim and other USD tools.

Written with ``usd-core`` (an optional dependency: ``pip install 'lyra[usd]'``) as one
``UsdVol.ParticleField3DGaussianSplat`` prim, OpenUSD's Gaussian-splat schema (written and tested
with usd-core 26.11; a usd-core without that class is refused by name). Its attributes hold
activated values, as ``lyra.render.Gaussians`` does:

    positions                                  point3f[N]    means
    orientations                               quatf[N]      rotations (lyra's wxyz as stored)
    scales                                     float3[N]     linear scales (not log)
    opacities                                  float[N]      in [0, 1] (not logit)
    radiance:sphericalHarmonicsDegree          uniform int   SH degree (0 for RGB scenes)
    radiance:sphericalHarmonicsCoefficients    float3[N K]   3DGS SH coefficients, grouped by splat
                                                             (RGB is stored as the DC term, as in PLY)

so the values equal those of the 3DGS PLY the scene came from (tests/test_usd.py reads them back
with ``pxr``). lyra's world has y down (OpenCV); the prim sits under ``/Scene``, an Xform turned
180 degrees about x, so the scene stands upright on a y-up stage (``upAxis = "Y"``, one metre per
unit) while the attributes keep lyra's coordinates. A dynamic scene (one Gaussian set per scene
time) becomes time samples at time codes ``0 .. T-1``; the normalised scene times are kept in
the prim's ``customData["lyra:sceneTimes"]``. ``.usda`` (text), ``.usdc`` (binary crate) and
``.usdz`` (a zip package of a crate) are chosen by the suffix.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from lyra.render.gaussians import Gaussians
from lyra.render.sh import rgb_to_sh0
from lyra.utils.atomic import atomic_path
from lyra.utils.errors import LyraUsageError, write_failure_hint

USD_SUFFIXES = (".usda", ".usdc", ".usdz")
PRIM_PATH = "/Scene/Gaussians"
SCHEMA = "ParticleField3DGaussianSplat"


def _pxr():
    """The ``pxr`` modules; ``usd-core`` is optional, so it is imported only when USD is asked for."""
    try:
        from pxr import Gf, Sdf, Usd, UsdGeom, UsdUtils, UsdVol, Vt
    except ImportError as err:
        raise ImportError(f"USD files need the usd-core package ({err}); install it with pip install 'lyra[usd]'") \
            from None
    if not hasattr(UsdVol, SCHEMA):
        raise ImportError(f"the installed usd-core ({'.'.join(map(str, Usd.GetVersion()))}) has no UsdVol.{SCHEMA}; "
                          "upgrade it (pip install -U 'lyra[usd]', usd-core >= 26.11)")
    return Gf, Sdf, Usd, UsdGeom, UsdUtils, UsdVol, Vt


def _check_suffix(path: Path) -> None:
    if path.suffix.lower() not in USD_SUFFIXES:
        raise ValueError(f"{str(path)!r}: a USD file must end in {', '.join(USD_SUFFIXES)}")


def _one_scene(g: Gaussians) -> Gaussians:
    """An unbatched float32 CPU copy with finite values (USD refuses what a viewer could not draw)."""
    if not isinstance(g, Gaussians):
        raise TypeError(f"save_usd takes lyra.render.Gaussians, got {type(g).__name__}")
    if g.batch_shape:
        raise ValueError(f"save_usd writes unbatched scenes but got batch_shape {tuple(g.batch_shape)}; pass g[i]")
    g = g.detach().to("cpu", torch.float32)
    g.validate(values=True)
    return g


def _extent(g: Gaussians) -> tuple[np.ndarray, np.ndarray]:  # [3] min, [3] max of the 3-sigma kernels
    if not g.num_gaussians:
        return np.zeros(3), np.zeros(3)
    means, reach = g.means.numpy(), 3.0 * g.scales.amax(-1, keepdim=True).numpy()
    return (means - reach).min(0), (means + reach).max(0)


def _sh(g: Gaussians) -> tuple[int, np.ndarray]:  # degree, [N * K, 3]
    sh = rgb_to_sh0(g.colors)[:, None] if g.sh_degree is None else g.colors
    return (g.sh_degree or 0), sh.reshape(-1, 3).numpy()


def save_usd(
    path: str | os.PathLike,
    gaussians: Gaussians | Sequence[Gaussians],
    times: Sequence[float] | None = None,  # [T] scene times in [0, 1] of a dynamic scene
    fps: float = 24.0,
) -> None:
    """Write one scene, or a dynamic scene (a list of Gaussian sets + their times), as USD (module doc).

    Args:
        path: ``.usda``, ``.usdc`` or ``.usdz`` file; written to a temporary name, then renamed.
        gaussians: one unbatched ``Gaussians`` (static), or one per scene time (dynamic).
        times: scene times of a dynamic scene (one per set, non-decreasing in [0, 1]); None for a static one.
        fps: time codes per second of a dynamic scene's playback (frame i is time code i).
    """
    Gf, Sdf, Usd, UsdGeom, UsdUtils, UsdVol, Vt = _pxr()
    path = Path(path)
    _check_suffix(path)
    sets = [gaussians] if isinstance(gaussians, Gaussians) else list(gaussians)
    if times is None and len(sets) != 1:
        raise ValueError(f"save_usd: {len(sets)} Gaussian sets need their scene times (times=[...])")
    if times is not None and len(times) != len(sets):
        raise ValueError(f"save_usd: {len(sets)} Gaussian sets but {len(times)} times; pass one time per set")
    sets = [_one_scene(g) for g in sets]
    degrees = {g.sh_degree or 0 for g in sets}
    if len(degrees) != 1:
        raise ValueError(f"save_usd: every time of a dynamic scene needs the same SH degree, got {sorted(degrees)}")
    stage = Usd.Stage.CreateInMemory()
    UsdGeom.SetStageUpAxis(stage, UsdGeom.Tokens.y)
    UsdGeom.SetStageMetersPerUnit(stage, 1.0)
    root = UsdGeom.Xform.Define(stage, "/Scene")
    root.AddRotateXOp().Set(180.0)  # lyra's y-down world upright on a y-up stage
    stage.SetDefaultPrim(root.GetPrim())
    splats = UsdVol.ParticleField3DGaussianSplat.Define(stage, PRIM_PATH)
    splats.CreateRadianceSphericalHarmonicsDegreeAttr().Set(degrees.pop())
    attrs = {"positions": splats.CreatePositionsAttr(), "orientations": splats.CreateOrientationsAttr(),
             "scales": splats.CreateScalesAttr(), "opacities": splats.CreateOpacitiesAttr(),
             "sh": splats.CreateRadianceSphericalHarmonicsCoefficientsAttr(), "extent": splats.CreateExtentAttr()}
    for i, g in enumerate(sets):
        when = Usd.TimeCode.Default() if times is None else Usd.TimeCode(i)
        lo, hi = _extent(g)
        _, sh = _sh(g)
        attrs["positions"].Set(Vt.Vec3fArray.FromNumpy(g.means.numpy()), when)
        attrs["orientations"].Set(Vt.QuatfArray.FromNumpy(np.roll(g.quats.numpy(), -1, axis=-1)), when)  # xyzw
        attrs["scales"].Set(Vt.Vec3fArray.FromNumpy(g.scales.numpy()), when)
        attrs["opacities"].Set(Vt.FloatArray.FromNumpy(g.opacities.numpy()), when)
        attrs["sh"].Set(Vt.Vec3fArray.FromNumpy(np.ascontiguousarray(sh, dtype=np.float32)), when)
        attrs["extent"].Set(Vt.Vec3fArray([Gf.Vec3f(*map(float, lo)), Gf.Vec3f(*map(float, hi))]), when)
    if times is not None:
        stage.SetStartTimeCode(0), stage.SetEndTimeCode(len(sets) - 1), stage.SetTimeCodesPerSecond(fps)
        splats.GetPrim().SetCustomDataByKey("lyra:sceneTimes", Vt.DoubleArray([float(t) for t in times]))
    with atomic_path(path, keep_suffix=True) as tmp:
        try:
            if path.suffix.lower() != ".usdz":
                written = stage.GetRootLayer().Export(str(tmp))
            else:
                with tempfile.TemporaryDirectory() as folder:  # a .usdz packages a crate file
                    crate = Path(folder) / f"{path.stem}.usdc"
                    written = stage.GetRootLayer().Export(str(crate)) and \
                        UsdUtils.CreateNewUsdzPackage(Sdf.AssetPath(str(crate)), str(tmp))
        except Exception as err:  # noqa: BLE001  (usd-core's C++ I/O errors arrive as pxr.Tf.ErrorException)
            raise _write_failed(path, str(err)) from None
        if not written:
            raise _write_failed(path, "it reported that the file was not written")


def _write_failed(path: Path, reason: str) -> LyraUsageError:
    """usd-core's own file I/O does not raise OSError: say what most likely stopped it."""
    detail = next((line.strip() for line in reason.splitlines() if line.strip()), reason)
    return LyraUsageError(f"writing {path} failed (usd-core: {detail[:200]}); {write_failure_hint()} ({path} is unchanged)")


def load_usd(path: str | os.PathLike) -> tuple[list[Gaussians], list[float] | None]:
    """The Gaussian sets of the first ``ParticleField3DGaussianSplat`` prim of a USD file: one set
    (times None) for a static scene, one per time sample (and the scene times) for a dynamic one."""
    _, _, Usd, _, _, UsdVol, _ = _pxr()
    path = Path(path)
    _check_suffix(path)
    if not path.is_file():
        raise FileNotFoundError(f"USD file {str(path)!r} does not exist")
    stage = Usd.Stage.Open(str(path))
    prim = next((p for p in stage.Traverse() if p.IsA(UsdVol.ParticleField3DGaussianSplat)), None)
    if prim is None:
        raise ValueError(f"{path} holds no {SCHEMA} prim; it is not a Gaussian-splat USD file")
    splats = UsdVol.ParticleField3DGaussianSplat(prim)
    degree = splats.GetRadianceSphericalHarmonicsDegreeAttr().Get()
    samples = splats.GetPositionsAttr().GetTimeSamples()
    codes = [Usd.TimeCode(t) for t in samples] or [Usd.TimeCode.Default()]
    sets = []
    for when in codes:
        means = _read(splats.GetPositionsAttr(), when, 3)
        quats = torch.roll(_read(splats.GetOrientationsAttr(), when, 4), 1, dims=-1)  # xyzw -> wxyz
        sh = _read(splats.GetRadianceSphericalHarmonicsCoefficientsAttr(), when, 3)
        sets.append(Gaussians(means, quats, _read(splats.GetScalesAttr(), when, 3),
                              _read(splats.GetOpacitiesAttr(), when, 1)[:, 0],
                              sh.reshape(len(means), (degree + 1) ** 2, 3)))
    if not samples:
        return sets, None
    times = prim.GetCustomDataByKey("lyra:sceneTimes")
    return sets, [float(t) for t in times] if times is not None else [float(t) for t in samples]


def load_usd_scene(path: str | os.PathLike) -> Gaussians:
    """The one scene of a static USD file (``load_usd`` reads dynamic ones)."""
    scenes, times = load_usd(path)
    if times is not None:
        raise ValueError(f"{str(path)!r} is a dynamic scene ({len(times)} time samples); read it with "
                         "lyra.render.usd.load_usd, or convert it to a scene folder")
    return scenes[0]


def _read(attr, when, width: int) -> torch.Tensor:  # [M, width] float32
    return torch.from_numpy(np.asarray(attr.Get(when), dtype=np.float32).reshape(-1, width).copy())
