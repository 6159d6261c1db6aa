"""The one error the exporters raise: bad format names, unwritable folders, missing inputs."""
from __future__ import annotations

from ..errors import UserError


class ExportError(UserError):
    """An export cannot be written; the message names the format, file or folder at fault."""

    code = "export"
