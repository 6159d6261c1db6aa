"""The engine's files as one reproducible archive, named by its SHA-256: the engine's version.

What a worker runs from — the package's ``__init__.py``, ``core/``, ``engine/``, the manifest and the
built-in model (13.7 MB, so that ``checkpoint="builtin"`` works wherever the engine runs) —
travels to other machines in two ways: over ssh to a remote's cache (``client/remote.py``) and as
a Ray job's runtime environment (``engine/farm_cluster.py``). Both name a version by this archive's hash,
so a machine that has it never receives it again. Standard library only.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from pathlib import Path
from typing import BinaryIO

from .registry import builtin_model

PACKAGE_DIR = Path(__file__).resolve().parents[1]


def engine_archive(package_dir: Path = PACKAGE_DIR) -> tuple[bytes, str, str]:
    """The reproducible ``.tar.gz`` of what a worker runs from, its SHA-256 (the engine's version)
    and the tree digest of its files as the bootstrap computes it on the remote, on every start:
    SHA-256 over each file's relative path, size and bytes, in path order. The package's
    ``__init__.py``, ``core/``, ``engine/``, the manifest (for the version it reports) and the
    built-in model, at ``models/`` inside the package where :func:`~.registry.builtin_model` looks."""
    files: list[tuple[str, Path]] = [("__init__.py", package_dir / "__init__.py")]
    for room in ("core", "engine"):
        files += [(p.relative_to(package_dir).as_posix(), p) for p in sorted((package_dir / room).rglob("*.py"))
                  if "__pycache__" not in p.parts]
    for manifest in (package_dir / "blender_manifest.toml", package_dir.parent / "blender_manifest.toml"):
        if manifest.is_file():
            files.append(("blender_manifest.toml", manifest))
            break
    if (model := builtin_model(package_dir)).is_file():
        files.append(("models/default.safetensors", model))
    named = sorted((f"{package_dir.name}/{name}", path) for name, path in files)
    tree = hashlib.sha256()
    raw = io.BytesIO()  # streamed file by file: the model is never held twice
    with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as packed, \
            tarfile.open(fileobj=packed, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, path in named:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = path.stat().st_size, 0o644, 0
            tree.update(name.encode() + b"\0" + str(info.size).encode() + b"\0")
            with open(path, "rb") as f:
                tar.addfile(info, _Hashing(f, tree))  # one read of each file feeds the tree digest and the archive
    blob = raw.getvalue()
    return blob, hashlib.sha256(blob).hexdigest(), tree.hexdigest()


class _Hashing:
    """A file read through: each block read also goes into `digest`."""

    def __init__(self, file: BinaryIO, digest: "hashlib._Hash") -> None:
        self._file, self._digest = file, digest

    def read(self, size: int = -1) -> bytes:
        block = self._file.read(size)
        self._digest.update(block)
        return block
