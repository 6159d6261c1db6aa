"""The Blender side's handle on the worker process — no bpy, no torch.

:class:`WorkerClient` starts ``<python> -m mvdust3r_blender.engine.worker`` with ``PYTHONPATH`` set to
the directory that contains this package (in an installed extension: the extension repository), so
the worker runs from the extension's own files with only the runtime's Python.

A request is sent by :meth:`WorkerClient.send` (or the convenience methods, which return its id)
and followed through its :class:`~.requests.RequestHandle` (:meth:`WorkerClient.follow`): its
``events()`` never block (Blender's main thread: a timer or modal operator), its ``wait()`` blocks
until the final event and raises :class:`WorkerError` for an error (scripts, the command line).
:meth:`WorkerClient.wait` is the same wait by id; :meth:`WorkerClient.poll` hands out the events no
handle follows.

A reader thread decodes the worker's stdout into typed events; another keeps the last lines of its
stderr (and copies them to a log file when asked) so that a dead worker's last words reach the user:
when the process ends unexpectedly, the client produces an ``error`` event with code
``worker_exited``, the exit code and those lines.
"""
from __future__ import annotations

import collections
import itertools
import os
import queue
import signal
import subprocess
import threading
from pathlib import Path
from typing import IO, Callable, Mapping, Optional, Sequence

from ..core.confidence import ConfidenceCut
from ..core.errors import mentions_out_of_memory
from ..core.options import DEFAULT_PRECISION, ReconstructOptions
from ..core.protocol.events import FINAL_EVENTS, ErrorEvent, Event, ReadyEvent, decode_event
from ..core.protocol.requests import (CancelRequest, HelloRequest, LoadRequest, ReconstructRequest, ReleaseRequest,
                                      Request, ShutdownRequest)
from ..core.protocol.wire import (MAX_LINE_CHARS, PROTOCOL_VERSION, LineTooLong, ProtocolError, encode, read_line,
                                  skip_line)
from .requests import Mailboxes, RequestHandle, WorkerError

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # the extension's package (this module is in its client/)
WORKER_MODULE = f"{PACKAGE_DIR.name}.engine.worker"
EXIT_TAIL_LINES = 12  # stderr lines quoted in a worker_exited error
_REQUEST_IDS = itertools.count(1)  # one sequence for every client of this process
STDERR_LINE_CHARS = 8192  # a longer stderr line is kept cut to this many characters
LOG_BYTES = 8 * 1024 ** 2  # the most one worker writes to the log file; an older log above half is moved aside
# How a process dies when memory runs out where Python cannot raise MemoryError: the kernel's
# out-of-memory killer (SIGKILL), a failed allocation in C code (SIGSEGV, SIGBUS), std::bad_alloc (SIGABRT).
_MEMORY_SIGNALS = {int(getattr(signal, name)): name for name in ("SIGKILL", "SIGSEGV", "SIGBUS", "SIGABRT")
                   if hasattr(signal, name)}


class WorkerClient:
    """One worker process and its event stream.

    `python`: the runtime's interpreter (torch installed there). `env`: the worker's environment
    (default: this process's); ``PYTHONPATH`` gets `package_parent` in front. `log_path`: a file
    that receives the worker's stderr (appended; at most `log_bytes` a worker, so that a worker —
    or a remote — that writes without end never fills the disk; a log already above half of
    `log_bytes` is moved aside to ``<name>.1`` first). `stderr_lines`: how many stderr lines to keep.
    """

    def __init__(self, python: str | os.PathLike[str], *, env: Optional[Mapping[str, str]] = None,
                 package_parent: Path = PACKAGE_DIR.parent, log_path: Optional[Path] = None,
                 stderr_lines: int = 200, log_bytes: int = LOG_BYTES) -> None:
        self.python = Path(python)
        self.package_parent = Path(package_parent)
        self.log_path = log_path
        self.log_bytes = log_bytes
        self._env = dict(os.environ if env is None else env)
        self._proc: Optional[subprocess.Popen[str]] = None
        self.mailboxes = Mailboxes()
        self._events: queue.Queue[Event] = self.mailboxes.queue  # what the client's threads put events into
        self._send_lock = threading.Lock()
        self._stderr: collections.deque[str] = collections.deque(maxlen=stderr_lines)
        self._stderr_done = threading.Event()
        self._exited = threading.Event()
        self._stopping = False
        self._answered = False  # whether the worker has answered a request (it has finished starting)
        self._ready = False  # whether its ready event came (lines before it are its Python's chatter)
        self._violation = ""  # how the peer broke the protocol (the connection was then closed)
        self._issued: set[str] = set()  # ids of requests sent and not yet answered: other ids' events are dropped
        self._issued_lock = threading.Lock()
        self._open = threading.Event()  # requests may be written (a remote client opens it after its handshake)
        self._backlog: list[str] = []   # lines sent before then, written in order when it opens

    # -- process --------------------------------------------------------------------------------

    def start(self) -> None:
        """Spawn the worker; returns at once (its ``ready`` event follows when it is reading)."""
        if self.alive:
            raise RuntimeError("the worker is already running")
        argv, env = self._command()
        self.mailboxes = Mailboxes()
        self._events = self.mailboxes.queue
        self._stderr.clear()
        self._stderr_done.clear()
        self._exited.clear()
        self._stopping = False
        self._backlog = []
        self._open.clear()
        self._answered = False
        self._ready = False
        self._violation = ""
        self._issued = set()
        self._proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, cwd=self.package_parent, env=env, text=True, encoding="utf-8",
            errors="replace", bufsize=1,
            # Its own session / no console window: Ctrl-C in Blender's terminal must not kill it.
            start_new_session=os.name == "posix", creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0))
        assert self._proc.stdout is not None and self._proc.stderr is not None
        threading.Thread(target=self._drain_stderr, args=(self._proc.stderr,), name="mvdust3r-worker-stderr",
                         daemon=True).start()
        threading.Thread(target=self._read_events, args=(self._proc, self._proc.stdout),
                         name="mvdust3r-worker-events", daemon=True).start()

    def _command(self) -> tuple[list[str], dict[str, str]]:
        """The worker's command line and environment (a remote client runs ``ssh`` instead)."""
        if not self.python.is_file():
            raise FileNotFoundError(f"worker Python {self.python} does not exist: set up the runtime first")
        env = dict(self._env)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(self.package_parent), env.get("PYTHONPATH")) if p)
        env.update(PYTHONIOENCODING="utf-8", PYTHONUNBUFFERED="1")
        return [str(self.python), "-m", WORKER_MODULE], env

    def _handshake(self, proc: subprocess.Popen[str], stdout: IO[str]) -> None:
        """Run on the event thread before events are read; then requests may be written. A remote
        client installs its engine here (see :mod:`.remote`)."""
        self._open_requests(proc)

    def _open_requests(self, proc: subprocess.Popen[str]) -> None:
        """Write the requests sent so far, then let :meth:`send` write directly."""
        with self._send_lock:
            try:
                if proc.stdin is not None:
                    proc.stdin.write("".join(self._backlog))
                    proc.stdin.flush()
            except (BrokenPipeError, OSError, ValueError):
                pass  # it died: the event thread reports it
            self._backlog = []
            self._open.set()

    def _ended(self) -> None:
        """Called on the event thread when the worker's stdout ends (a remote client removes partial files)."""

    def _new_id(self) -> str:
        """A request id never used before in this process, whichever client sends it (a Check's
        worker and a run's must not both say ``r1``)."""
        return f"r{next(_REQUEST_IDS)}"

    def _received(self, event: Event) -> list[Event]:
        """What the event thread queues for `event` (a remote client turns result files into local ones)."""
        return [event]

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> Optional[int]:
        return self._proc.pid if self._proc is not None else None

    @property
    def returncode(self) -> Optional[int]:
        return self._proc.poll() if self._proc is not None else None

    def stderr_tail(self, lines: int = 20) -> list[str]:
        """The worker's last `lines` stderr lines (its log), oldest first."""
        return list(self._stderr)[-lines:]

    def shutdown(self, timeout: float = 10.0) -> Optional[int]:
        """Ask the worker to stop (cancelling what runs), wait up to `timeout` s, then close its
        stdin and at last kill it. Returns the exit code (None if it was never started)."""
        proc = self._proc
        if proc is None:
            return None
        self._stopping = True
        if proc.poll() is None:
            try:
                self.send(ShutdownRequest())
            except WorkerError:
                pass  # it died meanwhile: collected below
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._close_stdin(proc)
                try:
                    proc.wait(2.0)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self._close_stdin(proc)
        return proc.returncode

    def __enter__(self) -> "WorkerClient":
        if not self.alive:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # -- requests -------------------------------------------------------------------------------

    def send(self, request: Request) -> str:
        """Write `request` (giving it an id when it has none); returns its id. Never blocks on the worker."""
        if not request.id:
            request.id = self._new_id()
        line = encode(request) + "\n"
        with self._issued_lock:
            self._issued.add(request.id)
        with self._send_lock:
            proc = self._proc
            if proc is None or proc.stdin is None or proc.poll() is not None:
                raise WorkerError(self._exit_event(proc.poll() if proc else None))
            if not self._open.is_set():
                self._backlog.append(line)
                return request.id
            try:
                proc.stdin.write(line)
                proc.stdin.flush()
            except (BrokenPipeError, OSError, ValueError):
                raise WorkerError(self._exit_event(proc.poll())) from None
        return request.id

    def hello(self) -> str:
        return self.send(HelloRequest(protocol=PROTOCOL_VERSION))

    def load(self, checkpoint: str | os.PathLike[str], device: str = "auto", dtype: Optional[str] = None,
             precision: str = DEFAULT_PRECISION) -> str:
        return self.send(LoadRequest(checkpoint=str(checkpoint), device=device, dtype=dtype, precision=precision))

    def reconstruct(self, photos: Sequence[str | os.PathLike[str]], output: str | os.PathLike[str],
                    options: ReconstructOptions = ReconstructOptions(), *,
                    checkpoint: Optional[str | os.PathLike[str]] = None, device: str = "auto",
                    dtype: Optional[str] = None, exports: Sequence[str] = (),
                    export_dir: Optional[str | os.PathLike[str]] = None,
                    export_cut: ConfidenceCut = ConfidenceCut()) -> str:
        """Reconstruct `photos` into the bundle `output`; with `checkpoint`, load it first if needed.
        `exports` (names from `core.exports.FORMATS`) are written by the worker into `export_dir`,
        leaving out the points `export_cut` drops."""
        return self.send(ReconstructRequest(
            photos=[str(Path(p).absolute()) for p in photos], output=str(Path(output).absolute()),
            options=options, checkpoint=str(checkpoint) if checkpoint is not None else None,
            device=device, dtype=dtype, exports=list(exports),
            export_dir=str(Path(export_dir).absolute()) if export_dir is not None else None,
            export_cut=export_cut))

    def cancel(self, target: Optional[str] = None) -> str:
        """Cancel request `target` (or everything pending when None)."""
        return self.send(CancelRequest(target=target))

    def release(self) -> str:
        return self.send(ReleaseRequest())

    # -- events ---------------------------------------------------------------------------------

    def follow(self, request_id: str) -> RequestHandle:
        """The handle of request `request_id` (sent by this client): its events from the first on."""
        self.mailboxes.open(request_id)
        return RequestHandle(self, request_id)

    def submit(self, request: Request) -> RequestHandle:
        """Send `request` and follow it."""
        return self.follow(self.send(request))

    def poll(self) -> list[Event]:
        """Every event no handle follows (``ready``, acknowledgements, a dead worker's error)
        received since the last call, oldest first; never blocks."""
        return self.mailboxes.unclaimed()

    def wait(self, request_id: str, timeout: Optional[float] = None,
             on_event: Optional[Callable[[Event], None]] = None) -> Event:
        """Follow request `request_id` until its final event (:meth:`RequestHandle.wait`), then forget it."""
        handle = self.follow(request_id)
        try:
            return handle.wait(timeout, on_event)
        finally:
            handle.close()

    def gone(self) -> Optional[ErrorEvent]:
        """Why the worker is gone, once its stream has ended and every event it left is sorted; else None."""
        if self._exited.is_set() and self._events.empty():
            return self._exit_event(self.returncode)
        return None

    # -- threads --------------------------------------------------------------------------------

    def _read_events(self, proc: subprocess.Popen[str], stdout: IO[str]) -> None:
        try:
            self._handshake(proc, stdout)
            while line := read_line(stdout):
                self._read_event(line)
        except LineTooLong as exc:  # the peer does not speak the protocol: bounded memory, and the end
            self._violation = f"sent a line longer than {MAX_LINE_CHARS} characters (a message is at most that)"
            self._stderr.append(f"[client] {exc}; the connection was closed")
            end_process(proc)
        self._ended()
        # stdout closed: the worker is exiting. Collect its code and last stderr lines.
        try:
            code: Optional[int] = proc.wait(10.0)
        except subprocess.TimeoutExpired:
            code = None
        self._stderr_done.wait(2.0)
        if not (self._stopping and code == 0):
            self._events.put(self._exit_event(code))
        self._exited.set()

    def _read_event(self, line: str) -> None:
        if not line.strip():
            return
        try:
            event = decode_event(line)
        except ProtocolError as exc:
            if not self._ready:  # a banner its Python (sitecustomize, a login script) printed before the worker ran
                self._stderr.append(f"[stdout before the worker was ready] {line.strip()[:200]}")
                return
            self._events.put(ErrorEvent(code="protocol", message=f"unreadable line from the worker: {exc}",
                                        hint="something wrote to the worker's stdout; see its log"))
            return
        if event is None:
            self._stderr.append(f"[client] ignored an event of a newer protocol: {line.strip()[:200]}")
            return
        if event.id is not None:  # only the requests this client sent, until their final event
            with self._issued_lock:  # not the send lock: a send blocked on a full pipe must not stop reading
                if event.id not in self._issued:
                    return
                if isinstance(event, FINAL_EVENTS) or isinstance(event, ErrorEvent):
                    self._issued.discard(event.id)
        if isinstance(event, ReadyEvent):
            self._ready = True
            if event.protocol != PROTOCOL_VERSION:
                self._events.put(ErrorEvent(code="protocol", message=f"the worker speaks protocol {event.protocol}, "
                                                                     f"this add-on {PROTOCOL_VERSION}",
                                            hint="run the worker from the same extension version as the add-on"))
        self._answered = self._answered or not isinstance(event, ReadyEvent)
        for received in self._received(event):
            self._events.put(received)

    def _drain_stderr(self, stderr: IO[str]) -> None:
        log = self._open_log()
        budget = self.log_bytes
        try:
            while True:
                try:
                    line = read_line(stderr, STDERR_LINE_CHARS)
                except LineTooLong:  # dropped: a peer's endless line never fills this memory
                    skip_line(stderr, STDERR_LINE_CHARS)
                    line = f"[a line longer than {STDERR_LINE_CHARS} characters was dropped]\n"
                if not line:
                    break
                self._stderr.append(line.rstrip("\n"))
                if log is not None:
                    budget -= len(line.encode("utf-8", "replace"))
                    if budget < 0:  # the rest is not kept on disk (the last lines stay in memory)
                        log.write(f"[client] the worker wrote more than {self.log_bytes / 2 ** 20:g} MiB to its log: "
                                  "the rest of its output is not kept\n")
                        log.close()
                        log = None
                        continue
                    log.write(line)
                    log.flush()
        finally:
            if log is not None:
                log.close()
            self._stderr_done.set()

    def _exit_event(self, code: Optional[int]) -> ErrorEvent:
        if code is None and self._proc is None:
            return ErrorEvent(code="worker_exited", message="the worker is not running", hint="start it first")
        if self._violation:
            return ErrorEvent(code="worker_exited", message=f"the worker {self._violation}; it was stopped",
                              hint="it is not this add-on's worker, or something corrupts its output; see its log")
        status = "is not responding" if code is None else f"exited with code {code}"
        tail = self.stderr_tail(EXIT_TAIL_LINES)
        last_words = "\n".join(tail) if tail else "it wrote nothing to stderr"
        memory = self._memory_death(code, tail)
        if memory:
            return ErrorEvent(code="worker_exited", message=f"the worker {memory} ({status})",
                              hint="close other programs or raise the memory limit Blender runs under (ulimit -v, "
                                   "a container's limit), then run again; its last log lines:\n" + last_words)
        return ErrorEvent(code="worker_exited", message=f"the worker {status}", hint=last_words)

    def _memory_death(self, code: Optional[int], tail: list[str]) -> str:
        """``ran out of memory [while starting]`` when the log says so, or when the process died of
        a signal memory exhaustion sends before it had answered anything; else ``""``. A signal
        after the worker has answered (someone may have killed it) is left as its exit code."""
        said = any(mentions_out_of_memory(line) for line in tail)
        signal_name = _MEMORY_SIGNALS.get(-code, "") if code is not None and code < 0 else ""
        starting = "" if self._answered else " while starting"
        if said and (signal_name or not self._answered or (code is not None and code > 0)):
            return f"ran out of memory{starting}"  # its last words say so (libgomp, OpenBLAS exit with code 1)
        if signal_name and not self._answered:
            return f"most likely ran out of memory while starting (it died of {signal_name})"
        return ""

    def _open_log(self) -> Optional[IO[str]]:
        """The log file to append this worker's stderr to (None without one); a log already over half
        of :attr:`log_bytes` (earlier workers') is moved aside to ``<name>.1``, replacing an older one:
        the two files never hold more than three times :attr:`log_bytes`."""
        if self.log_path is None:
            return None
        try:
            if self.log_path.stat().st_size > self.log_bytes // 2:
                os.replace(self.log_path, self.log_path.with_name(self.log_path.name + ".1"))
        except OSError:
            pass  # no log yet, or it cannot be moved: appending still works
        return open(self.log_path, "a", encoding="utf-8")

    @staticmethod
    def _close_stdin(proc: subprocess.Popen[str]) -> None:
        if proc.stdin is not None and not proc.stdin.closed:
            try:
                proc.stdin.close()
            except OSError:
                pass



def end_process(proc: subprocess.Popen[str]) -> None:
    """Kill `proc` (a worker or its ssh) that broke the protocol; its stdout then ends."""
    try:
        proc.kill()
    except OSError:
        pass
