"""``diff_recorded``: sent once for each diff Redis has stored.

Connect a receiver to pass changes on (invalidate a cache, forward them to a queue)::

    from diffs.signals import diff_recorded

    def forward(sender, diff, **kwargs):
        ...  # sender: the model class; diff: the Diff, as a read would return it

    diff_recorded.connect(forward)

It is sent by the thread that writes the diffs to Redis (the committing thread, or the
write-behind thread), in write order, after the write; with no receiver connected it
costs nothing. A receiver that raises is logged on the ``diffs`` logger, and the other
receivers still run: the diff is neither lost nor written again.

0.1.16's receivers lived in this module; asking for one of their names
(``on_pre_save``, ``on_post_save``, ``connect``, ``serialize_object``) raises an
``ImportError`` that says what replaced it.
"""

from __future__ import annotations

from django.dispatch import Signal

#: Sent with ``sender`` (the model class of the object the diff describes) and
#: ``diff`` (a :class:`~diffs.Diff`, decoded).
diff_recorded = Signal()

#: 0.1.16's names in this module.
_REMOVED = frozenset({"on_pre_save", "on_post_save", "connect", "serialize_object"})

_REPLACED = (
    "diffs.signals.{name} was removed in django-diffs 1.0. 0.1.16's receivers (on_pre_save, "
    "on_post_save, connect) are now in diffs.recording, and @diffs.register connects them "
    "(with a dispatch_uid): to pause recording a model, call "
    "diffs.recording.disconnect(Model) and connect(Model), or diffs.unregister(Model) to "
    "stop for good. serialize_object() is gone: the default data is "
    "diffs.payload.default_data(instance, field_names). diffs.signals now holds "
    "diff_recorded."
)


def __getattr__(name: str) -> object:
    # An ImportError, not an AttributeError: "from diffs.signals import on_post_save"
    # turns an AttributeError into a bare "cannot import name", losing this message.
    if name in _REMOVED:
        raise ImportError(_REPLACED.format(name=name))
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
