"""Writing diffs at a chosen score, for tests that need old ones (prune, expiry).

``Model.diffs.create(timestamp=...)`` refuses a score older than ``max_element_age``
(no read could return it); tests of pruning need exactly such diffs, so this writes
them through the store, as a diff that was recorded then and kept would be.
"""

from __future__ import annotations

from typing import Any

from django.db import models

from diffs import get_connection
from diffs.delivery import OutgoingDiff, store
from diffs.diff import Diff, new_diff_id
from diffs.keys import feed_member, normalize_pk
from diffs.layout import current_layout
from diffs.settings import get_settings


def write_at(model: type[models.Model], pk: Any, data: Any, score: float) -> float:
    """Store a diff of ``model`` object ``pk`` with ``data`` at ``score``; return the score.

    The model's horizon is opened first when it has none, so the score is kept even in
    a freshly flushed Redis (see :func:`open_horizon`).
    """
    layout = current_layout()
    if not get_connection().exists(layout.horizon_key(model)):
        open_horizon(model)
    diff = Diff(data=data, created=False, id=new_diff_id())
    return write_raw(
        layout.object_key(model, pk),
        layout.feed_key(model),
        diff.to_member(),
        feed_member(diff.id or "", normalize_pk(model, pk)),
        score,
    )


def outgoing(
    key: str, feed_key: str, member: str, feed_member: str, score: float | None = None
) -> OutgoingDiff:
    """An OutgoingDiff with these keys and members (label and pk only name it in logs)."""
    return OutgoingDiff(key, member, feed_key, feed_member, score, "test.raw", "?")


def write_raw(
    key: str, feed_key: str, member: str, feed_member: str, score: float | None = None
) -> float:
    """Write one member to ``key`` and ``feed_key`` through the write script, as any
    diff is written (no hooks, no queue); return its score."""
    return store.write_one(get_connection(), outgoing(key, feed_key, member, feed_member, score))


def open_horizon(model: type[models.Model]) -> None:
    """Say ``model``'s diffs in Redis are complete since long ago (see ``diffs.horizon``).

    A model's horizon starts at its first write, so in a freshly flushed Redis a fixed
    score in the past would be placed by the clock, and a Unix-ms cursor from before the
    first write would read as expired. Tests of those paths open it first, as a model
    with a long history has it.
    """
    conf = get_settings()
    get_connection().hset(
        current_layout().horizon_key(model), mapping={"from": -1e300, "age": conf.max_element_age}
    )
