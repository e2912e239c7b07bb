"""`spaceport view`: serve a viewer folder on 127.0.0.1."""

from __future__ import annotations

import errno
import functools
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from spaceport.api import COMPRESS
from spaceport.api.stages import RUNS_DIR
from spaceport.contract import BadInputError
from spaceport.layout import run_folder, run_numbers

DEFAULT_PORT = 8080


class PortInUseError(BadInputError):
    """The chosen port is taken: pick another (``--port 0`` takes any free one)."""

    reason = "PortInUse"


def find_viewer_dir(path: str | Path) -> Path:
    """The folder holding index.html for ``path``: a compress folder, a run folder or a `spaceport run` output.

    For an output with several runs, the newest run with a viewer wins.
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise BadInputError(f"{root} is not a folder")
    last, files = COMPRESS.name, COMPRESS.files
    candidates = [root, root / last]
    runs = root / RUNS_DIR
    if runs.is_dir():
        numbered = run_numbers(p.name for p in runs.iterdir() if p.is_dir())
        candidates += [root / run_folder(n) / last for n in reversed(numbered)]
    for c in candidates:
        if (c / files.viewer).is_file():
            return c.resolve()
    hint = f" (it has a scene but no viewer page: re-run the {last} stage)" if any(
        (c / files.sog).is_file() or (c / files.streamed / files.lod_meta).is_file() for c in candidates) else ""
    raise BadInputError(f"no viewer ({files.viewer}) in {root}, its {last}/ or {RUNS_DIR}/*/{last}/{hint}")


class _QuietHandler(SimpleHTTPRequestHandler):
    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".js": "text/javascript",
                      ".json": "application/json", ".sog": "application/octet-stream",
                      ".webp": "image/webp", ".ply": "application/octet-stream"}

    def end_headers(self) -> None:
        # Results change between runs under the same URL; never let the browser show a stale scene.
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def make_server(directory: Path, port: int = DEFAULT_PORT, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    handler = functools.partial(_QuietHandler, directory=str(directory))
    try:
        return ThreadingHTTPServer((host, port), handler)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise PortInUseError(f"port {port} on {host} is in use: choose another with --port "
                                 "(--port 0 picks a free one)") from e
        raise BadInputError(f"cannot listen on {host}:{port}: {e.strerror}") from e


def url_of(server: ThreadingHTTPServer) -> str:
    host, port = server.server_address[:2]
    return f"http://{host}:{port}/index.html"


def serve_in_thread(directory: Path, port: int = 0) -> tuple[ThreadingHTTPServer, str]:
    """Start a server in a daemon thread (for tests and screenshots); call ``server.shutdown()`` after."""
    server = make_server(directory, port)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, url_of(server)
