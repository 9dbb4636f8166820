"""``@diffs.register`` and ``diffs.unregister``: wiring a model up, and undoing it."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar, overload

from django.db import models
from django.db.models.signals import class_prepared
from django.dispatch import receiver

from diffs import bulk, m2m, recording, registry, tracking
from diffs.exceptions import RegistrationError
from diffs.managers import DiffModelDescriptor, DiffModelManager
from diffs.registry import DESCRIPTOR_NAME, is_registered, raw_attribute

_M = TypeVar("_M", bound=type[models.Model])


@overload
def register(
    model: _M,
    *,
    old_values: bool = False,
    fields: Iterable[str] | None = None,
    exclude: Iterable[str] | None = None,
    mask: Iterable[str] | None = None,
) -> _M: ...


@overload
def register(
    model: None = None,
    *,
    old_values: bool = False,
    fields: Iterable[str] | None = None,
    exclude: Iterable[str] | None = None,
    mask: Iterable[str] | None = None,
) -> Callable[[_M], _M]: ...


def register(
    model: _M | None = None,
    *,
    old_values: bool = False,
    fields: Iterable[str] | None = None,
    exclude: Iterable[str] | None = None,
    mask: Iterable[str] | None = None,
) -> _M | Callable[[_M], _M]:
    """Record every change to ``model`` in Redis; returns the class, so it decorates.

    Works at import time (in ``models.py``, before the app registry is ready) and
    later, as ``@diffs.register`` or ``@diffs.register(...)``; registering a model again
    is harmless (its options are the last ones given). ``old_values=True`` also stores,
    for each update and delete, the old value of each changed field (``Diff.old``).
    ``fields`` (the only fields tracked) or ``exclude`` (fields not tracked) limit what
    is recorded: a save that changes only untracked fields records nothing. ``mask``
    records that a field changed, never its value (``"[masked]"`` in ``data`` and
    ``old``). Unknown field names are the system check ``diffs.E033``.

    The model gains django-dirtyfields' ``get_dirty_fields()``/``is_dirty()`` if it
    has no ``get_dirty_fields`` of its own, and a ``diffs`` attribute:
    ``Model.diffs`` is a :class:`DiffModelManager`, ``instance.diffs`` the object's list
    of :class:`~diffs.Diff`, oldest first. Saves through proxy models of a registered
    model are recorded too, under the same key.

    Raises:
        RegistrationError: (a ``TypeError``) for a non-model, an abstract model, or a
            model whose ``diffs`` attribute is already something else.
    """
    given = {"old_values": old_values, "fields": fields, "exclude": exclude, "mask": mask}
    if model is None:
        asked = any(value not in (None, False) for value in given.values())
        return functools.partial(register, **given) if asked else register
    _validate(model)
    options = _options(model, old_values=old_values, fields=fields, exclude=exclude, mask=mask)
    with registry.lock:
        setattr(model, DESCRIPTOR_NAME, DiffModelDescriptor(DiffModelManager(model)))
        registry.add(model, options)
        for tracked in _with_proxies(model):
            _wire(tracked)
    return model


def unregister(model: type[models.Model]) -> None:
    """Stop recording changes to ``model`` (mostly for tests); unknown models are ignored."""
    with registry.lock:
        if not registry.remove(model):
            return
        for tracked in _with_proxies(model):
            if not is_registered(tracked):
                recording.disconnect(tracked)
                tracking.uninstall_receivers(tracked)
        if isinstance(vars(model).get(DESCRIPTOR_NAME), DiffModelDescriptor):
            delattr(model, DESCRIPTOR_NAME)


def _wire(model: type[models.Model]) -> None:
    # Recording first: its post_save receiver must run before the snapshot is reset,
    # so that hooks calling self.get_dirty_fields() still see this save's changes.
    recording.connect(model)
    tracking.install(model)
    bulk.install(model)
    m2m.connect(model)


def _with_proxies(model: type[models.Model]) -> Iterator[type[models.Model]]:
    yield model
    for subclass in model.__subclasses__():
        if getattr(subclass, "_meta", None) is not None and subclass._meta.proxy:
            yield from _with_proxies(subclass)


@receiver(class_prepared, dispatch_uid="diffs.wiring.proxies")
def _wire_new_proxy(sender: type[models.Model], **kwargs: Any) -> None:
    """A proxy declared after its concrete model was registered is recorded too."""
    if sender._meta.proxy and is_registered(sender):
        with registry.lock:
            _wire(sender)


def _options(
    model: type[models.Model],
    *,
    old_values: object,
    fields: object,
    exclude: object,
    mask: object,
) -> registry.Options:
    """The options of ``@diffs.register(...)`` for ``model``, checked (names of fields are
    checked by diffs.E033 once the models are loaded)."""
    name = model.__name__
    if not isinstance(old_values, bool):
        msg = f"@diffs.register(old_values=...) of {name} takes True or False."
        raise RegistrationError(msg)
    if fields is not None and exclude is not None:
        msg = f"@diffs.register() of {name} takes fields=[...] or exclude=[...], not both."
        raise RegistrationError(msg)
    return registry.Options(
        old_values=old_values,
        fields=None if fields is None else _names(name, "fields", fields),
        exclude=_names(name, "exclude", exclude),
        mask=_names(name, "mask", mask),
    )


def _names(model_name: str, option: str, value: object) -> frozenset[str]:
    if value is None:
        return frozenset()
    if isinstance(value, str) or not isinstance(value, (list, tuple, set, frozenset)):
        msg = (
            f"@diffs.register({option}=...) of {model_name} takes a list of field names, "
            f"not {value!r:.60}."
        )
        raise RegistrationError(msg)
    if not all(isinstance(item, str) for item in value):
        msg = f"@diffs.register({option}=...) of {model_name} takes field names (strings)."
        raise RegistrationError(msg)
    return frozenset(value)


def _validate(model: Any) -> None:
    if not (
        isinstance(model, type) and issubclass(model, models.Model) and hasattr(model, "_meta")
    ):
        msg = (
            f"@diffs.register expects a Django model class, got {model!r}. "
            "Put the decorator directly above a 'class ...(models.Model):' statement."
        )
        raise RegistrationError(msg)
    if model._meta.abstract:
        msg = (
            f"@diffs.register cannot track the abstract model {model.__name__}: abstract "
            "models have no rows. Register each concrete subclass instead."
        )
        raise RegistrationError(msg)
    existing = raw_attribute(model, DESCRIPTOR_NAME)
    if existing is not None and not isinstance(existing, DiffModelDescriptor):
        msg = (
            f"{model.__name__} already has an attribute {DESCRIPTOR_NAME!r} "
            f"({type(existing).__name__}), which @diffs.register would replace. Rename it."
        )
        raise RegistrationError(msg)
