"""Command line: ``python -m mvdust3r_blender.engine reconstruct PHOTOS... --checkpoint CKPT --out DIR``.

Writes ``DIR/reconstruction.npz`` (the bundle, see docs/bundle.md) and the requested exports
beside it, shows progress on stderr, and on a problem the user can fix prints one line
``error: <what> (<what to do>)`` and exits with status 1 (2 for a bad command line, 130 when
interrupted). Folders given as PHOTOS expand to their image files, sorted by name.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Optional, Sequence, TextIO

from ..core.bundle import write_bundle
from ..core.errors import OptionError, UserError
from ..core.exports import needing_gaussians, parse_formats
from ..core.options import add_arguments, cut_from_arguments, options_from_arguments
from .errors import Cancelled, InputError, out_of_memory

BUNDLE_NAME = "reconstruction.npz"


class ProgressLine:
    """Progress on a stream: on a terminal one ``\\r``-rewritten line, ``network   [#########-----]  45%``;
    elsewhere (a log file, a pipe) one finished line per stage, so lines never run together."""

    WIDTH = 30

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.terminal = bool(getattr(stream, "isatty", lambda: False)())
        self.last = ""
        self.stage = ""   # not on a terminal: the stage whose line is not written yet
        self.done = ""    # ... and the last one written at 100 %

    def __call__(self, stage: str, fraction: float) -> None:
        filled = int(round(self.WIDTH * min(max(fraction, 0.0), 1.0)))
        line = f"{stage:<10}[{'#' * filled}{'-' * (self.WIDTH - filled)}] {fraction * 100:3.0f}%"
        if self.terminal:
            if line != self.last:
                self.stream.write("\r" + line)
                self.stream.flush()
                self.last = line
            return
        if stage == self.done:
            return                   # a finished stage reported again
        if self.stage and self.stage != stage:
            self.finish()            # the previous stage ended without reaching 100 %
        self.stage, self.last = stage, line
        if fraction >= 1.0:
            self.finish()
            self.done = stage

    def finish(self) -> None:
        """End the current line (on a terminal) or write the pending stage's line."""
        if self.last and (self.terminal or self.stage):
            self.stream.write(("\n" if self.terminal else self.last + "\n"))
            self.stream.flush()
        self.last, self.stage = "", ""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mvdust3r_blender.engine",
                                     description="MV-DUSt3R / MV-DUSt3R+ reconstruction from unposed photos.")
    commands = parser.add_subparsers(dest="command", required=True)
    rec = commands.add_parser("reconstruct", help="photos → DIR/reconstruction.npz (+ exports)",
                              description="Reconstruct a scene from 2–100 photos (files or folders).")
    rec.add_argument("photos", nargs="+", help="photo files, or folders whose image files are used (sorted)")
    rec.add_argument("--out", required=True, type=Path, help="output folder (created if missing)")
    add_arguments(rec, export_help="also write these formats into --out", checkpoint_required=True)
    rec.add_argument("--no-gaussians", action="store_true", help="skip the Gaussian parameters")
    return parser


def run_reconstruct(args: argparse.Namespace, stderr: TextIO) -> int:
    """Load the model, reconstruct, write the bundle and exports; raise EngineError on user problems."""
    from .checkpoint import load_model
    from .devices import resolve_device
    from ..core.exports import export
    from .images import collect_photo_paths
    from .pipeline import reconstruct
    from .precision import plan_for

    formats = args.export
    needing = needing_gaussians(formats)
    if needing and args.no_gaussians:
        raise InputError(f"--export {','.join(needing)} needs the Gaussians that --no-gaussians turns off",
                         "drop one of the two options")
    options = options_from_arguments(args, gaussians=not args.no_gaussians)
    cut = cut_from_arguments(args)
    photos = collect_photo_paths(args.photos)
    if not photos:
        raise InputError(f"no image files found in {', '.join(args.photos)}",
                         "give photo files or folders holding .jpg/.png/.webp/.tif/.bmp files")
    out = args.out.expanduser()
    if out.exists() and not out.is_dir():
        raise InputError(f"output {out} exists and is not a folder", "give a folder path for --out")
    device = resolve_device(args.device or "auto")
    progress = ProgressLine(stderr)
    started = time.perf_counter()
    try:
        progress("model", 0.0)
        plan = plan_for(options.precision, device)  # once for the run: the weights' dtype and the pipeline
        model = load_model(args.checkpoint, device=device, dtype=plan.weights)
        progress("model", 1.0)
        bundle = reconstruct(photos, model, options, progress=progress, plan=plan)
        progress("write", 0.0)
        bundle.meta["timings"]["total"] = round(time.perf_counter() - started, 4)
        written = [write_bundle(bundle, out / BUNDLE_NAME)]
        if formats:
            written += list(export(bundle, formats, out, cut=cut).values())
        progress("write", 1.0)
    finally:
        progress.finish()
    for path in written:
        print(path)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.export = parse_formats(args.export)
    except OptionError as exc:
        parser.error(str(exc))  # a bad command line: usage and exit code 2, like argparse's own checks
    try:
        return run_reconstruct(args, sys.stderr)
    except (Cancelled, KeyboardInterrupt):
        print("error: cancelled", file=sys.stderr)
        return 130
    except (UserError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (MemoryError, RuntimeError, ImportError) as exc:
        memory = out_of_memory(exc, "reconstruct", args.device or "auto")
        if memory is None:
            raise
        print(f"error: {memory}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
