"""Sending ``diffs.signals.diff_recorded`` for the diffs Redis has just stored.

Called by the writes themselves, after Redis answered, so the signal goes out once per
diff whichever path wrote it (the committing thread, the write-behind thread, the
outbox, ``Model.diffs.create()``), and never for a write that failed. Without a
receiver it costs one list check per write.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from django.apps import apps
from django.db import models

from diffs.delivery.record import OutgoingDiff
from diffs.diff import Diff
from diffs.keys import object_of, pk_value
from diffs.signals import diff_recorded

logger = logging.getLogger("diffs")

#: Per thread: the announcements a :func:`deferred` block holds back, or None.
_local = threading.local()


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold back the announcements made inside the block, and send them after it.

    The queue's write wraps its locked part in this: a receiver that saves a registered
    model writes (and so takes the queue's lock) again, which inside the lock would
    wait for itself forever.
    """
    previous = getattr(_local, "pending", None)
    pending: list[tuple[Sequence[OutgoingDiff], Sequence[float]]] = []
    _local.pending = pending
    try:
        yield
    finally:
        _local.pending = previous
    for diffs, scores in pending:
        announce(diffs, scores)


def announce(diffs: Sequence[OutgoingDiff], scores: Sequence[float]) -> None:
    """Send ``diff_recorded`` for each of ``diffs`` (as written), stored at ``scores``
    (after the enclosing :func:`deferred` block, if any)."""
    if not diff_recorded.receivers:
        return
    pending = getattr(_local, "pending", None)
    if pending is not None:
        pending.append((diffs, scores))
        return
    for outgoing, score in zip(diffs, scores, strict=True):
        if outgoing.is_birth_only:
            continue  # an object's birth is no diff
        try:
            sender, diff = _as_read(outgoing, score)
        except (LookupError, ValueError):
            logger.warning(
                "Sent no diff_recorded for the diff of %s pk=%s: it cannot be read back.",
                outgoing.label,
                outgoing.object_pk,
                exc_info=True,
            )
            continue
        for receiver, result in diff_recorded.send_robust(sender=sender, diff=diff):
            if isinstance(result, Exception):
                logger.error(
                    "A diff_recorded receiver (%s) raised for the diff of %s pk=%s; the "
                    "diff is stored, and is not sent again.",
                    getattr(receiver, "__qualname__", receiver),
                    outgoing.label,
                    outgoing.object_pk,
                )  # Django's own ERROR line (django.dispatch) has the traceback


def _as_read(outgoing: OutgoingDiff, score: float) -> tuple[type[models.Model], Diff]:
    """The model of the object ``outgoing`` describes, and the diff a read of the set
    that holds it returns."""
    holder_label, holder_pk_text = _holder_of(outgoing)
    holder = apps.get_model(holder_label)
    holder_pk: Any = pk_value(holder, holder_pk_text)
    diff = Diff.from_member(outgoing.member, score, model=holder_label, pk=holder_pk)
    return apps.get_model(outgoing.label), diff


def _holder_of(outgoing: OutgoingDiff) -> tuple[str, str]:
    found = object_of(outgoing.key, outgoing.feed_key)
    if found is None:
        return outgoing.label, outgoing.object_pk
    _, _, label, pk_text = found
    return label, pk_text
