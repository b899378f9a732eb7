"""``download_model`` (behind ``LlamaCPP(model_url=...)``) against servers on 127.0.0.1 that each
test starts itself: caching, resuming, SHA-256 checks, and clear errors instead of hangs."""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from llamacpp_integrations.download import (
    download_model,
    model_url_cache_path,
)
from llamacpp_integrations.errors import InvalidParameterError, ModelLoadError

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB, every byte value
PAYLOAD_SHA256 = hashlib.sha256(PAYLOAD).hexdigest()


class FileServer:
    """Serves ``PAYLOAD`` at /model.gguf, honouring ``Range: bytes=N-``.

    ``cut_after`` makes the next response announce the whole length but close the connection
    after that many bytes (an interrupted download).
    """

    def __init__(self) -> None:
        self.requests: list[dict[str, str]] = []
        self.cut_after: int | None = None
        self.support_ranges = True
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                server.requests.append(dict(self.headers))
                if self.path != "/model.gguf":
                    self.send_error(404, "Not Found")
                    return
                start = 0
                rng = self.headers.get("Range")
                if rng and server.support_ranges:
                    start = int(rng.removeprefix("bytes=").rstrip("-"))
                    if start >= len(PAYLOAD):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(PAYLOAD)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header(
                        "Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}"
                    )
                else:
                    self.send_response(200)
                body = PAYLOAD[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.cut_after is not None:
                    self.wfile.write(body[: server.cut_after])
                    server.cut_after = None
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/model.gguf"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[FileServer]:
    s = FileServer()
    try:
        yield s
    finally:
        s.close()


def test_downloads_into_the_cache_with_a_progress_bar(
    server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = download_model(server.url, cache=tmp_path)
    assert path.read_bytes() == PAYLOAD
    assert path == model_url_cache_path(server.url, tmp_path)
    assert path.name == "model.gguf"
    assert not list(tmp_path.rglob("*.part"))
    err = capsys.readouterr().err
    assert "downloading model.gguf" in err
    assert "1.0/1.0 MB" in err


def test_cached_file_is_returned_without_a_request(server: FileServer, tmp_path: Path) -> None:
    first = download_model(server.url, cache=tmp_path, progress=False)
    n = len(server.requests)
    again = download_model(server.url, cache=tmp_path, progress=False)
    verified = download_model(server.url, cache=tmp_path, sha256=PAYLOAD_SHA256, progress=False)
    assert first == again == verified
    assert len(server.requests) == n


def test_interrupted_download_resumes_with_a_range_request(
    server: FileServer, tmp_path: Path
) -> None:
    server.cut_after = 300_000
    with pytest.raises(ModelLoadError, match="after 300000 of 1048576 bytes"):
        download_model(server.url, cache=tmp_path, progress=False)
    partial = model_url_cache_path(server.url, tmp_path).with_suffix(".gguf.part")
    assert partial.stat().st_size == 300_000
    path = download_model(server.url, cache=tmp_path, sha256=PAYLOAD_SHA256, progress=False)
    assert path.read_bytes() == PAYLOAD
    assert server.requests[-1].get("Range") == "bytes=300000-"
    assert not partial.exists()


def test_server_without_ranges_restarts_the_download(server: FileServer, tmp_path: Path) -> None:
    server.support_ranges = False
    partial = model_url_cache_path(server.url, tmp_path).with_suffix(".gguf.part")
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"stale bytes")
    path = download_model(server.url, cache=tmp_path, sha256=PAYLOAD_SHA256, progress=False)
    assert path.read_bytes() == PAYLOAD


def test_complete_partial_file_is_finished_without_refetching(
    server: FileServer, tmp_path: Path
) -> None:
    partial = model_url_cache_path(server.url, tmp_path).with_suffix(".gguf.part")
    partial.parent.mkdir(parents=True)
    partial.write_bytes(PAYLOAD)  # crashed between the last byte and the rename
    path = download_model(server.url, cache=tmp_path, sha256=PAYLOAD_SHA256, progress=False)
    assert path.read_bytes() == PAYLOAD


def test_sha256_mismatch_raises_and_deletes_the_file(server: FileServer, tmp_path: Path) -> None:
    wrong = "0" * 64
    with pytest.raises(ModelLoadError, match="failed its SHA-256 check"):
        download_model(server.url, cache=tmp_path, sha256=wrong, progress=False)
    target = model_url_cache_path(server.url, tmp_path)
    assert not target.exists()
    assert not target.with_suffix(".gguf.part").exists()


def test_cached_file_with_another_hash_is_fetched_again(server: FileServer, tmp_path: Path) -> None:
    target = model_url_cache_path(server.url, tmp_path)
    target.parent.mkdir(parents=True)
    target.write_bytes(b"an older file under the same URL")
    path = download_model(server.url, cache=tmp_path, sha256=PAYLOAD_SHA256, progress=False)
    assert path.read_bytes() == PAYLOAD


def test_http_error_names_the_status(server: FileServer, tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="HTTP 404"):
        download_model(server.url.replace("model.gguf", "missing.gguf"), cache=tmp_path)


def test_unreachable_host_raises_at_once(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(ModelLoadError, match="could not download"):
        download_model(f"http://127.0.0.1:{port}/model.gguf", cache=tmp_path, progress=False)
    assert time.monotonic() - start < 5


def test_silent_server_times_out_instead_of_hanging(tmp_path: Path) -> None:
    with socket.socket() as listener:  # accepts connections, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/model.gguf"
        start = time.monotonic()
        with pytest.raises(ModelLoadError, match="timed out"):
            download_model(url, cache=tmp_path, progress=False, timeout=0.5)
        assert time.monotonic() - start < 5


@pytest.mark.parametrize(
    "url", ["", "model.gguf", "ftp://127.0.0.1/model.gguf", "file:///tmp/model.gguf", "http://"]
)
def test_non_http_urls_are_refused(url: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidParameterError, match="model_url"):
        download_model(url, cache=tmp_path)


def test_malformed_sha256_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidParameterError, match="64 hex digits"):
        download_model("http://127.0.0.1:9/model.gguf", cache=tmp_path, sha256="abc")
