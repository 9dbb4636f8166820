"""Start a Redis Cluster of a test's own (primaries only, on free ports) and stop it by pid.

Each node is a ``redis-server`` with ``--cluster-enabled yes``; the cluster is formed
without ``redis-cli`` or any interactive input: every node gets its share of the 16384
hash slots (``CLUSTER ADDSLOTSRANGE``) and a distinct config epoch, then every pair of
nodes meets (``CLUSTER MEET``). The block starts only once every node reports
``cluster_state:ok`` with all slots assigned and a cluster client has written and read
back a key on every node.
"""

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
from typing import IO

import redis
import redis.cluster
from redis.crc import REDIS_CLUSTER_HASH_SLOTS
from redis.exceptions import RedisClusterException

from tests.support.redis_server import free_port

HOST = "127.0.0.1"
BUS_PORT_OFFSET = 10000  # a cluster node also listens on port + 10000 (the cluster bus)
MAX_PORT = 65535 - BUS_PORT_OFFSET
START_TIMEOUT = 10.0  # seconds for each redis-server to answer PING
FORM_TIMEOUT = 20.0  # seconds for the cluster to reach cluster_state:ok and serve keys
STOP_TIMEOUT = 10.0  # seconds to wait after SIGTERM before SIGKILL


@dataclass
class RedisCluster:
    """A running cluster: the client port and the pid of each primary, in slot order."""

    ports: list[int]
    pids: list[int]

    @property
    def url(self) -> str:
        """A ``redis+cluster://`` URL naming the first node (the others are discovered)."""
        return f"redis+cluster://{HOST}:{self.ports[0]}"

    @property
    def nodes(self) -> list[tuple[str, int]]:
        """``(host, port)`` of every node."""
        return [(HOST, port) for port in self.ports]


@dataclass
class _Node:
    port: int
    process: subprocess.Popen[bytes]
    log_path: str


@contextlib.contextmanager
def redis_cluster(primaries: int = 3) -> Iterator[RedisCluster]:
    """Run a cluster of ``primaries`` redis-server primaries (no replicas) until the block ends.

    Every server is stopped by its pid when the block ends, also when starting or forming
    the cluster fails, and the temporary directory holding their files is removed. If the
    process is killed before that, the servers get SIGTERM from the kernel (see _popen).
    """
    if not 1 <= primaries <= REDIS_CLUSTER_HASH_SLOTS:
        raise ValueError(f"primaries must be between 1 and 16384, not {primaries}")
    binary = shutil.which("redis-server")
    assert binary, "redis-server is not installed (apt-get install redis-server)"
    with tempfile.TemporaryDirectory(prefix="diffs-redis-cluster-") as workdir:
        nodes: list[_Node] = []
        try:
            for port in _cluster_ports(primaries):
                nodes.append(_start_node(binary, port, workdir))
            for node in nodes:
                _wait_for_ping(node)
            _form_cluster([node.port for node in nodes])
            _wait_until_ready([node.port for node in nodes])
            yield RedisCluster(
                ports=[node.port for node in nodes],
                pids=[node.process.pid for node in nodes],
            )
        finally:
            _stop_all([node.process for node in nodes])


def _cluster_ports(count: int) -> list[int]:
    """``count`` distinct free ports, each <= 55535 and with its bus port (+10000) free too."""
    chosen: list[int] = []
    taken: set[int] = set()
    for _attempt in range(count * 50):
        if len(chosen) == count:
            break
        port = free_port()
        bus = port + BUS_PORT_OFFSET
        if port > MAX_PORT or {port, bus} & taken or not _is_free(bus):
            continue
        chosen.append(port)
        taken.update((port, bus))
    if len(chosen) != count:
        raise RuntimeError(
            f"could not find {count} distinct free ports <= {MAX_PORT} whose cluster bus "
            f"port (+{BUS_PORT_OFFSET}) is free too; found {chosen}"
        )
    return chosen


def _is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _start_node(binary: str, port: int, workdir: str) -> _Node:
    log_path = os.path.join(workdir, f"redis-{port}.log")
    with open(log_path, "wb") as log:  # the child keeps its own copy of the descriptor
        process = _popen(binary, port, workdir, log)
    return _Node(port=port, process=process, log_path=log_path)


def _popen(binary: str, port: int, workdir: str, log: IO[bytes]) -> subprocess.Popen[bytes]:
    # setpriv (util-linux) execs redis-server with a parent-death signal: should the test
    # process be killed outright (SIGKILL, no cleanup), the kernel stops the servers too.
    # The signal follows the thread that started them, so start clusters on the main one.
    setpriv = shutil.which("setpriv")
    guard = [setpriv, "--pdeathsig", "TERM"] if setpriv else []
    return subprocess.Popen(
        [
            *guard,
            binary,
            "--port",
            str(port),
            "--bind",
            HOST,
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            os.path.join(workdir, f"nodes-{port}.conf"),
            "--cluster-node-timeout",
            "5000",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def _wait_for_ping(node: _Node) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if node.process.poll() is not None:
            raise RuntimeError(
                f"redis-server on port {node.port} exited with code {node.process.returncode} "
                f"(is port {node.port} or its bus port {node.port + BUS_PORT_OFFSET} taken?):\n"
                + _tail(node.log_path)
            )
        with contextlib.suppress(redis.RedisError), _client(node.port) as client:
            if client.ping():
                return
        time.sleep(0.05)
    raise RuntimeError(
        f"redis-server on port {node.port} did not answer PING within {START_TIMEOUT} s:\n"
        + _tail(node.log_path)
    )


def _form_cluster(ports: list[int]) -> None:
    """Split the slots among ``ports`` in contiguous ranges, then have every pair meet."""
    count = len(ports)
    for index, port in enumerate(ports):
        first = index * REDIS_CLUSTER_HASH_SLOTS // count
        last = (index + 1) * REDIS_CLUSTER_HASH_SLOTS // count - 1
        with _client(port) as client:
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)
            # Distinct epochs up front, as redis-cli does, so no collision has to be resolved.
            client.execute_command("CLUSTER", "SET-CONFIG-EPOCH", index + 1)
    # Every pair meets directly: if only the first node met the others, they would learn of
    # each other by gossip alone, which took up to 8 s in trials.
    for index, port in enumerate(ports):
        with _client(port) as client:
            for other in ports[index + 1 :]:
                client.execute_command("CLUSTER", "MEET", HOST, other)


def _wait_until_ready(ports: list[int]) -> None:
    """Wait until every node agrees the cluster is whole and a cluster client serves keys."""
    deadline = time.monotonic() + FORM_TIMEOUT
    problem = "not checked yet"
    while time.monotonic() < deadline:
        problem = _not_ready(ports)
        if not problem:
            return
        time.sleep(0.1)
    raise RuntimeError(
        f"the cluster on ports {ports} did not form within {FORM_TIMEOUT} s: {problem}"
    )


def _not_ready(ports: list[int]) -> str:
    """What is still missing, or ``""`` once the cluster serves a key on every node."""
    try:
        for port in ports:
            with _client(port) as client:
                info = client.cluster("INFO")
            state = info.get("cluster_state")
            assigned = int(info.get("cluster_slots_assigned", 0))
            known = int(info.get("cluster_known_nodes", 0))
            if state != "ok" or assigned != REDIS_CLUSTER_HASH_SLOTS or known != len(ports):
                return (
                    f"node {port}: cluster_state={state} slots_assigned={assigned} "
                    f"known_nodes={known}"
                )
        cluster = redis.cluster.RedisCluster(
            host=HOST, port=ports[0], decode_responses=True, socket_timeout=2
        )
        try:
            owners = _key_per_node(cluster)
            if sorted(owners) != sorted(ports):
                return f"the cluster client sees primaries {sorted(owners)}, not {sorted(ports)}"
            for port, probe in owners.items():
                cluster.set(probe, str(port))
                if cluster.get(probe) != str(port):
                    return f"key {probe!r} on node {port} did not read back"
                cluster.delete(probe)
        finally:
            cluster.close()
    except (redis.RedisError, RedisClusterException, OSError) as error:
        return f"{type(error).__name__}: {error}"
    return ""


def _key_per_node(cluster: redis.cluster.RedisCluster) -> dict[int, str]:
    """A key for every primary the client knows, whose hash slot that primary serves."""
    primaries = len(cluster.get_primaries())
    keys: dict[int, str] = {}
    for number in range(100_000):
        if len(keys) == primaries:
            break
        key = f"diffs-cluster-probe:{number}"
        node = cluster.get_node_from_key(key)
        if node is not None and int(node.port) not in keys:
            keys[int(node.port)] = key
    return keys


@contextlib.contextmanager
def _client(port: int) -> Iterator[redis.Redis]:
    client = redis.Redis(host=HOST, port=port, socket_timeout=2, decode_responses=True)
    try:
        yield client
    finally:
        client.close()


def _stop_all(processes: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every server by pid, then wait for each, SIGKILL-ing any that do not exit."""
    for process in processes:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            process.wait()  # SIGKILL cannot be ignored; this reaps the process


def _tail(path: str, lines: int = 20) -> str:
    try:
        with open(path, errors="replace") as log:
            return "".join(log.readlines()[-lines:])
    except OSError as error:
        return f"(no log: {error})"
