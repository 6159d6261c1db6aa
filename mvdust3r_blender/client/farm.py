"""The Ray driver's process, seen from the Blender side, and the cluster check of the preferences.

:class:`FarmClient` starts ``<python> -m mvdust3r_blender.engine.farm`` in the worker runtime
(the one with torch and ray; Blender never imports ray), writes one :class:`~..core.farm.FarmJob`
line to its stdin and reads :class:`~..core.farm.FarmEvent` lines as the scenes land. Closing stdin
or SIGINT stops the driver, which releases every actor it started. :class:`ClusterCheck` runs the
driver's ``--check`` in the background. Standard library only.
"""
from __future__ import annotations

import collections
import os
import signal
import subprocess
import threading
from pathlib import Path
from typing import IO, Any, Iterator, Mapping, Optional

from ..core.farm import FarmError, FarmEvent, FarmJob
from .worker_client import PACKAGE_DIR

FARM_MODULE = f"{PACKAGE_DIR.name}.engine.farm"
STOP_TIMEOUT_S = 30.0
"""How long the driver gets to release its actors after SIGINT before it is killed."""


class FarmClient:
    """The driver process for one batch: :meth:`events` until ``end``; :meth:`stop` at any time."""

    def __init__(self, python: str, job: FarmJob, *, env: Optional[Mapping[str, str]] = None,
                 package_parent: Path = PACKAGE_DIR.parent, stderr_lines: int = 40) -> None:
        run_env = dict(os.environ if env is None else env)
        run_env["PYTHONPATH"] = os.pathsep.join([str(package_parent), *filter(None, [run_env.get("PYTHONPATH")])])
        run_env.setdefault("PYTHONUNBUFFERED", "1")
        try:
            self._proc: subprocess.Popen[str] = subprocess.Popen(
                [python, "-m", FARM_MODULE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True, encoding="utf-8", env=run_env, cwd=str(package_parent))
        except OSError as exc:
            raise FarmError(f"cannot start the Ray driver with '{python}': {exc}",
                            "choose a worker runtime that has torch and ray installed") from None
        self._stderr: collections.deque[str] = collections.deque(maxlen=stderr_lines)
        self._stderr_thread = threading.Thread(target=self._keep_stderr, args=(self._proc.stderr,), daemon=True)
        self._stderr_thread.start()
        assert self._proc.stdin is not None
        self._proc.stdin.write(job.encode() + "\n")
        self._proc.stdin.flush()  # stdin stays open: its end tells the driver to stop

    def _keep_stderr(self, stream: Optional[IO[str]]) -> None:
        assert stream is not None
        for line in stream:
            self._stderr.append(line.rstrip("\n"))

    def events(self) -> Iterator[FarmEvent]:
        """The driver's events as they come; a driver that dies without ``end`` gives an ``error``."""
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            if not line.strip():
                continue
            try:
                event = FarmEvent.decode(line)
            except (ValueError, TypeError):
                self._stderr.append(f"[stdout] {line.rstrip()}")
                continue
            yield event
            if event.kind == "end":
                return
        code = self._proc.wait()
        self._stderr_thread.join(timeout=5)
        tail = " | ".join(list(self._stderr)[-12:])
        yield FarmEvent(kind="error", message=f"the Ray driver exited (code {code}) before the batch ended: {tail}",
                        hint="see the driver's last lines; is ray installed in the worker runtime?")
        yield FarmEvent(kind="end")

    def interrupt(self) -> None:
        """Ask the driver to stop (SIGINT, as Ctrl-C): it releases its actors, then sends ``end``."""
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)

    def stop(self) -> None:
        """Stop the driver and wait for it (it releases its actors); kill it if it does not end in time."""
        proc = self._proc
        if proc.poll() is None:
            try:
                self.interrupt()
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdin is not None:
            try:
                proc.stdin.close()
            except OSError:
                pass


class ClusterCheck:
    """``--check ADDRESS`` in the background (the preferences' Check): :attr:`finished` never blocks;
    then :attr:`summary` (one line: nodes, GPUs, free GPU memory, versions) or :attr:`error`."""

    def __init__(self, python: str, address: str, *, env: Optional[Mapping[str, str]] = None,
                 package_parent: Path = PACKAGE_DIR.parent, timeout: float = 180.0) -> None:
        run_env = dict(os.environ if env is None else env)
        run_env["PYTHONPATH"] = os.pathsep.join([str(package_parent), *filter(None, [run_env.get("PYTHONPATH")])])
        self.summary = ""
        self.error: Optional[FarmError] = None
        self.detail: dict[str, Any] = {}
        self._done = threading.Event()
        argv = [python, "-m", FARM_MODULE, "--check", address]
        threading.Thread(target=self._run, args=(argv, run_env, str(package_parent), timeout), daemon=True).start()

    @property
    def finished(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: Optional[float] = None) -> bool:
        return self._done.wait(timeout)

    def _run(self, argv: list[str], env: dict[str, str], cwd: str, timeout: float) -> None:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, encoding="utf-8", env=env, cwd=cwd,
                                  timeout=timeout)
            events = []
            for line in done.stdout.splitlines():
                try:
                    events.append(FarmEvent.decode(line))
                except (ValueError, TypeError):
                    pass
            found = next((e for e in events if e.kind in ("cluster", "error")), None)
            if found is None:
                tail = " | ".join(done.stderr.strip().splitlines()[-6:])
                self.error = FarmError(f"the cluster check ended without an answer (code {done.returncode}): {tail}",
                                       "is ray installed in the worker runtime?")
            elif found.kind == "error":
                self.error = FarmError(found.message, found.hint)
            else:
                self.detail = found.detail
                self.summary = cluster_summary(found.detail)
        except (OSError, subprocess.TimeoutExpired) as exc:
            self.error = FarmError(f"the cluster check could not run: {exc}", "check the worker runtime's Python")
        finally:
            self._done.set()


def cluster_summary(detail: Mapping[str, Any]) -> str:
    """``2 nodes, 3 GPUs (41.2 GiB free), 16 CPUs · Ray 2.60.0 · torch 2.13.0``; nodes whose versions
    differ from the first's or that did not answer are named."""
    nodes = list(detail.get("nodes", []))
    free = [b for n in nodes for b in (n.get("gpu_free") or [])]
    gpus = int(detail.get("gpus", 0))
    text = f"{len(nodes)} node{'s' if len(nodes) != 1 else ''}, {gpus} GPU{'s' if gpus != 1 else ''}"
    if free:
        text += f" ({sum(free) / 1024 ** 3:.1f} GiB free)"
    text += f", {int(detail.get('cpus', 0))} CPUs · Ray {detail.get('ray', '?')}"
    torches = sorted({str(n.get("torch") or "none") for n in nodes if "error" not in n})
    text += f" · torch {', '.join(torches) if torches else '?'}"
    rays = sorted({str(n.get("ray")) for n in nodes if "error" not in n} - {str(detail.get("ray"))})
    if rays:
        text += f" · nodes with another Ray: {', '.join(rays)}"
    silent = [str(n.get("address", "?")) for n in nodes if "error" in n]
    if silent:
        text += f" · no answer from {', '.join(silent)}"
    return text
