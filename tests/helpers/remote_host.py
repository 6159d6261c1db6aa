"""A real OpenSSH server on 127.0.0.1, logged into as a throw-away unprivileged user: the "GPU box"
of the remote-worker tests (tests/engine/test_remote.py, tests/blender/test_remote.py).

:func:`start` needs root (it creates the user) and OpenSSH's ``sshd``, ``ssh-keygen`` and ``ssh``
(build.py's set-up installs the Debian package ``openssh-server``); anything missing raises, never
skips. It makes, in one fresh folder: a host key, a client key pair, a known_hosts file, the
user's home (where the remote engine cache and job folders go) and sshd's configuration, then
starts ``sshd -D`` on a free port. :meth:`RemoteHost.stop` ends sshd and the user's processes (by
their ids), deletes the user and removes the folder: nothing stays running or on disk.

The remote user cannot read the tests' photos by path: they live under pytest's temporary folder
(``/tmp/pytest-of-root``, mode 0700). Its Python with torch is the test runtime's interpreter when
that user can run it, else the system Python of the same version with the runtime's site-packages.
"""
from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = Path("/usr/sbin/sshd")


@dataclass
class RemoteHost:
    """The running server and what a client needs to reach it."""

    user: str
    port: int
    home: Path
    folder: Path
    key: Path
    known_hosts: Path
    python: str                      # the remote Python with torch (a command for the remote shell)
    sshd: subprocess.Popen[bytes]

    @property
    def destination(self) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}"

    def ssh_command(self, known_hosts: "Path | None" = None) -> str:
        """ssh with only this test's key and known hosts (no user or system configuration)."""
        return (f"ssh -F none -i {self.key} -o IdentitiesOnly=yes -o StrictHostKeyChecking=yes "
                f"-o UserKnownHostsFile={known_hosts or self.known_hosts}")

    def run_as_user(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["runuser", "-u", self.user, "--", *argv], capture_output=True, text=True,
                              cwd=self.home)

    def place(self, source: Path) -> str:
        """Copy `source` into the remote user's home; its path there (what the remote worker reads)."""
        target = self.home / source.name
        shutil.copyfile(source, target)
        os.chown(target, *self._ids())
        return str(target)

    def processes(self) -> list[int]:
        """Ids of the remote user's processes (its sshd session and workers)."""
        found = subprocess.run(["ps", "-o", "pid=", "-u", self.user], capture_output=True, text=True)
        return [int(x) for x in found.stdout.split()]

    def _ids(self) -> tuple[int, int]:
        entry = pwd.getpwnam(self.user)
        return entry.pw_uid, entry.pw_gid

    def stop(self) -> None:
        if self.sshd.poll() is None:
            self.sshd.terminate()
            try:
                self.sshd.wait(10)
            except subprocess.TimeoutExpired:
                self.sshd.kill()
                self.sshd.wait()
        for pid in self.processes():  # what the user's sessions left (the test started them all)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while self.processes() and time.monotonic() < deadline:
            time.sleep(0.1)
        subprocess.run(["userdel", self.user], capture_output=True)
        shutil.rmtree(self.folder, ignore_errors=True)


def _need(condition: bool, what: str) -> None:
    if not condition:
        raise RuntimeError(f"the remote-worker tests need {what} (build.py setup installs openssh-server as root)")


def _reachable_parent() -> Path:
    """A temporary folder the remote user can pass through to its home: ``$TMPDIR`` when it can
    (build.py gives each suite a private 0700 one, which it cannot), else /tmp. The folder made
    there is removed by :meth:`RemoteHost.stop`."""
    for candidate in (Path(tempfile.gettempdir()), Path("/tmp")):
        if candidate.is_dir() and all(os.stat(p).st_mode & 0o001 for p in (candidate, *candidate.parents)):
            return candidate
    raise RuntimeError("no temporary folder that other users can pass through (neither $TMPDIR nor /tmp)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _remote_python(user: str, home: Path, python: str) -> str:
    """A command the remote user can run that imports torch: `python` itself, else the system
    interpreter of its version with its site-packages."""
    probe = subprocess.run([python, "-c", "import importlib.util as u, os, sys; print(*sys.version_info[:2], "
                                          "os.path.dirname(os.path.dirname(u.find_spec('torch').origin)))"],
                           capture_output=True, text=True, check=True)
    major, minor, site = probe.stdout.split(maxsplit=2)
    candidates = [python] + [f"PYTHONPATH={site.strip()} {base}" for base in
                             (f"/usr/bin/python{major}.{minor}", f"/usr/local/bin/python{major}.{minor}")
                             if Path(base).is_file()]
    for candidate in candidates:
        ok = subprocess.run(["runuser", "-u", user, "--", "sh", "-c", f"{candidate} -c 'import importlib.util as u, sys; sys.exit(u.find_spec(\"torch\") is None)'"],
                            capture_output=True, cwd=home)
        if ok.returncode == 0:
            return candidate
    raise RuntimeError(f"the remote test user cannot run a Python with torch: tried {candidates}; put the test "
                       "runtime where other users can read it")


def start(worker_python: str) -> RemoteHost:
    """Create the user, keys and configuration; start sshd; return when it accepts connections."""
    _need(os.geteuid() == 0, "root (to create the remote test user)")
    for tool in ("ssh", "ssh-keygen", "useradd", "userdel", "runuser"):
        _need(shutil.which(tool) is not None, f"the '{tool}' command")
    _need(SSHD.is_file(), f"OpenSSH's server at {SSHD}")
    folder = Path(tempfile.mkdtemp(prefix="mvd-sshd-", dir=_reachable_parent()))
    folder.chmod(0o755)  # the user's home is inside; the keys are in 0700 subfolders
    user = f"mvdremote{os.getpid()}"
    home = folder / "home"
    # sshd's privilege separation directory (Debian's ssh service makes it at boot): made when missing
    # and left in place, since any other sshd on this machine needs it too
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    host = None
    try:
        # password '*': no password login, but not a locked account (which sshd refuses without PAM)
        subprocess.run(["useradd", "--no-create-home", "--home-dir", str(home), "--shell", "/bin/sh",
                        "--password", "*", user],
                       check=True, capture_output=True)
        keys = folder / "keys"
        keys.mkdir(mode=0o700)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / "host")], check=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / "client")], check=True)
        uid, gid = pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid
        (home / ".ssh").mkdir(parents=True)
        shutil.copyfile(keys / "client.pub", home / ".ssh" / "authorized_keys")
        for path, mode in ((home, 0o755), (home / ".ssh", 0o700), (home / ".ssh" / "authorized_keys", 0o600)):
            os.chown(path, uid, gid)
            path.chmod(mode)
        port = _free_port()
        known_hosts = keys / "known_hosts"
        known_hosts.write_text(f"[127.0.0.1]:{port} {(keys / 'host.pub').read_text().strip()}\n")
        config = keys / "sshd_config"
        config.write_text(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {keys / 'host'}
PidFile {keys / 'sshd.pid'}
AuthorizedKeysFile .ssh/authorized_keys
AllowUsers {user}
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin no
X11Forwarding no
AllowTcpForwarding no
StrictModes yes
LogLevel ERROR
""")
        with open(keys / "sshd.log", "wb") as log:
            sshd = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=log)
        host = RemoteHost(user=user, port=port, home=home, folder=folder, key=keys / "client",
                          known_hosts=known_hosts, python="", sshd=sshd)
        deadline = time.monotonic() + 15
        while True:
            if sshd.poll() is not None:
                raise RuntimeError(f"sshd exited with code {sshd.returncode}: "
                                   f"{(keys / 'sshd.log').read_text(errors='replace')[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("sshd did not accept connections within 15 s") from None
                time.sleep(0.05)
        host.python = _remote_python(user, home, worker_python)
        return host
    except BaseException:
        if host is not None:
            host.stop()
        else:
            subprocess.run(["userdel", user], capture_output=True)
            shutil.rmtree(folder, ignore_errors=True)
        raise


def default_worker_python() -> str:
    return os.environ.get("MVDUST3R_WORKER_PYTHON") or sys.executable
