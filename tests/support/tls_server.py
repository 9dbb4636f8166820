"""A TLS-only redis-server of a test's own, with throwaway certificates made by ``openssl``.

:func:`make_certificates` writes, into a directory, a CA and a server certificate it
signed for ``127.0.0.1`` (an IP subjectAltName, so hostname checking passes), plus a
second, unrelated CA for "untrusted server" tests. :func:`tls_redis_server` runs
``redis-server`` with only a TLS port (``--port 0``) on a free port, and stops it by
its pid when the block ends, whatever happened inside.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.redis_server import free_port


class TLSUnavailable(Exception):
    """redis-server is missing, or was built without TLS: the TLS tests are skipped."""


@dataclass(frozen=True)
class Certificates:
    ca_cert: str
    server_cert: str
    server_key: str
    #: A CA that signed nothing the server presents.
    other_ca_cert: str


@dataclass(frozen=True)
class TLSRedisServer:
    port: int
    pid: int
    certs: Certificates


def missing_tools() -> str | None:
    """Why TLS tests cannot run here, or None when both binaries are installed."""
    for tool in ("redis-server", "openssl"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(
        ["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        msg = f"openssl {' '.join(args)} failed: {result.stderr.strip()}"
        raise RuntimeError(msg)


def _make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    key, cert = directory / f"{name}.key", directory / f"{name}.crt"
    # EC keys: generated in milliseconds, unlike RSA. The CA extensions are explicit
    # so that strict X.509 verification (Python 3.13's default) accepts the chain too.
    _openssl(
        "req", "-x509", "-new", "-nodes",
        "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-keyout", str(key), "-out", str(cert), "-days", "2",
        "-subj", f"/CN=django-diffs test {name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip
    return key, cert


def make_certificates(directory: str) -> Certificates:
    """Write a CA, a server key and certificate it signed for 127.0.0.1, and another CA."""
    where = Path(directory)
    ca_key, ca_cert = _make_ca(where, "ca")
    _, other_ca_cert = _make_ca(where, "other-ca")
    server_key, server_csr, server_cert = (
        where / "server.key",
        where / "server.csr",
        where / "server.crt",
    )
    _openssl(
        "req", "-new", "-nodes",
        "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-keyout", str(server_key), "-out", str(server_csr), "-subj", "/CN=127.0.0.1",
        cwd=where,
    )  # fmt: skip
    extensions = where / "server.ext"
    extensions.write_text(
        "subjectAltName = IP:127.0.0.1\n"
        "basicConstraints = critical, CA:FALSE\n"
        "keyUsage = critical, digitalSignature, keyEncipherment\n"
        "extendedKeyUsage = serverAuth\n"
        "subjectKeyIdentifier = hash\n"
        "authorityKeyIdentifier = keyid, issuer\n"
    )
    _openssl(
        "x509", "-req", "-in", str(server_csr),
        "-CA", str(ca_cert), "-CAkey", str(ca_key), "-CAcreateserial",
        "-out", str(server_cert), "-days", "2", "-extfile", str(extensions),
        cwd=where,
    )  # fmt: skip
    return Certificates(str(ca_cert), str(server_cert), str(server_key), str(other_ca_cert))


@contextlib.contextmanager
def tls_redis_server(workdir: str, certs: Certificates, *extra: str) -> Iterator[TLSRedisServer]:
    """Run a TLS-only ``redis-server`` (``extra`` appended to its arguments) until the block ends.

    Raises :class:`TLSUnavailable` when the server exits at startup because it was built
    without TLS, and ``RuntimeError`` (with the server's output) for any other failure.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        msg = "redis-server is not installed"
        raise TLSUnavailable(msg)
    port = free_port()
    log_path = os.path.join(workdir, f"redis-{port}.log")
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                binary,
                "--port", "0",  # no plain-text TCP: every client must speak TLS
                "--tls-port", str(port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", workdir,
                "--tls-cert-file", certs.server_cert,
                "--tls-key-file", certs.server_key,
                "--tls-ca-cert-file", certs.ca_cert,
                "--tls-auth-clients", "no",  # server-authenticated TLS, no client certs
                *extra,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        _wait_for(process, port, log_path)
        yield TLSRedisServer(port=port, pid=process.pid, certs=certs)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def built_without_tls(output: str) -> bool:
    """Whether redis-server's startup output says it cannot do TLS at all."""
    lowered = output.lower()
    # 6.x/7.0 without BUILD_TLS do not know the tls-* directives at all; 7.2+ know
    # them but have no "tls" connection type unless built with it (or its module).
    return (
        ("bad directive" in lowered and "tls-" in lowered)
        or "connection type tls" in lowered
        or "tls is not" in lowered
    )


def _wait_for(process: subprocess.Popen[bytes], port: int, log_path: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = Path(log_path).read_text(errors="replace").strip()
            msg = f"redis-server exited at startup (status {process.returncode}): {output}"
            # Only a build without TLS is a reason to skip; any other startup failure
            # (a bad certificate, a bad --user line) is a bug in the test, so it fails.
            raise TLSUnavailable(msg) if built_without_tls(output) else RuntimeError(msg)
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    msg = f"redis-server did not listen on TLS port {port} within 10 s"
    raise RuntimeError(msg)
