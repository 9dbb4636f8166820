"""``DiffsAdminMixin``: the "Recent changes" pages of an object and of a model."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

import diffs
from tests.testapp.models import Ledger, Question

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def admin_client():
    client = Client()
    client.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
    return client


def object_url(obj):
    return reverse(f"admin:testapp_{obj._meta.model_name}_diffs", args=[obj.pk])


def feed_url(model):
    return reverse(f"admin:testapp_{model._meta.model_name}_diffs_feed")


def rows(response):
    return re.findall(r'<tr class="diffs-row diffs-(\w+)">', response.content.decode())


def test_the_object_page_lists_its_changes_newest_first_with_who_and_old_to_new(admin_client):
    editor = User.objects.create_user("ann", first_name="Ann")
    ledger = Ledger.objects.create(name="rent")
    with diffs.context(user=editor.pk):
        ledger.name = "lease"
        ledger.save()
    response = admin_client.get(object_url(ledger))
    assert response.status_code == 200
    html = response.content.decode()
    assert rows(response) == ["updated", "created"]
    assert 'class="diffs-who">ann</td>' in html
    assert re.search(r'diffs-old">rent</span> &rarr; <span class="diffs-new">lease', html)


def test_the_time_is_shown_in_the_admins_time_zone(admin_client, settings):
    question = Question.objects.create(question_text="q")
    [diff] = question.diffs
    when = dt.datetime.fromtimestamp(diff.timestamp / 1000, tz=dt.timezone.utc)
    local = timezone.localtime(when, timezone.get_default_timezone())
    html = admin_client.get(object_url(question)).content.decode()
    assert local.strftime("%Y") in html
    assert f"{local.strftime('%-I')}:{local.strftime('%M')}" in html  # Chicago, not UTC


def test_the_model_page_lists_every_objects_changes_with_links(admin_client):
    first = Question.objects.create(question_text="first")
    second = Question.objects.create(question_text="second")
    second.question_text = "second, edited"
    second.save()
    response = admin_client.get(feed_url(Question))
    assert response.status_code == 200
    html = response.content.decode()
    assert rows(response) == ["updated", "created", "created"]
    assert reverse("admin:testapp_question_change", args=[first.pk]) in html


def test_pages_are_linked_from_the_change_form_and_the_change_list(admin_client):
    question = Question.objects.create(question_text="q")
    change = admin_client.get(reverse("admin:testapp_question_change", args=[question.pk]))
    assert object_url(question) in change.content.decode()
    changelist = admin_client.get(reverse("admin:testapp_question_changelist"))
    assert feed_url(Question) in changelist.content.decode()


def test_pages_are_paged_by_cursor(admin_client, monkeypatch):
    monkeypatch.setattr("diffs.admin.PAGE_SIZE", 2)
    question = Question.objects.create(question_text="v0")
    for n in range(1, 5):
        question.question_text = f"v{n}"
        question.save()
    seen = []
    url = object_url(question)
    for _ in range(5):
        html = admin_client.get(url).content.decode()
        seen += re.findall(r'diffs-new">(v\d)<', html)
        older = re.search(r'href="(\?before=[^"]+)" class="diffs-older"', html)
        if older is None:
            break
        url = object_url(question) + older.group(1).replace("&amp;", "&")
    assert seen == ["v4", "v3", "v2", "v1", "v0"]
    feed = admin_client.get(feed_url(Question) + "?before=not-a-cursor")
    assert feed.status_code == 200 and len(rows(feed)) == 2


def test_only_users_with_view_permission_see_the_pages():
    question = Question.objects.create(question_text="q")
    user = User.objects.create_user("staff", password="pw", is_staff=True)
    client = Client()
    client.force_login(user)
    assert client.get(object_url(question)).status_code == 403
    assert client.get(feed_url(Question)).status_code == 403
    user.user_permissions.add(Permission.objects.get(codename="view_question"))
    client.force_login(User.objects.get(pk=user.pk))
    assert client.get(object_url(question)).status_code == 200
    assert client.get(feed_url(Question)).status_code == 200
    anonymous = Client().get(feed_url(Question))
    assert anonymous.status_code == 302 and "/login/" in anonymous["Location"]


def test_a_field_the_admin_does_not_show_is_not_shown_old_or_new(admin_client):
    ledger = Ledger.objects.create(name="rent", amount=31337)
    ledger.amount = 42424
    ledger.save()
    html = admin_client.get(object_url(ledger)).content.decode()
    assert "31337" not in html and "42424" not in html
    assert "amount" not in html  # left out by the fieldsets


def test_users_of_a_page_are_read_in_one_query(admin_client, django_assert_max_num_queries):
    users = [User.objects.create_user(f"u{n}") for n in range(5)]
    question = Question.objects.create(question_text="q")
    for user in users:
        with diffs.context(user=user.pk):
            question.question_text = user.username
            question.save()
    with diffs.context(user="not a pk"):
        question.votes = 1
        question.save()
    with django_assert_max_num_queries(5):  # session, user, the object, the page's users
        html = admin_client.get(object_url(question)).content.decode()
    assert all(f'class="diffs-who">{u.username}</td>' in html for u in users)
    assert 'class="diffs-who">not a pk</td>' in html


def test_an_unknown_object_is_a_404(admin_client):
    assert (
        admin_client.get(reverse("admin:testapp_question_diffs", args=[999999])).status_code == 404
    )


def test_the_model_page_shows_only_the_rows_get_queryset_gives(admin_client):
    Question.objects.create(question_text="shown")
    hidden = Question.objects.create(question_text="hidden from this admin")
    hidden.votes = 3
    hidden.save()
    html = admin_client.get(feed_url(Question)).content.decode()
    assert rows(admin_client.get(feed_url(Question))) == ["created"]
    assert "hidden from this admin" not in html


def test_a_member_that_is_not_json_shows_as_unreadable_and_the_page_still_works(
    admin_client, redis_client
):
    question = Question.objects.create(question_text="q")
    bad = '{"id":"abcd","created":false,"data":[],"o":5}'
    redis_client.zadd(Question.diffs.get_key(question.pk), {bad: question.diffs[0].timestamp + 1})
    response = admin_client.get(object_url(question))
    assert response.status_code == 200
    assert rows(response) == ["unreadable", "created"]


def test_an_objects_page_stops_at_page_bytes():
    from tests.conftest import diffs_settings
    from tests.testapp.models import Article

    article = Article.objects.create(title="a")
    for n in range(6):
        article.body = f"{n}" + "x" * 3000
        article.save()
    with diffs_settings(page_bytes=7000):
        page = Article.diffs.object_newest(article.pk, limit=50)
        assert len(page.diffs) == 2 and page.has_more
        rest = Article.diffs.object_newest(article.pk, page.cursor, limit=50)
        assert rest.diffs[0].data[0]["fields"]["body"].startswith("3")
    everything = Article.diffs.object_newest(article.pk, limit=3)
    assert len(everything.diffs) == 3 and everything.has_more
    last = Article.diffs.object_newest(article.pk, everything.cursor, limit=50)
    assert len(last.diffs) == 4 and not last.has_more and last.cursor is None
