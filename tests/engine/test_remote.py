"""The worker on another machine over ssh, against a real sshd on 127.0.0.1 and a separate user who
cannot read the test's photos (tests/helpers/remote_host.py): a reconstruction equal to a local one, the
engine cache, refused paths, cancel, a killed connection, a remote without torch, ssh's own errors."""
from __future__ import annotations

import base64
import hashlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from mvdust3r_blender.core import protocol as p
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
    return [f for f in (remote_host.home / ".cache" / "mvdust3r-blender" / "jobs").glob("*/*")]


def test_reconstruct_over_ssh_matches_a_local_run(remote: RemoteWorkerClient, remote_host: Any,
                                                   remote_checkpoint: str, golden: Path, tmp_path: Path) -> None:
    photos = smooth_photos(tmp_path / "photos", 4)
    denied = remote_host.run_as_user("cat", str(photos[0]))
    assert denied.returncode != 0 and "Permission denied" in denied.stderr  # only the stream can bring them
    stages: list[str] = []
    output, exports = tmp_path / "remote" / "scene.npz", tmp_path / "remote" / "exports"

    def follow(event: p.Event) -> None:
        if isinstance(event, p.ProgressEvent) and event.stage not in stages:
            stages.append(event.stage)

    result = remote.wait(remote.reconstruct(photos, output, checkpoint=remote_checkpoint, device="cpu",
                                            exports=["ply", "colmap"], export_dir=exports),
                         timeout=TIMEOUT, on_event=follow)
    assert isinstance(result, p.ResultEvent)
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
        assert isinstance(again.wait(again.hello(), timeout=TIMEOUT), p.HelloEvent)
    assert not again.engine_sent


def test_a_remote_worker_reads_only_its_job_folder(remote: RemoteWorkerClient, remote_checkpoint: str,
                                                   tmp_path: Path) -> None:
    def refused(request: p.Request) -> str:
        with pytest.raises(WorkerError) as caught:
            remote.wait(remote.send(request), timeout=TIMEOUT)
        assert caught.value.code == "bad_request", caught.value
        return caught.value.message

    photo = smooth_photos(tmp_path, 1)[0]
    chunk = base64.b64encode(photo.read_bytes()).decode()
    size = photo.stat().st_size
    assert remote.wait(remote.send(p.PutRequest(job="j1", name="a.png", size=size, data=chunk)), TIMEOUT)
    assert "job folder" in refused(p.ReconstructRequest(photos=["a.png", "/etc/hostname"], output="out.npz",
                                                        job="j1", checkpoint=remote_checkpoint))
    assert "job folder" in refused(p.ReconstructRequest(photos=["a.png", "../../../../etc/passwd"],
                                                        output="out.npz", job="j1", checkpoint=remote_checkpoint))
    assert "job folder" in refused(p.ReconstructRequest(photos=["a.png", "a.png"], output="/tmp/out.npz", job="j1"))
    assert "names no job" in refused(p.ReconstructRequest(photos=[str(photo), str(photo)], output=str(tmp_path / "x"),
                                                          checkpoint=remote_checkpoint))
    assert "job folder" in refused(p.PutRequest(job="j2", name="../escape.png", size=size, data=chunk))
    assert "not allowed" in refused(p.PutRequest(job="..", name="a.png", size=size, data=chunk))
    with pytest.raises(WorkerError, match="larger than"):
        remote.wait(remote.send(p.PutRequest(job="j3", name="big.png", size=2 ** 40, data="")), timeout=TIMEOUT)
    assert not (tmp_path / "x").exists()


@pytest.fixture(scope="module")
def many_photos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Photos that keep the remote worker busy for a while after its first progress event: time to
    cancel the run or cut the connection while it works."""
    return smooth_photos(tmp_path_factory.mktemp("many"), 12, size=(800, 600))


def test_cancel_while_the_remote_worker_runs(remote: RemoteWorkerClient, remote_checkpoint: str,
                                             many_photos: list[Path], tmp_path: Path) -> None:
    photos = many_photos
    output = tmp_path / "cancelled.npz"

    def cancel_once_loading(event: p.Event) -> None:
        if isinstance(event, p.ProgressEvent) and event.stage == "load":
            remote.cancel(event.id)

    with pytest.raises(WorkerError) as caught:
        remote.wait(remote.reconstruct(photos, output, checkpoint=remote_checkpoint, device="cpu"),
                    timeout=TIMEOUT, on_event=cancel_once_loading)
    assert caught.value.code == "cancelled"
    # and while the photos are still being sent
    with pytest.raises(WorkerError) as caught:
        remote.wait(remote.reconstruct(photos, output, checkpoint=remote_checkpoint, device="cpu"), timeout=TIMEOUT,
                    on_event=lambda e: remote.cancel(e.id) if isinstance(e, p.ProgressEvent) else None)
    assert caught.value.code == "cancelled" and "being sent" in caught.value.message
    assert not output.exists() and not list(tmp_path.glob(".*"))
    assert isinstance(remote.wait(remote.hello(), timeout=TIMEOUT), p.HelloEvent)  # the worker serves on


def test_a_killed_connection_is_reported_within_seconds(target: RemoteTarget, remote_host: Any,
                                                        remote_checkpoint: str, many_photos: list[Path],
                                                        tmp_path: Path) -> None:
    photos = many_photos
    output = tmp_path / "lost.npz"
    client = RemoteWorkerClient(target)
    client.start()
    killed: list[float] = []

    def cut_once_loading(event: p.Event) -> None:
        if isinstance(event, p.ProgressEvent) and event.stage == "load" and not killed:
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
                              on_event=lambda e: fractions.append(e.fraction) if isinstance(e, p.ProgressEvent) else None)
        assert isinstance(fetched, p.FetchedEvent)
        assert fetched.path == str(remote_host.home / ".cache" / "mvdust3r-blender" / "models" / "MVD.pth")
        assert fetched.sha256 == hashlib.sha256(source.read_bytes()).hexdigest() and fractions[-1] == 1.0
        loaded = remote.wait(remote.load(fetched.path, device="cpu"), timeout=TIMEOUT)
        assert isinstance(loaded, p.LoadedEvent) and loaded.model is not None
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
        assert isinstance(hello, p.HelloEvent)
        killed: list[float] = []

        def kill_once_loading(event: p.Event) -> None:
            if isinstance(event, p.ProgressEvent) and event.stage == "load" and not killed:
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
    """The client side of the download, fed parts directly: a damaged file and a file the request
    did not ask for are refused, and nothing stays on disk."""
    from mvdust3r_blender.client.remote import RemoteError, _Transfer

    transfer = _Transfer(photos=[tmp_path / "a.png"], names=["photos/0000/a.png"], output=tmp_path / "out.npz",
                         export_dir=tmp_path / "exports")
    abc = base64.b64encode(b"abc").decode()
    with pytest.raises(RemoteError, match="arrived damaged"):
        transfer.receive(p.DataEvent(name="bundle.npz", size=3, offset=0, data=abc, sha256="0" * 64))
    for name in ("../../etc/x", "exports/../../x", "other.npz"):
        with pytest.raises(RemoteError, match="did not ask for"):
            transfer.receive(p.DataEvent(name=name, size=3, offset=0, data=abc, sha256="0" * 64))
    good = hashlib.sha256(b"abc").hexdigest()
    transfer.receive(p.DataEvent(name="exports/points.ply", size=3, offset=0, data=abc, sha256=good))
    assert (tmp_path / "exports" / "points.ply").read_bytes() == b"abc"
    assert sorted(f.name for f in tmp_path.rglob("*")) == ["exports", "points.ply"]
