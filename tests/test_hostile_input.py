"""Hostile input: primary keys full of glob and separator characters, foreign members,
and no unpickling anywhere.

Keys are ``<prefix><app_label>.<model_name>:<pk>``: the prefix and label are fixed, so
the pk is whatever follows and two pks can never share a key, whatever they contain.
SCAN patterns escape the prefix, so ``prune_diffs`` reaches exactly the keys under it.
"""

from __future__ import annotations

import ast
import logging
import time
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import transaction

import diffs
from diffs.settings import clear_settings_cache
from tests.conftest import diffs_settings
from tests.support.keynames import feed_key, index_key, object_key
from tests.support.paging import follow_diffs
from tests.support.writing import write_at
from tests.testapp.models import CodeItem, Question

pytestmark = pytest.mark.django_db(transaction=True)

HOSTILE_PKS = [
    "a:b",
    "a",
    "a:",
    ":",
    "*",
    "x",
    "?",
    "[ab]",
    "a]",
    "\\",
    "\\*",
    "with space",
    " leading",
    "line\nbreak",
    "tab\there",
    "ünï€😀",
    "a" * 1000,
    "{tag}",
    "feed:testapp.codeitem",
]
HOUR_MS = 3600 * 1000


def test_every_hostile_pk_has_its_own_key_and_reads_back_only_its_diffs():
    for number, pk in enumerate(HOSTILE_PKS):
        with transaction.atomic():
            item = CodeItem.objects.create(code=pk, name="created")
            item.name = f"renamed {number}"
            item.save()
    client = diffs.get_connection()
    keys = set(client.scan_iter(match=index_key("testapp.codeitem", "*")))
    assert len(keys) == len(HOSTILE_PKS)
    for number, pk in enumerate(HOSTILE_PKS):
        stored = CodeItem.diffs.get_by_object_id(pk)
        assert [(d.created, d.pk) for d in stored] == [(True, pk), (False, pk)], repr(pk)
        assert stored[-1].data[0]["fields"] == {"name": f"renamed {number}"}
        assert CodeItem.objects.get(code=pk).diffs == stored


def test_the_feed_names_each_hostile_pk_exactly():
    for pk in HOSTILE_PKS:
        CodeItem.objects.create(code=pk, name="n")
    seen = [d.pk for d in follow_diffs(lambda cursor: CodeItem.diffs.since(cursor, limit=7))]
    assert seen == HOSTILE_PKS


@pytest.mark.parametrize("prefix", ["diffs:", "we*ird[1]?\\:", "a:b:"])
def test_prune_touches_only_expired_diffs_under_the_prefix(redis_client, prefix):
    now = time.time() * 1000
    # Keys a careless pattern would reach: a glob-like prefix matches these when unescaped.
    outsiders = {
        "weXird1Z:testapp.codeitem:old",
        "we-ird1!:x",
        "diffs",
        "a:bc",
        "other:diffs:testapp.codeitem:1",
    }
    for key in outsiders:
        redis_client.zadd(key, {"not ours": now - 10 * HOUR_MS})
    with diffs_settings(prefix=prefix):
        clear_settings_cache()
        for pk in HOSTILE_PKS:
            write_at(CodeItem, pk, {"age": "old"}, now - 2 * HOUR_MS)
            CodeItem.diffs.create(data={"age": "fresh"}, pk=pk, timestamp=now)
        write_at(Question, 1, {"age": "old"}, now - 2 * HOUR_MS)
        Question.diffs.create(data={"age": "fresh"}, pk=1, timestamp=now)

        call_command("prune_diffs", stdout=_Sink(), stderr=_Sink())

        for pk in HOSTILE_PKS:
            assert [d.data["age"] for d in CodeItem.diffs.get_sortedset(pk)] == ["fresh"], pk
        assert [d.data["age"] for d in Question.diffs.get_sortedset(1)] == ["fresh"]
    for key in outsiders - {prefix}:
        assert redis_client.zcard(key) == 1, f"prune touched {key!r}, outside {prefix!r}"


def test_members_that_are_not_ours_are_skipped_with_a_warning(redis_client, caplog):
    CodeItem.diffs.create(data={"real": 1}, pk="k*")
    key = object_key("testapp.codeitem", "k*")
    junk = {
        b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x94.": 1,  # a pickle
        b"\xff\xfe not utf-8": 2,
        b"not json": 3,
        b"[1, 2, 3]": 4,
        b'{"id": "x"}': 5,
    }
    redis_client.zadd(key, junk)
    with caplog.at_level(logging.WARNING, logger="diffs"):
        stored = CodeItem.diffs.get_sortedset("k*")
        read = list(stored)
    assert [d.data for d in read] == [{"real": 1}]
    skipped = [r for r in caplog.records if "did not write" in r.getMessage()]
    assert len(skipped) == len(junk)
    assert all(key in r.getMessage() for r in skipped)


def test_foreign_feed_entries_do_not_break_paging(redis_client, caplog):
    for n in range(5):
        CodeItem.diffs.create(data={"n": n}, pk=f"p{n}")
    feed = feed_key("testapp.codeitem")

    last = CodeItem.diffs.since(None).diffs[-1].timestamp
    redis_client.zadd(
        feed,
        {
            b"short": last + 1,
            b"\xff\xfe\xfd not utf-8 at all": last + 2,
            b"0123456789abcdefnope": 3,
        },
    )
    CodeItem.diffs.create(data={"n": 5}, pk="p5")
    with caplog.at_level(logging.WARNING, logger="diffs"):
        read = follow_diffs(lambda cursor: CodeItem.diffs.since(cursor, limit=2))
    seen = [d.data["n"] for d in read]
    assert seen == [0, 1, 2, 3, 4, 5]
    skipped = [r for r in caplog.records if "did not write" in r.getMessage()]
    assert len(skipped) == 2  # the short one and the undecodable one; the third looks
    # like ours but points at no diff, which reads as a pruned diff: silently absent


def test_nothing_in_the_package_unpickles():
    package = Path(diffs.__file__).parent
    forbidden_modules = {"pickle", "cPickle", "_pickle", "marshal", "shelve", "dill"}
    found = []
    for path in package.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                names = {(node.module or "").split(".")[0]}
            elif isinstance(node, ast.Attribute) and node.attr in {"loads", "load"}:
                owner = getattr(node.value, "id", "")
                names = {owner} if owner in forbidden_modules | {"yaml"} else set()
            else:
                continue
            if names & (forbidden_modules | {"yaml"}):
                found.append(f"{path.name}:{node.lineno}")
    assert found == []


class _Sink:
    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


def test_a_feed_entry_scored_infinite_never_becomes_a_cursor(redis_client):
    question = Question.objects.create(question_text="real")
    feed = feed_key("testapp.question")
    redis_client.zadd(feed, {f"{'f' * 16}{question.pk}": float("inf")})
    redis_client.zadd(object_key("testapp.question", question.pk), {"junk": float("inf")})
    page = Question.diffs.since(None, limit=1)
    assert [d.data[0]["fields"]["question_text"] for d in page.diffs] == ["real"]
    assert page.cursor.replace(".", "").isdigit()
    assert Question.diffs.since(page.cursor).diffs == []
    assert len(Question.diffs.object_since(question.pk).diffs) == 1
