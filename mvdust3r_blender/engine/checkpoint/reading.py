"""Opening a ``torch.save`` training checkpoint safely: what a file is from its first bytes, and
``torch.load(weights_only=True, mmap=True)`` with an allow-list of exactly ``argparse.Namespace``, so
no code in the file can run and no tensor is read until it is touched."""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import pickle
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import torch

from ...core.registry import supported_files_text
from ..errors import CheckpointError

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]


ALLOWED_GLOBALS = (argparse.Namespace,)  # ``args``: the one class official checkpoints need
_ZIP_MAGIC = b"PK\x03\x04"
_FIRST_FEW = 5                        # how many offending keys an error names
_CORRUPT_HINT = "the file is damaged or not an official MV-DUSt3R checkpoint; download it again"


@dataclass
class RawCheckpoint:
    """What inference needs from a training checkpoint: memory-mapped weights and the constructor string."""

    path: Path
    state_dict: dict[str, torch.Tensor]   # backed by the file; pages are read when touched
    model_string: str                     # ``ckpt['args'].model``


def read_checkpoint(path: PathLike) -> RawCheckpoint:
    """Open a ``torch.save`` checkpoint safely; return its state dict and constructor string.

    Nothing but ``argparse.Namespace`` may be unpickled, tensors are memory-mapped, and only
    ``model`` and ``args.model`` are kept: the optimizer's tensors are dropped unread.
    """
    source = Path(path).expanduser()
    if _sniff(source) != "torch":
        raise CheckpointError(f"{source} is a safetensors file, not a PyTorch training checkpoint",
                              "load it with load_model()")
    try:
        with torch.serialization.safe_globals(list(ALLOWED_GLOBALS)), _torch_named(source) as named:
            ckpt = torch.load(named, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as exc:
        raise _unpickling_error(source, exc) from None
    except (RuntimeError, EOFError, ValueError, KeyError, IndexError) as exc:
        raise _unreadable_zip(source, exc) from None
    except OSError as exc:
        raise CheckpointError(f"cannot read {source}: {exc.strerror or exc}",
                              "check that the file is readable") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        kind = type(ckpt).__name__
        raise CheckpointError(
            f"{source} is a PyTorch file but not an MV-DUSt3R training checkpoint "
            f"(expected a dict with 'model' and 'args', found a {kind}"
            + (f" with keys {sorted(map(str, ckpt))[:_FIRST_FEW]}" if isinstance(ckpt, dict) else "") + ")",
            f"supported: {supported_files_text()}")
    state_dict = ckpt["model"]
    bad = [key for key, value in state_dict.items() if not isinstance(value, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{source}: 'model' holds non-tensor entries ({', '.join(map(str, bad[:_FIRST_FEW]))})",
                              f"supported: {supported_files_text()}")
    args = ckpt.get("args")
    model_string = args.get("model") if isinstance(args, dict) else getattr(args, "model", None)
    if not isinstance(model_string, str):
        raise CheckpointError(
            f"{source} has no constructor string (args.model), so its head counts are unknown",
            f"supported: {supported_files_text()}")
    return RawCheckpoint(source, dict(state_dict), model_string)


@contextlib.contextmanager
def _torch_named(source: Path) -> Iterator[Path]:
    """`source`, or a link to it under a ``.pth`` name when its name ends in ``.safetensors``:
    ``torch.load`` picks its reader by that suffix, and this file is a torch zip (sniffed) renamed.
    Where links are refused the file is copied into the temporary folder instead."""
    if not source.name.endswith(".safetensors"):
        yield source
        return
    log.warning("%s is a PyTorch checkpoint (a zip written by torch.save) despite its .safetensors name; "
                "reading it as one", source)
    with tempfile.TemporaryDirectory(prefix="mvdust3r-checkpoint-", ignore_cleanup_errors=True) as folder:
        named = Path(folder) / (source.stem + ".pth")
        try:
            os.symlink(source.absolute(), named)
        except OSError:
            shutil.copyfile(source, named)
        yield named


def _sniff(path: Path) -> str:
    """``"torch"`` (a zip written by torch.save) or ``"safetensors"``; anything else is an error."""
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}",
                              f"check the path, or download one of {supported_files_text()}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint file", "choose the .pth or .safetensors file")
    try:
        with open(path, "rb") as handle:
            head = handle.read(64)
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}", "check the file's permissions") from None
    if head.startswith(_ZIP_MAGIC):
        return "torch"
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < path.stat().st_size:
        return "safetensors"
    raise CheckpointError(f"{path} is not a checkpoint: {_describe(head)}",
                          f"choose a checkpoint file; supported: {supported_files_text()}")


def _describe(head: bytes) -> str:
    """What a file that is not a checkpoint looks like, from its first bytes."""
    if not head:
        return "the file is empty"
    if head.startswith(b"version https://git-lfs"):
        return "it is a Git LFS pointer (the repository was cloned without git-lfs), not the file itself"
    if head.startswith(b"\x80") and b"\x8a\x0al\xfc\x9cF\xf9" in head:
        return "it uses the legacy (pre-1.6) PyTorch format, which cannot be memory-mapped"
    kinds = {b"\xff\xd8\xff": "a JPEG image", b"\x89PNG": "a PNG image", b"%PDF": "a PDF document",
             b"\x1f\x8b": "a gzip archive", b"<": "an HTML/XML page (an error page saved by a failed download?)"}
    for magic, kind in kinds.items():
        if head.lstrip().startswith(magic):
            return f"it looks like {kind}"
    return f"it does not start with a PyTorch (zip) or safetensors header (first bytes {head[:8]!r})"


def _unpickling_error(source: Path, exc: pickle.UnpicklingError) -> CheckpointError:
    found = re.search(r"GLOBAL ([\w.]+)", str(exc))
    if found:
        return CheckpointError(
            f"refused to load {source}: it needs Python code ({found.group(1)}) outside the allow-list of a "
            "weights-only load (tensors, plain containers, argparse.Namespace); unpickling it could run "
            "arbitrary code, so nothing in it was executed",
            f"use an official checkpoint ({supported_files_text()})")
    return CheckpointError(f"{source} is corrupt: its pickle cannot be read ({_first_line(exc)})", _CORRUPT_HINT)


def _unreadable_zip(source: Path, exc: BaseException) -> CheckpointError:
    """A zip torch cannot load: some other archive (an .npz, a zipped .pth), or a damaged checkpoint."""
    try:
        with zipfile.ZipFile(source) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        names = None   # no readable central directory: the end of the file is missing
    if names is not None and not any(name.rsplit("/", 1)[-1] == "data.pkl" for name in names):
        return CheckpointError(f"{source} is a zip archive, not a PyTorch checkpoint (it holds "
                               f"{', '.join(names[:_FIRST_FEW]) or 'nothing'})",
                               "extract the checkpoint from it, or choose the .pth file itself")
    return CheckpointError(
        f"{source} is truncated or corrupt ({source.stat().st_size:,} bytes; torch: {_first_line(exc)})",
        "download it again; an interrupted download leaves a partial file")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__
