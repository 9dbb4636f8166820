"""One REST endpoint for several models' diffs, with one cursor (``diffs.since(models=)``).

:class:`DiffsFeedsView` is a DRF view that names the viewsets whose feeds it joins::

    class ChangesView(DiffsFeedsView):
        viewsets = [QuestionViewSet, MemoViewSet]

    urlpatterns = [path("api/changes/", ChangesView.as_view())]

``GET /api/changes/?since=<cursor>&limit=<n>&wait=<seconds>`` answers as a viewset's
``diffs/`` does (``{"results", "cursor", "has_more"}``, 400/410/503), and each diff is
shown by the rules of the viewset of its model's feed: the request must pass every
viewset's authentication, permission and throttle checks (403 otherwise: a cursor
spanning models the user may not read would leak when they change), and a diff is
shown when that viewset's feed would show it, with the columns its serializer shows.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, ClassVar, cast

from django.core.exceptions import ImproperlyConfigured
from django.db import connections as db_connections
from django.db import models
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from diffs.contrib.drf import (
    DiffsViewSetMixin,
    InvalidDiffsParameter,
    _decodable,
    _echo,
    _read,
    parse_limit,
    wait_for_shown,
)
from diffs.cursors import Since
from diffs.diff import Diff
from diffs.feed import MAX_LIMIT
from diffs.feeds import MAX_MODELS, ModelsPage, since
from diffs.keys import model_label

#: The longest cursor of several models worth parsing, per model.
_CURSOR_CHARS_PER_MODEL = 32


class DiffsFeedsView(APIView):  # type: ignore[misc]
    """``GET``: the diffs of the feeds of :attr:`viewsets`, in one order, one cursor."""

    #: The viewsets (each a :class:`DiffsViewSetMixin`) whose feeds this view joins.
    viewsets: ClassVar[Sequence[type[Any]]] = ()
    #: ``limit`` when the request gives none, and the largest it may ask for.
    diffs_page_size: ClassVar[int] = 100
    diffs_max_limit: ClassVar[int] = MAX_LIMIT

    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """A page of the joined feeds after ``since``."""
        views = [self._viewset_for(viewset, request) for viewset in self._checked_viewsets()]
        by_label = {model_label(view.get_diffs_queryset().model): view for view in views}
        if len(by_label) < len(views):
            msg = f"{type(self).__qualname__}.viewsets: two viewsets serve one model's feed."
            raise ImproperlyConfigured(msg)
        models_ = [view.get_diffs_queryset().model for view in views]
        first = views[0]
        cursor, limit = self._params(request, len(views))
        in_transaction = any(
            db_connections[view.get_diffs_queryset().db].in_atomic_block for view in views
        )

        def read(after: Since, left: float | None) -> ModelsPage:
            page = _read(
                functools.partial(since, after, models=models_, limit=limit, wait=left),
                after,
                models_[0],
            )
            return cast(ModelsPage, page)

        page, entries = wait_for_shown(
            read,
            lambda page: self._visible_entries(page, by_label),
            cursor,
            first.get_diffs_wait(request),
            in_transaction=in_transaction,
        )
        return Response({"results": entries, "cursor": page.cursor, "has_more": page.has_more})

    def _visible_entries(
        self, page: ModelsPage, by_label: dict[str, DiffsViewSetMixin]
    ) -> list[dict[str, Any]]:
        """The entries of ``page`` each diff's viewset shows, in the page's order."""
        grouped: dict[str, list[Diff]] = {}
        for diff, feed in zip(page.diffs, page.feeds, strict=True):
            grouped.setdefault(model_label(feed), []).append(diff)
        shown: dict[int, dict[str, Any]] = {}
        for label, diffs in grouped.items():
            view = by_label[label]
            model = view.get_diffs_queryset().model
            with view._diffs_aliased_action():
                for diff in view.visible_diffs(_decodable(diffs, model)):
                    # One at a time: an entry that is not strict JSON is left out.
                    for entry in view.diffs_entries([diff]):
                        shown[id(diff)] = entry
        return [shown[id(diff)] for diff in page.diffs if id(diff) in shown]

    def _params(self, request: Request, count: int) -> tuple[Since, int]:
        params = request.query_params
        cursor = params.get("since") or None
        if cursor is not None and len(cursor) > _CURSOR_CHARS_PER_MODEL * (count + 1):
            msg = f"Invalid 'since': {_echo(cursor)} is not a cursor of these feeds."
            raise InvalidDiffsParameter(msg, "invalid_cursor")
        return cursor, parse_limit(params, self.diffs_page_size, self.diffs_max_limit)

    def _checked_viewsets(self) -> Sequence[type[Any]]:
        viewsets = self.viewsets
        if not viewsets or len(viewsets) > MAX_MODELS:
            msg = (
                f"{type(self).__qualname__}.viewsets must name 1 to {MAX_MODELS} viewsets "
                "whose diffs it joins."
            )
            raise ImproperlyConfigured(msg)
        for viewset in cast(Sequence[object], viewsets):
            if not (isinstance(viewset, type) and issubclass(viewset, DiffsViewSetMixin)):
                msg = (
                    f"{type(self).__qualname__}.viewsets: {viewset!r} is not a viewset with "
                    "DiffsViewSetMixin."
                )
                raise ImproperlyConfigured(msg)
        return viewsets

    def _viewset_for(self, viewset: type[Any], request: Request) -> Any:
        """An instance of ``viewset`` serving this request's feed, its checks run as for
        its own ``diffs/``: its own authenticators, permissions and throttles. It must
        find the same user as this view: a viewset that authenticates otherwise (a
        token where this view took the session, say) answers 403."""
        view = viewset()
        view.action_map = {"get": "diffs_feed"}
        view.args, view.kwargs = (), {}
        view.format_kwarg = None
        view.headers = {}
        own = view.initialize_request(request._request)
        view.request = own
        view.initial(own)
        if _identity(own.user) != _identity(request.user):
            msg = "This request is authenticated differently by the feeds it joins."
            raise PermissionDenied(msg)
        model: type[models.Model] = view.get_diffs_queryset().model
        view._diffs_manager(model)  # refuses a model not registered
        return view


def _identity(user: Any) -> tuple[bool, Any]:
    return bool(getattr(user, "is_authenticated", False)), getattr(user, "pk", None)
