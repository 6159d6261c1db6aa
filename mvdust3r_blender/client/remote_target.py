"""Where a remote worker runs and how ssh reaches it: :class:`RemoteTarget` (checked where it is set:
every value becomes a word of ssh's argv, never an option) and :class:`RemoteError`, what every
remote failure raises. No bpy, no torch.
"""
from __future__ import annotations

import os
import shlex
from dataclasses import dataclass

from ..core.arguments import ArgumentError, argument
from ..core.errors import UserError

SSH_OPTIONS: tuple[str, ...] = ("-o", "BatchMode=yes", "-o", "ServerAliveInterval=2", "-o", "ServerAliveCountMax=3",
                                "-o", "ConnectTimeout=15", "-T")
"""Added after the user's ssh command line (ssh takes the first value of an option: the user's win)."""


class RemoteError(UserError):
    """The remote worker cannot be reached or set up, or a result arrived damaged."""

    code = "remote"


@dataclass(frozen=True)
class RemoteTarget:
    """Where a remote worker runs: ssh's destination (``user@host`` or ``ssh://user@host:port``), the
    ssh command line to use (``ssh -i ~/.ssh/gpu -J bastion``), and the remote Python: a command
    for the remote (POSIX) shell, e.g. ``python3`` or ``~/envs/torch/bin/python``."""

    destination: str
    ssh_command: str = "ssh"
    python: str = "python3"

    def __post_init__(self) -> None:
        try:  # each value becomes a word of ssh's argv: never an option, never a control character
            argument(self.destination, "the ssh destination", hint="write user@host or ssh://user@host:port")
            argument(self.python, "the remote Python", hint="give the remote command that runs Python with "
                                                            "torch, e.g. python3 or ~/envs/torch/bin/python")
            argument(self.ssh_command, "the ssh command",
                     hint="leave it at 'ssh', or give ssh with options, such as ssh -i KEY")
        except ArgumentError as exc:
            raise RemoteError(exc.message, exc.hint) from None
        if any(c.isspace() for c in self.destination):
            raise RemoteError(f"'{self.destination}' is not an ssh destination",
                              "write user@host or ssh://user@host:port")
        if not self.ssh_argv_prefix():
            raise RemoteError("the ssh command is empty", "leave it at 'ssh', or add options such as -i KEY")

    def ssh_argv_prefix(self) -> list[str]:
        """The ssh command line's words; a word starting with ``~`` is the user's home, as a shell reads it."""
        try:
            words = shlex.split(self.ssh_command, posix=os.name != "nt")  # keep Windows paths' backslashes
        except ValueError as exc:
            raise RemoteError(f"cannot read the ssh command '{self.ssh_command}': {exc}") from None
        return [os.path.expanduser(w) if w.startswith("~") else w for w in words]

    def ssh_argv(self, remote_command: str) -> list[str]:
        """``ssh`` with the user's options, then ours, ``--``, the destination and `remote_command` (one
        string for the remote shell, as ssh always sends it). After ``--`` OpenSSH reads no option:
        without it, it parses the word after the destination as options too."""
        return [*self.ssh_argv_prefix(), *SSH_OPTIONS, "--", self.destination, remote_command]

    def __str__(self) -> str:
        return self.destination
