"""The one door every read of diffs goes through.

:func:`read` applies the rules every read follows, so that no read method has to
remember them: a process reads its own writes (with ``write_behind``, what it still
holds for Redis is written first), and a Redis that failed a moment ago is not asked
again until the pause ends (:mod:`diffs.availability`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from asgiref.sync import sync_to_async

from diffs import availability
from diffs.async_connection import read_turn
from diffs.delivery import needs_write_before_read, write_before_read

_T = TypeVar("_T")


def read(call: Callable[[], _T], what: str) -> _T:
    """Run the Redis read ``call`` after this process's own waiting diffs are written.

    ``what`` names the read in errors.

    Raises:
        RedisUnavailable: Redis failed less than a moment ago, or ``call`` found it out
            of reach now.
    """
    write_before_read()
    return availability.read(call, what)


async def aread(call: Callable[[], Awaitable[_T]], what: str) -> _T:
    """:func:`read` for an async read (``call()`` returns an awaitable).

    The process's own waiting diffs are written first as for a sync read; that write
    is sync code, so it runs in a thread, and only when there is something to write
    (with ``write_behind``, diffs of this process not yet sent). The read itself runs
    on the event loop, in one of the loop's turns (``async_connection.read_turn``).
    """
    if needs_write_before_read():
        await sync_to_async(write_before_read, thread_sensitive=False)()
    async with read_turn():  # a burst of reads queues here, not for connections
        return await availability.aread(call, what)
