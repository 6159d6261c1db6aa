"""One short training session on a lent GPU: resume, train for N minutes, evaluate, write the state back.

    python -m training.session run --state runs/session --out OUT --minutes 7 --device cuda \\
        [plan options: --size small --stage mvd --steps 30000 --lr 3e-4 ... , first session only]
    python -m training.session export --state runs/session --to models/default.safetensors

GPU time comes in runs of about 15 minutes on a machine that starts bare each time and returns at
most 8 files of at most 16 MiB each (training/README.md, "Training on a lent GPU"). So a run's whole
state is a handful of small files, which one session reads from ``--state`` and the next one finds
in its ``--out``:

- ``session.json``: the plan (every option of :mod:`training.train` that shapes the run, frozen at
  the first session), the network's config, the step reached, one record per session (device,
  steps, seconds, steps/s) and the latest evaluation;
- ``weights-NN.safetensors``: the weights in fp16 (what ships), packed into files of at most
  ``MAX_FILE_BYTES``;
- ``log.csv``: the training log of every step so far (:data:`training.train.LOG_FIELDS`);
- ``eval.md``: the evaluation table (held-out scenes of the run's world, the trivial baseline,
  and with ``--validation`` the Blender-rendered validation scenes, :mod:`training.validation`).

The optimizer's moments are not kept (they would triple the files). Resuming starts AdamW afresh and
ramps the learning rate up over ``REWARM_STEPS`` (twice the second moment's memory, 1/(1−β₂) = 20
steps) — validated in ``tests/training/test_training_session.py`` against an uninterrupted run. The
weights lose nothing that matters by the fp16 round trip: its relative error (2⁻¹¹) is a small
fraction of one step's update at the learning rates used. The batches of step s depend only on
(seed, s), so sessions replay exactly the data an uninterrupted run would see.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import safetensors.torch
import torch

from mvdust3r_blender.core.atomic import atomic_file
from mvdust3r_blender.engine.checkpoint import save_safetensors
from mvdust3r_blender.engine.config import ModelConfig
from mvdust3r_blender.engine.model import MultiViewModel, build_model

from .evaluate import EvalRow, evaluate, markdown_table, network_prediction, trivial_prediction
from .train import (LOG, batch_loader, init_from_checkpoint, new_model, open_log, parse_args as train_args,
                    run_steps)
from .validation import evaluate_validation
from .world import WORLDS

FORMAT = "mvdust3r-training-session"
STATE = "session.json"
WEIGHTS = "weights-{:02d}.safetensors"
EVAL = "eval.md"
MAX_FILES = 8
MAX_FILE_BYTES = 16 * 1024 * 1024
REWARM_STEPS = 20
# options of training.train that make up a run's plan (fixed at its first session)
PLAN = ("size", "resolution", "stage", "recipe", "n_ref", "init", "steps", "batch_size", "lr", "min_lr", "warmup",
        "weight_decay", "render_weight", "steps_per_epoch", "seed", "world")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.session", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="resume (or start), train for --minutes, evaluate, write the state to --out")
    run.add_argument("--state", type=Path, default=None, help="the previous session's output (absent: a new run)")
    run.add_argument("--out", type=Path, required=True, help="where this session's state goes (≤ 8 files)")
    run.add_argument("--minutes", type=float, required=True, help="training time; evaluation and writing follow")
    run.add_argument("--max-steps", type=int, default=None, help="stop after this many steps even with time left")
    run.add_argument("--device", default="cpu")
    run.add_argument("--data-device", default=None, help="as training.train's (default: --device)")
    run.add_argument("--threads", type=int, default=1)
    run.add_argument("--eval-scenes", type=int, default=8, help="held-out scenes of the run's world")
    run.add_argument("--eval-views", type=int, default=8)
    run.add_argument("--validation", type=Path, default=None,
                     help="a folder of validation scenes (training.validation) to score as well")
    defaults = train_args(["--out", "-"])
    for name in PLAN:   # the plan's options, as training.train names them; None: from --state or the default
        flag = "--" + name.replace("_", "-")
        kind = type(getattr(defaults, name)) if getattr(defaults, name) is not None else str
        kind = Path if name == "init" else (int if name == "resolution" else kind)
        run.add_argument(flag, type=kind, default=None, help=f"plan (first session only): training.train's {flag}")
    export = sub.add_parser("export", help="write a session state's weights as one model file")
    export.add_argument("--state", type=Path, required=True)
    export.add_argument("--to", type=Path, required=True)
    return p.parse_args(argv)


def _config(data: dict[str, Any]) -> ModelConfig:
    """The network config stored in session.json (JSON lists back to tuples)."""
    values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    return ModelConfig(**values)


def read_state(folder: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(session.json, the weights) of a session state folder; a clear error when it is not one."""
    path = folder / STATE
    if not path.is_file():
        raise SystemExit(f"{folder} holds no {STATE}: not a training session's output")
    state = json.loads(path.read_text())
    if state.get("format") != FORMAT:
        raise SystemExit(f"{path} is not a training session state (format {state.get('format')!r})")
    weights: dict[str, torch.Tensor] = {}
    for name in state["weights"]:
        part = folder / name
        if not part.is_file():
            raise SystemExit(f"{part} is missing (the state lists {len(state['weights'])} weight files)")
        weights.update(safetensors.torch.load_file(part))
    return state, weights


def pack(tensors: dict[str, torch.Tensor], limit: int = MAX_FILE_BYTES) -> list[dict[str, torch.Tensor]]:
    """Split ``tensors`` into groups whose safetensors files stay under ``limit`` bytes (in name order)."""
    groups: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    headroom = 256 * 1024                     # the JSON header: ~100 bytes a tensor
    for name in sorted(tensors):
        nbytes = tensors[name].numel() * tensors[name].element_size()
        if nbytes > limit - headroom:
            raise ValueError(f"tensor {name} alone ({nbytes} bytes) exceeds the {limit}-byte file limit")
        if size + nbytes > limit - headroom and groups[-1]:
            groups.append({})
            size = 0
        groups[-1][name] = tensors[name]
        size += nbytes
    return groups


def write_state(out: Path, state: dict[str, Any], model: torch.nn.Module, log_rows: list[dict[str, str]],
                table: str) -> list[Path]:
    """Write the session's files into ``out`` (replacing a previous state there); checks the limits."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("weights-*.safetensors"):
        old.unlink()
    half = {k: (v.detach().to("cpu", torch.float16) if v.is_floating_point() else v.detach().cpu()).contiguous()
            for k, v in model.state_dict().items()}
    files = []
    for index, group in enumerate(pack(half)):
        files.append(out / WEIGHTS.format(index))
        with atomic_file(files[-1]) as tmp:
            safetensors.torch.save_file(group, str(tmp))
    state = {**state, "weights": [f.name for f in files]}
    with (out / LOG).open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(log_rows[0]) if log_rows else ["step"])
        writer.writeheader()
        writer.writerows(log_rows)
    (out / EVAL).write_text(table + "\n")
    with atomic_file(out / STATE) as tmp:
        Path(tmp).write_text(json.dumps(state, indent=1))
    files += [out / LOG, out / EVAL, out / STATE]
    too_big = [f"{f.name} ({f.stat().st_size} bytes)" for f in files if f.stat().st_size > MAX_FILE_BYTES]
    if len(files) > MAX_FILES or too_big:
        raise RuntimeError(f"the session state in {out} breaks the device tool's limits: {len(files)} files "
                           f"(at most {MAX_FILES}), too big: {too_big or 'none'}")
    return files


def _plan(args: argparse.Namespace, previous: Optional[dict[str, Any]]) -> argparse.Namespace:
    """training.train's arguments for this session: the stored plan, or a new one from the options."""
    given = {name: getattr(args, name) for name in PLAN if getattr(args, name) is not None}
    if previous is not None:
        if given:
            raise SystemExit(f"--state {args.state} has its plan already; leave out {sorted(given)} "
                             "(start a new run with a new --out and no --state to change it)")
        plan = dict(previous["plan"])
    else:
        defaults = vars(train_args(["--out", "-"]))
        plan = {name: given.get(name, defaults[name]) for name in PLAN}
        plan["init"] = None if plan["init"] is None else str(plan["init"])
    argv = ["--out", str(args.out), "--device", args.device, "--threads", str(args.threads), "--workers", "0"]
    if args.data_device:
        argv += ["--data-device", args.data_device]
    for name, value in plan.items():
        if value is not None:
            argv += ["--" + name.replace("_", "-"), str(value)]
    return train_args(argv)


def run_session(args: argparse.Namespace) -> list[Path]:
    """Resume (or start) the run, train until ``--minutes`` have passed or the plan's steps are done,
    evaluate, write the state; returns the files written."""
    began = time.perf_counter()
    torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = True
    previous, weights = read_state(args.state) if args.state is not None else (None, {})
    targs = _plan(args, previous)
    torch.manual_seed(targs.seed + (previous["step"] if previous else 0))
    cfg, model, optimizer = new_model(targs)
    start = 0
    if previous is not None:
        if _config(previous["config"]) != cfg:
            raise SystemExit(f"{args.state / STATE}: its network config does not match its plan")
        model.load_state_dict({k: v.to(torch.float32) if v.is_floating_point() else v for k, v in weights.items()})
        start = int(previous["step"])
    elif targs.init is not None:
        init_from_checkpoint(model, targs.init)
    log_rows: list[dict[str, str]] = []
    if previous is not None and args.state is not None and (args.state / LOG).is_file():
        with (args.state / LOG).open(newline="") as f:
            log_rows = [r for r in csv.DictReader(f) if int(r["step"]) < start]

    deadline = began + 60 * args.minutes
    stop = targs.steps if args.max_steps is None else min(targs.steps, start + args.max_steps)
    scratch = args.out / ".log-in-progress.csv"
    args.out.mkdir(parents=True, exist_ok=True)
    log_file, log = open_log(scratch, 0)
    train_began = time.perf_counter()
    try:
        done = start if start >= stop else run_steps(
            model, optimizer, batch_loader(targs, cfg, start, stop), targs, start, log, log_file,
            after_step=lambda _: time.perf_counter() >= deadline,
            lr_scale=(lambda step: min(1.0, (step - start + 1) / REWARM_STEPS)) if start > 0 else (lambda step: 1.0))
    finally:
        log_file.close()
    train_seconds = time.perf_counter() - train_began
    with scratch.open(newline="") as f:
        log_rows += list(csv.DictReader(f))
    scratch.unlink()

    model.eval()
    sessions = (previous["sessions"] if previous else []) + [{
        "device": str(torch.cuda.get_device_name() if torch.device(args.device).type == "cuda" else args.device),
        "data_device": str(targs.data_device or args.device), "from_step": start, "to_step": done,
        "train_seconds": round(train_seconds, 1),
        "steps_per_second": round((done - start) / max(train_seconds, 1e-9), 3),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}]
    plan = {k: getattr(targs, k) for k in PLAN}
    plan["init"] = None if targs.init is None else str(targs.init)
    state = {"format": FORMAT, "version": 1, "plan": plan, "config": dataclasses.asdict(cfg), "step": done,
             "sessions": sessions, "eval": []}
    # the trained state first: a session cut short during the evaluation still returns its steps
    write_state(args.out, state, model, log_rows, "(evaluation not finished)")
    rows = evaluate_model(model, targs, args)
    files = write_state(args.out, state | {"eval": [dataclasses.asdict(r) for r in rows]}, model, log_rows,
                        markdown_table(rows))
    print(f"steps {start} → {done} in {train_seconds:.0f} s ({sessions[-1]['steps_per_second']} steps/s); "
          f"session {time.perf_counter() - began:.0f} s; wrote {', '.join(f.name for f in files)} to {args.out}")
    print(markdown_table(rows))
    return files


def evaluate_model(model: MultiViewModel, targs: argparse.Namespace, args: argparse.Namespace) -> list[EvalRow]:
    """The trivial baseline and the model on held-out scenes of the run's world (and the validation
    scenes when given), at the network's resolution."""
    size = model.config.img_size
    methods = [("trivial baseline", trivial_prediction), (f"step model ({model.config.variant})",
                                                          network_prediction(model))]
    rows = [evaluate(name, predictor, args.eval_views, args.eval_scenes, size, cd_points=4000,
                     world=WORLDS[targs.world]) for name, predictor in methods]
    if args.validation is not None:
        rows += [row for name, predictor in methods for row in evaluate_validation(name, predictor, args.validation,
                                                                                   size, cd_points=4000)]
    return rows


def export(state_dir: Path, target: Path) -> Path:
    """The state's weights as one fp16 model file that the add-on loads."""
    state, weights = read_state(state_dir)
    cfg = _config(state["config"])
    model = build_model(cfg)
    model.load_state_dict({k: v.to(torch.float32) if v.is_floating_point() else v for k, v in weights.items()})
    return save_safetensors(model, cfg, target, dtype=torch.float16)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    if args.command == "export":
        print(export(args.state, args.to))
    else:
        run_session(args)


if __name__ == "__main__":
    main()
