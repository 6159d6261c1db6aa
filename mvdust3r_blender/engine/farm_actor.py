"""The Ray actor of a farm batch: one loaded model on one GPU (or a few CPUs), scene after scene.

It runs on a cluster node from the engine's files that travelled as the batch's runtime
environment (:mod:`.farm_cluster`), and wraps the ordinary :class:`~.worker.Worker`, so a scene is computed
exactly as a local worker computes it. It reads nothing of the node on a scene's say-so: photos
arrive as bytes (each size-checked) into a fresh folder of its own, the request's paths are
rewritten into that folder, and the bundle and export files go back as bytes with their SHA-256;
the folder is removed after each scene. The checkpoint alone is the node's: a path there, or a
released file name fetched once per node into ``~/.cache/mvdust3r-blender/models`` (size-checked
by the registry; its SHA-256 reported so the driver can tell nodes with different files apart).
No ray import here: the driver wraps the class with ``ray.remote``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import platform
import shutil
import socket
import tempfile
import time
import uuid
from pathlib import Path, PurePosixPath
from typing import Any, Optional

from ..core.protocol.events import ErrorEvent, LoadedEvent, ResultEvent
from ..core.protocol.requests import LoadRequest, ReconstructRequest, decode_request
from ..core.protocol.wire import encode
from .jobs import MAX_FILE_BYTES

BUNDLE_NAME = "bundle.npz"
EXPORTS_NAME = "exports"
MODELS = Path("~/.cache/mvdust3r-blender/models")
"""Where released checkpoints are fetched on a node (the same place as for an ssh remote)."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def node_checkpoint(checkpoint: str) -> Path:
    """The checkpoint file on this node: a released file's name (``MVDp_s2.pth``) is fetched into
    :data:`MODELS` once per node (other actors of the node wait on a lock), ``builtin`` is the copy
    that came with the engine, anything else is a path."""
    from ..core.registry import checkpoint_path, find_released

    checkpoint = checkpoint_path(checkpoint)
    released = find_released(checkpoint)
    if released is None or checkpoint != released.filename:
        return Path(checkpoint).expanduser()
    import fcntl

    from ..core.download import download_file

    folder = MODELS.expanduser()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    target = folder / released.filename
    with open(folder / f".{released.filename}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.is_file() or (released.download_bytes is not None
                                    and target.stat().st_size != released.download_bytes):
            download_file(released.url, target, released.download_bytes)
    return target


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 * 1024 ** 2):
            digest.update(chunk)
    return digest.hexdigest()


class SceneActor:
    """Loads `checkpoint` on `device` once (at creation), then reconstructs what it is sent."""

    def __init__(self, checkpoint: str, device: str, precision: str) -> None:
        from .worker import Worker

        self._worker = Worker(open(os.devnull, "w", encoding="utf-8"))
        remove_orphans(Path(tempfile.gettempdir()), "mvdust3r-farm")
        self._root = Path(tempfile.mkdtemp(prefix=f"mvdust3r-farm-{os.getpid()}-"))
        self._info: dict[str, Any] = {"pid": os.getpid(), "host": socket.gethostname(),
                                      "python": platform.python_version()}
        try:
            import ray

            self._info["node"] = ray.get_runtime_context().get_node_id()
            self._info["ray"] = ray.__version__
            import torch

            self._info["torch"] = torch.__version__
            path = node_checkpoint(checkpoint)
            self._info["checkpoint_sha256"] = file_sha256(path) if path.is_file() else ""
        except Exception as exc:  # noqa: BLE001 -- reported by ready(): the driver says which node failed
            self._info["error"] = {"code": "setup", "message": f"{type(exc).__name__}: {exc}",
                                   "hint": "install torch and ray on every node; check the checkpoint there"}
            return
        event = self._worker.handle(LoadRequest(id="load", checkpoint=str(path), device=device, precision=precision))
        if isinstance(event, LoadedEvent) and event.model is not None:
            self._info["device"] = event.model.device
            self._info["dtype"] = event.model.dtype
        elif isinstance(event, ErrorEvent):
            self._info["error"] = {"code": event.code, "message": event.message, "hint": event.hint}

    def ready(self) -> dict[str, Any]:
        """Who this actor is (pid, host, Ray node, versions, device) and a load error, if any."""
        return dict(self._info)

    def reconstruct(self, request_line: str, photos: list[bytes]) -> dict[str, Any]:
        """Run one scene's ``reconstruct`` request on the sent `photos` (in the request's order).
        Returns ``{"error": event line}`` or ``{"result": event line, "files": {name: (bytes, sha256)},
        "began": t, "ended": t}`` with names relative to the job (``bundle.npz``, ``exports/...``) and
        the wall-clock times (``time.time``) the call began and ended on the node."""
        begun = time.time()
        request = decode_request(request_line)
        if not isinstance(request, ReconstructRequest):
            raise TypeError(f"a farm actor runs reconstruct requests, not {request.type}")
        job = self._root / uuid.uuid4().hex
        try:
            names: list[str] = []
            for index, (original, data) in enumerate(zip(request.photos, photos)):
                if len(data) > MAX_FILE_BYTES:
                    return {"error": encode(ErrorEvent(
                        id=request.id, code="input", message=f"{original}: {len(data)} bytes, more than the "
                                                             f"{MAX_FILE_BYTES} bytes a worker accepts",
                        hint="use a smaller photo"))}
                target = job / str(index) / PurePosixPath(original.replace("\\", "/")).name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
                names.append(str(target))
            local = dataclasses.replace(
                request, photos=names, output=str(job / BUNDLE_NAME), checkpoint=None, job=None,
                export_dir=str(job / EXPORTS_NAME) if request.export_dir is not None else None)
            event = self._worker.handle(local)
            if not isinstance(event, ResultEvent):
                return {"error": encode(event)}
            files: dict[str, tuple[bytes, str]] = {}

            def send(path: Path) -> str:
                name = path.relative_to(job).as_posix()
                data = path.read_bytes()
                files[name] = (data, sha256_bytes(data))
                return name

            bundle = send(Path(event.bundle))
            exports: dict[str, str] = {}
            for fmt, written in event.exports.items():
                top = Path(written)
                for path in sorted(p for p in top.rglob("*") if p.is_file()) if top.is_dir() else [top]:
                    send(path)
                exports[fmt] = top.relative_to(job).as_posix()
            result = dataclasses.replace(event, bundle=bundle, exports=exports)
            return {"result": encode(result), "files": files, "began": begun, "ended": time.time()}
        finally:
            shutil.rmtree(job, ignore_errors=True)

    def close(self) -> None:
        """Remove this actor's folder (the driver calls it before releasing the actor)."""
        shutil.rmtree(self._root, ignore_errors=True)


def remove_orphans(parent: Path, prefix: str) -> None:
    """Remove the ``<prefix>-<pid>-*`` folders of processes that were killed (a SIGKILL leaves no
    time to clean up): sent photos must not linger on a node, nor staged engines on the driver's."""
    for folder in parent.glob(f"{prefix}-*-*"):
        pid = folder.name[len(prefix) + 1:].split("-")[0]
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                shutil.rmtree(folder, ignore_errors=True)
            except OSError:
                pass  # alive, or another user's


def gpu_memory() -> Optional[list[int]]:
    """Free bytes per visible GPU (None without CUDA): for the cluster check."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    return [int(torch.cuda.mem_get_info(i)[0]) for i in range(torch.cuda.device_count())]
