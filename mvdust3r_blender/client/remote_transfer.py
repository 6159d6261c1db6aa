"""One remote reconstruct request's files on this machine: the photos it sends and the results it
may receive — named by the request, bounded by its budget, staged and moved into place only when
all of them check. No bpy, no torch.
"""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import os
import shutil
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Optional, Sequence

from ..core.arguments import control_characters
from ..core.atomic import check_output
from ..core.protocol.events import DataEvent, ResultEvent
from .remote_target import RemoteError

CHUNK_BYTES = 1024 ** 2          # bytes per put request (the worker's data events use the same)



RESULT_BYTES_PER_VIEW = 128 * 1024 ** 2
RESULT_BYTES_PER_PHOTO_BYTE = 32
"""A request's results (bundle and exports) may take at most RESULT_BYTES_PER_VIEW per photo plus
RESULT_BYTES_PER_PHOTO_BYTE × the photos' bytes (COLMAP's upright copies): several times what a
512-pixel grid's bundle and every export need, and the most a remote can make this machine store."""


def result_budget(photo_bytes: Sequence[int]) -> int:
    """The bytes a request for photos of these sizes may receive in all (:data:`RESULT_BYTES_PER_VIEW`)."""
    return RESULT_BYTES_PER_VIEW * len(photo_bytes) + RESULT_BYTES_PER_PHOTO_BYTE * sum(photo_bytes)


def received_name(name: str) -> PurePosixPath:
    """`name` (from the remote) as a relative path of plain parts, or :class:`RemoteError`: no
    ``.``, ``..``, empty part, backslash, control character or absolute path gets near a folder."""
    parts = name.split("/")
    if (not name or "\\" in name or control_characters(name) or name.startswith("/")
            or any(part in ("", ".", "..") for part in parts)):
        raise RemoteError(f"the remote worker sent a file with the name {name!r}, which is not a plain relative "
                          "name; nothing was written", "the remote is not this add-on's worker, or is damaged")
    return PurePosixPath(*parts)


@dataclass
class _Transfer:
    """The local side of one remote reconstruct: photos to send, result files to receive.

    Every file the remote sends must be one the request asked for (the bundle, or a file of a
    requested export format), declared no larger than what is left of the request's
    :func:`result_budget`, sent in order and never past its declared size. Files arrive in hidden
    staging places (beside `output`, inside `export_dir`) and reach their names only when the
    result event names exactly what was asked for and the bundle reads back; anything else, or a
    lost connection, removes every staged byte (:meth:`discard`)."""

    photos: list[Path]
    names: list[str]                   # their names in the job folder
    output: Path                       # the local bundle
    export_dir: Optional[Path]
    exports: list[str] = field(default_factory=list)  # the export formats asked for
    budget: int = 0                    # bytes the results may take in all
    cancelled: threading.Event = field(default_factory=threading.Event)
    failed: bool = False
    partial: dict[str, tuple[Path, Any, int, int]] = field(default_factory=dict)  # name -> part, SHA-256, written, size
    received: dict[str, Path] = field(default_factory=dict)  # name -> verified staged file
    taken: int = 0                     # bytes declared by the files received so far
    _tag: str = field(default_factory=lambda: f"{os.getpid()}.{uuid.uuid4().hex[:8]}")

    def allowed(self) -> dict[str, PurePosixPath]:
        """{format: its name under ``exports/``} for the requested export formats."""
        from ..core.exports import output_name  # numpy: imported on use

        return {fmt: PurePosixPath(output_name(fmt)) for fmt in self.exports}

    def staging(self, name: str) -> Path:
        """Where file `name` of the result is staged; :class:`RemoteError` if the request did not ask for it."""
        if name == BUNDLE_NAME:
            return self.output.with_name(f".{self.output.name}.{self._tag}.download")
        relative = received_name(name)
        if self.export_dir is not None and relative.parts[0] == EXPORTS_NAME and len(relative.parts) > 1:
            inside = PurePosixPath(*relative.parts[1:])
            if any(inside == own or inside.is_relative_to(own) and own.suffix == "" for own in self.allowed().values()):
                return self._export_staging().joinpath(*inside.parts)
        raise RemoteError(f"the remote worker sent a file this request did not ask for: '{name}'; nothing was "
                          "written", "the remote is not this add-on's worker, or is damaged")

    def _export_staging(self) -> Path:
        assert self.export_dir is not None
        return self.export_dir / f".download.{self._tag}"

    def receive(self, event: DataEvent) -> None:
        """Write one part; check the whole file's hash at its last part."""
        if event.offset == 0 and event.name not in self.partial:
            target = self.staging(event.name)
            if event.name in self.received:
                raise RemoteError(f"the remote worker sent '{event.name}' twice")
            if not 0 <= event.size <= self.budget - self.taken:
                raise RemoteError(f"the remote worker would send {event.size} bytes for '{event.name}', more than "
                                  f"the {max(self.budget - self.taken, 0)} left of this request's "
                                  f"{self.budget} (the most its results can need); nothing more is taken",
                                  "the remote is not this add-on's worker, or is damaged")
            self.taken += event.size
            target.parent.mkdir(parents=True, exist_ok=True)
            part = target.with_name(target.name + ".part")
            part.open("xb").close()
            self.partial[event.name] = (part, hashlib.sha256(), 0, event.size)
        if event.name not in self.partial:
            raise RemoteError(f"part of '{event.name}' arrived out of order")
        part, digest, written, size = self.partial[event.name]
        if event.offset != written or event.size != size or len(event.data) > 2 * CHUNK_BYTES:
            raise RemoteError(f"a part of '{event.name}' does not follow the last (offset {event.offset}, "
                              f"{written} bytes received, {size} declared)")
        data = base64.b64decode(event.data)
        if written + len(data) > size:
            raise RemoteError(f"'{event.name}' goes beyond its declared size of {size} bytes; nothing more is taken",
                              "the remote is not this add-on's worker, or is damaged")
        digest.update(data)
        with open(part, "ab") as f:
            f.write(data)
        written += len(data)
        self.partial[event.name] = (part, digest, written, size)
        if event.sha256:
            del self.partial[event.name]
            if written != size or digest.hexdigest() != event.sha256:
                part.unlink(missing_ok=True)
                raise RemoteError(f"'{event.name}' arrived damaged ({written} of {size} bytes, SHA-256 "
                                  f"{'matches' if digest.hexdigest() == event.sha256 else 'differs'})",
                                  "run it again; if it keeps failing, check the connection")
            target = self.staging(event.name)
            os.replace(part, target)
            self.received[event.name] = target

    def finish(self, result: ResultEvent) -> ResultEvent:
        """The result with local paths. Checked first: the result names exactly the bundle and the
        requested exports, all received; the bundle reads back within the budget. Then the bundle
        (with the local photo paths) and each export take their names; nothing is written before."""
        from ..core.bundle import read_bundle, write_bundle  # numpy: imported when a result arrives

        allowed = self.allowed()
        wanted = {fmt: f"{EXPORTS_NAME}/{name}" for fmt, name in allowed.items()} if self.export_dir else {}
        if result.exports != wanted:
            raise RemoteError(f"the remote worker's result names the exports {result.exports}, not the ones asked "
                              f"for ({wanted}); nothing was written", "the remote is not this add-on's worker")
        if result.bundle != BUNDLE_NAME or BUNDLE_NAME not in self.received:
            raise RemoteError(f"the remote worker did not send the bundle '{BUNDLE_NAME}' (it named "
                              f"'{result.bundle}'); nothing was written")
        missing = [name for name in wanted.values() if not any(
            got == name or got.startswith(name + "/") for got in self.received)]
        if missing:
            raise RemoteError(f"the remote worker did not send {', '.join(missing)}; nothing was written")
        if self.export_dir is not None:
            for name in allowed.values():
                check_output(self.export_dir / name, folder=name.suffix == "")
        bundle = read_bundle(self.received[BUNDLE_NAME], max_bytes=self.budget)  # checks every array
        bundle.photo_paths = [str(p) for p in self.photos]
        write_bundle(bundle, self.output)
        exports: dict[str, str] = {}
        for fmt, name in allowed.items():
            if self.export_dir is None:
                break
            staged, final = self._export_staging() / name, self.export_dir / name
            if name.suffix == "":  # a folder (colmap): the older one goes only once the new one is in place
                aside = final.with_name(f".{final.name}.{self._tag}.old")
                if final.exists():
                    os.replace(final, aside)
                os.replace(staged, final)
                shutil.rmtree(aside, ignore_errors=True)
            else:
                os.replace(staged, final)
            exports[fmt] = str(final)
        self.discard()
        return dataclasses.replace(result, bundle=str(self.output), exports=exports)

    def discard(self) -> None:
        """Remove every staged byte (parts, received files, the staging folder)."""
        for part, *_ in self.partial.values():
            part.unlink(missing_ok=True)
        self.partial.clear()
        downloaded = self.received.pop(BUNDLE_NAME, None)
        if downloaded is not None:
            downloaded.unlink(missing_ok=True)
        self.received.clear()
        if self.export_dir is not None:
            shutil.rmtree(self._export_staging(), ignore_errors=True)


BUNDLE_NAME = "bundle.npz"
EXPORTS_NAME = "exports"
