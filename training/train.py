"""Train MV-DUSt3R (stage ``mvd``) or MV-DUSt3R+ (``mvdp``, initialised from an MV-DUSt3R checkpoint)
on procedural scenes. Command line; see ``training/README.md`` for the recipes.

    python -m training.train --out runs/mvd --size small --stage mvd --steps 20000

What follows the paper / official scripts: AdamW (betas 0.9, 0.95, weight decay 0.05 on weights,
none on biases and 1-D parameters), linear warm-up then half-cosine decay to ``--min-lr``, the loss
of :mod:`training.loss`, the view-count recipes of :mod:`training.dataset`, checkpoints in the
official format (``checkpoint-last.pth``, read by ``mvdust3r_blender.engine.checkpoint.load_model``).
What is ours: step-based (not epoch-based) bookkeeping, training from scratch (no DUSt3R
initialisation exists at these sizes), the Gaussian rendering loss (``--render-weight``) without
its LPIPS term and on reference path 0 only, no gradient accumulation (``--batch-size`` is the
effective batch).

Resuming (``--resume``) restores weights, optimizer and step; the data of step s depends only on
(seed, s), so a resumed run sees exactly the batches an uninterrupted run would have.
"""
from __future__ import annotations

import argparse
import csv
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader

from mvdust3r_blender.engine.checkpoint import open_checkpoint, read_checkpoint, save_safetensors
from mvdust3r_blender.engine.config import ModelConfig
from mvdust3r_blender.engine.model import MultiViewModel, build_model

from .checkpoints import load_training_checkpoint, save_training_checkpoint
from .dataset import RECIPES, RecipeBatchSampler, SyntheticScenes, network_views
from .loss import gaussian_render_loss, multiview_loss
from .world import WORLDS

# Network sizes. "tiny": tests and smoke runs. "small": the shipped default (models/default.safetensors;
# 5.76 M parameters MV-DUSt3R, 64x64 input: sized to train in hours on a 2-core CPU, see README).
SIZES: dict[str, ModelConfig] = {
    "tiny": ModelConfig(enc_embed_dim=64, enc_depth=2, enc_num_heads=2, dec_embed_dim=48, dec_depth=2,
                        dec_num_heads=2, skip_dim=16, gs_mlp_dim=32, img_size=(64, 64)),
    "small": ModelConfig(enc_embed_dim=192, enc_depth=6, enc_num_heads=3, dec_embed_dim=128, dec_depth=4,
                         dec_num_heads=2, skip_dim=32, gs_mlp_dim=64, img_size=(64, 64)),
    # for a GPU run (7.18 M parameters MV-DUSt3R / 8.50 M MV-DUSt3R+, 14.4 / 17.0 MB as fp16)
    "medium": ModelConfig(enc_embed_dim=192, enc_depth=8, enc_num_heads=3, dec_embed_dim=128, dec_depth=5,
                          dec_num_heads=2, skip_dim=32, gs_mlp_dim=64, img_size=(128, 128)),
}
CHECKPOINT = "checkpoint-last.pth"
CROSS_REFERENCE = "dec_same_view_blocks."  # the MV-DUSt3R+ blocks that MV-DUSt3R lacks
LOG = "log.csv"
LOG_FIELDS = ["step", "epoch", "lr", "loss", "conf_view0", "conf_others", "distance", "render", "views",
              "seconds"]


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="run folder: checkpoint-last.pth, log.csv")
    p.add_argument("--size", choices=sorted(SIZES), default="small", help="network widths/depths")
    p.add_argument("--resolution", type=int, default=None, help="square input size (multiple of 16); "
                   "default: the size preset's")
    p.add_argument("--stage", choices=["mvd", "mvdp"], default="mvd",
                   help="mvd: MV-DUSt3R; mvdp: MV-DUSt3R+ (give --init with an mvd checkpoint)")
    p.add_argument("--recipe", choices=sorted(RECIPES), default=None,
                   help="view counts; default mvd for --stage mvd, mvdp-stage1 for mvdp")
    p.add_argument("--n-ref", type=int, default=4, help="MV-DUSt3R+ reference views (paper: 4)")
    p.add_argument("--init", type=Path, default=None,
                   help="weights to start from: an MV-DUSt3R checkpoint for MV-DUSt3R+ stage 1, "
                        "the stage-1 checkpoint for stage 2 (optimizer and step start afresh)")
    p.add_argument("--resume", action="store_true", help=f"continue from OUT/{CHECKPOINT}")
    p.add_argument("--steps", type=int, default=1000, help="total optimisation steps (including resumed ones)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=1.5e-4, help="peak learning rate (official 1.5e-4)")
    p.add_argument("--min-lr", type=float, default=1e-6)
    p.add_argument("--warmup", type=int, default=100, help="linear warm-up steps")
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--render-weight", type=float, default=0.0,
                   help="weight of the Gaussian rendering loss (official: 1, plus LPIPS; 0: off)")
    p.add_argument("--steps-per-epoch", type=int, default=500, help="bookkeeping: 'epoch' in the checkpoint")
    p.add_argument("--save-every", type=int, default=200, help="write the checkpoint every N steps")
    p.add_argument("--stop-at", type=int, default=None,
                   help="save and stop at this step (a session's share of a long run; continue with --resume)")
    p.add_argument("--seed", type=int, default=0, help="data and initialisation seed")
    p.add_argument("--fixed-batch", action="store_true", help="the same scenes every step (overfit check)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--workers", type=int, default=0, help="DataLoader processes rendering scenes")
    p.add_argument("--device", default="cpu")
    p.add_argument("--data-device", default=None,
                   help="where scenes are ray-cast: default --device when --workers is 0 (a GPU renders its "
                        "own data inside the training process), else cpu (the loader processes)")
    p.add_argument("--world", choices=sorted(WORLDS), default="wide",
                   help="scene and capture distribution (training/world.py); the shipped model: rooms-v1")
    p.add_argument("--export", type=Path, default=None, help="at the end, also write fp16 .safetensors here")
    return p.parse_args(argv)


def model_config(args: argparse.Namespace) -> ModelConfig:
    cfg = SIZES[args.size]
    if args.resolution is not None:
        cfg = replace(cfg, img_size=(args.resolution, args.resolution))
    if args.stage == "mvdp":
        cfg = replace(cfg, multi_ref=True, n_ref=args.n_ref)
    return cfg


def learning_rate(step: int, total: int, peak: float, floor: float, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps (reaching ``peak`` at the last one), then half-cosine to ``floor``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Official grouping: no decay for biases and 1-D tensors (norms), ``weight_decay`` elsewhere."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 or name.endswith(".bias") else decay).append(param)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def init_from_checkpoint(model: MultiViewModel, path: Path) -> None:
    """Start from the weights of a checkpoint (``.pth``) or shipped ``.safetensors`` file of the same
    size. An MV-DUSt3R file fits an MV-DUSt3R+ network except for the cross-reference blocks, which
    keep their zero-output initialisation (so MV-DUSt3R+ training starts exactly at MV-DUSt3R); an
    MV-DUSt3R+ file gives an MV-DUSt3R network everything but those blocks (longer MV-DUSt3R
    training from the shipped model). Anything else missing or unexpected is refused."""
    state = dict(open_checkpoint(path).tensors) if path.suffix == ".safetensors" else read_checkpoint(path).state_dict
    if not model.config.multi_ref:
        state = {k: v for k, v in state.items() if not k.startswith(CROSS_REFERENCE)}
    missing, unexpected = model.load_state_dict(state, strict=False)
    bad = [k for k in missing if not k.startswith(CROSS_REFERENCE)]
    if bad or unexpected:
        raise SystemExit(f"{path} does not fit this network: missing {bad[:5]}, unexpected {unexpected[:5]} "
                         "(give a checkpoint of the same --size and --resolution)")


def data_device(args: argparse.Namespace) -> torch.device:
    """Where the training scenes are rendered (``--data-device``; see its help)."""
    device = torch.device(args.data_device or (args.device if args.workers == 0 else "cpu"))
    if device.type != "cpu" and args.workers > 0:
        raise SystemExit(f"--data-device {device} renders inside the training process: give --workers 0")
    return device


def batch_loader(args: argparse.Namespace, cfg: ModelConfig, start: int,
                 stop: int) -> Iterable[dict[str, torch.Tensor]]:
    """Batches of steps ``start .. stop-1`` of the run's data (replayable from the seed): on a GPU each
    batch ray-cast in one pass in this process (``SyntheticScenes.batch``), on the CPU sample by
    sample by the DataLoader's processes (or this one). Both give the same batches."""
    recipe = RECIPES[args.recipe or ("mvd" if args.stage == "mvd" else "mvdp-stage1")]
    device = data_device(args)
    dataset = SyntheticScenes(cfg.img_size, seed=args.seed, world=WORLDS[args.world], device=device)
    sampler = RecipeBatchSampler(recipe, args.batch_size, stop, args.seed, start, args.fixed_batch,
                                 render_views=args.render_weight > 0)
    if device.type != "cpu":
        return (dataset.batch(keys) for keys in sampler)
    return DataLoader(dataset, batch_sampler=sampler, num_workers=args.workers,
                      worker_init_fn=_single_threaded_worker, persistent_workers=args.workers > 0)


def new_model(args: argparse.Namespace) -> tuple[ModelConfig, MultiViewModel, torch.optim.Optimizer]:
    """The run's network (on ``--device``, training mode) and its AdamW optimizer."""
    cfg = model_config(args)
    model = build_model(cfg).to(torch.device(args.device)).train()
    optimizer = torch.optim.AdamW(parameter_groups(model, args.weight_decay), lr=args.lr, betas=(0.9, 0.95))
    return cfg, model, optimizer


def run_steps(model: MultiViewModel, optimizer: torch.optim.Optimizer, batches: Iterable[dict[str, torch.Tensor]],
              args: argparse.Namespace, start: int, log: csv.DictWriter, log_file: Any,
              after_step: Callable[[int], bool], lr_scale: Callable[[int], float] = lambda step: 1.0) -> int:
    """Optimise on ``batches`` (step ``start`` first), one CSV row a step; ``after_step(done)`` runs
    after each step and returns True to stop. Returns the number of steps done in all."""
    device = torch.device(args.device)
    done = start
    for step, batch in enumerate(batches, start=start):
        began = time.perf_counter()
        lr = learning_rate(step, args.steps, args.lr, args.min_lr, args.warmup) * lr_scale(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = {k: v.to(device) for k, v in batch.items()}
        view1, view2s = network_views(batch)
        res1, res2s = model(view1, view2s)
        terms = multiview_loss(res1, res2s, batch)
        total = terms.total
        render = gaussian_render_loss(res1, res2s, batch) if args.render_weight > 0 else None
        if render is not None:
            total = total + args.render_weight * render
        if not torch.isfinite(total):
            raise FloatingPointError(f"loss is {float(total.detach())} at step {step}; lower --lr")
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        log.writerow({"step": step, "epoch": step // args.steps_per_epoch, "lr": f"{lr:.3e}",
                      "loss": f"{float(total.detach()):.6f}", "conf_view0": f"{terms.conf_view0:.6f}",
                      "conf_others": f"{terms.conf_others:.6f}", "distance": f"{terms.distance:.6f}",
                      "render": "" if render is None else f"{float(render.detach()):.6f}",
                      "views": 1 + len(view2s), "seconds": f"{time.perf_counter() - began:.3f}"})
        log_file.flush()
        done = step + 1
        if after_step(done):
            break
    return done


def _single_threaded_worker(_: int) -> None:
    """Loader processes render with one thread each (N workers must not fight over the cores)."""
    torch.set_num_threads(1)


def _plain(args: argparse.Namespace) -> dict[str, Any]:
    """``args`` with paths as strings (the checkpoint's ``args`` must hold plain values only)."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}


def open_log(path: Path, start: int) -> tuple[Any, csv.DictWriter]:
    """The CSV log, keeping only rows before ``start`` (a crash may have logged past the checkpoint)."""
    rows = []
    if start > 0 and path.exists():
        with path.open(newline="") as f:
            rows = [r for r in csv.DictReader(f) if int(r["step"]) < start]
    f = path.open("w", newline="")
    writer = csv.DictWriter(f, fieldnames=LOG_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    f.flush()
    return f, writer


def train(args: argparse.Namespace) -> Path:
    """Run (or continue) a training run; returns the checkpoint path."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    torch.backends.cuda.matmul.allow_tf32 = True   # as the official train.py (fp32 weights, TF32 matmuls)
    cfg, model, optimizer = new_model(args)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / CHECKPOINT
    start = 0
    if args.resume:
        if not ckpt_path.is_file():
            raise SystemExit(f"--resume: no {ckpt_path} (start the run without --resume first)")
        ckpt = load_training_checkpoint(ckpt_path)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        start = int(ckpt["step"])
    elif args.init is not None:
        init_from_checkpoint(model, args.init)

    stop = min(args.steps, args.stop_at if args.stop_at is not None else args.steps)

    def save(done: int) -> bool:
        if done % args.save_every == 0 or done >= stop:
            save_training_checkpoint(ckpt_path, model, optimizer, cfg, done, (done - 1) // args.steps_per_epoch,
                                     _plain(args))
        return False

    log_file, log = open_log(out / LOG, start)
    try:
        run_steps(model, optimizer, batch_loader(args, cfg, start, stop), args, start, log, log_file, save)
    finally:
        log_file.close()
    if args.export is not None:
        save_safetensors(model, cfg, args.export, dtype=torch.float16)
    return ckpt_path


def main(argv: Optional[Sequence[str]] = None) -> None:
    train(parse_args(argv))


if __name__ == "__main__":
    main()
