"""What a worker says about itself when it is greeted: the extension's version and whether its
Python has every library a run needs, so that the panel's and the remote's Check name a missing
or broken one instead of the first run."""
from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

from .errors import RuntimeIncomplete

# what a run imports beyond torch and numpy: module, and the package that provides it
RUN_LIBRARIES = (("PIL", "pillow"), ("cv2", "opencv-python-headless"), ("safetensors", "safetensors"))


def require_libraries() -> None:
    """Import every library in :data:`RUN_LIBRARIES`; :class:`RuntimeIncomplete` names each that fails."""
    broken = []
    for module, package in RUN_LIBRARIES:
        try:
            importlib.import_module(module)
        except ImportError as exc:  # missing, or a library it loads is (cv2 without libGL)
            broken.append(f"{module!r} ({package}: {first_line(exc)})")
    if broken:
        raise RuntimeIncomplete(f"the worker's Python ({sys.executable}) cannot import {', '.join(broken)}",
                                "install the runtime's packages (torch, numpy, pillow, opencv, safetensors) into "
                                "that Python, or choose another runtime")


def extension_version() -> str:
    """The extension's version from ``blender_manifest.toml`` (in the package when installed, beside
    it in a checkout); ``"unknown"`` when neither exists."""
    package = Path(__file__).resolve().parents[1]
    for manifest in (package / "blender_manifest.toml", package.parent / "blender_manifest.toml"):
        if manifest.is_file():
            found = re.search(r'^version\s*=\s*"([^"]+)"', manifest.read_text(encoding="utf-8"), re.MULTILINE)
            if found:
                return found.group(1)
    return "unknown"


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of what `exc` says, cut to `limit` characters: enough for a message."""
    text = (str(exc).strip().splitlines() or [""])[0]
    return text if len(text) <= limit else text[:limit] + "..."
