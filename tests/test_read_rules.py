"""Every read of diffs goes through one door (diffs.reads), which applies the read
rules: a process reads its own writes first, and a paused Redis is not asked."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.db import transaction

from diffs import reads
from tests.testapp.models import Question

PACKAGE = Path(__file__).resolve().parent.parent / "diffs"
pytestmark = pytest.mark.django_db(transaction=True)

READS = {
    "instance.diffs": lambda q: q.diffs,
    "get_by_object_id": lambda q: Question.diffs.get_by_object_id(q.pk),
    "object_since": lambda q: Question.diffs.object_since(q.pk),
    "since": lambda q: Question.diffs.since(None),
    "restart_history": lambda q: Question.diffs.restart_history(q.pk),
    "sorted set slice": lambda q: Question.diffs.get_sortedset(q.pk)[-1:],
    "sorted set by score": lambda q: Question.diffs.get_sortedset(q.pk).zrangebyscore(
        "-inf", "+inf"
    ),
}


@pytest.mark.parametrize("name", READS)
def test_every_read_writes_the_processs_own_diffs_first(name, monkeypatch):
    with transaction.atomic():
        question = Question.objects.create(question_text="one")
    flushed = []
    monkeypatch.setattr(reads, "write_before_read", lambda: flushed.append(name))
    READS[name](question)
    assert flushed, f"{name} read Redis without writing the process's own diffs first"


def test_only_the_door_applies_the_read_rules():
    """No other module calls availability.read or write_before_read for a read
    (Model.diffs.create() writes them too, as a write that must come after the process's)."""
    callers = {}
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for call in ("availability.read(", "availability.aread(", "write_before_read()"):
            for match in re.finditer(r"(?<!def )(?<!\w)" + re.escape(call), text):
                line = text[: match.start()].count("\n") + 1
                callers.setdefault(call, []).append(f"{path.relative_to(PACKAGE)}:{line}")
    assert [c.split(":")[0] for c in callers["availability.read("]] == ["reads.py"]
    assert [c.split(":")[0] for c in callers["availability.aread("]] == ["reads.py"]
    assert sorted(c.split(":")[0] for c in callers["write_before_read()"]) == [
        "managers.py",  # create(): a write, after the process's own
        "reads.py",
    ]
