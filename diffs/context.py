"""Who and why: JSON values attached to every diff recorded inside a context.

``with diffs.context(user=7, reason="import"):`` (or ``@diffs.context(...)`` on a
function, sync or async) adds ``{"user": 7, "reason": "import"}`` to each diff recorded
inside it; a nested context merges into the outer one, its own values winning. The
values live in a ``contextvars.ContextVar``, so each thread, asyncio task and
``sync_to_async`` call sees the context it was started in, and they are read when the
change is made (in ``post_save``), not when the diff reaches Redis.

A value may also be a callable without arguments, called once, the first time a diff
needs it (``DiffsContextMiddleware`` gives the request's user that way, so a request
that records nothing never loads its user).
"""

from __future__ import annotations

import functools
import inspect
import logging
import threading
from collections.abc import Callable, Mapping
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Any, TypeVar, cast

from diffs.diff import encode_data

logger = logging.getLogger("diffs")

_F = TypeVar("_F", bound=Callable[..., Any])

#: What a callable value returns to leave its key out (an anonymous request's user).
OMIT: Any = object()


class _Frame:
    """The merged values of the innermost context, and their JSON once it is needed.

    A frame is shared by every copy of its ``contextvars`` context (threads started with
    ``copy_context().run``, ``sync_to_async``): its lock makes them resolve it once.
    """

    __slots__ = ("_encoded", "_lock", "values")

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values
        self._encoded: str | None = None
        self._lock = threading.Lock()

    def resolved(self) -> dict[str, Any]:
        """The values, each callable replaced by what it returns (called once; a key
        whose callable returns ``OMIT``, raises or returns what JSON cannot hold is left
        out, the last two logged: a diff never fails because of its context)."""
        with self._lock:
            for key, value in list(self.values.items()):
                if callable(value):
                    result = _call(key, value)
                    if result is OMIT:
                        del self.values[key]
                    else:
                        self.values[key] = result
            return self.values

    def snapshot(self) -> dict[str, Any]:
        """A copy of the values as they stand (a callable not yet called stays one)."""
        with self._lock:
            return dict(self.values)

    def encoded(self) -> str:
        """The values as compact JSON (encoded once per frame)."""
        if self._encoded is None:
            values = self.resolved()
            with self._lock:
                self._encoded = encode_data(values)
        return self._encoded


_current: ContextVar[_Frame | None] = ContextVar("diffs_context", default=None)


class context:
    """Attach ``values`` to every diff recorded inside the ``with`` block or the
    decorated function (sync or async).

    Values are JSON (as the data: str, numbers, bools, None, lists, dicts, dates,
    ``Decimal``, ``UUID``) or callables without arguments that return JSON, called the
    first time a diff needs them. A value JSON cannot hold raises ``TypeError`` here,
    naming the key. One ``context`` object is entered once at a time; as a decorator,
    each call enters a fresh one.
    """

    def __init__(self, values: Mapping[Any, Any] | None = None, /, **more: Any) -> None:
        checked: dict[str, Any] = {}
        for key, value in {**(values or {}), **more}.items():
            if not isinstance(key, str):
                msg = f"diffs.context() keys are strings, not {key!r}."
                raise TypeError(msg)
            checked[key] = value if callable(value) else _checked(key, value)
        self.values = checked
        #: One token per entry not yet left (``with ctx: with ctx:`` nests).
        self._tokens: list[Token[_Frame | None]] = []

    def __enter__(self) -> context:
        outer = _current.get()
        merged = {**outer.snapshot(), **self.values} if outer is not None else dict(self.values)
        self._tokens.append(_current.set(_Frame(merged)))
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._tokens:
            _current.reset(self._tokens.pop())

    def __call__(self, function: _F) -> _F:
        values = self.values
        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                with context(values):
                    return await function(*args, **kwargs)

            return cast("_F", run_async)

        @functools.wraps(function)
        def run(*args: Any, **kwargs: Any) -> Any:
            with context(values):
                return function(*args, **kwargs)

        return cast("_F", run)


def get_context() -> dict[str, Any]:
    """The values of the context in effect (empty outside one), callables resolved.

    Carry them where ``contextvars`` do not follow, such as a Celery task:
    ``task.delay(..., diffs_context=diffs.get_context())``, then
    ``with diffs.context(diffs_context):`` in the task.
    """
    frame = _current.get()
    return {} if frame is None else dict(frame.resolved())


def current_json() -> str | None:
    """The JSON of the context in effect, for a member; None outside one (or empty)."""
    frame = _current.get()
    if frame is None or not frame.values:
        return None
    encoded = frame.encoded()
    return None if encoded == "{}" else encoded


def _call(key: str, function: Any) -> Any:
    """What a callable value gives, or ``OMIT`` (logged) when it raises or gives what
    JSON cannot hold."""
    try:
        result = function()
        return result if result is OMIT else _checked(key, result)
    except Exception:
        logger.exception(
            "diffs.context() value %s could not be computed; diffs are recorded without it.",
            key,
        )
        return OMIT


def _checked(key: str, value: Any) -> Any:
    try:
        encode_data(value)
    except (TypeError, ValueError) as error:
        msg = (
            f"diffs.context() value {key}={value!r:.80} is not JSON ({error}): pass str, "
            "numbers, bools, None, lists, dicts, dates, Decimal or UUID (for a model "
            "instance, its pk)."
        )
        raise TypeError(msg) from error
    return value
