"""The one door every read of diffs goes through.

:func:`read` applies the rules every read follows, so that no read method has to
remember them: a process reads its own writes (with ``write_behind``, what it still
holds for Redis is written first), and a Redis that failed a moment ago is not asked
again until the pause ends (:mod:`diffs.availability`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from diffs import availability
from diffs.delivery import write_before_read

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
