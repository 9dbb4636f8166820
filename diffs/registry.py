"""Which models are recorded: the registry's data and the questions asked of it.

:mod:`diffs.wiring` fills it (``@diffs.register``); everything else only reads it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from typing import Any

from django.db import models

#: The attribute ``@diffs.register`` puts on a model (``Model.diffs``).
DESCRIPTOR_NAME = "diffs"

#: Held while the registry and the models' wiring change together.
lock = threading.RLock()
_registry: dict[str, type[models.Model]] = {}


#: What a masked field's value is replaced by, in ``data`` and in ``old``.
MASKED = "[masked]"


@dataclass(frozen=True)
class Options:
    """What ``@diffs.register(...)`` asked for a model."""

    #: Store the old value of each changed field of an update or delete (``Diff.old``).
    old_values: bool = False
    #: The only fields tracked (None: all but ``exclude``).
    fields: frozenset[str] | None = None
    #: Fields never tracked.
    exclude: frozenset[str] = frozenset()
    #: Fields whose change is recorded without their value (``MASKED`` instead).
    mask: frozenset[str] = frozenset()

    def tracks(self, name: str) -> bool:
        """True when a change of the field ``name`` is recorded."""
        return (self.fields is None or name in self.fields) and name not in self.exclude

    @property
    def selects(self) -> bool:
        """True when some fields are not tracked (``fields`` or ``exclude`` given)."""
        return self.fields is not None or bool(self.exclude)

    def named_fields(self) -> frozenset[str]:
        """Every field name these options mention (for the system check)."""
        return (self.fields or frozenset()) | self.exclude | self.mask


#: The options of a model registered without any.
DEFAULT_OPTIONS = Options()
_options: dict[str, Options] = {}


def add(model: type[models.Model], options: Options = DEFAULT_OPTIONS) -> None:
    """Record ``model`` as registered with ``options`` (under its label; a later class
    replaces it)."""
    _registry[model._meta.label_lower] = model
    _options[model._meta.label_lower] = options
    _options_by_class.clear()


def options_of(model: type[models.Model]) -> Options:
    """The options of the registered model whose changes ``model`` records (a proxy has
    its concrete model's); the defaults for a model that is not registered."""
    found = _options_by_class.get(model)
    if found is None:
        ancestor = registered_ancestor(model)
        label = None if ancestor is None else ancestor._meta.label_lower
        found = _options.get(label or "", DEFAULT_OPTIONS)
        # A mask is never lost by registering a proxy or a multi-table child on its
        # own: every registered class above it adds its masked fields.
        masks = _inherited_masks(model)
        if masks - found.mask:
            found = replace(found, mask=found.mask | masks)
        _options_by_class[model] = found
    return found


def _inherited_masks(model: type[models.Model]) -> frozenset[str]:
    masks: set[str] = set()
    for klass in model.__mro__:
        label = getattr(getattr(klass, "_meta", None), "label_lower", "")
        if label and _registry.get(label) is klass:
            masks |= _options.get(label, DEFAULT_OPTIONS).mask
    return frozenset(masks)


#: options_of()'s answers, per class saved (cleared whenever the registry changes).
_options_by_class: dict[type[models.Model], Options] = {}


def remove(model: type[models.Model]) -> bool:
    """Forget ``model``; False when it was not the registered class for its label."""
    if _registry.get(model._meta.label_lower) is not model:
        return False
    del _registry[model._meta.label_lower]
    _options.pop(model._meta.label_lower, None)
    _options_by_class.clear()
    return True


def is_registered(model: type[models.Model]) -> bool:
    """True when changes saved through ``model`` are recorded: it is registered, or it is
    a proxy of a registered model."""
    return registered_ancestor(model) is not None


def registered_models() -> list[type[models.Model]]:
    """Every model passed to ``@diffs.register``, in registration order."""
    return list(_registry.values())


def registered_ancestor(model: type[models.Model]) -> type[models.Model] | None:
    """The registered class whose changes ``model`` records: itself, or the registered
    model it is a proxy of (None when there is none)."""
    concrete = model._meta.concrete_model
    for klass in model.__mro__:
        label = getattr(getattr(klass, "_meta", None), "label_lower", "")
        if _registry.get(label) is klass and klass._meta.concrete_model is concrete:
            return klass
    return None


def raw_attribute(model: type[models.Model], name: str) -> Any:
    """Look ``name`` up in the class dicts (getattr() would run our own descriptor)."""
    for klass in model.__mro__:
        if name in vars(klass):
            return vars(klass)[name]
    return None
