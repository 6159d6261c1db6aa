"""The engine's files as one reproducible archive, named by its SHA-256: the engine's version.

What a worker runs from — the package's ``__init__.py``, ``core/``, ``engine/`` and the manifest —
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

PACKAGE_DIR = Path(__file__).resolve().parents[1]


def engine_archive(package_dir: Path = PACKAGE_DIR) -> tuple[bytes, str, str]:
    """The reproducible ``.tar.gz`` of what a worker runs from, its SHA-256 (the engine's version)
    and the tree digest of its files as the bootstrap computes it on the remote, on every start:
    SHA-256 over each file's relative path, size and bytes, in path order. The package's
    ``__init__.py``, ``core/``, ``engine/`` and the manifest (for the version it reports)."""
    files: list[tuple[str, Path]] = [("__init__.py", package_dir / "__init__.py")]
    for room in ("core", "engine"):
        files += [(p.relative_to(package_dir).as_posix(), p) for p in sorted((package_dir / room).rglob("*.py"))
                  if "__pycache__" not in p.parts]
    for manifest in (package_dir / "blender_manifest.toml", package_dir.parent / "blender_manifest.toml"):
        if manifest.is_file():
            files.append(("blender_manifest.toml", manifest))
            break
    raw = io.BytesIO()
    contents = {f"{package_dir.name}/{name}": path.read_bytes() for name, path in files}
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in contents.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    blob = gzip.compress(raw.getvalue(), mtime=0)
    tree = hashlib.sha256()
    for name in sorted(contents):
        tree.update(name.encode() + b"\0" + str(len(contents[name])).encode() + b"\0" + contents[name])
    return blob, hashlib.sha256(blob).hexdigest(), tree.hexdigest()
