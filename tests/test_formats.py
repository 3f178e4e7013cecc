"""Exchange formats (lyra.render.formats): .splat, .spz, by-suffix dispatch, dynamic folders, `lyra convert`.

Tolerances are the formats' quantisation steps (docs/viewer.md): .splat stores colour and opacity
as round(255 x), so they come back within 0.5 / 255, and quaternion components as
round(128 q + 128), within 1 / 128 after renormalisation; .spz stores positions on a 2^-12 grid,
log-scales on a 1/16 grid, colour as 8-bit SH DC (step 1 / (0.15 x 255)), alpha in 8 bits,
rotations 'smallest three' at 9 bits and higher SH on a 1/128 grid.
"""

import json
import math
import struct

import numpy as np
import pytest
import torch

from lyra.render.formats import (
    load_dynamic_scene,
    load_scene,
    load_splat,
    load_spz,
    read_dynamic_index,
    save_dynamic_scene,
    save_scene,
    save_splat,
    save_spz,
)
from lyra.render.gaussians import Gaussians
from lyra.render.sh import eval_sh
from lyra.tools import main

SH_C0 = 0.5 / math.sqrt(math.pi)  # independent of lyra.render.sh, on purpose


def make(n=300, k=None, seed=0, extent=3.0):
    gen = torch.Generator().manual_seed(seed)
    # SH within [-0.9, 0.9]: .spz stores higher SH on a 1/128 grid over [-1, 1] and clamps the rest.
    colors = torch.rand(n, 3, generator=gen) if k is None else torch.rand(n, k, 3, generator=gen) * 1.8 - 0.9
    return Gaussians(
        means=(torch.rand(n, 3, generator=gen) * 2 - 1) * extent,
        quats=torch.randn(n, 4, generator=gen),
        scales=torch.exp(torch.empty(n, 3).uniform_(-8, 1, generator=gen)),
        opacities=torch.rand(n, generator=gen),
        colors=colors,
    )


def unit(q):
    return q / q.norm(dim=-1, keepdim=True)


def same_rotation_err(a, b):  # [N, 4] x2 -> [N] largest component error, q and -q being one rotation
    a, b = unit(a), unit(b)
    return torch.minimum((a - b).abs().amax(-1), (a + b).abs().amax(-1))


# ---- .splat ------------------------------------------------------------------------------------------


def test_splat_round_trip_within_quantisation(tmp_path):
    g = make(n=2000)
    save_splat(tmp_path / "s.splat", g)
    assert (tmp_path / "s.splat").stat().st_size == 32 * g.num_gaussians
    h = load_splat(tmp_path / "s.splat")
    # The file is in importance order; match splats back by position (float32, stored exactly).
    order = torch.argsort(g.scales.prod(-1) * g.opacities, descending=True, stable=True)
    ref = g.select(order)
    assert torch.equal(h.means, ref.means) and torch.equal(h.scales, ref.scales)
    assert (h.colors - ref.colors).abs().max() <= 0.5 / 255 + 1e-6
    assert (h.opacities - ref.opacities).abs().max() <= 0.5 / 255 + 1e-6
    assert same_rotation_err(h.quats, ref.quats).max() <= 1 / 128
    # Written most important (size x opacity) first, up to the 8-bit opacity the file keeps.
    size = h.scales.double().prod(-1)
    assert (size[1:] * (h.opacities[1:] - 0.5 / 255) <= size[:-1] * (h.opacities[:-1] + 0.5 / 255)).all()
    assert torch.equal(h.means[0], g.means[torch.argmax(g.scales.prod(-1) * g.opacities)])


def test_splat_bytes_follow_the_web_layout(tmp_path):
    g = Gaussians(torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]), torch.tensor([[2.0, 0, 0, 0], [0, 0, 0, -1.0]]),
                  torch.tensor([[0.1, 0.2, 0.3], [0.01, 0.01, 0.01]]), torch.tensor([0.5, 1.0]),
                  torch.tensor([[1.0, 0.5, 0.0], [0.2, 0.4, 0.6]]))
    save_splat(tmp_path / "two.splat", g)
    raw = (tmp_path / "two.splat").read_bytes()
    first = struct.unpack("<6f8B", raw[:32])  # the big splat comes first
    assert first[:6] == pytest.approx((1, 2, 3, 0.1, 0.2, 0.3))
    assert first[6:] == (255, 128, 0, 128, 255, 128, 128, 128)  # RGBA; w=1 -> 255 (clipped), x=y=z=0 -> 128
    second = struct.unpack("<6f8B", raw[32:])
    assert second[6:] == (51, 102, 153, 255, 128, 128, 128, 0)


def test_splat_keeps_only_the_dc_colour_of_sh(tmp_path):
    g = make(n=50, k=4)
    with pytest.warns(UserWarning, match="only the DC colour"):
        save_splat(tmp_path / "sh.splat", g)
    h = load_splat(tmp_path / "sh.splat")
    assert h.sh_degree is None
    rgb = (g.colors[:, 0] * SH_C0 + 0.5).clamp(0, 1)
    order = torch.argsort(g.scales.prod(-1) * g.opacities, descending=True, stable=True)
    assert (h.colors - rgb[order]).abs().max() <= 0.5 / 255 + 1e-6


def test_bad_splat_files_are_named(tmp_path):
    save_splat(tmp_path / "ok.splat", make(n=3))
    raw = (tmp_path / "ok.splat").read_bytes()
    (tmp_path / "cut.splat").write_bytes(raw[:-5])
    with pytest.raises(ValueError, match=r"cut\.splat.*91 bytes, not a multiple of the 32-byte"):
        load_splat(tmp_path / "cut.splat")
    (tmp_path / "empty.splat").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.splat.*is empty"):
        load_splat(tmp_path / "empty.splat")
    nan = bytearray(raw)
    nan[32:36] = struct.pack("<f", float("nan"))
    (tmp_path / "nan.splat").write_bytes(bytes(nan))
    with pytest.raises(ValueError, match=r"nan\.splat.*1 of 3 splats have a NaN or infinite position"):
        load_splat(tmp_path / "nan.splat")
    (tmp_path / "ok.ply").write_bytes(raw)
    with pytest.raises(ValueError, match=r"ok\.ply.*does not end in \.splat.*load_scene"):
        load_splat(tmp_path / "ok.ply")
    with pytest.raises(ValueError, match=r"does not end in \.splat"):
        save_splat(tmp_path / "out.bin", make(n=3))
    with pytest.raises(FileNotFoundError, match="missing.splat"):
        load_splat(tmp_path / "missing.splat")


# ---- .spz --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [None, 1, 4, 16])
def test_spz_round_trip_within_quantisation(tmp_path, k):
    g = make(n=1000, k=k)
    save_spz(tmp_path / "s.spz", g)
    h = load_spz(tmp_path / "s.spz")
    assert h.num_gaussians == g.num_gaussians and h.sh_degree == (g.sh_degree or 0)
    assert (h.means - g.means).abs().max() <= 0.5 / 4096 + 1e-6
    assert (h.scales.log() - g.scales.log()).abs().max() <= 0.5 / 16 + 1e-5
    assert (h.opacities - g.opacities).abs().max() <= 0.5 / 255 + 1e-5
    assert same_rotation_err(h.quats, g.quats).max() <= 2e-3  # 9-bit components of at most 1/sqrt(2)
    dc = g.colors[:, 0] if k else (g.colors - 0.5) / SH_C0
    assert (h.colors[:, 0] - dc).abs().max() <= 0.5 / (0.15 * 255) + 1e-5
    if k and k > 1:
        assert (h.colors[:, 1:] - g.colors[:, 1:]).abs().max() <= 0.5 / 128 + 1e-6


def test_spz_is_stored_right_up_back(tmp_path):
    """Niantic's readers take SPZ as RUB (OpenGL); lyra's world is RDF, so y and z are mirrored on disk."""
    from gsply.spz import read_spz

    g = make(n=100)
    save_spz(tmp_path / "s.spz", g)
    raw = torch.from_numpy(np.asarray(read_spz(tmp_path / "s.spz").means))
    assert torch.allclose(raw, g.means * torch.tensor([1.0, -1.0, -1.0]), atol=1e-3)


def test_rdf_rub_sh_signs_mirror_the_view_dependent_colour():
    """The SH sign table must make the mirrored coefficients give the same colour seen from the mirrored direction."""
    from lyra.render.formats import _rdf_rub

    gen = torch.Generator().manual_seed(1)
    sh = torch.randn(64, 16, 3, generator=gen)
    dirs = torch.randn(64, 3, generator=gen)
    _, _, mirrored = _rdf_rub(torch.zeros(64, 3), torch.zeros(64, 4), sh)
    assert torch.allclose(eval_sh(3, mirrored, dirs * torch.tensor([1.0, -1.0, -1.0])), eval_sh(3, sh, dirs), atol=1e-5)
    assert not torch.allclose(eval_sh(3, sh, dirs * torch.tensor([1.0, -1.0, -1.0])), eval_sh(3, sh, dirs), atol=1e-3)


def test_spz_large_scene_trades_position_precision(tmp_path):
    g = make(n=50, extent=5000.0)  # beyond 2^23 / 2^12 = 2048 units: needs fewer fractional bits
    save_spz(tmp_path / "big.spz", g)
    h = load_spz(tmp_path / "big.spz")
    assert (h.means - g.means).abs().max() <= 0.5 / 2**10 + 1e-3  # 5000 * 2^10 < 2^23


def test_bad_spz_files_are_named(tmp_path):
    (tmp_path / "junk.spz").write_bytes(b"not a gaussian splat file" * 4)
    with pytest.raises(ValueError, match=r"junk\.spz.*not a readable \.spz"):
        load_spz(tmp_path / "junk.spz")
    (tmp_path / "empty.spz").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.spz.*is empty"):
        load_spz(tmp_path / "empty.spz")
    save_spz(tmp_path / "ok.spz", make(n=500))
    (tmp_path / "cut.spz").write_bytes((tmp_path / "ok.spz").read_bytes()[:200])
    with pytest.raises(ValueError, match=r"cut\.spz.*not a readable \.spz"):
        load_spz(tmp_path / "cut.spz")
    tiny = make(n=5)
    with pytest.warns(UserWarning, match="scale outside the .spz range"):
        save_spz(tmp_path / "tiny.spz", Gaussians(tiny.means, tiny.quats, tiny.scales * 1e-6, tiny.opacities, tiny.colors))
    loud = make(n=5, k=4)
    with pytest.warns(UserWarning, match=r"SH coefficients outside \[-1, 1\]"):
        save_spz(tmp_path / "loud.spz", Gaussians(loud.means, loud.quats, loud.scales, loud.opacities, loud.colors * 3))


# ---- by suffix, dynamic folders, command line ---------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".ply", ".splat", ".spz"])
def test_scene_dispatch_by_suffix(tmp_path, suffix):
    g = make(n=200)
    save_scene(tmp_path / f"s{suffix.upper()}", g)  # suffixes are case-insensitive
    h = load_scene(tmp_path / f"s{suffix.upper()}")
    assert h.num_gaussians == 200
    assert torch.allclose(torch.sort(h.means[:, 0]).values, torch.sort(g.means[:, 0]).values, atol=1e-3)
    with pytest.raises(ValueError, match=r"unknown scene format '\.npz'.*\*\.ply, \*\.splat, \*\.spz"):
        save_scene(tmp_path / "s.npz", g)
    with pytest.raises(ValueError, match="unknown scene format"):
        load_scene(tmp_path / "s")


def test_dynamic_scene_folder_round_trip(tmp_path):
    frames = [make(n=100, seed=s) for s in range(3)]
    save_dynamic_scene(tmp_path / "dyn", frames, [0.0, 0.5, 1.0])
    index = json.loads((tmp_path / "dyn" / "index.json").read_text())
    assert index["times"] == [0.0, 0.5, 1.0] and index["files"] == ["t000.ply", "t001.ply", "t002.ply"]
    loaded, times = load_dynamic_scene(tmp_path / "dyn")
    assert times == [0.0, 0.5, 1.0]
    for a, b in zip(loaded, frames):
        assert torch.equal(a.means, b.means)
    with pytest.raises(ValueError, match=r"times must lie in \[0, 1\]"):
        save_dynamic_scene(tmp_path / "bad", frames, [0.0, 0.5, 2.0])
    with pytest.raises(ValueError, match="3 Gaussian sets but 2 times"):
        save_dynamic_scene(tmp_path / "bad", frames, [0.0, 0.5])
    index["files"][1] = "gone.ply"
    (tmp_path / "dyn" / "index.json").write_text(json.dumps(index))
    with pytest.raises(FileNotFoundError, match="gone.ply"):
        read_dynamic_index(tmp_path / "dyn")


def test_dynamic_folder_without_index(tmp_path):
    from lyra.render.ply import save_ply

    (tmp_path / "student").mkdir()
    for m, t in enumerate([0.0, 0.25, 1.0]):  # the names lyra's student export writes
        save_ply(tmp_path / "student" / f"t{m:03d}_{t:.3f}.ply", make(n=10, seed=m))
    times, files = read_dynamic_index(tmp_path / "student")
    assert times == [0.0, 0.25, 1.0] and [f.name for f in files] == ["t000_0.000.ply", "t001_0.250.ply", "t002_1.000.ply"]
    save_ply(tmp_path / "student" / "other.ply", make(n=10))
    with pytest.raises(ValueError, match=r"has no index\.json.*save_dynamic_scene"):
        read_dynamic_index(tmp_path / "student")


def test_lyra_convert(tmp_path, capsys):
    g = make(n=300)
    save_scene(tmp_path / "a.ply", g)
    assert main(["convert", str(tmp_path / "a.ply"), str(tmp_path / "b.splat")]) == 0
    assert main(["convert", str(tmp_path / "b.splat"), str(tmp_path / "c.spz")]) == 0
    assert "wrote" in capsys.readouterr().out
    c = load_scene(tmp_path / "c.spz")
    order = torch.argsort(g.scales.prod(-1) * g.opacities, descending=True, stable=True)
    assert (c.means - g.means[order]).abs().max() <= 0.5 / 4096 + 1e-6
    with pytest.raises(SystemExit) as exc:
        main(["convert", str(tmp_path / "a.ply"), str(tmp_path / "a.obj")])
    assert exc.value.code == 2
    assert "unknown scene format '.obj'" in capsys.readouterr().err
