"""Reading splat files other tools make: SplatTransform (npm) converts a reference 3DGS PLY with SH
degree 3 into SPZ and KHR_gaussian_splatting glTF, and each reads back as the reference within the
format's precision; our own exports read back as the bundle; bad files say what is wrong."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from mvdust3r_blender.core.confidence import ConfidenceCut
from mvdust3r_blender.core.exports import export
from mvdust3r_blender.core.splat_field import SplatField, half_turn_x, view_colours
from mvdust3r_blender.core.splat_files import SplatFileError, checks, read_splat_file

from tests.helpers.npm_tools import splat_transform
from tests.helpers.splat_reference_files import reference_splats, write_inria_ply
from test_exports import make_bundle


def reference_field(count: int = 400) -> SplatField:
    r = reference_splats(count)
    return SplatField(r.position, r.rotation, r.scale, r.opacity, r.sh)


def rotation_cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(np.sum(a.astype(np.float64) * b, axis=1))


def assert_same_field(got: SplatField, want: SplatField, *, position: float, log_scale: float, opacity: float,
                      sh: float, angle_deg: float) -> None:
    assert len(got) == len(want) and got.sh_degree == want.sh_degree
    assert np.abs(got.position - want.position).max() <= position
    assert np.abs(np.log(got.scale) - np.log(want.scale)).max() <= log_scale
    assert np.abs(got.opacity - want.opacity).max() <= opacity
    assert np.abs(got.sh - want.sh).max() <= sh
    assert rotation_cos(got.rotation, want.rotation).min() >= np.cos(np.radians(angle_deg) / 2)


@pytest.fixture(scope="module")
def third_party(tmp_path_factory) -> tuple[SplatField, dict[str, Path]]:
    folder = tmp_path_factory.mktemp("third_party")
    field = reference_field()
    ply = write_inria_ply(reference_splats(), folder / "reference.ply")
    files = {"ply": folder / "st.ply", "spz": folder / "st.spz", "glb": folder / "st.glb"}
    splat_transform(ply, files["ply"])
    splat_transform(ply, "--spz-version", "3", files["spz"])
    splat_transform(ply, files["glb"])
    return field, files


def test_splat_transforms_ply_reads_exactly(third_party):
    field, files = third_party
    got = read_splat_file(files["ply"]).field
    assert_same_field(got, field, position=1e-6, log_scale=1e-5, opacity=1e-5, sh=1e-6, angle_deg=0.05)


def test_splat_transforms_spz_reads_within_spz_precision(third_party):
    field, files = third_party
    # SplatTransform stores the PLY's coordinates in the SPZ unconverted, where SPZ's specification
    # (and Niantic's library) store right-up-back: read by the specification, its file comes out
    # turned half about x against the PLY it came from
    field = half_turn_x(field)
    got = read_splat_file(files["spz"]).field
    # SplatTransform keeps SH in 5 bits (band 1) and 4 bits (bands 2–3): steps of 1/16 and 1/8 of 128/128
    assert_same_field(got, field, position=0.5 / 4096 + 1e-6, log_scale=0.5 / 16 + 1e-4, opacity=0.5 / 255 + 1e-4,
                      sh=0.07, angle_deg=0.25)
    assert np.abs(got.sh[:, 0] - field.sh[:, 0]).max() <= 0.5 / 255 / 0.15 + 1e-4
    # the view-dependent colour survives those 4–5 bits: seen from the origin, within 10/255 on average
    # (the reference's SH alone moves it by about 38/255 on average)
    seen = view_colours(field, np.zeros(3))
    assert np.abs(view_colours(got, np.zeros(3)) - seen).mean() < 10 / 255
    assert np.abs(field.rgb() - seen).mean() > 30 / 255


def test_splat_transforms_khr_glb_reads_exactly(third_party):
    field, files = third_party
    splat_file = read_splat_file(files["glb"])
    # SplatTransform places the PLY in glTF turned half about z; ours turns glTF half about x: the
    # reference seen through both is turned half about y, (x, y, z) → (−x, y, −z)
    got = splat_file.field
    np.testing.assert_allclose(got.position * [-1, 1, -1], field.position, atol=1e-5)
    np.testing.assert_allclose(got.scale, field.scale, rtol=1e-5)
    np.testing.assert_allclose(got.opacity, field.opacity, atol=1e-5)
    # the colour seen along any direction is the reference's along the turned direction
    eye = np.array([0.3, -0.2, 0.1], dtype=np.float32)
    np.testing.assert_allclose(view_colours(got, eye * [-1, 1, -1]), view_colours(field, eye), atol=1e-4)


def test_our_exports_read_back_as_the_bundle(tmp_path):
    bundle = make_bundle(tmp_path / "photos", n=2, h=8, w=10)
    keep = ConfidenceCut().keep(bundle.conf)
    written = export(bundle, ["gaussians", "gltf-splats", "spz"], tmp_path / "out")
    rows = np.flatnonzero(keep)
    want_position = bundle.pts3d.reshape(-1, 3)[rows]
    for name, tolerance in (("gaussians", 1e-6), ("gltf-splats", 1e-6), ("spz", 0.5 / 4096 + 1e-6)):
        got = read_splat_file(written[name]).field
        assert np.abs(got.position - want_position).max() <= tolerance, name
        assert rotation_cos(got.rotation, bundle.gaussian_rotation.reshape(-1, 4)[rows]).min() > np.cos(np.radians(0.2))


# -- bad files --------------------------------------------------------------------------------------

def test_a_truncated_ply_says_how_much_is_there(third_party, tmp_path):
    _, files = third_party
    cut = tmp_path / "cut.ply"
    cut.write_bytes(files["ply"].read_bytes()[:-1000])
    with pytest.raises(SplatFileError, match=r"cut\.ply: ends after .* of the 400 Gaussians its header declares"):
        read_splat_file(cut)


def test_a_ply_without_gaussian_properties_is_named(tmp_path):
    path = tmp_path / "cloud.ply"
    path.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 2\nproperty float x\nproperty float y\n"
                     b"property float z\nend_header\n" + bytes(24))
    with pytest.raises(SplatFileError, match=r"cloud\.ply: is not a 3D Gaussian splat PLY: its vertices lack f_dc_0"):
        read_splat_file(path)


def test_spz_of_an_unknown_version(third_party, tmp_path):
    _, files = third_party
    raw = bytearray(gzip.decompress(files["spz"].read_bytes()))
    for version, expected in ((7, "SPZ version 7, which this add-on does not know"), (4, "SPZ version 4")):
        raw[4:8] = struct.pack("<I", version)
        path = tmp_path / f"v{version}.spz"
        path.write_bytes(gzip.compress(bytes(raw)))
        with pytest.raises(SplatFileError, match=expected):
            read_splat_file(path)


def test_gltf_missing_an_attribute(third_party, tmp_path):
    _, files = third_party
    raw = files["glb"].read_bytes().replace(b'"KHR_gaussian_splatting:SCALE"', b'"KHR_gaussian_splatting:SCALX"')
    path = tmp_path / "noscale.glb"
    path.write_bytes(raw)
    with pytest.raises(SplatFileError, match=r"noscale\.glb: its splat primitive lacks the attribute "
                                             r"KHR_gaussian_splatting:SCALE"):
        read_splat_file(path)


def test_nan_scales_are_counted(tmp_path):
    field = reference_field(count=50)
    scale = field.scale.copy()
    scale[[3, 7]] = np.nan
    splats = reference_splats(count=50)
    path = write_inria_ply(type(splats)(splats.position, splats.rotation, scale, splats.opacity, splats.sh),
                           tmp_path / "nan.ply")
    with pytest.raises(SplatFileError, match=r"nan\.ply: 2 of its 50 Gaussians have non-finite scales .* index 3"):
        read_splat_file(path)


def test_50_million_gaussians_on_a_24_gb_machine(tmp_path, monkeypatch):
    names = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2"] + [f"f_rest_{i}" for i in range(45)] + [
        "opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    path = tmp_path / "huge.ply"
    path.write_bytes(("ply\nformat binary_little_endian 1.0\nelement vertex 50000000\n"
                      + "".join(f"property float {n}\n" for n in names) + "end_header\n").encode())
    monkeypatch.setattr(checks, "available_memory", lambda: 20 * 2**30)   # what a 24 GB machine has free
    with pytest.raises(SplatFileError, match=r"huge\.ply: 50,000,000 Gaussians \(SH degree 3\) need about .* GiB "
                                             r"to import, and this machine has 20\.0 GiB free"):
        read_splat_file(path)
