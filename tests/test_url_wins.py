"""With both ``url`` and a server address in ``redis``, the URL wins, as ``diffs.W001`` says."""

from __future__ import annotations

import pytest

from diffs.connection import build_client
from diffs.settings import build_settings


@pytest.mark.parametrize(
    "address",
    [
        {"unix_socket_path": "/run/other.sock"},
        {"host": "elsewhere.local", "port": 7000, "db": 9},
    ],
)
def test_the_url_wins_over_an_address_in_redis(address):
    conf = build_settings({"url": "redis://cache.local:6391/4", "redis": address})
    pool = build_client(conf).connection_pool
    kwargs = pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("cache.local", 6391, 4)
    assert "unix_socket_path" not in kwargs
    # The TCP connection class refused unix_socket_path on every call before.
    pool.make_connection()
