"""``DiffsAdminMixin``: "Recent changes" pages in the Django admin.

Put it first in a registered model's ``ModelAdmin`` bases::

    @admin.register(Question)
    class QuestionAdmin(DiffsAdminMixin, admin.ModelAdmin):
        ...

It adds a page per object (URL name ``admin:<app>_<model>_diffs``, args: the object's
pk) and one for the whole model (``admin:<app>_<model>_diffs_feed``), linked from the
change form and the change list. Rows are newest first, paged by cursor: the time (in
the admin's time zone), who (the ``user`` of the diff's context, shown as the user's
``str``, all of a page's users read in one query), created/updated/deleted, and per
field the new value, after the old one when the model records old values. Only users
with the model's view permission see the pages; a field the ModelAdmin does not show
is not shown there either.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.contrib.admin.utils import flatten_fieldsets, quote, unquote
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import models
from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse

from diffs.diff import Diff
from diffs.exceptions import InvalidCursor
from diffs.feed import FeedPage

if TYPE_CHECKING:
    _AdminBase = admin.ModelAdmin[Any]
else:
    _AdminBase = object

#: Rows per page.
PAGE_SIZE = 50

#: How much of a value a row shows (the rest is cut, with an ellipsis).
SHOWN_CHARS = 200


class DiffsAdminMixin(_AdminBase):
    """Adds the "Recent changes" pages of a registered model to its ModelAdmin."""

    change_form_template = "admin/diffs/change_form.html"
    change_list_template = "admin/diffs/change_list.html"

    def get_urls(self) -> list[URLPattern]:
        """The admin's URLs, the two diffs pages first (before ``<path:object_id>/``)."""
        info = self.model._meta.app_label, self.model._meta.model_name
        wrap = self.admin_site.admin_view
        ours = [
            path("diffs/", wrap(self.diffs_feed_view), name="{}_{}_diffs_feed".format(*info)),
            path(
                "<path:object_id>/diffs/",
                wrap(self.diffs_object_view),
                name="{}_{}_diffs".format(*info),
            ),
        ]
        urls: list[URLPattern] = super().get_urls()
        return ours + urls

    def diffs_object_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """One object's recent changes, newest first."""
        obj = self.get_object(request, unquote(object_id))
        if obj is None:
            msg = f"No {self.model._meta.verbose_name} with this key."
            raise Http404(msg)
        if not self.has_view_permission(request, obj):
            raise PermissionDenied
        manager = self.model.diffs
        page = self._page(request, lambda before: manager.object_newest(obj.pk, before, PAGE_SIZE))
        return self._render(request, page, obj, self._shown_fields(request, obj))

    def diffs_feed_view(self, request: HttpRequest) -> HttpResponse:
        """Every object's recent changes, newest first."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        manager = self.model.diffs
        page = self._page(request, lambda before: manager.newest(before, PAGE_SIZE))
        # Like the change list: only the rows get_queryset() gives this user (one query
        # for the page); a deleted row's diffs are hidden with it.
        readable = [diff for diff in page.diffs if _readable(diff)]
        holders = {diff.holder_pk for diff in readable}
        visible = set(
            self.get_queryset(request).filter(pk__in=holders).values_list("pk", flat=True)
        )
        shown = [diff for diff in readable if diff.holder_pk in visible]
        page = FeedPage(shown, page.cursor, page.has_more)
        return self._render(request, page, None, self._shown_fields(request, None))

    def _page(self, request: HttpRequest, read: Any) -> FeedPage:
        before = request.GET.get("before") or None
        try:
            page: FeedPage = read(before)
        except InvalidCursor:
            page = read(None)  # a hand-edited link: start at the newest
        return page

    def _shown_fields(self, request: HttpRequest, obj: models.Model | None) -> frozenset[str]:
        """The fields the change form shows this user (its fieldsets), and so its diffs
        pages; none for a model whose serialize_diff() decides what its data holds."""
        if callable(getattr(self.model, "serialize_diff", None)):
            return frozenset()
        return frozenset(flatten_fieldsets(self.get_fieldsets(request, obj)))

    def _render(
        self,
        request: HttpRequest,
        page: FeedPage,
        obj: models.Model | None,
        shown: frozenset[str],
    ) -> TemplateResponse:
        opts = self.model._meta
        users = _users_of(page.diffs)
        rows = [self._row(diff, shown, users) for diff in page.diffs]
        title = (
            f"Recent changes: {obj}"
            if obj is not None
            else f"Recent changes: {opts.verbose_name_plural}"
        )
        context = {
            **self.admin_site.each_context(request),
            "title": title,
            "opts": opts,
            "object": obj,
            "rows": rows,
            "next_cursor": page.cursor if page.has_more else None,
            "has_view_permission": True,
        }
        return TemplateResponse(request, "admin/diffs/recent_changes.html", context)

    def _row(self, diff: Diff, shown: frozenset[str], users: dict[Any, Any]) -> dict[str, Any]:
        try:
            return _row(diff, shown, users, self._change_url(diff))
        except (ValueError, OverflowError, OSError):
            # A member that is not valid JSON (or holds an impossible time): listed, so
            # the page still shows that something changed, without its content.
            return {"when": None, "who": "", "kind": "unreadable", "object": "", "fields": []}

    def _change_url(self, diff: Diff) -> str | None:
        if diff.model != self.model._meta.label_lower or diff.pk is None:
            return None
        info = self.model._meta.app_label, self.model._meta.model_name
        name = "admin:{}_{}_change".format(*info)
        return reverse(name, args=[quote(diff.pk)], current_app=self.admin_site.name)


def _readable(diff: Diff) -> bool:
    try:
        diff.holder_pk  # noqa: B018 - decodes the member
    except ValueError:
        return False
    return True


def _users_of(diffs: Iterable[Diff]) -> dict[Any, Any]:
    """The users the diffs' contexts name, by the value the context holds (``7`` or
    ``"7"``): one query for the page."""
    user_model = get_user_model()
    pk_field = user_model._meta.pk
    wanted: dict[Any, Any] = {}
    for diff in diffs:
        value = _context_user(diff)
        if value is None or pk_field is None:
            continue
        try:
            wanted[value] = pk_field.to_python(value)
        except (ValidationError, TypeError, ValueError):
            continue  # not a pk of this user model: shown as it is
    if not wanted:
        return {}
    found = user_model._default_manager.in_bulk(set(wanted.values()))
    return {value: found[pk] for value, pk in wanted.items() if pk in found}


def _context_user(diff: Diff) -> Any:
    try:
        context = diff.context
    except ValueError:
        return None
    value = context.get("user")
    return value if isinstance(value, (int, str)) and not isinstance(value, bool) else None


def _row(
    diff: Diff, shown: frozenset[str], users: dict[Any, Any], change_url: str | None
) -> dict[str, Any]:
    try:
        fields = _fields_of(diff, shown)
        kind = "deleted" if diff.deleted else "created" if diff.created else "updated"
    except ValueError:  # a member that is not valid JSON
        fields, kind = [], "unreadable"
    user_value = _context_user(diff)
    user = users.get(user_value, user_value)  # a value no user has is shown as it is
    return {
        "when": dt.datetime.fromtimestamp(diff.timestamp / 1000, tz=dt.timezone.utc),
        "who": "" if user is None else str(user),
        "kind": kind,
        "object": f"{diff.model} pk={diff.pk}",
        "change_url": change_url,
        "fields": fields,
    }


def _fields_of(diff: Diff, shown: frozenset[str]) -> list[dict[str, Any]]:
    """``[{"name", "old", "new", "has_old"}]`` of the fields the admin shows."""
    data = diff.data
    if not (isinstance(data, list) and len(data) == 1 and isinstance(data[0], dict)):
        return []  # data of a serialize_diff of the model's own: nothing tells what it shows
    values = data[0].get("fields")
    if not isinstance(values, dict):
        return []
    old = diff.old
    return [
        {
            "name": name,
            "new": _shown(value),
            "old": _shown(old.get(name)),
            "has_old": name in old,
        }
        for name, value in values.items()
        if name in shown
    ]


def _shown(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 1] + "…"
