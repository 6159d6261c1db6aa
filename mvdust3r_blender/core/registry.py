"""The released MV-DUSt3R checkpoints: what exists, where to download it, what it costs.

The Blender side imports this module for its download UI, so it holds frozen dataclasses and
the standard library only (no torch, nothing else). Facts, not guesses: a size that no page we
could read states is unknown, never invented, and a rounded size ("7.94 GB") is display text,
never the exact byte count a download is checked against. The files are training checkpoints
(weights plus AdamW moments), so a download is about three times the weights.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

HF_REPO = "Zhenggang/MV-DUSt3R"
LICENCE = "CC BY-NC 4.0"
LICENCE_URL = "https://creativecommons.org/licenses/by-nc/4.0/"

# fp32 bytes of each variant's state dict (the official parameter counts): parameters ×4
# plus 3,084 BatchNorm running-stat floats ×4 and 8 int64 ``num_batches_tracked`` counters ×8.
_BUFFER_BYTES = 3084 * 4 + 8 * 8
MVD_WEIGHTS_BYTES = 547_989_522 * 4 + _BUFFER_BYTES
MVDP_WEIGHTS_BYTES = 661_429_266 * 4 + _BUFFER_BYTES


@dataclass(frozen=True)
class ReleasedCheckpoint:
    """One file of the official release (Hugging Face ``Zhenggang/MV-DUSt3R``, folder ``checkpoints/``)."""

    filename: str                   # "MVDp_s2.pth": also the stable identifier
    title: str                      # what a person reads in a menu
    variant: str                    # "MVD" (MV-DUSt3R) or "MVDp" (MV-DUSt3R+)
    description: str
    weights_bytes: int              # fp32 weights once loaded (memory the model needs)
    download_bytes: Optional[int] = None  # EXACT size of the published file (a download is checked
                                          # against it); None = not known to the byte
    published_size: str = ""        # the size as the Hugging Face file page rounds it ("7.94 GB"); "" = unknown
    sha256: Optional[str] = None    # the published file's SHA-256 (checked after a download); None = not known
                                    # here: no page we could read states one in full (the LFS pointer of
                                    # MVDp_s1.pth shows only its first 8 hex digits), so the content is
                                    # checked instead (download.check_checkpoint_file)
    default: bool = False
    licence: str = LICENCE

    @property
    def hf_path(self) -> str:
        """Path of the file inside the Hugging Face repository."""
        return f"checkpoints/{self.filename}"

    @property
    def url(self) -> str:
        """Direct download URL."""
        return f"https://huggingface.co/{HF_REPO}/resolve/main/{self.hf_path}"

    @property
    def download_size_text(self) -> str:
        """``"7.94 GB"`` (decimal gigabytes, as Hugging Face shows them) or ``"size unknown"``."""
        if self.download_bytes is not None:
            return f"{self.download_bytes / 1e9:.2f} GB"
        return self.published_size or "size unknown"


RELEASED: tuple[ReleasedCheckpoint, ...] = (
    ReleasedCheckpoint(
        filename="MVDp_s2.pth",
        title="MV-DUSt3R+ (stage 2)",
        variant="MVDp",
        description="Multiple reference views fused by cross-reference-view blocks; trained on 4–12 views. "
                    "Best quality; needs at least 4 photos.",
        weights_bytes=MVDP_WEIGHTS_BYTES,
        default=True,
    ),
    ReleasedCheckpoint(
        filename="MVD.pth",
        title="MV-DUSt3R",
        variant="MVD",
        description="Single reference view; about four times faster than MV-DUSt3R+ and needs only 2 photos.",
        weights_bytes=MVD_WEIGHTS_BYTES,
    ),
    ReleasedCheckpoint(
        filename="MVDp_s1.pth",
        title="MV-DUSt3R+ (stage 1)",
        variant="MVDp",
        description="MV-DUSt3R+ after the first training stage (8 views); superseded by stage 2.",
        weights_bytes=MVDP_WEIGHTS_BYTES,
        published_size="7.94 GB",  # the Hugging Face file page; the exact byte count is not known here
    ),
)


def default_checkpoint() -> ReleasedCheckpoint:
    """The checkpoint offered first (``MVDp_s2.pth``)."""
    return next(entry for entry in RELEASED if entry.default)


def find_released(filename: str) -> Optional[ReleasedCheckpoint]:
    """The release entry whose file name equals the last part of `filename` (a name or a path), if any."""
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    return next((entry for entry in RELEASED if entry.filename == name), None)


def supported_files_text() -> str:
    """One line naming the supported files, for error messages."""
    names = ", ".join(entry.filename for entry in RELEASED)
    return f"{names} from huggingface.co/{HF_REPO}, or a .safetensors file written by this add-on"


BUILTIN = "builtin"
"""The name that stands for the built-in small model wherever a checkpoint is asked for (``checkpoint=``,
``--checkpoint``, both command lines)."""
_PACKAGE = Path(__file__).resolve().parent.parent


def builtin_model(package: Path = _PACKAGE) -> Path:
    """The built-in model's file: ``models/default.safetensors`` inside the installed extension (in a
    source checkout, the repository's ``models/``) whose package folder is `package`. The engine's
    files carry it to an ssh remote and a Ray cluster, so :data:`BUILTIN` names it there too."""
    for root in (package, package.parent):
        path = root / "models" / "default.safetensors"
        if path.is_file():
            return path
    return package / "models" / "default.safetensors"


def checkpoint_path(name: str) -> str:
    """`name` itself, or the built-in model's path for :data:`BUILTIN` (any case)."""
    return str(builtin_model()) if name.strip().lower() == BUILTIN else name
