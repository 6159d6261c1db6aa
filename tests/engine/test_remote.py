"""The worker on another machine over ssh, against a real sshd on 127.0.0.1 and a separate user who
cannot read the test's photos (tests/helpers/remote_host.py): a reconstruction equal to a local one, the
engine cache, refused paths, cancel, a killed connection, a remote without torch, ssh's own errors."""
from __future__ import annotations

import base64
import json
import hashlib
import os
import pwd
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from mvdust3r_blender.core.protocol.events import (DataEvent, Event, FetchedEvent, HelloEvent, LoadedEvent,
                                                   ProgressEvent, ResultEvent)
from mvdust3r_blender.core.protocol.requests import PutRequest, ReconstructRequest, Request
from mvdust3r_blender.core.bundle import read_bundle
from mvdust3r_blender.client.remote import RemoteTarget, RemoteWorkerClient
from mvdust3r_blender.client.worker_client import WorkerClient, WorkerError
from test_worker import PYTHON, TIMEOUT
from tests.helpers.photos import smooth_photos


@pytest.fixture(scope="module")
def target(remote_host: Any) -> RemoteTarget:
    return RemoteTarget(remote_host.destination, remote_host.ssh_command(), remote_host.python)


@pytest.fixture(scope="module")
def remote_checkpoint(remote_host: Any, golden: Path) -> str:
    """The golden checkpoint, copied to the remote user's home: a checkpoint is a path on the remote."""
    return str(remote_host.place(golden / "mvd_reduced_ckpt.pth"))


@pytest.fixture
def remote(target: RemoteTarget) -> Iterator[RemoteWorkerClient]:
    client = RemoteWorkerClient(target)
    client.start()
    yield client
    assert client.shutdown(timeout=15) == 0, client.stderr_tail()


def job_files(remote_host: Any) -> list[Path]:
    """What the remote worker keeps of its jobs (nothing once a request has ended)."""
    return [f for f in (remote_host.home / ".cache" / "mvdust3r-blender" / "jobs").glob("*/*") if f.name != ".owner"]


def test_reconstruct_over_ssh_matches_a_local_run(remote: RemoteWorkerClient, remote_host: Any,
                                                   remote_checkpoint: str, golden: Path, tmp_path: Path) -> None:
    photos = smooth_photos(tmp_path / "photos", 4)
    denied = remote_host.run_as_user("cat", str(photos[0]))
    assert denied.returncode != 0 and "Permission denied" in denied.stderr  # only the stream can bring them
    stages: list[str] = []
    output, exports = tmp_path / "remote" / "scene.npz", tmp_path / "remote" / "exports"

    def follow(event: Event) -> None:
        if isinstance(event, ProgressEvent) and event.stage not in stages:
            stages.append(event.stage)

    result = remote.wait(remote.reconstruct(photos, output, checkpoint=remote_checkpoint, device="cpu",
                                            exports=["ply", "colmap"], export_dir=exports),
                         timeout=TIMEOUT, on_event=follow)
    assert isinstance(result, ResultEvent)
    assert stages[0] == "upload" and stages[-1] == "download" and "network" in stages, stages
    assert result.bundle == str(output) and result.exports == {"ply": str(exports / "points.ply"),
                                                               "colmap": str(exports / "colmap")}
    got = read_bundle(output)
    assert got.photo_paths == [str(p) for p in photos]  # the local photos, not the remote copies
    assert (exports / "colmap" / "images" / "photo_000.png").read_bytes() == photos[0].read_bytes()
    assert not list(output.parent.glob(".*")) and not job_files(remote_host)  # no partial files, no job left

    with WorkerClient(PYTHON) as local:  # the same request on this machine: the same numbers
        local_out = tmp_path / "local" / "scene.npz"
        local.wait(local.reconstruct(photos, local_out, checkpoint=golden / "mvd_reduced_ckpt.pth", device="cpu",
                                     exports=["ply"], export_dir=tmp_path / "local"), timeout=TIMEOUT)
    want = read_bundle(local_out)
    for name in ("pts3d", "conf", "intrinsics", "cam2world", "crop_box"):
        np.testing.assert_allclose(getattr(got, name), getattr(want, name), rtol=1e-5, atol=1e-6, err_msg=name)
    assert (exports / "points.ply").stat().st_size == (tmp_path / "local" / "points.ply").stat().st_size

    again = RemoteWorkerClient(remote.target)  # a second connection finds the engine in the remote cache
    with again:
        assert isinstance(again.wait(again.hello(), timeout=TIMEOUT), HelloEvent)
    assert not again.engine_sent


def test_a_remote_worker_reads_only_its_job_folder(remote: RemoteWorkerClient, remote_checkpoint: str,
                                                   tmp_path: Path) -> None:
    def refused(request: Request) -> str:
        with pytest.raises(WorkerError) as caught:
            remote.wait(remote.send(request), timeout=TIMEOUT)
        assert caught.value.code == "bad_request", caught.value
        return caught.value.message

    photo = smooth_photos(tmp_path, 1)[0]
    chunk = base64.b64encode(photo.read_bytes()).decode()
    size = photo.stat().st_size
    assert remote.wait(remote.send(PutRequest(job="j1", name="a.png", size=size, data=chunk)), TIMEOUT)
    assert "job folder" in refused(ReconstructRequest(photos=["a.png", "/etc/hostname"], output="out.npz",
                                                      job="j1", checkpoint=remote_checkpoint))
    assert "job folder" in refused(ReconstructRequest(photos=["a.png", "../../../../etc/passwd"],
                                                      output="out.npz", job="j1", checkpoint=remote_checkpoint))
    assert "job folder" in refused(ReconstructRequest(photos=["a.png", "a.png"], output="/tmp/out.npz", job="j1"))
    assert "names no job" in refused(ReconstructRequest(photos=[str(photo), str(photo)], output=str(tmp_path / "x"),
                                                        checkpoint=remote_checkpoint))
    assert "job folder" in refused(PutRequest(job="j2", name="../escape.png", size=size, data=chunk))
    assert "not allowed" in refused(PutRequest(job="..", name="a.png", size=size, data=chunk))
    with pytest.raises(WorkerError, match="larger than"):
        remote.wait(remote.send(PutRequest(job="j3", name="big.png", size=2 ** 40, data="")), timeout=TIMEOUT)
    assert not (tmp_path / "x").exists()


@pytest.fixture(scope="module")
def many_photos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Photos that keep the remote worker busy for a while after its first progress event: time to
    cancel the run or cut the connection while it works."""
    return smooth_photos(tmp_path_factory.mktemp("many"), 12, size=(800, 600))


def test_cancel_while_the_remote_worker_runs(remote: RemoteWorkerClient, remote_checkpoint: str,
                                             many_photos: list[Path], tmp_path: Path, remote_host: Any) -> None:
    photos = many_photos
    output = tmp_path / "cancelled.npz"

    def cancel_once_loading(event: Event) -> None:
        if isinstance(event, ProgressEvent) and event.stage == "load":
            remote.cancel(event.id)

    with pytest.raises(WorkerError) as caught:
        remote.wait(remote.reconstruct(photos, output, checkpoint=remote_checkpoint, device="cpu"),
                    timeout=TIMEOUT, on_event=cancel_once_loading)
    assert caught.value.code == "cancelled"
    # and while the photos are still being sent
    with pytest.raises(WorkerError) as caught:
        remote.wait(remote.reconstruct(photos, output, checkpoint=remote_checkpoint, device="cpu"), timeout=TIMEOUT,
                    on_event=lambda e: remote.cancel(e.id) if isinstance(e, ProgressEvent) else None)
    assert caught.value.code == "cancelled" and "being sent" in caught.value.message
    assert not output.exists() and not list(tmp_path.glob(".*"))
    deadline = time.monotonic() + 20  # the photos already sent go at once, not when the connection ends
    while job_files(remote_host) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not job_files(remote_host)
    assert isinstance(remote.wait(remote.hello(), timeout=TIMEOUT), HelloEvent)  # the worker serves on


def test_a_killed_connection_is_reported_within_seconds(target: RemoteTarget, remote_host: Any,
                                                        remote_checkpoint: str, many_photos: list[Path],
                                                        tmp_path: Path) -> None:
    photos = many_photos
    output = tmp_path / "lost.npz"
    client = RemoteWorkerClient(target)
    client.start()
    killed: list[float] = []

    def cut_once_loading(event: Event) -> None:
        if isinstance(event, ProgressEvent) and event.stage == "load" and not killed:
            assert client.pid is not None
            os.kill(client.pid, signal.SIGKILL)  # the ssh process: as if the network went away
            killed.append(time.monotonic())

    try:
        with pytest.raises(WorkerError) as caught:
            client.wait(client.reconstruct(photos, output, checkpoint=remote_checkpoint, device="cpu"),
                        timeout=TIMEOUT, on_event=cut_once_loading)
        noticed = time.monotonic() - killed[0]
    finally:
        client.shutdown(timeout=5)
    assert caught.value.code == "worker_exited"
    assert f"ssh connection to {target} failed or was lost" in caught.value.message
    assert noticed < 5.0, f"the lost connection was reported after {noticed:.1f} s"
    assert not output.exists() and not list(tmp_path.glob(".*"))
    deadline = time.monotonic() + 20  # the remote worker sees its stdin close and ends, removing its jobs
    while remote_host.processes() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert remote_host.processes() == [] and not job_files(remote_host)


def test_a_remote_python_without_torch_says_so(remote_host: Any) -> None:
    bare = "/usr/bin/python3"
    assert remote_host.run_as_user(bare, "-c", "import torch").returncode != 0  # the premise
    with RemoteWorkerClient(RemoteTarget(remote_host.destination, remote_host.ssh_command(), bare)) as client:
        with pytest.raises(WorkerError) as caught:
            client.wait(client.hello(), timeout=TIMEOUT)
    assert caught.value.code == "runtime" and "cannot import" in caught.value.message
    assert bare in caught.value.message


def test_ssh_failures_show_ssh_s_own_message_without_waiting(remote_host: Any, tmp_path: Path) -> None:
    unknown = tmp_path / "known_hosts"
    unknown.write_text("")
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    cases = {"Host key verification failed": remote_host.ssh_command(known_hosts=unknown),
             "Permission denied": remote_host.ssh_command().replace(str(remote_host.key), str(stranger))}
    for says, command in cases.items():
        started = time.monotonic()
        with pytest.raises(WorkerError) as caught:
            with RemoteWorkerClient(RemoteTarget(remote_host.destination, command, remote_host.python)) as client:
                client.wait(client.hello(), timeout=TIMEOUT)
        assert time.monotonic() - started < 10
        assert caught.value.code == "worker_exited" and "ssh connection" in caught.value.message
        assert says in caught.value.hint, caught.value.hint


def test_fetch_downloads_a_released_checkpoint_on_the_remote(remote: RemoteWorkerClient, remote_host: Any,
                                                             golden: Path) -> None:
    import functools
    import http.server
    import threading

    source = golden / "mvd_reduced_ckpt.pth"
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(golden))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/{source.name}"
    try:
        fractions: list[float] = []
        fetched = remote.wait(remote.fetch(url, "MVD.pth", source.stat().st_size), timeout=TIMEOUT,
                              on_event=lambda e: fractions.append(e.fraction) if isinstance(e, ProgressEvent) else None)
        assert isinstance(fetched, FetchedEvent)
        assert fetched.path == str(remote_host.home / ".cache" / "mvdust3r-blender" / "models" / "MVD.pth")
        assert fetched.sha256 == hashlib.sha256(source.read_bytes()).hexdigest() and fractions[-1] == 1.0
        loaded = remote.wait(remote.load(fetched.path, device="cpu"), timeout=TIMEOUT)
        assert isinstance(loaded, LoadedEvent) and loaded.model is not None
        with pytest.raises(WorkerError, match="expected 12345"):  # a file of another size than the release's
            remote.wait(remote.fetch(url, "other.pth", 12345), timeout=TIMEOUT)
        with pytest.raises(WorkerError, match="not a checkpoint file name"):
            remote.wait(remote.fetch(url, "../../.bashrc", None), timeout=TIMEOUT)
    finally:
        server.shutdown()
        server.server_close()


def test_a_remote_worker_killed_mid_run_is_reported(target: RemoteTarget, remote_checkpoint: str,
                                                     many_photos: list[Path], tmp_path: Path) -> None:
    """As the kernel's out-of-memory killer would: SIGKILL to the remote worker (on loopback, a
    process of this machine)."""
    with RemoteWorkerClient(target) as client:
        hello = client.wait(client.hello(), timeout=TIMEOUT)
        assert isinstance(hello, HelloEvent)
        killed: list[float] = []

        def kill_once_loading(event: Event) -> None:
            if isinstance(event, ProgressEvent) and event.stage == "load" and not killed:
                os.kill(hello.pid, signal.SIGKILL)
                killed.append(time.monotonic())

        with pytest.raises(WorkerError) as caught:
            client.wait(client.reconstruct(many_photos, tmp_path / "oom.npz", checkpoint=remote_checkpoint,
                                           device="cpu"), timeout=TIMEOUT, on_event=kill_once_loading)
        noticed = time.monotonic() - killed[0]
    assert caught.value.code == "worker_exited" and str(target) in caught.value.message
    assert "killed" in caught.value.message and noticed < 5.0
    assert not (tmp_path / "oom.npz").exists() and not list(tmp_path.glob(".*"))


def test_result_files_are_checked_before_they_are_used(tmp_path: Path) -> None:
    """The client side of the download, fed parts directly: a damaged file, a file the request did
    not ask for, a name that is not plain, a part past its declared size and a file larger than the
    request's budget are refused, and nothing stays on disk."""
    from mvdust3r_blender.client.remote import RemoteError, _Transfer

    def transfer() -> _Transfer:
        return _Transfer(photos=[tmp_path / "a.png"], names=["photos/0000/a.png"], output=tmp_path / "out.npz",
                         export_dir=tmp_path / "exports", exports=["ply"], budget=1000)

    abc = base64.b64encode(b"abc").decode()
    good = hashlib.sha256(b"abc").hexdigest()

    def refused(event: DataEvent, says: str) -> None:
        failing = transfer()
        with pytest.raises(RemoteError, match=says):
            failing.receive(event)
        failing.discard()  # what the client does with a failed request

    refused(DataEvent(name="bundle.npz", size=3, offset=0, data=abc, sha256="0" * 64), "arrived damaged")
    for name in ("../../etc/x", "exports/../../x", "other.npz", "exports/", "exports/.", ".", "exports/./points.ply",
                 "exports//points.ply", "exports\\points.ply", "exports/points.ply\n", "exports/gaussians.ply",
                 "exports/points.ply/x", "/etc/passwd", "exports"):
        refused(DataEvent(name=name, size=3, offset=0, data=abc, sha256=good),
                "did not ask for|not a plain relative name")
    # 300 MiB once went through for 'size: 10'
    refused(DataEvent(name="bundle.npz", size=2, offset=0, data=abc), "beyond its declared size")
    refused(DataEvent(name="bundle.npz", size=10 ** 12, offset=0, data=abc), "more than the 1000 left")
    one = transfer()
    one.receive(DataEvent(name="exports/points.ply", size=3, offset=0, data=abc, sha256=good))
    with pytest.raises(RemoteError, match="sent 'exports/points.ply' twice"):
        one.receive(DataEvent(name="exports/points.ply", size=3, offset=0, data=abc, sha256=good))
    assert not (tmp_path / "exports" / "points.ply").exists()  # staged until the result is complete
    with pytest.raises(RemoteError, match="not the ones asked for"):
        one.finish(ResultEvent(bundle="bundle.npz", exports={"ply": "exports/points.ply", "glb": "exports/x"}))
    one.discard()
    assert [f.name for f in tmp_path.rglob("*")] == ["exports"]  # the (empty) export folder alone


# -- hostile values, a hostile remote (docs/remote.md, threat model) ------------------------------


def test_settings_that_ssh_would_read_as_options_are_refused_before_ssh_runs(remote_host: Any,
                                                                              tmp_path: Path) -> None:
    """The Remote Python ``-oProxyCommand=…`` once ran a command on this machine; every value that
    reaches ssh's argv is checked where it is set, and passed after ``--``."""
    from mvdust3r_blender.client.remote import RemoteError

    marker = tmp_path / "ran-here"
    hostile = f"-oProxyCommand=sh -c 'touch {marker}'"
    command = remote_host.ssh_command()
    for destination, ssh_command, python, says in (
            (remote_host.destination, command, hostile, "the remote Python"),
            ("-oProxyCommand=x", command, "python3", "the ssh destination"),
            ("--", command, "python3", "the ssh destination"),
            ("host\0name", command, "python3", "control character"),
            (remote_host.destination, command, "python3\nrm -rf ~", "control character"),
            (remote_host.destination, "-oProxyCommand=x ssh", "python3", "the ssh command")):
        with pytest.raises(RemoteError) as caught:
            RemoteTarget(destination, ssh_command, python)
        assert says in caught.value.message, caught.value.message
    with pytest.raises(RemoteError, match="would read it as an option"):
        RemoteTarget(remote_host.destination, command, hostile)
    # defence in depth: even a value that slipped past the check reaches ssh after '--' (a command, not options)
    target = RemoteTarget(remote_host.destination, command, "python3")
    object.__setattr__(target, "python", hostile)
    argv = target.ssh_argv(hostile)
    assert argv[argv.index("--") + 1] == remote_host.destination
    subprocess.run(argv, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    assert not marker.exists()


def test_the_ssh_command_s_tilde_is_the_user_s_home(remote_host: Any, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The documented ``ssh -F ~/.ssh/studio_config`` works: ``~`` is expanded as a shell would."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "studio_config").write_text(
        f"Host studio\n  HostName 127.0.0.1\n  Port {remote_host.port}\n  User {remote_host.user}\n"
        f"  IdentityFile {remote_host.key}\n  IdentitiesOnly yes\n  UserKnownHostsFile {remote_host.known_hosts}\n"
        "  StrictHostKeyChecking yes\n")
    monkeypatch.setenv("HOME", str(home))
    target = RemoteTarget("studio", "ssh -F ~/.ssh/studio_config", remote_host.python)
    assert target.ssh_argv_prefix()[2] == str(home / ".ssh" / "studio_config")
    with RemoteWorkerClient(target) as client:
        assert isinstance(client.wait(client.hello(), timeout=TIMEOUT), HelloEvent)


HOSTILE = Path(__file__).resolve().parents[1] / "helpers" / "hostile_remote.py"
_MEASURE = """
import json, re, sys
from mvdust3r_blender.client.remote import RemoteTarget, RemoteWorkerClient
from mvdust3r_blender.client.worker_client import WorkerError
destination, ssh_command, python = sys.argv[1:4]
client = RemoteWorkerClient(RemoteTarget(destination, ssh_command, python), handshake_timeout=5)
client.start()
try:
    client.wait(client.hello(), timeout=8)
    outcome = "answered"
except (WorkerError, TimeoutError) as exc:
    outcome = f"{type(exc).__name__}: {exc}"
client.shutdown(timeout=2)
# this process's own peak (ru_maxrss would include the forking test process's, which Linux carries over exec)
peak = int(re.search(r"VmHWM:\\s*(\\d+) kB", open("/proc/self/status").read()).group(1))
print(json.dumps({"outcome": outcome, "peak_kib": peak}))
"""
CLIENT_PEAK_MIB = 100
"""docs/remote.md: the most a client process takes, whatever a remote sends (measured: see there)."""


def hostile(remote_host: Any, mode: str) -> str:
    """The Remote Python that runs tests/helpers/hostile_remote.py in `mode` on the remote."""
    return f"{remote_host.python} {remote_host.place(HOSTILE)} {mode}"


@pytest.mark.parametrize("mode, says", [
    ("silent", "did not start within 5 s"),
    ("endless-before", "line longer than"),
    ("endless-after", "line longer than"),
    ("flood", "TimeoutError: the worker did not answer"),
])
def test_a_hostile_remote_cannot_exhaust_this_machine(remote_host: Any, mode: str, says: str) -> None:
    """An endless line (before or after the handshake), a login banner without a newline, a flood of
    events for this request and for one never sent: each ends within its deadline, in a client
    process (a fresh Python, as Blender's would be) whose peak memory stays under the bound."""
    measured = subprocess.run([PYTHON, "-c", _MEASURE, remote_host.destination, remote_host.ssh_command(),
                               hostile(remote_host, mode)], capture_output=True, text=True, timeout=120,
                              cwd=Path(__file__).resolve().parents[2])
    assert measured.returncode == 0, measured.stderr[-3000:]
    report = json.loads(measured.stdout.strip().splitlines()[-1])
    assert says in report["outcome"], report
    assert report["peak_kib"] < CLIENT_PEAK_MIB * 1024, report
    print(f"{mode}: client peak {report['peak_kib'] / 1024:.0f} MiB")


@pytest.mark.parametrize("mode, says", [
    ("oversize", "beyond its declared size"),
    ("unasked", "did not ask for: 'exports/notes.txt'"),
    ("dot", "not a plain relative name"),
    ("bomb", "once unpacked"),
    ("die", "ssh connection|exited with code 1"),
])
def test_a_hostile_remote_writes_nothing_outside_what_was_asked(remote_host: Any, mode: str, says: str,
                                                                 tmp_path: Path) -> None:
    """Files a remote sends are named by the request, within their declared size and the request's
    budget, and reach their names only once all is verified: the user's files stay as they were,
    and nothing partial is left (a dead connection included)."""
    photos = smooth_photos(tmp_path / "photos", 1)
    out = tmp_path / "out"
    (out / "exports").mkdir(parents=True)
    (out / "exports" / "notes.txt").write_text("mine")
    (out / "exports" / "points.ply").write_text("my older export")
    before = {f: f.read_bytes() for f in out.rglob("*") if f.is_file()}
    target = RemoteTarget(remote_host.destination, remote_host.ssh_command(), hostile(remote_host, mode))
    with RemoteWorkerClient(target) as client:
        with pytest.raises(WorkerError) as caught:
            client.wait(client.reconstruct(photos, out / "scene.npz", exports=["ply"], export_dir=out / "exports"),
                        timeout=TIMEOUT)
    import re

    assert re.search(says, caught.value.message), caught.value.message
    assert {f: f.read_bytes() for f in out.rglob("*") if f.is_file()} == before
    assert sorted(p.name for p in out.rglob("*")) == ["exports", "notes.txt", "points.ply"]
    assert not list(tmp_path.glob(".*")) and not (out / "exports.part").exists()


def test_a_remote_that_writes_without_end_cannot_fill_the_disk(remote_host: Any, tmp_path: Path) -> None:
    """What a remote writes to stderr goes to the log file, at most LOG_BYTES a connection: the rest
    is left out with a line that says so (the last lines are still at hand), and a log already over
    half the bound is moved aside first, one older log kept: however often it runs, the log stays bounded."""
    from mvdust3r_blender.client.worker_client import LOG_BYTES

    log = tmp_path / "worker.log"
    target = RemoteTarget(remote_host.destination, remote_host.ssh_command(), hostile(remote_host, "chatter"))
    sizes = []
    for _ in range(2):
        with RemoteWorkerClient(target, log_path=log) as client:
            with pytest.raises(WorkerError, match="hostile"):
                client.wait(client.hello(), timeout=TIMEOUT)
            deadline = time.monotonic() + TIMEOUT
            while not _log_ends_with(log, "the rest of its output is not kept") and time.monotonic() < deadline:
                time.sleep(0.2)
            assert client.stderr_tail(1)[0].startswith("chatter x"), client.stderr_tail(3)
        sizes.append(log.stat().st_size)
        assert _log_ends_with(log, "the rest of its output is not kept")
    older = log.with_name("worker.log.1")
    assert older.stat().st_size == sizes[0] and LOG_BYTES - 8200 < sizes[1] < LOG_BYTES + 200, (sizes, LOG_BYTES)
    assert not list(tmp_path.glob("worker.log.2*"))


def _log_ends_with(log: Path, words: str) -> bool:
    with open(log, "rb") as f:
        f.seek(max(0, f.seek(0, os.SEEK_END) - 300))
        return f.read().decode("utf-8", "replace").rstrip("\n").endswith(words)


def test_builtin_names_the_model_that_travels_with_the_engine(target: RemoteTarget, remote_host: Any) -> None:
    """``checkpoint="builtin"`` on a remote loads the built-in model the engine's files brought there
    (the same bytes as here), with nothing downloaded or copied by hand."""
    from mvdust3r_blender.core.registry import builtin_model

    with RemoteWorkerClient(target) as client:
        loaded = client.wait(client.load("builtin", device="cpu"), timeout=TIMEOUT)
    assert isinstance(loaded, LoadedEvent) and loaded.model is not None, loaded
    there = Path(loaded.model.checkpoint)
    assert there.is_relative_to(cache(remote_host)) and there.parts[-2:] == ("models", "default.safetensors")
    assert there.read_bytes() == builtin_model().read_bytes()


def cache(remote_host: Any) -> Path:
    return remote_host.home / ".cache" / "mvdust3r-blender"


def test_the_remote_engine_is_verified_on_every_start_and_old_versions_pruned(target: RemoteTarget,
                                                                               remote_host: Any) -> None:
    """A cached engine whose files were changed (or gained a __pycache__) is never run: it is sent
    and unpacked again. Only the newest ENGINES_KEPT versions stay."""
    from mvdust3r_blender.client.remote import ENGINES_KEPT

    def hello() -> bool:
        with RemoteWorkerClient(target) as client:
            assert isinstance(client.wait(client.hello(), timeout=TIMEOUT), HelloEvent), client.stderr_tail()
            return client.engine_sent

    hello()
    (engine,) = [e for e in cache(remote_host).glob("engine-*") if e.stat().st_mtime == max(
        x.stat().st_mtime for x in cache(remote_host).glob("engine-*"))]
    assert not hello()  # verified, reused
    worker = next(engine.rglob("engine/worker.py"))
    worker.write_text(worker.read_text() + "\nraise SystemExit('altered')\n")
    assert hello() and "altered" not in worker.read_text()  # altered: sent again, and it runs
    planted = worker.parent / "__pycache__"
    planted.mkdir()
    (planted / "worker.cpython-311.pyc").write_bytes(b"not the engine")
    for path in (planted, planted / "worker.cpython-311.pyc"):  # the remote user's own files, as a co-tenant's would not be
        os.chown(path, *remote_host._ids())
    for k in range(ENGINES_KEPT + 1):  # older versions, used long ago
        old = cache(remote_host) / f"engine-{k:064x}"
        old.mkdir()
        os.utime(old, (1_000_000 + k, 1_000_000 + k))
    assert hello() and not planted.exists()
    kept = sorted(e.name for e in cache(remote_host).glob("engine-*"))
    assert len(kept) == ENGINES_KEPT and engine.name in kept, kept
    assert not list(engine.rglob("__pycache__"))  # the worker writes none beside the checked files
    for old in cache(remote_host).glob("engine-0*"):
        shutil.rmtree(old)


@pytest.fixture
def small_remote_disk(remote_host: Any) -> Iterator[Any]:
    """Mounts a tmpfs of the given size over the remote user's cache (hiding the real one until the test ends)."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        where = cache(remote_host)
        if mounted:
            subprocess.run(["umount", str(where)], check=True)
            mounted.clear()
        entry = pwd.getpwnam(remote_host.user)
        for folder in (where.parent, where):
            folder.mkdir(mode=0o700, exist_ok=True)
            os.chown(folder, entry.pw_uid, entry.pw_gid)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=700,uid={entry.pw_uid},gid={entry.pw_gid}",
                        "tmpfs", str(where)], check=True)
        mounted.append(where)
        return where

    try:
        yield mount
    finally:
        for where in mounted:
            subprocess.run(["umount", "--lazy", str(where)], check=True)


def _unpacked_kib() -> int:
    """KiB the engine's files take unpacked on a tmpfs (each file in whole 4 KiB pages)."""
    import io
    import tarfile

    from mvdust3r_blender.core.engine_files import engine_archive

    with tarfile.open(fileobj=io.BytesIO(engine_archive()[0]), mode="r:gz") as tar:
        return sum(-(-member.size // 4096) * 4 for member in tar.getmembers())


def test_a_full_remote_disk_is_said_so_and_leaves_nothing_half_done(target: RemoteTarget, remote_host: Any,
                                                                    small_remote_disk: Any, tmp_path: Path) -> None:
    where = small_remote_disk("64k")  # too small for the engine
    with pytest.raises(WorkerError) as caught:
        with RemoteWorkerClient(target) as client:
            client.wait(client.hello(), timeout=TIMEOUT)
    assert "the remote disk is full" in caught.value.hint, caught.value
    assert "bug" not in caught.value.message + caught.value.hint
    assert not list(where.glob(".engine-*")) and not list(where.glob("engine-*"))
    where = small_remote_disk(f"{_unpacked_kib() + 1024}k")  # room for the engine, not for the photo
    photo = tmp_path / "big.png"  # never decoded: the disk fills while it is being sent
    photo.write_bytes(os.urandom(3 * 1024 ** 2))
    with RemoteWorkerClient(target) as client:
        with pytest.raises(WorkerError) as caught:
            client.wait(client.reconstruct([photo], tmp_path / "out.npz"), timeout=TIMEOUT)
        assert caught.value.code == "disk_full" and "the disk is full" in caught.value.message, caught.value
        assert "bug" not in caught.value.hint
        deadline = time.monotonic() + 20  # the part already sent is removed at once
        while job_files(remote_host) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not job_files(remote_host), client.stderr_tail(40)


def test_job_folders_are_removed_only_when_their_owner_is_gone(target: RemoteTarget, remote_host: Any) -> None:
    """One home on two hosts (NFS): a new worker never removes a folder whose owner file names
    another host, whatever this host's process table says; a dead worker of this host's is cleaned."""
    import socket

    jobs = cache(remote_host) / "jobs"
    jobs.mkdir(parents=True, exist_ok=True)
    ended = subprocess.Popen(["true"])
    ended.wait()
    dead = ended.pid
    folders = {"elsewhere": (f"gpu-2.cluster {dead}", True), "here": (f"{socket.gethostname()} {dead}", False)}
    for name, (owner, _) in folders.items():
        folder = jobs / f"{dead}-{name}"
        (folder / "r1" / "photos").mkdir(parents=True)
        (folder / ".owner").write_text(owner + "\n")
        (folder / "r1" / "photos" / "a.png").write_bytes(b"photo")
    for path in [cache(remote_host), jobs, *jobs.rglob("*")]:
        os.chown(path, *remote_host._ids())  # the remote user's own, as its workers made them
    with RemoteWorkerClient(target) as client:
        assert isinstance(client.wait(client.hello(), timeout=TIMEOUT), HelloEvent)
        for name, (_, kept) in folders.items():
            assert (jobs / f"{dead}-{name}").exists() == kept, name
    shutil.rmtree(jobs / f"{dead}-elsewhere")


def test_photo_names_that_are_no_remote_path_still_work(remote: RemoteWorkerClient, remote_checkpoint: str,
                                                        tmp_path: Path) -> None:
    """``back\\slash.png`` failed the whole remote run (bad_request) though it works locally; a name
    is made a plain remote name, and the bundle names the local photos."""
    photos = []
    for photo, name in zip(smooth_photos(tmp_path / "made", 4), ("back\\slash.png", "new\nline.png", ".hidden.png",
                                                               "ünïcode ok.png")):
        photos.append(photo.rename(tmp_path / name))
    output = tmp_path / "out" / "scene.npz"
    result = remote.wait(remote.reconstruct(photos, output, checkpoint=remote_checkpoint, device="cpu"),
                         timeout=TIMEOUT)
    assert isinstance(result, ResultEvent) and read_bundle(output).photo_paths == [str(x) for x in photos]


def test_the_remote_check_names_a_library_the_runs_would_miss(remote_host: Any) -> None:
    """cv2 that cannot load its libGL (the usual way OpenCV breaks on a server): Check (hello) says so,
    not the first run."""
    stub = remote_host.home / "stub-cv2"
    stub.mkdir(exist_ok=True)
    (stub / "cv2.py").write_text("raise ImportError('libGL.so.1: cannot open shared object file')\n")
    os.chown(stub, *remote_host._ids())
    python = remote_host.python
    if python.startswith("PYTHONPATH="):
        python = f"PYTHONPATH={stub}:{python.removeprefix('PYTHONPATH=')}"
    else:
        python = f"PYTHONPATH={stub} {python}"
    with RemoteWorkerClient(RemoteTarget(remote_host.destination, remote_host.ssh_command(), python)) as client:
        with pytest.raises(WorkerError) as caught:
            client.wait(client.hello(), timeout=TIMEOUT)
    assert caught.value.code == "runtime" and "cannot import 'cv2'" in caught.value.message, caught.value
    assert "libGL.so.1" in caught.value.message
