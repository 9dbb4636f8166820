"""Many-to-many changes: one diff per object whose list changed, on commit."""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

import diffs
from tests.testapp.models import Feature, Post, Tag

pytestmark = pytest.mark.django_db(transaction=True)


class Boom(Exception):
    pass


def tags_of(diff):
    return diff.data[0]["fields"]["tags"]


@pytest.fixture
def tags():
    return [Tag.objects.create(name=f"t{n}") for n in range(4)]


def test_add_remove_and_clear_each_record_the_new_list(tags):
    post = Post.objects.create(title="p")
    post.tags.add(tags[0], tags[2])
    post.tags.remove(tags[0])
    post.tags.clear()
    created, *changes = post.diffs
    assert "tags" not in created.data[0]["fields"]
    assert [tags_of(d) for d in changes] == [[tags[0].pk, tags[2].pk], [tags[2].pk], []]
    assert [d.data[0]["fields"].keys() for d in changes] == [{"tags"}] * 3


def test_set_is_one_diff_with_the_final_list(tags):
    post = Post.objects.create(title="p")
    post.tags.set([tags[0], tags[1]])
    post.tags.set([tags[1], tags[3]])  # a removal and an addition
    assert [tags_of(d) for d in post.diffs[1:]] == [
        [tags[0].pk, tags[1].pk],
        [tags[1].pk, tags[3].pk],
    ]


def test_changes_in_one_transaction_are_one_diff_per_object(tags):
    post = Post.objects.create(title="p")
    with transaction.atomic():
        post.tags.add(tags[0])
        post.tags.add(tags[1])
        post.tags.remove(tags[0])
        assert len(post.diffs) == 1  # nothing before the commit
    assert [tags_of(d) for d in post.diffs[1:]] == [[tags[1].pk]]


def test_from_the_reverse_side_each_affected_object_gets_a_diff(tags):
    first, second, other = (Post.objects.create(title=t) for t in "abc")
    first.tags.add(tags[1])
    tags[0].posts.add(first, second)
    assert tags_of(first.diffs[-1]) == [tags[0].pk, tags[1].pk]
    assert tags_of(second.diffs[-1]) == [tags[0].pk]
    assert len(other.diffs) == 1
    tags[0].posts.remove(second)
    assert tags_of(second.diffs[-1]) == []


def test_a_reverse_clear_of_a_large_relation_costs_a_few_queries_not_one_per_row(tags):
    posts = Post.objects.bulk_create([Post(title=f"p{n}") for n in range(300)])
    tags[0].posts.add(*posts)
    before = {post.pk: len(post.diffs) for post in posts[:3]}
    with CaptureQueriesContext(connection) as queries:
        tags[0].posts.clear()
    assert len(queries) <= 8
    for post in posts[:3]:
        assert len(post.diffs) == before[post.pk] + 1
        assert tags_of(post.diffs[-1]) == []
    assert Post.diffs.since(None, limit=1000).diffs[-1].data[0]["fields"] == {"tags": []}


def test_a_rolled_back_change_records_nothing(tags):
    post = Post.objects.create(title="p")
    with pytest.raises(Boom), transaction.atomic():
        post.tags.add(tags[0])
        raise Boom
    with transaction.atomic():
        post.tags.add(tags[1])
        with pytest.raises(Boom), transaction.atomic():
            post.tags.add(tags[2])
            raise Boom
    assert [tags_of(d) for d in post.diffs[1:]] == [[tags[1].pk]]


def test_old_values_hold_the_list_before_the_transaction(tags):
    post = Post.objects.create(title="p")
    post.tags.add(tags[0])
    with transaction.atomic():
        post.tags.add(tags[1])
        post.tags.remove(tags[0])
    assert post.diffs[-1].old == {"tags": [tags[0].pk]}
    assert tags_of(post.diffs[-1]) == [tags[1].pk]


def test_the_context_of_the_change_is_kept(tags):
    post = Post.objects.create(title="p")
    with transaction.atomic(), diffs.context(user=8):
        post.tags.add(tags[0])
    assert post.diffs[-1].context == {"user": 8}


def test_a_symmetrical_relation_records_both_objects():
    first, second = Post.objects.create(title="a"), Post.objects.create(title="b")
    first.related.add(second)
    assert first.diffs[-1].data[0]["fields"] == {"related": [second.pk]}
    assert second.diffs[-1].data[0]["fields"] == {"related": [first.pk]}


def test_a_registered_through_model_created_directly_is_recorded(tags):
    post = Post.objects.create(title="p")
    feature = Feature.objects.create(post=post, tag=tags[0], note="front page")
    assert feature.diffs[0].data[0]["fields"]["note"] == "front page"
    post.featured.add(tags[1], through_defaults={"note": "side"})
    assert post.diffs[-1].data[0]["fields"] == {"featured": [tags[0].pk, tags[1].pk]}


def test_a_model_that_is_not_registered_costs_no_query(tags):
    with CaptureQueriesContext(connection) as queries:
        tags[0].posts.add(Post.objects.create(title="p"))
    assert len(queries) < 10


def test_a_signal_sent_by_hand_outside_a_transaction_records_at_once(tags):
    from django.db.models.signals import m2m_changed

    post = Post.objects.create(title="p")
    Post.tags.through.objects.create(post=post, tag=tags[2])  # a row written by hand
    m2m_changed.send(
        sender=Post.tags.through,
        instance=post,
        action="post_add",
        reverse=False,
        model=Tag,
        pk_set={tags[2].pk},
        using="default",
    )
    assert tags_of(post.diffs[-1]) == [tags[2].pk]


def test_field_options_apply_to_many_to_many_fields(tags):
    diffs.register(Post, mask=["tags"], old_values=True)
    try:
        post = Post.objects.create(title="p")
        post.tags.add(tags[0])
        assert post.diffs[-1].data[0]["fields"] == {"tags": "[masked]"}
        assert post.diffs[-1].old == {"tags": "[masked]"}
        diffs.register(Post, exclude=["tags"], old_values=True)
        post.tags.add(tags[1])
        assert len(post.diffs) == 2
    finally:
        diffs.register(Post, old_values=True)


def test_a_change_then_a_delete_in_one_transaction_records_under_no_pk_none(tags, redis_client):
    post = Post.objects.create(title="p")
    with transaction.atomic():
        post.tags.add(tags[0])
        post.delete()
    assert not [key for key in redis_client.scan_iter() if key.endswith(b":None")]


def test_a_symmetrical_clear_records_both_sides():
    first, second = Post.objects.create(title="a"), Post.objects.create(title="b")
    first.related.add(second)
    first.related.clear()
    assert first.diffs[-1].data[0]["fields"] == {"related": []}
    assert second.diffs[-1].data[0]["fields"] == {"related": []}


def test_adding_what_is_there_or_removing_what_is_not_records_nothing(tags):
    post = Post.objects.create(title="p")
    post.tags.add(tags[0])
    count = len(post.diffs)
    post.tags.add(tags[0])
    post.tags.remove(tags[1])
    assert len(post.diffs) == count


def test_one_object_that_fails_loses_no_other_objects_diff(tags, caplog, monkeypatch):
    first, second = Post.objects.create(title="a"), Post.objects.create(title="b")

    def send_diff(self):
        if self.title == "a":
            raise RuntimeError("hook broke")
        return True

    monkeypatch.setattr(Post, "send_diff", send_diff, raising=False)
    with transaction.atomic():
        first.tags.add(tags[0])
        second.tags.add(tags[0])
    assert tags_of(second.diffs[-1]) == [tags[0].pk]
    assert "Could not record the tags change of testapp.post" in caplog.text


def test_unrelated_many_to_many_fields_keep_djangos_fast_path():
    from django.contrib.auth.models import Group, User
    from django.db.models.signals import m2m_changed

    assert m2m_changed.has_listeners(Post.tags.through)
    assert not m2m_changed.has_listeners(User.groups.through)
    assert not m2m_changed.has_listeners(Group.permissions.through)


def test_the_notes_are_let_go_of_after_the_commit(tags):
    post = Post.objects.create(title="p")
    post.tags.add(tags[0])
    notes = connection._diffs_m2m_notes
    assert notes.changed == {} and notes.old == {}
