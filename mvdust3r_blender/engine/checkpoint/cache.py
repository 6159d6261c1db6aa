"""Our safetensors files and the checkpoint cache: written atomically, memory-mapped when read,
and (the cache) stamped with its source's path, size and modification time and a CRC-32 of every
tensor, so a stale or damaged cache is noticed and rebuilt, never trusted."""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import zlib
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..config import ModelConfig
from ..errors import CheckpointError
from .reading import _FIRST_FEW, PathLike, _first_line
from .settings import _config_from_metadata

log = logging.getLogger(__name__)


CACHE_ENV = "MVDUST3R_CACHE_DIR"
_DIGESTS = "tensor_crc32"             # cache metadata: JSON {key: CRC-32 of the tensor's bytes}
_CHUNK = 16 << 20                     # bytes read at a time when checking those


def default_cache_dir() -> Path:
    """``$MVDUST3R_CACHE_DIR``, else ``$XDG_CACHE_HOME/mvdust3r_blender``, else ``~/.cache/mvdust3r_blender``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "mvdust3r_blender"


def cache_path(path: PathLike, cache_dir: Optional[PathLike] = None) -> Path:
    """Where the safetensors cache of checkpoint `path` lives: one file per real (symlink-resolved)
    source path, named after the path as given (a Hugging Face cache links names to hashed blobs)."""
    given = Path(path).expanduser()
    digest = hashlib.sha256(str(given.resolve()).encode("utf-8")).hexdigest()[:16]
    return _cache_root(cache_dir) / f"{given.stem}-{digest}.safetensors"


def _cache_root(cache_dir: Optional[PathLike]) -> Path:
    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()


def _source_stamp(source: Path) -> dict[str, str]:
    stat = source.stat()
    return {"source_path": str(source.resolve()), "source_size": str(stat.st_size),
            "source_mtime_ns": str(stat.st_mtime_ns)}


def _read_cache(cache: Path, stamp: Mapping[str, str]) -> Optional[tuple[ModelConfig, dict[str, torch.Tensor]]]:
    """The cached config and tensors if `cache` is a readable cache of exactly this source file, else None."""
    if not cache.is_file():
        return None
    try:
        with safe_open(str(cache), framework="pt") as handle:
            metadata = handle.metadata() or {}
            if any(metadata.get(key) != value for key, value in stamp.items()):
                log.info("the cache %s belongs to another version of %s; rebuilding it", cache, stamp["source_path"])
                return None
            if _DIGESTS not in metadata:
                log.info("the cache %s has no checksums (an older version wrote it); rebuilding it", cache)
                return None
            config, tensors = _config_from_metadata(metadata, str(cache)), _mapped_tensors(handle)
        damaged = _damaged_tensors(cache, json.loads(metadata[_DIGESTS]))
    except (SafetensorError, OSError, CheckpointError, ValueError, TypeError) as exc:
        log.warning("ignoring the unreadable cache %s (%s); rebuilding it", cache, exc)
        return None
    if damaged:
        log.warning("the checkpoint cache %s is damaged: the bytes of %s do not match the checksums written with them; "
                    "rebuilding it from %s", cache, ", ".join(damaged[:_FIRST_FEW])
                    + (f" and {len(damaged) - _FIRST_FEW} more" if len(damaged) > _FIRST_FEW else ""),
                    stamp["source_path"])
        return None
    return config, tensors


def tensor_digests(tensors: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """CRC-32 (8 hex digits) of each tensor's bytes, as a safetensors file stores them. A checksum
    against damage (a disk error, a stray edit), not against someone who can write the cache (and
    could rewrite the checksums too)."""
    def crc(tensor: torch.Tensor) -> int:
        flat = tensor.detach().contiguous().reshape(-1)
        return zlib.crc32(flat.view(torch.uint8).numpy().data) if flat.numel() else 0

    return {key: f"{crc(tensor):08x}" for key, tensor in tensors.items()}


def _damaged_tensors(path: Path, expected: Mapping[str, str]) -> list[str]:
    """Keys of the safetensors file `path` whose stored bytes do not match `expected` (or that have no
    checksum, or a checksum but no tensor). The file is read, not touched through the tensors' memory
    map, so the pass fills the page cache but not this process's memory; zlib and file reads release
    the GIL, so tensors are checked on several threads, each with its own handle."""
    if not isinstance(expected, Mapping):
        raise ValueError(f"{_DIGESTS} is not a mapping")
    with open(path, "rb") as handle:
        header_size = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(header_size))
    start = 8 + header_size

    def crc(span: list[int]) -> str:
        value, left = 0, span[1] - span[0]
        with open(path, "rb") as handle:
            handle.seek(start + span[0])
            while left > 0:
                chunk = handle.read(min(_CHUNK, left))
                if not chunk:
                    raise OSError(f"{path} ends inside a tensor")
                value, left = zlib.crc32(chunk, value), left - len(chunk)
        return f"{value:08x}"

    ranges = {key: entry["data_offsets"] for key, entry in header.items() if key != "__metadata__"}
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        found = dict(zip(ranges, pool.map(crc, ranges.values())))
    return sorted(key for key in set(found) | set(expected) if found.get(key) != expected.get(key))


def _read_weights_file(path: Path) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Config and memory-mapped tensors of a ``.safetensors`` file we wrote."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata()
            tensors = _mapped_tensors(handle)
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is a damaged safetensors file ({_first_line(exc)})",
                              "write or download it again") from None
    return _config_from_metadata(metadata, str(path)), tensors


def _mapped_tensors(handle: safe_open) -> dict[str, torch.Tensor]:
    """Every tensor of an open ``safe_open`` handle, memory-mapped (what ``load_file`` does, without
    opening the file and parsing its header a second time)."""
    return {key: handle.get_tensor(key) for key in handle.keys()}


def _write_safetensors(tensors: Mapping[str, torch.Tensor], metadata: dict[str, str], path: Path) -> None:
    """Write to a temporary file beside `path`, flush it to disk, then rename: never a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.partial")
    os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    mode = temporary.stat().st_mode & 0o777   # 0o666 less the umask: safetensors itself writes 0o600
    try:
        save_file({key: t.detach().contiguous() for key, t in tensors.items()}, temporary, metadata=metadata)
        os.chmod(temporary, mode)
        with open(temporary, "r+b") as written:
            os.fsync(written.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
