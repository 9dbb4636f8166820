"""Exceptions raised by django-diffs."""

from __future__ import annotations

import redis


class DiffsError(Exception):
    """Base class of every django-diffs exception."""


class RegistrationError(DiffsError, TypeError):
    """``@diffs.register`` was given something it cannot track."""


class HookError(DiffsError, TypeError):
    """A model hook (``serialize_diff``, ``get_diff_parent``, …) returned something unusable."""


class InvalidCursor(DiffsError, ValueError):
    """A cursor (``since``) is malformed: not one django-diffs gave out."""


class CursorExpired(DiffsError):
    """A cursor is older than ``max_element_age``: diffs after it may be gone.

    The client should take ``restart_cursor`` (the present moment, as a cursor), fetch
    the objects again, and then resume reading diffs from ``restart_cursor``.
    """

    def __init__(self, message: str, restart_cursor: str | None = None) -> None:
        super().__init__(message)
        #: A cursor for "now": every diff written after the failed read comes after it.
        self.restart_cursor = restart_cursor


class DiffsWriteError(DiffsError):
    """Redis did not take committed diffs and ``on_redis_error`` is ``"raise"``.

    The database transaction that produced them has already committed.
    """


class RedisTooOld(DiffsError, redis.ResponseError):
    """The Redis server is older than django-diffs needs (6.2): it refused a script.

    Raised instead of Redis's own refusal ("Invalid stream ID ...", "syntax error"), which
    names nothing to fix. It is also a ``redis.ResponseError``.
    """


class RedisUnavailable(DiffsError, redis.ConnectionError):
    """A read could not reach Redis, or Redis failed less than ``retry_after`` seconds ago.

    After any failed Redis call (read or write), reads fail at once with this error for a
    short pause instead of each waiting ``socket_timeout`` again. It is also a
    ``redis.ConnectionError``, so code catching redis-py's errors still catches it.
    """

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        #: Seconds until Redis will be tried again (the REST endpoint's ``Retry-After``).
        self.retry_after = retry_after
