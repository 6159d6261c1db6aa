"""The import as a whole: a new collection, existing data untouched, complete rollback on failure,
and the File > Import operator (thin over the API) reporting bad files with the scene unchanged."""
from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import bpy
import numpy as np
import pytest

from tests.helpers.blender_queries import evaluated_point_count

DATA = ("objects", "meshes", "cameras", "materials", "node_groups", "images", "collections")


def snapshot() -> dict[str, set[str]]:
    """Names of every datablock an import could touch, plus the scene's linked collections/objects."""
    names = {kind: {i.name for i in getattr(bpy.data, kind)} for kind in DATA}
    scene = bpy.context.scene
    names["scene"] = {c.name for c in scene.collection.children} | {o.name for o in scene.collection.objects}
    return names


@pytest.fixture
def api(ext: ModuleType) -> ModuleType:
    return importlib.import_module(f"{ext.__name__}.api")


@pytest.fixture
def user_scene() -> bpy.types.Object:
    """Something of the user's in the scene: a mesh object that an import must leave alone."""
    bpy.ops.mesh.primitive_cube_add(size=1.0, location=(1, 2, 3))
    cube = bpy.context.active_object
    assert cube is not None
    return cube


def test_import_makes_one_new_collection_and_leaves_the_rest(api: ModuleType, make_bundle: Callable[..., Any],
                                                             user_scene: bpy.types.Object) -> None:
    bundle = make_bundle()
    before = snapshot()
    matrix = np.array(user_scene.matrix_world)
    result = api.import_bundle(bundle)
    # the collection is named after the photos' folder and holds everything made
    assert result.collection.name == Path(bundle.photo_paths[0]).parent.name
    assert result.collection.name in {c.name for c in bpy.context.scene.collection.children}
    made = set(result.collection.objects)
    assert {result.points, result.gaussians, *result.cameras} <= made
    assert result.bundle_path is None and result.report
    # nothing that existed was changed or removed
    after = snapshot()
    for kind in DATA:
        assert before[kind] <= after[kind]
    assert np.array_equal(np.array(user_scene.matrix_world), matrix)
    assert user_scene.users_collection[0] == bpy.context.scene.collection
    # a second import makes a second collection
    again = api.import_bundle(bundle, name="Second")
    assert again.collection.name == "Second" and again.collection != result.collection


def test_camera_warnings_of_the_recovery_are_reported(api: ModuleType, make_bundle: Callable[..., Any]) -> None:
    """meta["camera_warnings"] (degenerate input, docs/bundle.md) reach the import's warnings, naming the photos."""
    bundle = make_bundle()
    bundle.meta["camera_warnings"] = [{"views": [1, 2], "message": "the focal length of their camera cannot be "
                                                                   "measured; a 60° field of view is assumed"}]
    result = api.import_bundle(bundle, points=False, gaussians=False)
    names = ", ".join(Path(p).name for p in bundle.photo_paths[1:])
    expected = f"camera of {names}: the focal length of their camera cannot be measured; a 60° field of view is assumed"
    assert expected in result.warnings and expected in result.report
    assert not [w for w in api.import_bundle(make_bundle(), points=False).warnings if w.startswith("camera of")]


def test_import_from_file_records_the_path(api: ModuleType, ext: ModuleType, make_bundle: Callable[..., Any],
                                           tmp_path: Path) -> None:
    bundle_module = importlib.import_module(f"{ext.__name__}.core.bundle")
    path = bundle_module.write_bundle(make_bundle(), tmp_path / "scene.npz")
    result = api.import_bundle(path, cameras=False, gaussians=False)
    assert result.bundle_path == str(path) and result.points is not None and not result.cameras


def test_failure_midway_removes_everything_it_made(api: ModuleType, ext: ModuleType,
                                                  make_bundle: Callable[..., Any],
                                                  user_scene: bpy.types.Object,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Points and cameras (with their photos) are made, then the Gaussians fail: all of it goes again."""
    scene_module = importlib.import_module(f"{ext.__name__}.importers.scene")

    def failing(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("injected failure while creating the Gaussians")

    monkeypatch.setattr(scene_module, "create_gaussians", failing)
    before = snapshot()
    with pytest.raises(RuntimeError, match="injected failure"):
        api.import_bundle(make_bundle(), image_planes=True)
    assert snapshot() == before
    assert user_scene.name in bpy.data.objects


def test_bad_options_are_refused_before_anything_is_made(api: ModuleType, make_bundle: Callable[..., Any]) -> None:
    bundle = make_bundle(write_photos=False)
    before = snapshot()
    with pytest.raises(ValueError, match="unknown import option.*colour"):
        api.import_bundle(bundle, colour=True)
    with pytest.raises(ValueError, match="axes"):
        api.import_bundle(bundle, axes="Y_UP")
    assert snapshot() == before


def test_operator_imports_a_file(make_bundle: Callable[..., Any], ext: ModuleType, tmp_path: Path) -> None:
    bundle_module = importlib.import_module(f"{ext.__name__}.core.bundle")
    path = bundle_module.write_bundle(make_bundle(), tmp_path / "garden.npz")
    result = bpy.ops.import_scene.mvdust3r_bundle(filepath=str(path), import_gaussians=False, axes="NETWORK",
                                                  confidence_drop_percent=50.0, point_size=2.0)
    assert result == {"FINISHED"}
    collection = bpy.context.scene.collection.children[-1]
    kinds = sorted(o.type for o in collection.objects)
    assert kinds == ["CAMERA", "CAMERA", "CAMERA", "MESH"]
    points = next(o for o in collection.objects if o.type == "MESH")
    assert abs(evaluated_point_count(points) - len(points.data.vertices) / 2) <= 1


@pytest.mark.parametrize("content", [None, b"not a zip file", "npz-without-meta"])
def test_operator_reports_a_bad_file_and_leaves_the_scene(tmp_path: Path, content: Any,
                                                          user_scene: bpy.types.Object) -> None:
    path = tmp_path / "broken.npz"
    if content == "npz-without-meta":
        np.savez(path, images=np.zeros((1, 2, 2, 3), np.uint8))
    elif content is not None:
        path.write_bytes(content)
    before = snapshot()
    with pytest.raises(RuntimeError, match="broken.npz"):  # the operator's ERROR report, as bpy raises it
        bpy.ops.import_scene.mvdust3r_bundle(filepath=str(path))
    assert snapshot() == before
    assert bpy.ops.import_scene.mvdust3r_bundle.poll()


def test_file_handler_accepts_bundles_only_over_the_viewport(ext: ModuleType) -> None:
    handler = bpy.types.MVDUST3R_FH_bundle
    assert handler.bl_import_operator == "import_scene.mvdust3r_bundle"

    class Area:
        def __init__(self, kind: str) -> None:
            self.type = kind

    class Context:
        def __init__(self, area: Any) -> None:
            self.area = area

    assert handler.poll_drop(Context(Area("VIEW_3D")))
    assert not handler.poll_drop(Context(Area("NODE_EDITOR")))
    assert not handler.poll_drop(Context(None))


def test_dropped_file_imports(make_bundle: Callable[..., Any], ext: ModuleType, tmp_path: Path) -> None:
    """A drop invokes the operator with `filepath` set: headless, the options popup executes at once."""
    bundle_module = importlib.import_module(f"{ext.__name__}.core.bundle")
    path = bundle_module.write_bundle(make_bundle(write_photos=False), tmp_path / "dropped.npz")
    before = len(bpy.context.scene.collection.children)
    assert bpy.ops.import_scene.mvdust3r_bundle("INVOKE_DEFAULT", filepath=str(path)) == {"FINISHED"}
    assert len(bpy.context.scene.collection.children) == before + 1


def test_photos_named_with_bytes_that_are_not_utf8_import(api: ModuleType, make_bundle: Callable[..., Any],
                                                         tmp_path: Path) -> None:
    """A bundle made from ``bad\\xff\\xfe.png`` (legal on Linux) imports: names show the
    undecodable bytes as U+FFFD, the camera keeps the exact path and the photo still loads."""
    bundle = make_bundle()
    folder = os.fsencode(tmp_path) + b"/scans\xe9"
    os.mkdir(folder)
    renamed = []
    for k, photo in enumerate(bundle.photo_paths):
        raw = folder + b"/bad\xff\xfe" + bytes([0x80 + k]) + b".png"
        os.rename(photo, raw)
        renamed.append(os.fsdecode(raw))
    bundle.photo_paths = renamed
    result = api.import_bundle(bundle, image_planes=True)
    assert result.collection.name == "scans\ufffd"
    assert [c.name for c in result.cameras] == [f"bad\ufffd\ufffd\ufffd" if k == 0 else f"bad\ufffd\ufffd\ufffd.{k:03d}"
                                                for k in range(3)]
    assert [c["photo"] for c in result.cameras] == renamed
    assert all(c.data.background_images[0].image.size[:] != (0, 0) for c in result.cameras)


@pytest.mark.parametrize("case", ["zero views", "meta a list", "singular camera", "negative confidence",
                                  "negative scale"])
def test_operator_reports_a_malformed_bundle_by_file_and_field(make_bundle: Callable[..., Any], tmp_path: Path,
                                                               case: str, user_scene: bpy.types.Object) -> None:
    """File › Import of a malformed bundle is the operator's error report naming the
    file and the field (no Python traceback, nothing made)."""
    bundle = make_bundle(write_photos=False)
    arrays = {name: getattr(bundle, name) for name in ("images", "pts3d", "conf", "intrinsics", "cam2world",
                                                       "photo_size", "crop_box", "gaussian_rotation",
                                                       "gaussian_scale", "gaussian_opacity")}
    arrays["photo_paths"] = np.array(bundle.photo_paths)
    arrays["meta"] = np.array('{"format": "mvdust3r-bundle", "version": 1}')
    if case == "zero views":
        arrays = {k: v[:0] for k, v in arrays.items() if k != "meta"} | {"meta": arrays["meta"]}
        field = "'images' holds no pixels"
    elif case == "meta a list":
        arrays["meta"] = np.array("[]")
        field = "'meta' must be a JSON object"
    elif case == "singular camera":
        arrays["cam2world"] = np.zeros_like(arrays["cam2world"])
        field = "'cam2world' is not an invertible"
    elif case == "negative confidence":
        arrays["conf"] = -arrays["conf"]
        field = "'conf' holds confidences <= 0"
    else:
        arrays["gaussian_scale"] = -arrays["gaussian_scale"]
        field = "'gaussian_scale' holds Gaussian scales"
    path = tmp_path / "malformed.npz"
    np.savez(path, **arrays)
    before = snapshot()
    with pytest.raises(RuntimeError) as caught:   # the operator's ERROR report, as bpy raises it
        bpy.ops.import_scene.mvdust3r_bundle(filepath=str(path))
    assert f"{path}: {field}" in str(caught.value) and "Traceback" not in str(caught.value)
    assert snapshot() == before
