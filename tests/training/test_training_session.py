"""The GPU session script on the CPU at tiny size: it starts a run, resumes from its own output with the
plan it stored, stops at its time budget, keeps within the device tool's file limits, and exports a
model file the add-on loads."""
from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import pytest
import safetensors.torch
import torch

from mvdust3r_blender.engine.checkpoint import load_model
from training.session import MAX_FILE_BYTES, MAX_FILES, REWARM_STEPS, export, main, pack
from training.train import learning_rate

torch.set_num_threads(1)
PLAN = ["--size", "tiny", "--resolution", "32", "--batch-size", "1", "--steps", "1000", "--warmup", "2",
        "--lr", "1e-3", "--recipe", "mvdp-stage2", "--stage", "mvd"]
QUICK = ["--eval-scenes", "1", "--eval-views", "4", "--threads", "1"]


def _log(folder: Path) -> list[dict[str, str]]:
    with (folder / "log.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    state = json.loads((folder / "session.json").read_text())
    out: dict[str, torch.Tensor] = {}
    for name in state["weights"]:
        out.update(safetensors.torch.load_file(folder / name))
    return out


def test_a_session_resumes_from_its_own_output(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    main(["run", "--out", str(first), "--minutes", "5", "--max-steps", "3", *QUICK, *PLAN])
    files = sorted(p.name for p in first.iterdir())
    assert files == ["eval.md", "log.csv", "session.json", "weights-00.safetensors"]
    assert len(files) <= MAX_FILES and all((first / f).stat().st_size <= MAX_FILE_BYTES for f in files)
    state = json.loads((first / "session.json").read_text())
    assert state["step"] == 3 and state["plan"]["size"] == "tiny" and state["plan"]["world"] == "wide"
    assert {"trivial baseline", "step model (MVD)"} == {row["method"] for row in state["eval"]}
    assert all(v.dtype == torch.float16 for v in _weights(first).values() if v.is_floating_point())

    main(["run", "--state", str(first), "--out", str(second), "--minutes", "5", "--max-steps", "2", *QUICK])
    state = json.loads((second / "session.json").read_text())
    assert state["step"] == 5 and [s["from_step"] for s in state["sessions"]] == [0, 3]
    log = _log(second)
    assert [int(r["step"]) for r in log] == [0, 1, 2, 3, 4]
    assert [r["loss"] for r in log[:3]] == [r["loss"] for r in _log(first)]
    # the first resumed step ramps the learning rate up again (the optimizer moments start afresh)
    assert float(log[3]["lr"]) == pytest.approx(learning_rate(3, 1000, 1e-3, 1e-6, 2) / REWARM_STEPS, rel=1e-3)
    before, after = _weights(first), _weights(second)
    assert any(not torch.equal(before[k], after[k]) for k in before)

    with pytest.raises(SystemExit, match="has its plan already"):
        main(["run", "--state", str(second), "--out", str(tmp_path / "x"), "--minutes", "1", "--lr", "1"])
    model_file = export(second, tmp_path / "model.safetensors")
    model = load_model(model_file)
    assert model.config.img_size == (32, 32)
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k].to(torch.float16), v) for k, v in after.items() if v.is_floating_point())


def test_the_time_budget_ends_training(tmp_path: Path) -> None:
    began = time.perf_counter()
    main(["run", "--out", str(tmp_path), "--minutes", "0.02", *QUICK, *PLAN])
    state = json.loads((tmp_path / "session.json").read_text())
    assert 1 <= state["step"] < 1000
    assert time.perf_counter() - began < 30


def test_a_folder_that_is_no_session_state_is_named(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="holds no session.json"):
        main(["run", "--state", str(tmp_path), "--out", str(tmp_path / "o"), "--minutes", "1"])


def test_weights_are_packed_into_files_under_the_limit() -> None:
    tensors = {f"t{i}": torch.zeros(300_000, dtype=torch.float16) for i in range(5)}   # 600 kB each
    groups = pack(tensors, limit=1_600_000)
    assert [sorted(g) for g in groups] == [["t0", "t1"], ["t2", "t3"], ["t4"]]
    with pytest.raises(ValueError, match="exceeds"):
        pack({"big": torch.zeros(2_000_000, dtype=torch.float16)}, limit=1_600_000)
