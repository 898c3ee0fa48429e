"""Loopback HTTP servers for the fetch tests: a static file server with Range support, and a
fault-injecting one.

Only 127.0.0.1. Real hosts answer ``Range: bytes=a-b`` with ``206 Partial Content``; ffmpeg relies on
it to seek into an mp4 whose index lies at the end, so the normal server honours it exactly.

Faults are scripted per path, one entry per request in arrival order (``None`` = serve normally); once
a path's script is used up it is served normally, or with its last entry forever when ``always=True``.
"""

from __future__ import annotations

import mimetypes
import os
import re
import socket
import struct
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")

# Fault names understood by FaultServer.
FAULTS = (
    "429",  # Too Many Requests with Retry-After: 1
    "503",  # Service Unavailable
    "403",
    "404",
    "410",
    "html",  # 200 text/html page instead of the video
    "reset",  # full Content-Length announced, half the body sent, then a TCP RST
    "truncate",  # full Content-Length announced, half the body sent, then a clean close
    "stall",  # accept, then send nothing for `stall_s` seconds
    "ignore_range",  # 200 with the whole file (no Content-Length), Range ignored
    "empty",  # 200 video/mp4 with a zero-length body
)


@dataclass
class RequestLog:
    """What the server saw: (path, Range header or None, fault applied or None) per request."""

    entries: list[tuple[str, str | None, str | None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, path: str, range_header: str | None, fault: str | None) -> None:
        with self.lock:
            self.entries.append((path, range_header, fault))

    def count(self, path: str) -> int:
        with self.lock:
            return sum(1 for p, _, _ in self.entries if p == path)

    def faults(self, path: str) -> list[str | None]:
        with self.lock:
            return [f for p, _, f in self.entries if p == path]


class _Handler(BaseHTTPRequestHandler):
    server: _LoopbackServer
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args: object) -> None:  # keep test output quiet
        pass

    def do_HEAD(self) -> None:  # noqa: N802
        self._serve(head=True)

    def do_GET(self) -> None:  # noqa: N802
        self._serve(head=False)

    def _serve(self, *, head: bool) -> None:
        if self.server.delay_s:
            time.sleep(self.server.delay_s)  # a slow host: every request waits this long first
        path = self.path.split("?", 1)[0]
        fault = self.server.next_fault(path)
        self.server.log.add(path, self.headers.get("Range"), fault)
        if fault is not None:
            self._fault(fault, path, head=head)
            return
        file = self.server.resolve(path)
        if file is None:
            self._status(404, b"not found")
            return
        data = file.read_bytes()
        self._send_file(data, file, head=head)

    def _send_file(self, data: bytes, file: Path, *, head: bool) -> None:
        ctype = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        match = _RANGE.match(self.headers.get("Range", "").strip())
        start, end = 0, len(data) - 1
        status = 200
        if match and (match.group(1) or match.group(2)):
            if match.group(1):
                start = int(match.group(1))
                end = min(int(match.group(2)), len(data) - 1) if match.group(2) else len(data) - 1
            else:  # suffix range: the last N bytes
                start = max(0, len(data) - int(match.group(2)))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        body = data[start : end + 1]
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(body)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.end_headers()
        if not head:
            self._write(body)

    def _write(self, body: bytes) -> None:
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client closed early (ffmpeg seeking): normal

    def _status(self, code: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self._write(body)

    def _fault(self, fault: str, path: str, *, head: bool) -> None:
        if fault == "429":
            self._status(429, b"slow down", {"Retry-After": str(self.server.retry_after_s)})
        elif fault in ("503", "403", "404", "410"):
            self._status(int(fault), f"error {fault}".encode())
        elif fault == "html":
            page = b"<!doctype html><html><head><title>Sign in</title></head><body>Not here</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self._write(page)
        elif fault in ("reset", "truncate"):
            file = self.server.resolve(path)
            data = file.read_bytes() if file else b"\0" * 100_000
            self.send_response(200)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self._write(data[: len(data) // 2])
            self.wfile.flush()
            if fault == "reset":
                # SO_LINGER with a zero timeout turns close() into a TCP RST
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()
        elif fault == "stall":
            time.sleep(self.server.stall_s)
            self.close_connection = True
        elif fault == "ignore_range":
            file = self.server.resolve(path)
            data = file.read_bytes() if file else b""
            self.send_response(200)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Connection", "close")
            self.end_headers()
            self._write(data)
            self.close_connection = True
        elif fault == "empty":
            self.send_response(200)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            raise ValueError(f"unknown fault {fault!r}; expected one of {FAULTS}")


class _LoopbackServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, root: Path, *, retry_after_s: int, stall_s: float, delay_s: float = 0.0) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.delay_s = delay_s
        self.root = root.resolve()
        self.retry_after_s = retry_after_s
        self.stall_s = stall_s
        self.log = RequestLog()
        self._scripts: dict[str, list[str | None]] = {}
        self._always: dict[str, bool] = {}
        self._served: defaultdict[str, int] = defaultdict(int)
        self._lock = threading.Lock()

    def resolve(self, path: str) -> Path | None:
        name = path.lstrip("/")
        for prefix in ("fault/",):  # fault paths map onto the same files
            if name.startswith(prefix):
                name = name.split("/", 2)[-1]
        file = (self.root / name).resolve()
        if self.root not in file.parents or not file.is_file():
            return None
        return file

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients hanging up mid-response (ffmpeg seeking, timeouts) are expected here

    def script(self, path: str, faults: list[str | None] | str, *, always: bool = False) -> None:
        with self._lock:
            self._scripts[path] = [faults] if isinstance(faults, str) else list(faults)
            self._always[path] = always
            self._served[path] = 0

    def next_fault(self, path: str) -> str | None:
        with self._lock:
            script = self._scripts.get(path)
            index = self._served[path]
            self._served[path] += 1
            if not script:
                return None
            if index >= len(script):
                return script[-1] if self._always[path] else None
            return script[index]


@dataclass
class Loopback:
    """A running loopback server: its base URL, its request log, and a way to script faults."""

    server: _LoopbackServer

    @property
    def base_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def log(self) -> RequestLog:
        return self.server.log

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name.lstrip('/')}"

    def script(self, path: str, faults: list[str | None] | str, *, always: bool = False) -> None:
        """Script faults for ``path`` (``/name``), one per request; ``always`` repeats the last one forever."""
        self.server.script(path if path.startswith("/") else "/" + path, faults, always=always)


@contextmanager
def serve(
    root: str | os.PathLike[str], *, retry_after_s: int = 1, stall_s: float = 30.0, delay_s: float = 0.0
) -> Iterator[Loopback]:
    """Serve ``root`` on 127.0.0.1 (a free port) in a background thread for the ``with`` body; every
    request waits ``delay_s`` first (a slow host)."""
    server = _LoopbackServer(Path(root), retry_after_s=retry_after_s, stall_s=stall_s, delay_s=delay_s)
    thread = threading.Thread(target=server.serve_forever, name="loopback-http", daemon=True)
    thread.start()
    try:
        yield Loopback(server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def main() -> None:
    """Serve a directory from the command line (for benchmarks and manual checks)."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("root")
    parser.add_argument("--delay-s", type=float, default=0.0, help="wait this long before every answer")
    args = parser.parse_args()
    with serve(args.root, delay_s=args.delay_s) as lb:
        print(lb.base_url, flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
