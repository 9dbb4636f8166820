"""Reads written once, run by a sync client or by an async one.

A read of diffs is a short conversation with Redis: a script call, then maybe another
that depends on the first's answer, then Python work on the result. Each read in
:mod:`diffs.feed` is written as a generator that *yields* the :class:`ScriptCall` it
needs and receives the reply, without doing any I/O itself. :func:`run` answers it
with a ``redis.Redis`` client; :func:`arun` with a ``redis.asyncio`` one, on the
event loop, with no thread hop. Both therefore return the same results and raise the
same errors: there is one read, not a sync one and an async copy.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from diffs.connection import cached_script

_T = TypeVar("_T")


@dataclass(frozen=True)
class ScriptCall:
    """One Lua script call a read asks for: its source, keys and arguments."""

    source: str
    keys: Sequence[str]
    args: Sequence[Any]


#: A read: yields script calls, receives their replies, returns its result.
Steps = Generator[ScriptCall, Any, _T]


def run(client: Any, steps: Steps[_T]) -> _T:
    """Answer each script call of ``steps`` with the sync ``client``; return the result."""
    reply: Any = None
    while True:
        try:
            call = steps.send(reply)
        except StopIteration as done:
            result: _T = done.value
            return result
        reply = cached_script(client, call.source)(keys=list(call.keys), args=list(call.args))


async def arun(client: Any, steps: Steps[_T]) -> _T:
    """Answer each script call of ``steps`` with the ``redis.asyncio`` ``client``."""
    reply: Any = None
    while True:
        try:
            call = steps.send(reply)
        except StopIteration as done:
            result: _T = done.value
            return result
        script = cached_script(client, call.source)
        reply = await script(keys=list(call.keys), args=list(call.args))
