"""Start a redis-server of a test's own, on a free port, and stop it by its pid."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass
class RedisServer:
    port: int
    unix_socket: str
    pid: int


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def redis_server(*extra: str) -> Iterator[RedisServer]:
    """Run ``redis-server`` with ``extra`` arguments until the block ends."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server is not installed (apt-get install redis-server)"
    with tempfile.TemporaryDirectory(prefix="diffs-redis-") as workdir:
        port, sock = free_port(), os.path.join(workdir, "redis.sock")
        process = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                workdir,
                "--unixsocket",
                sock,
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_for(port)
            yield RedisServer(port=port, unix_socket=sock, pid=process.pid)
        finally:
            os.kill(process.pid, signal.SIGTERM)
            process.wait(timeout=10)


def _wait_for(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"redis-server did not start on port {port}")
