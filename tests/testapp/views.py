"""DRF viewsets serving diffs through ``diffs.contrib.drf.DiffsViewSetMixin``."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from rest_framework import permissions, serializers, viewsets

from diffs.contrib.drf import DiffsViewSetMixin
from diffs.contrib.drf_feeds import DiffsFeedsView
from tests.testapp.models import Choice, Ledger, Memo, Question, Secretive, UUIDItem


class QuestionSerializer(serializers.ModelSerializer):
    class Meta:
        model = Question
        fields = ["id", "question_text", "pub_date", "votes"]


class ChoiceSerializer(serializers.ModelSerializer):
    """Shows every column of a choice but its votes."""

    class Meta:
        model = Choice
        fields = ["id", "question", "choice_text"]


class UUIDItemSerializer(serializers.ModelSerializer):
    class Meta:
        model = UUIDItem
        fields = ["id", "name"]


class QuestionViewSet(DiffsViewSetMixin, viewsets.ModelViewSet):
    """Every question, for anyone."""

    queryset = Question.objects.all()
    serializer_class = QuestionSerializer
    permission_classes = [permissions.AllowAny]
    diffs_child_serializers = {"testapp.choice": ChoiceSerializer}


class VotedQuestionViewSet(DiffsViewSetMixin, viewsets.ModelViewSet):
    """Signed-in users only, and only the questions with at least one vote."""

    serializer_class = QuestionSerializer
    permission_classes = [permissions.IsAuthenticated]
    diffs_child_serializers = {"testapp.choice": ChoiceSerializer}
    diffs_page_size = 2
    diffs_max_limit = 50

    def get_queryset(self) -> QuerySet[Question]:
        return Question.objects.filter(votes__gte=1)


class PerActionQuestionViewSet(DiffsViewSetMixin, viewsets.ReadOnlyModelViewSet):
    """Rules that branch on ``self.action``: ``list`` is stricter than the rest."""

    serializer_class = QuestionSerializer
    seen_actions: list[str | None] = []

    def get_permissions(self) -> list[Any]:
        self.seen_actions.append(self.action)
        if self.action == "list":
            return [permissions.IsAuthenticated()]
        return [permissions.AllowAny()]

    def get_queryset(self) -> QuerySet[Question]:
        if self.action == "list":
            return Question.objects.filter(votes__gte=1)
        return Question.objects.all()


class UnaliasedQuestionViewSet(PerActionQuestionViewSet):
    diffs_action_aliases = {}


class OlderAliasesQuestionViewSet(PerActionQuestionViewSet):
    """Aliases written before the event stream existed: the stream runs as the feed."""

    diffs_action_aliases = {"diffs_feed": "list", "object_diffs": "retrieve"}


class UUIDItemViewSet(DiffsViewSetMixin, viewsets.ReadOnlyModelViewSet):
    queryset = UUIDItem.objects.all()
    serializer_class = UUIDItemSerializer
    permission_classes = [permissions.AllowAny]


class SecretiveSerializer(serializers.ModelSerializer):
    """Leaves out ``secret`` and ``score``; ``badge`` shows the badge's slug (its key)."""

    class Meta:
        model = Secretive
        fields = ["id", "name", "owner", "badge"]


class SecretiveViewSet(DiffsViewSetMixin, viewsets.ReadOnlyModelViewSet):
    """Anyone may read; what they read is what the serializer shows."""

    queryset = Secretive.objects.all()
    serializer_class = SecretiveSerializer
    permission_classes = [permissions.AllowAny]


class LedgerSerializer(serializers.ModelSerializer):
    """Shows a ledger's name and due date, never its amount."""

    class Meta:
        model = Ledger
        fields = ["id", "name", "due"]


class LedgerViewSet(DiffsViewSetMixin, viewsets.ReadOnlyModelViewSet):
    """Ledgers keep old values; the amount is a column the API never shows."""

    queryset = Ledger.objects.all()
    serializer_class = LedgerSerializer
    permission_classes = [permissions.AllowAny]


class MemoSerializer(serializers.ModelSerializer):
    class Meta:
        model = Memo
        fields = ["id", "title"]


class MemoViewSet(DiffsViewSetMixin, viewsets.ReadOnlyModelViewSet):
    queryset = Memo.objects.all()
    serializer_class = MemoSerializer
    permission_classes = [permissions.AllowAny]


class ChangesView(DiffsFeedsView):
    """Questions and memos, for anyone."""

    viewsets = [QuestionViewSet, MemoViewSet]
    permission_classes = [permissions.AllowAny]


class SignedInChangesView(DiffsFeedsView):
    """Voted questions (signed-in users only) and memos."""

    viewsets = [VotedQuestionViewSet, MemoViewSet]
    permission_classes = [permissions.AllowAny]


class ReaderHeaderAuthentication:
    """Authenticates the user named by the X-Reader header (for one viewset only)."""

    def authenticate(self, request: Any) -> tuple[Any, None] | None:
        from django.contrib.auth.models import User

        name = request.META.get("HTTP_X_READER")
        user = User.objects.filter(username=name).first() if name else None
        return (user, None) if user is not None else None

    def authenticate_header(self, request: Any) -> str:
        return "X-Reader"


class HeaderOnlyMemoViewSet(MemoViewSet):
    """Memos for users who name themselves in X-Reader, and no one else."""

    authentication_classes = [ReaderHeaderAuthentication]
    permission_classes = [permissions.IsAuthenticated]


class MixedAuthChangesView(DiffsFeedsView):
    """Questions (the project's authentication) and header-only memos."""

    viewsets = [QuestionViewSet, HeaderOnlyMemoViewSet]
    permission_classes = [permissions.AllowAny]


class Switch(permissions.BasePermission):
    """Allows while ``Switch.allowed`` is true (a permission revoked mid-stream)."""

    allowed = True

    def has_permission(self, request: Any, view: Any) -> bool:
        return Switch.allowed


class SwitchedQuestionViewSet(QuestionViewSet):
    permission_classes = [Switch]
