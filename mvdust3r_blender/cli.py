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
from pathlib import Path
from typing import Any, Optional

import bpy

from .batch import reconstruct_many, stage_printer
from .core.errors import OptionError
from .core.exports import parse_formats
from .core.options import add_arguments
from .reconstruction import fresh_file, reconstruct, save_blend, show_through_first_camera
from .session import SESSION, WORKER_PYTHON_ENV

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
    except SystemExit as exc:  # --help (0) or a usage error (2): argparse has printed why
        return int(exc.code) if isinstance(exc.code, int) else 2
    flags: dict[str, Any] = {"import_points": not args.no_points, "import_cameras": not args.no_cameras,
                             "import_gaussians": not args.no_gaussians, "reference_view": args.reference_view,
                             "pose_drop_percent": args.pose_drop_percent, "focal": args.focal,
                             "confidence_drop_percent": args.confidence_drop_percent,
                             "min_confidence": args.min_confidence}
    settings: dict[str, Any] = {"checkpoint": args.checkpoint, "device": args.device, "precision": args.precision,
                                "python": args.python, "remote": args.remote, "ssh_command": args.ssh_command}
    try:
        if args.command == "batch":
            report = reconstruct_many(args.folders, args.out, blend=not args.no_blend, formats=args.export,
                                      resume=not args.no_resume, timeout=args.timeout, ray=args.ray,
                                      **settings, **flags)
            return 0 if report.ok else 1
        return _reconstruct_one(args, settings, flags)
    except KeyboardInterrupt:
        print("mvdust3r: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 -- the command line's boundary: say what failed, exit 1
        print(f"mvdust3r: error: {exc}", file=sys.stderr)
        return 1
    finally:
        SESSION.shutdown()


def _reconstruct_one(args: argparse.Namespace, settings: dict[str, Any], flags: dict[str, Any]) -> int:
    out = Path(args.out)
    if out.suffix.lower() != ".blend":
        print(f"mvdust3r: error: --out {out} must be a .blend file", file=sys.stderr)
        return 2
    photos: Any = args.photos[0] if len(args.photos) == 1 else args.photos  # one argument: a folder
    fresh_file()
    result = reconstruct(photos, timeout=args.timeout, on_progress=stage_printer(_say, ""), name=out.stem,
                         exports=args.export, export_dir=Path(args.export_dir) if args.export_dir else out.with_suffix(""),
                         **settings, **flags)
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
