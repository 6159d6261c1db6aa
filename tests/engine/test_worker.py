"""The worker process and its client, for real: every test spawns ``python -m mvdust3r_blender.engine.worker``.

The interpreter is ``$MVDUST3R_WORKER_PYTHON`` (build.py sets it to the engine venv) or this one.
Model tests load the golden reduced checkpoint; photos are made here.
"""
from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Iterator

import pytest
import torch
from PIL import Image

from mvdust3r_blender.core.protocol.events import (AckEvent, ErrorEvent, Event, HelloEvent, LoadedEvent, ModelInfo,
                                                   ProgressEvent, ReadyEvent, ResultEvent, decode_event)
from mvdust3r_blender.core.protocol.requests import (HelloRequest, LoadRequest, ReconstructRequest, ReleaseRequest,
                                                     ShutdownRequest, decode_request)
from mvdust3r_blender.core.protocol.wire import MAX_LINE_CHARS, PROTOCOL_VERSION, encode
from mvdust3r_blender.core.bundle import read_bundle
from mvdust3r_blender.core.options import ReconstructOptions
from mvdust3r_blender.client.worker_client import PACKAGE_DIR, WORKER_MODULE, WorkerClient, WorkerError
from tests.helpers.photos import smooth_photos

PYTHON = os.environ.get("MVDUST3R_WORKER_PYTHON", sys.executable)
TIMEOUT = 60.0  # generous ceiling for a request on a loaded CI machine; never reached when things work
WORKER_ENV: dict[str, str] = {}  # filled by the autouse fixture below


@pytest.fixture(scope="module", autouse=True)
def worker_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """One compute thread (the test machine is shared, and a single thread keeps the worker's memory
    map stable for the out-of-memory test); the checkpoint cache in a temporary folder."""
    WORKER_ENV.update({**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": "",
                       "MVDUST3R_CACHE_DIR": str(tmp_path_factory.mktemp("checkpoint-cache"))})
    yield WORKER_ENV
    WORKER_ENV.clear()


def start_worker() -> WorkerClient:
    worker = WorkerClient(PYTHON, env=WORKER_ENV)
    worker.start()
    return worker


@pytest.fixture
def client() -> Iterator[WorkerClient]:
    worker = start_worker()
    yield worker
    code = worker.shutdown(timeout=10)
    assert not worker.alive
    assert code == 0, worker.stderr_tail()


@pytest.fixture
def checkpoint(golden: Path) -> Path:
    path = golden / "mvd_reduced_ckpt.pth"
    assert path.is_file(), f"golden checkpoint missing: {path}"
    return path


def raw_session(lines: list[str | bytes], *args: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess[bytes]:
    """Feed `lines` to a fresh worker, close its stdin and collect everything it wrote."""
    command = list(args) or ["-m", WORKER_MODULE]
    data = b"".join((line.encode() if isinstance(line, str) else line) + b"\n" for line in lines)
    env = {**WORKER_ENV, "PYTHONPATH": str(PACKAGE_DIR.parent)}
    return subprocess.run([PYTHON, *command], input=data, capture_output=True, timeout=timeout, env=env,
                          cwd=PACKAGE_DIR.parent)


def events_of(stdout: bytes) -> list[Event]:
    """Decode every stdout line; a line that is not a protocol event fails the test."""
    events = []
    for line in stdout.decode("utf-8").splitlines():
        event = decode_event(line)
        assert event is not None, f"unknown event line {line!r}"
        events.append(event)
    return events


# -- protocol and process behaviour (no model) ----------------------------------------------------


def test_hello_reports_versions_and_devices(client: WorkerClient) -> None:
    answer = client.wait(client.hello(), timeout=TIMEOUT)
    assert isinstance(answer, HelloEvent)
    assert answer.protocol == PROTOCOL_VERSION and answer.pid == client.pid
    assert answer.torch == torch.__version__ and answer.python == ".".join(map(str, sys.version_info[:3]))
    manifest = tomllib.loads((PACKAGE_DIR.parent / "blender_manifest.toml").read_text(encoding="utf-8"))
    assert answer.extension == manifest["version"]
    assert answer.devices[-1].name == "cpu" and answer.devices[-1].memory > 0
    assert answer.model is None and answer.loads == 0
    ready = [e for e in client.poll() if isinstance(e, ReadyEvent)]
    assert len(ready) == 1 and ready[0].pid == client.pid  # kept for poll() while wait() looked for hello


def test_hello_from_another_protocol_version_is_refused(client: WorkerClient) -> None:
    with pytest.raises(WorkerError) as caught:
        client.wait(client.send(HelloRequest(protocol=PROTOCOL_VERSION + 1)), timeout=TIMEOUT)
    assert caught.value.code == "protocol" and "same extension version" in caught.value.hint
    assert isinstance(client.wait(client.hello(), timeout=TIMEOUT), HelloEvent)


def test_bad_requests_are_answered_and_the_worker_keeps_serving() -> None:
    run = raw_session([
        "this is not json",
        b"\xff\xfe garbage bytes",
        "",
        '["hello"]',
        '{"type": "explode", "id": "x1"}',
        '{"type": "hello"}',
        '{"type": "load", "id": "x2"}',
        '{"type": "load", "id": "x3", "checkpoint": 42}',
        '{"type": "reconstruct", "id": "x4", "photos": ["/a.png"], "output": "/o.npz", "colour": 1}',
        '{"type": "hello", "id": "last"}',
    ])
    assert run.returncode == 0, run.stderr.decode()
    events = events_of(run.stdout)
    assert isinstance(events[0], ReadyEvent)
    errors = [e for e in events if isinstance(e, ErrorEvent)]
    assert [e.code for e in errors] == ["bad_request"] * 8
    assert [e.id for e in errors] == [None, None, None, "x1", None, "x2", "x3", "x4"]
    messages = " | ".join(e.message for e in errors)
    for fragment in ("not a JSON line", "expected a JSON object", "unknown request type 'explode'",
                     "hello request has no 'id'", "missing field 'checkpoint'", "'checkpoint' must be a string",
                     "unknown field(s) colour"):
        assert fragment in messages
    assert isinstance(events[-1], HelloEvent) and events[-1].id == "last"


def test_hostile_request_lines_are_answered_without_unbounded_work() -> None:
    """docs/worker.md, threat model: a line nested 1000 deep (2 KB), a 5000-digit integer and a line
    longer than a message may be are each one bad_request; the worker serves on."""
    run = raw_session([
        "[" * 1000 + "]" * 1000,
        '{"type": "hello", "id": "deep", "protocol": ' + "[" * 1000 + "]" * 1000 + "}",
        '{"type": "hello", "id": "digits", "protocol": ' + "9" * 5000 + "}",
        '{"type": "hello", "id": "long", "x": "' + "a" * (MAX_LINE_CHARS + 10) + '"}',
        '{"type": "hello", "id": "last"}',
    ])
    assert run.returncode == 0, run.stderr.decode()[-2000:]
    events = events_of(run.stdout)
    errors = [e for e in events if isinstance(e, ErrorEvent)]
    assert [e.code for e in errors] == ["bad_request"] * 4, errors
    messages = " | ".join(e.message for e in errors)
    for fragment in ("nested 1000 levels deep", "nested 1001 levels deep", "5000 digits", "longer than"):
        assert fragment in messages, messages
    assert isinstance(events[-1], HelloEvent) and events[-1].id == "last"
    assert b"Traceback" not in run.stderr


def test_stdout_carries_only_protocol_lines_when_libraries_print() -> None:
    # Everything that usually corrupts a pipe protocol, done inside the worker after it took its
    # stdout: print(), the interpreter's original sys.__stdout__, a raw write to fd 1 and C printf.
    noisy_main = (
        "import ctypes, os, sys\n"
        "from mvdust3r_blender.engine import worker\n"
        "take = worker.take_stdout\n"
        "def noisy():\n"
        "    out = take()\n"
        "    print('NOISE print')\n"
        "    print('NOISE sys.__stdout__', file=sys.__stdout__, flush=True)\n"
        "    os.write(1, b'NOISE fd1\\n')\n"
        "    libc = ctypes.CDLL(None)\n"
        "    libc.printf(b'NOISE printf\\n')\n"
        "    libc.fflush(None)\n"
        "    return out\n"
        "worker.take_stdout = noisy\n"
        "sys.exit(worker.main())\n"
    )
    run = raw_session(['{"type": "hello", "id": "h"}'], "-c", noisy_main)
    assert run.returncode == 0, run.stderr.decode()
    assert b"NOISE" not in run.stdout
    events = events_of(run.stdout)
    assert [type(e) for e in events] == [ReadyEvent, HelloEvent]
    stderr = run.stderr.decode()
    for noise in ("NOISE print", "NOISE sys.__stdout__", "NOISE fd1", "NOISE printf"):
        assert noise in stderr


def test_worker_exits_when_stdin_closes() -> None:
    env = {**WORKER_ENV, "PYTHONPATH": str(PACKAGE_DIR.parent)}
    proc = subprocess.Popen([PYTHON, "-m", WORKER_MODULE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        ready = decode_event(proc.stdout.readline())
        assert isinstance(ready, ReadyEvent) and ready.pid == proc.pid
        proc.stdin.close()
        assert proc.wait(timeout=TIMEOUT) == 0
        assert b"stdin closed" in proc.stderr.read()  # type: ignore[union-attr]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_shutdown_is_acknowledged_and_exits_cleanly(client: WorkerClient) -> None:
    request = client.send(ShutdownRequest())
    ack = client.wait(request, timeout=TIMEOUT)
    assert isinstance(ack, AckEvent) and ack.request == "shutdown"
    assert client.shutdown(timeout=TIMEOUT) == 0
    time.sleep(0.2)  # the reader thread has seen EOF: a clean exit adds no error event
    assert not [e for e in client.poll() if isinstance(e, ErrorEvent)]


def test_a_worker_that_cannot_start_reports_its_exit_code_and_stderr(tmp_path: Path) -> None:
    # The runtime was pointed at a folder without the package: the import fails at once.
    client = WorkerClient(PYTHON, env=WORKER_ENV, package_parent=tmp_path)
    client.start()
    with pytest.raises(WorkerError) as caught:
        client.wait(client.hello(), timeout=TIMEOUT)
    assert caught.value.code == "worker_exited"
    assert caught.value.message == "the worker exited with code 1"
    assert "No module named 'mvdust3r_blender'" in caught.value.hint
    assert not client.alive
    with pytest.raises(WorkerError, match="exited with code 1"):
        client.hello()
    client.shutdown()


def test_a_killed_worker_gives_an_error_event_with_its_last_log_lines() -> None:
    client = start_worker()
    client.wait(client.send(ReleaseRequest()), timeout=TIMEOUT)
    assert client.pid is not None
    os.kill(client.pid, signal.SIGKILL)
    deadline = time.monotonic() + TIMEOUT
    exited: list[ErrorEvent] = []
    while not exited and time.monotonic() < deadline:
        exited = [e for e in client.poll() if isinstance(e, ErrorEvent) and e.code == "worker_exited"]
        time.sleep(0.05)
    assert exited, "no worker_exited event after SIGKILL"
    assert exited[0].message == f"the worker exited with code {-signal.SIGKILL}"
    assert client.returncode == -signal.SIGKILL
    assert "ready: pid" in exited[0].hint  # the worker's log lines, for the UI's error report
    with pytest.raises(WorkerError):
        client.hello()
    assert client.shutdown() == -signal.SIGKILL


def test_a_runtime_without_the_packages_is_reported_not_crashed(tmp_path: Path) -> None:
    # A real interpreter with nothing installed: the worker itself needs only the standard library.
    bare = tmp_path / "bare"
    subprocess.run([PYTHON, "-m", "venv", "--without-pip", str(bare)], check=True, timeout=TIMEOUT)
    client = WorkerClient(bare / ("Scripts" if os.name == "nt" else "bin") / "python", env=WORKER_ENV)
    client.start()
    try:
        with pytest.raises(WorkerError) as caught:
            client.wait(client.hello(), timeout=TIMEOUT)
        assert caught.value.code == "runtime" and "cannot import 'numpy'" in caught.value.message
        assert "install the runtime's packages" in caught.value.hint
        with pytest.raises(WorkerError) as caught:
            client.wait(client.load(tmp_path / "model.pth", device="cpu"), timeout=TIMEOUT)
        assert caught.value.code == "runtime" and "cannot import 'torch'" in caught.value.message
    finally:
        assert client.shutdown(timeout=10) == 0, client.stderr_tail()


def test_client_refuses_a_missing_interpreter(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        WorkerClient(tmp_path / "no-python").start()


# -- model requests (golden reduced checkpoint) ---------------------------------------------------


@pytest.fixture(scope="module")
def served(worker_env: dict[str, str], golden: Path) -> Iterator[WorkerClient]:
    """One worker with the golden MV-DUSt3R loaded, shared by the tests that leave it loaded."""
    worker = start_worker()
    loaded = worker.wait(worker.load(golden / "mvd_reduced_ckpt.pth", device="cpu"), timeout=TIMEOUT)
    assert isinstance(loaded, LoadedEvent) and not loaded.reused
    yield worker
    assert worker.shutdown(timeout=10) == 0, worker.stderr_tail()


@pytest.fixture(scope="module")
def many_photos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """64 photos of 1000×750: loading them takes about a second or more, with a cancel check
    before each one (tens of milliseconds apart)."""
    folder = tmp_path_factory.mktemp("many")
    (first,) = smooth_photos(folder, 1, size=(1000, 750))
    copies = [first]
    for i in range(1, 64):
        copies.append(folder / f"copy_{i:03d}.png")
        shutil.copyfile(first, copies[-1])
    return copies


def test_load_reports_the_model_and_reuses_it(served: WorkerClient, checkpoint: Path) -> None:
    again = served.wait(served.load(checkpoint, device="cpu"), timeout=TIMEOUT)
    assert isinstance(again, LoadedEvent)
    assert again.reused and again.loads == 1
    assert again.model == ModelInfo(checkpoint=str(checkpoint.resolve()), device="cpu", dtype="float32",
                                    variant="MVD")
    hello = served.wait(served.hello(), timeout=TIMEOUT)
    assert isinstance(hello, HelloEvent) and hello.model == again.model and hello.loads == 1


def test_reconstruct_writes_a_bundle_and_keeps_the_model(served: WorkerClient, checkpoint: Path,
                                                         tmp_path: Path) -> None:
    photos = smooth_photos(tmp_path / "photos", 4)
    seen: list[Event] = []
    result = served.wait(served.reconstruct(photos, tmp_path / "out" / "scene.npz"), timeout=TIMEOUT,
                         on_event=seen.append)
    assert isinstance(result, ResultEvent)
    bundle = read_bundle(result.bundle)
    assert result.bundle == str(tmp_path / "out" / "scene.npz")
    assert bundle.num_views == result.views == 4
    assert bundle.photo_paths == [str(ph) for ph in photos]
    assert bundle.meta["checkpoint"] == str(checkpoint.absolute())  # which model made it, for the record
    assert result.points == 4 * bundle.grid_size[0] * bundle.grid_size[1]
    assert result.gaussians and bundle.has_gaussians
    assert {"load", "network", "cameras", "write", "total"} <= set(result.timings)
    stages = [e.stage for e in seen if isinstance(e, ProgressEvent)]
    assert stages[0] == "load" and "network" in stages and "cameras" in stages
    assert seen[-1] is result
    # Same checkpoint, device and dtype given again: no reload (the load counter stays at 1).
    second = served.wait(served.reconstruct(photos, tmp_path / "second.npz", {"gaussians": False},
                                            checkpoint=checkpoint, device="cpu"), timeout=TIMEOUT)
    assert isinstance(second, ResultEvent)
    assert second.model_reused and second.loads == 1 and not second.gaussians
    assert not read_bundle(second.bundle).has_gaussians


def test_reconstruct_writes_the_requested_exports(served: WorkerClient, tmp_path: Path) -> None:
    """The worker writes exports itself (it has Pillow for the COLMAP photos) and reports each file."""
    photos = smooth_photos(tmp_path / "photos", 3)
    seen: list[Event] = []
    result = served.wait(served.reconstruct(photos, tmp_path / "scene.npz", exports=["ply", "colmap"],
                                            export_dir=tmp_path / "exports"), timeout=TIMEOUT, on_event=seen.append)
    assert isinstance(result, ResultEvent)
    assert set(result.exports) == {"ply", "colmap"}
    assert Path(result.exports["ply"]).parent == tmp_path / "exports"
    assert Path(result.exports["ply"]).read_bytes().startswith(b"ply\n")
    assert (Path(result.exports["colmap"]) / "sparse" / "0" / "cameras.txt").is_file()
    assert len(list((Path(result.exports["colmap"]) / "images").iterdir())) == 3
    assert "export" in result.timings
    assert ("export", 1.0) in [(e.stage, e.fraction) for e in seen if isinstance(e, ProgressEvent)]


def test_file_names_that_are_not_utf8_cross_the_protocol_losslessly(served: WorkerClient, tmp_path: Path) -> None:
    """Photos named with bytes that are not UTF-8 (legal on Linux) reach the worker as
    the same files, and come back in the bundle and the exports unchanged."""
    made = smooth_photos(tmp_path / "photos", 3)
    folder = os.fsencode(tmp_path / "photos")
    photos = []
    for i, photo in enumerate(made):
        raw = folder + b"/bad\xff\xfe" + bytes([0x80 + i]) + b".png"
        os.rename(photo, raw)
        photos.append(Path(os.fsdecode(raw)))
    output = Path(os.fsdecode(os.fsencode(tmp_path) + b"/out\xe9/scene.npz"))
    line = encode(ReconstructRequest(id="r", photos=[str(x) for x in photos], output=str(output)))
    assert line.isascii() and decode_request(line.encode("ascii")).photos == [str(x) for x in photos]
    result = served.wait(served.reconstruct(photos, output, exports=["colmap", "ply"],
                                            export_dir=output.parent / "exports"), timeout=TIMEOUT)
    assert isinstance(result, ResultEvent) and result.bundle == str(output)
    assert os.path.isfile(os.fsencode(output))
    bundle = read_bundle(output)
    assert [os.fsencode(x) for x in bundle.photo_paths] == [os.fsencode(x) for x in photos]
    images = Path(result.exports["colmap"]) / "images"
    assert sorted(os.fsencode(x.name) for x in images.iterdir()) == sorted(os.fsencode(x.name) for x in photos)
    listed = (images.parent / "sparse" / "0" / "images.txt").read_bytes()
    assert all(b" " + os.fsencode(x.name) + b"\n" in listed for x in photos)   # the names on disk, as bytes


def test_a_full_disk_is_named_never_a_bug(served: WorkerClient, tmp_path: Path, full_disk: Path) -> None:
    """Exports or the bundle onto a full disk: the file is named, the disk called
    full, no partial file is left, and the worker serves on."""
    photos = smooth_photos(tmp_path / "photos", 3)
    with pytest.raises(WorkerError) as caught:
        served.wait(served.reconstruct(photos, tmp_path / "scene.npz", exports=["ply"], export_dir=full_disk),
                    timeout=TIMEOUT)
    assert (caught.value.code, caught.value.message) == (
        "export", f"cannot write {full_disk / 'points.ply'}: the disk is full (no space left on it)")
    with pytest.raises(WorkerError) as caught:
        served.wait(served.reconstruct(photos, full_disk / "scene.npz"), timeout=TIMEOUT)
    assert (caught.value.code, caught.value.message) == (
        "bundle", f"cannot write {full_disk / 'scene.npz'}: the disk is full (no space left on it)")
    assert "bug" not in caught.value.hint and sorted(p.name for p in full_disk.iterdir()) == ["filler"]
    assert isinstance(served.wait(served.reconstruct(photos, tmp_path / "after.npz"), timeout=TIMEOUT), ResultEvent)


def test_cancel_stops_a_running_reconstruction_within_a_second(served: WorkerClient, many_photos: list[Path],
                                                               tmp_path: Path) -> None:
    output = tmp_path / "cancelled.npz"
    sent: dict[str, float] = {}

    def cancel_once_loading(event: Event) -> None:
        if isinstance(event, ProgressEvent) and event.stage == "load" and event.fraction > 0 and not sent:
            sent[served.cancel(event.id)] = time.perf_counter()

    with pytest.raises(WorkerError) as caught:
        served.wait(served.reconstruct(many_photos, output), timeout=TIMEOUT, on_event=cancel_once_loading)
    latency = time.perf_counter() - next(iter(sent.values()))
    assert caught.value.code == "cancelled"
    assert latency < 1.0, f"cancel took {latency:.3f} s"
    print(f"cancel latency: {latency * 1000:.0f} ms")
    assert not output.exists() and not list(tmp_path.iterdir())  # nothing half-written
    (cancel_id,) = sent
    ack = served.wait(cancel_id, timeout=TIMEOUT)
    assert isinstance(ack, AckEvent) and ack.detail.startswith("cancelling")
    # Still serving, model still loaded.
    photos = smooth_photos(tmp_path / "photos", 4)
    result = served.wait(served.reconstruct(photos, output), timeout=TIMEOUT)
    assert isinstance(result, ResultEvent) and result.model_reused and output.is_file()


def test_cancel_all_covers_running_and_queued_requests(served: WorkerClient, many_photos: list[Path],
                                                       tmp_path: Path) -> None:
    running = served.reconstruct(many_photos, tmp_path / "a.npz")
    queued = served.reconstruct(many_photos[:4], tmp_path / "b.npz")
    ack = served.wait(served.cancel(), timeout=TIMEOUT)
    assert isinstance(ack, AckEvent) and running in ack.detail and queued in ack.detail
    for request_id in (running, queued):
        with pytest.raises(WorkerError) as caught:
            served.wait(request_id, timeout=TIMEOUT)
        assert caught.value.code == "cancelled"
    assert "before it started" in caught.value.message
    unknown = served.wait(served.cancel("r-none"), timeout=TIMEOUT)
    assert isinstance(unknown, AckEvent) and "no pending request 'r-none'" in unknown.detail


@pytest.mark.parametrize("make_request, code, fragment, keeps_model", [
    (lambda d: LoadRequest(checkpoint=str(d / "missing.pth")), "checkpoint", "missing.pth", True),
    # An existing file that is not a checkpoint is refused before the loaded model is freed.
    (lambda d: LoadRequest(checkpoint=str(d / "notes.pth")), "checkpoint", "notes.pth", True),
    (lambda d: LoadRequest(checkpoint=str(d / "missing.pth"), device="tpu"), "device", "unknown device 'tpu'",
     True),
    (lambda d: LoadRequest(checkpoint=str(d / "missing.pth"), dtype="float8"), "bad_request", "unknown dtype",
     True),
    (lambda d: ReconstructRequest(photos=[str(d / "a.png")], output="rel/out.npz"), "bad_request", "not absolute",
     True),
    (lambda d: ReconstructRequest(photos=[], output=str(d / "o.npz"), options={"colour": 1}),  # type: ignore[arg-type]
     "bad_request", "unknown field(s) colour", True),
    (lambda d: ReconstructRequest(photos=[], output=str(d / "o.npz"), options={"pose_drop_percent": 150}),  # type: ignore[arg-type]
     "bad_request", "pose_drop_percent=150.0 is out of range", True),
    (lambda d: ReconstructRequest(photos=[str(d / "a.png"), str(d / "gone.png")], output=str(d / "o.npz")),
     "input", "gone.png: no such file", True),
    (lambda d: ReconstructRequest(photos=[str(d / "a.png"), str(d / "photo_001.png")],
                                  output=str(d / "notes.pth" / "o.npz")), "bundle", "notes.pth/o.npz: " + "{d}/notes.pth is a file, not a folder", True),
    # Export requests are checked before any work (valid photos: nothing else would stop the run).
    (lambda d: ReconstructRequest(photos=[str(d / "a.png"), str(d / "photo_001.png")], output=str(d / "o.npz"),
                                  exports=["ply", "obj"], export_dir=str(d / "x")),
     "bad_request", "unknown export format 'obj'", True),
    (lambda d: ReconstructRequest(photos=[str(d / "a.png"), str(d / "photo_001.png")], output=str(d / "o.npz"),
                                  options=ReconstructOptions(gaussians=False), exports=["gaussians"],
                                  export_dir=str(d / "x")),
     "bad_request", "needs Gaussians", True),
    (lambda d: ReconstructRequest(photos=[str(d / "a.png"), str(d / "photo_001.png")], output=str(d / "o.npz"),
                                  exports=["ply"], export_dir="rel/x"), "bad_request", "not an absolute path", True),
])
def test_bad_values_are_errors_and_the_worker_serves_on(served: WorkerClient, checkpoint: Path, tmp_path: Path,
                                                        make_request, code: str, fragment: str,
                                                        keeps_model: bool) -> None:
    (tmp_path / "notes.pth").write_text("not a checkpoint")
    smooth_photos(tmp_path, 2)
    (tmp_path / "photo_000.png").rename(tmp_path / "a.png")
    with pytest.raises(WorkerError) as caught:
        served.wait(served.send(make_request(tmp_path)), timeout=TIMEOUT)
    assert caught.value.code == code
    assert fragment.format(d=tmp_path) in caught.value.message
    assert caught.value.hint
    assert not (tmp_path / "o.npz").exists()
    hello = served.wait(served.hello(), timeout=TIMEOUT)
    assert isinstance(hello, HelloEvent) and (hello.model is not None) == keeps_model
    reload = served.wait(served.load(checkpoint, device="cpu"), timeout=TIMEOUT)
    assert isinstance(reload, LoadedEvent) and reload.reused == keeps_model


def test_release_frees_the_model_and_a_changed_dtype_reloads(checkpoint: Path, tmp_path: Path) -> None:
    client = start_worker()
    try:
        with pytest.raises(WorkerError) as caught:
            client.wait(client.reconstruct(smooth_photos(tmp_path, 4), tmp_path / "o.npz"), timeout=TIMEOUT)
        assert caught.value.code == "not_loaded"
        first = client.wait(client.load(checkpoint, device="cpu"), timeout=TIMEOUT)
        assert isinstance(first, LoadedEvent) and first.loads == 1
        half = client.wait(client.load(checkpoint, device="cpu", dtype="bfloat16"), timeout=TIMEOUT)
        assert isinstance(half, LoadedEvent) and not half.reused and half.loads == 2
        assert half.model is not None and half.model.dtype == "bfloat16"
        released = client.wait(client.release(), timeout=TIMEOUT)
        assert isinstance(released, AckEvent) and released.detail == "released the MVD on cpu"
        hello = client.wait(client.hello(), timeout=TIMEOUT)
        assert isinstance(hello, HelloEvent) and hello.model is None and hello.loads == 2
        with pytest.raises(WorkerError) as caught:
            client.wait(client.reconstruct(smooth_photos(tmp_path, 4), tmp_path / "o.npz"), timeout=TIMEOUT)
        assert caught.value.code == "not_loaded"
        result = client.wait(client.reconstruct(smooth_photos(tmp_path, 4), tmp_path / "o.npz",
                                                checkpoint=checkpoint, device="cpu"), timeout=TIMEOUT)
        assert isinstance(result, ResultEvent) and not result.model_reused and result.loads == 3
    finally:
        assert client.shutdown(timeout=10) == 0


def test_shutdown_cancels_a_running_reconstruction(checkpoint: Path, many_photos: list[Path],
                                                   tmp_path: Path) -> None:
    client = start_worker()
    request = client.reconstruct(many_photos, tmp_path / "o.npz", checkpoint=checkpoint, device="cpu")
    events: list[Event] = []
    while not any(isinstance(e, ProgressEvent) and e.stage == "load" and e.fraction > 0 for e in events):
        events += client.poll()
        assert client.alive, client.stderr_tail()
        time.sleep(0.02)
    assert client.shutdown(timeout=TIMEOUT) == 0
    time.sleep(0.1)
    events += client.poll()
    (error,) = [e for e in events if isinstance(e, ErrorEvent)]
    assert error.id == request and error.code == "cancelled"
    assert isinstance(events[-1], AckEvent) and events[-1].request == "shutdown"
    assert not (tmp_path / "o.npz").exists()


def _virtual_memory(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmSize for process {pid}")


def test_out_of_memory_is_an_error_and_the_worker_serves_on(checkpoint: Path, tmp_path: Path) -> None:
    """Real memory exhaustion: after a warm-up run the worker's address space is capped (RLIMIT_AS,
    set from outside with prlimit) 64 MiB above its current size; a 6000×6000 photo needs 108 MB to
    decode. Afterwards the same worker, still capped, must answer and reconstruct again."""
    client = start_worker()
    try:
        photos = smooth_photos(tmp_path / "small", 4)
        assert isinstance(client.wait(client.reconstruct(photos, tmp_path / "warm.npz", checkpoint=checkpoint,
                                                         device="cpu"), timeout=TIMEOUT), ResultEvent)
        assert isinstance(client.wait(client.hello(), timeout=TIMEOUT), HelloEvent)
        huge = tmp_path / "huge.png"
        Image.new("RGB", (6000, 6000), (90, 120, 200)).save(huge, compress_level=1)
        assert client.pid is not None
        cap = _virtual_memory(client.pid) + (64 << 20)
        resource.prlimit(client.pid, resource.RLIMIT_AS, (cap, cap))
        with pytest.raises(WorkerError) as caught:
            client.wait(client.reconstruct([*photos[:3], huge], tmp_path / "huge.npz"), timeout=TIMEOUT)
        assert caught.value.code == "out_of_memory", caught.value
        assert "ran out of memory on cpu" in caught.value.message
        assert "fewer or smaller photos" in caught.value.hint and "release other GPU memory" in caught.value.hint
        assert "lower precision" in caught.value.hint and "the worker is still running" in caught.value.hint
        assert isinstance(client.wait(client.hello(), timeout=TIMEOUT), HelloEvent)
        again = client.wait(client.reconstruct(photos, tmp_path / "after.npz"), timeout=TIMEOUT)
        assert isinstance(again, ResultEvent) and again.model_reused
        assert resource.prlimit(client.pid, resource.RLIMIT_AS)[0] == cap  # still capped
    finally:
        assert client.shutdown(timeout=10) == 0, client.stderr_tail()


def test_the_weights_dtype_follows_the_runs_precision(checkpoint: Path, tmp_path: Path) -> None:
    """The loaded model is kept by its weights' dtype, not by the precision's name: on the CPU every
    precision keeps float32 weights (one load), a run that asks for other weights reloads the same
    file even without naming it, and the bundle records what ran."""
    client = start_worker()
    try:
        photos = smooth_photos(tmp_path / "photos", 4)
        loaded = client.wait(client.load(checkpoint, device="cpu", precision="exact"), timeout=TIMEOUT)
        assert isinstance(loaded, LoadedEvent) and loaded.model is not None and loaded.model.dtype == "float32"
        for precision in ("exact", "auto", "fast"):
            result = client.wait(client.reconstruct(photos, tmp_path / f"{precision}.npz",
                                                    ReconstructOptions(precision=precision)), timeout=TIMEOUT)
            assert isinstance(result, ResultEvent) and result.model_reused and result.loads == 1, precision
            meta = read_bundle(tmp_path / f"{precision}.npz").meta["precision"]
            assert meta["precision"] == precision and meta["weights"] == "float32"
        half = client.wait(client.reconstruct(photos, tmp_path / "half.npz", ReconstructOptions(precision="fast"),
                                              dtype="bfloat16"), timeout=TIMEOUT)
        assert isinstance(half, ResultEvent) and not half.model_reused and half.loads == 2
        assert read_bundle(tmp_path / "half.npz").meta["precision"]["weights"] == "bfloat16"
        back = client.wait(client.reconstruct(photos, tmp_path / "back.npz", ReconstructOptions(precision="exact")),
                           timeout=TIMEOUT)
        assert isinstance(back, ResultEvent) and not back.model_reused and back.loads == 3
        with pytest.raises(WorkerError) as caught:
            client.wait(client.load(checkpoint, device="cpu", precision="half"), timeout=TIMEOUT)
        assert caught.value.code == "input" and "precision='half'" in caught.value.message
    finally:
        assert client.shutdown(timeout=10) == 0, client.stderr_tail()


def _import_peak() -> int:
    """Bytes of address space the worker's Python peaks at when it imports torch and numpy."""
    probe = "import torch, numpy; print(open('/proc/self/status').read())"
    status = subprocess.run([PYTHON, "-c", probe], capture_output=True, text=True, timeout=TIMEOUT, check=True,
                            env=WORKER_ENV).stdout
    return next(int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmPeak:"))


@pytest.mark.parametrize("share", [round(0.2 + 0.05 * step, 2) for step in range(16)])
def test_a_worker_that_runs_out_of_memory_while_starting_says_so(tmp_path: Path, share: float) -> None:
    """Under an address-space limit below what importing torch needs, the worker fails
    as it starts — an ImportError ("failed to map segment"), a MemoryError, OpenBLAS's or libgomp's
    exit(1), std::bad_alloc (SIGABRT), SIGSEGV, and near the limit a SystemError, an AttributeError or
    a KeyboardInterrupt nobody sent, depending on where the limit bites (which differs from machine to
    machine: hence the sweep). Each is "ran out of memory", never a bug."""
    limit_kib = int(_import_peak() * share) // 1024
    capped = tmp_path / "python"
    capped.write_text(f"#!/bin/sh\nulimit -v {limit_kib}\nexec {PYTHON} \"$@\"\n")
    capped.chmod(0o755)
    client = WorkerClient(capped, env=WORKER_ENV)
    client.start()
    try:
        with pytest.raises(WorkerError) as caught:
            client.wait(client.hello(), timeout=TIMEOUT)
        error = caught.value
        assert error.code in ("out_of_memory", "worker_exited"), error
        assert "ran out of memory" in error.message, (error.message, error.hint)
        assert "bug" not in error.hint
        if error.code == "worker_exited":
            assert "while starting" in error.message and "ulimit" in error.hint
    finally:
        client.shutdown(timeout=10)


def test_any_failure_near_the_address_space_limit_is_out_of_memory() -> None:
    """Near its address-space limit a library fails to load with words that never say memory;
    each such failure is called what it is, with the limit in the hint. Far from any limit the same
    errors stay unexpected (a bug), and a user's mistake stays the user's mistake under any limit."""
    probe = """
import resource
from mvdust3r_blender.engine.errors import InputError, out_of_memory
odd = [SystemError("error return without exception set"),
       AttributeError("module 'datetime' has no attribute 'datetime_CAPI'"), KeyboardInterrupt()]
print(all(out_of_memory(error, "hello", "cpu") is None for error in odd))
mapped = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (mapped * 3 // 2, resource.getrlimit(resource.RLIMIT_AS)[1]))
for error in odd:
    found = out_of_memory(error, "hello", "cpu")
    print(found.code, found.message, found.hint, sep="|")
print(out_of_memory(InputError("photo.jpg is not an image", "choose photos"), "reconstruct", "cpu"))
"""
    lines = subprocess.run([PYTHON, "-c", probe], capture_output=True, text=True, timeout=TIMEOUT, check=True,
                           env=WORKER_ENV, cwd=PACKAGE_DIR.parent).stdout.splitlines()
    assert lines[0] == "True" and lines[-1] == "None", lines
    for line, name in zip(lines[1:-1], ("SystemError", "AttributeError", "KeyboardInterrupt"), strict=True):
        code, message, hint = line.split("|")
        assert code == "out_of_memory" and message.startswith(f"hello ran out of memory on cpu: {name}"), line
        assert "address-space limit allows" in message and "ulimit -v" in hint and "bug" not in hint, line


def test_any_allocator_failure_is_out_of_memory() -> None:
    """torch's CPU allocator says "DefaultCPUAllocator: can't allocate memory" (a RuntimeError, not
    torch.OutOfMemoryError); CUDA/MPS/the loader use other words. All are out of memory, with the hint."""
    from mvdust3r_blender.engine.errors import out_of_memory

    with pytest.raises(RuntimeError) as real:
        torch.empty(1 << 60, dtype=torch.uint8)
    assert "DefaultCPUAllocator" in str(real.value)
    found = out_of_memory(real.value, "reconstruct", "cpu")
    assert found is not None and found.code == "out_of_memory"
    assert found.message.startswith("reconstruct ran out of memory on cpu: ") and "fewer" in found.hint
    for text in ("CUDA out of memory. Tried to allocate 2.00 GiB", "MPS backend out of memory (MPS allocated: 1 GB)",
                 "HIP out of memory", "std::bad_alloc"):
        assert out_of_memory(RuntimeError(text), "load", "cuda:0") is not None, text
    assert out_of_memory(ImportError("libtorch_cpu.so: failed to map segment from shared object"), "hello",
                         "cpu") is not None
    assert out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"), "reconstruct", "cpu") is None
    # torch's C++ check names its source line, which means nothing to the user
    enforce = RuntimeError("[enforce fail at alloc_cpu.cpp:127] data. DefaultCPUAllocator: not enough memory: you "
                           "tried to allocate 1152921504606846976 bytes.")
    found = out_of_memory(enforce, "reconstruct", "cpu")
    assert found is not None and "enforce fail" not in found.message and "alloc_cpu.cpp" not in found.message
    assert "not enough memory: you tried to allocate" in found.message
    assert found.message.startswith("reconstruct ran out of memory on cpu: DefaultCPUAllocator: not enough memory")
    found = out_of_memory(real.value, "reconstruct", "cpu")
    assert found is not None and found.message.startswith("reconstruct ran out of memory on cpu: DefaultCPUAllocator")


class _DyingWorker(WorkerClient):
    """A real process that answers like a worker, then writes `last_words` to stderr and exits 1,
    as libgomp and OpenBLAS do when an allocation fails inside them (no signal, no MemoryError)."""

    def __init__(self, last_words: str) -> None:
        super().__init__(PYTHON)
        self.last_words = last_words

    def _command(self) -> tuple[list[str], dict[str, str]]:
        script = ("import json, sys\n"
                  "print(json.dumps({'type': 'ready', 'protocol': %d, 'pid': 1}), flush=True)\n"
                  "for line in sys.stdin:\n"
                  "    rid = json.loads(line)['id']\n"
                  "    if json.loads(line)['type'] == 'cancel':\n"
                  "        print(json.dumps({'type': 'ack', 'id': rid, 'request': 'cancel', 'detail': ''}), flush=True)\n"
                  "        continue\n"
                  "    sys.stderr.write(%r + '\\n')\n"
                  "    sys.exit(1)\n") % (PROTOCOL_VERSION, self.last_words)
        return [PYTHON, "-c", script], dict(os.environ)


@pytest.mark.parametrize("last_words", ["libgomp: Out of memory allocating 8589934592 bytes",
                                        "OpenBLAS : Memory allocation failed",
                                        "BLAS : Program is Terminated. Because you tried to allocate too many memory "
                                        "regions."])
def test_memory_running_out_inside_openblas_or_libgomp_is_out_of_memory(last_words: str) -> None:
    client = _DyingWorker(last_words)
    client.start()
    try:
        assert isinstance(client.wait(client.cancel(), timeout=TIMEOUT), AckEvent)  # it has answered
        with pytest.raises(WorkerError) as caught:
            client.wait(client.hello(), timeout=TIMEOUT)
    finally:
        client.shutdown(timeout=5)
    assert "ran out of memory" in caught.value.message and "exited with code 1" in caught.value.message, caught.value
    assert last_words in caught.value.hint
