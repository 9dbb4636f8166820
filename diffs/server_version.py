"""The Redis version django-diffs needs, and a clear error on a server older than that.

The log (``diffs.lanes``) reads with exclusive stream bounds and trims with
``XTRIM MINID``, both new in Redis 6.2. On an older server, such as the 6.0 that some
long-term-support distributions still ship, writes go through (``XADD`` with an
explicit id is older) but every read and ``prune_diffs`` would fail with "Invalid
stream ID specified as stream command argument" or "syntax error", which names
nothing to fix. So when a script call is refused, the server's version is asked once
(``INFO server``) and, below 6.2, :class:`~diffs.exceptions.RedisTooOld` is raised
instead, saying which version was found and what to do.

A healthy server costs nothing: the version is asked only after a refusal, and a
server found new enough is not asked again for that client. A server whose version
cannot be read (``INFO`` denied by an ACL) keeps its own error.
"""

from __future__ import annotations

import inspect
import weakref
from typing import Any

import redis

from diffs.exceptions import RedisTooOld

#: The oldest Redis server django-diffs works with.
MINIMUM_VERSION = (6, 2)

# Clients whose server was found new enough: a later refusal is the server's own.
_recent_enough: weakref.WeakSet[Any] = weakref.WeakSet()


def parse_version(text: object) -> tuple[int, ...] | None:
    """``"6.0.16"`` as ``(6, 0, 16)``; None for anything that is not such a version."""
    if not isinstance(text, str | bytes):
        return None
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    parts = text.split(".")
    if not all(part.isdigit() for part in parts):
        return None
    return tuple(int(part) for part in parts)


def oldest_version(info: object) -> str | None:
    """The ``redis_version`` of an ``INFO server`` reply; of a cluster client's reply
    (one section per node), the oldest node's. None when the reply has none."""
    if not isinstance(info, dict):
        return None
    if "redis_version" in info:
        found = info["redis_version"]
        return found if parse_version(found) is not None else None
    versions = [oldest_version(section) for section in info.values()]
    known = [version for version in versions if version is not None]
    return min(known, key=lambda version: parse_version(version) or ()) if known else None


def is_refusal_worth_checking(error: BaseException) -> bool:
    """True for a plain refusal by Redis (not a missing script, a read-only replica,
    out of memory, a denied command...), which an old server would give."""
    return type(error) is redis.ResponseError


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
    if not is_refusal_worth_checking(error) or client in _recent_enough:
        return
    try:
        info = client.info("server")
    except (redis.RedisError, OSError):
        return  # the version cannot be told: the refusal speaks for itself
    _raise_if_too_old(client, info, error)


async def aexplain_refusal(client: Any, error: BaseException) -> None:
    """:func:`explain_refusal` for a ``redis.asyncio`` client."""
    if not is_refusal_worth_checking(error) or client in _recent_enough:
        return
    try:
        info = await client.info("server")
    except (redis.RedisError, OSError):
        return
    _raise_if_too_old(client, info, error)


def _raise_if_too_old(client: Any, info: object, error: BaseException) -> None:
    version = oldest_version(info)
    problem = too_old(version)
    if problem is not None:
        raise problem from error
    if version is not None:
        _recent_enough.add(client)


class CheckedScript:
    """A ``redis-py`` Script whose refusals on a server older than 6.2 say so."""

    def __init__(self, client: Any, script: Any) -> None:
        self.client = client
        self.script = script
        #: The script's SHA1, for pipelines (``pipe.evalsha(script.sha, ...)``).
        self.sha: str = script.sha

    def __call__(self, keys: Any = (), args: Any = (), **options: Any) -> Any:
        try:
            return self.script(keys=keys, args=args, **options)
        except redis.ResponseError as error:
            explain_refusal(self.client, error)
            raise


class AsyncCheckedScript(CheckedScript):
    """:class:`CheckedScript` for a ``redis.asyncio`` client."""

    async def __call__(self, keys: Any = (), args: Any = (), **options: Any) -> Any:
        try:
            return await self.script(keys=keys, args=args, **options)
        except redis.ResponseError as error:
            await aexplain_refusal(self.client, error)
            raise


def checked(client: Any, script: Any) -> CheckedScript:
    """``script`` (registered on ``client``) wrapped so that an old server says so."""
    if inspect.iscoroutinefunction(type(script).__call__):
        return AsyncCheckedScript(client, script)
    return CheckedScript(client, script)
