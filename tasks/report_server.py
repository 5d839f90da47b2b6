"""A read-only web server for the reports folder, so that a report named in the Prefect UI is one click away.

`python -m tasks.report_server FOLDER PORT` serves the files under FOLDER on 127.0.0.1:PORT: GET and HEAD only, no
directory listing, nothing outside FOLDER (no `..`, encoded or not, and no link that leads out). `ragops server
start` runs it beside the Prefect server (tasks/local_server.py).
"""

from __future__ import annotations

import argparse
import os
from functools import partial
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

HOST = "127.0.0.1"
CONTENT_TYPES = {  # the reports' own kinds of file; others are guessed from the name
    ".html": "text/html; charset=utf-8",
    ".htm": "text/html; charset=utf-8",
    ".json": "application/json",
    ".md": "text/plain; charset=utf-8",  # shown, not downloaded
    ".txt": "text/plain; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}


class ReportRequestHandler(SimpleHTTPRequestHandler):
    """SimpleHTTPRequestHandler (GET and HEAD only; other methods answer 501) without listings or escapes."""

    def send_head(self) -> BinaryIO | BytesIO | None:
        """Refuse `..`, NUL and backslashes (400) and anything that resolves outside the folder (404)."""
        path = unquote(urlsplit(self.path).path)
        segments = path.split("/")
        if ".." in segments or "\x00" in path or "\\" in path:
            self.send_error(HTTPStatus.BAD_REQUEST, "path outside the reports folder")
            return None
        root = os.path.realpath(self.directory)
        target = os.path.realpath(self.translate_path(self.path))
        if target != root and not target.startswith(root + os.sep):
            self.send_error(HTTPStatus.NOT_FOUND, "file not found")
            return None
        return super().send_head()

    def list_directory(self, path: str | os.PathLike[str]) -> BytesIO | None:
        self.send_error(HTTPStatus.NOT_FOUND, "file not found")
        return None

    def guess_type(self, path: str | os.PathLike[str]) -> str:
        return CONTENT_TYPES.get(Path(path).suffix.lower()) or super().guess_type(path)

    def end_headers(self) -> None:
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Cache-Control", "no-cache")  # latest.html is rewritten by every evaluation
        super().end_headers()


def make_server(folder: Path, port: int) -> ThreadingHTTPServer:
    """The server of `folder` on 127.0.0.1:`port` (0: any free port), bound and listening."""
    handler = partial(ReportRequestHandler, directory=str(folder.resolve()))
    return ThreadingHTTPServer((HOST, port), handler)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tasks.report_server", description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("port", type=int)
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        parser.error(f"{args.folder} is not a folder")
    server = make_server(args.folder, args.port)
    host, port = server.server_address[:2]
    print(f"serving {args.folder.resolve()} read-only at http://{host!s}:{port}", flush=True)
    with server:
        server.serve_forever()


if __name__ == "__main__":
    main()
