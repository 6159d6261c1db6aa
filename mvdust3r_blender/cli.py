"""The command line: ``blender -b -c mvdust3r batch|reconstruct ...`` (Blender 4.2+).

:func:`main` is a plain ``main(argv) -> int``: Blender calls it with the arguments after
``-c mvdust3r`` (registered in :func:`register`), and tests call it directly, since the bpy module
cannot run ``blender -c``. Exit codes: 0 everything worked (or was already done), 1 a scene or the
run failed (the error is printed), 2 the command line is wrong.

    blender -b -c mvdust3r batch shoots/* --out results/ --export ply,glb
    blender -b -c mvdust3r reconstruct shoots/kitchen --out kitchen.blend
    blender -b -c mvdust3r --help
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

import bpy

from .batch import run_batch, stage_printer
from .core.atomic import unwritable
from .farm_batch import farm_worker
from .core.errors import OptionError
from .core.exports import parse_formats
from .core.options import add_arguments, check_align, cut_from_arguments, options_from_arguments
from .import_options import ImportOptions
from .reconstruction import fresh_file, run_spec, save_blend, show_through_first_camera
from .session import SESSION, WORKER_PYTHON_ENV, Exports, RunSpec, WorkerSettings, photo_list, preferred_align

PROG = "blender -b -c mvdust3r"


def parser() -> argparse.ArgumentParser:
    """The argument parser (also used by the docs test to check the documented command lines)."""
    top = argparse.ArgumentParser(
        prog=PROG, description="Turn unposed photos into Blender scenes (points, cameras, 3D Gaussians) with "
                               "MV-DUSt3R(+). Settings not given (checkpoint, device, Python) come from the "
                               "add-on's preferences.")
    sub = top.add_subparsers(dest="command", required=True, metavar="{batch,reconstruct}")
    common = argparse.ArgumentParser(add_help=False)
    add_arguments(common, export_help="also write these formats")  # the engine's command line has the same
    common.add_argument("--python", help=f"the worker's Python, with torch (default: ${WORKER_PYTHON_ENV}, "
                                         "else the preferences' runtime; with --remote: the remote's, default python3)")
    common.add_argument("--remote", metavar="DEST", help="run the worker on another machine over ssh: user@host or "
                                                         "ssh://user@host:port (--checkpoint is then a path there)")
    common.add_argument("--ssh-command", metavar="CMD", help="the ssh command line for --remote (default: ssh; "
                                                             "e.g. 'ssh -i KEY -J JUMP')")
    for what in ("points", "cameras", "gaussians"):
        common.add_argument(f"--no-{what}", action="store_true", help=f"do not import the {what}")
    common.add_argument("--timeout", type=float, help="give up on a scene after this many seconds")

    batch = sub.add_parser("batch", parents=[common], help="many folders of photos → one .blend each",
                           description="Reconstruct each FOLDER of photos into OUT/<folder>.blend (and exports "
                                       "in OUT/<folder>/). Finished scenes are skipped; failed ones are "
                                       "reported and the batch goes on. Exit code 1 if any scene failed.")
    batch.add_argument("folders", nargs="+", metavar="FOLDER", help="a folder of photos of one scene")
    batch.add_argument("--out", required=True, metavar="DIR", help="output folder")
    batch.add_argument("--no-blend", action="store_true", help="write only the exports, no .blend files")
    batch.add_argument("--no-resume", action="store_true", help="redo scenes that an earlier run finished")
    batch.add_argument("--ray", metavar="ADDRESS", help="compute on a Ray cluster: auto, head:6379 or "
                                                        "ray://head:10001 (token from RAY_AUTH_TOKEN, "
                                                        "RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token; --checkpoint is "
                                                        "then a path on the nodes or a released file name; "
                                                        "docs/farm.md)")

    single = sub.add_parser("reconstruct", parents=[common], help="one set of photos → one .blend",
                            description="Reconstruct PHOTOS (files, or one folder) into the .blend file OUT.")
    single.add_argument("photos", nargs="+", metavar="PHOTO", help="photo files, or one folder of photos")
    single.add_argument("--out", required=True, metavar="FILE.blend", help="the .blend file to write")
    single.add_argument("--export-dir", metavar="DIR", help="folder for --export (default: beside OUT)")
    return top


def main(argv: Sequence[str]) -> int:
    """Run the command line `argv` (without the program name); returns the exit code."""
    top = parser()
    try:
        args = top.parse_args(list(argv))
        try:
            args.export = parse_formats(args.export)
        except OptionError as exc:
            top.error(str(exc))
        if getattr(args, "ray", None) and (args.remote or args.ssh_command):
            top.error("--ray and --remote are two places to compute: give one")
    except SystemExit as exc:  # --help (0) or a usage error (2): argparse has printed why
        return int(exc.code) if isinstance(exc.code, int) else 2
    if isinstance(args.remote, list):  # argparse drops a value of '--' (--remote=--) and leaves []
        args.remote = "--"             # the destination's own check says why it is refused
    try:
        if args.command == "batch":
            worker = farm_worker(args.python, args.checkpoint, args.device, args.precision) if args.ray else None
            report = run_batch(args.folders, args.out, arguments_spec(args, (), worker), blend=not args.no_blend,
                               resume=not args.no_resume, timeout=args.timeout, ray=args.ray)
            return 0 if report.ok else 1
        return _reconstruct_one(args)
    except KeyboardInterrupt:
        print("mvdust3r: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 -- the command line's boundary: say what failed, exit 1
        print(f"mvdust3r: error: {exc}", file=sys.stderr)
        return 1
    finally:
        SESSION.shutdown()


def arguments_spec(args: argparse.Namespace, photos: Sequence[str], worker: Optional[WorkerSettings] = None) -> RunSpec:
    """The command line's run for `photos` (none: a batch's template): the options both command
    lines share, read as ``core.options`` reads them for the engine's, and this one's own.
    `worker`: settings already resolved (``--ray``), instead of the arguments'."""
    cut = cut_from_arguments(args)
    imports = ImportOptions(points=not args.no_points, cameras=not args.no_cameras, gaussians=not args.no_gaussians,
                            confidence_drop_percent=cut.confidence_drop_percent, min_confidence=cut.min_confidence,
                            align=check_align(args.align or preferred_align()))
    if worker is None:
        worker = WorkerSettings.resolve(args.python, args.checkpoint, args.device, args.remote, args.ssh_command,
                                        args.precision)
    return RunSpec(photos=tuple(photos), worker=worker, options=options_from_arguments(args, gaussians=True),
                   imports=imports, exports=Exports(formats=tuple(args.export), cut=cut), keep_bundle=True)


def _reconstruct_one(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.suffix.lower() != ".blend":
        print(f"mvdust3r: error: --out {out} must be a .blend file", file=sys.stderr)
        return 2
    problem = unwritable(out)
    if problem is not None:  # before the job: never a whole run, then nowhere to save it
        print(f"mvdust3r: error: {problem[0]} ({problem[1]})", file=sys.stderr)
        return 1
    photos: Any = args.photos[0] if len(args.photos) == 1 else args.photos  # one argument: a folder
    fresh_file()
    spec = arguments_spec(args, photo_list(photos))
    spec = replace(spec, imports=replace(spec.imports, name=out.stem),
                   exports=replace(spec.exports, folder=Path(args.export_dir) if args.export_dir else out.with_suffix("")),
                   keep_bundle=False)  # the bundle goes with the call: Gaussians only if imported or exported
    result = run_spec(spec, timeout=args.timeout, on_progress=stage_printer(_say, ""))
    for fmt, path in result.exports.items():
        _say(f"{fmt}: {path}")
    show_through_first_camera(result)
    saved = save_blend(out)
    _say(f"{result.views} views, {result.points} points in {result.timings.get('total', 0.0):.1f} s → {saved}")
    return 0


def _say(text: str) -> None:
    print(f"[mvdust3r] {text}", file=sys.stderr, flush=True)


_handle: Optional[Any] = None


def register() -> None:
    """Register ``-c mvdust3r`` with Blender (``bpy.utils.register_cli_command``, Blender 4.2+)."""
    global _handle
    # fake-bpy-module types it as returning None; Blender returns the handle that unregistering needs
    _handle = bpy.utils.register_cli_command("mvdust3r", main)  # type: ignore[func-returns-value]


def unregister() -> None:
    global _handle
    if _handle is not None:
        bpy.utils.unregister_cli_command(_handle)
        _handle = None
