"""The download cache: concurrent jobs on a cold cache, and a cached file whose sha256 is wrong.

The corpus is served from a local http.server on 127.0.0.1; nothing leaves the machine.
"""

import hashlib
import http.server
import multiprocessing
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from seqlab.data.corpora import DownloadError, RemoteFile, fetch

BODY = ("To be, or not to be, that is the question:\n" * 2000).encode()
SHA = hashlib.sha256(BODY).hexdigest()


class SlowServer(http.server.ThreadingHTTPServer):
    """Serves BODY in pieces with pauses, so two downloads started together overlap; counts the GETs."""

    def __init__(self, body: bytes) -> None:
        self.body, self.gets = body, 0
        super().__init__(("127.0.0.1", 0), SlowHandler)


class SlowHandler(http.server.BaseHTTPRequestHandler):
    server: SlowServer

    def do_GET(self) -> None:
        self.server.gets += 1
        body = self.server.body
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        piece = len(body) // 8 + 1
        for start in range(0, len(body), piece):
            self.wfile.write(body[start : start + piece])
            self.wfile.flush()
            time.sleep(0.05)

    def log_message(self, *args: object) -> None:
        pass


def serve(body: bytes) -> Iterator[SlowServer]:
    server = SlowServer(body)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def server() -> Iterator[SlowServer]:
    yield from serve(BODY)


def remote(server: SlowServer, sha: str = SHA) -> RemoteFile:
    return RemoteFile("corpus/input.txt", f"http://127.0.0.1:{server.server_port}/input.txt", sha)


def unreachable_port() -> int:
    with socket.socket() as s:  # a port that was free a moment ago: connecting to it is refused
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in (cache / "corpus").iterdir() if p.name.endswith(".part"))


def test_two_processes_on_a_cold_cache(server: SlowServer, tmp_path: Path):
    file = remote(server)
    fork = multiprocessing.get_context("fork")  # the parent has imported everything: starting is instant
    jobs = [fork.Process(target=fetch, args=(file, tmp_path)) for _ in range(2)]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join(timeout=60)
    assert [job.exitcode for job in jobs] == [0, 0]
    assert (tmp_path / file.path).read_bytes() == BODY
    assert server.gets == 1  # the second job waited on the lock and found the file verified
    assert leftovers(tmp_path) == []


def test_a_corrupted_cached_file_is_fetched_again(server: SlowServer, tmp_path: Path):
    file = remote(server)
    dest = tmp_path / file.path
    dest.parent.mkdir(parents=True)
    dest.write_bytes(BODY[:-10] + b"corrupted!")
    assert fetch(file, tmp_path) == dest
    assert dest.read_bytes() == BODY
    assert server.gets == 1
    assert fetch(file, tmp_path) == dest and server.gets == 1  # verified now: no second download


def test_a_corrupted_cached_file_is_reported_when_the_source_is_unreachable(tmp_path: Path):
    file = RemoteFile("corpus/input.txt", f"http://127.0.0.1:{unreachable_port()}/input.txt", SHA)
    dest = tmp_path / file.path
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"half a download")
    with pytest.raises(DownloadError, match="sha256 is wrong and a fresh copy could not be downloaded"):
        fetch(file, tmp_path)
    assert leftovers(tmp_path) == []


def test_a_download_with_the_wrong_checksum_is_never_cached(server: SlowServer, tmp_path: Path):
    file = remote(server, sha="0" * 64)
    with pytest.raises(DownloadError, match=f"downloaded with sha256 {SHA}, expected 0000"):
        fetch(file, tmp_path)
    assert not (tmp_path / file.path).exists()
    assert leftovers(tmp_path) == []
