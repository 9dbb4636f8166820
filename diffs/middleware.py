"""``DiffsContextMiddleware``: who made each change a request records.

Add ``"diffs.middleware.DiffsContextMiddleware"`` to ``MIDDLEWARE`` after
``AuthenticationMiddleware``: every diff recorded while a request is handled carries
``{"user": <pk>}`` in ``Diff.context`` (left out for an anonymous request). The user
is looked up only when the request records a diff, once per request, never per diff.
``DIFFS_SETTINGS["request_context"]`` names a function of the request that returns
more values (``{"ip": request.META["REMOTE_ADDR"]}``); its values win over ``user``.
It works in sync and async stacks alike.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponseBase
from django.utils.module_loading import import_string

from diffs.context import OMIT, context
from diffs.settings import SETTING_NAME, get_settings

_Handler = Callable[[HttpRequest], Any]


class DiffsContextMiddleware:
    """Attach the request's user (and ``request_context``'s values) to its diffs."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: _Handler) -> None:
        self.get_response = get_response
        self.more = _request_context_function()
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        if self.is_async:
            return self._handle_async(request)
        with context(self.values_for(request)):
            response: HttpResponseBase = self.get_response(request)
        return response

    async def _handle_async(self, request: HttpRequest) -> HttpResponseBase:
        with context(self.values_for(request)):
            response: HttpResponseBase = await self.get_response(request)
        return response

    def values_for(self, request: HttpRequest) -> dict[str, Any]:
        """The context of ``request``'s diffs: ``user`` (read on first use) and the
        values of ``request_context``."""
        values: dict[str, Any] = {"user": lambda: _user_pk(request)}
        if self.more is not None:
            more = self.more(request)
            if not isinstance(more, dict):
                msg = (
                    f"{SETTING_NAME}['request_context'] returned {type(more).__name__}, "
                    "not a dict of context values."
                )
                raise TypeError(msg)
            values.update(more)
        return values


def _user_pk(request: HttpRequest) -> Any:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return OMIT
    return user.pk


def _request_context_function() -> Callable[[HttpRequest], Any] | None:
    path = get_settings().request_context
    if path is None:
        return None
    try:
        function = import_string(path)
    except ImportError as error:
        msg = (
            f"{SETTING_NAME}['request_context'] = {path!r} cannot be imported ({error}): "
            "give the dotted path of a function that takes the request."
        )
        raise ImproperlyConfigured(msg) from error
    if not callable(function):
        msg = f"{SETTING_NAME}['request_context'] = {path!r} is not callable."
        raise ImproperlyConfigured(msg)
    return function  # type: ignore[no-any-return]
