"""A hostile "remote worker": what a compromised or broken GPU machine could send back.

tests/engine/test_remote.py copies this file into the remote test user's home and gives
``<python> hostile_remote.py MODE`` as the Remote Python, so the client reaches it through the real
sshd, ssh and bootstrap command line (``-c BOOTSTRAP DIGEST PACKAGE`` follow MODE in argv). Standard
library only. Each MODE breaks one promise the client must not rely on:

- ``silent``: prints a login banner without a newline and waits (the handshake must time out);
- ``endless-before`` / ``endless-after``: one endless line, before / after the handshake;
- ``flood``: answers every request with progress events forever, and events for a request id it was
  never sent (the client's memory and ``wait(timeout)`` must hold);
- ``chatter``: writes 24 MB of log lines to stderr as it starts (the client's log file must stay bounded);
- ``oversize``, ``unasked``, ``dot``, ``bomb``, ``die``: answer a reconstruct request with a part past
  its declared size, an export nobody asked for, files named ``exports/`` and ``.``, a 1 MB
  bundle that inflates to 1 GB, or half a bundle and then a dead connection.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import sys
import time
import zipfile

MODE, DIGEST = sys.argv[1], sys.argv[4]  # argv: MODE -c BOOTSTRAP DIGEST PACKAGE TREE
out = sys.stdout.buffer


def say(message: dict[str, object]) -> None:
    out.write(json.dumps(message).encode() + b"\n")
    out.flush()


def data(rid: str, name: str, payload: bytes, size: int | None = None, last: bool = True) -> None:
    say({"type": "data", "id": rid, "name": name, "size": len(payload) if size is None else size, "offset": 0,
         "data": base64.b64encode(payload).decode(), "sha256": hashlib.sha256(payload).hexdigest() if last else ""})


def bomb() -> bytes:
    """A deflated .npz whose one array claims (and holds) 1 GB of zeros: about 1 MB on the wire."""
    raw = io.BytesIO()
    count = 1024 ** 3 // 4
    with zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("pts3d.npy", "w", force_zip64=True) as f:
            header = "{'descr': '<f4', 'fortran_order': False, 'shape': (%d,), }" % count
            header += " " * (63 - (10 + len(header)) % 64) + "\n"
            f.write(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode())
            zeros = bytes(16 * 1024 ** 2)
            for _ in range(count * 4 // len(zeros)):
                f.write(zeros)
    return raw.getvalue()


if MODE == "silent":
    out.write(b"Welcome to the GPU box! Press any key")
    out.flush()
    time.sleep(600)
elif MODE == "endless-before":
    chunk = b"x" * (1 << 20)
    while True:
        out.write(chunk)
elif MODE == "chatter":
    chatter = b"chatter " + b"x" * 8000 + b"\n"
    for _ in range(3000):
        sys.stderr.buffer.write(chatter)
    sys.stderr.flush()
say_have = ("mvdust3r-engine: have " + DIGEST + "\n").encode()
out.write(say_have)
say({"type": "ready", "protocol": 3, "pid": os.getpid()})
if MODE == "endless-after":
    out.write(b'{"type": "progress", "id": "')
    chunk = b"x" * (1 << 20)
    while True:
        out.write(chunk)
for line in sys.stdin.buffer:
    request = json.loads(line)
    rid, kind = request.get("id"), request.get("type")
    if kind == "put":
        say({"type": "ack", "id": rid, "request": "put", "detail": ""})
        continue
    if MODE == "flood":
        others = {"type": "progress", "id": "never-sent", "stage": "network", "fraction": 0.5}
        mine = {"type": "progress", "id": rid, "stage": "network", "fraction": 0.5}
        lines = (json.dumps(others) + "\n" + json.dumps(mine) + "\n").encode() * 1000
        while True:
            out.write(lines)
            out.flush()
    if kind != "reconstruct":
        say({"type": "error", "id": rid, "code": "bad_request", "message": "hostile", "hint": ""})
        continue
    if MODE == "oversize":  # 'size: 10', then parts of 1 MiB each
        for _ in range(300):
            say({"type": "data", "id": rid, "name": "bundle.npz", "size": 10, "offset": 0,
                 "data": base64.b64encode(bytes(1 << 20)).decode(), "sha256": ""})
    elif MODE == "unasked":  # the user's own file in the export folder, overwritten by name
        data(rid, "exports/points.ply", b"ply from the remote")
        data(rid, "exports/notes.txt", b"overwritten")
    elif MODE == "dot":
        data(rid, "exports/", b"x")
        data(rid, ".", b"x")
    elif MODE == "bomb":
        data(rid, "bundle.npz", bomb())
        data(rid, "exports/points.ply", b"ply from the remote")
        say({"type": "result", "id": rid, "bundle": "bundle.npz", "views": 1, "points": 1, "gaussians": False,
             "timings": {}, "model_reused": True, "loads": 1, "exports": {"ply": "exports/points.ply"}})
    elif MODE == "die":  # half a bundle, half an export, then the connection drops
        data(rid, "exports/points.ply", b"p" * 1000, size=5000, last=False)
        data(rid, "bundle.npz", b"b" * 1000, size=5000, last=False)
        time.sleep(0.5)
        os._exit(1)
    time.sleep(600)
