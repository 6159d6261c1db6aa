"""Checkpoint download against a real HTTP server on 127.0.0.1 (with Range support written here):
full download, interrupted and resumed, a server that ignores Range, wrong size, server errors,
cancel — and never a half-written file at the final path."""
from __future__ import annotations

import http.server
import os
import threading
from pathlib import Path
from typing import Iterator

import importlib
from types import ModuleType

import pytest


@pytest.fixture
def dl(ext: ModuleType) -> ModuleType:
    """The installed extension's download module (what Blender runs)."""
    return importlib.import_module(f"{ext.__name__}.core.download")


PAYLOAD = os.urandom(3 * 1024 * 1024 + 12345)


class RangeServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    requests_seen: list[tuple[str, str | None]]
    drop_after: int | None  # /flaky: stop after this many body bytes, once


class Handler(http.server.BaseHTTPRequestHandler):
    server: RangeServer

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        range_header = self.headers.get("Range")
        self.server.requests_seen.append((self.path, range_header))
        if self.path == "/error":
            self.send_error(503, "Service Unavailable")
            return
        if self.path == "/missing":
            self.send_error(404, "Not Found")
            return
        body, start = PAYLOAD, 0
        if range_header and self.path != "/norange":
            start = int(range_header.removeprefix("bytes=").split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        rest = body[start:]
        self.send_header("Content-Length", str(len(rest)))
        self.end_headers()
        if self.path == "/flaky" and self.server.drop_after is not None:
            self.wfile.write(rest[: self.server.drop_after])
            self.server.drop_after = None
            self.wfile.flush()
            self.close_connection = True
            return
        if self.path == "/slow":
            for i in range(0, len(rest), 65536):
                self.wfile.write(rest[i:i + 65536])
                threading.Event().wait(0.02)
            return
        self.wfile.write(rest)


@pytest.fixture
def server() -> Iterator[RangeServer]:
    srv = RangeServer(("127.0.0.1", 0), Handler)
    srv.requests_seen = []
    srv.drop_after = None
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(5)


def url(server: RangeServer, path: str) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}{path}"


def test_full_download_with_progress(dl: ModuleType, server: RangeServer, tmp_path: Path) -> None:
    seen: list[tuple[int, int | None]] = []
    dest = tmp_path / "models" / "MVDp_s2.pth"
    assert dl.download_file(url(server, "/ckpt"), dest, len(PAYLOAD), on_progress=lambda d, t: seen.append((d, t))) == dest
    assert dest.read_bytes() == PAYLOAD
    assert not dl.part_path(dest).exists()
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD)) and len(seen) >= 4
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_interrupted_download_resumes_with_range(dl: ModuleType, server: RangeServer, tmp_path: Path) -> None:
    dest = tmp_path / "MVD.pth"
    server.drop_after = 1_000_000
    with pytest.raises(dl.DownloadError, match="broke after") as err:
        dl.download_file(url(server, "/flaky"), dest, len(PAYLOAD))
    assert "resumes" in err.value.hint
    assert not dest.exists()
    kept = dl.part_path(dest).stat().st_size
    assert 0 < kept <= 1_000_000
    dl.download_file(url(server, "/flaky"), dest, len(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD
    assert server.requests_seen[-1] == ("/flaky", f"bytes={kept}-")


def test_a_server_that_ignores_range_restarts_cleanly(dl: ModuleType, server: RangeServer, tmp_path: Path) -> None:
    dest = tmp_path / "MVD.pth"
    dl.part_path(dest).write_bytes(b"x" * 5000)  # stale bytes that must not stay in front
    dl.download_file(url(server, "/norange"), dest, len(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD


def test_wrong_size_is_an_error_and_leaves_nothing(dl: ModuleType, server: RangeServer, tmp_path: Path) -> None:
    dest = tmp_path / "MVD.pth"
    with pytest.raises(dl.DownloadError, match=f"gave {len(PAYLOAD)} bytes, expected {len(PAYLOAD) + 1}"):
        dl.download_file(url(server, "/ckpt"), dest, len(PAYLOAD) + 1)
    assert not dest.exists() and not dl.part_path(dest).exists()


def test_server_errors_give_clear_messages(dl: ModuleType, server: RangeServer, tmp_path: Path) -> None:
    dest = tmp_path / "MVD.pth"
    with pytest.raises(dl.DownloadError, match="answered 503") as err:
        dl.download_file(url(server, "/error"), dest, 10)
    assert url(server, "/error") in err.value.message and "retry later" in err.value.hint
    with pytest.raises(dl.DownloadError, match="answered 404") as err:
        dl.download_file(url(server, "/missing"), dest, 10)
    assert "local checkpoint" in err.value.hint
    assert not dest.exists()


def test_unreachable_host_says_to_check_the_connection(dl: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(dl.DownloadError, match="cannot reach") as err:
        dl.download_file("http://127.0.0.1:9/ckpt", tmp_path / "MVD.pth", 10, timeout=5)  # port 9: nothing listens
    assert "internet connection" in err.value.hint


def test_download_thread_reports_progress_and_can_be_cancelled_and_resumed(dl: ModuleType, server: RangeServer,
                                                                            tmp_path: Path) -> None:
    dest = tmp_path / "MVDp_s2.pth"
    job = dl.Download(url(server, "/slow"), dest, len(PAYLOAD))
    job.start()
    while job.progress.done_bytes < 200_000 and job.progress.state is dl.DownloadState.RUNNING:
        threading.Event().wait(0.01)
    job.cancel()
    stopped = job.join(10)
    assert stopped.state is dl.DownloadState.CANCELLED
    assert 0 < stopped.done_bytes < len(PAYLOAD) and not dest.exists()
    again = dl.Download(url(server, "/ckpt"), dest, len(PAYLOAD))
    again.start()
    assert again.progress.done_bytes > 0  # starts from the kept part
    finished = again.join(30)
    assert finished.state is dl.DownloadState.DONE and finished.fraction == 1.0 and finished.error is None
    assert dest.read_bytes() == PAYLOAD
    assert server.requests_seen[-1][1] is not None  # the second attempt asked for a range


def test_download_thread_failure_is_reported_not_raised(dl: ModuleType, server: RangeServer, tmp_path: Path) -> None:
    job = dl.Download(url(server, "/error"), tmp_path / "MVD.pth", 10)
    job.start()
    result = job.join(10)
    assert result.state is dl.DownloadState.FAILED
    assert result.error is not None and "503" in result.error.message


def test_only_http_addresses_are_downloaded(dl: ModuleType, tmp_path: Path) -> None:
    """A file:// (or any non-http) address once copied whatever it named into the model folder."""
    source = tmp_path / "secret.txt"
    source.write_text("not a model")
    for address in (f"file://{source}", "ftp://example.org/MVD.pth", "FILE:///etc/passwd"):
        with pytest.raises(dl.DownloadError, match="is not an http\\(s\\) address"):
            dl.download_file(address, tmp_path / "MVD.pth")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret.txt"]


def test_a_known_sha256_is_checked(dl: ModuleType, server: RangeServer, tmp_path: Path) -> None:
    import hashlib

    dest = tmp_path / "MVD.pth"
    with pytest.raises(dl.DownloadError, match="SHA-256 is not the release's"):
        dl.download_file(url(server, "/ckpt"), dest, len(PAYLOAD), sha256="0" * 64)
    assert not dest.exists() and not dl.part_path(dest).exists()
    dl.download_file(url(server, "/ckpt"), dest, len(PAYLOAD), sha256=hashlib.sha256(PAYLOAD).hexdigest().upper())
    assert dest.read_bytes() == PAYLOAD
