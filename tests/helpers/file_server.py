"""A tiny 127.0.0.1 file server that can resume, refuse to resume, or hang up half-way, and the
builders of the zips, assets and manifests it serves: no test may touch the internet."""

from __future__ import annotations

import hashlib
import io
import re
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from rich.console import Console

from amalgam.harness.assets import Asset


class _Handler(BaseHTTPRequestHandler):
    server: FileServer

    def do_GET(self) -> None:  # noqa: N802 - name fixed by BaseHTTPRequestHandler
        srv = self.server
        requested_range = self.headers.get("Range")
        srv.requests.append((self.path, requested_range))
        file = srv.docroot / self.path.lstrip("/")
        if not file.is_file():
            self.send_error(404)
            return
        data = file.read_bytes()
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", requested_range or "")
        if match and srv.honour_range:
            start = int(match[1])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self._start(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self._start(200)
        body = data[start:]
        sent = body[: len(body) // 2] if srv.drop_after_half else body
        if srv.framing == "chunked":
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for at in range(0, len(sent), 4096):
                piece = sent[at : at + 4096]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            if not srv.drop_after_half:
                self.wfile.write(b"0\r\n\r\n")
        else:
            if srv.framing == "length":
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(sent)
        self.close_connection = True

    def _start(self, code: int) -> None:
        # Chunked bodies need an HTTP/1.1 status line; "close" framing is plain HTTP/1.0.
        self.protocol_version = "HTTP/1.1" if self.server.framing == "chunked" else "HTTP/1.0"
        self.send_response(code)

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        return None


class FileServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, docroot: Path) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.docroot = docroot
        self.requests: list[tuple[str, str | None]] = []
        self.drop_after_half = False
        self.honour_range = True
        # How the body's end is marked: "length" (Content-Length), "chunked", or "close"
        # (neither: the body ends when the connection closes).
        self.framing = "length"

    def publish(self, name: str, data: bytes) -> str:
        (self.docroot / name).write_bytes(data)
        return f"http://127.0.0.1:{self.server_address[1]}/{name}"


@pytest.fixture
def server(tmp_path: Path):
    docroot = tmp_path / "served"
    docroot.mkdir()
    srv = FileServer(docroot)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


def make_zip(entries: dict[str, bytes], extra: list[tuple[zipfile.ZipInfo, bytes]] = ()) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        for info, data in extra:
            zf.writestr(info, data)
    return buffer.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_asset(url: str, sha256: str = "", **overrides: object) -> Asset:
    fields: dict[str, object] = {
        "name": "pack",
        "url": url,
        "sha256": sha256,
        "archive": "zip",
        "dest": "data/pack",
        "filename": "pack.zip",
    }
    fields.update(overrides)
    return Asset(**fields)  # type: ignore[arg-type]


def quiet_console() -> Console:
    return Console(file=io.StringIO(), width=400)


def said(console: Console) -> str:
    return console.file.getvalue()  # type: ignore[attr-defined]


def files_under(path: Path) -> list[str]:
    if not path.exists():
        return []
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


GOOD_TABLE = {
    "name": '"pack"',
    "url": '"https://example.invalid/pack.zip"',
    "sha256": '""',
    "archive": '"zip"',
    "dest": '"out"',
}


def write_manifest(path: Path, *tables: dict[str, str]) -> Path:
    text = "".join(
        "[[asset]]\n" + "".join(f"{k} = {v}\n" for k, v in table.items()) + "\n" for table in tables
    )
    path.write_text(text)
    return path
