"""Turning a saved or deleted instance into the diff to store, through the model hooks.

The hooks a registered model may define (all optional):

* ``send_diff()``: return ``False`` (exactly) to record nothing for this change.
* ``serialize_diff(dirty_fields, created=...)``: return the diff's data. ``dirty_fields``
  maps each changed field to its old value (on create and delete: to its current one).
* ``get_diff_parent()``: return a model instance (``Question(id=self.question_id)`` is
  enough, no query needed) whose sorted set receives the diff instead of this one's.
* ``_last_save_at``: an attribute (epoch ms, or a datetime) used as the diff's score.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import math
from collections.abc import Iterable
from types import SimpleNamespace
from typing import Any

from django.db import models
from django.utils.encoding import is_protected_type

from diffs.clock import datetime_to_ms, fixed_score_problem
from diffs.context import current_json as current_context_json
from diffs.delivery import BIRTH_ONLY, OutgoingDiff
from diffs.diff import (
    build_compact_member,
    build_member,
    encode_data,
    new_diff_id,
    serialized_pk,
)
from diffs.exceptions import HookError
from diffs.keys import KeyLayout, feed_member, model_label, normalize_pk, pk_value
from diffs.registry import MASKED, options_of
from diffs.settings import get_settings

logger = logging.getLogger("diffs")

#: Instance attribute: ``{field name: [related pks]}``, the new list of a many-to-many
#: field for the diff being built (set by ``diffs.m2m``, read by :func:`default_data`).
M2M_VALUES_ATTRIBUTE = "_diffs_m2m_values"


def build_diff(
    instance: models.Model,
    changes: dict[str, Any],
    *,
    layout: KeyLayout,
    created: bool,
    deleted: bool = False,
    max_bytes: int | None = None,
) -> OutgoingDiff | None:
    """Run the hooks for one change and return what to write, or None to skip it.

    The diff goes to the keys of ``layout`` (see ``diffs.layout.current_layout``). A
    diff whose member exceeds ``max_bytes`` is refused: logged as an error naming
    the model, pk and size, and not written (the save itself goes on). When the diff of
    a creation is skipped or refused, what is returned records the object's birth only
    (:data:`BIRTH_ONLY`): a row created on the pk of a deleted one must never show that
    row's history, with or without a diff of its own.
    """
    diff = _diff_of(
        instance, changes, layout=layout, created=created, deleted=deleted, max_bytes=max_bytes
    )
    if diff is None and created:
        return _birth_only(instance, layout)
    return diff


def _diff_of(
    instance: models.Model,
    changes: dict[str, Any],
    *,
    layout: KeyLayout,
    created: bool,
    deleted: bool = False,
    max_bytes: int | None = None,
) -> OutgoingDiff | None:
    # What build_diff returns when the hooks give a diff to write, else None.
    model = type(instance)
    options = options_of(model)
    if options.selects:
        changes = {name: old for name, old in changes.items() if options.tracks(name)}
        if not changes and not created:
            logger.debug("Skipped diff of %s pk=%s: no tracked field changed.", model, instance.pk)
            return None
    if _send_diff_refuses(instance):
        logger.debug("Skipped diff of %s pk=%s: send_diff() returned False.", model, instance.pk)
        return None
    if options.mask:
        changes = {name: MASKED if name in options.mask else old for name, old in changes.items()}
    data = _data_for(instance, changes, created=created, mask=options.mask)
    if not data:
        logger.debug("Skipped diff of %s pk=%s: its data was empty.", model, instance.pk)
        return None
    fixed = _fixed_timestamp(instance)
    if _unreadable_score(instance, fixed):
        return None
    target = _target_for(instance)
    target_pk = normalize_pk(type(target), target.pk)
    describes = None if target is instance else (model_label(model), instance.pk)
    diff_id = new_diff_id()
    old_json = None if created or not options.old_values else _old_json(instance, changes)
    compact = describes is None and get_settings().member_format == "compact"
    fields = _own_fields(instance, data) if compact else None
    if fields is not None:
        member = build_compact_member(
            diff_id,
            _encode(instance, fields),
            created,
            deleted,
            old_json=old_json,
            context_json=current_context_json(),
        )
    else:
        member = build_member(
            diff_id,
            _encode(instance, data),
            created,
            deleted,
            describes,
            old_json=old_json,
            context_json=current_context_json(),
        )
    if _too_large(instance, member, max_bytes):
        return None
    object_base, feed = _keys_of(type(target), layout)
    return OutgoingDiff(
        key=object_base + target_pk,
        member=member,
        feed_key=feed,
        feed_member=feed_member(diff_id, target_pk),
        score=fixed,
        label=model_label(model),
        object_pk=target_pk if target is instance else normalize_pk(model, instance.pk),
    )


def _own_fields(instance: models.Model, data: Any) -> Any:
    """The ``fields`` of ``data`` when it is exactly what a compact member can stand for
    (``diffs.diff.build_compact_member``): the default serializer's one object, of
    ``instance``'s own concrete model and pk, as a read rebuilds them; else None."""
    if type(data) is not list or len(data) != 1 or type(data[0]) is not dict:
        return None
    found = data[0]
    model = type(instance)
    if found.keys() != {"model", "pk", "fields"} or type(found["fields"]) is not dict:
        return None
    if model._meta.proxy or found["model"] != model_label(model):
        return None
    expected = serialized_pk(pk_value(model, instance.pk))
    if type(found["pk"]) is not type(expected) or found["pk"] != expected:
        return None
    return found["fields"]


def _birth_only(instance: models.Model, layout: KeyLayout) -> OutgoingDiff | None:
    """The write that records ``instance``'s creation without a diff (None for a child
    whose diffs go to a parent: it has no history of its own to hide)."""
    if _target_for(instance) is not instance:
        return None
    model = type(instance)
    pk = normalize_pk(model, instance.pk)
    object_base, feed = _keys_of(model, layout)
    return OutgoingDiff(
        key=object_base + pk,
        member=BIRTH_ONLY,
        feed_key=feed,
        feed_member=new_diff_id(),
        score=None,
        label=model_label(model),
        object_pk=pk,
    )


@functools.lru_cache(maxsize=1024)
def _keys_of(model: type[models.Model], layout: KeyLayout) -> tuple[str, str]:
    # (object key without the pk, feed key): the same for every diff of a model.
    return layout.object_key_base(model), layout.feed_key(model)


def _too_large(instance: models.Model, member: str, max_bytes: int | None) -> bool:
    # Characters first: a member cannot take fewer bytes than characters.
    if max_bytes is None or len(member) <= max_bytes // 4:
        return False
    size = len(member.encode("utf-8"))
    if size <= max_bytes:
        return False
    _log_refused(
        instance,
        f"it takes {size} bytes, more than DIFFS_SETTINGS['max_diff_bytes'] ({max_bytes})",
        f"Raise max_diff_bytes, or make {type(instance).__name__}.serialize_diff() return "
        "less (e.g. the names of large fields instead of their values).",
    )
    return True


def _send_diff_refuses(instance: models.Model) -> bool:
    hook = getattr(instance, "send_diff", None)
    # Only the identity False skips: None, 0 and "" do not (as in 0.1.16).
    return hook is not None and hook() is False


def _data_for(
    instance: models.Model, changes: dict[str, Any], *, created: bool, mask: frozenset[str]
) -> Any:
    hook = getattr(instance, "serialize_diff", None)
    if hook is None:
        data = default_data(instance, list(changes))
        if mask:
            values = data[0]["fields"]
            for name in mask & values.keys():
                values[name] = MASKED
        return data
    data = hook(changes, created=created)
    if isinstance(data, str) and data:
        data = _parse_json_text(type(instance), data)
    return data


def default_data(instance: models.Model, fields: Iterable[str] | None) -> list[dict[str, Any]]:
    """The default serializer's ``[{"model", "pk", "fields"}]`` for ``fields`` (None: all).

    Values are those of Django's own "python" serializer, field by field (a value of a
    type JSON keeps as it is, else the field's ``value_to_string()``), so they match
    ``serializers.serialize("json", ...)`` once encoded; it is rebuilt here because the
    serializer's per-object machinery cost more than the rest of a diff. Unlike
    ``serialize()``, which writes a multi-table child's own fields only, every concrete
    field is considered, so a change to an inherited field is not reported as
    ``"fields": {}``.
    """
    model = type(instance)
    wanted = None if fields is None else frozenset(fields)
    values = {}
    for field in _serialized_fields(model):
        if wanted is None or field.name in wanted:
            values[field.name] = _serialized_value(instance, field)
    if wanted is not None and M2M_VALUES_ATTRIBUTE in instance.__dict__:
        # A many-to-many change: the new list of related pks (Django's form).
        for name, related in instance.__dict__[M2M_VALUES_ATTRIBUTE].items():
            if name in wanted:
                values[name] = related
    pk_field = model._meta.pk
    pk = instance.pk if pk_field is None else _serialized_value(instance, pk_field)
    return [{"model": model._meta.label_lower, "pk": pk, "fields": values}]


@functools.cache
def _serialized_fields(model: type[models.Model]) -> tuple[Any, ...]:
    # The serializer's choice: concrete fields that serialize, minus the primary key.
    return tuple(
        field
        for field in model._meta.concrete_fields
        if getattr(field, "serialize", True) and not field.primary_key
    )


def _old_json(instance: models.Model, changes: dict[str, Any]) -> str:
    """The old values of the changed fields, encoded: what ``default_data`` would have
    shown for them before the change (a masked field's is ``MASKED`` already)."""
    old = {
        field.name: _old_value(field, changes[field.name])
        for field in _serialized_fields(type(instance))
        if field.name in changes
    }
    for name in instance.__dict__.get(M2M_VALUES_ATTRIBUTE, ()):
        if name in changes:
            old[name] = changes[name]  # a list of pks, or MASKED
    return _encode(instance, old)


def _old_value(field: Any, value: Any) -> Any:
    if value is MASKED:
        return MASKED
    # value_to_string() reads the value from an object's attribute: lend it one.
    return _serialized_value(SimpleNamespace(**{field.attname: value}), field)


def _serialized_value(instance: Any, field: Any) -> Any:
    # ``instance`` is a model instance, or an object holding one old value as the
    # field's attribute (value_to_string() reads nothing else).
    value = field.value_from_object(instance)
    if not is_protected_type(value):
        value = field.value_to_string(instance)
    if isinstance(field, models.JSONField) and field.encoder is not None:
        # A JSONField may hold values only its own encoder knows (sets, say): encode
        # them the way the database write did, so the member encoder gets plain JSON.
        value = json.loads(json.dumps(value, cls=field.encoder))
    return value


def _parse_json_text(model: type[models.Model], text: str) -> Any:
    # 0.1.16 read a str returned by serialize_diff as a JSON document; so do we.
    try:
        return json.loads(text)
    except ValueError as error:
        msg = (
            f"{model.__name__}.serialize_diff() returned a str that is not JSON ({error}). "
            "Return the data itself (a dict or list), or a valid JSON document."
        )
        raise HookError(msg) from error


def _encode(instance: models.Model, data: Any) -> str:
    try:
        return encode_data(data)
    except (TypeError, ValueError) as error:
        name = type(instance).__name__
        if hasattr(instance, "serialize_diff"):
            msg = (
                f"{name}.serialize_diff() returned data JSON cannot hold ({error}). Return "
                "dicts, lists, strings, numbers, booleans and None; dates, times, "
                "Decimals and UUIDs are converted for you."
            )
        else:
            msg = (
                f"The default serializer could not encode a diff of {name} ({error}). "
                f"Define {name}.serialize_diff(dirty_fields, created=False) to return "
                "JSON-compatible data."
            )
        raise HookError(msg) from error


def _target_for(instance: models.Model) -> models.Model:
    hook = getattr(instance, "get_diff_parent", None)
    if hook is None:
        return instance
    parent = hook()
    if not parent:
        return instance  # 0.1.16 treated a falsy parent as "no parent"
    name = type(instance).__name__
    if not isinstance(parent, models.Model):
        msg = (
            f"{name}.get_diff_parent() returned {type(parent).__name__}, not a model "
            "instance. Return the parent object, e.g. Question(id=self.question_id)."
        )
        raise HookError(msg)
    if parent.pk is None:
        msg = (
            f"{name}.get_diff_parent() returned a {type(parent).__name__} without a primary "
            "key, so its diffs would have no home. Return a saved parent, or one built "
            "with its pk, e.g. Question(id=self.question_id)."
        )
        raise HookError(msg)
    return parent


def _fixed_timestamp(instance: models.Model) -> float | None:
    """``_last_save_at`` as epoch ms (None when unset); raises HookError for a value of
    the wrong type. A datetime too far from 1970 for a float becomes -inf/+inf, which
    is then refused like any score no read can return."""
    value = getattr(instance, "_last_save_at", None)
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        try:
            return datetime_to_ms(value)
        except (OverflowError, ValueError):  # e.g. datetime.min in a zone west of UTC
            return -math.inf if value.year < 1970 else math.inf
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    what = f"{type(instance).__name__}._last_save_at"
    msg = f"{what} is {value!r}; it must be epoch milliseconds (a number) or a datetime."
    raise HookError(msg)


def _unreadable_score(instance: models.Model, score: float | None) -> bool:
    # Like an oversized diff: refused with an ERROR, and the save goes on.
    if score is None:
        return False
    problem = fixed_score_problem(score, get_settings().max_element_age)
    if problem is None:
        return False
    _log_refused(
        instance,
        f"its _last_save_at is {score!r}, and {problem}",
        f"Set {type(instance).__name__}._last_save_at to the time of the change (epoch ms "
        "or a datetime), or leave it unset to use the Redis clock.",
    )
    return True


def _log_refused(instance: models.Model, why: str, fix: str) -> None:
    # A refused diff is an ERROR naming model, pk and why; the save itself goes on.
    logger.error(
        "Refused the diff of %s pk=%s: %s. The change itself was saved; clients will not "
        "see it. %s",
        model_label(type(instance)),
        instance.pk,
        why,
        fix,
    )
