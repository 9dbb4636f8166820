"""Django REST Framework endpoints that serve a registered model's diffs.

Install the extra (``pip install 'django-diffs[drf]'``), add ``"rest_framework"`` to
``INSTALLED_APPS`` and put the mixin first in a viewset whose queryset's model is
registered with django-diffs::

    from rest_framework import viewsets

    from diffs.contrib.drf import DiffsViewSetMixin


    class QuestionViewSet(DiffsViewSetMixin, viewsets.ModelViewSet):
        queryset = Question.objects.all()
        serializer_class = QuestionSerializer

Registered with a router (say at ``questions``), the viewset gains two GET endpoints:

* ``questions/diffs/?since=<cursor>&limit=<n>`` (action ``diffs_feed``): the model's
  feed, ``Question.diffs.since()``: the diffs of every object, oldest first, with the
  diffs that children sent to a question with ``get_diff_parent()``;
* ``questions/<pk>/diffs/?since=<cursor>&limit=<n>`` (action ``object_diffs``): one
  object's diffs, ``Question.diffs.object_since()``.

Both answer::

    {"results": [{"model": "polls.question", "pk": 1, "data": [...], "created": true,
                  "deleted": false, "timestamp": 1795342808609.766,
                  "cursor": "1795342808609.766"}],
     "cursor": "1795342808609.766", "has_more": false}

A client keeps the page's ``cursor`` and passes it back as ``since``; while
``has_more`` is true another page is waiting. ``since`` may also be Unix milliseconds;
without it (or empty) reading starts at the oldest diff kept. ``limit`` defaults to
``diffs_page_size`` (100) and may not exceed ``diffs_max_limit`` (1000).

Bad parameters never cause a 500; the body is ``{"detail": "...", "code": "..."}``:

* 400 ``invalid_limit``: ``limit`` is not a whole number from 1 to ``diffs_max_limit``;
* 400 ``invalid_cursor``: ``since`` is not a cursor;
* 410 ``cursor_expired``: ``since`` is older than ``max_element_age``, so diffs after it
  may be gone. The body also has a ``cursor`` for the present moment: the client keeps
  it, fetches the objects again, then reads diffs since it.

Who sees what:

* Authentication, permissions and throttling are the viewset's own. While a diffs action
  runs, ``self.action`` reads ``"list"`` (the feed) or ``"retrieve"`` (one object's diffs),
  so a ``get_permissions()`` or ``get_queryset()`` that branches on the action treats
  them as it treats those two (see ``diffs_action_aliases``).
* The detail endpoint calls ``get_object()`` first: a row the user may not see is a 404,
  and object permissions apply.
* The feed shows a diff only when the object whose sorted set holds it (the object it
  describes, or the parent a child sent it to) is in ``filter_queryset(get_queryset())``:
  one query per page checks this. A deleted row is in no queryset, so a deletion whose
  object is gone is shown only when :meth:`DiffsViewSetMixin.deleted_diff_visible` says
  so (by default: when the deleted row, as the diff holds it, passes the queryset's
  filter; see ``diffs.contrib.rowmatch``).
* Hidden diffs are left out of ``results``, but the page's ``cursor`` still moves past
  them: nothing leaks and a client never loops.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast

from django.core.exceptions import ImproperlyConfigured
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import models
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from diffs.contrib.rowmatch import deleted_row, row_matches
from diffs.cursors import Since
from diffs.diff import Diff
from diffs.exceptions import CursorExpired, InvalidCursor
from diffs.feed import MAX_LIMIT, FeedPage
from diffs.keys import model_label
from diffs.managers import DiffModelManager
from diffs.registry import is_registered

__all__ = ["DiffsCursorGone", "DiffsViewSetMixin", "InvalidDiffsParameter"]

_F = TypeVar("_F", bound=Callable[..., Any])

# At most 7 digits: int() of a huge string is slow (and refused past 4300 digits).
_LIMIT_RE = re.compile(r"[0-9]{1,7}")


def _diffs_action(*, detail: bool) -> Callable[[_F], _F]:
    """``@action(methods=["get"], url_path="diffs")``, typed (DRF has no annotations)."""
    return cast("Callable[[_F], _F]", action(methods=["get"], detail=detail, url_path="diffs"))


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


class DiffsViewSetMixin:
    """Adds ``GET <list>/diffs/`` and ``GET <detail>/diffs/`` to a DRF viewset.

    Put it before the viewset class: ``class V(DiffsViewSetMixin, ModelViewSet)``.
    The model is ``self.get_queryset().model``; it must be registered with django-diffs.
    """

    #: ``limit`` when the request gives none.
    diffs_page_size: ClassVar[int] = 100
    #: The largest ``limit`` a request may ask for (at most ``diffs.feed.MAX_LIMIT``).
    diffs_max_limit: ClassVar[int] = MAX_LIMIT
    #: What ``self.action`` reads while a diffs action runs (permission checks
    #: included). Set it to ``{}`` to see the actions' own names instead.
    diffs_action_aliases: ClassVar[Mapping[str, str]] = {
        "diffs_feed": "list",
        "object_diffs": "retrieve",
    }

    # Provided by DRF's GenericViewSet.
    action: str | None
    request: Request
    if TYPE_CHECKING:

        def get_queryset(self) -> models.QuerySet[Any]: ...

        def filter_queryset(self, queryset: models.QuerySet[Any]) -> models.QuerySet[Any]: ...

        def get_object(self) -> models.Model: ...

    _diffs_queryset: models.QuerySet[Any] | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not 1 <= cls.diffs_page_size <= cls.diffs_max_limit <= MAX_LIMIT:
            msg = (
                f"{cls.__qualname__}: need 1 <= diffs_page_size ({cls.diffs_page_size}) "
                f"<= diffs_max_limit ({cls.diffs_max_limit}) <= {MAX_LIMIT}."
            )
            raise ImproperlyConfigured(msg)

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        # Authentication, permission and throttle checks see the aliased action.
        with self._diffs_aliased_action():
            cast("Any", super()).initial(request, *args, **kwargs)

    @_diffs_action(detail=False)
    def diffs_feed(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """The diffs of every object the user may see, oldest first, after ``since``."""
        with self._diffs_aliased_action():
            since, limit = self.get_diffs_params(request)
            queryset = self.get_diffs_queryset()
            manager = self._diffs_manager(queryset.model)
            page = _read(lambda: manager.since(since, limit), since)
            return self.diffs_response(page, self.visible_diffs(page.diffs))

    @_diffs_action(detail=True)
    def object_diffs(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """One object's diffs, oldest first, after ``since`` (404 if it may not be seen)."""
        with self._diffs_aliased_action():
            since, limit = self.get_diffs_params(request)
            instance = self.get_object()
            manager = self._diffs_manager(self.get_queryset().model)
            page = _read(lambda: manager.object_since(instance.pk, since, limit), since)
            return self.diffs_response(page, page.diffs)

    def get_diffs_params(self, request: Request) -> tuple[str | None, int]:
        """Return ``(since, limit)`` from the query string, or raise a 400."""
        params = request.query_params
        since = params.get("since") or None
        raw = params.get("limit") or ""
        if not raw:
            return since, self.diffs_page_size
        if _LIMIT_RE.fullmatch(raw) and 1 <= int(raw) <= self.diffs_max_limit:
            return since, int(raw)
        msg = f"limit must be a whole number from 1 to {self.diffs_max_limit}, not {raw!r}."
        raise InvalidDiffsParameter(msg, "invalid_limit")

    def get_diffs_queryset(self) -> models.QuerySet[Any]:
        """The rows whose diffs the feed shows: ``filter_queryset(get_queryset())``.

        Built once per request.
        """
        if self._diffs_queryset is None:
            self._diffs_queryset = self.filter_queryset(self.get_queryset())
        return self._diffs_queryset

    def visible_diffs(self, diffs: list[Diff]) -> list[Diff]:
        """Keep the diffs of a feed page the user may see (one query)."""
        queryset = self.get_diffs_queryset()
        holders = [_holder_pk(queryset.model, diff) for diff in diffs]
        wanted = {pk for pk in holders if pk is not None}
        present = _present(queryset, wanted) if wanted else set()
        return [
            diff
            for diff, pk in zip(diffs, holders, strict=True)
            if pk in present or (diff.deleted and self.deleted_diff_visible(diff))
        ]

    def deleted_diff_visible(self, diff: Diff) -> bool:
        """Whether the feed shows ``diff``, a deletion whose holder is not in the queryset.

        The row is gone, so the database cannot tell whether this user could see it.
        By default: always when the queryset (:meth:`get_diffs_queryset`) has no
        filter; otherwise the queryset's filter is evaluated
        against the deleted row as the diff's default data holds it: simple lookups on
        the model's own columns (``exact``, ``in``, ``gte``, ``isnull``, ...) combined
        with AND/OR/NOT, so ``filter(owner=request.user)`` works. Anything it cannot
        evaluate (joins, expressions, a custom ``serialize_diff``, the deletion of a
        child whose parent went too) hides the diff. Override it to decide yourself::

            def deleted_diff_visible(self, diff):
                if diff.model != "polls.question":
                    return False
                return diff.data[0]["fields"]["owner"] == self.request.user.pk
        """
        queryset = self.get_diffs_queryset()
        query = queryset.query
        if not (query.where or query.is_sliced or query.combinator):
            return True  # every user of the endpoint sees every row
        row = deleted_row(diff.data, queryset.model)
        return row is not None and row_matches(queryset, row)

    def diffs_response(self, page: FeedPage, diffs: list[Diff]) -> Response:
        """The response for ``page``, showing ``diffs`` (those the user may see)."""
        return Response(
            {
                "results": [self.diff_representation(diff) for diff in diffs],
                "cursor": page.cursor,
                "has_more": page.has_more,
            }
        )

    def diff_representation(self, diff: Diff) -> dict[str, Any]:
        """One entry of ``results``."""
        return {
            "model": diff.model,
            "pk": diff.pk,
            "data": diff.data,
            "created": diff.created,
            "deleted": diff.deleted,
            "timestamp": diff.timestamp,
            "cursor": diff.cursor,
        }

    @contextlib.contextmanager
    def _diffs_aliased_action(self) -> Iterator[None]:
        real = getattr(self, "action", None)
        alias = self.diffs_action_aliases.get(real) if real is not None else None
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
        return DiffModelManager(model)


def _read(read: Callable[[], FeedPage], since: Since) -> FeedPage:
    try:
        return read()
    except CursorExpired as error:
        msg = (
            f"The cursor {since!r} is older than the time diffs are kept: diffs after it "
            "may be gone. Keep 'cursor', fetch the objects again, then read diffs since it."
        )
        raise DiffsCursorGone(msg, error.restart_cursor) from error
    except InvalidCursor as error:
        msg = f"Invalid 'since': {error}"
        raise InvalidDiffsParameter(msg, "invalid_cursor") from error


def _present(queryset: models.QuerySet[Any], pks: set[Any]) -> set[Any]:
    """Which of ``pks`` are rows of ``queryset`` (one query)."""
    query = queryset.query
    if query.is_sliced or query.combinator:
        # Such querysets cannot be filtered further; they are small or explicit.
        return {pk for pk in queryset.values_list("pk", flat=True) if pk in pks}
    return set(queryset.filter(pk__in=pks).order_by().values_list("pk", flat=True))


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
