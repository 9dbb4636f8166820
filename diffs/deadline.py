"""A hard deadline for calls to Redis Cluster: ``socket_timeout`` in all.

On one server, redis-py's own timeouts bound a call (``diffs.connection`` turns off
its retries of timeouts). redis-py's cluster client does more after a node fails to
answer: it asks the other nodes for the cluster's layout, each within
``socket_timeout``, before it gives up, so against a cluster that hangs entirely one
call took (primaries + 1) x ``socket_timeout``. Here every command of the cluster
client runs on a small pool of threads, and the caller waits for it at most
``socket_timeout``: past that it gets ``redis.TimeoutError``, as from one server, while
the command finishes (or fails) in the background. Writes are idempotent, so a write
that completes after its caller gave up is stored once when it is retried.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
from typing import Any

import redis
from redis.cluster import RedisCluster

#: Threads running cluster commands, per process.
POOL_SIZE = 16

_lock = threading.Lock()
_pool: concurrent.futures.ThreadPoolExecutor | None = None
_pool_pid = 0
_inside = threading.local()
#: One per thread of the pool: taken by a command until it has finished.
_slots = threading.BoundedSemaphore(POOL_SIZE)


def _executor() -> concurrent.futures.ThreadPoolExecutor:
    # One pool per process: a forked child has none of its parent's threads.
    global _pool, _pool_pid, _slots
    with _lock:
        if _pool is None or _pool_pid != os.getpid():
            _pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=POOL_SIZE, thread_name_prefix="diffs-cluster"
            )
            _slots = threading.BoundedSemaphore(POOL_SIZE)
            _pool_pid = os.getpid()
        return _pool


class DeadlineCluster(RedisCluster):
    """redis-py's cluster client whose commands return within ``deadline`` seconds."""

    #: Seconds a caller waits for one command (None: no deadline).
    deadline: float | None = None

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        """Run a command, waiting at most ``deadline`` seconds for it."""
        if self.deadline is None or getattr(_inside, "active", False):
            # Commands a command runs itself (a script load, say) are already timed.
            return super().execute_command(*args, **kwargs)  # type: ignore[no-untyped-call]
        # Commands a hung cluster holds keep their thread until redis-py gives up on
        # them: past POOL_SIZE of those, fail at once rather than queue without bound.
        pool = _executor()  # first: a forked child gets a pool and slots of its own
        if not _slots.acquire(blocking=False):
            msg = (
                f"Redis Cluster has not answered {POOL_SIZE} commands yet; {args[0]!s} is "
                "not sent."
            )
            raise redis.TimeoutError(msg)
        future = pool.submit(self._run, args, kwargs)
        try:
            return future.result(timeout=self.deadline)
        except concurrent.futures.TimeoutError:
            if future.cancel():  # it had not started, and now never will
                _slots.release()
            msg = (
                f"Redis Cluster did not answer {args[0]!s} within socket_timeout "
                f"({self.deadline:g} s)."
            )
            raise redis.TimeoutError(msg) from None

    def _run(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        _inside.active = True
        try:
            return super().execute_command(*args, **kwargs)  # type: ignore[no-untyped-call]
        finally:
            _inside.active = False
            _slots.release()
