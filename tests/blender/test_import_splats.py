"""File › Import › Gaussian Splats: 3DGS files made by another tool (SplatTransform, from npm,
converting a reference 3DGS PLY with SH degree 3 written here) become the add-on's splats; F12
renders them like the reference rasteriser, view-dependent colour included; bad files answer with
the file and the problem and leave the scene as it was."""
from __future__ import annotations

import dataclasses
import gzip
import importlib
import struct
from pathlib import Path
from types import ModuleType
from typing import Any

import bpy
import numpy as np
import pytest

from tests.helpers.blender_queries import render_linear
from tests.helpers.npm_tools import splat_transform
from tests.helpers.splat_reference import SplatImage, alpha_iou, psnr, rasterize, sh_colours
from tests.helpers.splat_reference_files import ReferenceSplats, random_sh, reference_splats, write_inria_ply
from tests.helpers.splat_scenes import plane_and_sphere
from test_import_bundle import snapshot

Z_UP = np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]])     # OpenCV world → Blender, as the bundle import


@pytest.fixture
def mods(ext: ModuleType) -> dict[str, ModuleType]:
    return {name: importlib.import_module(f"{ext.__name__}.{name}")
            for name in ("api", "core.bundle", "core.rotations", "core.splat_files", "core.splat_files.checks",
                         "importers.gaussians", "importers.splat_file")}


@pytest.fixture(scope="module")
def third_party(tmp_path_factory: pytest.TempPathFactory) -> tuple[ReferenceSplats, dict[str, Path]]:
    folder = tmp_path_factory.mktemp("third_party")
    ply = write_inria_ply(reference_splats(), folder / "reference.ply")
    files = {"ply": folder / "statue.ply", "spz": folder / "statue.spz", "glb": folder / "statue.glb"}
    splat_transform(ply, files["ply"])
    splat_transform(ply, "--spz-version", "3", files["spz"])
    splat_transform(ply, files["glb"])
    return reference_splats(), files


def read(mesh: bpy.types.Mesh, name: str, field: str, width: int) -> np.ndarray:
    attribute = mesh.attributes[name]
    values = np.zeros(len(attribute.data) * width, dtype=np.float32)
    attribute.data.foreach_get(field, values)
    return values.reshape(-1, width)


def test_the_import_menu_and_the_drop_handler(ext: ModuleType) -> None:
    assert hasattr(bpy.types, "IMPORT_SCENE_OT_mvdust3r_splats")
    handler = getattr(bpy.types, "MVDUST3R_FH_splats")
    assert set(handler.bl_file_extensions.split(";")) == {".ply", ".spz", ".glb", ".gltf"}
    assert handler.bl_import_operator == "import_scene.mvdust3r_splats"


@pytest.mark.parametrize("kind", ["ply", "spz", "glb"])
def test_third_party_files_import_as_splats(mods: dict[str, ModuleType], third_party: Any, kind: str) -> None:
    reference, files = third_party
    before = {c.name for c in bpy.context.scene.collection.children}
    assert bpy.ops.import_scene.mvdust3r_splats(filepath=str(files[kind])) == {"FINISHED"}
    [name] = {c.name for c in bpy.context.scene.collection.children} - before
    [obj] = bpy.data.collections[name].objects
    assert obj.modifiers[0].name == mods["importers.gaussians"].MODIFIER
    mesh = obj.data
    points = np.zeros(len(mesh.vertices) * 3, dtype=np.float32)
    mesh.vertices.foreach_get("co", points)
    # SplatTransform's frames: its glTF is the PLY turned half about z, its SPZ holds the PLY's
    # coordinates where SPZ's specification has right-up-back (read as such: turned half about x)
    turn = {"ply": np.eye(3), "spz": np.diag([1.0, -1.0, -1.0]), "glb": np.diag([-1.0, 1.0, -1.0])}[kind]
    expected = reference.position @ turn.T @ Z_UP.T
    tolerance = 0.5 / 4096 + 1e-5 if kind == "spz" else 1e-5
    assert np.abs(points.reshape(-1, 3) - expected).max() <= tolerance
    assert obj["mvdust3r_sh_degree"] == 3
    for k in range(16):
        assert f"sh_{k}" in mesh.attributes
    np.testing.assert_allclose(read(mesh, "opacity", "value", 1)[:, 0], reference.opacity, atol=0.5 / 255 + 1e-4)


def test_api_import_splats(mods: dict[str, ModuleType], third_party: Any) -> None:
    _, files = third_party
    result = mods["api"].import_splats(files["ply"], name="Statue")
    assert result.collection.name == "Statue" and result.count == 400 and result.sh_degree == 3
    assert result.gaussians.name in result.collection.objects
    assert any("400 Gaussians" in line for line in result.report)


def bad_files(folder: Path, files: dict[str, Path]) -> dict[str, tuple[Path, str]]:
    """{case: (file, what the message must say)}."""
    cases: dict[str, tuple[Path, str]] = {}
    cut = folder / "cut.ply"
    cut.write_bytes(files["ply"].read_bytes()[:-1000])
    cases["truncated ply"] = (cut, r"cut\.ply: ends after .* of the 400 Gaussians its header declares")
    cloud = folder / "cloud.ply"
    cloud.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 1\nproperty float x\nproperty float y\n"
                      b"property float z\nend_header\n" + bytes(12))
    cases["ply without 3DGS properties"] = (cloud, r"cloud\.ply: is not a 3D Gaussian splat PLY")
    raw = bytearray(gzip.decompress(files["spz"].read_bytes()))
    raw[4:8] = struct.pack("<I", 9)
    unknown = folder / "future.spz"
    unknown.write_bytes(gzip.compress(bytes(raw)))
    cases["spz of an unknown version"] = (unknown, r"future\.spz: is SPZ version 9, which this add-on does not know")
    noscale = folder / "noscale.glb"
    noscale.write_bytes(files["glb"].read_bytes().replace(b":SCALE\"", b":SCALX\""))
    cases["gltf missing an attribute"] = (noscale, r"noscale\.glb: .*lacks the attribute KHR_gaussian_splatting:SCALE")
    splats = reference_splats(count=20)
    scale = splats.scale.copy()
    scale[4] = np.nan
    nan = write_inria_ply(ReferenceSplats(splats.position, splats.rotation, scale, splats.opacity, splats.sh),
                          folder / "nan.ply")
    cases["nan scales"] = (nan, r"nan\.ply: 1 of its 20 Gaussians have non-finite scales")
    return cases


def test_bad_files_are_refused_naming_file_and_problem(mods: dict[str, ModuleType], third_party: Any,
                                                       tmp_path: Path) -> None:
    _, files = third_party
    for case, (path, message) in bad_files(tmp_path, files).items():
        before = snapshot()
        with pytest.raises(RuntimeError, match=message):       # the operator's ERROR report
            bpy.ops.import_scene.mvdust3r_splats(filepath=str(path))
        assert snapshot() == before, case
        with pytest.raises(mods["core.splat_files"].SplatFileError, match=message):
            mods["api"].import_splats(path)
        assert snapshot() == before, case


def test_50_million_gaussians_beyond_memory(mods: dict[str, ModuleType], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    names = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2"] + [f"f_rest_{i}" for i in range(45)] + [
        "opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    path = tmp_path / "huge.ply"
    path.write_bytes(("ply\nformat binary_little_endian 1.0\nelement vertex 50000000\n"
                      + "".join(f"property float {n}\n" for n in names) + "end_header\n").encode())
    monkeypatch.setattr(mods["core.splat_files.checks"], "available_memory", lambda: 20 * 2**30)   # a 24 GB machine
    before = snapshot()
    with pytest.raises(RuntimeError, match=r"huge\.ply: 50,000,000 Gaussians \(SH degree 3\) need about"):
        bpy.ops.import_scene.mvdust3r_splats(filepath=str(path))
    assert snapshot() == before


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    c = np.clip(c, 0.0, 1.0)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


@pytest.mark.parametrize("kind", ["ply", "spz", "glb"])
def test_sh_degree_3_renders_like_the_reference(mods: dict[str, ModuleType], tmp_path: Path, kind: str) -> None:
    """The splat test's scene (4 k Gaussians at 96×72) with SH of degree 3, written as a 3DGS PLY and
    converted by SplatTransform to `kind`, imported through the menu's operator and rendered by
    Cycles at 8 samples: the splat test's bar (PSNR ≥ 32 dB, alpha IoU ≥ 0.95) against the reference
    rasteriser with SH evaluated for the camera; the colour shown is view-dependent (the SH move it
    well past the bar), and the viewport's degree-0 colour is back after the render. SplatTransform's
    SPZ and glTF come in turned (half about x, half about y: see test_third_party_files_import_as_splats),
    so the camera is turned with them: the same picture."""
    bundle = plane_and_sphere(mods["core.bundle"].Bundle, mods["core.rotations"].quaternion_from_matrix, 4000, 96, 72)
    rng = np.random.default_rng(3)
    rgb = bundle.images.reshape(-1, 3) / 255.0
    splats = ReferenceSplats(bundle.pts3d.reshape(-1, 3), bundle.gaussian_rotation.reshape(-1, 4),
                             bundle.gaussian_scale.reshape(-1, 3), bundle.gaussian_opacity.reshape(-1),
                             random_sh(rng, rgb, 3, 0.2))
    theirs = tmp_path / f"scan.{kind}"
    splat_transform(write_inria_ply(splats, tmp_path / "reference.ply"), *(["--spz-version", "3"] if kind == "spz" else []),
                    theirs)
    turn = np.eye(4)
    turn[:3, :3] = {"ply": np.eye(3), "spz": np.diag([1.0, -1.0, -1.0]), "glb": np.diag([-1.0, 1.0, -1.0])}[kind]
    seen_from = dataclasses.replace(bundle, cam2world=(turn @ bundle.cam2world[0])[None].astype(np.float32))
    mods["api"].import_bundle(seen_from, points=False, gaussians=False, background_images=False, name="Camera")
    camera = [o for o in bpy.data.collections["Camera"].objects if o.type == "CAMERA"][0]
    bpy.ops.mvdust3r_blender.set_render_camera(camera=camera.name)
    assert bpy.ops.import_scene.mvdust3r_splats(filepath=str(theirs)) == {"FINISHED"}

    world2cam = np.linalg.inv(bundle.cam2world[0].astype(np.float64))
    eye = bundle.cam2world[0][:3, 3]

    def reference(colour: np.ndarray) -> SplatImage:
        return rasterize(splats.position, splats.rotation, splats.scale, splats.opacity, srgb_to_linear(colour),
                         world2cam, bundle.intrinsics[0], 96, 72)

    seen = reference(sh_colours(splats.position, splats.sh, eye))
    flat = reference(sh_colours(splats.position, splats.sh[:, :1], eye))
    colour, alpha = render_linear(bpy.context.scene, tmp_path / "splats.exr", samples=8)
    image = SplatImage(colour=colour, alpha=alpha)
    print(f"PSNR render {psnr(image, seen):.2f} dB, IoU {alpha_iou(image, seen):.3f}; degree 0 alone {psnr(flat, seen):.2f} dB")
    assert psnr(image, seen) >= 32.0
    assert alpha_iou(image, seen) >= 0.95
    assert psnr(flat, seen) < 26.0, "the SH should change the picture well beyond the bar"

    obj = [o for o in bpy.context.scene.objects if "mvdust3r_sh_degree" in o.keys()][0]
    shown = read(obj.data, "Col", "color", 4)[:, :3]
    dc = read(obj.data, "sh_0", "vector", 3)
    np.testing.assert_allclose(shown, srgb_to_linear(0.5 + 0.28209479177387814 * dc), atol=1e-5)
