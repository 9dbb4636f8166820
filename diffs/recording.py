"""Recording a diff for every save, delete and bulk write of a registered model.

:func:`record` is the one way a change becomes a diff on its way to Redis: saves and
deletes (the signal receivers below) and bulk writes (``diffs.bulk``) all call it. The
changed fields of a save are computed in ``pre_save``, before the fields' own
``pre_save`` runs, so ``auto_now`` timestamps do not make every save look like a
change; the diff is built in ``post_save`` and written on commit.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from django.db import models
from django.db.models.signals import post_delete, post_save, pre_delete, pre_save

from diffs import delivery, expressions, tracking
from diffs.layout import current_layout
from diffs.payload import build_diff
from diffs.settings import get_settings
from diffs.transactions import CommitToken

logger = logging.getLogger("diffs")

#: Instance attribute carrying the changes from pre_save to post_save.
CHANGES_ATTRIBUTE = "_diffs_changes"
#: Instance attribute carrying, inside a transaction, the snapshot before the save.
PREVIOUS_ATTRIBUTE = "_diffs_previous_snapshot"
#: Instance attribute carrying from pre_save to post_save the pk fields that the
#: database assigns on INSERT (set only when there are any).
ASSIGNED_PK_ATTRIBUTE = "_diffs_database_assigned_pk"
#: Instance attribute set by pre_delete when the row to delete does not exist.
ABSENT_ATTRIBUTE = "_diffs_delete_absent_row"

#: Diffs of a bulk write handed to delivery at a time.
DIFFS_PER_HANDOVER = 1000


class Batch:
    """The diffs of one bulk write on database ``using``, handed to delivery
    ``DIFFS_PER_HANDOVER`` at a time (so a large write never holds them all)."""

    def __init__(self, using: str) -> None:
        self.using = using
        self.diffs: list[delivery.OutgoingDiff] = []

    def add(self, diff: delivery.OutgoingDiff) -> None:
        """Add one diff; hand the batch over once it is full."""
        self.diffs.append(diff)
        if len(self.diffs) >= DIFFS_PER_HANDOVER:
            self.hand_over()

    def hand_over(self) -> None:
        """Schedule the diffs added since the last hand-over."""
        diffs, self.diffs = self.diffs, []
        delivery.schedule_many(diffs, self.using)


def record(
    instance: models.Model,
    changes: dict[str, Any] | Callable[[], dict[str, Any]],
    *,
    using: str | None,
    created: bool = False,
    deleted: bool = False,
    batch: Batch | None = None,
    building: AbstractContextManager[Any] | None = None,
) -> CommitToken | None:
    """Build the diff of one change through the model's hooks and schedule its write
    for when database ``using`` commits.

    ``changes`` maps each changed field to its old value (or is a function that returns
    that mapping, called inside ``building``). ``building``: a context the hooks run in
    (the instance showing the values the database holds), left before the diff is
    scheduled. With ``batch`` (a bulk write's), the diff joins it and goes with
    the others. Returns the on-commit callback of the diff, when it waits for a commit
    (``diffs.tracking`` undoes a snapshot by it).
    """
    with building or contextlib.nullcontext():
        diff = build_diff(
            instance,
            changes() if callable(changes) else changes,
            layout=current_layout(),
            created=created,
            deleted=deleted,
            max_bytes=get_settings().max_diff_bytes,
        )
    if diff is None:
        return None
    if batch is not None:
        batch.add(diff)
        return None
    return delivery.schedule(diff, using)


_RECEIVERS = (
    (pre_save, "pre_save"),
    (post_save, "post_save"),
    (pre_delete, "pre_delete"),
    (post_delete, "post_delete"),
)


def connect(model: type[models.Model]) -> None:
    """Connect the receivers for ``model``; a second call does nothing."""
    uid = model._meta.label_lower
    pre_save.connect(on_pre_save, sender=model, dispatch_uid=f"diffs.pre_save.{uid}")
    post_save.connect(on_post_save, sender=model, dispatch_uid=f"diffs.post_save.{uid}")
    pre_delete.connect(on_pre_delete, sender=model, dispatch_uid=f"diffs.pre_delete.{uid}")
    post_delete.connect(on_post_delete, sender=model, dispatch_uid=f"diffs.post_delete.{uid}")


def disconnect(model: type[models.Model]) -> None:
    """Disconnect the receivers for ``model``."""
    uid = model._meta.label_lower
    for signal, name in _RECEIVERS:
        signal.disconnect(sender=model, dispatch_uid=f"diffs.{name}.{uid}")


def on_pre_save(
    sender: type[models.Model],
    instance: models.Model,
    update_fields: frozenset[str] | None = None,
    using: str | None = None,
    **kwargs: Any,
) -> None:
    """Remember what this save changes, before field ``pre_save`` hooks run."""
    tracking.settle(instance)
    instance.__dict__[CHANGES_ATTRIBUTE] = tracking.changed_fields(instance, update_fields)
    assigned = tracking.database_assigned_pk(instance)
    if assigned:
        instance.__dict__[ASSIGNED_PK_ATTRIBUTE] = assigned
    previous = tracking.provisional_copy(instance, using or "default")
    if previous is not None:
        instance.__dict__[PREVIOUS_ATTRIBUTE] = previous


def on_post_save(
    sender: type[models.Model],
    instance: models.Model,
    created: bool,
    using: str | None = None,
    **kwargs: Any,
) -> None:
    """Build the diff of a completed save and schedule its write."""
    changes = instance.__dict__.pop(CHANGES_ATTRIBUTE, None)
    previous = instance.__dict__.pop(PREVIOUS_ATTRIBUTE, None)
    assigned = instance.__dict__.pop(ASSIGNED_PK_ATTRIBUTE, ())
    tracking.mark_saved(instance)
    if changes is None:  # saved while the receivers were being connected
        return
    if not changes and not created:
        logger.debug("Skipped diff of %s pk=%s: no field changed.", sender.__name__, instance.pk)
        return
    if created:
        # Every field is new, even when the instance thought otherwise (a save after its
        # INSERT was rolled back becomes an INSERT again), except a pk the database chose.
        changes = tracking.creation_fields(instance, changes, assigned)
    # Fields saved from expressions hold the values the database computed meanwhile.
    resolving = (
        expressions.resolved(instance, using) if expressions.expression_fields(instance) else None
    )
    token = record(instance, changes, using=using, created=created, building=resolving)
    if previous is not None:
        tracking.remember(instance, previous, using or "default", token, inserted=created)


def on_pre_delete(
    sender: type[models.Model], instance: models.Model, using: str | None = None, **kwargs: Any
) -> None:
    """Check that the row exists when the instance's own INSERT was rolled back.

    Django sends ``post_delete`` whether or not a row was deleted; a diff for a row that
    never existed would report a change that never happened. Only such instances pay
    for the query.
    """
    if tracking.insert_rolled_back(instance):
        rows = sender._base_manager.db_manager(using).filter(pk=instance.pk)
        instance.__dict__[ABSENT_ATTRIBUTE] = not rows.exists()


def on_post_delete(
    sender: type[models.Model], instance: models.Model, using: str | None = None, **kwargs: Any
) -> None:
    """Record a ``deleted=True`` diff for a row that ``delete()`` removed."""
    tracking.settle(instance)
    if instance.__dict__.pop(ABSENT_ATTRIBUTE, False):
        logger.debug("Skipped diff of %s pk=%s: no row was deleted.", sender.__name__, instance.pk)
        return
    record(
        instance,
        lambda: tracking.current_state(instance),  # the row's values, inside saved_values
        using=using,
        deleted=True,
        building=tracking.saved_values(instance),
    )
