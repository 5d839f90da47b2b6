"""Test helper: a local S3 server (moto, a subprocess on 127.0.0.1) that LanceDB/Lance and fsspec (s3fs) can use."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ACCESS_KEY = "testing"
SECRET_KEY = "testing"
REGION = "us-east-1"

# werkzeug's access log line: 127.0.0.1 - - [date] "GET /bucket/key?query HTTP/1.1" 200 -
_LOG_LINE = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[\d.]+" (?P<status>\d{3})')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class S3Server:
    """A running moto server; every process on this machine can reach it at `endpoint`."""

    endpoint: str
    port: int
    log: Path
    proc: subprocess.Popen[bytes] = field(repr=False)

    def env(self) -> dict[str, str]:
        """Environment variables that point boto3/botocore/s3fs and Lance (object_store) at this server.

        Set them in os.environ before child processes (e.g. Dask workers) start and they inherit them.
        """
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "AWS_ENDPOINT_URL": self.endpoint,  # botocore >= 1.31 (so s3fs) and Lance both honour it
            "AWS_ENDPOINT": self.endpoint,  # object_store's own name for the same setting
            "AWS_ALLOW_HTTP": "true",  # Lance/object_store refuse http:// endpoints without it
            "AWS_EC2_METADATA_DISABLED": "true",  # never wait on the instance-metadata service
        }

    def storage_options(self) -> dict[str, str]:
        """`storage_options` for lance / lancedb calls (the explicit alternative to `env()`)."""
        return {
            "aws_endpoint": self.endpoint,
            "aws_access_key_id": ACCESS_KEY,
            "aws_secret_access_key": SECRET_KEY,
            "aws_region": REGION,
            "allow_http": "true",
        }

    def fsspec_options(self) -> dict[str, object]:
        """Keyword arguments for `fsspec.core.url_to_fs("s3://...", **opts)` / `s3fs.S3FileSystem(**opts)`."""
        return {
            "key": ACCESS_KEY,
            "secret": SECRET_KEY,
            "client_kwargs": {"endpoint_url": self.endpoint, "region_name": REGION},
        }

    def create_bucket(self, name: str) -> None:
        """Create a bucket."""
        self.client().create_bucket(Bucket=name)

    def client(self):  # -> botocore S3 client
        """A boto3 S3 client for this server (to seed or inspect objects directly)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )

    def requests(self) -> list[tuple[str, str]]:
        """(method, path) of every request the server has logged so far, e.g. ("GET", "/bucket/key")."""
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            m = _LOG_LINE.search(line)
            if m:
                out.append((m["method"], m["path"]))
        return out

    def object_gets(self) -> list[str]:
        """Paths ("/bucket/key") of object reads (GET on a key) so far; listings (GET /bucket?list-type=2) excluded."""
        paths = [p.split("?")[0] for m, p in self.requests() if m == "GET" and not p.startswith("/moto-api")]
        return [p for p in paths if "/" in p.strip("/")]

    def __enter__(self) -> S3Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self, timeout: float = 10) -> None:
        """Stop the server process group."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout)


def start_s3_server(tmp_dir: str | os.PathLike[str], timeout: float = 60) -> S3Server:
    """Start `python -m moto.server` on a free 127.0.0.1 port, wait until it answers, and return it."""
    tmp = Path(tmp_dir)
    tmp.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    log = tmp / f"moto-{port}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["PYTHONUNBUFFERED"] = "1"
    with open(log, "wb") as handle:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    server = S3Server(endpoint=f"http://127.0.0.1:{port}", port=port, log=log, proc=proc)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"moto server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{server.endpoint}/moto-api/", timeout=2):
                return server
        except urllib.error.HTTPError:  # any HTTP answer means it is up
            return server
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise TimeoutError(f"moto server did not answer in {timeout:.0f} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)
