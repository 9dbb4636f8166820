"""The ``redis.asyncio`` clients of the async reads: one per event loop.

An asyncio connection belongs to the event loop that opened it, and Django may run
several loops in one process (``async_to_sync`` starts one per call in a sync
context), so each running loop gets a client of its own, built lazily from the same
``DIFFS_SETTINGS`` as the sync client (:mod:`diffs.connection`) and forgotten with
its loop. A change of ``DIFFS_SETTINGS`` drops them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import weakref
from collections.abc import AsyncIterator
from typing import Any

import redis
import redis.asyncio
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff

from diffs.connection import (
    LUPA_HINT,
    LUPA_MISSING,
    get_fake_server,
    lupa_installed,
    waiting_for_connections,
)
from diffs.settings import SETTING_NAME, DiffsSettings, get_settings, plain_url

_lock = threading.Lock()
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopClient] = (
    weakref.WeakKeyDictionary()
)

# Options of the sync client that are objects made for it and mean nothing (or the
# wrong thing) to an asyncio client: the async client builds its own.
_SYNC_ONLY_OPTIONS = ("connection_pool", "connection_class", "retry")


#: How many async reads one event loop runs at once; the others wait their turn.
#: Two hundred event streams opening together would otherwise take every pooled
#: connection, each read slowed by all the others, and the last ones would give up
#: waiting for a connection (``socket_timeout``) as if Redis were down.
READS_AT_ONCE = 32


async def get_async_connection() -> Any:
    """The ``redis.asyncio`` client of the running event loop (built on first use).

    A cluster client learns the cluster's layout before its first command here:
    redis-py's async cluster client, asked by many tasks at once before it has, fails
    some of them.
    """
    entry = _loop_entry()
    if not entry.ready:
        async with entry.starting:
            if not entry.ready:
                if isinstance(entry.client, AsyncRedisCluster):
                    await entry.client.initialize()
                entry.ready = True
    return entry.client


@contextlib.asynccontextmanager
async def read_turn() -> AsyncIterator[None]:
    """Hold one of the running loop's ``READS_AT_ONCE`` turns to read (fewer when the
    client's pool has fewer connections). A turn is waited for without a time limit:
    each read that holds one ends within ``socket_timeout``, and once Redis is found
    out of reach the reads waiting behind it fail at once (:mod:`diffs.availability`).
    Taking a turn reaches no server: a cluster client learns its layout in the read.
    """
    async with _loop_entry().turns:
        yield


def _loop_entry() -> _LoopClient:
    """The running loop's client entry, built (not connected) on first use."""
    loop = asyncio.get_running_loop()
    entry = _clients.get(loop)
    if entry is None:
        with _lock:
            entry = _clients.get(loop)
            if entry is None:
                _forget_closed_loops()
                entry = _clients[loop] = _LoopClient(build_async_client(get_settings()))
    return entry


class _LoopClient:
    """One loop's client, whether it is ready for commands, and its reading turns."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.ready = False
        self.starting = asyncio.Lock()
        pooled = getattr(getattr(client, "connection_pool", None), "max_connections", None)
        if pooled is None:  # a cluster client: the cap of each node's connections
            pooled = (getattr(client, "connection_kwargs", None) or {}).get("max_connections")
        at_once = READS_AT_ONCE
        if isinstance(pooled, int) and pooled > 0:
            at_once = min(at_once, pooled)
        self.turns_at_once = at_once
        self.turns = asyncio.Semaphore(at_once)


def reset_async_connections() -> None:
    """Forget every loop's client; the next async read builds a new one."""
    with _lock:
        for entry in _clients.values():
            _drop_sockets(entry.client)
        _clients.clear()


def _forget_after_fork() -> None:
    global _lock
    _lock = threading.Lock()
    _clients.clear()  # the parent's loops and sockets


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


def _forget_closed_loops() -> None:
    """Drop the clients of loops that have closed (``asyncio.run()`` and
    ``async_to_sync`` close theirs), with their sockets. Called with the lock held.

    The weak keys alone do not do it: a client's connections hold its loop.
    """
    for loop in [loop for loop in _clients if loop.is_closed()]:
        _drop_sockets(_clients.pop(loop).client)


def _drop_sockets(client: Any) -> None:
    """Close the sockets of ``client``'s pooled connections at once, without its loop
    (which may be closed). Best effort: a cluster client's are left to the collector."""
    pool = getattr(client, "connection_pool", None)
    for name in ("_available_connections", "_in_use_connections"):
        for connection in list(getattr(pool, name, None) or ()):
            writer = getattr(connection, "_writer", None)
            # The socket itself: the transport's abort() needs its loop, which is closed.
            sock = getattr(getattr(writer, "transport", None), "_sock", None)
            if isinstance(sock, socket.socket):  # fakeredis' transports have none
                sock.close()


@receiver(setting_changed, dispatch_uid="diffs.async_connection.setting_changed")
def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting == SETTING_NAME:
        reset_async_connections()


def build_async_client(conf: DiffsSettings) -> Any:
    """A new ``redis.asyncio`` client for ``conf`` (uncached: most code wants
    :func:`get_async_connection`). It has the sync client's address, credentials, TLS
    options and timeouts."""
    if conf.test_mode:
        return _fake_client(conf)
    options = _options(conf)
    if conf.cluster:
        options.pop("db", None)
        options["retry"] = AsyncRetry(NoBackoff(), 0)
        if conf.url:
            return AsyncRedisCluster.from_url(plain_url(conf.url), **options)
        address = {k: conf.redis[k] for k in ("host", "port") if k in conf.redis}
        return AsyncRedisCluster(**(options | address))
    if conf.url:
        for key in ("host", "port", "db", "unix_socket_path"):
            options.pop(key, None)
        client = redis.asyncio.Redis.from_url(conf.url, **options)
    else:
        client = redis.asyncio.Redis(**options)
    return waiting_for_connections(client, redis.asyncio, conf.socket_timeout)


def _options(conf: DiffsSettings) -> dict[str, Any]:
    """The connection options of ``conf`` for an asyncio client."""
    user = dict(conf.user_redis)
    pool = user.get("connection_pool")
    if pool is not None:
        # A sync pool given by hand: its connection options, on new asyncio connections.
        user = {**pool.connection_kwargs}
        if getattr(pool.connection_class, "__name__", "") == "SSLConnection":
            user["ssl"] = True
    for key in _SYNC_ONLY_OPTIONS:
        user.pop(key, None)
    base = {} if pool is not None else dict(conf.redis)
    for key in _SYNC_ONLY_OPTIONS:
        base.pop(key, None)
    # The same failure policy as the sync client (diffs.connection): every call gives up
    # after socket_timeout; only a connection that fails at once is retried, once.
    timeouts = {
        "socket_timeout": conf.socket_timeout,
        "socket_connect_timeout": conf.socket_timeout,
        "retry": AsyncRetry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
    }
    return {**base, **timeouts, **user}


def _fake_client(conf: DiffsSettings) -> Any:
    # Imported here: fakeredis is optional (the test extra), needed in test mode only.
    import fakeredis

    if not lupa_installed():  # as diffs.connection refuses it
        msg = f"{LUPA_MISSING} {LUPA_HINT}"
        raise ImproperlyConfigured(msg)
    options = {key: conf.redis[key] for key in ("db", "decode_responses") if key in conf.redis}
    return fakeredis.FakeAsyncRedis(server=get_fake_server(), **options)
