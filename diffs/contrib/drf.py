"""Django REST Framework endpoints that serve a registered model's diffs.

:class:`DiffsViewSetMixin`, first in a viewset's bases, adds ``<prefix>/diffs/`` (the
model's feed) and ``<prefix>/<pk>/diffs/`` (one object's diffs), both paged by
``since`` and ``limit``. They show no more than the viewset would: its authentication,
permissions and throttling, ``get_object()`` for one object, only rows of
``filter_queryset(get_queryset())`` in the feed (a deletion only when the deleted row
certainly passed the filter: ``diffs.contrib.rowmatch``), and only the columns its
serializer shows. Errors are 400, 410 (expired cursor, with a fresh one) or 503 with
``Retry-After``, never a 500. The README's "REST endpoint" section is the full guide.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import re
import time
import weakref
from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast

from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import connections as db_connections
from django.db import models
from django.http import HttpResponseBase
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.relations import (
    HyperlinkedRelatedField,
    PrimaryKeyRelatedField,
    SlugRelatedField,
)
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import BaseSerializer, ListSerializer
from rest_framework.utils.encoders import JSONEncoder

from diffs.connection import REDIS_ERRORS
from diffs.contrib.events import EventStreamRenderer, PageMemo, event_stream_response, page_memo
from diffs.contrib.rowmatch import deleted_row, row_matches, selects_every_row
from diffs.cursors import Since, start_of
from diffs.diff import Diff
from diffs.exceptions import CursorExpired, InvalidCursor, RedisUnavailable
from diffs.feed import MAX_LIMIT, FeedPage
from diffs.keys import model_label, pk_value
from diffs.managers import DiffModelManager
from diffs.registry import is_registered
from diffs.settings import get_settings

__all__ = [
    "DiffsCursorGone",
    "DiffsRedisUnavailable",
    "DiffsViewSetMixin",
    "InvalidDiffsParameter",
    "serializer_columns",
]

logger = logging.getLogger("diffs")

_F = TypeVar("_F", bound=Callable[..., Any])

# At most 7 digits: int() of a huge string is slow (and refused past 4300 digits).
_LIMIT_RE = re.compile(r"[0-9]{1,7}")
# Seconds, with at most three decimals: "25", "2.5".
_WAIT_RE = re.compile(r"[0-9]{1,5}(?:\.[0-9]{1,3})?")
#: The longest ``since`` worth parsing: a cursor is a float's repr (at most 24
#: characters), Unix milliseconds fewer still.
_MAX_SINCE_CHARS = 64
#: How much of a bad parameter an error body echoes (then an ellipsis).
_ECHO_CHARS = 40
#: A longer error message about ``since`` is replaced by a generic one.
_MAX_DETAIL_CHARS = 300
#: Bounds of the ``Retry-After`` of a 503, in seconds.
_MIN_RETRY_AFTER = 1
_MAX_RETRY_AFTER = 3600
#: The deepest nesting of lists and dicts an entry of ``results`` may have. JSON
#: encoders recurse; an entry nested close to Python's recursion limit could be read
#: and checked, then still fail in the renderer (a 500 on every page holding it).
_MAX_JSON_DEPTH = 100
#: How much of a reason or pk a warning quotes.
_LOG_CHARS = 200

#: The keys of one record of the default serializer's data.
_DEFAULT_RECORD_KEYS = frozenset({"model", "pk", "fields"})


def _diffs_action(*, detail: bool) -> Callable[[_F], _F]:
    """``@action(methods=["get"], url_path="diffs")``, typed (DRF has no annotations)."""
    return cast("Callable[[_F], _F]", action(methods=["get"], detail=detail, url_path="diffs"))


def _stream_action() -> Callable[[_F], _F]:
    """The ``diffs/stream`` action: it accepts ``Accept: text/event-stream``."""
    decorator = action(
        methods=["get"],
        detail=False,
        url_path="diffs/stream",
        renderer_classes=[EventStreamRenderer, JSONRenderer],
    )
    return cast("Callable[[_F], _F]", decorator)


class InvalidDiffsParameter(ValidationError):  # type: ignore[misc]
    """400: ``limit`` or ``since`` is malformed. The body is ``{"detail", "code"}``."""

    def __init__(self, message: str, code: str) -> None:
        # A dict detail is the response body as it is (a str would become a list).
        super().__init__({"detail": message, "code": code}, code)


class DiffsCursorGone(APIException):  # type: ignore[misc]
    """410 Gone: ``since`` is older than ``max_element_age``.

    Body: ``{"detail", "code", "cursor"}``, where ``cursor`` stands for the present: the
    client keeps it, fetches the objects again, then reads diffs since it.
    """

    status_code = status.HTTP_410_GONE
    default_code = "cursor_expired"

    def __init__(self, message: str, cursor: str | None) -> None:
        body = {"detail": message, "code": self.default_code, "cursor": cursor}
        super().__init__(body, self.default_code)


class DiffsRedisUnavailable(APIException):  # type: ignore[misc]
    """503 Service Unavailable: Redis could not be read.

    Body: ``{"detail", "code"}`` (no detail of the error: it may name hosts). The
    ``Retry-After`` header comes from ``wait``, which DRF's exception handler sends as it
    does for throttling; a custom ``EXCEPTION_HANDLER`` that builds on DRF's keeps it.
    """

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "redis_unavailable"

    def __init__(self, retry_after: int) -> None:
        message = (
            f"Diffs cannot be read right now: Redis is unavailable. Try again in "
            f"{retry_after} second(s)."
        )
        super().__init__({"detail": message, "code": self.default_code}, self.default_code)
        #: Whole seconds, at least 1: the ``Retry-After`` header.
        self.wait = retry_after


class DiffsViewSetMixin:
    """Adds ``GET <list>/diffs/`` and ``GET <detail>/diffs/`` to a DRF viewset.

    Put it before the viewset class: ``class V(DiffsViewSetMixin, ModelViewSet)``.
    The model is ``self.get_queryset().model``; it must be registered with django-diffs.

    Hooks to override: :meth:`diff_data` (what a diff's ``data`` shows),
    :meth:`deleted_diff_visible` (which deletions the feed shows), :meth:`visible_diffs`
    and :meth:`diff_representation`.
    """

    #: ``limit`` when the request gives none.
    diffs_page_size: ClassVar[int] = 100
    #: The largest ``limit`` a request may ask for (at most ``diffs.feed.MAX_LIMIT``).
    diffs_max_limit: ClassVar[int] = MAX_LIMIT
    #: What ``self.action`` reads while a diffs action runs (permission checks and
    #: ``get_serializer_class()`` included). Set it to ``{}`` to see the actions' own
    #: names instead.
    diffs_action_aliases: ClassVar[Mapping[str, str]] = {
        "diffs_feed": "list",
        "diffs_stream": "list",
        "object_diffs": "retrieve",
    }
    #: Serializers of child models whose diffs reach this model's sets through
    #: ``get_diff_parent()``: ``{"app_label.model_name": SerializerClass}``. The data of
    #: a child's diff shows the columns its serializer shows (see :meth:`diff_data`); a
    #: child not listed here has ``"data": null``.
    diffs_child_serializers: ClassVar[Mapping[str, type[Any]]] = {}
    #: The keys of a diff's ``diffs.context()`` an entry shows (``"context"``): others
    #: may say more than the API should (an IP address, a reason meant for staff).
    diffs_context_keys: ClassVar[tuple[str, ...]] = ("user",)

    # Provided by DRF's GenericViewSet.
    action: str | None
    request: Request
    if TYPE_CHECKING:

        def get_queryset(self) -> models.QuerySet[Any]: ...

        def filter_queryset(self, queryset: models.QuerySet[Any]) -> models.QuerySet[Any]: ...

        def get_object(self) -> models.Model: ...

        def get_serializer(self, *args: Any, **kwargs: Any) -> Any: ...

        def get_serializer_context(self) -> dict[str, Any]: ...

    _diffs_queryset: models.QuerySet[Any] | None = None
    # Set on a class once its diffs_child_serializers names only child models.
    _diffs_children_checked: ClassVar[bool] = False
    # Per request: label -> the columns its serializer shows (None: no serializer).
    _diffs_columns: dict[str, frozenset[str] | None] | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not 1 <= cls.diffs_page_size <= cls.diffs_max_limit <= MAX_LIMIT:
            msg = (
                f"{cls.__qualname__}: need 1 <= diffs_page_size ({cls.diffs_page_size}) "
                f"<= diffs_max_limit ({cls.diffs_max_limit}) <= {MAX_LIMIT}."
            )
            raise ImproperlyConfigured(msg)
        _check_child_serializers(cls)

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        # Authentication, permission and throttle checks see the aliased action.
        with self._diffs_aliased_action():
            cast("Any", super()).initial(request, *args, **kwargs)

    @_diffs_action(detail=False)
    def diffs_feed(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """The diffs of every object the user may see, oldest first, after ``since``.

        With ``?wait=`` (seconds, capped by ``DIFFS_SETTINGS["max_wait"]``) the response
        waits for the first diff the user may see, or until the wait ends.
        """
        with self._diffs_aliased_action():
            since, limit = self.get_diffs_params(request)
            wait = self.get_diffs_wait(request)
            page, entries = self._diffs_feed_page(since, limit, wait)
            return self.diffs_response(page, entries)

    @_diffs_action(detail=True)
    def object_diffs(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """One object's diffs, oldest first, after ``since`` (404 if it may not be seen);
        ``?wait=`` waits for the next as the feed does."""
        with self._diffs_aliased_action():
            since, limit = self.get_diffs_params(request)
            wait = self.get_diffs_wait(request)
            instance = self.get_object()
            if db_connections[self.get_queryset().db].in_atomic_block:
                wait = 0.0  # ATOMIC_REQUESTS: see wait_for_shown
            model = self.get_queryset().model
            manager = self._diffs_manager(model)
            page = _read(
                lambda: manager.object_since(instance.pk, since, limit, wait=wait or None),
                since,
                model,
            )
            return self.diffs_response(page, _decodable(page.diffs, model, instance.pk))

    @_stream_action()
    def diffs_stream(self, request: Request, *args: Any, **kwargs: Any) -> HttpResponseBase:
        """The feed as server-sent events (``text/event-stream``): each diff the user may
        see is an event whose ``id`` is its cursor; the stream resumes from
        ``Last-Event-ID`` (or ``?since=``) and ends after ``max_wait`` seconds, when the
        browser reconnects (and is authenticated again). See the README's "Live
        updates"."""
        with self._diffs_aliased_action():
            since, limit = self.get_diffs_params(request)
            resumed = request.META.get("HTTP_LAST_EVENT_ID") or None
            if resumed is not None:
                since = self._diffs_checked_since(resumed)
            model = self.get_diffs_queryset().model
            self._diffs_manager(model)  # refuses a model not registered
            try:
                start_of(since, 0.0)
            except InvalidCursor as error:
                detail = _invalid_cursor_detail(error, since)
                raise InvalidDiffsParameter(detail, "invalid_cursor") from error
            return event_stream_response(self, request, since, limit)

    def _diffs_feed_page(
        self, since: Since, limit: int, wait: float
    ) -> tuple[FeedPage, list[Diff]]:
        """A feed page after ``since`` and the diffs of it the user may see, waiting up to
        ``wait`` seconds for one (diffs the user may not see do not end the wait)."""
        queryset = self.get_diffs_queryset()
        model = queryset.model
        manager = self._diffs_manager(model)

        def read(cursor: Since, left: float | None) -> FeedPage:
            return _read(functools.partial(manager.since, cursor, limit, wait=left), cursor, model)

        return wait_for_shown(
            read,
            lambda page: self.visible_diffs(_decodable(page.diffs, model)),
            since,
            wait,
            in_transaction=db_connections[queryset.db].in_atomic_block,
        )

    def get_diffs_params(self, request: Request) -> tuple[str | None, int]:
        """Return ``(since, limit)`` from the query string, or raise a 400."""
        params = request.query_params
        since = params.get("since") or None
        if since is not None:
            since = self._diffs_checked_since(since)
        return since, parse_limit(params, self.diffs_page_size, self.diffs_max_limit)

    def _diffs_shown_entries(self, page: FeedPage) -> list[dict[str, Any]]:
        """The entries of a feed page this user may see (the event stream's). The
        permissions are checked again first: a stream lasts up to ``max_wait``."""
        model = self.get_diffs_queryset().model
        with self._diffs_aliased_action():
            cast("Any", self).check_permissions(self.request)
            return self.diffs_entries(self.visible_diffs(_decodable(page.diffs, model)))

    def get_diffs_wait(self, request: Request) -> float:
        """The seconds ``?wait=`` asks for (0 without it), at most ``max_wait``; a 400
        for anything but a number of seconds."""
        raw = request.query_params.get("wait") or ""
        if not raw:
            return 0.0
        if not _WAIT_RE.fullmatch(raw):
            msg = f"wait must be a number of seconds (e.g. 25 or 2.5), not {_echo(raw)}."
            raise InvalidDiffsParameter(msg, "invalid_wait")
        return min(float(raw), get_settings().max_wait)

    @staticmethod
    def _diffs_checked_since(since: str) -> str:
        """``since`` (or a ``Last-Event-ID``), refused with a 400 when too long to parse."""
        if len(since) > _MAX_SINCE_CHARS:
            msg = (
                f"Invalid 'since': {_echo(since)} is not a cursor (a cursor has at most "
                f"{_MAX_SINCE_CHARS} characters): pass back the cursor of a diff or page."
            )
            raise InvalidDiffsParameter(msg, "invalid_cursor")
        return since

    def get_diffs_queryset(self) -> models.QuerySet[Any]:
        """The rows whose diffs the feed shows: ``filter_queryset(get_queryset())``.

        Built once per request.
        """
        if self._diffs_queryset is None:
            self._diffs_queryset = self.filter_queryset(self.get_queryset())
        return self._diffs_queryset

    def visible_diffs(self, diffs: list[Diff]) -> list[Diff]:
        """Keep the diffs of a feed page the user may see (one query).

        A diff is shown when its holder (the object whose set holds it) is in the
        queryset now, or when it is a deletion :meth:`deleted_diff_visible` lets through.
        A ``superseded`` diff belongs to an earlier row whose pk was used again: the row
        in the queryset now says nothing about it, so only its deletion can be shown,
        and only through :meth:`deleted_diff_visible`.
        """
        queryset = self.get_diffs_queryset()
        holders = [None if diff.superseded else _holder_pk(queryset.model, diff) for diff in diffs]
        wanted = {pk for pk in holders if pk is not None}
        present = _present(queryset, wanted) if wanted else set()
        return [
            diff
            for diff, pk in zip(diffs, holders, strict=True)
            if (pk is not None and pk in present)
            or (diff.deleted and self.deleted_diff_visible(diff))
        ]

    def deleted_diff_visible(self, diff: Diff) -> bool:
        """Whether the feed shows ``diff``, a deletion whose holder is not in the queryset
        (or a deletion of an earlier row whose pk was used again).

        The row is gone, so the database cannot tell whether this user could see it.
        By default: always when the queryset (:meth:`get_diffs_queryset`) selects every
        row of the table (``diffs.contrib.rowmatch.selects_every_row``); otherwise the
        queryset's filter is evaluated against the deleted row as the diff's default
        data holds it, in SQL's three-valued logic, and the deletion is shown only when
        the row certainly passes (``filter(owner=request.user)`` works). Anything the
        database might answer differently (NULL compared, collations, JSON, joins,
        expressions, a custom ``serialize_diff``, the deletion of a child whose parent
        went too) hides the diff. Override it to decide yourself::

            def deleted_diff_visible(self, diff):
                if diff.model != "polls.question":
                    return False
                return diff.data[0]["fields"]["owner"] == self.request.user.pk
        """
        queryset = self.get_diffs_queryset()
        if selects_every_row(queryset):
            return True  # every user of the endpoint sees every row
        row = deleted_row(diff.data, queryset.model)
        return row is not None and row_matches(queryset, row)

    def diff_data(self, diff: Diff) -> Any:
        """The ``data`` an entry of ``results`` shows for ``diff``; None shows ``null``.

        The stored data holds every column that changed, including those the API never
        shows, so by default it is filtered by the serializer that shows the object:

        * data in the default serializer's format (``[{"model", "pk", "fields"}]``)
          of the viewset's model (or a proxy of it) keeps the ``fields`` that the
          viewset's serializer shows, as :func:`serializer_columns` finds them: the
          serializer is ``self.get_serializer()`` with the aliased action, so a
          ``get_serializer_class()`` that branches on ``self.action`` picks the
          ``list`` serializer for the feed and the ``retrieve`` one for an object's
          diffs;
        * the same for a child model's diff (one a child sent to its parent with
          ``get_diff_parent()``), with the serializer :attr:`diffs_child_serializers`
          names for the child's label;
        * anything else is None: data of a custom ``serialize_diff`` (nothing tells
          which of it the API shows), of a child without a serializer listed, or not
          of the object the diff describes. The entry is still listed, so the client
          knows the object changed.

        The filter reads the fields a serializer declares for the request, not what
        its ``to_representation()`` does with one object: a serializer that hides
        fields per object, or masks values, needs this method overridden. Override
        it to show custom data, e.g.::

            def diff_data(self, diff):
                if diff.model == "polls.question" and isinstance(diff.data, dict):
                    return {"text": diff.data.get("text")}
                return super().diff_data(diff)

        The value returned must be JSON the renderer accepts; whatever it returns is
        shown as it is, so return only what this user may read.
        """
        record = _DefaultRecord.of(diff.data)
        if record is None or not isinstance(diff.model, str):
            return None
        data_model = _installed_model(record.label)
        if data_model is None or model_label(data_model) != diff.model:
            return None  # not data about the object this diff describes
        if not _same_pk(data_model, record.pk, diff.pk):
            return None
        columns = self._diffs_columns_of(diff.model)
        if columns is None:
            return None
        fields = {name: value for name, value in record.fields.items() if name in columns}
        return [{"model": record.label, "pk": record.pk, "fields": fields}]

    def diffs_response(self, page: FeedPage, diffs: list[Diff]) -> Response:
        """The response for ``page``, showing ``diffs`` (those the user may see).

        An entry that is not strict JSON is skipped with a warning; the page's cursor
        still moves past it.
        """
        return Response(
            {
                "results": self.diffs_entries(diffs),
                "cursor": page.cursor,
                "has_more": page.has_more,
            }
        )

    def diffs_entries(self, diffs: list[Diff]) -> list[dict[str, Any]]:
        """The entries of ``results`` (and of the event stream) for ``diffs``, those the
        user may see: one :meth:`diff_representation` each, leaving out (with a warning)
        any that is not strict JSON."""
        memo = page_memo.get()
        if memo is None or not self._diffs_default_entries():
            return _renderable(diffs, [self.diff_representation(d) for d in diffs])
        return _renderable(diffs, [self._diffs_shared_entry(memo, d) for d in diffs], memo)

    def _diffs_default_entries(self) -> bool:
        """Whether entries are made, and handed to the stream, by this mixin's own
        methods only: an override could make an entry from more than the memo's key
        says, or change a shared entry for its user."""
        made_by = type(self)
        mixin = DiffsViewSetMixin
        return (
            made_by.diff_representation is mixin.diff_representation
            and made_by.diff_data is mixin.diff_data
            and made_by.diff_context is mixin.diff_context
            and made_by.diffs_entries is mixin.diffs_entries
            and made_by._diffs_shown_entries is mixin._diffs_shown_entries
        )

    def _diffs_shared_entry(self, memo: PageMemo, diff: Diff) -> dict[str, Any]:
        """:meth:`diff_representation`, or the same entry made for another stream of
        the page from the same inputs: the diff, the columns its model's serializer
        shows to this stream's user, and the context keys. An entry whose columns are
        not known yet (the stream's first diff of that model) is made afresh."""
        if memo.diffs.get(id(diff)) is not diff:
            return self.diff_representation(diff)  # not the page's own diff: a copy
        key = self._diffs_entry_key(diff)
        if key is not None and key in memo.entries:
            return memo.entries[key]
        entry = self.diff_representation(diff)
        if key is None:
            key = self._diffs_entry_key(diff)  # the columns, learnt making it
        if key is not None:
            memo.entries[key] = entry
            memo.held.add(id(entry))
        return entry

    def _diffs_entry_key(self, diff: Diff) -> Hashable | None:
        """What the default entry of ``diff`` is made from, for this stream; None
        while the columns its model's serializer shows are not known yet."""
        known = self._diffs_columns or {}
        if not isinstance(diff.model, str) or diff.model not in known:
            return None
        return (id(diff), known[diff.model], tuple(self.diffs_context_keys))

    def diff_representation(self, diff: Diff) -> dict[str, Any]:
        """One entry of ``results``; its ``data`` is :meth:`diff_data`'s, its ``old``
        (when the diff has old values) those of the fields that ``data`` shows, and its
        ``context`` (when the diff has one) the values of ``diffs.context()``."""
        data = self.diff_data(diff)
        entry = {
            "model": diff.model,
            "pk": diff.pk,
            "data": data,
            "created": diff.created,
            "deleted": diff.deleted,
            "timestamp": diff.timestamp,
            "cursor": diff.cursor,
        }
        old = _old_shown(diff.old, data) if diff.old else None
        if old:
            entry["old"] = old
        context = self.diff_context(diff)
        if context:
            entry["context"] = context
        return entry

    def diff_context(self, diff: Diff) -> dict[str, Any]:
        """The ``context`` an entry shows: the keys of :attr:`diffs_context_keys`.
        Override it to show more, or to show it to some users only."""
        return {key: diff.context[key] for key in self.diffs_context_keys if key in diff.context}

    def _diffs_columns_of(self, label: str) -> frozenset[str] | None:
        """The columns of ``label``'s data that its serializer shows (once per request);
        None when no serializer is known for it."""
        if self._diffs_columns is None:
            self._diffs_columns = {}
        if label not in self._diffs_columns:
            self._diffs_columns[label] = self._diffs_find_columns(label)
        return self._diffs_columns[label]

    def _diffs_find_columns(self, label: str) -> frozenset[str] | None:
        model = self.get_queryset().model
        if label == model_label(model):
            return serializer_columns(self._diffs_own_serializer(), model)
        serializer_class = self.diffs_child_serializers.get(label)
        if serializer_class is None:
            return None
        child = _installed_model(label)
        if child is None:  # refused by _check_child_labels()
            return None
        serializer = serializer_class(context=self.get_serializer_context())
        return serializer_columns(serializer, child)

    def _diffs_own_serializer(self) -> Any:
        try:
            return self.get_serializer()
        except AssertionError as error:  # GenericAPIView's "no serializer_class"
            msg = (
                f"{type(self).__qualname__} serves diffs showing what its serializer "
                f"shows, but it has none ({error}). Set serializer_class, or override "
                "diff_data() to decide what a diff shows."
            )
            raise ImproperlyConfigured(msg) from error

    @contextlib.contextmanager
    def _diffs_aliased_action(self) -> Iterator[None]:
        real = getattr(self, "action", None)
        aliases = self.diffs_action_aliases
        if real == "diffs_stream" and real not in aliases:
            # The stream is the feed: whatever rules the feed runs under, it does too
            # (aliases written before the stream existed, or {}: "diffs_feed").
            alias: str | None = aliases.get("diffs_feed", "diffs_feed")
        else:
            alias = aliases.get(real) if real is not None else None
        if alias is None:
            yield
            return
        self.action = alias
        try:
            yield
        finally:
            self.action = real

    def _diffs_manager(self, model: type[models.Model]) -> DiffModelManager[Any]:
        if not is_registered(model):
            msg = (
                f"{type(self).__qualname__} serves diffs, but {model_label(model)} is not "
                "registered with django-diffs: decorate the model with @diffs.register."
            )
            raise ImproperlyConfigured(msg)
        _check_child_labels(type(self), model)
        return DiffModelManager(model)


def serializer_columns(serializer: Any, model: type[models.Model]) -> frozenset[str]:
    """The columns of ``model`` that ``serializer`` shows, named as the default
    serializer's diff data names them (``fields`` keys: field names, ``owner`` for a
    foreign key).

    A column counts when a readable (not ``write_only``) field of the serializer shows
    its value one to one: the field's ``source`` is the column's name or attname. A
    foreign key (whose data value is the related row's key) counts when the field shows
    that key: ``source`` is the attname (``owner_id``), or the field is a
    ``PrimaryKeyRelatedField``, a ``SlugRelatedField`` or ``HyperlinkedRelatedField`` on
    that key, or a nested serializer with a readable field for it. Anything else
    (``source="*"``, dotted sources, method fields, other relation fields) shows nothing.
    A ``ListSerializer`` stands for its child; an object without ``fields`` shows none.
    """
    if isinstance(serializer, ListSerializer):
        serializer = serializer.child
    fields = getattr(serializer, "fields", None)
    if not isinstance(fields, Mapping):
        return frozenset()
    columns = _columns_by_source(model)
    shown = set()
    for field in fields.values():
        source = _readable_source(field)
        if source is None or source not in columns:
            continue
        column = columns[source]
        if _shows_column(field, column, source):
            shown.add(column.name)
    return frozenset(shown)


def _columns_by_source(model: type[models.Model]) -> dict[str, models.Field[Any, Any]]:
    """``model``'s columns by every ``source`` that reads them as they are stored.

    Primary keys are left out, as the default data leaves them out of ``fields``.
    """
    columns: dict[str, models.Field[Any, Any]] = {}
    for column in model._meta.concrete_fields:
        if column.primary_key:
            continue
        columns[column.name] = column
        columns[column.attname] = column
    return columns


def _shows_column(field: Any, column: models.Field[Any, Any], source: str) -> bool:
    """Whether ``field`` (reading ``source``) shows ``column``'s stored value as it is."""
    if not column.is_relation or source == column.attname:
        return True  # the stored value itself (a foreign key's: the related key)
    target = getattr(column, "target_field", None)
    if target is None:
        return False
    # The data holds the related row's key (``target``), not the related object.
    names = {target.name, target.attname} | ({"pk"} if target.primary_key else set())
    if isinstance(field, PrimaryKeyRelatedField):
        return bool(target.primary_key)
    if isinstance(field, SlugRelatedField):
        return field.slug_field in names
    if isinstance(field, HyperlinkedRelatedField):
        return field.lookup_field in names
    if isinstance(field, BaseSerializer) and not isinstance(field, ListSerializer):
        nested = getattr(field, "fields", None)
        return isinstance(nested, Mapping) and any(
            _readable_source(inner) in names for inner in nested.values()
        )
    return False


def _readable_source(field: Any) -> str | None:
    """The ``source`` of a serializer field that is read (None if it is write-only)."""
    source = getattr(field, "source", None)
    if not isinstance(source, str) or getattr(field, "write_only", True):
        return None
    return source


def _check_child_serializers(cls: type[DiffsViewSetMixin]) -> None:
    """Refuse a ``diffs_child_serializers`` that cannot be what it should."""
    children: object = cls.diffs_child_serializers  # whatever the subclass set
    if not isinstance(children, Mapping):
        msg = (
            f"{cls.__qualname__}.diffs_child_serializers must map child model labels to "
            f"serializer classes, not be a {type(children).__name__}."
        )
        raise ImproperlyConfigured(msg)
    entries: list[tuple[object, object]] = list(children.items())
    for label, serializer_class in entries:
        if not isinstance(label, str) or not _LABEL_RE.fullmatch(label):
            msg = (
                f"{cls.__qualname__}.diffs_child_serializers: key {label!r} is not a model "
                "label: use 'app_label.model_name' in lower case, e.g. 'polls.choice'."
            )
            raise ImproperlyConfigured(msg)
        if not (
            isinstance(serializer_class, type) and issubclass(serializer_class, BaseSerializer)
        ):
            msg = (
                f"{cls.__qualname__}.diffs_child_serializers[{label!r}] must be a serializer "
                f"class, not {serializer_class!r}."
            )
            raise ImproperlyConfigured(msg)


def _check_child_labels(cls: type[DiffsViewSetMixin], model: type[models.Model]) -> None:
    """Refuse a label of ``diffs_child_serializers`` that names no child model's diffs
    (once per class: the models are installed only after the class is made)."""
    if cls.__dict__.get("_diffs_children_checked"):
        return
    own = model_label(model)
    for label in cls.diffs_child_serializers:
        child = _installed_model(label)
        problem = None
        if child is None:
            problem = "names no installed model"
        elif model_label(child) != label:
            problem = f"is a proxy: name its concrete model, {model_label(child)!r}"
        elif label == own:
            problem = "is the viewset's own model, whose serializer is the viewset's"
        if problem is not None:
            msg = (
                f"{cls.__qualname__}.diffs_child_serializers: {label!r} {problem}. Its keys "
                "are the labels ('app_label.model_name') of models whose get_diff_parent() "
                f"sends their diffs to {own}."
            )
            raise ImproperlyConfigured(msg)
    cls._diffs_children_checked = True


# app_label.model_name as Django spells them in lower case.
_LABEL_RE = re.compile(r"[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*")


@dataclass(frozen=True)
class _DefaultRecord:
    """The one record of data in the default serializer's format."""

    label: str
    pk: Any
    fields: dict[str, Any]

    @classmethod
    def of(cls, data: Any) -> _DefaultRecord | None:
        """The record of ``data`` if it has exactly the default format, else None."""
        if type(data) is not list or len(data) != 1:
            return None
        record = data[0]
        if type(record) is not dict or record.keys() != _DEFAULT_RECORD_KEYS:
            return None
        label, fields = record["model"], record["fields"]
        if type(label) is not str or type(fields) is not dict:
            return None
        return cls(label, record["pk"], fields)


def _installed_model(label: str) -> type[models.Model] | None:
    """The installed model called ``label`` (``app_label.model_name``), or None."""
    try:
        return apps.get_model(label)
    except (LookupError, ValueError):
        return None


def _same_pk(model: type[models.Model], data_pk: Any, diff_pk: Any) -> bool:
    """Whether the data's pk and the diff's are one value of ``model``'s primary key."""
    return bool(pk_value(model, data_pk) == pk_value(model, diff_pk))


_P = TypeVar("_P", bound=FeedPage)
_S = TypeVar("_S")


def wait_for_shown(
    read: Callable[[Since, float | None], _P],
    show: Callable[[_P], _S],
    since: Since,
    wait: float,
    *,
    in_transaction: bool,
) -> tuple[_P, _S]:
    """Read a page after ``since`` (``read(cursor, wait)``) and what ``show`` lets the
    user see of it, waiting up to ``wait`` seconds for something shown: diffs the user
    may not see do not end the wait. In a transaction (``ATOMIC_REQUESTS``) it answers at
    once: the visibility check would read the transaction's snapshot, blind to rows
    made while it waited."""
    deadline = time.monotonic() + (0.0 if in_transaction else wait)
    cursor = since
    while True:
        left = max(0.0, deadline - time.monotonic())
        page = read(cursor, left or None)
        shown = show(page)
        if shown or page.has_more or not page.diffs or left <= 0:
            return page, shown
        cursor = page.cursor  # only diffs this user may not see: wait on


def parse_limit(params: Mapping[str, str], default: int, maximum: int) -> int:
    """``?limit=`` (``default`` without it), or a 400 outside 1..``maximum``."""
    raw = params.get("limit") or ""
    if not raw:
        return default
    if _LIMIT_RE.fullmatch(raw) and 1 <= int(raw) <= maximum:
        return int(raw)
    msg = f"limit must be a whole number from 1 to {maximum}, not {_echo(raw)}."
    raise InvalidDiffsParameter(msg, "invalid_limit")


def _read(read: Callable[[], FeedPage], since: Since, model: type[models.Model]) -> FeedPage:
    """Run a manager read, turning its errors into the endpoint's answers."""
    try:
        return read()
    except CursorExpired as error:
        msg = (
            f"The cursor {_echo(since)} is older than the time diffs are kept: diffs after "
            "it may be gone. Keep 'cursor', fetch the objects again, then read diffs since it."
        )
        raise DiffsCursorGone(msg, error.restart_cursor) from error
    except InvalidCursor as error:
        raise InvalidDiffsParameter(
            _invalid_cursor_detail(error, since), "invalid_cursor"
        ) from error
    except REDIS_ERRORS as error:
        raise _unavailable(error, model) from error


def _invalid_cursor_detail(error: InvalidCursor, since: Since) -> str:
    """The 400's detail: the error's reason, quoting at most an excerpt of ``since``."""
    reason = str(error)
    if isinstance(since, str):
        reason = reason.replace(repr(since), _echo(since))
    if len(reason) > _MAX_DETAIL_CHARS:  # a message that quotes it otherwise
        reason = f"{_echo(str(since))} is not a cursor: pass back the cursor of a diff or page."
    return f"Invalid 'since': {reason}"


def _unavailable(error: Exception, model: type[models.Model]) -> DiffsRedisUnavailable:
    """The 503 for a Redis error that ended a read of ``model``'s diffs."""
    retry_after = _retry_after(error)
    if isinstance(error, RedisUnavailable):
        # The read path has logged the failure itself; one line per request is enough.
        logger.debug("Diffs of %s: Redis unavailable, answered 503.", model_label(model))
    else:
        logger.warning(
            "Diffs of %s: answered 503, reading Redis failed: %s: %.*s",
            model_label(model),
            type(error).__name__,
            _LOG_CHARS,
            error,
        )
    return DiffsRedisUnavailable(retry_after)


def _retry_after(error: Exception) -> int:
    """Whole seconds from the error's ``retry_after`` (1 without one), within bounds."""
    seconds = getattr(error, "retry_after", None)
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds != seconds:
        return _MIN_RETRY_AFTER  # none, or NaN
    # Bounded before rounding up: math.ceil() of an infinity raises.
    return math.ceil(min(max(seconds, _MIN_RETRY_AFTER), _MAX_RETRY_AFTER))


def _echo(value: object) -> str:
    """``repr`` of a parameter cut to a short excerpt: error bodies quote no more."""
    text = value if isinstance(value, str) else str(value)
    if len(text) > _ECHO_CHARS:
        text = text[:_ECHO_CHARS] + "…"
    return repr(text)


def _decodable(diffs: list[Diff], model: type[models.Model], pk: Any = None) -> list[Diff]:
    """``diffs`` without those whose stored member cannot be decoded (each logged).

    ``model`` is the viewset's; ``pk`` the object's, for one object's diffs.
    """
    kept = []
    for diff in diffs:
        reason = _decoding_error(diff)
        if reason is None:
            kept.append(diff)
            continue
        where = model_label(model) if pk is None else f"{model_label(model)} pk={pk!r:.80}"
        logger.warning(
            "Skipped a diff among those of %s: it cannot be decoded (%.*s).",
            where,
            _LOG_CHARS,
            reason,
        )
    return kept


def _decoding_error(diff: Diff) -> str | None:
    """Why ``diff`` (maybe read lazily) cannot be decoded, or None if it can."""
    try:
        diff.__getattribute__("data")  # the first read decodes every field at once
    except RecursionError:
        return "its JSON is nested too deeply to decode"
    except ValueError as error:  # which names the diff's model and pk
        return str(error) or type(error).__name__
    return None


def _renderable(
    diffs: list[Diff], entries: list[dict[str, Any]], memo: PageMemo | None = None
) -> list[dict[str, Any]]:
    """``entries`` (one per diff) without those that are not strict JSON (each logged).
    With ``memo``, entries another stream's check found strict are not checked again."""
    if memo is not None and all(id(entry) in memo.strict for entry in entries):
        return entries
    if _strict_json_error(entries, _MAX_JSON_DEPTH + 1) is None:
        if memo is not None:
            memo.strict.update(id(e) for e in entries if id(e) in memo.held)
        return entries  # the usual case: one check for the whole page
    kept = []
    for diff, entry in zip(diffs, entries, strict=True):
        reason = _strict_json_error(entry, _MAX_JSON_DEPTH)
        if reason is None:
            kept.append(entry)
        else:
            logger.warning(
                "Skipped the diff of %s pk=%.*r at cursor %s: it is not strict JSON (%s).",
                diff.model,
                _LOG_CHARS,
                diff.pk,
                diff.cursor,
                reason,
            )
    return kept


def _strict_json_error(value: Any, max_depth: int) -> str | None:
    """Why ``value`` cannot be rendered as strict JSON (RFC 8259), or None if it can.

    DRF's JSON renderer refuses NaN and infinities (``STRICT_JSON``); checked with the
    encoder it uses.
    """
    if _deeper_than(value, max_depth):
        return f"nested more than {max_depth} levels deep"
    try:
        json.dumps(value, cls=JSONEncoder, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as error:
        return f"{type(error).__name__}: {error}"[:_LOG_CHARS]
    return None


def _deeper_than(value: Any, max_depth: int) -> bool:
    """Whether lists and dicts nest in ``value`` more than ``max_depth`` levels deep.

    Level by level, without recursion (the value may be nested deeper than Python can
    recurse); a level costs one pass over its containers' items.
    """
    level = [value] if isinstance(value, _JSON_CONTAINERS) else []
    for _ in range(max_depth):
        nested: list[Any] = []
        append = nested.append
        for container in level:
            for item in container.values() if isinstance(container, dict) else container:
                if isinstance(item, _JSON_CONTAINERS):
                    append(item)
        if not nested:
            return False
        level = nested
    return bool(level)


#: What JSON encoders write as arrays and objects.
_JSON_CONTAINERS = (dict, list, tuple)


def _present(queryset: models.QuerySet[Any], pks: set[Any]) -> set[Any]:
    """Which of ``pks`` are rows of ``queryset`` (one query; while event streams render
    one page together, one query for all the streams whose querysets are the same SQL)."""
    query = queryset.query
    if query.is_sliced or query.combinator:
        # Such querysets cannot be filtered further; they are small or explicit.
        return {pk for pk in queryset.values_list("pk", flat=True) if pk in pks}
    memo = page_memo.get()
    shared = memo.queries if memo is not None else None
    key = _query_key(queryset, pks) if shared is not None else None
    if shared is not None and key is not None and key in shared:
        # Building the filtered queryset costs more than the lookup: only on a miss.
        return set(shared[key])
    rows = frozenset(queryset.filter(pk__in=pks).order_by().values_list("pk", flat=True))
    if shared is not None and key is not None:
        shared[key] = rows
    return set(rows)


# Per queryset (the one a stream's view keeps): its database, SQL and parameters,
# compiled once rather than once per page.
_compiled: weakref.WeakKeyDictionary[models.QuerySet[Any], tuple[Any, ...] | None] = (
    weakref.WeakKeyDictionary()
)


def _query_key(queryset: models.QuerySet[Any], pks: set[Any]) -> Hashable | None:
    """What makes ``_present(queryset, pks)`` the answer it is: the queryset's database,
    SQL and parameters, and ``pks``; None when a parameter cannot be a key (a list)."""
    if queryset not in _compiled:
        sql, params = queryset.query.sql_with_params()
        # Types too: 1 and True are equal in Python, not always in SQL.
        made: tuple[Any, ...] | None = (
            queryset.db,
            sql,
            tuple((type(value), value) for value in params),
        )
        try:
            hash(made)
        except TypeError:
            made = None
        _compiled[queryset] = made
    known = _compiled[queryset]
    if known is None:
        return None
    try:
        return (known, frozenset((type(pk), pk) for pk in pks))
    except TypeError:
        return None


def _holder_pk(model: type[models.Model], diff: Diff) -> Any:
    """The pk of the object whose set holds ``diff`` (for a child's diff, its parent's),
    as ``model``'s primary key value; None if it cannot be one (it matches no row)."""
    pk = diff.pk if diff.holder_pk is None else diff.holder_pk
    field = model._meta.pk
    if field is None:
        return pk
    try:
        value = field.to_python(pk)
        field.run_validators(value)  # e.g. an integer out of the database's range
    except (DjangoValidationError, TypeError, ValueError):
        return None
    return value


def _old_shown(old: dict[str, Any], data: Any) -> dict[str, Any] | None:
    """The old values of the fields ``data`` shows (the default format's ``fields``);
    None when ``data`` shows no such fields: what the API hides, it hides old too."""
    record = _DefaultRecord.of(data)
    if record is None:
        return None
    return {name: old[name] for name in record.fields if name in old}
