"""The precision choice: what ``auto``/``exact``/``fast`` mean on each device (decided without the
device: :func:`choose` takes what the device can do), the TF32 switches, the option on both command
lines, and its effect on real runs on this CPU: ``auto`` stays within the float32 parity tolerance
and moves the built-in model's cameras by less than 0.1°; the dtypes CUDA's ``fast`` uses run here.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import io
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from mvdust3r_blender.core.errors import OptionError
from mvdust3r_blender.core.options import (DEFAULT_PRECISION, PRECISIONS, ReconstructOptions, add_arguments,
                                           options_from_arguments)
from mvdust3r_blender.core.protocol.requests import LoadRequest, ReleaseRequest, decode_request
from mvdust3r_blender.core.protocol.wire import encode
from mvdust3r_blender.engine.checkpoint import load_model
from mvdust3r_blender.engine.model import MultiViewModel
from mvdust3r_blender.engine.pipeline import reconstruct
from mvdust3r_blender.engine.precision import DeviceCaps, choose, numerics, plan_for, probe
from mvdust3r_blender.engine.worker import Worker
from tests.helpers.photos import smooth_photos

ROOT = Path(__file__).resolve().parents[2]
AMPERE = DeviceCaps("cuda", bf16=True, tf32=True)
TURING = DeviceCaps("cuda", bf16=False, tf32=False, why_not="Tesla T4 (compute capability 7.x) has no bf16 tensor cores")
CPU_BF16 = DeviceCaps("cpu", bf16=True)
CPU_OLD = DeviceCaps("cpu", bf16=False, why_not="this CPU has no native bfloat16")
MPS_OK = DeviceCaps("mps", bf16=True)
MPS_OLD = DeviceCaps("mps", bf16=False, why_not="bfloat16 fails here (macOS 13)")


def test_exact_is_float32_everywhere_with_tf32_off() -> None:
    for caps in (AMPERE, TURING, CPU_BF16, CPU_OLD, MPS_OK, MPS_OLD):
        plan = choose("exact", caps)
        assert (plan.weights, plan.compute, plan.tf32, plan.note, plan.channels_last) == (
            torch.float32, "fp32", False, "", False), caps


@pytest.mark.parametrize("caps, compute, tf32", [
    (AMPERE, "bf16-skip-cnn", True), (TURING, "fp32", False), (CPU_BF16, "bf16-skip-cnn", False),
    (CPU_OLD, "fp32", False), (MPS_OK, "bf16-skip-cnn", False), (MPS_OLD, "fp32", False)])
def test_auto_keeps_float32_weights_and_uses_what_keeps_parity(caps: DeviceCaps, compute: str, tf32: bool) -> None:
    plan = choose("auto", caps)
    assert (plan.weights, plan.compute, plan.tf32) == (torch.float32, compute, tf32)
    assert plan.channels_last == (compute != "fp32" and caps.kind != "mps")   # NHWC for a bf16 skip CNN
    assert plan.note == ("" if caps.bf16 else f"bfloat16 is not used on this {caps.kind}: {caps.why_not}")


def test_fast_is_bf16_with_bf16_weights_on_cuda_only_and_says_why_it_falls_back() -> None:
    cuda = choose("fast", AMPERE)
    assert (cuda.weights, cuda.compute, cuda.tf32, cuda.note) == (torch.bfloat16, "bf16", True, "")
    for caps in (CPU_BF16, MPS_OK):   # the CPU keeps float32 files memory-mapped; autocast does the rest
        plan = choose("fast", caps)
        assert (plan.weights, plan.compute) == (torch.float32, "bf16"), caps
    for caps in (TURING, CPU_OLD, MPS_OLD):
        plan = choose("fast", caps)
        assert (plan.weights, plan.compute) == (torch.float32, "fp32") and caps.why_not in plan.note, caps


def test_an_unknown_precision_is_named() -> None:
    with pytest.raises(OptionError, match="precision='half'"):
        choose("half", CPU_BF16)
    with pytest.raises(OptionError, match="auto, exact, fast"):
        ReconstructOptions(precision="fp16")
    assert ReconstructOptions().precision == DEFAULT_PRECISION == "auto"
    assert set(PRECISIONS) == {"auto", "exact", "fast"} and all(PRECISIONS.values())


def test_probe_asks_this_cpu() -> None:
    caps = probe(torch.device("cpu"))
    assert caps.kind == "cpu" and not caps.tf32
    assert caps.bf16 == bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert plan_for("auto", torch.device("cpu")) == choose("auto", caps)


def test_numerics_sets_and_restores_the_tf32_switches() -> None:
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    before = (matmul.fp32_precision, conv.fp32_precision)
    with numerics(choose("auto", AMPERE)):
        assert (matmul.fp32_precision, conv.fp32_precision) == ("tf32", "tf32")
    assert (matmul.fp32_precision, conv.fp32_precision) == before
    with numerics(choose("exact", AMPERE)):   # cuDNN's default is TF32 convolutions: exact turns it off
        assert (matmul.fp32_precision, conv.fp32_precision) == ("ieee", "ieee")
    assert (matmul.fp32_precision, conv.fp32_precision) == before
    with pytest.raises(RuntimeError, match="boom"), numerics(choose("auto", AMPERE)):
        raise RuntimeError("boom")
    assert (matmul.fp32_precision, conv.fp32_precision) == before
    with numerics(choose("auto", CPU_BF16)):  # no CUDA: nothing touched
        assert (matmul.fp32_precision, conv.fp32_precision) == before


def test_the_command_line_option_reaches_the_run_options() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser, export_help="exports")
    assert options_from_arguments(parser.parse_args([]), gaussians=True).precision == "auto"
    assert options_from_arguments(parser.parse_args(["--precision", "exact"]), gaussians=True).precision == "exact"
    with pytest.raises(SystemExit) as caught, contextlib.redirect_stderr(io.StringIO()):
        parser.parse_args(["--precision", "half"])
    assert caught.value.code == 2


def test_the_load_request_carries_a_precision() -> None:
    request = decode_request(encode(LoadRequest(id="a", checkpoint="/m.pth", precision="fast")))
    assert isinstance(request, LoadRequest) and request.precision == "fast"
    assert LoadRequest(checkpoint="/m.pth").precision == "auto"


def _photos(folder: Path, count: int) -> list[Path]:
    return smooth_photos(folder, count, size=(80, 60), seed=3, name="p{}.png")


def test_auto_stays_within_float32_parity_and_is_recorded(golden: Path, tmp_path: Path) -> None:
    """The golden MV-DUSt3R+ (random weights: far more sensitive than a trained network) through the
    pipeline: ``auto`` within the golden float32 tolerance of ``exact`` (pts3d 1e-4, the rest 1e-5)."""
    torch.set_num_threads(2)
    model = load_model(golden / "mvdp_reduced_ckpt.pth", cache_dir=tmp_path / "cache")
    photos = _photos(tmp_path / "photos", 5)
    exact = reconstruct(photos, model, ReconstructOptions(precision="exact"))
    auto = reconstruct(photos, model)
    plan = plan_for("auto", torch.device("cpu"))
    assert auto.meta["precision"] == {"precision": "auto", "weights": "float32", "compute": plan.compute,
                                      "tf32": False, "channels_last": plan.channels_last, "note": plan.note}
    np.testing.assert_allclose(auto.pts3d, exact.pts3d, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(auto.conf, exact.conf, rtol=1e-5, atol=1e-5)
    assert auto.gaussian_scale is not None and exact.gaussian_scale is not None
    np.testing.assert_allclose(auto.gaussian_scale, exact.gaussian_scale, rtol=1e-5, atol=1e-5)


def _rotation_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    rel = np.einsum("nji,njk->nik", a[:, :3, :3].astype(np.float64), b[:, :3, :3].astype(np.float64))
    return np.degrees(np.arccos(np.clip((np.trace(rel, axis1=1, axis2=2) - 1) / 2, -1, 1)))


def test_auto_moves_the_built_in_models_cameras_by_less_than_a_tenth_of_a_degree() -> None:
    """The accuracy budget of the default, on the trained built-in model and the sample photos."""
    torch.set_num_threads(2)
    model = load_model(ROOT / "models" / "default.safetensors")
    photos = sorted((ROOT / "samples" / "room").glob("view_*.png"))
    exact = reconstruct(photos, model, ReconstructOptions(precision="exact", gaussians=False))
    auto = reconstruct(photos, model, ReconstructOptions(gaussians=False))
    assert _rotation_deg(exact.cam2world, auto.cam2world).max() < 0.1
    np.testing.assert_allclose(auto.intrinsics, exact.intrinsics, rtol=1e-3)
    depth = np.median(np.linalg.norm(exact.pts3d, axis=-1))
    assert np.abs(auto.cam2world[:, :3, 3] - exact.cam2world[:, :3, 3]).max() < 1e-3 * depth


def test_cudas_fast_dtypes_run_here_bf16_weights_under_bf16_autocast(golden: Path, tmp_path: Path) -> None:
    """What ``fast`` runs on CUDA — bf16 weights (BatchNorm float32) under bf16 autocast — with the
    same dtypes on the CPU: finite, float32 outputs, points within a few percent of exact."""
    torch.set_num_threads(2)
    photos = _photos(tmp_path / "photos", 4)
    exact = reconstruct(photos, load_model(golden / "mvd_reduced_ckpt.pth", cache_dir=tmp_path / "c"),
                        ReconstructOptions(precision="exact"))
    half = load_model(golden / "mvd_reduced_ckpt.pth", dtype=torch.bfloat16, cache_dir=tmp_path / "c")
    fast = reconstruct(photos, half, ReconstructOptions(precision="fast"))
    assert fast.meta["precision"]["weights"] == "bfloat16"
    assert fast.pts3d.dtype == np.float32 and np.isfinite(fast.pts3d).all() and np.isfinite(fast.conf).all()
    rel = np.linalg.norm(fast.pts3d - exact.pts3d, axis=-1) / np.linalg.norm(exact.pts3d, axis=-1)
    if plan_for("fast", torch.device("cpu")).compute == "bf16":
        assert 0 < np.median(rel) < 0.05


def _models_alive() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o) is MultiViewModel)


def test_release_drops_every_reference_to_the_model(golden: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker's ``release`` leaves nothing holding the network (so its device memory can go)."""
    monkeypatch.setenv("MVDUST3R_CACHE_DIR", str(tmp_path / "cache"))
    before = _models_alive()
    out = io.StringIO()
    worker = Worker(out)
    alive_at_drop: list[int] = []
    original = worker.models.drop

    def counting_drop() -> None:
        alive_at_drop.append(_models_alive())
        original()

    monkeypatch.setattr(worker.models, "drop", counting_drop)
    read, write = os.pipe()
    with os.fdopen(read, "rb") as stdin, os.fdopen(write, "wb") as requests:
        serving = threading.Thread(target=worker.serve, args=(stdin,))
        serving.start()
        for request in (LoadRequest(id="load", checkpoint=str(golden / "mvd_reduced_ckpt.pth"), device="cpu"),
                        ReleaseRequest(id="free")):
            requests.write(encode(request).encode() + b"\n")
        requests.flush()
        deadline = time.monotonic() + 60
        while '"id":"free"' not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.05)
    serving.join(30)
    assert not serving.is_alive()
    assert '"type":"loaded"' in out.getvalue() and "released the MVD on cpu" in out.getvalue(), out.getvalue()
    assert alive_at_drop[-1] == before + 1      # the release found the model loaded ...
    assert _models_alive() == before            # ... and nothing holds it afterwards
