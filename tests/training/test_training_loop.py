"""The training command: loss goes down, resuming replays the uninterrupted run, checkpoints are in
the official format and load with the project's loader, MV-DUSt3R+ starts from MV-DUSt3R."""
from __future__ import annotations

import argparse
import csv
from dataclasses import replace
from pathlib import Path

import pytest
import safetensors.torch
import torch

from mvdust3r_blender.engine.checkpoint import load_model, read_checkpoint
from mvdust3r_blender.engine.model import build_model
from mvdust3r_blender.engine.model_string import format_model_string
from training.checkpoints import load_training_checkpoint
from training.curves import block_means, markdown
from training.dataset import SampleKey, SyntheticScenes
from training.train import SIZES, data_device, init_from_checkpoint, learning_rate, parse_args, train

torch.set_num_threads(1)
FAST = ["--size", "tiny", "--resolution", "32", "--batch-size", "1", "--warmup", "0", "--threads", "1"]


def _run(out: Path, *extra: str) -> Path:
    return train(parse_args(["--out", str(out), *FAST, *extra]))


def _log(out: Path) -> list[dict[str, str]]:
    with (out / "log.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_loss_goes_down_on_a_fixed_batch(tmp_path: Path) -> None:
    _run(tmp_path, "--steps", "5", "--lr", "1e-3", "--fixed-batch")
    losses = [float(r["loss"]) for r in _log(tmp_path)]
    assert len(losses) == 5 and losses[-1] < losses[0]


def test_resume_continues_at_the_right_step(tmp_path: Path) -> None:
    straight, split = tmp_path / "straight", tmp_path / "split"
    _run(straight, "--steps", "5", "--lr", "5e-4")
    _run(split, "--steps", "5", "--lr", "5e-4", "--stop-at", "3")
    assert load_training_checkpoint(split / "checkpoint-last.pth")["step"] == 3
    assert [r["step"] for r in _log(split)] == ["0", "1", "2"]
    _run(split, "--steps", "5", "--lr", "5e-4", "--resume")
    a, b = _log(straight), _log(split)
    assert [r["step"] for r in b] == ["0", "1", "2", "3", "4"]
    for ra, rb in zip(a, b):
        assert ra["lr"] == rb["lr"] and ra["views"] == rb["views"]
        assert float(ra["loss"]) == pytest.approx(float(rb["loss"]), rel=1e-4)
    wa = load_training_checkpoint(straight / "checkpoint-last.pth")
    wb = load_training_checkpoint(split / "checkpoint-last.pth")
    assert wb["step"] == 5
    for key, value in wa["model"].items():
        assert torch.allclose(value.float(), wb["model"][key].float(), atol=1e-5), key


def test_resume_without_a_checkpoint_says_so(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no .*checkpoint-last.pth"):
        _run(tmp_path, "--steps", "2", "--resume")


def test_checkpoint_is_official_format_and_loads_with_the_project_loader(tmp_path: Path) -> None:
    path = _run(tmp_path, "--steps", "2", "--export", str(tmp_path / "tiny.safetensors"))
    ckpt = load_training_checkpoint(path)
    assert {"model", "optimizer", "scaler", "args", "epoch"} <= set(ckpt)
    assert isinstance(ckpt["args"], argparse.Namespace)
    cfg = replace(SIZES["tiny"], img_size=(32, 32))
    assert ckpt["args"].model == format_model_string(cfg)
    assert ckpt["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.95)
    model = load_model(path, cache_dir=tmp_path / "cache")
    assert model.config == cfg
    for key, value in ckpt["model"].items():
        assert torch.equal(model.state_dict()[key], value), key
    sample = SyntheticScenes((32, 32), seed=9)[SampleKey(0, 3, 0)]
    pred = model.predict(sample["img"])
    assert pred.pts3d.shape == (3, 32, 32, 3) and torch.isfinite(pred.pts3d).all()
    stored = safetensors.torch.load_file(str(tmp_path / "tiny.safetensors"))
    assert stored["enc_blocks.0.attn.qkv.weight"].dtype == torch.float16     # exported as fp16
    shipped = load_model(tmp_path / "tiny.safetensors")
    assert shipped.config == cfg


def test_mvdp_starts_from_an_mvd_checkpoint(tmp_path: Path) -> None:
    mvd = _run(tmp_path / "mvd", "--steps", "1")
    mvd_state = read_checkpoint(mvd).state_dict
    cfg = replace(SIZES["tiny"], img_size=(32, 32), multi_ref=True, n_ref=4)
    model = build_model(cfg)
    init_from_checkpoint(model, mvd)
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in mvd_state.items())
    assert all(state[k].abs().sum() == 0 for k in state
               if k.startswith("dec_same_view_blocks.") and (".proj." in k or ".fc2." in k))
    mvdp = _run(tmp_path / "mvdp", "--steps", "1", "--stage", "mvdp", "--init", str(mvd))
    loaded = load_model(mvdp, cache_dir=tmp_path / "cache")
    assert loaded.config.multi_ref and loaded.config.n_ref == 4
    assert float(_log(tmp_path / "mvdp")[0]["loss"]) > 0


def test_mvd_continues_from_an_exported_mvdp_model(tmp_path: Path) -> None:
    """Longer MV-DUSt3R training can start from a shipped MV-DUSt3R+ file: every weight but the
    cross-reference blocks is taken (as stored, fp16)."""
    mvd = _run(tmp_path / "mvd", "--steps", "1")
    shipped = tmp_path / "mvdp.safetensors"
    _run(tmp_path / "mvdp", "--steps", "1", "--stage", "mvdp", "--init", str(mvd), "--export", str(shipped))
    stored = safetensors.torch.load_file(str(shipped))
    model = build_model(replace(SIZES["tiny"], img_size=(32, 32)))
    init_from_checkpoint(model, shipped)
    state = model.state_dict()
    assert not any(k.startswith("dec_same_view_blocks.") for k in state)
    assert set(state) <= set(stored)
    assert all(torch.equal(state[k], stored[k].to(state[k].dtype)) for k in state)
    _run(tmp_path / "again", "--steps", "1", "--init", str(shipped))
    assert float(_log(tmp_path / "again")[0]["loss"]) > 0


def test_learning_rate_warms_up_then_decays_to_the_floor() -> None:
    lrs = [learning_rate(s, 100, 1e-3, 1e-6, 10) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    assert lrs[-1] == pytest.approx(1e-6, abs=1e-6)


def test_rendering_loss_is_added_and_logged(tmp_path: Path) -> None:
    _run(tmp_path / "off", "--steps", "1")
    _run(tmp_path / "on", "--steps", "1", "--render-weight", "1")
    off, on = _log(tmp_path / "off")[0], _log(tmp_path / "on")[0]
    assert off["render"] == "" and float(on["render"]) > 0
    # the logged total is the point loss (view 0 + the others) plus, when on, the rendering term
    points = {name: float(row["conf_view0"]) + float(row["conf_others"]) for name, row in (("off", off), ("on", on))}
    assert float(off["loss"]) == pytest.approx(points["off"], rel=1e-5)
    assert float(on["loss"]) == pytest.approx(points["on"] + float(on["render"]), rel=1e-5)


def test_curves_average_the_log_in_blocks(tmp_path: Path) -> None:
    _run(tmp_path, "--steps", "4", "--lr", "5e-4", "--render-weight", "1")
    rows = _log(tmp_path)
    blocks = block_means(rows, 2)
    assert [(first, last) for first, last, _ in blocks] == [(0, 1), (2, 3)]
    assert blocks[1][2]["loss"] == pytest.approx((float(rows[2]["loss"]) + float(rows[3]["loss"])) / 2)
    table = markdown(tmp_path / "log.csv", 2)
    assert "| 0–1 |" in table and "render" in table.splitlines()[2] and "(4 steps)" in table


def test_scenes_render_on_the_training_device_unless_loader_processes_do() -> None:
    assert data_device(parse_args(["--out", "-", "--device", "cuda"])) == torch.device("cuda")
    assert data_device(parse_args(["--out", "-", "--device", "cuda", "--workers", "4"])) == torch.device("cpu")
    assert data_device(parse_args(["--out", "-", "--data-device", "cpu", "--device", "cuda"])) == torch.device("cpu")
    with pytest.raises(SystemExit, match="renders inside the training process"):
        data_device(parse_args(["--out", "-", "--data-device", "cuda", "--workers", "2"]))
