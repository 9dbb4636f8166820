"""``@diffs.register``: which models are tracked, and wiring them up."""

from __future__ import annotations

import threading
from typing import Any, TypeVar

from django.db import models

from diffs import recording, tracking
from diffs.exceptions import RegistrationError
from diffs.managers import DiffModelDescriptor, DiffModelManager

_M = TypeVar("_M", bound=type[models.Model])

DESCRIPTOR_NAME = "diffs"

_lock = threading.Lock()
_registry: dict[str, type[models.Model]] = {}


def register(model: _M) -> _M:
    """Record every change to ``model`` in Redis; returns the class, so it decorates.

    Works at import time (in ``models.py``, before the app registry is ready) and
    later; registering a model twice is harmless. The model gains django-dirtyfields'
    ``get_dirty_fields()``/``is_dirty()`` if it has no ``get_dirty_fields`` of its own,
    and a ``diffs`` attribute: ``Model.diffs`` is a :class:`DiffModelManager`,
    ``instance.diffs`` the object's list of :class:`~diffs.Diff`, oldest first.

    Raises:
        RegistrationError: (a ``TypeError``) for a non-model, an abstract model, or a
            model whose ``diffs`` attribute is already something else.
    """
    _validate(model)
    with _lock:
        tracking.install(model)
        setattr(model, DESCRIPTOR_NAME, DiffModelDescriptor(DiffModelManager(model)))
        recording.connect(model)
        _registry[model._meta.label_lower] = model
    return model


def unregister(model: type[models.Model]) -> None:
    """Stop recording changes to ``model`` (mostly for tests); unknown models are ignored."""
    with _lock:
        if _registry.get(model._meta.label_lower) is not model:
            return
        del _registry[model._meta.label_lower]
        recording.disconnect(model)
        tracking.uninstall_receivers(model)
        if isinstance(vars(model).get(DESCRIPTOR_NAME), DiffModelDescriptor):
            delattr(model, DESCRIPTOR_NAME)


def is_registered(model: type[models.Model]) -> bool:
    """True when ``model`` itself (not just a parent class) is registered."""
    return _registry.get(model._meta.label_lower) is model


def registered_models() -> list[type[models.Model]]:
    """Every registered model, in registration order."""
    return list(_registry.values())


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
    existing = _raw_attribute(model, DESCRIPTOR_NAME)
    if existing is not None and not isinstance(existing, DiffModelDescriptor):
        msg = (
            f"{model.__name__} already has an attribute {DESCRIPTOR_NAME!r} "
            f"({type(existing).__name__}), which @diffs.register would replace. Rename it."
        )
        raise RegistrationError(msg)


def _raw_attribute(model: type[models.Model], name: str) -> Any:
    # Looked up in the class dicts: getattr() would run our own descriptor.
    for klass in model.__mro__:
        if name in vars(klass):
            return vars(klass)[name]
    return None
