"""The ``redis_cluster`` fixture itself: a cluster of three primaries forms, serves keys on
every node, scans and runs scripts through ``redis.cluster.RedisCluster``, and leaves no
server behind.

These need only ``redis-server``, not the suite's Redis (``DIFFS_TEST_REDIS_URL``) nor
its database, so they run in every configuration. The autouse ``redis_client`` fixture of
``conftest.py`` still runs around each test; nothing here uses it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster as ClusterClient
from redis.exceptions import RedisClusterException

from tests.support.redis_cluster import BUS_PORT_OFFSET, RedisCluster, redis_cluster

pytestmark = pytest.mark.skipif(
    not shutil.which("redis-server"), reason="redis-server is not installed"
)

SLOTS = 16384


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    """One cluster of three primaries for the whole module."""
    with redis_cluster(primaries=3) as running:
        yield running


@pytest.fixture
def cluster_client(cluster: RedisCluster) -> Iterator[ClusterClient]:
    """A cluster client on the first node, every primary flushed before the test."""
    client = ClusterClient(
        host="127.0.0.1", port=cluster.ports[0], decode_responses=True, socket_timeout=5
    )
    client.flushall(target_nodes=ClusterClient.PRIMARIES)
    yield client
    client.close()


def node_client(port: int) -> redis.Redis:
    """A plain (non-cluster) client talking to one node only."""
    return redis.Redis(host="127.0.0.1", port=port, decode_responses=True, socket_timeout=5)


def key_per_node(client: ClusterClient, prefix: str) -> dict[int, str]:
    """A key for each primary (by port), whose hash slot that primary serves."""
    keys: dict[int, str] = {}
    primaries = {int(node.port) for node in client.get_primaries()}
    for number in range(100_000):  # a primary holding slots gets a key within a few dozen
        if set(keys) == primaries:
            return keys
        key = f"{prefix}:{number}"
        keys.setdefault(int(client.get_node_from_key(key).port), key)
    raise AssertionError(f"no key of {prefix!r} lands on some primary of {sorted(primaries)}")


def slot_count(ranges: list[str]) -> int:
    """How many slots ``CLUSTER NODES`` slot fields (``0-5460``, ``42``) cover."""
    total = 0
    for field in ranges:
        first, _, last = field.partition("-")
        total += int(last or first) - int(first) + 1
    return total


def test_describes_its_nodes(cluster: RedisCluster) -> None:
    assert len(cluster.ports) == len(cluster.pids) == 3
    assert len(set(cluster.ports)) == 3
    assert all(port + BUS_PORT_OFFSET <= 65535 for port in cluster.ports)
    assert cluster.url == f"redis+cluster://127.0.0.1:{cluster.ports[0]}"
    assert cluster.nodes == [("127.0.0.1", port) for port in cluster.ports]


def test_three_primaries_share_all_slots(cluster: RedisCluster) -> None:
    for port in cluster.ports:  # every node sees the same, whole cluster
        client = node_client(port)
        try:
            info = client.cluster("INFO")
            lines = client.execute_command("CLUSTER", "NODES").splitlines()
        finally:
            client.close()
        assert info["cluster_state"] == "ok"
        assert int(info["cluster_slots_assigned"]) == SLOTS
        assert int(info["cluster_known_nodes"]) == 3
        # <id> <ip:port@bus> <flags> <master> <ping> <pong> <epoch> <link> <slot> ...
        fields = [line.split() for line in lines]
        masters = [f for f in fields if "master" in f[2].split(",")]
        assert len(masters) == 3
        assert {int(f[1].split("@")[0].rsplit(":", 1)[1]) for f in masters} == set(cluster.ports)
        assert all(f[7] == "connected" and len(f) > 8 for f in masters)
        assert sum(slot_count(f[8:]) for f in masters) == SLOTS


def test_keys_in_different_slots_land_on_different_nodes(
    cluster: RedisCluster, cluster_client: ClusterClient
) -> None:
    keys = key_per_node(cluster_client, f"spread-{uuid.uuid4().hex}")
    assert set(keys) == set(cluster.ports)
    assert len({cluster_client.keyslot(key) for key in keys.values()}) == 3
    for port, key in keys.items():
        assert cluster_client.set(key, f"on {port}")
    for port, key in keys.items():
        assert cluster_client.get(key) == f"on {port}"
        owner = node_client(port)  # the key is stored on that node itself
        try:
            assert owner.get(key) == f"on {port}"
            assert owner.dbsize() == 1
        finally:
            owner.close()


def test_scan_iter_on_all_primaries_finds_every_key(
    cluster: RedisCluster, cluster_client: ClusterClient
) -> None:
    prefix = f"scan-{uuid.uuid4().hex}"
    keys = {f"{prefix}:{number}" for number in range(200)}
    for key in keys:
        cluster_client.set(key, "1")
    assert {cluster_client.get_node_from_key(key).port for key in keys} == set(cluster.ports)

    found = list(
        cluster_client.scan_iter(
            match=f"{prefix}:*", count=50, target_nodes=ClusterClient.PRIMARIES
        )
    )

    assert sorted(found) == sorted(keys)  # each key once, from every primary
    # KEYS, by contrast, asks one node only.
    assert 0 < len(cluster_client.keys(f"{prefix}:*")) < len(keys)


def test_script_with_keys_in_one_slot_runs(cluster_client: ClusterClient) -> None:
    copy = cluster_client.register_script(
        "redis.call('SET', KEYS[2], redis.call('GET', KEYS[1])) return redis.call('GET', KEYS[2])"
    )
    cluster_client.set("{tag}a", "shared slot")
    assert cluster_client.keyslot("{tag}a") == cluster_client.keyslot("{tag}b")

    assert copy(keys=["{tag}a", "{tag}b"]) == "shared slot"
    assert cluster_client.get("{tag}b") == "shared slot"

    # Keys in different slots are refused by the client before anything is sent.
    assert cluster_client.keyslot("a") != cluster_client.keyslot("b")
    with pytest.raises(RedisClusterException, match="all keys must map to the same key slot"):
        copy(keys=["a", "b"])


def assert_stopped(cluster: RedisCluster) -> None:
    for pid in cluster.pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    for port in cluster.ports:  # nothing listens on the client and bus ports any more
        for used in (port, port + BUS_PORT_OFFSET):
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", used), timeout=1).close()
            # SO_REUSEADDR, as redis-server binds: closed connections may linger in
            # TIME_WAIT, but a listener left behind would still make this fail.
            with socket.socket() as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(("127.0.0.1", used))
                sock.listen()


def test_servers_are_gone_after_the_block() -> None:
    with redis_cluster(primaries=2) as running:
        for pid in running.pids:
            os.kill(pid, 0)  # alive
    assert_stopped(running)


def test_servers_are_gone_after_an_error_in_the_block() -> None:
    with pytest.raises(KeyError), redis_cluster(primaries=1) as running:
        raise KeyError("boom")
    assert_stopped(running)


@pytest.mark.skipif(not shutil.which("setpriv"), reason="setpriv (util-linux) is not installed")
def test_servers_stop_when_the_process_that_started_them_is_killed(tmp_path: Path) -> None:
    # SIGKILL leaves no chance to clean up: the kernel's parent-death signal stops them.
    script = (
        "import time\n"
        "from tests.support.redis_cluster import redis_cluster\n"
        "with redis_cluster(primaries=1) as running:\n"
        "    print(*running.ports, flush=True)\n"
        "    time.sleep(60)\n"
    )
    root = Path(__file__).resolve().parent.parent
    owner = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root), "TMPDIR": str(tmp_path)},  # its files
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert owner.stdout is not None
        ports = [int(port) for port in owner.stdout.readline().split()]
        assert ports and all(_listening(port) for port in ports)
    finally:
        owner.kill()
        owner.wait()
    deadline = time.monotonic() + 10
    while any(_listening(port) for port in ports) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_listening(port) for port in ports)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True
