"""The bundle file: round trip, atomic write, and a clear error for every kind of bad file."""
from __future__ import annotations

import json
import os
import stat
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from mvdust3r_blender.core.bundle import Bundle, BundleError, read_bundle, write_bundle
from tests.helpers import bundles


def make_bundle(n: int = 3, h: int = 8, w: int = 6, gaussians: bool = True) -> Bundle:
    """Three views whose photos have non-ASCII names, confidences in [1, 2], timings in the meta."""
    bundle: Bundle = bundles.make_bundle(Bundle, [(64, 48)] * n, (h, w), gaussians=gaussians,
                                         photo_dir=Path("/photos"), photo_names=[f"ünïcode {i}.jpg" for i in range(n)],
                                         highest_confidence=2.0)
    bundle.meta.update(model={"variant": "MVD"}, timings={"network": 0.5})
    return bundle


@pytest.mark.parametrize("gaussians", [True, False])
def test_round_trip_keeps_every_array_and_meta(tmp_path, gaussians):
    original = make_bundle(gaussians=gaussians)
    path = write_bundle(original, tmp_path / "sub" / "scene.npz")
    loaded = read_bundle(path)
    for name in ("images", "pts3d", "conf", "intrinsics", "cam2world", "photo_size", "crop_box",
                 "gaussian_rotation", "gaussian_scale", "gaussian_opacity", "gaussian_rgb"):
        a, b = getattr(original, name), getattr(loaded, name)
        if a is None:
            assert b is None
        else:
            np.testing.assert_array_equal(a, b)
            assert b.dtype == a.dtype
    assert loaded.photo_paths == original.photo_paths
    assert loaded.meta["timings"] == {"network": 0.5}
    assert loaded.meta["version"] == 1 and loaded.meta["format"] == "mvdust3r-bundle"
    assert loaded.has_gaussians is gaussians
    assert loaded.grid_size == (8, 6)
    assert list(tmp_path.joinpath("sub").iterdir()) == [path]  # no temporary file left behind


def test_missing_file_names_it(tmp_path):
    with pytest.raises(BundleError, match="no such bundle file"):
        read_bundle(tmp_path / "nope.npz")


def test_not_an_npz_names_the_file(tmp_path):
    bad = tmp_path / "photo.npz"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not a zip")
    with pytest.raises(BundleError, match=r"photo\.npz.*not a reconstruction bundle"):
        read_bundle(bad)


def test_foreign_npz_is_refused(tmp_path):
    other = tmp_path / "other.npz"
    np.savez(other, a=np.zeros(3))
    with pytest.raises(BundleError, match="no 'meta'"):
        read_bundle(other)


def test_newer_version_asks_for_an_update(tmp_path):
    path = write_bundle(make_bundle(), tmp_path / "b.npz")
    with np.load(path) as npz:
        data = dict(npz)
    data["meta"] = np.array(json.dumps({"format": "mvdust3r-bundle", "version": 99}))
    np.savez(path, **data)
    with pytest.raises(BundleError, match="update the add-on"):
        read_bundle(path)


def test_inconsistent_shapes_are_named(tmp_path):
    bundle = make_bundle()
    bundle.conf = bundle.conf[:, :4]
    with pytest.raises(BundleError, match="'conf' has shape"):
        write_bundle(bundle, tmp_path / "b.npz")
    assert not (tmp_path / "b.npz").exists()


def test_nan_points_are_refused(tmp_path):
    bundle = make_bundle()
    bundle.pts3d[0, 0, 0, 0] = np.nan
    with pytest.raises(BundleError, match="'pts3d' holds NaN"):
        write_bundle(bundle, tmp_path / "b.npz")


def test_partial_gaussians_are_refused():
    bundle = make_bundle()
    bundle.gaussian_scale = None
    with pytest.raises(BundleError, match="partly missing"):
        bundle.validate()


def test_truncated_file_is_reported(tmp_path):
    path = write_bundle(make_bundle(), tmp_path / "b.npz")
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(BundleError, match="b.npz"):
        read_bundle(path)


def test_written_file_follows_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_bundle(make_bundle(), tmp_path / "b.npz")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def write_raw(path, bundle: Bundle, **edits) -> None:
    """`bundle` as .npz entries with `edits` applied (None drops an entry), bypassing write_bundle's checks."""
    arrays = {name: getattr(bundle, name) for name in ("images", "pts3d", "conf", "intrinsics", "cam2world",
                                                       "photo_size", "crop_box", "gaussian_rotation",
                                                       "gaussian_scale", "gaussian_opacity", "gaussian_rgb")}
    arrays["photo_paths"] = np.array(bundle.photo_paths)
    arrays["meta"] = np.array(json.dumps({**bundle.meta, "format": "mvdust3r-bundle", "version": 1}))
    arrays.update(edits)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})


def _scaled(name, factor):
    def edit(b):
        return {name: getattr(b, name) * factor}
    return edit


def _set(name, index, value):
    def edit(b):
        array = getattr(b, name).copy()
        array[index] = value
        return {name: array}
    return edit


MALFORMED = {  # each is a BundleError naming the file and the field
    "zero views": (lambda b: {k: getattr(b, k)[:0] for k in ("images", "pts3d", "conf", "intrinsics", "cam2world",
                                                           "photo_size", "crop_box", "gaussian_rotation",
                                                           "gaussian_scale", "gaussian_opacity", "gaussian_rgb")}
                   | {"photo_paths": np.array([], dtype=np.str_)}, "'images' holds no pixels"),
    "meta a JSON list": (lambda b: {"meta": np.array("[1, 2]")}, "'meta' must be a JSON object, found a JSON list"),
    "meta version text": (lambda b: {"meta": np.array(json.dumps({"format": "mvdust3r-bundle", "version": "abc"}))},
                          "'meta.version' must be a positive whole number, found 'abc'"),
    "meta not text": (lambda b: {"meta": np.zeros(3)}, "'meta' must be one JSON text"),
    "cam2world zeros": (lambda b: {"cam2world": np.zeros_like(b.cam2world)}, "'cam2world' is not an invertible"),
    "cam2world bottom row": (_set("cam2world", (1, 3, 0), 0.5), "'cam2world' is not an invertible"),
    "negative confidence": (_scaled("conf", -1.0), "'conf' holds confidences <= 0 (view 0)"),
    "zero confidence": (_set("conf", (2, 1, 1), 0.0), "'conf' holds confidences <= 0 (view 2)"),
    "negative scales": (_set("gaussian_scale", (1, 0, 0, 2), -0.1), "'gaussian_scale' holds Gaussian scales"),
    "opacity of 1.5": (_set("gaussian_opacity", (0, 0, 0), 1.5), "'gaussian_opacity' holds values outside [0,1]"),
    "zero quaternion": (_set("gaussian_rotation", (0, 2, 2), 0.0), "'gaussian_rotation' holds quaternions"),
    "focal length 0": (_set("intrinsics", (1, 0, 0), 0.0), "'intrinsics' is not a camera matrix"),
    "photo size 0": (_set("photo_size", (0, 0), 0), "'photo_size' holds a photo size below 1 pixel"),
    "photo size floats": (lambda b: {"photo_size": b.photo_size.astype(np.float32)}, "'photo_size' has dtype float32"),
    "empty crop box": (_set("crop_box", (0, 2), 0.0), "'crop_box' holds an empty box"),
    "pts3d as text": (lambda b: {"pts3d": np.full(b.pts3d.shape, "x")}, "'pts3d' has dtype <U1, expected numbers"),
    "images as floats": (lambda b: {"images": b.images.astype(np.float32)}, "'images' has dtype float32"),
    "too large for float32": (lambda b: _set("pts3d", (0, 0, 0, 0), 1e300)(replace(b, pts3d=b.pts3d.astype(np.float64))),
                              "'pts3d' holds NaN or infinite values"),
    "photo_paths numbers": (lambda b: {"photo_paths": np.arange(3)}, "'photo_paths' must be a list of path strings"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_every_malformed_array_is_a_bundle_error_naming_file_and_field(tmp_path, case):
    edit, says = MALFORMED[case]
    bundle = make_bundle()
    path = tmp_path / "scene.npz"
    write_raw(path, bundle, **edit(bundle))
    with pytest.raises(BundleError) as caught:
        read_bundle(path)
    assert caught.value.message.startswith(f"{path}: ") and says in caught.value.message, caught.value.message


def test_a_zip_bomb_is_refused_before_it_is_inflated(tmp_path):
    """docs/worker.md, threat model (a hostile bundle): 300 MB of zeros deflate to 0.3 MB; reading it
    would take 300 MB. The archive's directory and each array's header are checked first."""
    import resource
    import zipfile

    from numpy.lib import format as npformat

    bomb = tmp_path / "bomb.npz"
    count = 300 * 1024 ** 2 // 4
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("pts3d.npy", "w", force_zip64=True) as f:
            npformat.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (count,)})
            zeros = bytes(8 * 1024 ** 2)
            for _ in range(count * 4 // len(zeros)):
                f.write(zeros)
    assert bomb.stat().st_size < 1e6
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(BundleError, match="once unpacked"):
        read_bundle(bomb)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50 * 1024  # KiB: nothing was inflated

    liar = tmp_path / "liar.npz"  # an array header that promises 4 GB in a member of a few bytes
    with zipfile.ZipFile(liar, "w", zipfile.ZIP_STORED) as archive:
        with archive.open("pts3d.npy", "w") as f:
            npformat.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (2 ** 30,)})
            f.write(b"\0" * 16)
    with pytest.raises(BundleError, match=r"entry .pts3d. declares .* \(4,294,967,296 bytes\) but holds at most"):
        read_bundle(liar)
    good = tmp_path / "good.npz"
    write_bundle(make_bundle(), good)
    with pytest.raises(BundleError, match="once unpacked"):  # a caller's own bound (a remote result's budget)
        read_bundle(good, max_bytes=100)
    assert read_bundle(good).num_views == 3


def test_an_output_that_is_not_a_file_is_refused_and_left_alone(tmp_path):
    """A symlink, a pipe and a device node where a bundle or an export goes are refused, never
    replaced (a test run once replaced the machine's /dev/full); the node is made in a temporary
    folder (/dev is never touched). A folder where a file goes, and the reverse, likewise."""
    from mvdust3r_blender.core.atomic import OutputRefused
    from mvdust3r_blender.core.exports import export

    bundle = make_bundle()
    victim = tmp_path / "victim.txt"
    victim.write_text("the user's file")
    (tmp_path / "link.npz").symlink_to(victim)
    os.mkfifo(tmp_path / "pipe.npz")
    nodes = ["link.npz", "pipe.npz"]
    if os.geteuid() == 0:  # a character device like /dev/null (1, 3), in the temporary folder
        os.mknod(tmp_path / "device.npz", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
        nodes.append("device.npz")
    for name in nodes:
        with pytest.raises(OutputRefused, match="it is a (symbolic link|pipe|device)"):
            write_bundle(bundle, tmp_path / name)
    assert (tmp_path / "link.npz").is_symlink() and victim.read_text() == "the user's file"
    assert stat.S_ISFIFO(os.lstat(tmp_path / "pipe.npz").st_mode)
    if os.geteuid() == 0:
        assert stat.S_ISCHR(os.lstat(tmp_path / "device.npz").st_mode)
    (tmp_path / "folder.npz").mkdir()
    with pytest.raises(OutputRefused, match="it is a folder"):
        write_bundle(bundle, tmp_path / "folder.npz")
    exports = tmp_path / "exports"
    exports.mkdir()
    (exports / "points.ply").symlink_to(victim)
    (exports / "scene.glb").mkdir()
    with pytest.raises(OutputRefused, match="points.ply: it is a symbolic link"):
        export(bundle, ["ply"], exports)
    with pytest.raises(OutputRefused, match="scene.glb: it is a folder"):
        export(bundle, ["glb"], exports)
    assert victim.read_text() == "the user's file" and not list(tmp_path.rglob(".*"))
