"""The polls REST API: questions, plus their diffs at ``diffs/`` (django-diffs' DRF mixin).

* ``GET /api/questions/diffs/?since=<cursor>&limit=<n>``: every question's diffs (and
  its choices'), oldest first;
* ``GET /api/questions/<pk>/diffs/?since=<cursor>&limit=<n>``: one question's diffs.

A diff's ``data`` shows only the columns the serializers below show: the question's
through ``serializer_class``, a choice's (sent to its question by
``Choice.get_diff_parent()``) through ``diffs_child_serializers``.
"""

from __future__ import annotations

from rest_framework import permissions, serializers, viewsets

from diffs.contrib.drf import DiffsViewSetMixin
from polls.models import Choice, Question


class QuestionSerializer(serializers.ModelSerializer):
    class Meta:
        model = Question
        fields = ["id", "question_text", "pub_date"]


class ChoiceSerializer(serializers.ModelSerializer):
    class Meta:
        model = Choice
        fields = ["id", "question", "choice_text", "votes"]


class QuestionViewSet(DiffsViewSetMixin, viewsets.ModelViewSet):
    queryset = Question.objects.order_by("pk")
    serializer_class = QuestionSerializer
    # Choices have no endpoint of their own: their diffs reach the questions' feed, and
    # this serializer says which of their columns those diffs show.
    diffs_child_serializers = {"polls.choice": ChoiceSerializer}
    # A demo: anyone may read and write. A real API sets its own permissions, which
    # the diffs endpoints follow.
    permission_classes = [permissions.AllowAny]
