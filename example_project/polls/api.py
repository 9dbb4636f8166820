"""The polls REST API: questions, plus their diffs at ``diffs/`` (django-diffs' DRF mixin).

* ``GET /api/questions/diffs/?since=<cursor>&limit=<n>``: every question's diffs (and
  its choices'), oldest first;
* ``GET /api/questions/<pk>/diffs/?since=<cursor>&limit=<n>``: one question's diffs.
"""

from __future__ import annotations

from rest_framework import permissions, serializers, viewsets

from diffs.contrib.drf import DiffsViewSetMixin
from polls.models import Question


class QuestionSerializer(serializers.ModelSerializer):
    class Meta:
        model = Question
        fields = ["id", "question_text", "pub_date"]


class QuestionViewSet(DiffsViewSetMixin, viewsets.ModelViewSet):
    queryset = Question.objects.order_by("pk")
    serializer_class = QuestionSerializer
    # A demo: anyone may read and write. A real API sets its own permissions, which
    # the diffs endpoints follow.
    permission_classes = [permissions.AllowAny]
