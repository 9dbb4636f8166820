"""The live page: the questions, kept up to date by the API's event stream."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from polls.models import Question


def live(request: HttpRequest) -> HttpResponse:
    """The questions as they are now, and the cursor the page's stream starts from.

    The cursor is read before the questions: a change made between the two reaches the
    page again through the stream, and applying it twice does no harm. Read the other
    way round, a change made in between would be missed.
    """
    newest = Question.diffs.newest(limit=1).diffs
    # After the newest diff kept; with none kept, a watermark read now.
    cursor = newest[0].cursor if newest else Question.diffs.since().cursor
    questions = Question.objects.order_by("pk")
    return render(request, "polls/live.html", {"questions": questions, "cursor": cursor})
