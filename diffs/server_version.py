"""The Redis version django-diffs needs, and a clear error on a server older than that.

The log (``diffs.lanes``) reads with exclusive stream bounds and trims with
``XTRIM MINID``, both new in Redis 6.2. On an older server, such as the 6.0 that some
long-term-support distributions still ship, writes go through (``XADD`` with an
explicit id is older) but every read and ``prune_diffs`` would fail with "Invalid
stream ID specified as stream command argument" or "syntax error", which names
nothing to fix. So when a script call is refused, the server's version is asked once
(``INFO server``) and, below 6.2, :class:`~diffs.exceptions.RedisTooOld` is raised
instead, saying which version was found and what to do.

A healthy server costs nothing: the version is asked only after a refusal, and what
was found (new enough, too old, or nothing: ``INFO`` denied by an ACL) is kept for a
minute per client. A server whose version cannot be read keeps its own error, and so
does a ``WRONGTYPE`` refusal, which any version gives (the write path sets that diff
aside, ``diffs.availability.is_refusal``).

:class:`CheckedScript` also runs the script itself (``EVALSHA``, loading it once per
server) instead of keeping redis-py's ``Script``, which holds its client: cached per
client, that kept every client ever used (one per event loop for async reads) alive.
"""

from __future__ import annotations

import hashlib
import threading
import time
import weakref
from collections.abc import Sequence
from typing import Any

import redis
import redis.asyncio
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster
from redis.exceptions import NoScriptError

from diffs.availability import is_refusal
from diffs.exceptions import RedisTooOld

#: The oldest Redis server django-diffs works with.
MINIMUM_VERSION = (6, 2)

#: How long what a server's ``INFO`` said (or that it said nothing) is kept.
REMEMBER_SECONDS = 60.0

# Per client: (when asked, the version found or None).
_found: weakref.WeakKeyDictionary[Any, tuple[float, str | None]] = weakref.WeakKeyDictionary()
_found_lock = threading.Lock()


def parse_version(text: object) -> tuple[int, ...] | None:
    """``"6.0.16"`` as ``(6, 0, 16)``; None for anything that is not such a version."""
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    if not isinstance(text, str) or len(text) > 32:
        return None
    parts = text.split(".")
    if not all(part.isascii() and part.isdigit() for part in parts):
        return None
    return tuple(int(part) for part in parts)


def oldest_version(info: object) -> str | None:
    """The ``redis_version`` of an ``INFO server`` reply; of a cluster client's reply
    (one section per node), the oldest node's. None when the reply has none."""
    if not isinstance(info, dict):
        return None
    if "redis_version" in info:
        found = info["redis_version"]
        return found if isinstance(found, str) and parse_version(found) is not None else None
    versions = [oldest_version(section) for section in info.values()]
    known = [version for version in versions if version is not None]
    return min(known, key=lambda version: parse_version(version) or ()) if known else None


def is_refusal_worth_checking(error: BaseException) -> bool:
    """True for a plain refusal by Redis that an old server would give (not a missing
    script, a read-only replica, out of memory, a denied command, a key of another
    type...)."""
    return type(error) is redis.ResponseError and not is_refusal(error)


def too_old(version: str | None) -> RedisTooOld | None:
    """The error to raise for a server running ``version``, or None when it is new
    enough or unknown."""
    parsed = parse_version(version)
    if parsed is None or parsed >= MINIMUM_VERSION:
        return None
    need = ".".join(str(part) for part in MINIMUM_VERSION)
    return RedisTooOld(
        f"django-diffs needs Redis {need} or later; the server runs Redis {version}, "
        "which cannot read the diffs' log (exclusive stream ranges, XTRIM MINID). "
        f"Upgrade the Redis server to {need} or later (diffs written meanwhile are kept "
        "and read once it is)."
    )


def explain_refusal(client: Any, error: BaseException) -> None:
    """Raise :class:`RedisTooOld` from ``error`` when ``client``'s server is older than
    :data:`MINIMUM_VERSION`; return otherwise (the caller re-raises ``error``)."""
    if not is_refusal_worth_checking(error):
        return
    known = _remembered(client)
    if known is None:
        try:
            options = _info_options(client)
            known = _remember(client, oldest_version(client.info("server", **options)))
        except Exception:  # only a diagnosis: whatever INFO does, the refusal stands
            known = _remember(client, None)
    _raise_if_too_old(known[1], error)


async def aexplain_refusal(client: Any, error: BaseException) -> None:
    """:func:`explain_refusal` for a ``redis.asyncio`` client."""
    if not is_refusal_worth_checking(error):
        return
    known = _remembered(client)
    if known is None:
        try:
            options = _info_options(client)
            reply = await client.info("server", **options)
            known = _remember(client, oldest_version(reply))
        except Exception:
            known = _remember(client, None)
    _raise_if_too_old(known[1], error)


def _info_options(client: Any) -> dict[str, Any]:
    # A cluster client asks one node by default: ask every primary, the oldest decides.
    if isinstance(client, RedisCluster | AsyncRedisCluster):
        return {"target_nodes": client.PRIMARIES}
    return {}


def _remembered(client: Any) -> tuple[float, str | None] | None:
    with _found_lock:
        known = _found.get(client)
    if known is None or time.monotonic() - known[0] > REMEMBER_SECONDS:
        return None
    return known


def _remember(client: Any, version: str | None) -> tuple[float, str | None]:
    known = (time.monotonic(), version)
    with _found_lock:
        _found[client] = known
    return known


def _raise_if_too_old(version: str | None, error: BaseException) -> None:
    problem = too_old(version)
    if problem is not None:
        raise problem from error


class CheckedScript:
    """A Lua script for one client: run with ``EVALSHA`` (loaded once per server, again
    after a restart or ``SCRIPT FLUSH``); a refusal by a server older than 6.2 says so.

    The client is held weakly: scripts are cached per client, and a strong reference
    from the cache would keep every client alive.
    """

    def __init__(self, client: Any, source: str) -> None:
        self._client = weakref.ref(client)
        self.source = source
        #: The script's SHA1, for pipelines (``pipe.evalsha(script.sha, ...)``).
        # Encoded as the client sends it (redis-py's Script does the same).
        encoder = getattr(client, "get_encoder", None)
        encoded = encoder().encode(source) if encoder is not None else source.encode()
        self.sha = hashlib.sha1(encoded, usedforsecurity=False).hexdigest()

    def client(self) -> Any:
        """The client the script runs on (alive while a caller holds it)."""
        client = self._client()
        if client is None:  # pragma: no cover - callers hold the client they passed
            msg = "the Redis client of this script was garbage-collected"
            raise RuntimeError(msg)
        return client

    def __call__(self, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> Any:
        """Run the script with ``keys`` and ``args``; return its reply."""
        client = self.client()
        try:
            try:
                return client.evalsha(self.sha, len(keys), *keys, *args)
            except NoScriptError:
                client.script_load(self.source)
                return client.evalsha(self.sha, len(keys), *keys, *args)
        except redis.ResponseError as error:
            explain_refusal(client, error)
            raise


class AsyncCheckedScript(CheckedScript):
    """:class:`CheckedScript` for a ``redis.asyncio`` client."""

    async def __call__(self, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> Any:
        """Run the script with ``keys`` and ``args``; return its reply."""
        client = self.client()
        try:
            try:
                return await client.evalsha(self.sha, len(keys), *keys, *args)
            except NoScriptError:
                await client.script_load(self.source)
                return await client.evalsha(self.sha, len(keys), *keys, *args)
        except redis.ResponseError as error:
            await aexplain_refusal(client, error)
            raise


def checked(client: Any, source: str) -> CheckedScript:
    """The script ``source`` for ``client`` (sync or ``redis.asyncio``)."""
    if isinstance(client, redis.asyncio.Redis | AsyncRedisCluster):
        return AsyncCheckedScript(client, source)
    return CheckedScript(client, source)
