"""The error the exporters raise: bad format names, unwritable folders, missing inputs."""
from __future__ import annotations

from ..errors import OptionError, UserError


class ExportError(UserError):
    """An export cannot be written; the message names the format, file or folder at fault."""

    code = "export"


class UnknownFormatError(ExportError, OptionError):
    """A format name that is not one of the exports: an export's error and a bad option alike, so
    the one check (``parse_formats``) serves the API's export, the request builder, the worker and
    both command lines."""
