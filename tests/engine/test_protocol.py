"""The JSON-lines protocol: round trips, strict requests, lenient events."""
from __future__ import annotations

import json

import pytest

from mvdust3r_blender.core.confidence import ConfidenceCut
from mvdust3r_blender.core.options import ReconstructOptions
from mvdust3r_blender.core.protocol.events import (FINAL_EVENTS, AckEvent, DataEvent, DeviceInfo, ErrorEvent,
                                                   FetchedEvent, HelloEvent, LoadedEvent, ModelInfo, ProgressEvent,
                                                   ReadyEvent, ResultEvent, decode_event)
from mvdust3r_blender.core.protocol.requests import (CancelRequest, FetchRequest, HelloRequest, LoadRequest,
                                                     PutRequest, ReconstructRequest, ReleaseRequest, ShutdownRequest,
                                                     decode_request)
from mvdust3r_blender.core.protocol.wire import ProtocolError, encode


def test_every_request_round_trips() -> None:
    requests = [
        HelloRequest(id="a"),
        LoadRequest(id="b", checkpoint="/m/MVDp_s2.pth", device="cuda:1", dtype="float16"),
        ReconstructRequest(id="c", photos=["/p/1.jpg", "/p/2 é.jpg"], output="/o/scene.npz",
                           options=ReconstructOptions(gaussians=False, reference_view=2, pose_drop_percent=5.0,
                                                      focal="26"),
                           checkpoint="/m/MVD.pth", exports=["ply"], export_dir="/o",
                           export_cut=ConfidenceCut(confidence_drop_percent=10.0, min_confidence=2.5)),
        CancelRequest(id="d", target="c"),
        CancelRequest(id="e"),
        ReleaseRequest(id="f"),
        ShutdownRequest(id="g"),
    ]
    for request in requests:
        line = encode(request)
        assert "\n" not in line
        assert json.loads(line)["type"] == request.type
        assert decode_request(line) == request
        assert decode_request(line.encode("utf-8")) == request


def test_every_event_round_trips() -> None:
    model = ModelInfo(checkpoint="/m/MVD.pth", device="cuda:0", dtype="float16", variant="MVD")
    events = [
        ReadyEvent(pid=12),
        HelloEvent(id="a", extension="0.1.0", python="3.11.7", torch="2.13.0", numpy="2.4", pid=12,
                   devices=[DeviceInfo(name="cuda:0", label="H100", memory=80 << 30), DeviceInfo(name="cpu")],
                   model=model, loads=1),
        ProgressEvent(id="c", stage="network", fraction=0.5),
        LoadedEvent(id="b", model=model, reused=True, loads=1, seconds=0.25),
        ResultEvent(id="c", bundle="/o/scene.npz", views=4, points=4 * 224 * 224, gaussians=True,
                    timings={"network": 0.5, "total": 1.0}, model_reused=True, loads=1),
        AckEvent(id="d", request="cancel", detail="cancelling c"),
        ErrorEvent(id=None, code="bad_request", message="not JSON", hint="one object per line"),
    ]
    for event in events:
        assert decode_event(encode(event)) == event


def test_final_events_end_requests_and_progress_does_not() -> None:
    assert ProgressEvent not in FINAL_EVENTS and ReadyEvent not in FINAL_EVENTS
    assert DataEvent not in FINAL_EVENTS  # a result's file parts come before the result
    assert {c.type for c in FINAL_EVENTS} == {"hello", "loaded", "result", "fetched", "ack", "error"}


def test_job_mode_messages_round_trip() -> None:
    """The remote worker's additions (docs/remote.md): put, fetch, the job field, data, fetched."""
    requests = [PutRequest(id="r1.put0.0", job="r1", name="photos/0000/a.jpg", size=3, data="YWJj"),
                FetchRequest(id="f", url="https://example.org/MVD.pth", filename="MVD.pth", size=10),
                ReconstructRequest(id="r1", photos=["photos/0000/a.jpg"], output="bundle.npz", job="r1")]
    for request in requests:
        assert decode_request(encode(request)) == request
    events = [DataEvent(id="r1", name="bundle.npz", size=3, offset=0, data="YWJj", sha256="ab"),
              FetchedEvent(id="f", path="/home/u/.cache/mvdust3r-blender/models/MVD.pth", size=10, sha256="cd")]
    for event in events:
        assert decode_event(encode(event)) == event
    with pytest.raises(ProtocolError, match="'size'"):
        decode_request('{"type": "put", "id": "x", "job": "j", "name": "a"}')


@pytest.mark.parametrize("line, fragment, request_id", [
    ("{not json", "not a JSON line", None),
    ("[1, 2]", "expected a JSON object, got list", None),
    ('{"type": "explode", "id": "x"}', "unknown request type 'explode'", "x"),
    ('{"type": ["hello"], "id": "x"}', "unknown request type", "x"),
    ('{"type": "hello"}', "hello request has no 'id'", None),
    ('{"type": "hello", "id": 7}', "hello request has no 'id'", None),
    ('{"type": "load", "id": "x"}', "missing field 'checkpoint'", "x"),
    ('{"type": "load", "id": "x", "checkpoint": 3}', "field 'checkpoint' must be a string, got int", "x"),
    ('{"type": "load", "id": "x", "checkpoint": "/m", "chekpoint": "/m"}', "unknown field(s) chekpoint", "x"),
    ('{"type": "reconstruct", "id": "x", "photos": "/a.jpg", "output": "/o"}', "'photos' must be a list", "x"),
    ('{"type": "reconstruct", "id": "x", "photos": ["/a", 2], "output": "/o"}', "'photos' must be a string", "x"),
    ('{"type": "reconstruct", "id": "x", "photos": [], "output": "/o", "options": []}', "must be an object", "x"),
    ('{"type": "hello", "id": "x", "protocol": true}', "'protocol' must be an integer, got bool", "x"),
    (b'{"type": "hello", "id": "\xff"}', "not a JSON line", None),
])
def test_bad_requests_are_named(line: str | bytes, fragment: str, request_id: str | None) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_request(line)
    assert fragment in str(caught.value)
    assert caught.value.request_id == request_id


def test_events_ignore_unknown_fields_and_types() -> None:
    line = json.dumps({"type": "progress", "id": "r1", "stage": "network", "fraction": 1, "eta": 3})
    assert decode_event(line) == ProgressEvent(id="r1", stage="network", fraction=1.0)
    nested = json.dumps({"type": "loaded", "id": "r1", "model": {"checkpoint": "/c", "device": "cpu",
                                                                 "dtype": "float32", "sharded": False}})
    event = decode_event(nested)
    assert isinstance(event, LoadedEvent) and event.model == ModelInfo(checkpoint="/c", device="cpu", dtype="float32")
    assert decode_event('{"type": "telemetry", "id": null}') is None
    with pytest.raises(ProtocolError, match="'fraction' must be a number"):
        decode_event('{"type": "progress", "id": "r1", "fraction": "half"}')


def test_encoding_refuses_non_finite_numbers() -> None:
    with pytest.raises(ValueError):
        encode(ProgressEvent(id="r", stage="x", fraction=float("nan")))
