"""The ``Diff`` value object and its Redis member encoding.

A member is compact JSON: ``{"id":"…","created":false,"data":…}``, with
``"deleted":true`` added for deletions only, and ``"m"``/``"pk"`` (the model label and
pk of the object the diff describes) only when that is not the key's own object, as
for a child whose ``get_diff_parent()`` sent it to its parent. ``id`` is random and
unique, so two identical changes are two members, never merged into one.
``data`` follows the head so the encoder can splice in data that was already encoded
once. After it come, when the diff has them, ``"o"`` (the old value of each changed
field, for a model registered with ``old_values=True``) and ``"c"`` (the values of
``diffs.context()`` in effect when the change was made): after ``data``, so that
nothing they hold can be mistaken for a key of the head.

A diff that reached Redis late (retried after an outage, or recovered from the
outbox) also carries ``"t"``: the epoch milliseconds at which its change committed.
Its score stays the time it arrived, so cursors still see every diff exactly once,
and ``Diff.timestamp`` gives the original time.

Members are strict JSON (RFC 8259) in UTF-8, whatever the data: a non-finite float is
written as the string ``"NaN"``, ``"Infinity"`` or ``"-Infinity"`` (:func:`encode_data`).
Reads are strict too (:func:`parse_strict_json`), and skip a member that is not
(:func:`decode_members`): one bad member never breaks a read.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder

from diffs.clock import now_ms

logger = logging.getLogger("diffs")

_REQUIRED_KEYS = ("data", "created")


def new_diff_id() -> str:
    """Return a fresh random member id (64 bits, hex).

    Ids need to be unique, not secret: a generator of our own (seeded from the OS, and
    reseeded in a forked child) costs a fraction of ``secrets``' system call. Not the
    module-level ``random``: code that calls ``random.seed()`` would replay its ids.
    """
    return f"{_random_bits(64):016x}"


_generator = random.Random()
_random_bits = _generator.getrandbits
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_generator.seed)


# One encoder for every diff: building one per call cost more than most encodings.
# Encoders keep no state between calls, so threads can share it. allow_nan=False: JSON
# has no NaN or infinity, and a member with Python's NaN/Infinity tokens made every
# strict reader (DRF's renderer, browsers, other languages) fail on the whole page.
_ENCODER = DjangoJSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_JSON_CONSTANTS = {True: "true", False: "false", None: "null"}

#: Unicode surrogates: a str holding one cannot be encoded as UTF-8.
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_REPLACEMENT_CHARACTER = "\ufffd"


def encode_data(data: Any) -> str:
    """Encode diff data as compact, strict JSON (RFC 8259) that is valid UTF-8 text.

    JSON has no token for a non-finite float: ``nan``, ``inf`` and ``-inf`` anywhere in
    ``data`` (values, list items, dict keys, at any depth) are written as the strings
    ``"NaN"``, ``"Infinity"`` and ``"-Infinity"``, and read back as those strings. Text
    that is not valid Unicode (a lone surrogate such as ``"\\ud800"``, which UTF-8
    cannot hold) is written with U+FFFD in its place. Dates, times, ``Decimal`` and
    ``UUID`` become strings (``DjangoJSONEncoder``).

    Raises ``TypeError`` for a value JSON cannot hold, and ``ValueError`` for a circular
    reference or data nested deeper than Python's recursion limit.
    """
    try:
        text = _ENCODER.encode(data)
    except ValueError:
        # A non-finite float (or a circular reference, or a value the encoder refuses,
        # which encoding the rewritten copy raises again). Only such data pays for the
        # copy: everything else was encoded in one pass above.
        text = _encode_with_finite_floats(data)
    except RecursionError as error:
        raise _too_deep(error) from error
    if not text.isascii() and not _is_utf8(text):
        # With ensure_ascii=False the encoder copies a str's characters as they are, and
        # only inside JSON strings: replacing them in the text is replacing them in the
        # data. Redis clients refuse to send such text: the member could never be
        # written, and was retried forever.
        text = _SURROGATE.sub(_REPLACEMENT_CHARACTER, text)
    return text


def _is_utf8(text: str) -> bool:
    # Encoding is several times faster than searching the text for a surrogate.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _encode_with_finite_floats(data: Any) -> str:
    try:
        return _ENCODER.encode(_with_finite_floats(data, set()))
    except RecursionError as error:
        raise _too_deep(error) from error


def _too_deep(error: RecursionError) -> ValueError:
    return ValueError(f"the data is nested too deeply for JSON ({error})")


def _with_finite_floats(value: Any, containers: set[int]) -> Any:
    """A copy of ``value`` with each non-finite float replaced by its name.

    It walks what the JSON encoder writes as arrays and objects (lists, tuples and
    dicts, subclasses included); ``containers`` holds the ids of those being walked, to
    refuse a circular reference as the encoder does instead of recursing forever.
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else _non_finite_name(value)
    if not isinstance(value, (dict, list, tuple)):
        return value
    if id(value) in containers:
        msg = "Circular reference detected"
        raise ValueError(msg)
    containers.add(id(value))
    if isinstance(value, dict):
        copy: Any = {
            _with_finite_floats(key, containers): _with_finite_floats(item, containers)
            for key, item in value.items()
        }
    else:
        copy = [_with_finite_floats(item, containers) for item in value]
    containers.discard(id(value))
    return copy


def _non_finite_name(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def build_member(
    diff_id: str,
    data_json: str,
    created: bool | None,
    deleted: bool,
    describes: tuple[str, Any] | None = None,
    *,
    old_json: str | None = None,
    context_json: str | None = None,
) -> str:
    """Return the member text for already encoded ``data_json``.

    ``describes`` is ``(model label, pk)`` of the object the diff is about, when that
    is not the object whose set holds it. ``old_json`` and ``context_json``: the encoded
    JSON objects of the old values and of the context, when the diff has them.
    """
    # Written by hand: the id is hex, the flags are constants, and a json.dumps() of
    # the head cost as much as encoding the data.
    head = f'{{"id":"{diff_id}","created":{_JSON_CONSTANTS[created]}'
    return _finish_member(head, "data", data_json, deleted, describes, old_json, context_json)


def build_compact_member(
    diff_id: str,
    fields_json: str,
    created: bool | None,
    deleted: bool,
    *,
    old_json: str | None = None,
    context_json: str | None = None,
) -> str:
    """Return the compact member (``member_format: "compact"``) of a diff whose data is
    the default serializer's one object, the key's own: ``"f"`` holds its ``fields``
    (model and pk are the key's), and ``"created"`` is left out when false. Read back,
    it gives the same :class:`Diff` as :func:`build_member` would."""
    head = f'{{"id":"{diff_id}"'
    if created is not False:
        head += f',"created":{_JSON_CONSTANTS[created]}'
    return _finish_member(head, "f", fields_json, deleted, None, old_json, context_json)


def _finish_member(
    head: str,
    data_key: str,
    data_json: str,
    deleted: bool,
    describes: tuple[str, Any] | None,
    old_json: str | None,
    context_json: str | None,
) -> str:
    if deleted:
        head += ',"deleted":true'
    if describes is not None:
        label, pk = describes
        head += f',"m":{encode_data(label)},"pk":{encode_data(pk)}'
    tail = "" if old_json is None else f',"o":{old_json}'
    if context_json is not None:
        tail += f',"c":{context_json}'
    return f'{head},"{data_key}":{data_json}{tail}}}'


def with_original_time(member: str, committed_ms: float) -> str:
    """Return ``member`` with ``"t"`` (its change's commit time, epoch ms) added.

    A time that is not a finite number is left out: ``inf`` or ``nan`` would make the
    member invalid JSON, and so unreadable, while the diff is still worth having.
    """
    if not math.isfinite(committed_ms):
        return member
    return f'{{"t":{round(committed_ms, 3)!r},{member[1:]}'


@dataclass(frozen=True)
class Diff:
    """One recorded change.

    Attributes:
        data: what the model's ``serialize_diff`` returned, or the default serializer's
            ``[{"model", "pk", "fields"}]`` list, as JSON gives it back. JSON has no
            NaN or infinity: a non-finite float was stored, and reads back, as the
            string ``"NaN"``, ``"Infinity"`` or ``"-Infinity"``.
        created: True for the diff of a newly created object.
        timestamp: when the change was recorded, in Unix epoch milliseconds: the
            sorted-set score, or, for a diff that reached Redis late (after an outage),
            the time its change committed.
        deleted: True for the diff recorded when the object was deleted.
        id: the member's unique id (None for a Diff not read from or written to Redis).
        pk: the primary key of the object the diff describes.
        model: ``app_label.model_name`` of the object the diff describes.
        cursor: pass it back as ``since`` to read only the diffs after this one.
        holder_pk: the pk of the object whose sorted set holds the diff: ``pk`` itself,
            or the parent's pk for a diff a child sent with ``get_diff_parent()``.
        superseded: True for a diff recorded before the latest creation of its holder
            (a primary key that was deleted and used again, or history restarted with
            ``Model.diffs.restart_history()``): it belongs to an earlier row. Only the
            model feed returns such diffs; reads of one object never do.
        context: the values of ``diffs.context()`` in effect when the change was made
            (``{"user": 7}``); empty when there were none.
        old: for a model registered with ``old_values=True``, the value each changed
            field had before an update or a delete, in the form of ``data``'s; empty
            otherwise (and for a creation).
    """

    data: Any = None
    created: bool | None = None
    timestamp: float = field(default_factory=now_ms)
    deleted: bool = False
    id: str | None = None
    pk: Any = None
    model: str | None = None
    cursor: str | None = None
    holder_pk: Any = None
    superseded: bool = False
    context: dict[str, Any] = field(default_factory=dict)
    old: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # As in 0.1.16, a str is a JSON document (the default serializer's output). That
        # output writes a non-finite float as a NaN/Infinity token: it becomes the name,
        # as encode_data() would write the float.
        if isinstance(self.data, str):
            try:
                object.__setattr__(self, "data", _parse_given_json(self.data))
            except ValueError as error:
                msg = (
                    f"Diff data given as a str must be a JSON document ({error}): pass the "
                    "data itself (a dict or list), or e.g. json.dumps('some text')."
                )
                raise ValueError(msg) from error

    def __hash__(self) -> int:
        # data may be a list or dict; the id (or the score) identifies a stored diff.
        return hash((self.id, self.timestamp))

    def __repr__(self) -> str:
        try:
            kind = "deleted" if self.deleted else "created" if self.created else "updated"
        except ValueError:  # a stored member that is not valid JSON (see decoded_on_use)
            return "<Diff (undecodable)>"
        return f"<Diff {kind} at {self.timestamp}>"

    def to_member(self) -> str:
        """Return the Redis member for this diff (it must have an ``id``)."""
        if self.id is None:
            msg = "Diff.to_member() needs a Diff with an id; use Diff(..., id=new_diff_id())."
            raise ValueError(msg)
        return self._member(self.id)

    def _member(self, diff_id: str) -> str:
        return build_member(
            diff_id,
            encode_data(self.data),
            self.created,
            self.deleted,
            old_json=encode_data(self.old) if self.old else None,
            context_json=encode_data(self.context) if self.context else None,
        )

    def typecast_for_storage(self) -> tuple[str, float]:
        """Return ``(member, score)``: the diff as a write stores it (kept from 0.1.16).

        A diff built by hand has no ``id``; it gets a fresh one, as a write would give
        it, so the member is one that reads accept. Raises ``TypeError`` or
        ``ValueError`` for data JSON cannot hold (see :func:`encode_data`).
        """
        diff_id = self.id if self.id is not None else new_diff_id()
        return self._member(diff_id), self.timestamp

    @classmethod
    def from_storage(cls, member: bytes | str, timestamp: float | None = None) -> Diff:
        """Decode one stored member (kept from 0.1.16); ``timestamp`` is its score (now
        when None).

        Members written by 0.1.16 (``{"data": ..., "created": ...}``) decode too. Raises
        ``ValueError`` when ``member`` is not one (0.1.16 raised ``KeyError`` or
        ``JSONDecodeError``, which is a ``ValueError``).
        """
        return cls.from_member(member, now_ms() if timestamp is None else timestamp)

    @classmethod
    def from_member(
        cls, member: bytes | str, score: float, model: str | None = None, pk: Any = None
    ) -> Diff:
        """Decode a member read from Redis; raises ``ValueError`` if it is not ours.

        Not ours: not strict JSON (see :func:`parse_strict_json`; a member holding
        ``NaN`` or ``Infinity`` tokens is refused, so ``data`` never holds a non-finite
        float), or without the keys and types django-diffs writes. ``model`` and ``pk``
        describe the key's own object; a member that names another object (a child's
        diff in its parent's set) overrides them.
        """
        diff = cls.__new__(cls)
        diff.__dict__.update(_decode(member, score, model, pk))
        return diff

    @classmethod
    def decoded_on_use(
        cls, member: bytes | str, score: float, model: str | None = None, pk: Any = None
    ) -> Diff:
        """A diff read from Redis whose member is decoded when an attribute is first read.

        Reads return up to a thousand diffs, and decoding their JSON cost more than
        reading them (issue 5, figure d); a caller that looks at a few pays for those.
        Only members that look like ours (:func:`looks_like_member`) belong here: one
        that looks right but does not decode as :meth:`from_member` would (not strict
        JSON, ``NaN`` tokens included) raises ``ValueError`` when it is used. Readers
        that must not meet that use :func:`decode_members`, which builds these.
        """
        diff = cls.__new__(cls)
        diff.__dict__[_UNDECODED] = (member, score, model, pk)
        return diff

    @classmethod
    def stored(cls, data: Any, **fields: Any) -> Diff:
        """Build a Diff around data that is already decoded (a str in it is plain text).

        Reads build a thousand of these at a time: the attributes are filled in directly,
        without the frozen dataclass's ``__init__`` (one ``object.__setattr__`` per field).
        """
        unknown = fields.keys() - _STORED_DEFAULTS.keys()
        if unknown:
            msg = f"Diff has no field(s) {', '.join(sorted(unknown))}"
            raise TypeError(msg)
        diff = cls.__new__(cls)
        values = diff.__dict__
        values.update(_STORED_DEFAULTS)
        values.update(fields)
        values["data"] = data
        for name in ("context", "old"):
            if name not in fields:
                values[name] = {}  # its own: a caller may fill it in
        if "timestamp" not in fields:
            values["timestamp"] = now_ms()
        return diff


#: Field defaults for Diff.stored() (timestamp: now, filled in there).
_STORED_DEFAULTS: dict[str, Any] = {
    "created": None,
    "timestamp": 0.0,
    "deleted": False,
    "id": None,
    "pk": None,
    "model": None,
    "cursor": None,
    "holder_pk": None,
    "superseded": False,
    "context": {},  # replaced by a dict of its own in stored()
    "old": {},  # likewise
}


def looks_like_member(member: bytes | str) -> bool:
    """Whether ``member`` has the shape of one django-diffs wrote, without decoding it.

    Members start exactly as :func:`build_member` writes them: ``{"id":"<id>",
    "created":true|false|null``, or with ``{"t":<ms>,`` before that for a late diff
    (see the module docstring); they end with ``}`` and hold a ``data`` key. A compact
    member (:func:`build_compact_member`) may lack ``created``, and holds ``f``.
    """
    if isinstance(member, str):
        member = member.encode("utf-8", "surrogatepass")
    return _has_member_shape(member)


def _has_member_shape(member: bytes) -> bool:
    # find() rather than "in": bytes.__contains__ first tries its argument as an int,
    # and that failed attempt cost more than the search (reads do this per member).
    if not member.endswith(b"}"):
        return False
    if _MEMBER_HEAD.match(member) is not None and member.find(b',"data":') >= 0:
        return True
    return _COMPACT_HEAD.match(member) is not None


_MEMBER_HEAD = re.compile(
    rb'\{(?:"t":-?[0-9][0-9.eE+-]*,)?"id":"[^"\\]*","created":(?:true|false|null)[,}]'
)
# build_compact_member's head: the id, "created" unless false, "deleted", then "f".
_COMPACT_HEAD = re.compile(
    rb'\{(?:"t":-?[0-9][0-9.eE+-]*,)?"id":"[^"\\]*"(?:,"created":(?:true|null))?'
    rb'(?:,"deleted":true)?,"f":\{'
)
_ID_KEY = b'"id":"'


def member_id(member: bytes | str) -> str | None:
    """The id of a member that looks like ours, read without decoding its JSON.

    The first ``"id":"`` is the id key: the head comes before ``data``, and inside a
    JSON string (a child's ``"m"`` or ``"pk"``) a quote is always escaped.
    """
    if isinstance(member, str):
        member = member.encode("utf-8", "surrogatepass")
    start = member.find(_ID_KEY)
    if start < 0:
        return None
    start += len(_ID_KEY)
    end = member.find(b'"', start)
    return member[start:end].decode("ascii", "replace") if end > 0 else None


def decode_members(
    key: str,
    entries: Iterable[tuple[bytes | str, float]],
    model: str | None = None,
    pk: Any = None,
    *,
    eager: bool,
) -> list[Diff]:
    """Turn ``(member, score)`` pairs read from ``key`` into diffs; bad members are skipped.

    One member never breaks a read: a member django-diffs did not write (see
    :func:`looks_like_member`) is skipped with a warning on the ``diffs`` logger naming
    the key, with an excerpt of the member; so is one that does not decode as strict
    JSON (:func:`parse_strict_json`) when it is decoded here. ``model`` and ``pk`` name
    the key's own object (see :meth:`Diff.from_member`).

    ``eager=False`` (reads of one object, up to a thousand diffs): each diff decodes its
    member when first used (:meth:`Diff.decoded_on_use`), as decoding cost more than
    reading. Except a member holding the bytes ``NaN`` or ``Infinity``: it may hold the
    non-JSON tokens that versions before 1.0 wrote for non-finite floats, so it is
    decoded here and skipped if it is not strict JSON. Any other member that looks like
    ours but is broken raises ``ValueError`` when its diff is used.

    ``eager=True`` (pages whose diffs are all rendered, such as the REST feed): every
    member is decoded here, so each diff returned is sound. It costs time and memory in
    proportion to the bytes read: pass a page (at most 1,000 members, each within
    ``max_diff_bytes`` when django-diffs wrote it), not a whole set.
    """
    diffs: list[Diff] = []
    skipped = _SkipLog(key)
    decoded_on_use, from_member, read_kind = Diff.decoded_on_use, Diff.from_member, _read_kind
    for member, score in entries:
        kind = read_kind(member)
        if kind is _DECODE_ON_USE and not eager:
            diffs.append(decoded_on_use(member, score, model, pk))
        elif kind is _NOT_OURS:
            skipped.add(member, "that django-diffs did not write")
        else:
            try:
                diffs.append(from_member(member, score, model, pk))
            except ValueError as error:
                skipped.add(member, f"that is not strict JSON ({error})")
    skipped.close()
    return diffs


# What a read does with a member (_read_kind): skip it, or decode it now or on use.
_NOT_OURS, _DECODE_NOW, _DECODE_ON_USE = "not ours", "decode now", "decode on use"


def _read_kind(member: bytes | str) -> str:
    # One call per member: a read of a thousand members pays for each call.
    raw = member.encode("utf-8", "surrogatepass") if isinstance(member, str) else member
    if not _has_member_shape(raw):
        return _NOT_OURS
    # The non-JSON tokens that versions before 1.0 wrote for non-finite floats: such a
    # member is decoded while reading, so it can be skipped rather than fail when used.
    if raw.find(b"NaN") >= 0 or raw.find(b"Infinity") >= 0:
        return _DECODE_NOW
    return _DECODE_ON_USE


class _SkipLog:
    """The warnings about the members one read skips, at most a few lines per read.

    A set full of foreign members (or a page of them read every second by a polling
    client) would otherwise flood the log with one line per member.
    """

    #: Members logged one by one per read; the rest are counted in one last line.
    LOGGED_ONE_BY_ONE = 10

    def __init__(self, key: str) -> None:
        self.key = key
        self.count = 0

    def add(self, member: bytes | str, why: str) -> None:
        """Count a skipped member; log it while under ``LOGGED_ONE_BY_ONE``."""
        self.count += 1
        if self.count <= self.LOGGED_ONE_BY_ONE:
            # %r and a bounded length: members are untrusted, and so is a pk in a key.
            logger.warning("Skipped a member of %r %.200s: %.80r", self.key, why, member)

    def close(self) -> None:
        """Log how many skipped members were not logged one by one."""
        unlogged = self.count - self.LOGGED_ONE_BY_ONE
        if unlogged > 0:
            logger.warning(
                "Skipped %d more members of %r (only the first %d of a read are logged).",
                unlogged,
                self.key,
                self.LOGGED_ONE_BY_ONE,
            )


#: Where a diff read lazily keeps ``(member, score, model, pk)`` until it is decoded.
_UNDECODED = "_undecoded"


def raw_size(diff: Diff) -> int:
    """About how many bytes ``diff``'s member holds: its length while it is still
    undecoded, else the length of its data's JSON."""
    undecoded = diff.__dict__.get(_UNDECODED)
    if undecoded is not None:
        return len(undecoded[0])
    try:
        return len(encode_data(diff.data))
    except (TypeError, ValueError):
        return 0


def _decode(member: bytes | str, score: float, model: str | None, pk: Any) -> dict[str, Any]:
    """The attributes of the diff stored as ``member`` with ``score``.

    Raises ``ValueError`` (and only that) when the member is not strict JSON with our keys.
    """
    payload = parse_strict_json(member)
    if type(payload) is dict and "f" in payload and "data" not in payload:
        payload = _expanded(payload, model, pk)
    if type(payload) is not dict or "data" not in payload or "created" not in payload:
        msg = f"member lacks the keys {_REQUIRED_KEYS}"
        raise ValueError(msg)
    _check_head(payload)
    get = payload.get
    return {
        "data": payload["data"],
        "created": payload["created"],
        "timestamp": _original_time(payload, score),
        "deleted": get("deleted") is True,
        "id": get("id"),
        "pk": get("pk", pk),
        "model": get("m", model),
        "cursor": repr(float(score)),  # diffs.cursors.encode_cursor(), inlined
        "holder_pk": pk,
        "superseded": False,
        "context": _object_at(payload, "c"),
        "old": _object_at(payload, "o"),
    }


def _expanded(payload: dict[str, Any], model: str | None, pk: Any) -> dict[str, Any]:
    """A compact member's payload as the full format has it (see
    :func:`build_compact_member`): the data is the key's own object, ``model`` and
    ``pk``, with the fields of ``"f"``; ``created`` is false when left out."""
    if model is None or pk is None or "m" in payload or "id" not in payload:
        msg = "compact member read without its object (model and pk)"
        raise ValueError(msg)
    fields = payload.pop("f")
    if type(fields) is not dict:
        msg = f"member has f={fields!r:.40}, not an object"
        raise ValueError(msg)
    payload.setdefault("created", False)
    payload["data"] = [{"model": model, "pk": serialized_pk(pk), "fields": fields}]
    return payload


def serialized_pk(pk: Any) -> Any:
    """``pk`` (the pk field's Python value) as Django's serializer writes it in data: an
    ``int`` as is, anything else (a UUID, text) as text. A pk of another type (a date,
    a Decimal) never gets a compact member (``diffs.payload``)."""
    return pk if type(pk) is int else str(pk)


def _object_at(payload: dict[str, Any], key: str) -> dict[str, Any]:
    value = payload.get(key)
    if value is None:
        return {}
    if type(value) is not dict:
        msg = f"member has {key}={value!r:.40}, not an object"
        raise ValueError(msg)
    return value


def _check_head(payload: dict[str, Any]) -> None:
    """Refuse head values of types django-diffs never writes.

    Readers rely on them (``created`` a bool or None, ``id`` and the model label
    ``m`` strings); a duplicate key (the last one wins) could slip one past the head
    check of :func:`looks_like_member`.
    """
    created = payload["created"]
    if created is not None and type(created) is not bool:
        msg = f"member has created={created!r:.40}, not true, false or null"
        raise ValueError(msg)
    for key in ("id", "m"):
        value = payload.get(key)
        if value is not None and type(value) is not str:
            msg = f"member has {key}={value!r:.40}, not a string"
            raise ValueError(msg)


def parse_strict_json(document: bytes | str) -> Any:
    """Decode one JSON document strictly (RFC 8259); raises ``ValueError`` if it is not one.

    Python's ``json`` accepts more than JSON; this refuses what a strict reader (DRF's
    renderer, a browser) would choke on once it is in ``Diff.data``: the ``NaN``,
    ``Infinity`` and ``-Infinity`` tokens (which versions before 1.0 wrote for
    non-finite floats), numbers too large for a float (``1e999`` would be infinity),
    text that is not UTF-8 or holds a lone surrogate (escaped or not), and nesting
    deeper than Python's recursion limit. Whitespace around the document is refused
    too: members have none.
    """
    if isinstance(document, bytes):
        # Decoding first is faster than handing json the bytes (it sniffs their
        # encoding); UTF-8 decoding refuses surrogates.
        text = document.decode("utf-8")
    else:
        text = document
        if not text.isascii() and not _is_utf8(text):
            msg = "the text holds a lone surrogate, which is not Unicode text"
            raise ValueError(msg)
    try:
        value, end = _STRICT_DECODER.raw_decode(text)
        # An escape (\ud800) is the other way a surrogate gets into decoded text; text
        # without a backslash-u holds none, so only such text pays for this check.
        escaped_surrogate = "\\u" in text and not _is_utf8(_ENCODER.encode(value))
    except RecursionError as error:
        msg = f"JSON nested too deeply ({error})"
        raise ValueError(msg) from error
    if end != len(text):
        msg = f"Extra data after the JSON document: char {end}"
        raise ValueError(msg)
    if escaped_surrogate:
        msg = "a JSON string holds an escaped lone surrogate, which is not Unicode text"
        raise ValueError(msg)
    return value


def _parse_given_json(text: str) -> Any:
    """Decode JSON given to ``Diff(data=...)``, non-finite numbers as their names."""
    try:
        return _GIVEN_JSON_DECODER.decode(text)
    except RecursionError as error:
        msg = f"JSON nested too deeply ({error})"
        raise ValueError(msg) from error


def _float_or_name(text: str) -> float | str:
    value = float(text)
    return value if math.isfinite(value) else _non_finite_name(value)


def _constant_name(name: str) -> str:
    return name  # "NaN", "Infinity" or "-Infinity": the names encode_data() writes


_GIVEN_JSON_DECODER = json.JSONDecoder(parse_constant=_constant_name, parse_float=_float_or_name)


def _refuse_constant(name: str) -> Any:
    msg = f"{name} is not JSON (JSON has no NaN or infinity)"
    raise ValueError(msg)


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isfinite(value):
        return value
    msg = f"the number {text:.24} is too large for a float"
    raise ValueError(msg)


# The hooks only run for NaN/Infinity tokens and numbers with a fraction or exponent:
# whole numbers and everything else decode at the speed of json.loads().
_STRICT_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)


class _DecodedOnUse:
    """A field of a lazily read Diff: the first read decodes the member into ``__dict__``.

    A non-data descriptor, so a value in the instance ``__dict__`` (every Diff built by
    ``__init__``, ``stored()`` or an earlier decode) wins and this is never called.
    """

    def __init__(self, name: str, default: Any) -> None:
        self.name = name
        self.default = default

    def __get__(self, instance: Diff | None, owner: type | None = None) -> Any:
        if instance is None:
            return self.default
        values = instance.__dict__
        undecoded = values.get(_UNDECODED)
        if undecoded is not None:
            member, score, model, pk = undecoded
            try:
                decoded = _decode(member, score, model, pk)
            except ValueError as error:  # UnicodeDecodeError is one too
                msg = f"A diff of {model} pk={pk!r} is not valid django-diffs JSON: {error}"
                raise ValueError(msg) from error
            # setdefault: when two threads decode at once, the first one's objects stay
            # (a reference one of them already holds to .data keeps meaning this diff).
            for name, value in decoded.items():
                values.setdefault(name, value)
            # Dropped only after the values: another thread that finds no member here
            # finds the decoded values.
            values.pop(_UNDECODED, None)
        try:
            return values[self.name]
        except KeyError:
            raise AttributeError(self.name) from None


# Installed after @dataclass has read the class defaults, so it sees plain defaults.
for _field in fields(Diff):
    setattr(Diff, _field.name, _DecodedOnUse(_field.name, getattr(Diff, _field.name, None)))


def _original_time(payload: dict[str, Any], score: float) -> float:
    late = payload.get("t")
    if isinstance(late, (int, float)) and not isinstance(late, bool):
        try:
            return float(late)
        except OverflowError:  # a whole number too large for a float
            msg = f"member has t={late!r:.24}, not a time in epoch milliseconds"
            raise ValueError(msg) from None
    return float(score)
