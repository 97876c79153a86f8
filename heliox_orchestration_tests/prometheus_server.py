"""A real Prometheus server for the tests: Debian's ``prometheus`` package (2.42 in bookworm).

The DCGM history of ``dcgm_history`` is written once per test session as OpenMetrics text and
turned into TSDB blocks by ``promtool tsdb create-blocks-from openmetrics`` (under a file lock,
shared by the xdist workers); each worker then starts its own server on a hard-linked copy of the
blocks, on a free loopback port, with no scrape targets and basic auth required
(``--web.config.file``, a bcrypt hash of ``PASSWORD``).

``AuthGateway`` is a loopback reverse proxy in front of it, like the OAuth/token proxies teams
put before Prometheus: it requires a bearer token, forwards to the real server, records what it
received and can be told to fail or hang first.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from base64 import b64encode
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from heliox_orchestration_tests.dcgm_history import build_history, write_openmetrics

USERNAME = "heliox-test"
PASSWORD = "correct-horse-battery-staple-42"
# bcrypt (cost 4, the minimum: tests only) of PASSWORD, made once with crypt(3)'s $2b$ method.
PASSWORD_BCRYPT = "$2b$04$WUHozZ6fgxo79pJVYiX1Te0mBsSoyykYu6.PHmw7YyGUSF1pqGmgK"
INSTALL_HINT = (
    "apt-get install --no-install-recommends prometheus (Debian/Ubuntu; see the README's Development section)"
)
START_TIMEOUT_SECONDS = 60


def prometheus_binaries() -> tuple[str, str]:
    """(prometheus, promtool); skips the test without them, fails under CI=true."""
    found = [shutil.which("prometheus"), shutil.which("promtool")]
    if all(found):
        return found[0], found[1]  # type: ignore[return-value]
    missing = " and ".join(n for n, f in zip(("prometheus", "promtool"), found, strict=True) if not f)
    message = f"{missing} not found on PATH; these tests run a real Prometheus server: {INSTALL_HINT}."
    if os.environ.get("CI") == "true":
        pytest.fail(message + " Under CI=true this is a failure, not a skip.")
    pytest.skip(message)


def build_blocks(shared_dir: Path, promtool: str) -> Path:
    """TSDB blocks of the DCGM history in ``shared_dir``, built once by whichever worker comes
    first; the others wait on the lock and reuse them."""
    shared_dir.mkdir(parents=True, exist_ok=True)
    blocks, done = shared_dir / "blocks", shared_dir / "blocks.done"
    with (shared_dir / "build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(blocks, ignore_errors=True)
            text = shared_dir / "dcgm-history.om"
            write_openmetrics(build_history(), text)
            result = subprocess.run(
                # One block for the whole history: promtool parses the file once per block.
                [
                    promtool,
                    "tsdb",
                    "create-blocks-from",
                    "openmetrics",
                    "--max-block-duration=1000h",
                    "-q",
                    str(text),
                    str(blocks),
                ],
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            text.unlink()
            if result.returncode != 0:
                pytest.fail(f"promtool failed ({result.returncode}): {result.stderr.strip()[-2000:]}")
            done.touch()
    return blocks


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def basic_auth_header(username: str = USERNAME, password: str = PASSWORD) -> str:
    return "Basic " + b64encode(f"{username}:{password}".encode()).decode()


@dataclass
class PrometheusServer:
    url: str
    process: subprocess.Popen[bytes]
    log: Path


@contextmanager
def run_prometheus(prometheus: str, blocks: Path, workdir: Path) -> Iterator[PrometheusServer]:
    """A server on a copy of ``blocks``; stopped (and waited for) on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    data = workdir / "data"
    shutil.rmtree(data, ignore_errors=True)
    shutil.copytree(blocks, data, copy_function=os.link)
    (workdir / "prometheus.yml").write_text("global:\n  scrape_interval: 1h\nscrape_configs: []\n")
    (workdir / "web.yml").write_text(f"basic_auth_users:\n  {USERNAME}: {PASSWORD_BCRYPT}\n")
    log = workdir / "prometheus.log"
    for _attempt in range(3):
        port = _free_port()
        with log.open("wb") as out:
            process = subprocess.Popen(
                [
                    prometheus,
                    f"--config.file={workdir / 'prometheus.yml'}",
                    f"--web.config.file={workdir / 'web.yml'}",
                    f"--storage.tsdb.path={data}",
                    "--storage.tsdb.retention.time=100y",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--log.level=warn",
                    # Small enough that a test can exceed it cheaply, far above what Heliox asks.
                    "--query.max-samples=1000000",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        url = f"http://127.0.0.1:{port}"
        if _wait_ready(url, process):
            break
        _stop(process)
        if "address already in use" not in log.read_text(errors="replace"):
            pytest.fail(f"Prometheus did not start: {log.read_text(errors='replace')[-2000:]}")
    else:
        pytest.fail("Prometheus found no free port in 3 attempts")
    try:
        yield PrometheusServer(url, process, log)
    finally:
        _stop(process)


def _wait_ready(url: str, process: subprocess.Popen[bytes]) -> bool:
    request = urllib.request.Request(f"{url}/-/ready", headers={"Authorization": basic_auth_header()})
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    authorization: str | None


class AuthGateway:
    """A bearer-token proxy in front of the test Prometheus (see the module docstring)."""

    def __init__(self, upstream: str, token: str) -> None:
        self.upstream, self.token = upstream, token
        self.received: list[Received] = []
        self.script: deque[tuple[int, float]] = deque()  # (status to answer, seconds to hang) first
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._forward(None)

            def do_POST(self) -> None:
                self._forward(self.rfile.read(int(self.headers.get("Content-Length") or 0)))

            def _forward(self, body: bytes | None) -> None:
                gateway.received.append(Received(self.command, self.path, self.headers.get("Authorization")))
                if gateway.script:
                    status, hang = gateway.script.popleft()
                    time.sleep(hang)
                    if status:
                        return self._answer(
                            status, b'{"status":"error","errorType":"unavailable","error":"gateway"}'
                        )
                if self.headers.get("Authorization") != f"Bearer {gateway.token}":
                    return self._answer(401, b"Unauthorized: a valid bearer token is required\n")
                request = urllib.request.Request(
                    gateway.upstream + self.path,
                    data=body,
                    method=self.command,
                    headers={
                        "Authorization": basic_auth_header(),
                        "Content-Type": self.headers.get("Content-Type", "application/x-www-form-urlencoded"),
                    },
                )
                try:
                    with urllib.request.urlopen(request, timeout=30) as response:
                        status, payload = response.status, response.read()
                except urllib.error.HTTPError as exc:
                    status, payload = exc.code, exc.read()
                self._answer(status, payload)

            def _answer(self, status: int, payload: bytes) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
                    pass

            def log_message(self, *_args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> AuthGateway:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
