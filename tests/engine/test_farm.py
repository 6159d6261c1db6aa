"""A batch on a real two-node Ray cluster (token auth, 127.0.0.1; tests/helpers/ray_cluster.py) through the
Ray driver as the Blender side starts it (core.farm.FarmClient): results equal a local worker's,
a bad photo or one over the size limit fails only its scene, a killed actor and a removed node cost a
retry, not a scene, a scene over its timeout fails alone and its actor is replaced, an interrupted
driver leaves no actor running, and a client without the token is refused."""
from __future__ import annotations

import os
import resource
import signal
import struct
import time
import zlib
from pathlib import Path
from typing import Any, Optional

import numpy as np

from mvdust3r_blender.core.bundle import read_bundle
from mvdust3r_blender.client.farm import FarmClient
from mvdust3r_blender.core.farm import FarmEvent, FarmJob, FarmScene
from mvdust3r_blender.core.protocol.requests import ReconstructRequest
from mvdust3r_blender.core.protocol.wire import encode
from mvdust3r_blender.client.worker_client import WorkerClient
from mvdust3r_blender.engine.jobs import MAX_FILE_BYTES
from tests.helpers.photos import smooth_photos
from test_worker import PYTHON, TIMEOUT, _virtual_memory


def scene(root: Path, name: str, seed: int, views: int = 4) -> FarmScene:
    photos = smooth_photos(root / "photos" / name, views, seed=seed)
    request = ReconstructRequest(id=name, photos=[str(p) for p in photos], output=str(root / "out" / f"{name}.npz"),
                                 device="cpu", exports=["ply"], export_dir=str(root / "out" / name))
    return FarmScene(name, encode(request))


def slow_photos(folder: Path, views: int = 64, side: int = 8000) -> list[str]:
    """Photos that take long to decode and cost little to send: `views` PNGs of `side`² pixels of one
    colour, about 200 KB each; the worker inflates and resizes every one (64 take 44 s on two cores,
    measured). They share their pixels and differ by a text chunk, so none is left out as a duplicate."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    pack = zlib.compressobj(6)
    row = b"\x00" + bytes((90, 120, 150)) * side  # filter byte, then the row's RGB
    pixels = b"".join([*(pack.compress(row) for _ in range(side)), pack.flush()])
    head = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
    folder.mkdir(parents=True)
    photos = []
    for k in range(views):
        photo = folder / f"photo_{k:03d}.png"
        photo.write_bytes(head + chunk(b"tEXt", f"Comment\x00copy {k}".encode()) + chunk(b"IDAT", pixels)
                          + chunk(b"IEND", b""))
        photos.append(str(photo))
    return photos


def run(cluster: Any, scenes: list[FarmScene], golden: Path, *, env: Optional[dict[str, str]] = None,
        on_event: Any = None, timeout: Optional[float] = None) -> list[FarmEvent]:
    job = FarmJob(address=cluster.address, scenes=scenes, checkpoint=str(golden / "mvd_reduced_ckpt.pth"),
                  device="cpu", timeout=timeout)
    client = FarmClient(PYTHON, job, env=env if env is not None else cluster.env())
    events: list[FarmEvent] = []
    try:
        for event in client.events():
            events.append(event)
            if on_event is not None:
                on_event(event, client)
    finally:
        client.stop()
    assert events[-1].kind == "end", events
    return events


def kinds(events: list[FarmEvent], kind: str) -> dict[str, FarmEvent]:
    return {e.scene: e for e in events if e.kind == kind}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()


def gone_soon(pids: set[int], within: float = 30.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not any(alive(p) for p in pids):
            return True
        time.sleep(0.2)
    return False


def test_four_scenes_and_a_broken_one_match_a_local_worker(ray_farm: Any, golden: Path, tmp_path: Path) -> None:
    scenes = [scene(tmp_path, f"scene{i}", seed=i) for i in range(4)]
    broken = scene(tmp_path, "broken", seed=9, views=3)
    bad_photo = tmp_path / "photos" / "broken" / "photo_001.png"
    bad_photo.write_bytes(b"this is not a PNG file")
    huge = scene(tmp_path, "huge", seed=8, views=3)
    huge_photo = tmp_path / "photos" / "huge" / "photo_002.png"
    os.truncate(huge_photo, MAX_FILE_BYTES + 1)  # sparse: a byte over the limit, no disk used
    events = run(ray_farm, [*scenes[:2], broken, huge, *scenes[2:]], golden)

    done, failed = kinds(events, "done"), kinds(events, "failed")
    assert sorted(done) == [f"scene{i}" for i in range(4)] and sorted(failed) == ["broken", "huge"], events
    assert "photo_001.png" in failed["broken"].message and failed["broken"].attempt == 1  # named, not retried
    # over the size limit: refused on this side, before its photos travel (never started), named, not retried
    assert failed["huge"].code == "input" and failed["huge"].attempt == 0, failed["huge"]
    assert str(huge_photo) in failed["huge"].message and f"{MAX_FILE_BYTES} bytes" in failed["huge"].message
    assert "huge" not in kinds(events, "started")
    assert not kinds(events, "retry")
    assert len({e.node for e in done.values()}) == 2  # both nodes worked
    assert not (tmp_path / "out" / "broken.npz").exists() and not list((tmp_path / "out").glob(".*"))

    pids = {e.detail["pid"] for e in events if e.kind == "started"}
    assert gone_soon(pids)  # the driver released its actors
    with WorkerClient(PYTHON) as local:  # the same requests on a local worker: the same numbers and files
        for i in range(4):
            photos = sorted((tmp_path / "photos" / f"scene{i}").glob("*.png"))
            out = tmp_path / "local" / f"scene{i}.npz"
            local.wait(local.reconstruct(photos, out, checkpoint=golden / "mvd_reduced_ckpt.pth", device="cpu",
                                         exports=["ply"], export_dir=tmp_path / "local" / f"scene{i}"),
                       timeout=TIMEOUT)
            got, want = read_bundle(tmp_path / "out" / f"scene{i}.npz"), read_bundle(out)
            assert got.photo_paths == want.photo_paths == [str(p) for p in photos]
            for name in ("pts3d", "conf", "intrinsics", "cam2world", "crop_box", "colors"):
                np.testing.assert_allclose(getattr(got, name), getattr(want, name), rtol=1e-5, atol=1e-6,
                                           err_msg=name)
            ply = (tmp_path / "out" / f"scene{i}" / "points.ply")
            assert done[f"scene{i}"].exports == {"ply": str(ply)}
            assert ply.stat().st_size == (tmp_path / "local" / f"scene{i}" / "points.ply").stat().st_size


def test_an_actor_killed_mid_scene_costs_a_retry_not_the_scene(ray_farm: Any, golden: Path,
                                                                tmp_path: Path) -> None:
    scenes = [scene(tmp_path, f"scene{i}", seed=i, views=6) for i in range(4)]
    killed: list[int] = []

    def kill_first(event: FarmEvent, client: FarmClient) -> None:
        if event.kind == "started" and not killed:
            killed.append(int(event.detail["pid"]))
            os.kill(killed[0], signal.SIGKILL)

    events = run(ray_farm, scenes, golden, on_event=kill_first)
    retried = kinds(events, "retry")
    assert retried, events
    assert all("actor-" in e.message and "lost" in e.message for e in retried.values())
    assert sorted(kinds(events, "done")) == [f"scene{i}" for i in range(4)] and not kinds(events, "failed")
    assert all(kinds(events, "done")[name].attempt == 2 for name in retried)
    for i in range(4):
        read_bundle(tmp_path / "out" / f"scene{i}.npz")


TIMEOUT_S = 6.0
"""The batch's per-scene timeout in the test below: ten times what a small scene takes from being sent
to landing on the 2-core test machine at load 3 (0.6 s at most, measured), a seventh of what decoding
the slow scene's photos takes there alone (44 s), and less while the two slow scenes share the cores."""


def test_a_scene_over_its_timeout_fails_alone_and_its_actor_is_replaced(ray_farm: Any, golden: Path,
                                                                         tmp_path: Path) -> None:
    # each slow scene goes first to an actor of the pool of two, with a small one queued behind it:
    # both actors time out and are stopped, and the small scenes queued behind finish on replacements
    photos = slow_photos(tmp_path / "photos" / "slow")
    slow = [FarmScene(name, encode(ReconstructRequest(id=name, photos=photos, device="cpu",
                                                      output=str(tmp_path / "out" / f"{name}.npz"))))
            for name in ("slow_a", "slow_b")]
    small = [scene(tmp_path, f"scene{i}", seed=i) for i in range(4)]
    ran_on: dict[str, int] = {}  # scene -> pid of the actor of its last attempt
    stopped: dict[str, bool] = {}

    def watch(event: FarmEvent, client: FarmClient) -> None:
        if event.kind == "started":
            ran_on[event.scene] = int(event.detail["pid"])
        if event.kind == "failed" and event.code == "timeout":  # its actor stops; the batch goes on
            stopped[event.scene] = gone_soon({ran_on[event.scene]})

    events = run(ray_farm, [slow[0], small[0], slow[1], *small[1:]], golden, on_event=watch, timeout=TIMEOUT_S)

    failed, done = kinds(events, "failed"), kinds(events, "done")
    assert sorted(failed) == ["slow_a", "slow_b"] and sorted(done) == [f"scene{i}" for i in range(4)], events
    for name in ("slow_a", "slow_b"):
        assert failed[name].code == "timeout" and failed[name].attempt == 1, failed[name]  # not retried
        assert failed[name].message == f"the scene took longer than {TIMEOUT_S:g} s"
        assert failed[name].hint == "raise the timeout"
        assert stopped[name], f"the actor that ran {name} still runs"
    assert not (tmp_path / "out" / "slow_a.npz").exists() and not (tmp_path / "out" / "slow_b.npz").exists()
    # the small scenes queued behind them were tried again, saying why (scene0 always: it went with slow_a)
    assert "scene0" in kinds(events, "retry")
    for retry in kinds(events, "retry").values():
        assert retry.scene.startswith("scene") and "stopped after a scene's timeout" in retry.message, retry
    # room for two actors (one CPU per node); three or more ran scenes: the stopped ones gave their
    # places back and were replaced
    assert next(e for e in events if e.kind == "cluster").detail["actors"] == 2
    assert len({e.actor for e in events if e.kind == "started"}) >= 3, events
    for i in range(4):
        read_bundle(tmp_path / "out" / f"scene{i}.npz")
    assert gone_soon(set(ran_on.values()))  # nothing of the batch left running


def test_an_actor_out_of_memory_costs_a_retry_elsewhere(ray_farm: Any, golden: Path, tmp_path: Path) -> None:
    """Real memory exhaustion, as in test_worker's: the first actor to get scenes is stopped (SIGSTOP)
    as its first scene is sent (24 small photos: twice the 12 measured at about a second of work on the actor, against
    the milliseconds this process takes to react), its address space capped 320 MiB above its size
    (prlimit from outside; a small scene and the decoder threads fit), and let go once the other actor
    has scenes. Its second scene has a 9000² photo (243 MB per copy, decoded and copied twice): memory
    runs out, the actor answers and the scene is tried again on the other actor, where it lands."""
    photos = [str(p) for p in smooth_photos(tmp_path / "photos" / "oom", 3, seed=7)]
    photos += slow_photos(tmp_path / "photos" / "oom_big", views=1, side=9000)
    oom = FarmScene("oom", encode(ReconstructRequest(id="oom", photos=photos, device="cpu",
                                                     output=str(tmp_path / "out" / "oom.npz"))))
    small = [scene(tmp_path, f"scene{i}", seed=i, views=24 if i == 0 else 4) for i in range(4)]
    capped: dict[str, int] = {}  # actor -> pid
    stopped: list[int] = []

    def squeeze(event: FarmEvent, client: FarmClient) -> None:
        if event.kind != "started":
            return
        pid = int(event.detail["pid"])
        if not capped:
            os.kill(pid, signal.SIGSTOP)
            stopped.append(pid)
            cap = _virtual_memory(pid) + (320 << 20)
            resource.prlimit(pid, resource.RLIMIT_AS, (cap, cap))
            capped[event.actor] = pid
        elif event.actor not in capped and stopped:
            os.kill(stopped.pop(), signal.SIGCONT)

    try:
        events = run(ray_farm, [small[0], oom, *small[1:]], golden, on_event=squeeze)
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
    (first,) = capped
    retried, done = kinds(events, "retry"), kinds(events, "done")
    assert list(retried) == ["oom"] and not kinds(events, "failed"), events
    assert retried["oom"].actor == first and "ran out of memory" in retried["oom"].message, retried["oom"]
    assert sorted(done) == ["oom", *(f"scene{i}" for i in range(4))]
    assert done["oom"].attempt == 2 and done["oom"].actor != first
    assert done["scene0"].actor == first  # a small scene fitted under the cap
    assert len({e.actor for e in events if e.kind == "started"}) == 2  # running out of memory cost no actor
    assert read_bundle(tmp_path / "out" / "oom.npz").pts3d.shape[0] == 4


def test_an_interrupted_driver_leaves_no_actor_running(ray_farm: Any, golden: Path, tmp_path: Path) -> None:
    scenes = [scene(tmp_path, f"scene{i}", seed=i, views=6) for i in range(6)]
    pids: set[int] = set()

    def interrupt(event: FarmEvent, client: FarmClient) -> None:
        if event.kind == "started":
            pids.add(int(event.detail["pid"]))
            client.interrupt()  # SIGINT, as Ctrl-C in a terminal

    events = run(ray_farm, scenes, golden, on_event=interrupt)
    assert any(e.kind == "error" and e.code == "cancelled" for e in events), events
    assert pids and gone_soon(pids)
    assert len(kinds(events, "done")) < 6


def test_a_client_without_the_token_is_refused(ray_farm: Any, golden: Path, tmp_path: Path) -> None:
    for env in ({k: v for k, v in ray_farm.env(token=None).items() if k != "RAY_AUTH_MODE"},  # Ray's defaults
                ray_farm.env(token="0" * 64)):  # a wrong token
        events = run(ray_farm, [scene(tmp_path, "scene0", seed=0)], golden, env=env)
        errors = [e for e in events if e.kind == "error"]
        assert len(errors) == 1 and "refused" in errors[0].message and "RAY_AUTH_TOKEN" in errors[0].hint, events
        assert not kinds(events, "started")


def test_a_node_removed_mid_batch_costs_retries_not_scenes(ray_farm: Any, golden: Path, tmp_path: Path) -> None:
    scenes = [scene(tmp_path, f"scene{i}", seed=i, views=6) for i in range(6)]
    second = ray_farm.nodes[1]
    removed: list[str] = []

    def remove_node(event: FarmEvent, client: FarmClient) -> None:
        if event.kind == "started" and not removed and event.detail["node_id"] != ray_farm.head_node_id():
            removed.append(event.node)
            second.stop()

    try:
        events = run(ray_farm, scenes, golden, on_event=remove_node)
        assert removed
        assert kinds(events, "retry") and not kinds(events, "failed"), events
        done = kinds(events, "done")
        assert sorted(done) == [f"scene{i}" for i in range(6)]
        assert all(done[name].node != removed[0] for name in kinds(events, "retry"))
    finally:  # the cluster has two nodes again for the tests after this one
        ray_farm.nodes.remove(second)
        ray_farm.add_node()
        ray_farm.wait_for_nodes(2)


def test_the_summary_says_what_was_retried(tmp_path: Path) -> None:
    from mvdust3r_blender.batch_records import BatchReport, SceneOutcome

    lost = "actor-1 on vm/1a2b3c4d was lost: ActorDiedError: the actor died unexpectedly"
    report = BatchReport(out_dir=tmp_path, scenes=[SceneOutcome("kitchen", status="done", retries=[lost]),
                                                   SceneOutcome("attic", status="done")])
    lines = report.table().splitlines()
    assert f"kitchen: retried 1x ({lost})" in lines
    assert not any(line.startswith("attic: retried") for line in lines)
    assert "2 done, 0 skipped, 0 failed" in report.table()
