"""Whether Redis may be tried now: after an outage, a short pause shared by every call.

A hung or unreachable Redis costs a call ``socket_timeout``. Paying that on every
request of an outage would stall the site, so after a call fails because Redis is
out of reach (not because it refused a command), this process leaves Redis alone for
``PAUSE_SECONDS``: writes keep their diffs queued, reads fail at once with
:class:`~diffs.exceptions.RedisUnavailable`. The first call after the pause tries again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis
from redis.exceptions import RedisClusterException

from diffs.exceptions import RedisTooOld, RedisUnavailable

_T = TypeVar("_T")

#: How long (seconds) after a failed call Redis is left alone.
PAUSE_SECONDS = 1.0

_lock = threading.Lock()
_paused_until = 0.0


def remaining() -> float:
    """Seconds left in the pause after the last outage (0 when Redis may be tried)."""
    return max(0.0, _paused_until - time.monotonic())


def trip() -> None:
    """Start the pause: a call just found Redis out of reach."""
    global _paused_until
    with _lock:
        _paused_until = time.monotonic() + PAUSE_SECONDS


def reset() -> None:
    """End the pause (a call just succeeded, or tests start afresh)."""
    global _paused_until
    with _lock:
        _paused_until = 0.0


def is_refusal(error: BaseException) -> bool:
    """True when Redis answered that this one call can never succeed as it is: a key of
    another type holds the place of one of ours (``WRONGTYPE``). Waiting does not help;
    the diff involved is set aside."""
    return isinstance(error, redis.ResponseError) and "WRONGTYPE" in str(error)


def is_outage(error: BaseException) -> bool:
    """True when ``error`` says Redis cannot serve now: out of reach, too busy, or
    answering with an error that passes with time (``READONLY`` during a failover,
    ``CLUSTERDOWN``, ``TRYAGAIN``, ``OOM``, ``NOPERM`` until the ACL is fixed, ...).
    Only :func:`is_refusal` errors are not, nor a server too old for django-diffs (no
    pause makes it newer): the calls are tried again after the pause."""
    if isinstance(error, (redis.ConnectionError, redis.TimeoutError, RedisClusterException)):
        return True
    if isinstance(error, RedisTooOld):
        return False
    return isinstance(error, redis.ResponseError) and not is_refusal(error)


def read(call: Callable[[], _T], what: str) -> _T:
    """Run the Redis read ``call`` unless Redis is paused; ``what`` names it in errors.

    Raises:
        RedisUnavailable: Redis failed less than ``PAUSE_SECONDS`` ago, or ``call``
            found it out of reach now (the pause then starts).
    """
    _refuse_while_paused(what)
    try:
        return call()
    except (redis.RedisError, RedisClusterException) as error:
        if not is_outage(error):
            raise
        raise _unavailable(error, what) from error


async def aread(call: Callable[[], Awaitable[_T]], what: str) -> _T:
    """:func:`read` for an async read: awaits ``call()`` unless Redis is paused."""
    _refuse_while_paused(what)
    try:
        return await call()
    except (redis.RedisError, RedisClusterException) as error:
        if not is_outage(error):
            raise
        raise _unavailable(error, what) from error


def _refuse_while_paused(what: str) -> None:
    left = remaining()
    if left > 0:
        msg = (
            f"Redis failed less than {PAUSE_SECONDS:g} s ago; {what} is not tried again "
            f"for {left:.2f} s."
        )
        raise RedisUnavailable(msg, retry_after=left)


def _unavailable(error: Exception, what: str) -> RedisUnavailable:
    """What a read that met the outage ``error`` raises; the pause starts."""
    trip()
    msg = f"Could not read {what} from Redis ({type(error).__name__}: {error})."
    return RedisUnavailable(msg, retry_after=PAUSE_SECONDS)
