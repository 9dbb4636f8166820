"""A diff served by the REST endpoint shows only what the viewset's
serializer shows (``DiffsViewSetMixin.diff_data``, ``diffs.contrib.drf.serializer_columns``)."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from rest_framework import permissions, serializers, viewsets
from rest_framework.request import Request
from rest_framework.test import APIClient, APIRequestFactory

from diffs.contrib.drf import DiffsViewSetMixin, serializer_columns
from diffs.diff import Diff
from diffs.keys import feed_member
from tests.support.keynames import feed_key, object_key
from tests.support.writing import write_raw
from tests.testapp.models import (
    Badge,
    Choice,
    CustomSerialized,
    Question,
    Secretive,
    SecretiveProxy,
)
from tests.testapp.views import ChoiceSerializer, QuestionSerializer, SecretiveSerializer

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def client() -> APIClient:
    return APIClient()


def get(api: APIClient, url: str, **params: object) -> dict:
    response = api.get(url, params)
    assert response.status_code == 200, (response.status_code, response.content)
    return response.json()


def call(view_class: type, action: str = "diffs_feed", **kwargs: object) -> Any:
    """Run a viewset's diffs action on an anonymous GET; return the response."""
    view = view_class.as_view({"get": action})
    response = view(APIRequestFactory().get("/"), **kwargs)
    assert response.status_code == 200, response.data
    return response


def fields_of(entry: dict) -> dict:
    [record] = entry["data"]
    return record["fields"]


def test_a_column_the_serializer_leaves_out_is_in_no_response(client):
    owner = Question.objects.create(question_text="owner")
    badge = Badge.objects.create(slug="gold")
    row = Secretive.objects.create(name="n", secret="hunter2", score=1.5, owner=owner, badge=badge)
    row.secret = "correct horse"
    row.save()  # only a hidden column changed: listed, with nothing to show
    row.name = "renamed"
    row.secret = "battery staple"
    row.save()
    for url in ("/secretive/diffs/", f"/secretive/{row.pk}/diffs/"):
        response = client.get(url)
        assert response.status_code == 200
        for word in (b"hunter2", b"correct horse", b"battery staple", b'"secret"', b'"score"'):
            assert word not in response.content, (url, word)
        # The score's value, 1.5, could appear by chance in a timestamp or a cursor.
        assert all("score" not in fields_of(r) for r in response.json()["results"])
        created, hidden_only, renamed = response.json()["results"]
        assert fields_of(created) == {"name": "n", "owner": owner.pk, "badge": "gold"}
        assert created["data"][0]["model"] == "testapp.secretive"
        assert created["data"][0]["pk"] == row.pk
        assert fields_of(hidden_only) == {}
        assert fields_of(renamed) == {"name": "renamed"}
        assert [r["created"] for r in (created, hidden_only, renamed)] == [True, False, False]


def test_a_proxys_diffs_are_filtered_as_the_models(client):
    row = SecretiveProxy.objects.create(name="via proxy", secret="s3cret")
    [entry] = get(client, "/secretive/diffs/")["results"]
    assert entry["data"][0]["model"] == "testapp.secretiveproxy"
    assert fields_of(entry) == {"name": "via proxy", "owner": None, "badge": None}
    [entry] = get(client, f"/secretive/{row.pk}/diffs/")["results"]
    assert "secret" not in fields_of(entry)


class NameOnly(serializers.ModelSerializer):
    class Meta:
        model = Secretive
        fields = ["id", "name"]


class WithSecret(serializers.ModelSerializer):
    class Meta:
        model = Secretive
        fields = ["id", "name", "secret"]


class PerActionSerializers(DiffsViewSetMixin, viewsets.ReadOnlyModelViewSet):
    """The list shows names; one object shows its secret too."""

    queryset = Secretive.objects.all()
    permission_classes = [permissions.AllowAny]
    seen_actions: list[str | None] = []

    def get_serializer_class(self) -> type:
        self.seen_actions.append(self.action)
        return NameOnly if self.action == "list" else WithSecret


def test_the_serializer_is_the_one_get_serializer_class_gives_for_the_aliased_action():
    row = Secretive.objects.create(name="n", secret="s")
    PerActionSerializers.seen_actions.clear()
    [entry] = call(PerActionSerializers).data["results"]
    assert fields_of(entry) == {"name": "n"}
    [entry] = call(PerActionSerializers, "object_diffs", pk=row.pk).data["results"]
    assert fields_of(entry) == {"name": "n", "secret": "s"}
    assert PerActionSerializers.seen_actions == ["list", "retrieve"]


class RequestDependent(serializers.ModelSerializer):
    """Shows the secret to staff only, deciding from the request in its context."""

    class Meta:
        model = Secretive
        fields = ["id", "name", "secret"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        request = self.context.get("request")
        if request is None or not request.user.is_staff:
            self.fields.pop("secret")


def test_the_serializer_gets_the_views_context():
    class View(DiffsViewSetMixin, viewsets.ReadOnlyModelViewSet):
        queryset = Secretive.objects.all()
        serializer_class = RequestDependent
        permission_classes = [permissions.AllowAny]

    Secretive.objects.create(name="n", secret="s")
    [entry] = call(View).data["results"]
    assert fields_of(entry) == {"name": "n"}


def test_a_childs_diffs_show_what_the_childs_serializer_shows(client):
    question = Question.objects.create(question_text="q", votes=1)
    choice = Choice.objects.create(question=question, choice_text="yes", votes=41)
    choice.votes = 42
    choice.save()
    for url in ("/questions/diffs/", f"/questions/{question.pk}/diffs/"):
        _, created, voted = get(client, url)["results"]
        assert (created["model"], created["pk"]) == ("testapp.choice", choice.pk)
        assert fields_of(created) == {"question": question.pk, "choice_text": "yes"}
        assert fields_of(voted) == {}  # only the hidden votes changed


def test_a_child_without_a_serializer_is_listed_with_null_data():
    class NoChildren(DiffsViewSetMixin, viewsets.ReadOnlyModelViewSet):
        queryset = Question.objects.all()
        serializer_class = QuestionSerializer

    question = Question.objects.create(question_text="q")
    Choice.objects.create(question=question, choice_text="hidden text")
    for action, kwargs in (("diffs_feed", {}), ("object_diffs", {"pk": question.pk})):
        own, child = call(NoChildren, action, **kwargs).data["results"]
        assert fields_of(own) == {"question_text": "q", "pub_date": None, "votes": 0}
        assert (child["model"], child["data"], child["created"]) == ("testapp.choice", None, True)


class CustomView(DiffsViewSetMixin, viewsets.ReadOnlyModelViewSet):
    queryset = CustomSerialized.objects.all()
    serializer_class = NameOnly  # cannot say anything about data of another format
    permission_classes = [permissions.AllowAny]


class CustomShownView(CustomView):
    def diff_data(self, diff: Diff) -> Any:
        if isinstance(diff.data, dict):
            return {"name": diff.data.get("name")}
        return super().diff_data(diff)


def test_custom_data_is_null_unless_diff_data_says_what_to_show():
    row = CustomSerialized.objects.create(name="n", secret="s")
    for action, kwargs in (("diffs_feed", {}), ("object_diffs", {"pk": row.pk})):
        [entry] = call(CustomView, action, **kwargs).data["results"]
        assert (entry["pk"], entry["created"], entry["data"]) == (row.pk, True, None)
        [entry] = call(CustomShownView, action, **kwargs).data["results"]
        assert entry["data"] == {"name": "n"}


def write_diff(holder_pk: int, member_data: str, describes: str = "") -> None:
    """Store a member written by someone else in a question's set and the feed."""
    diff_id = f"{abs(hash((holder_pk, member_data, describes))):016x}"[:16]
    member = f'{{"id":"{diff_id}","created":false{describes},"data":{member_data}}}'
    write_raw(
        object_key("testapp.question", holder_pk),
        feed_key("testapp.question"),
        member,
        feed_member(diff_id, str(holder_pk)),
    )


def test_data_that_names_another_object_is_null(client):
    question = Question.objects.create(question_text="q")
    other = Question.objects.create(question_text="other")
    write_diff(
        question.pk,
        f'[{{"model":"testapp.question","pk":{other.pk},"fields":{{"question_text":"x"}}}}]',
    )
    write_diff(
        question.pk,
        f'[{{"model":"testapp.secretive","pk":{question.pk},"fields":{{"name":"x"}}}}]',
    )
    # a child diff whose data is the parent's format
    write_diff(
        question.pk,
        f'[{{"model":"testapp.question","pk":{question.pk},"fields":{{"question_text":"x"}}}}]',
        ',"m":"testapp.choice","pk":5',
    )
    entries = get(client, f"/questions/{question.pk}/diffs/")["results"]
    assert [e["data"] for e in entries[1:]] == [None, None, None]
    assert [e["data"] for e in get(client, "/questions/diffs/")["results"][2:]] == [None] * 3


@pytest.mark.parametrize(
    "data",
    [
        None,
        "text",
        7,
        {"model": "testapp.question", "pk": 1, "fields": {}},
        [],
        [None],
        [{"model": "testapp.question", "pk": 1, "fields": {}}] * 2,
        [{"model": "testapp.question", "pk": 1}],
        [{"model": "testapp.question", "pk": 1, "fields": {}, "extra": 1}],
        [{"model": "testapp.question", "pk": 1, "fields": []}],
        [{"model": ["testapp.question"], "pk": 1, "fields": {}}],
        [{"model": "testapp", "pk": 1, "fields": {}}],
        [{"model": "no.such", "pk": 1, "fields": {}}],
        [{"model": "testapp.question", "pk": {"a": 1}, "fields": {}}],
        [{"model": "testapp.question", "pk": 2, "fields": {}}],
        [{"model": "testapp.choice", "pk": 1, "fields": {}}],
        [{"model": "testapp.untracked", "pk": 1, "fields": {}}],
    ],
)
def test_diff_data_is_null_for_anything_but_the_default_format_of_the_object(data):
    view = view_of(QuestionViewSetWithChildren)
    assert view.diff_data(Diff.stored(data, model="testapp.question", pk=1)) is None
    good = [{"model": "testapp.question", "pk": 1, "fields": {"votes": 2}}]
    assert view.diff_data(Diff.stored(good, model="testapp.question", pk=1)) == good
    # a diff that names an odd model is not shown either
    for model in (None, ["x"], {"a": 1}, "testapp.choices"):
        assert view.diff_data(Diff.stored(good, model=model, pk=1)) is None


class QuestionViewSetWithChildren(DiffsViewSetMixin, viewsets.ReadOnlyModelViewSet):
    queryset = Question.objects.all()
    serializer_class = QuestionSerializer
    diffs_child_serializers = {"testapp.choice": ChoiceSerializer}


def view_of(view_class: type, action: str = "list") -> Any:
    request = Request(APIRequestFactory().get("/"))
    return view_class(request=request, action=action, format_kwarg=None, args=(), kwargs={})


def test_a_viewset_without_a_serializer_is_a_configuration_error():
    class NoSerializer(DiffsViewSetMixin, viewsets.GenericViewSet):
        queryset = Question.objects.all()

    Question.objects.create(question_text="q")
    with pytest.raises(ImproperlyConfigured, match="Set serializer_class, or override diff_data"):
        call(NoSerializer)


@pytest.mark.parametrize(
    ("children", "message"),
    [
        ([("testapp.choice", ChoiceSerializer)], "must map child model labels"),
        ({"Testapp.Choice": ChoiceSerializer}, "is not a model label"),
        ({"choice": ChoiceSerializer}, "is not a model label"),
        ({"testapp.choice": ChoiceSerializer()}, "must be a serializer class"),
        ({"testapp.choice": dict}, "must be a serializer class"),
    ],
)
def test_child_serializers_are_checked_when_the_class_is_made(children, message):
    with pytest.raises(ImproperlyConfigured, match=message):
        type(
            "Bad",
            (DiffsViewSetMixin, viewsets.GenericViewSet),
            {"diffs_child_serializers": children, "__module__": __name__},
        )


@pytest.mark.parametrize(
    ("label", "message"),
    [
        ("testapp.choices", "names no installed model"),
        ("testapp.secretiveproxy", "is a proxy: name its concrete model, 'testapp.secretive'"),
        ("testapp.question", "is the viewset's own model"),
    ],
)
def test_child_labels_are_checked_at_the_first_request(label, message):
    view_class = type(
        "Bad",
        (DiffsViewSetMixin, viewsets.GenericViewSet),
        {
            "queryset": Question.objects.all(),
            "serializer_class": QuestionSerializer,
            "diffs_child_serializers": {label: ChoiceSerializer},
            "__module__": __name__,
        },
    )
    with pytest.raises(ImproperlyConfigured, match=message):
        call(view_class)


class Nested(serializers.ModelSerializer):
    class Meta:
        model = Question
        fields = ["id", "question_text"]


class NestedWithoutKey(serializers.ModelSerializer):
    class Meta:
        model = Question
        fields = ["question_text"]


def columns(**declared: serializers.Field) -> frozenset[str]:
    """What a serializer of Secretive with only these fields shows."""
    serializer_class = type("S", (serializers.Serializer,), dict(declared))
    return serializer_columns(serializer_class(), Secretive)


owner_queryset = Question.objects.all()


@pytest.mark.parametrize(
    ("declared", "shown"),
    [
        ({"name": serializers.CharField()}, {"name"}),
        ({"title": serializers.CharField(source="name")}, {"name"}),
        ({"name": serializers.CharField(write_only=True)}, set()),
        ({"secret": serializers.SerializerMethodField()}, set()),
        ({"whole": serializers.DictField(source="*")}, set()),
        ({"secret": serializers.HiddenField(default="x")}, set()),
        ({"nope": serializers.CharField(source="nonexistent")}, set()),
        ({"owner": serializers.PrimaryKeyRelatedField(queryset=owner_queryset)}, {"owner"}),
        ({"owner": serializers.PrimaryKeyRelatedField(read_only=True)}, {"owner"}),
        ({"owner_ref": serializers.IntegerField(source="owner_id")}, {"owner"}),
        ({"owner": serializers.ReadOnlyField(source="owner.pk")}, set()),
        ({"owner": serializers.CharField(source="owner.question_text")}, set()),
        ({"owner": serializers.StringRelatedField()}, set()),
        (
            {"owner": serializers.SlugRelatedField(slug_field="question_text", read_only=True)},
            set(),
        ),
        ({"owner": serializers.SlugRelatedField(slug_field="id", read_only=True)}, {"owner"}),
        (
            {
                "owner": serializers.HyperlinkedRelatedField(
                    view_name="question-detail", read_only=True
                )
            },
            {"owner"},
        ),
        (
            {
                "owner": serializers.HyperlinkedRelatedField(
                    view_name="question-detail", lookup_field="question_text", read_only=True
                )
            },
            set(),
        ),
        ({"owner": Nested(read_only=True)}, {"owner"}),
        ({"owner": NestedWithoutKey(read_only=True)}, set()),
        # the data holds the badge's slug (the foreign key's to_field), not its pk
        ({"badge": serializers.PrimaryKeyRelatedField(read_only=True)}, set()),
        ({"badge": serializers.SlugRelatedField(slug_field="slug", read_only=True)}, {"badge"}),
        ({"badge_key": serializers.CharField(source="badge_id")}, {"badge"}),
    ],
)
def test_which_serializer_fields_show_a_column(declared, shown):
    assert columns(**declared) == shown


def test_model_serializers_show_their_fields_and_lists_stand_for_their_child():
    assert serializer_columns(SecretiveSerializer(), Secretive) == {"name", "owner", "badge"}
    assert serializer_columns(SecretiveSerializer(many=True), Secretive) == {
        "name",
        "owner",
        "badge",
    }
    assert serializer_columns(object(), Secretive) == frozenset()
