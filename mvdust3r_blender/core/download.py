"""Resumable download of a checkpoint, off the main thread.

The released checkpoints are 1–3 GB, so a download must survive an interruption: bytes go to
``<final>.part``, a new attempt asks the server for the rest (HTTP ``Range``), and only a file of
the expected size is renamed to the final path, so a half-written checkpoint is never mistaken
for a whole one. :class:`Download` runs :func:`download_file` on a thread; the UI polls its
:attr:`Download.progress` from a timer. Standard library only, no bpy.
"""
from __future__ import annotations

import enum
import hashlib
import http.client
import os
import re
import threading
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from .errors import UserError

CHUNK = 1 << 20
USER_AGENT = "mvdust3r-blender"


class DownloadError(UserError):
    """A download failed; `message` names the URL or file and the problem, `hint` what to do."""


class DownloadCancelled(DownloadError):
    """The user stopped the download; the ``.part`` file is kept for a later resume."""


def part_path(dest: Path) -> Path:
    """Where the bytes of `dest` collect until the download is complete."""
    return dest.with_name(dest.name + ".part")


def download_file(
    url: str,
    dest: Path,
    expected_size: Optional[int] = None,
    *,
    on_progress: Optional[Callable[[int, Optional[int]], None]] = None,
    cancel: Optional[threading.Event] = None,
    timeout: float = 30.0,
    sha256: Optional[str] = None,
    check: Optional[Callable[[Path], None]] = None,
) -> Path:
    """Download `url` (http or https only) to `dest`, resuming a previous ``.part`` file; return `dest`.

    `on_progress(done_bytes, total_bytes_or_None)` is called after every chunk. A file whose
    size is not `expected_size` (or not the server's announced length), whose SHA-256 is not
    `sha256` (when given), or that `check` refuses (it raises :class:`DownloadError`) is deleted
    and reported, never renamed to `dest`; an interruption keeps the ``.part`` for the next call.
    Raises :class:`DownloadError`.
    """
    if not url.lower().startswith(("https://", "http://")):  # file://, ftp://, data: reach no release
        raise DownloadError(f"'{url}' is not an http(s) address", "a model is downloaded from its web address; "
                            "for a file on this machine, choose Local File instead")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(dest)
    have = part.stat().st_size if part.exists() else 0
    if expected_size is not None and have > expected_size:
        part.unlink()  # longer than the real file: it cannot be a prefix of it
        have = 0
    total = expected_size
    if expected_size is None or have < expected_size:
        total = _fetch(url, part, have, expected_size, on_progress, cancel, timeout)
    size = part.stat().st_size
    if expected_size is not None:
        total = expected_size  # the release's known size wins over what a server announces
    if total is not None and size != total:
        part.unlink()
        raise DownloadError(f"{url} gave {size} bytes, expected {total}",
                            "the file on the server differs from the known release, or the transfer was "
                            "corrupted; the partial file was deleted: download again")
    try:
        if sha256 is not None and file_sha256(part) != sha256.lower():
            raise DownloadError(f"{url} gave a file whose SHA-256 is not the release's ({sha256[:12]}…)",
                                "the file on the server differs from the known release, or the transfer was "
                                "corrupted; it was deleted: download again")
        if check is not None:
            check(part)
    except DownloadError:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, dest)
    return dest


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 * CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def check_checkpoint_file(path: Path) -> None:
    """Refuse what cannot be a checkpoint, by its content: a web page (a login or error page served
    with status 200), a PyTorch zip whose archive is cut short, a safetensors file whose header
    does not fit. Raises :class:`DownloadError` naming what the file is."""
    with open(path, "rb") as f:
        head = f.read(1024)
    size = path.stat().st_size
    if head.lstrip()[:1] == b"<" or b"<html" in head.lower():
        raise DownloadError("the server sent a web page (HTML), not a checkpoint",
                            "the address may need a login or have moved; try again later or pick a local file")
    if len(head) >= 9 and head[8:9] == b"{":  # safetensors: an 8-byte header length, then JSON
        if int.from_bytes(head[:8], "little") + 8 > size:
            raise DownloadError("the safetensors file is cut short (its header promises more than it holds)",
                                "download again")
        return
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise DownloadError(f"the file is not a complete PyTorch checkpoint ({exc}: cut short or damaged)",
                            "download again") from None
    if not any(name == "data.pkl" or name.endswith("/data.pkl") for name in names):
        raise DownloadError("the file is a zip archive but not a PyTorch checkpoint (no data.pkl in it)",
                            "check the address, or pick a local file")


def _fetch(url: str, part: Path, have: int, expected_size: Optional[int],
           on_progress: Optional[Callable[[int, Optional[int]], None]],
           cancel: Optional[threading.Event], timeout: float) -> Optional[int]:
    """Append the rest of `url` to `part` from byte `have`; return the file's total size if known."""
    headers = {"User-Agent": USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have and expected_size is None:
            return have  # the .part already holds the whole file
        if exc.code == 416:
            part.unlink()
            raise DownloadError(f"{url}: the server refused to resume at byte {have}",
                                "the partial file was deleted: download again") from None
        raise DownloadError(f"{url}: the server answered {exc.code} {exc.reason}",
                            _http_hint(exc.code)) from None
    except (OSError, http.client.HTTPException) as exc:  # URLError is an OSError
        reason = getattr(exc, "reason", exc)
        raise DownloadError(f"cannot reach {url}: {reason}",
                            "check the internet connection (and Blender's Allow Online Access), then retry; "
                            "the download resumes where it stopped") from None
    with response:
        status = response.status
        length = response.headers.get("Content-Length")
        if have and status == 206:
            start, total = _content_range(response.headers.get("Content-Range", ""))
            if start != have:
                raise DownloadError(f"{url}: the server resumed at byte {start}, not {have}",
                                    "delete the .part file and download again")
            mode = "ab"
        else:  # 200: a full body (the server ignored Range, or this is a fresh start)
            have = 0
            total = int(length) if length is not None else None
            mode = "wb"
        if total is None:
            total = expected_size
        done = have
        with open(part, mode) as out:
            while True:
                if cancel is not None and cancel.is_set():
                    raise DownloadCancelled(f"download of {url} cancelled at {done} bytes",
                                            "start it again to resume")
                try:
                    chunk = response.read(CHUNK)
                except (OSError, http.client.HTTPException) as exc:
                    raise DownloadError(f"the connection to {url} broke after {done} bytes: {exc}",
                                        "retry: the download resumes where it stopped") from None
                if not chunk:
                    break
                out.write(chunk)
                done += len(chunk)
                if on_progress is not None:
                    on_progress(done, total)
        if length is not None and done - have < int(length):
            raise DownloadError(f"the connection to {url} broke after {done} bytes",
                                "retry: the download resumes where it stopped")
    return total


def _content_range(value: str) -> tuple[int, Optional[int]]:
    match = re.match(r"bytes (\d+)-\d+/(\d+|\*)", value.strip())
    if match is None:
        return -1, None
    return int(match.group(1)), None if match.group(2) == "*" else int(match.group(2))


def _http_hint(code: int) -> str:
    if code in (401, 403):
        return "the server refused access: the file may have moved; pick a local checkpoint instead"
    if code == 404:
        return "the file is not on the server (any more): update the extension or pick a local checkpoint"
    if code >= 500:
        return "the server has a problem right now: retry later; the download resumes where it stopped"
    return "retry later, or pick a local checkpoint"


class DownloadState(enum.Enum):
    RUNNING = "RUNNING"
    DONE = "DONE"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


@dataclass(frozen=True)
class DownloadProgress:
    """A snapshot for the UI."""

    state: DownloadState
    done_bytes: int
    total_bytes: Optional[int]
    bytes_per_second: float
    error: Optional[DownloadError]

    @property
    def fraction(self) -> float:
        return self.done_bytes / self.total_bytes if self.total_bytes else 0.0


class Download:
    """:func:`download_file` on a daemon thread. The thread touches no Blender data; the UI reads
    :attr:`progress` from a timer on the main thread."""

    def __init__(self, url: str, dest: Path, expected_size: Optional[int] = None, timeout: float = 30.0, *,
                 sha256: Optional[str] = None, check: Optional[Callable[[Path], None]] = None) -> None:
        self.url = url
        self.dest = Path(dest)
        self.expected_size = expected_size
        self.sha256 = sha256
        self.check = check
        self.timeout = timeout
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self._done = 0
        self._total = expected_size
        self._state = DownloadState.RUNNING
        self._error: Optional[DownloadError] = None
        self._started = 0.0
        self._first_byte = 0
        self._thread = threading.Thread(target=self._run, name="mvdust3r-download", daemon=True)

    def start(self) -> None:
        self._started = time.monotonic()
        part = part_path(self.dest)
        self._first_byte = self._done = part.stat().st_size if part.exists() else 0
        self._thread.start()

    def _on_progress(self, done: int, total: Optional[int]) -> None:
        with self._lock:
            self._done, self._total = done, total

    def _run(self) -> None:
        state: DownloadState
        error: Optional[DownloadError]
        try:
            download_file(self.url, self.dest, self.expected_size, on_progress=self._on_progress,
                          cancel=self._cancel, timeout=self.timeout, sha256=self.sha256, check=self.check)
        except DownloadCancelled as exc:
            state, error = DownloadState.CANCELLED, exc
        except DownloadError as exc:
            state, error = DownloadState.FAILED, exc
        except Exception as exc:  # a bug or a full disk: report it rather than lose it on the thread
            state, error = DownloadState.FAILED, DownloadError(f"downloading {self.url} to {self.dest} failed: {exc}")
        else:
            state, error = DownloadState.DONE, None
        with self._lock:
            self._state, self._error = state, error
            if state is DownloadState.DONE:
                self._done = self.dest.stat().st_size

    @property
    def progress(self) -> DownloadProgress:
        with self._lock:
            elapsed = max(time.monotonic() - self._started, 1e-6)
            return DownloadProgress(self._state, self._done, self._total,
                                    (self._done - self._first_byte) / elapsed, self._error)

    def cancel(self) -> None:
        """Ask the thread to stop after the current chunk; the ``.part`` file stays for a resume."""
        self._cancel.set()

    def join(self, timeout: Optional[float] = None) -> DownloadProgress:
        self._thread.join(timeout)
        return self.progress
