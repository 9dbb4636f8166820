"""Redis key names.

An object's sorted set is ``<prefix><app_label>.<model_name>:<pk>``, e.g.
``diffs:polls.question:42``, naming the concrete model (a proxy's diffs go to its
concrete model's key). App labels and model names cannot contain ``:``, so the first
``:`` after the prefix ends the model part and everything after it is the primary key,
whatever characters it holds: keys never collide.

A model's feed is ``<prefix>feed:<app_label>.<model_name>``. ``feed`` has no ``.``, so
no object key can look like it. Each feed member is the diff's 16-character id followed
by the pk text of the object key holding the diff.

Two more kinds of key, one per model and one per object at most, guard what readers
may trust (see ``diffs.horizon``):

* ``<prefix>horizon:<label>``, a hash: the time from which the model's diffs are
  complete. A cursor older than it gets ``CursorExpired``.
* ``<prefix>born:<label>:<pk>``, a string: the score of the object's latest creation
  when its pk had diffs already (a deleted row's pk used again), or of
  ``restart_history()``. Reads of the object start there.

A diff's body is stored once, in its model's log, and each object keeps an
index of its diffs (see ``diffs.lanes``):

* ``<prefix>log:<label>``, a stream: every diff of the model, by score; each entry holds
  the object's pk text and the diff's member.
* ``<prefix>ix:<label>:<pk>``, a string: one 16-byte record per diff of the object (its
  score as the log entry's id, and the diff's id), oldest first.

Object sets and feeds written before (or by a process with ``storage: "sets"``) are
still read, merged by score, until they age out.

``feed``, ``horizon``, ``born``, ``log`` and ``ix`` hold no ``.``, so none of these can
look like an object key, and :meth:`KeyLayout.parse` tells every kind apart.

With Redis Cluster the model part is wrapped in braces, a hash tag
(``diffs:{polls.question}:42``, ``diffs:feed:{polls.question}``): every key of a model
lives in one hash slot, so one script call can write an object's set and its model's
feed atomically, and a feed page can fetch its diffs in one script call. Models spread
over the primaries; one model's diffs stay on one.

A :class:`KeyLayout` (the prefix, and whether the keys are for a cluster) builds every
key; ``diffs.layout.current_layout()`` is the one built from the settings in use. This
module reads no settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ValidationError
from django.db import models

if TYPE_CHECKING:
    from diffs.settings import DiffsSettings

_GLOB_SPECIALS = frozenset("*?[]\\")
FEED_MARKER = "feed:"
HORIZON_MARKER = "horizon:"
BIRTH_MARKER = "born:"
LOG_MARKER = "log:"
INDEX_MARKER = "ix:"
#: The name of the pub/sub channel of new diffs, after the prefix.
CHANGES_MARKER = "changes"
DIFF_ID_LENGTH = 16


def model_label(model: type[models.Model]) -> str:
    """Return ``app_label.model_name`` (lower case) of the concrete model: the model part
    of a key. A proxy shares its concrete model's label, as it shares its rows."""
    concrete = model._meta.concrete_model or model
    return concrete._meta.label_lower


def normalize_pk(model: type[models.Model], pk: Any) -> str:
    """Return the text form of ``pk`` used in keys.

    The value goes through the primary key field's ``to_python`` first, so ``1`` and
    ``"1"`` name the same object, as do a UUID and its string form.
    """
    return str(pk_value(model, pk))


def pk_value(model: type[models.Model], pk: Any) -> Any:
    """Return ``pk`` as the primary key field's Python value (``"1"`` -> ``1``)."""
    try:
        return model._meta.pk.to_python(pk) if model._meta.pk is not None else pk
    except (ValidationError, TypeError, ValueError):
        return pk


def model_part(label: str, cluster: bool) -> str:
    """The model part of a key: the label, as a hash tag on Redis Cluster."""
    return f"{{{label}}}" if cluster else label


@dataclass(frozen=True)
class ObjectKeys:
    """The keys one object's read needs (all in one hash slot on Redis Cluster)."""

    key: str
    feed: str
    horizon: str
    birth: str
    #: The object's index and its model's log (``diffs.lanes``).
    index: str
    log: str
    #: The object's pk as its keys hold it (``normalize_pk``).
    pk_text: str = ""


@dataclass(frozen=True)
class ModelKeys:
    """The keys a feed page needs: the feed, the horizon, the log, and what the object
    keys and birth keys of the model start with (the pk text follows)."""

    feed: str
    horizon: str
    key_base: str
    birth_base: str
    log: str


@dataclass(frozen=True)
class KeyLayout:
    """Where django-diffs keeps its keys: under ``prefix``, with the model part as a
    hash tag when ``cluster`` is true. Every key name is built here, from these two
    values alone."""

    prefix: str
    cluster: bool

    @classmethod
    def from_settings(cls, conf: DiffsSettings) -> KeyLayout:
        """The layout the settings ``conf`` ask for."""
        return cls(prefix=conf.prefix, cluster=conf.cluster)

    @property
    def changes_channel(self) -> str:
        """The pub/sub channel on which each write names the feeds it added to
        (``diffs.live``). A channel, not a key: pruning and key scans never meet it."""
        return f"{self.prefix}{CHANGES_MARKER}"

    def model_part(self, model: type[models.Model]) -> str:
        """The part of every key of ``model`` that names it (``{label}`` on a cluster)."""
        return model_part(model_label(model), self.cluster)

    def object_key(self, model: type[models.Model], pk: Any) -> str:
        """The key of the sorted set that holds the diffs of one object."""
        return self.object_key_base(model) + normalize_pk(model, pk)

    def object_key_base(self, model: type[models.Model]) -> str:
        """What every object key of ``model`` starts with (the pk text follows)."""
        return f"{self.prefix}{self.model_part(model)}:"

    def feed_key(self, model: type[models.Model]) -> str:
        """The key of the model-wide feed of ``model``."""
        return f"{self.prefix}{FEED_MARKER}{self.model_part(model)}"

    def horizon_key(self, model: type[models.Model]) -> str:
        """The key of the hash that says from when ``model``'s diffs are complete."""
        return f"{self.prefix}{HORIZON_MARKER}{self.model_part(model)}"

    def birth_key_base(self, model: type[models.Model]) -> str:
        """What every birth key of ``model`` starts with (the pk text follows)."""
        return f"{self.prefix}{BIRTH_MARKER}{self.model_part(model)}:"

    def birth_key(self, model: type[models.Model], pk: Any) -> str:
        """The key holding the score of the latest creation of object ``pk``."""
        return self.birth_key_base(model) + normalize_pk(model, pk)

    def log_key(self, model: type[models.Model]) -> str:
        """The key of the stream holding every diff of ``model`` (``diffs.lanes``)."""
        return f"{self.prefix}{LOG_MARKER}{self.model_part(model)}"

    def index_key(self, model: type[models.Model], pk: Any) -> str:
        """The key of the string indexing the diffs of object ``pk`` in the log."""
        return f"{self.prefix}{INDEX_MARKER}{self.model_part(model)}:{normalize_pk(model, pk)}"

    def birth_key_for(self, object_key_text: str) -> str:
        """The birth key of the object whose sorted set is ``object_key_text`` (a key
        under this layout's prefix)."""
        return _birth_key_for(object_key_text, self.prefix)

    def lane_keys_for(self, object_key_text: str) -> tuple[str, str]:
        """The index key and log key of the object whose sorted set is
        ``object_key_text`` (a key under this layout's prefix)."""
        rest = object_key_text[len(self.prefix) :]
        end = rest.find("}") + 1 if rest.startswith("{") else rest.find(":")
        part = rest[:end] if end > 0 else rest
        return f"{self.prefix}{INDEX_MARKER}{rest}", f"{self.prefix}{LOG_MARKER}{part}"

    def object_keys(self, model: type[models.Model], pk: Any) -> ObjectKeys:
        """Every key a read of one object touches."""
        return ObjectKeys(
            key=self.object_key(model, pk),
            feed=self.feed_key(model),
            horizon=self.horizon_key(model),
            birth=self.birth_key(model, pk),
            index=self.index_key(model, pk),
            log=self.log_key(model),
            pk_text=normalize_pk(model, pk),
        )

    def model_keys(self, model: type[models.Model]) -> ModelKeys:
        """Every key a feed page of ``model`` touches, or starts."""
        return ModelKeys(
            feed=self.feed_key(model),
            horizon=self.horizon_key(model),
            key_base=self.object_key_base(model),
            birth_base=self.birth_key_base(model),
            log=self.log_key(model),
        )

    def pattern(self) -> str:
        """The SCAN pattern matching every key under the prefix and nothing else."""
        return f"{escape_glob(self.prefix)}*"

    def parse(self, key: bytes | str) -> KeyShape | None:
        """Return the shape of ``key`` if it is exactly one django-diffs writes under
        the prefix, else None (another site's key, another prefix's, anything else).

        Both layouts are recognised, plain labels and hash-tagged ``{label}`` parts,
        whichever this one is: keys written before a move to (or from) Redis Cluster
        are still ours.
        """
        if isinstance(key, bytes):
            try:
                key = key.decode("utf-8")
            except UnicodeDecodeError:
                return None
        if not key.startswith(self.prefix):
            return None
        rest = key[len(self.prefix) :]
        for marker, kind in _MARKERS.items():
            if rest.startswith(marker):
                return _shape(kind, rest[len(marker) :], with_pk=kind in _WITH_PK)
        return _shape("object", rest, with_pk=True)


def in_layout(key: str, feed_key: str, *, cluster: bool) -> tuple[str, str]:
    """Return an object key and its model's feed key in the layout of one server
    (``cluster=False``) or of a cluster, whichever layout they were built in.

    Durable mode's outbox keeps the keys a diff was built with; a row written before a
    move to (or from) Redis Cluster is written to the keys readers use now. The prefix
    is the row's own (so this takes no :class:`KeyLayout`). A pair that is not an
    object key and its feed key is returned as is.
    """
    found = object_of(key, feed_key)
    if found is None:
        return key, feed_key
    prefix, part, label, pk_text = found
    wanted = model_part(label, cluster)
    if wanted == part:
        return key, feed_key
    return f"{prefix}{wanted}:{pk_text}", f"{prefix}{FEED_MARKER}{wanted}"


def object_of(key: str, feed_key: str) -> tuple[str, str, str, str] | None:
    """``(prefix, model part, label, pk text)`` of an object key and its model's feed
    key (the prefix and model part are the feed's), or None for a pair that is not one."""
    split = split_feed_key(feed_key)
    if split is None:
        return None
    prefix, part = split
    if not key.startswith(f"{prefix}{part}:"):
        return None
    label = part[1:-1] if part.startswith("{") and part.endswith("}") else part
    return prefix, part, label, key[len(prefix) + len(part) + 1 :]


def split_feed_key(feed_key: str) -> tuple[str, str] | None:
    """``(prefix, model part)`` of a feed key, or None for a key that is not one. The
    model part holds no ``:``, so the last ``feed:`` is the marker, whatever the prefix."""
    marker = feed_key.rfind(FEED_MARKER)
    if marker < 0:
        return None
    return feed_key[:marker], feed_key[marker + len(FEED_MARKER) :]


def companion_keys(key: str, feed_key: str) -> tuple[str, str, str, str]:
    """The model's horizon key, the object's birth key, the object's index key and the
    model's log key, from its set's key and its model's feed key (the prefix and the
    model part are the feed's: a diff carries its keys, so no :class:`KeyLayout` is
    needed)."""
    prefix, part = split_feed_key(feed_key) or ("", feed_key)
    rest = key[len(prefix) :]
    return (
        f"{prefix}{HORIZON_MARKER}{part}",
        f"{prefix}{BIRTH_MARKER}{rest}",
        f"{prefix}{INDEX_MARKER}{rest}",
        f"{prefix}{LOG_MARKER}{part}",
    )


def _birth_key_for(object_key_text: str, prefix: str) -> str:
    return f"{prefix}{BIRTH_MARKER}{object_key_text[len(prefix) :]}"


def escape_glob(text: str) -> str:
    """Escape ``text`` so that a Redis MATCH pattern matches it literally."""
    return "".join(f"\\{char}" if char in _GLOB_SPECIALS else char for char in text)


def feed_member(diff_id: str, pk_text: str) -> str:
    """Return the feed member pointing at diff ``diff_id`` in the set of object ``pk_text``."""
    return f"{diff_id}{pk_text}"


def parse_feed_member(member: bytes | str) -> tuple[str, str]:
    """Split a feed member into ``(diff id, pk text)``."""
    text = member.decode("utf-8") if isinstance(member, bytes) else member
    return text[:DIFF_ID_LENGTH], text[DIFF_ID_LENGTH:]


@dataclass(frozen=True)
class KeyShape:
    """What a key under the prefix is, read from its name alone."""

    #: ``"object"``, ``"feed"``, ``"horizon"``, ``"born"``, ``"log"`` or ``"index"``.
    kind: str
    #: ``app_label.model_name`` (without the hash tag braces).
    label: str
    #: The pk text, for ``"object"``, ``"born"`` and ``"index"`` keys; ``""`` otherwise.
    pk_text: str = ""


def _is_label(text: str) -> bool:
    """True for ``app_label.model_name``: two identifiers joined by one dot (an app label
    may hold capitals; ``label_lower`` lowers the model name only)."""
    app, dot, model = text.partition(".")
    return bool(dot) and app.isidentifier() and model.isidentifier()


_MARKERS = {
    FEED_MARKER: "feed",
    HORIZON_MARKER: "horizon",
    BIRTH_MARKER: "born",
    LOG_MARKER: "log",
    INDEX_MARKER: "index",
}
_WITH_PK = frozenset({"born", "index"})
#: The marker after the prefix of each kind of key but objects'.
KIND_MARKERS = {kind: marker for marker, kind in _MARKERS.items()}


def _shape(kind: str, rest: str, *, with_pk: bool) -> KeyShape | None:
    if rest.startswith("{"):
        end = rest.find("}")
        label, tail = (rest[1:end], rest[end + 1 :]) if end > 0 else ("", "")
    else:
        colon = rest.find(":") if with_pk else len(rest)
        label, tail = (rest[:colon], rest[colon:]) if colon >= 0 else ("", "")
    if not _is_label(label):
        return None
    if not with_pk:
        return KeyShape(kind, label) if tail == "" else None
    if not tail.startswith(":") or len(tail) < 2:
        return None
    return KeyShape(kind, label, tail[1:])
