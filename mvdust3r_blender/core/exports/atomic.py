"""Where exports may go: a folder that exists and takes new files (checked before anything is written).

The writing itself is atomic through :mod:`..atomic`.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import ExportError


def writable_folder(folder: Path) -> Path:
    """Create `folder` if needed and prove a file can be made in it; raise :class:`ExportError` if not."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ExportError(f"{folder}: cannot write exports there ({exc.strerror or exc})",
                          "choose an existing folder you can write to") from exc
    return folder.resolve()
