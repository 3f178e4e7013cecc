import math

import numpy as np
import plyfile
import pytest
import torch
from plyfile import PlyData, PlyElement

from lyra.render.gaussians import Gaussians
from lyra.render.ply import load_ply, ply_property_names, save_ply

SH_C0 = 0.5 / math.sqrt(math.pi)  # independent of lyra.render.sh, on purpose
F32_EPS = 2.0**-24  # half an ulp of 1.0 in float32: the unit of rounding error below


def make(n=200, k=None, seed=0):
    gen = torch.Generator().manual_seed(seed)
    colors = torch.rand(n, 3, generator=gen) if k is None else torch.randn(n, k, 3, generator=gen)
    return Gaussians(
        means=torch.randn(n, 3, generator=gen) * 5,
        quats=torch.randn(n, 4, generator=gen),
        scales=torch.exp(torch.empty(n, 3).uniform_(-9, 3, generator=gen)),
        opacities=torch.empty(n).uniform_(1e-5, 1 - 1e-5, generator=gen),
        colors=colors,
    )


def split_header(data: bytes) -> tuple[list[str], bytes]:
    head, body = data.split(b"end_header\n", 1)
    return head.decode("ascii").splitlines(), body


@pytest.mark.parametrize("k", [1, 4, 9, 16])
def test_sh_round_trip(tmp_path, k):
    g = make(k=k)
    save_ply(tmp_path / "g.ply", g)
    h = load_ply(tmp_path / "g.ply")
    assert h.sh_degree == g.sh_degree and h.num_gaussians == g.num_gaussians
    for name in ("means", "quats", "colors"):  # stored raw: bit-exact
        assert torch.equal(getattr(h, name), getattr(g, name)), name
    # log / logit stored in float32: error of the stored value is |L| half-ulps, then one more rounding.
    log_s = g.scales.double().log().abs()
    assert ((h.scales.double() - g.scales.double()).abs() / g.scales.double() <= (log_s + 1) * F32_EPS).all()
    assert ((h.opacities - g.opacities).abs() <= F32_EPS).all()


def test_rgb_round_trip_within_one_rounding(tmp_path):
    g = make(k=None)
    save_ply(tmp_path / "rgb.ply", g)
    as_rgb = load_ply(tmp_path / "rgb.ply", colors="rgb")
    assert as_rgb.sh_degree is None
    assert ((as_rgb.colors - g.colors).abs() <= F32_EPS).all()  # measured max ~1.7e-8
    as_sh = load_ply(tmp_path / "rgb.ply")
    assert as_sh.sh_degree == 0
    assert torch.allclose(as_sh.colors[:, 0] * SH_C0 + 0.5, g.colors, atol=1e-6)


def test_header_and_binary_layout_match_reference(tmp_path):
    n, k = 5, 4
    colors = torch.arange(n * k * 3, dtype=torch.float32).reshape(n, k, 3)  # colors[i, j, c] distinct
    g = Gaussians(torch.randn(n, 3), torch.randn(n, 4), torch.rand(n, 3) + 0.1, torch.rand(n) * 0.9 + 0.05, colors)
    save_ply(tmp_path / "g.ply", g)
    header, body = split_header((tmp_path / "g.ply").read_bytes())
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"] + [f"f_rest_{j}" for j in range(9)]
    names += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    expected = ["ply", "format binary_little_endian 1.0", f"element vertex {n}"]
    assert header == expected + [f"property float {p}" for p in names]
    assert ply_property_names(k) == names
    table = np.frombuffer(body, dtype="<f4").reshape(n, len(names))
    col = {p: table[:, i] for i, p in enumerate(names)}
    for i, p in enumerate("xyz"):
        assert np.array_equal(col[p], g.means[:, i].numpy())
    assert not table[:, 3:6].any()
    for i in range(n):
        for c in range(3):
            assert col[f"f_dc_{c}"][i] == colors[i, 0, c]
            for j in range(1, k):  # reference order: channel-major, all R, then G, then B
                assert col[f"f_rest_{c * (k - 1) + j - 1}"][i] == colors[i, j, c]
    p = g.opacities.double().numpy()
    np.testing.assert_allclose(col["opacity"], np.log(p / (1 - p)), rtol=1e-6)
    np.testing.assert_allclose(table[:, -7:-4], np.log(g.scales.double().numpy()), rtol=1e-6)
    assert np.array_equal(table[:, -4:], g.quats.numpy())  # rot_0 = w


def test_rgb_stored_as_dc_and_extreme_values_clamped(tmp_path):
    rgb = torch.tensor([[0.0, 0.5, 1.0], [0.25, 0.75, 0.1]])
    g = Gaussians(torch.zeros(2, 3), torch.tensor([[1.0, 0, 0, 0]] * 2), torch.tensor([[0.0, 1.0, 2.0]] * 2),
                  torch.tensor([0.0, 1.0]), rgb)
    save_ply(tmp_path / "g.ply", g)
    v = PlyData.read(str(tmp_path / "g.ply"))["vertex"]
    assert list(v["f_dc_0"]) == pytest.approx(((rgb[:, 0] - 0.5) / SH_C0).tolist(), rel=1e-6)
    assert v["opacity"][0] == pytest.approx(math.log(1e-6 / (1 - 1e-6)), rel=1e-6)
    assert v["opacity"][1] == pytest.approx(-math.log(1e-6 / (1 - 1e-6)), rel=1e-4)
    h = load_ply(tmp_path / "g.ply", colors="rgb")
    assert h.opacities.tolist() == pytest.approx([1e-6, 1 - 1e-6], abs=F32_EPS)
    assert bool((h.scales[:, 0] > 0).all()) and bool((h.scales[:, 0] < 1.2e-38).all())  # 0 -> smallest normal


def test_non_finite_dropped_with_warning(tmp_path):
    g = make(10, k=4)
    means, colors = g.means.clone(), g.colors.clone()
    means[3, 0], colors[7, 2, 1] = float("nan"), float("-inf")
    bad = Gaussians(means, g.quats, g.scales, g.opacities, colors, check_values=False)
    with pytest.warns(UserWarning, match="dropping 2 of 10"):
        save_ply(tmp_path / "g.ply", bad)
    h = load_ply(tmp_path / "g.ply")
    keep = [i for i in range(10) if i not in (3, 7)]
    assert torch.equal(h.means, g.means[keep]) and torch.equal(h.colors, g.colors[keep])


def test_batched_and_wrong_type_rejected(tmp_path):
    g = make(4)
    batched = Gaussians(*(t[None].expand(2, *t.shape) for t in (g.means, g.quats, g.scales, g.opacities, g.colors)))
    with pytest.raises(ValueError, match=r"batch_shape \(2,\).*g\[i\]"):
        save_ply(tmp_path / "b.ply", batched)
    with pytest.raises(TypeError, match="Gaussians"):
        save_ply(tmp_path / "b.ply", g.to_dict())
    assert not list(tmp_path.iterdir())


def test_failed_write_leaves_nothing_or_old_file(tmp_path, monkeypatch):
    target = tmp_path / "scene.ply"

    def broken_write(self, stream):
        with open(stream, "wb") as f:
            f.write(b"ply\nformat binary_little_endian 1.0\n")  # half a header, then the disk "fails"
        raise OSError("disk full")

    with monkeypatch.context() as m:
        m.setattr(plyfile.PlyData, "write", broken_write)
        with pytest.raises(OSError, match="disk full"):
            save_ply(target, make(8))
    assert not list(tmp_path.iterdir())  # neither the target nor a temp file

    save_ply(target, make(8, seed=1))
    before = target.read_bytes()
    with monkeypatch.context() as m:
        m.setattr(plyfile.PlyData, "write", broken_write)
        with pytest.raises(OSError):
            save_ply(target, make(9, seed=2))
    assert target.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["scene.ply"]
    assert load_ply(target).num_gaussians == 8


def other_tool_file(path, n, text, byte_order, drop=()):
    """A degree-3 3DGS file as other tools write it: no normals, shuffled order, extras, float64 xyz."""
    rng = np.random.default_rng(0)
    names = [f"rot_{i}" for i in range(4)] + ["opacity"] + [f"f_rest_{j}" for j in range(44, -1, -1)]
    names += [f"scale_{i}" for i in range(3)] + ["f_dc_2", "f_dc_0", "f_dc_1", "filter_3D"]
    fields = [("x", "f8"), ("y", "f8"), ("z", "f8")] + [(p, "f4") for p in names]
    fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    fields = [(p, t) for p, t in fields if p not in drop]
    data = np.empty(n, dtype=fields)
    for p, t in fields:
        data[p] = rng.integers(0, 255, n) if t == "u1" else rng.normal(size=n)
    PlyData([PlyElement.describe(data, "vertex")], text=text, byte_order=byte_order).write(str(path))
    return data


@pytest.mark.parametrize("text,byte_order", [(False, ">"), (True, "=")])
def test_loads_files_from_other_tools(tmp_path, text, byte_order):
    n = 6
    data = other_tool_file(tmp_path / "other.ply", n, text, byte_order)
    g = load_ply(tmp_path / "other.ply")
    assert g.sh_degree == 3 and g.num_gaussians == n
    for i in range(n):
        assert g.means[i].tolist() == pytest.approx([data["x"][i], data["y"][i], data["z"][i]], rel=1e-6)
        assert g.opacities[i].item() == pytest.approx(1 / (1 + math.exp(-data["opacity"][i])), rel=1e-6)
        assert g.scales[i, 2].item() == pytest.approx(math.exp(data["scale_2"][i]), rel=1e-6)
        assert g.quats[i, 0].item() == data["rot_0"][i]
        for c in range(3):
            assert g.colors[i, 0, c].item() == data[f"f_dc_{c}"][i]
            for j in range(1, 16):
                assert g.colors[i, j, c].item() == data[f"f_rest_{c * 15 + j - 1}"][i]


@pytest.mark.parametrize("prop", ["opacity", "rot_3", "f_dc_1", "scale_0", "y"])
def test_missing_property_named(tmp_path, prop):
    other_tool_file(tmp_path / "bad.ply", 3, False, "<", drop=(prop,))
    with pytest.raises(ValueError, match=rf"property {prop};"):
        load_ply(tmp_path / "bad.ply")


def test_bad_sh_layouts_and_modes(tmp_path):
    other_tool_file(tmp_path / "gap.ply", 3, False, "<", drop=("f_rest_7",))
    with pytest.raises(ValueError, match="f_rest_7"):
        load_ply(tmp_path / "gap.ply")
    other_tool_file(tmp_path / "odd.ply", 3, False, "<", drop=tuple(f"f_rest_{j}" for j in range(30, 45)))
    with pytest.raises(ValueError, match="30 f_rest"):
        load_ply(tmp_path / "odd.ply")
    save_ply(tmp_path / "sh1.ply", make(4, k=4))
    with pytest.raises(ValueError, match="degree 1"):
        load_ply(tmp_path / "sh1.ply", colors="rgb")
    with pytest.raises(ValueError, match="'sh' or 'rgb'"):
        load_ply(tmp_path / "sh1.ply", colors="rgba")


def test_empty_and_non_finite_file(tmp_path):
    for k in (1, 4):
        save_ply(tmp_path / "empty.ply", make(0, k=k))
        empty = load_ply(tmp_path / "empty.ply")
        assert (empty.num_gaussians, empty.sh_degree) == (0, math.isqrt(k) - 1)
    data = other_tool_file(tmp_path / "inf.ply", 4, False, "<")
    data["scale_1"][2] = np.inf
    PlyData([PlyElement.describe(data, "vertex")]).write(str(tmp_path / "inf.ply"))
    with pytest.warns(UserWarning, match="dropping 1 of 4"):
        assert load_ply(tmp_path / "inf.ply").num_gaussians == 3
