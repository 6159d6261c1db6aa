"""Exports: every file is read back by an independent reader and compared number by number.

PLY through `plyfile`, GLB through a struct + json parse written here from the glTF 2.0 spec (and
`trimesh` as a second opinion), COLMAP through a text parser written here from COLMAP's documented
format (reading the 2D-points line unconditionally, as COLMAP and the 3DGS trainers do).
"""
from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest
import trimesh
from plyfile import PlyData

from mvdust3r_blender.core.alignment import aligned_bundle, alignment_of
from mvdust3r_blender.core.bundle import Bundle
from mvdust3r_blender.core.confidence import ConfidenceCut
from mvdust3r_blender.core.exports import FORMATS, ExportError, export
from mvdust3r_blender.core.exports.colmap import image_names, write_colmap
from mvdust3r_blender.core.exports.ply import write_vertex_ply
from mvdust3r_blender.core.rotations import quaternion_from_matrix
from tests.helpers import bundles

C0 = 0.28209479177387814
PHOTO_W, PHOTO_H = 64, 48


def rotation_from_quaternion(q: np.ndarray) -> np.ndarray:
    """The textbook rotation matrix of a unit quaternion (w, x, y, z)."""
    w, x, y, z = q
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def make_bundle(photo_dir: Path, n: int = 3, h: int = 6, w: int = 8, gaussians: bool = True,
                names: list[str] | None = None) -> Bundle:
    """The helpers' consistent scene (every point on the ray through its grid pixel's centre on the photo;
    fx != fy in views 1 and 2) of PHOTO_W × PHOTO_H photos with a centred principal point (glTF's camera
    has no other), written in `photo_dir`, one folder a view (so that `names` may repeat)."""
    names = names or [f"view {v}.jpg" for v in range(n)]
    bundle: Bundle = bundles.make_bundle(Bundle, [(PHOTO_W, PHOTO_H)] * n, (h, w), principal_offset=[(0.0, 0.0)] * n,
                                         gaussians=gaussians, photo_dir=photo_dir, write_photos=True,
                                         photo_names=[f"d{v}/{name}" for v, name in enumerate(names)])
    return bundle


@pytest.fixture
def bundle(tmp_path: Path) -> Bundle:
    return make_bundle(tmp_path / "photos")


def demo_mask(conf: np.ndarray, percent: float = 3.0) -> np.ndarray:
    """The official demo's rule, as written there: sort all confidences, index int(total*pct/100)."""
    values = np.sort(conf.reshape(-1))
    return conf >= values[int(len(values) * percent * 0.01)]


# ------------------------------------------------------------------ threshold


def test_default_threshold_is_the_demo_global_3_percent(bundle):
    keep = ConfidenceCut().keep(bundle.conf)
    np.testing.assert_array_equal(keep, demo_mask(bundle.conf))
    assert 0 < bundle.conf.size - keep.sum() <= math.ceil(bundle.conf.size * 0.03) + 1


def test_min_conf_is_an_absolute_threshold(bundle):
    np.testing.assert_array_equal(ConfidenceCut(min_confidence=2.5).keep(bundle.conf), bundle.conf >= 2.5)


# ------------------------------------------------------------------ ply


def test_point_ply_round_trip(bundle, tmp_path):
    path = export(bundle, ["ply"], tmp_path / "out")["ply"]
    assert path == (tmp_path / "out" / "points.ply").resolve()
    ply = PlyData.read(str(path))
    assert ply.text is False and ply.byte_order == "<"
    vertex = ply["vertex"]
    assert [p.name for p in vertex.properties] == ["x", "y", "z", "red", "green", "blue", "confidence", "view"]
    keep = demo_mask(bundle.conf)
    assert vertex.count == keep.sum()
    xyz = np.stack([vertex["x"], vertex["y"], vertex["z"]], -1)
    np.testing.assert_array_equal(xyz, bundle.pts3d[keep])
    rgb = np.stack([vertex["red"], vertex["green"], vertex["blue"]], -1)
    assert rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb, bundle.images[keep])
    np.testing.assert_array_equal(vertex["confidence"], bundle.conf[keep])
    views = np.broadcast_to(np.arange(bundle.num_views)[:, None, None], keep.shape)
    np.testing.assert_array_equal(vertex["view"], views[keep])


def test_point_ply_with_min_conf_and_with_nothing_left(bundle, tmp_path):
    vertex = PlyData.read(str(export(bundle, ["ply"], tmp_path, cut=ConfidenceCut(min_confidence=3.0))["ply"]))["vertex"]
    assert vertex.count == (bundle.conf >= 3.0).sum()
    assert np.all(vertex["confidence"] >= 3.0)
    empty = PlyData.read(str(export(bundle, ["ply"], tmp_path, cut=ConfidenceCut(min_confidence=1e9))["ply"]))["vertex"]
    assert empty.count == 0


def test_ply_is_written_in_chunks_without_seams(bundle, tmp_path, monkeypatch):
    from mvdust3r_blender.core.exports import ply
    monkeypatch.setattr(ply, "CHUNK_ROWS", 7)  # many chunks, the last one partial
    vertex = PlyData.read(str(export(bundle, ["ply"], tmp_path)["ply"]))["vertex"]
    keep = demo_mask(bundle.conf)
    np.testing.assert_array_equal(np.stack([vertex["x"], vertex["y"], vertex["z"]], -1), bundle.pts3d[keep])
    np.testing.assert_array_equal(vertex["confidence"], bundle.conf[keep])


# ------------------------------------------------------------------ gaussians

INRIA_ORDER = (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
               + [f"f_rest_{i}" for i in range(45)]
               + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])


def test_gaussian_ply_has_the_inria_layout_and_inverts_to_the_bundle(bundle, tmp_path):
    path = export(bundle, ["gaussians"], tmp_path)["gaussians"]
    assert path.name == "gaussians.ply"
    # The SIBR viewer reads the vertex count from the third header line and then fixed records.
    header = path.read_bytes()[:200].split(b"\n")
    assert header[:3] == [b"ply", b"format binary_little_endian 1.0", f"element vertex {demo_mask(bundle.conf).sum()}".encode()]
    vertex = PlyData.read(str(path))["vertex"]
    assert [p.name for p in vertex.properties] == INRIA_ORDER
    assert vertex.data.dtype == np.dtype([(name, "<f4") for name in INRIA_ORDER])  # 62 floats a record
    keep = demo_mask(bundle.conf)
    col = lambda *names: np.stack([vertex[n] for n in names], -1).astype(np.float64)  # noqa: E731
    np.testing.assert_array_equal(col("x", "y", "z"), bundle.pts3d[keep])
    assert not col("nx", "ny", "nz").any()
    assert not col(*[f"f_rest_{i}" for i in range(45)]).any()
    rgb = 0.5 + C0 * col("f_dc_0", "f_dc_1", "f_dc_2")
    np.testing.assert_allclose(rgb, bundle.images[keep] / 255.0, atol=1e-6)
    opacity = 1.0 / (1.0 + np.exp(-col("opacity")[:, 0]))
    np.testing.assert_allclose(opacity, np.clip(bundle.gaussian_opacity[keep], 1e-6, 1 - 1e-6), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.exp(col("scale_0", "scale_1", "scale_2")), bundle.gaussian_scale[keep], rtol=1e-6)
    np.testing.assert_array_equal(col("rot_0", "rot_1", "rot_2", "rot_3"), bundle.gaussian_rotation[keep])


def test_extreme_opacities_stay_finite(bundle, tmp_path):
    bundle.gaussian_opacity[0, 0, :2] = [0.0, 1.0]
    vertex = PlyData.read(str(export(bundle, ["gaussians"], tmp_path, cut=ConfidenceCut(min_confidence=1.0))["gaussians"]))["vertex"]
    assert np.all(np.isfinite(vertex["opacity"]))
    assert vertex["opacity"][0] < -10 and vertex["opacity"][1] > 10


def read_splat(path: Path) -> dict[str, np.ndarray]:
    """A .splat file as the web viewers read it: 32-byte records, no header (little-endian float32
    position and scale, RGBA bytes, quaternion bytes w x y z decoded as (b - 128) / 128)."""
    raw = path.read_bytes()
    assert len(raw) % 32 == 0
    n = len(raw) // 32
    floats = np.frombuffer(raw, "<f4").reshape(n, 8)
    u8 = np.frombuffer(raw, np.uint8).reshape(n, 32)
    return {"position": floats[:, 0:3], "scale": floats[:, 3:6], "rgb": u8[:, 24:27],
            "opacity": u8[:, 27] / 255.0, "rotation": (u8[:, 28:32].astype(np.float64) - 128) / 128}


def test_splat_holds_the_kept_gaussians_largest_first(bundle, tmp_path):
    path = export(bundle, ["splat"], tmp_path)["splat"]
    assert path.name == "scene.splat"
    keep = demo_mask(bundle.conf)
    splat = read_splat(path)
    assert len(splat["position"]) == keep.sum()
    # the reference converter's order: volume x opacity, descending
    weight = np.prod(bundle.gaussian_scale[keep].astype(np.float64), axis=1) * bundle.gaussian_opacity[keep]
    order = np.argsort(-weight, kind="stable")
    np.testing.assert_array_equal(splat["position"], bundle.pts3d[keep][order])
    np.testing.assert_array_equal(splat["scale"], bundle.gaussian_scale[keep][order])
    np.testing.assert_array_equal(splat["rgb"], bundle.images[keep][order])
    np.testing.assert_allclose(splat["opacity"], bundle.gaussian_opacity[keep][order], atol=0.5 / 255)
    q = bundle.gaussian_rotation[keep][order]
    np.testing.assert_allclose(splat["rotation"], q, atol=0.5 / 128 + 1e-9)
    # decoded and renormalised, the rotation is within a degree of the bundle's
    decoded = splat["rotation"] / np.linalg.norm(splat["rotation"], axis=1, keepdims=True)
    angle = np.degrees(2 * np.arccos(np.clip(np.abs(np.sum(decoded * q, axis=1)), 0, 1)))
    assert angle.max() < 1.0
    assert path.stat().st_size == 32 * keep.sum()          # no header, 32 bytes a Gaussian


def test_gaussians_without_gaussian_parameters_is_a_clear_error_and_writes_nothing(tmp_path):
    plain = make_bundle(tmp_path / "photos", gaussians=False)
    for fmt in ("gaussians", "splat"):
        with pytest.raises(ExportError, match="Gaussian parameters"):
            export(plain, ["ply", fmt], tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# ------------------------------------------------------------------ colmap


def parse_colmap(sparse: Path) -> tuple[dict, dict, dict]:
    """cameras, images, points3D as COLMAP's text reader sees them (comments and blank lines are
    skipped before a record; an image's second line is read whatever it holds)."""
    cameras = {}
    for line in (sparse / "cameras.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            e = line.split()
            cameras[int(e[0])] = (e[1], int(e[2]), int(e[3]), [float(x) for x in e[4:]])
    images = {}
    with open(sparse / "images.txt") as f:
        while True:
            line = f.readline()
            if not line:
                break
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            e = line.split()
            assert len(e) == 10, f"image line with {len(e)} fields: {line!r}"
            obs = f.readline().split()
            assert len(obs) % 3 == 0
            images[int(e[0])] = dict(qvec=np.array([float(x) for x in e[1:5]]), tvec=np.array([float(x) for x in e[5:8]]),
                                     camera_id=int(e[8]), name=e[9],
                                     xys=np.array([float(x) for x in obs]).reshape(-1, 3)[:, :2],
                                     point_ids=np.array([int(x) for x in obs[2::3]], dtype=np.int64))
    points = {}
    for line in (sparse / "points3D.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            e = line.split()
            track = [int(x) for x in e[8:]]
            points[int(e[0])] = dict(xyz=np.array([float(x) for x in e[1:4]]), rgb=np.array([int(x) for x in e[4:7]]),
                                     error=float(e[7]), track=list(zip(track[0::2], track[1::2])))
    return cameras, images, points


def test_colmap_round_trip(tmp_path):
    names = ["photo 1.jpg", "photo 1.jpg", "PHOTO_1.jpg"]
    bundle = make_bundle(tmp_path / "photos", names=names)
    folder = export(bundle, ["colmap"], tmp_path / "out")["colmap"]
    assert folder == (tmp_path / "out" / "colmap").resolve()
    sparse = folder / "sparse" / "0"
    cameras, images, points = parse_colmap(sparse)
    assert (sparse / "cameras.txt").read_text().startswith(
        "# Camera list with one line of data per camera:\n#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]\n# Number of cameras: 3\n")
    assert (sparse / "images.txt").read_text().startswith(
        "# Image list with two lines of data per image:\n#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME\n"
        "#   POINTS2D[] as (X, Y, POINT3D_ID)\n# Number of images: 3, mean observations per image: ")
    assert (sparse / "points3D.txt").read_text().startswith(
        "# 3D point list with one line of data per point:\n"
        "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)\n# Number of points: ")

    # Names: whitespace replaced, duplicates made unique ignoring case; photos copied under them.
    assert [images[i]["name"] for i in (1, 2, 3)] == ["photo_1.jpg", "photo_1_2.jpg", "PHOTO_1_3.jpg"]
    for v, i in enumerate((1, 2, 3)):
        assert (folder / "images" / images[i]["name"]).read_bytes() == Path(bundle.photo_paths[v]).read_bytes()

    for v in range(bundle.num_views):
        model, width, height, (fx, fy, cx, cy) = cameras[images[v + 1]["camera_id"]]
        assert (model, width, height) == ("PINHOLE", PHOTO_W, PHOTO_H)
        np.testing.assert_allclose([fx, fy, cx, cy], bundle.intrinsics[v][[0, 1, 0, 1], [0, 1, 2, 2]], rtol=1e-12)
        qvec = images[v + 1]["qvec"]
        assert abs(np.linalg.norm(qvec) - 1) < 1e-12
        world2cam = np.eye(4)
        world2cam[:3, :3] = rotation_from_quaternion(qvec)
        world2cam[:3, 3] = images[v + 1]["tvec"]
        np.testing.assert_allclose(np.linalg.inv(world2cam), bundle.cam2world[v], atol=1e-6)

    keep = demo_mask(bundle.conf)
    assert len(points) == keep.sum()
    ids = sorted(points)
    np.testing.assert_allclose(np.stack([points[i]["xyz"] for i in ids]), bundle.pts3d[keep], rtol=1e-7)
    np.testing.assert_array_equal(np.stack([points[i]["rgb"] for i in ids]), bundle.images[keep])
    # Every track points at an observation that points back, and the observation is the point's
    # pixel centre on the photo: reprojecting with the parsed camera lands on it.
    for pid in ids:
        (image_id, idx2d), = points[pid]["track"]
        image = images[image_id]
        assert image["point_ids"][idx2d] == pid
        R = rotation_from_quaternion(image["qvec"])
        fx, fy, cx, cy = cameras[image["camera_id"]][3]
        p = R @ points[pid]["xyz"] + image["tvec"]
        uv = np.array([fx * p[0] / p[2] + cx, fy * p[1] / p[2] + cy])
        np.testing.assert_allclose(uv, image["xys"][idx2d], atol=1e-3)
        assert 0 <= points[pid]["error"] < 1e-3
    assert sum(len(img["point_ids"]) for img in images.values()) == len(points)


def test_colmap_gives_every_image_an_observation(tmp_path):
    # Readers of the pycolmap SceneManager family stop at the first blank line of images.txt.
    bundle = make_bundle(tmp_path / "photos")
    keep = np.ones(bundle.conf.shape, dtype=bool)
    keep[1] = False  # nothing kept in view 1
    keep[2] = bundle.conf[2] < np.median(bundle.conf[2])  # view 2: only its weaker half kept
    folder = write_colmap(bundle, keep, tmp_path / "model", max_points=1)  # the subsample: one point, from view 0
    sparse = folder / "sparse" / "0"
    assert "" not in (sparse / "images.txt").read_text().splitlines()
    cameras, images, points = parse_colmap(sparse)
    assert [len(images[i]["point_ids"]) for i in (1, 2, 3)] == [1, 1, 1]
    (p1,) = [points[i] for i in images[2]["point_ids"]]
    np.testing.assert_allclose(p1["xyz"], bundle.pts3d[1].reshape(-1, 3)[np.argmax(bundle.conf[1])], rtol=1e-7)
    (p2,) = [points[i] for i in images[3]["point_ids"]]
    weak = np.where(keep[2], bundle.conf[2], 0).reshape(-1)
    np.testing.assert_allclose(p2["xyz"], bundle.pts3d[2].reshape(-1, 3)[np.argmax(weak)], rtol=1e-7)


def test_colmap_images_are_upright_copies(tmp_path):
    from PIL import Image, ImageOps

    bundle = make_bundle(tmp_path / "photos", names=["turned.jpg", "plain.jpg", "notes.jpg"])
    stored = np.zeros((30, 40, 3), np.uint8)
    stored[:, :20] = (250, 10, 10)
    stored[:, 20:] = (10, 10, 250)
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed turned 90 degrees clockwise: 30 wide, 40 tall
    Image.fromarray(stored).save(bundle.photo_paths[0], exif=exif.tobytes(), quality=95)
    Image.fromarray(stored).save(bundle.photo_paths[1], quality=95)
    folder = export(bundle, ["colmap"], tmp_path / "out")["colmap"]
    with Image.open(folder / "images" / "turned.jpg") as copy, Image.open(bundle.photo_paths[0]) as original:
        assert copy.size == (30, 40) and copy.getexif().get(0x0112, 1) == 1
        expected = np.asarray(ImageOps.exif_transpose(original), dtype=np.int16)
        assert np.abs(np.asarray(copy, dtype=np.int16) - expected).mean() < 3
    assert (folder / "images" / "plain.jpg").read_bytes() == Path(bundle.photo_paths[1]).read_bytes()
    assert (folder / "images" / "notes.jpg").read_bytes() == Path(bundle.photo_paths[2]).read_bytes()


def test_image_names_are_unique_and_space_free():
    names = image_names(["/a/x y.JPG", "/b/x_y.jpg", "/c/x y.JPG", "/d/noext", "/e/noext"])
    assert names == ["x_y.JPG", "x_y_2.jpg", "x_y_3.JPG", "noext", "noext_2"]


def test_colmap_with_a_missing_photo_is_a_clear_error_and_writes_nothing(bundle, tmp_path):
    Path(bundle.photo_paths[1]).unlink()
    with pytest.raises(ExportError, match=r"1 cannot be found.*view 1\.jpg"):
        export(bundle, ["ply", "colmap"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ glb


def read_glb(path: Path) -> tuple[dict, bytes]:
    """JSON and BIN chunks of a .glb, checking the container rules of the glTF 2.0 spec."""
    data = path.read_bytes()
    magic, version, length = struct.unpack_from("<III", data, 0)
    assert (magic, version, length) == (0x46546C67, 2, len(data))
    json_len, json_type = struct.unpack_from("<II", data, 12)
    assert json_type == 0x4E4F534A and json_len % 4 == 0
    doc = json.loads(data[20:20 + json_len].decode("utf-8"))
    rest = 20 + json_len
    binary = b""
    if rest < len(data):
        bin_len, bin_type = struct.unpack_from("<II", data, rest)
        assert bin_type == 0x004E4942 and bin_len % 4 == 0 and rest + 8 + bin_len == len(data)
        binary = data[rest + 8:]
        assert doc["buffers"][0]["byteLength"] <= bin_len
    return doc, binary


def accessor(doc: dict, binary: bytes, index: int) -> np.ndarray:
    acc = doc["accessors"][index]
    assert acc["componentType"] == 5126 and acc["type"] == "VEC3"
    view = doc["bufferViews"][acc["bufferView"]]
    start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
    assert start % 4 == 0
    return np.frombuffer(binary, "<f4", acc["count"] * 3, start).reshape(-1, 3)


def node_matrix(node: dict) -> np.ndarray:
    x, y, z, w = node["rotation"]
    m = np.eye(4)
    m[:3, :3] = rotation_from_quaternion(np.array([w, x, y, z]))
    m[:3, 3] = node["translation"]
    return m


@pytest.mark.parametrize("align", ["none", "level"])
def test_glb_round_trip(bundle, tmp_path, align):
    path = export(bundle, ["glb"], tmp_path, align=align)["glb"]
    if align == "level":   # the same checks against the bundle in its level frame
        bundle = aligned_bundle(bundle, alignment_of(bundle, "level"))
    assert path.name == "scene.glb"
    doc, binary = read_glb(path)
    assert doc["asset"]["version"] == "2.0"
    keep = demo_mask(bundle.conf)

    (prim,) = doc["meshes"][0]["primitives"]
    assert prim["mode"] == 0
    pos = accessor(doc, binary, prim["attributes"]["POSITION"])
    flip = np.array([1, -1, -1], np.float32)
    np.testing.assert_array_equal(pos, bundle.pts3d[keep] * flip)
    acc = doc["accessors"][prim["attributes"]["POSITION"]]
    assert acc["min"] == pos.min(0).tolist() and acc["max"] == pos.max(0).tolist()
    srgb = bundle.images[keep] / 255.0
    linear = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    np.testing.assert_allclose(accessor(doc, binary, prim["attributes"]["COLOR_0"]), linear, atol=1e-6)

    scene_nodes = [doc["nodes"][i] for i in doc["scenes"][doc["scene"]]["nodes"]]
    camera_nodes = [n for n in scene_nodes if "camera" in n]
    assert len(camera_nodes) == bundle.num_views
    for v, node in enumerate(camera_nodes):
        camera = doc["cameras"][node["camera"]]
        fx, fy = bundle.intrinsics[v, 0, 0], bundle.intrinsics[v, 1, 1]
        assert camera["type"] == "perspective"
        assert camera["perspective"]["yfov"] == pytest.approx(2 * math.atan(PHOTO_H / (2 * fy)))
        assert camera["perspective"]["aspectRatio"] == pytest.approx(PHOTO_W * fy / (PHOTO_H * fx))
        assert camera["perspective"]["znear"] > 0
        # glTF camera axes (x right, y up, looking down -Z) -> OpenCV camera axes, and world back.
        cam2world = np.diag([1, -1, -1, 1]) @ node_matrix(node) @ np.diag([1, -1, -1, 1])
        np.testing.assert_allclose(cam2world, bundle.cam2world[v], atol=1e-6)

        # Semantics without our conventions: glTF's own projection of the view's points through the
        # node and camera lands on the pixel centres they came from.
        world = bundle.pts3d[v].reshape(-1, 3).astype(np.float64) * [1, -1, -1]
        local = (np.linalg.inv(node_matrix(node)) @ np.c_[world, np.ones(len(world))].T).T[:, :3]
        assert np.all(local[:, 2] < 0)
        t = math.tan(camera["perspective"]["yfov"] / 2)
        ndc_x = local[:, 0] / -local[:, 2] / (camera["perspective"]["aspectRatio"] * t)
        ndc_y = local[:, 1] / -local[:, 2] / t
        h, w = bundle.grid_size
        x0, y0, x1, y1 = bundle.crop_box[v]
        jj, ii = np.meshgrid(np.arange(w), np.arange(h))
        np.testing.assert_allclose(PHOTO_W / 2 * (1 + ndc_x), (x0 + (jj + 0.5) * (x1 - x0) / w).reshape(-1), atol=1e-3)
        np.testing.assert_allclose(PHOTO_H / 2 * (1 - ndc_y), (y0 + (ii + 0.5) * (y1 - y0) / h).reshape(-1), atol=1e-3)

    # A second, unrelated reader agrees on the points and colours.
    scene = trimesh.load(str(path), force="scene")
    (cloud,) = [g for g in scene.geometry.values() if isinstance(g, trimesh.PointCloud)]
    assert len(cloud.vertices) == keep.sum()


def test_glb_with_no_points_keeps_the_cameras(bundle, tmp_path):
    doc, binary = read_glb(export(bundle, ["glb"], tmp_path, cut=ConfidenceCut(min_confidence=1e9))["glb"])
    assert "meshes" not in doc and "buffers" not in doc and binary == b""
    assert len(doc["cameras"]) == bundle.num_views == len(doc["nodes"])


# ------------------------------------------------------------------ export() itself


def test_export_writes_every_format_and_replaces_older_files(bundle, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "points.ply").write_text("old")
    (out / "colmap").mkdir()
    (out / "colmap" / "stale.txt").write_text("old")
    written = export(bundle, list(reversed(FORMATS)), out)
    assert list(written) == list(FORMATS) == ["ply", "gaussians", "splat", "colmap", "glb", "gltf-splats", "spz"]
    assert all(p.exists() for p in written.values())
    assert PlyData.read(str(out / "points.ply"))["vertex"].count == demo_mask(bundle.conf).sum()
    assert not (out / "colmap" / "stale.txt").exists()
    assert sorted(p.name for p in out.iterdir()) == ["colmap", "gaussians.ply", "points.ply", "scene.glb",
                                                     "scene.splat", "scene.spz", "splats.glb"]


def test_unknown_format_names_the_known_ones(bundle, tmp_path):
    with pytest.raises(ExportError) as info:
        export(bundle, ["ply", "obj"], tmp_path / "out")
    assert "'obj'" in str(info.value) and "ply, gaussians, splat, colmap, glb" in str(info.value)
    assert info.value.code == "export"
    assert not (tmp_path / "out").exists()
    with pytest.raises(ExportError, match="no export format"):
        export(bundle, [], tmp_path / "out")


def test_unwritable_output_folder_is_a_clear_error(bundle, tmp_path):
    blocker = tmp_path / "a file"
    blocker.write_text("not a folder")
    with pytest.raises(ExportError, match=r"a file/sub: cannot write exports there") as info:
        export(bundle, ["ply"], blocker / "sub")
    assert "folder you can write to" in info.value.hint


def test_a_failed_write_leaves_the_old_file_and_no_partial_one(tmp_path):
    target = tmp_path / "points.ply"
    target.write_text("previous export")

    def fill(buf, rows):
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_vertex_ply(target, np.dtype([("x", "<f4")]), np.arange(10), fill)
    assert target.read_text() == "previous export"
    assert [p.name for p in tmp_path.iterdir()] == ["points.ply"]


def test_quaternions_match_the_textbook_formula_at_every_angle():
    rng = np.random.default_rng(3)
    q = rng.normal(size=(500, 4))
    q[:4] = [[0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [1, 0, 0, 0]]  # half turns and identity
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    q[q[:, 0] < 0] *= -1
    got = quaternion_from_matrix(np.stack([rotation_from_quaternion(x) for x in q]))
    same_sign = np.where((got * q).sum(1, keepdims=True) < 0, -got, got)
    np.testing.assert_allclose(same_sign, q, atol=1e-12)
    assert np.all(got[:, 0] >= 0)


def test_exported_files_and_folders_follow_the_umask(tmp_path):
    """Temporary names must not leak mkstemp's 0600 / mkdtemp's 0700 into the final outputs."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        paths = export(make_bundle(tmp_path / "photos"), ["ply", "colmap"], tmp_path / "out")
    finally:
        os.umask(old)
    assert stat.S_IMODE(paths["ply"].stat().st_mode) == 0o644
    assert stat.S_IMODE(paths["colmap"].stat().st_mode) == 0o755


def test_a_full_disk_names_the_file_and_leaves_nothing(bundle, full_disk):
    """The disk fills up while an export is written: an ExportError that names the
    file and says the disk is full (never a raw OSError), and no partial file is left."""
    with pytest.raises(ExportError) as caught:
        export(bundle, ["ply", "glb"], full_disk)
    assert caught.value.message == f"cannot write {full_disk / 'points.ply'}: the disk is full (no space left on it)"
    assert "free some space" in caught.value.hint
    assert sorted(p.name for p in full_disk.iterdir()) == ["filler"]


def test_a_full_disk_while_writing_a_bundle_is_a_bundle_error(bundle, full_disk):
    from mvdust3r_blender.core.bundle import BundleError, write_bundle

    with pytest.raises(BundleError, match=f"cannot write {full_disk / 'scene.npz'}: the disk is full"):
        write_bundle(bundle, full_disk / "scene.npz")
    assert sorted(p.name for p in full_disk.iterdir()) == ["filler"]


def test_tied_confidences_still_lose_the_stated_share(bundle, tmp_path):
    """With a third of the confidences exactly 1.0, the default cut leaves out exactly
    int(total·3 %) points (the demo's rule would leave out none), the same ones every time, spread
    over the views; without ties the rule is the demo's."""
    rng = np.random.default_rng(5)
    bundle.conf[rng.random(bundle.conf.shape) < 0.34] = 1.0
    keep = ConfidenceCut().keep(bundle.conf)
    total = bundle.conf.size
    assert demo_mask(bundle.conf).all()                        # the demo's rule: nothing left out
    assert int(total - keep.sum()) == int(total * 0.03) > 0
    assert np.array_equal(keep, ConfidenceCut().keep(bundle.conf.copy()))
    assert bundle.conf[~keep].max() == 1.0 and (~keep).reshape(bundle.num_views, -1).any(axis=1).sum() >= 2
    ply = export(bundle, ["ply"], tmp_path)["ply"]
    assert len(PlyData.read(str(ply))["vertex"]) == int(keep.sum())
    big = np.random.default_rng(1).uniform(1, 9, 10_000).astype(np.float32)
    assert np.array_equal(ConfidenceCut().keep(big), demo_mask(big))
