"""The command line, run for real: ``python -m mvdust3r_blender.engine reconstruct ...`` with golden checkpoints."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from mvdust3r_blender.core.bundle import read_bundle
from mvdust3r_blender.engine.__main__ import main
from mvdust3r_blender.engine.devices import available_devices
from tests.helpers.photos import noise_photos

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _private_checkpoint_cache(tmp_path, monkeypatch):
    """In-process runs cache converted checkpoints in the test's folder, not in $HOME."""
    monkeypatch.setenv("MVDUST3R_CACHE_DIR", str(tmp_path / "checkpoint-cache"))


def _cli(*args, cwd):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2",
           "MVDUST3R_CACHE_DIR": str(cwd / "checkpoint-cache")}  # keep the checkpoint cache out of $HOME
    return subprocess.run([sys.executable, "-m", "mvdust3r_blender.engine", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def _photos(folder: Path, sizes, seed=0, suffix=".png"):
    return noise_photos(folder, sizes, seed, name="vue {} é" + suffix)


def test_photos_folder_to_bundle_and_every_export(golden, tmp_path):
    photos = _photos(tmp_path / "mes photos 写真", [(96, 72), (64, 64), (50, 90), (120, 80)])
    (tmp_path / "mes photos 写真" / "notes.txt").write_text("not a photo, skipped by folder expansion")
    out = tmp_path / "sortie été"
    ckpt = golden / "mvd_reduced_ckpt.pth"
    r = _cli("reconstruct", photos[0].parent, "--checkpoint", ckpt, "--out", out,
             "--export", "ply,gaussians,splat,colmap,glb", "--device", "cpu", "--reference-view", "1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "error" not in r.stderr
    for stage in ("model", "load", "network", "cameras", "gaussians", "write"):  # the progress line's stages
        assert f"{stage:<10}[{'#' * 30}] 100%" in r.stderr
    printed = r.stdout.split("\n")
    for name in ["reconstruction.npz", "points.ply", "gaussians.ply", "scene.splat", "colmap", "scene.glb"]:
        assert (out / name).exists() and str(out / name) in printed
    b = read_bundle(out / "reconstruction.npz")
    assert b.photo_paths == [str(p) for p in sorted(photos)]
    assert b.num_views == 4 and b.grid_size == (64, 64) and b.has_gaussians
    assert b.meta["reference_view"] == 1 and b.meta["model"]["variant"] == "MVD"
    assert b.meta["checkpoint"] == str(ckpt) and b.meta["model"]["name"] == ckpt.name
    assert {"load", "network", "cameras", "gaussians", "total"} <= set(b.meta["timings"])
    ply = (out / "points.ply").read_bytes()
    assert ply.startswith(b"ply\n") and b"element vertex" in ply
    assert (out / "scene.glb").read_bytes()[:4] == b"glTF"


def test_mv_dust3r_plus_without_gaussians(golden, tmp_path):
    photos = _photos(tmp_path / "in", [(80, 60)] * 5, seed=1, suffix=".jpg")
    out = tmp_path / "out"
    r = _cli("reconstruct", *photos, "--checkpoint", golden / "mvdp_reduced_ckpt.pth", "--out", out,
             "--no-gaussians", "--export", "ply,glb", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    b = read_bundle(out / "reconstruction.npz")
    assert b.meta["model"]["variant"] == "MVDp" and b.meta["model"]["n_ref"] == 4 and not b.has_gaussians
    assert b.meta["reference_order"] == [0, 3, 2, 1, 4]
    assert sorted(p.name for p in out.iterdir()) == ["points.ply", "reconstruction.npz", "scene.glb"]


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.replace("\r", "\n").split("\n") if line.startswith("error:")]
    assert len(lines) == 1, stderr
    return lines[0]


def test_missing_checkpoint_fails_cleanly_and_writes_nothing(tmp_path):
    photos = _photos(tmp_path / "in", [(40, 30)] * 2)
    out = tmp_path / "out"
    r = _cli("reconstruct", *photos, "--checkpoint", tmp_path / "nowhere.pth", "--out", out, cwd=tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "nowhere.pth" in _one_error_line(r.stderr)
    assert not out.exists()


def test_bad_photos_are_all_named(golden, tmp_path):
    photos = _photos(tmp_path / "in", [(40, 30)] * 2)
    empty = tmp_path / "in" / "empty.jpg"
    empty.write_bytes(b"")
    junk = tmp_path / "in" / "junk.png"
    junk.write_text("hello")
    out = tmp_path / "out"
    r = _cli("reconstruct", *photos, empty, junk, "--checkpoint", golden / "mvd_reduced_ckpt.pth", "--out", out,
             cwd=tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    line = _one_error_line(r.stderr)
    assert str(empty) in line and str(junk) in line and "2 of 4 photos cannot be read" in line
    assert not (out / "reconstruction.npz").exists()


def test_wrong_checkpoint_file_is_a_checkpoint_error(tmp_path, capsys):
    photos = _photos(tmp_path / "in", [(40, 30)] * 2)
    fake = tmp_path / "model.pth"
    fake.write_text("this is not a checkpoint")
    assert main(["reconstruct", *map(str, photos), "--checkpoint", str(fake), "--out", str(tmp_path / "o")]) == 1
    assert "model.pth" in _one_error_line(capsys.readouterr().err)


def test_too_few_photos_for_mv_dust3r_plus(golden, tmp_path, capsys):
    photos = _photos(tmp_path / "in", [(40, 30)] * 3)
    assert main(["reconstruct", *map(str, photos), "--checkpoint", str(golden / "mvdp_reduced_ckpt.pth"),
                 "--out", str(tmp_path / "o")]) == 1
    assert "3 photos given, but MV-DUSt3R+ needs at least 4" in _one_error_line(capsys.readouterr().err)


def test_unavailable_device_is_named(golden, tmp_path, capsys):
    missing = [d for d in ("cuda", "mps") if d not in available_devices()]
    assert missing, "this test needs a machine lacking CUDA or MPS"
    photos = _photos(tmp_path / "in", [(40, 30)] * 2)
    assert main(["reconstruct", *map(str, photos), "--checkpoint", str(golden / "mvd_reduced_ckpt.pth"),
                 "--out", str(tmp_path / "o"), "--device", missing[0]]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert f"device '{missing[0]}' is not available" in line and "available here:" in line


def test_command_line_mistakes(golden, tmp_path, capsys):
    empty_dir = tmp_path / "nothing"
    empty_dir.mkdir()
    assert main(["reconstruct", str(empty_dir), "--checkpoint", "x.pth", "--out", str(tmp_path / "o")]) == 1
    assert "no image files found" in _one_error_line(capsys.readouterr().err)
    photos = _photos(tmp_path / "in", [(40, 30)] * 2)
    for formats in ("gaussians", "ply,splat"):
        assert main(["reconstruct", *map(str, photos), "--checkpoint", "x.pth", "--out", str(tmp_path / "o"),
                     "--export", formats, "--no-gaussians"]) == 1
        line = _one_error_line(capsys.readouterr().err)
        assert "--no-gaussians" in line and f"--export {formats.split(',')[-1]} " in line
    with pytest.raises(SystemExit) as info:
        main(["reconstruct", *map(str, photos), "--checkpoint", "x.pth", "--out", "o", "--export", "obj"])
    assert info.value.code == 2 and "unknown export format 'obj'" in capsys.readouterr().err


def test_both_command_lines_share_one_vocabulary(tmp_path, capsys):
    """One name per option (core.options.add_arguments)."""
    from mvdust3r_blender.engine.__main__ import build_parser

    parser = build_parser()
    base = ["reconstruct", "a.png", "b.png", "--checkpoint", "m.pth", "--out", str(tmp_path)]
    args = parser.parse_args([*base, "--pose-drop-percent", "5", "--confidence-drop-percent", "10",
                              "--min-confidence", "1.5", "--reference-view", "1", "--export", "ply,glb", "splat"])
    assert (args.pose_drop_percent, args.confidence_drop_percent, args.min_confidence, args.reference_view) == \
        (5.0, 10.0, 1.5, 1)
    assert capsys.readouterr().err == ""
    from mvdust3r_blender.core.exports import parse_formats
    assert parse_formats(["ply,glb", "splat", "ply"]) == ["ply", "glb", "splat"]  # comma and space alike
    assert main([*base, "--pose-drop-percent", "100"]) == 1  # refused before any photo or model is read
    assert "pose_drop_percent=100.0 is out of range" in _one_error_line(capsys.readouterr().err)
    from mvdust3r_blender.core.options import options_from_arguments
    assert options_from_arguments(parser.parse_args(base), gaussians=True).focal == "auto"
    assert options_from_arguments(parser.parse_args([*base, "--focal", "26"]), gaussians=True).focal_mm == 26.0
    assert main([*base, "--focal", "wide"]) == 1
    assert "focal='wide' is neither auto, estimate nor" in _one_error_line(capsys.readouterr().err)


def test_too_few_photos_with_a_broken_one_names_it_in_one_line(golden, tmp_path, capsys):
    """With fewer photos than the model needs, a broken photo is still named; the
    error line has no doubled brackets; progress on a non-terminal is whole lines."""
    photos = _photos(tmp_path / "in", [(40, 30)] * 2)
    broken = tmp_path / "in" / "broken.png"
    broken.write_bytes(b"not an image")
    assert main(["reconstruct", *map(str, photos), str(broken), "--checkpoint",
                 str(golden / "mvdp_reduced_ckpt.pth"), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    line = _one_error_line(err)
    assert f"{broken}: not an image" in line and "1 of 3 photos cannot be read" in line
    photos.append(tmp_path / "in" / "third.png")
    Image.new("RGB", (40, 30)).save(photos[-1])
    assert main(["reconstruct", *map(str, photos), "--checkpoint", str(golden / "mvdp_reduced_ckpt.pth"),
                 "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    line = _one_error_line(err)
    assert line == ("error: 3 photos given, but MV-DUSt3R+ needs at least 4 (it uses 4 reference views) — "
                    "add photos of the same scene (at least 4)")
    assert "\r" not in err and err.endswith("\n")
    assert err.splitlines()[0] == f"model     [{'#' * 30}] 100%"


def test_progress_off_a_terminal_is_one_line_per_stage(golden, tmp_path):
    photos = _photos(tmp_path / "in", [(40, 30)] * 2)
    r = _cli("reconstruct", *photos, "--checkpoint", golden / "mvd_reduced_ckpt.pth", "--out", tmp_path / "o",
             cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "\r" not in r.stderr and r.stderr.endswith("\n")
    stages = [line.split()[0] for line in r.stderr.splitlines()]
    assert stages == ["model", "load", "network", "cameras", "gaussians", "write"], r.stderr
    assert all(line.endswith("] 100%") for line in r.stderr.splitlines())
