"""USD export (lyra.render.usd, `lyra convert`): scenes written as OpenUSD's Gaussian-splat prim read
back with pxr itself to the values of the PLY they came from; dynamic scenes as time samples."""

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from pxr import Usd, UsdGeom, UsdVol

from lyra.render.formats import load_dynamic_scene, load_scene, save_dynamic_scene
from lyra.render.gaussians import Gaussians
from lyra.render.ply import load_ply, save_ply
from lyra.render.usd import load_usd, save_usd
from lyra.tools import main

SH_C0 = 0.5 / math.sqrt(math.pi)  # independent of lyra.render.sh, on purpose


def make(n=200, k=None, seed=0, shift=0.0):
    gen = torch.Generator().manual_seed(seed)
    colors = torch.rand(n, 3, generator=gen) if k is None else torch.rand(n, k, 3, generator=gen) - 0.5
    return Gaussians(torch.randn(n, 3, generator=gen) * 2 + shift, torch.randn(n, 4, generator=gen),
                     torch.rand(n, 3, generator=gen) * 0.2 + 1e-3, torch.rand(n, generator=gen), colors)


def read_prim(path, time=Usd.TimeCode.Default()):
    """The splat prim's attributes, read with pxr alone: {name: numpy array}."""
    stage = Usd.Stage.Open(str(path))
    prim = stage.GetPrimAtPath("/Scene/Gaussians")
    assert prim.GetTypeName() == "ParticleField3DGaussianSplat" and prim.IsA(UsdVol.ParticleField3DGaussianSplat)
    names = {"positions": "positions", "orientations": "orientations", "scales": "scales", "opacities": "opacities",
             "sh": "radiance:sphericalHarmonicsCoefficients"}
    out = {k: np.asarray(prim.GetAttribute(a).Get(time)) for k, a in names.items()}
    out["degree"] = prim.GetAttribute("radiance:sphericalHarmonicsDegree").Get()
    return stage, prim, out


@pytest.mark.parametrize("suffix", [".usda", ".usdc", ".usdz"])
def test_lyra_convert_writes_usd_that_pxr_reads_back_as_the_ply(suffix, tmp_path):
    save_ply(tmp_path / "scene.ply", make(k=16))
    assert main(["convert", str(tmp_path / "scene.ply"), str(tmp_path / f"scene{suffix}")]) == 0
    ply = load_ply(tmp_path / "scene.ply")
    stage, prim, usd = read_prim(tmp_path / f"scene{suffix}")
    assert UsdGeom.GetStageUpAxis(stage) == "Y" and UsdGeom.GetStageMetersPerUnit(stage) == 1.0
    assert UsdGeom.Xformable(stage.GetPrimAtPath("/Scene")).GetLocalTransformation()[1][1] == pytest.approx(-1.0)
    assert usd["degree"] == 3
    np.testing.assert_array_equal(usd["positions"], ply.means.numpy())
    np.testing.assert_array_equal(usd["orientations"][:, 3], ply.quats[:, 0].numpy())  # Gf.Quatf: (x, y, z, w)
    np.testing.assert_array_equal(usd["orientations"][:, :3], ply.quats[:, 1:].numpy())
    np.testing.assert_array_equal(usd["scales"], ply.scales.numpy())  # linear, as the schema says
    np.testing.assert_array_equal(usd["opacities"], ply.opacities.numpy())  # in [0, 1], as the schema says
    np.testing.assert_array_equal(usd["sh"].reshape(-1, 16, 3), ply.colors.numpy())  # grouped by splat
    back = load_scene(tmp_path / f"scene{suffix}")
    for name in ("means", "quats", "scales", "opacities", "colors"):
        assert torch.equal(getattr(back, name), getattr(ply, name)), name


def test_rgb_scenes_are_stored_as_the_sh_dc_term(tmp_path):
    g = make()
    save_usd(tmp_path / "rgb.usda", g)
    _, _, usd = read_prim(tmp_path / "rgb.usda")
    assert usd["degree"] == 0
    np.testing.assert_allclose(usd["sh"] * SH_C0 + 0.5, g.colors.numpy(), atol=1e-6)


def test_a_dynamic_scene_folder_becomes_time_samples_and_back(tmp_path):
    sets, times = [make(k=4, shift=s) for s in (0.0, 0.5, 1.0)], [0.0, 0.4, 1.0]
    save_dynamic_scene(tmp_path / "dyn", sets, times)
    assert main(["convert", str(tmp_path / "dyn"), str(tmp_path / "dyn.usdc")]) == 0
    stage = Usd.Stage.Open(str(tmp_path / "dyn.usdc"))
    assert (stage.GetStartTimeCode(), stage.GetEndTimeCode()) == (0, 2)
    prim = stage.GetPrimAtPath("/Scene/Gaussians")
    assert prim.GetAttribute("positions").GetTimeSamples() == [0.0, 1.0, 2.0]
    assert list(prim.GetCustomDataByKey("lyra:sceneTimes")) == pytest.approx(times)
    plys, _ = load_dynamic_scene(tmp_path / "dyn")
    for i, ply in enumerate(plys):
        _, _, usd = read_prim(tmp_path / "dyn.usdc", Usd.TimeCode(i))
        np.testing.assert_array_equal(usd["positions"], ply.means.numpy())
        np.testing.assert_array_equal(usd["sh"].reshape(-1, 4, 3), ply.colors.numpy())
    with pytest.raises(ValueError, match="dynamic scene .3 time samples"):
        load_scene(tmp_path / "dyn.usdc")
    assert main(["convert", str(tmp_path / "dyn.usdc"), str(tmp_path / "back")]) == 0
    back, back_times = load_dynamic_scene(tmp_path / "back")
    assert back_times == pytest.approx(times) and all(torch.equal(a.means, b.means) for a, b in zip(back, plys))


def test_usd_refuses_what_it_cannot_write_and_names_the_missing_package(tmp_path, monkeypatch):
    bad = make()
    bad.means[3, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite|NaN"):
        save_usd(tmp_path / "bad.usda", bad)
    assert not list(tmp_path.iterdir())  # nothing half written
    with pytest.raises(ValueError, match="need their scene times"):
        save_usd(tmp_path / "x.usda", [make(), make()])
    with pytest.raises(ValueError, match=r"must end in \.usda, \.usdc, \.usdz"):
        save_usd(tmp_path / "x.usd", make())
    monkeypatch.setitem(sys.modules, "pxr", None)  # as if usd-core were not installed
    with pytest.raises(ImportError, match=r"pip install 'lyra\[usd\]'"):
        save_usd(tmp_path / "x.usda", make())
    save_ply(tmp_path / "s.ply", make())
    with pytest.raises(SystemExit) as e:
        main(["convert", str(tmp_path / "s.ply"), str(tmp_path / "s.usdz")])
    assert e.value.code == 2 and not (tmp_path / "s.usdz").exists()


def test_load_usd_reads_what_save_usd_wrote(tmp_path):
    g = make(k=9)
    save_usd(tmp_path / "a.usdz", g)
    (back,), times = load_usd(tmp_path / "a.usdz")
    assert times is None and torch.equal(back.colors, g.colors) and torch.equal(back.means, g.means)


@pytest.mark.parametrize("suffix", [".usda", ".usdz"])
def test_a_usd_write_stopped_by_the_file_size_limit_is_one_line_and_leaves_nothing(suffix, tmp_path):
    """usd-core's C++ I/O raises pxr.Tf.ErrorException, not OSError: it still becomes one clear line."""
    save_ply(tmp_path / "scene.ply", make(2000))
    code = ("import resource, sys\nresource.setrlimit(resource.RLIMIT_FSIZE, (10_000, resource.getrlimit("
            "resource.RLIMIT_FSIZE)[1]))\nfrom lyra.tools import main\nmain(sys.argv[1:])\n")
    done = subprocess.run([sys.executable, "-c", code, "convert", "scene.ply", f"big{suffix}"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    lines = [x for x in done.stderr.splitlines() if x.startswith("lyra convert: error: ")]
    assert len(lines) == 1 and f"writing big{suffix} failed (usd-core:" in lines[0], done.stderr[-2000:]
    assert "the file-size limit (ulimit -f) is 10,000 bytes" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.ply"]  # no output, no temporary file
