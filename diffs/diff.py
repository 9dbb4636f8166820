"""The ``Diff`` value object and its Redis member encoding.

A member is compact JSON: ``{"id":"…","created":false,"data":…}``, with
``"deleted":true`` added for deletions only, and ``"m"``/``"pk"`` (the model label and
pk of the object the diff describes) only when that is not the key's own object, as
for a child whose ``get_diff_parent()`` sent it to its parent. ``id`` is random and
unique, so two identical changes are two members (0.1.16 collapsed them into one).
``data`` comes last so the encoder can splice in data that was already encoded once.

A diff that reached Redis late (retried after an outage, or recovered from the
outbox) also carries ``"t"``: the epoch milliseconds at which its change committed.
Its score stays the time it arrived, so cursors still see every diff exactly once,
and ``Diff.timestamp`` gives the original time.
"""

from __future__ import annotations

import json
import os
import random
import re
from dataclasses import dataclass, field, fields
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder

from diffs.clock import now_ms

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
# Encoders keep no state between calls, so threads can share it.
_ENCODER = DjangoJSONEncoder(separators=(",", ":"), ensure_ascii=False)
_JSON_CONSTANTS = {True: "true", False: "false", None: "null"}


def encode_data(data: Any) -> str:
    """Encode diff data as compact JSON; raises ``TypeError``/``ValueError`` if it cannot."""
    return _ENCODER.encode(data)


def build_member(
    diff_id: str,
    data_json: str,
    created: bool | None,
    deleted: bool,
    describes: tuple[str, Any] | None = None,
) -> str:
    """Return the member text for already encoded ``data_json``.

    ``describes`` is ``(model label, pk)`` of the object the diff is about, when that
    is not the object whose set holds it.
    """
    # Written by hand: the id is hex, the flags are constants, and a json.dumps() of
    # the head cost as much as encoding the data.
    head = f'{{"id":"{diff_id}","created":{_JSON_CONSTANTS[created]}'
    if deleted:
        head += ',"deleted":true'
    if describes is not None:
        label, pk = describes
        head += f',"m":{encode_data(label)},"pk":{encode_data(pk)}'
    return f'{head},"data":{data_json}}}'


def with_original_time(member: str, committed_ms: float) -> str:
    """Return ``member`` with ``"t"`` (its change's commit time, epoch ms) added."""
    return f'{{"t":{round(committed_ms, 3)!r},{member[1:]}'


@dataclass(frozen=True)
class Diff:
    """One recorded change.

    Attributes:
        data: what the model's ``serialize_diff`` returned, or the default serializer's
            ``[{"model", "pk", "fields"}]`` list, as JSON gives it back.
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

    def __post_init__(self) -> None:
        # As in 0.1.16, a str is a JSON document (the default serializer's output).
        if isinstance(self.data, str):
            try:
                object.__setattr__(self, "data", json.loads(self.data))
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
        return build_member(self.id, encode_data(self.data), self.created, self.deleted)

    @classmethod
    def from_member(
        cls, member: bytes | str, score: float, model: str | None = None, pk: Any = None
    ) -> Diff:
        """Decode a member read from Redis; raises ``ValueError`` if it is not ours.

        ``model`` and ``pk`` describe the key's own object; a member that names another
        object (a child's diff in its parent's set) overrides them.
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
        that looks right but is not valid JSON raises ``ValueError`` when it is used.
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
}


def looks_like_member(member: bytes | str) -> bool:
    """Whether ``member`` has the shape of one django-diffs wrote, without decoding it.

    Members start exactly as :func:`build_member` writes them: ``{"id":"<id>",
    "created":true|false|null``, or with ``{"t":<ms>,`` before that for a late diff
    (see the module docstring); they end with ``}`` and hold a ``data`` key.
    """
    if isinstance(member, str):
        member = member.encode("utf-8", "surrogatepass")
    return (
        _MEMBER_HEAD.match(member) is not None and member.endswith(b"}") and b',"data":' in member
    )


_MEMBER_HEAD = re.compile(
    rb'\{(?:"t":-?[0-9][0-9.eE+-]*,)?"id":"[^"\\]*","created":(?:true|false|null)[,}]'
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


#: Where a diff read lazily keeps ``(member, score, model, pk)`` until it is decoded.
_UNDECODED = "_undecoded"


def _decode(member: bytes | str, score: float, model: str | None, pk: Any) -> dict[str, Any]:
    """The attributes of the diff stored as ``member`` with ``score``."""
    # Decoding first is faster than handing json the bytes (it sniffs their encoding).
    payload = json.loads(member.decode("utf-8") if isinstance(member, bytes) else member)
    if type(payload) is not dict or "data" not in payload or "created" not in payload:
        msg = f"member lacks the keys {_REQUIRED_KEYS}"
        raise ValueError(msg)
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
    }


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
        return float(late)
    return float(score)
