"""Run the test project under uvicorn, on a free port, and stop it by its pid."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.redis_server import free_port

ROOT = Path(__file__).resolve().parent.parent.parent
START_TIMEOUT = 30.0


@dataclass
class AsgiServer:
    port: int
    pid: int

    def connection(self, timeout: float = 10.0) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)


@contextlib.contextmanager
def asgi_server(**environment: str) -> Iterator[AsgiServer]:
    """uvicorn serving ``tests.support.asgi_app`` until the block ends."""
    with tempfile.TemporaryDirectory(prefix="diffs-asgi-") as workdir:
        port = free_port()
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.support.asgi_settings",
            "DIFFS_ASGI_SQLITE": str(Path(workdir) / "db.sqlite3"),
            "PYTHONPATH": str(ROOT),
            **environment,
        }
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "tests.support.asgi_app:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        server = AsgiServer(port=port, pid=process.pid)
        try:
            _wait_until_serving(server, process)
            yield server
        finally:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
            if process.stderr is not None:
                process.stderr.close()


def _wait_until_serving(server: AsgiServer, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            errors = process.stderr.read().decode() if process.stderr else ""
            raise AssertionError(f"uvicorn exited with {process.returncode}:\n{errors}")
        try:
            connection = server.connection(timeout=1)
            connection.request("GET", "/questions/diffs/")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"uvicorn did not serve within {START_TIMEOUT} s")
