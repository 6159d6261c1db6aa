"""Atomic output: a file or folder appears complete under its final name, or not at all.

Writers (bundles, exports, saved .blend files) write into a hidden sibling and rename it into place
at the end, so a crash, a full disk or a cancelled run never leaves a truncated file behind — and a
resumed batch never mistakes half a file for a finished scene. Standard library only. Temporary
names are made with plain exclusive creation (not mkstemp/mkdtemp, whose 0600/0700 modes would
survive the rename), so outputs get the user's umask like any other file.
"""
from __future__ import annotations

import errno
import os
import shutil
import stat
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import UserError


class OutputRefused(UserError):
    """An output path names something that is not an earlier output: a device, a pipe, a socket, a
    symlink, or a file where a folder goes (and the reverse). It is never replaced."""

    code = "output"


def check_output(path: Path, *, folder: bool = False, replace_symlink: bool = False) -> None:
    """Refuse `path` when it exists and is not what an output of that kind replaces: a regular file
    (`folder` False) or a folder (`folder` True). A symlink is refused unless `replace_symlink`
    (then the link itself is replaced, never what it points to)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise OutputRefused(f"cannot write {path}: {exc.strerror or exc}", "choose another output path") from None
    if stat.S_ISLNK(mode):
        if replace_symlink:
            return
        what = "a symbolic link"
    elif folder and stat.S_ISDIR(mode) or not folder and stat.S_ISREG(mode):
        return
    else:
        what = {stat.S_IFDIR: "a folder", stat.S_IFREG: "a file", stat.S_IFCHR: "a device", stat.S_IFBLK: "a device",
                stat.S_IFIFO: "a pipe (FIFO)", stat.S_IFSOCK: "a socket"}.get(stat.S_IFMT(mode), "not a file")
    raise OutputRefused(f"cannot write {path}: it is {what}, not {'a folder' if folder else 'a file'} an output "
                        "replaces; nothing was written", "choose another output path, or remove it first")


def sibling(path: Path, suffix: str) -> Path:
    """A fresh hidden name beside `path` (unique per process and call)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{suffix}")


@contextmanager
def atomic_file(path: Path, *, replace_symlink: bool = False) -> Iterator[Path]:
    """Yield a new empty temporary path beside `path` (ending in the same suffix, for writers that
    look at it); on success it replaces `path`, on failure it is removed and `path` is left as it was.
    A `path` that exists and is not a regular file is refused first (:func:`check_output`)."""
    check_output(path, replace_symlink=replace_symlink)
    tmp = sibling(path, ".part" + path.suffix)
    tmp.open("xb").close()
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_folder(path: Path, *, replace_symlink: bool = False) -> Iterator[Path]:
    """Yield a new temporary folder beside `path`; on success it takes the place of `path` (an older
    folder of that name is moved aside first and deleted after), on failure it is removed. A `path`
    that exists and is not a folder is refused first (:func:`check_output`)."""
    check_output(path, folder=True, replace_symlink=replace_symlink)
    tmp = sibling(path, ".part")
    tmp.mkdir()
    try:
        yield tmp
        aside = None
        if path.exists():
            aside = sibling(path, ".old")
            os.replace(path, aside)
        try:
            os.replace(tmp, path)
        except BaseException:
            if aside is not None:
                os.replace(aside, path)  # put the older output back
            raise
        finally:
            if aside is not None:
                shutil.rmtree(aside, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_failure(path: Path, exc: OSError) -> tuple[str, str]:
    """(message, hint) for an `exc` raised while writing `path`: a full disk (or quota) is said so;
    every failure names the file and says that nothing was left half-written."""
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return (f"cannot write {path}: the disk is full (no space left on it)",
                "free some space on that disk, or choose a folder on another one; no partial file was left")
    blocker = next((parent for parent in path.parents if parent.exists()), None)
    if exc.errno in (errno.EEXIST, errno.ENOTDIR) and blocker is not None and not blocker.is_dir():
        return (f"cannot write {path}: {blocker} is a file, not a folder",
                "choose another output path; no partial file was left")
    return (f"cannot write {path}: {exc.strerror or exc}",
            "choose a folder you can write to, with free space; no partial file was left")


def unwritable(path: Path) -> tuple[str, str] | None:
    """(message, hint) naming `path` when a file cannot be written there — its folder not creatable,
    read-only, or a file in the way — else None (the probe is a hidden sibling, removed at once). Callers check outputs with this before a
    long job, so a run never computes for minutes and then fails on where it was to be saved."""
    path = Path(path).absolute()
    if path.is_dir():
        return (f"cannot write {path}: it is a folder", "give a file name, not a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe = sibling(path, ".probe")
        probe.open("xb").close()
        probe.unlink()
    except OSError as exc:
        return write_failure(path, exc)
    return None
