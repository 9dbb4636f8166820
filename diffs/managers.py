"""``Model.diffs``: the manager on the class, the object's diff list on an instance."""

from __future__ import annotations

import datetime as dt
from typing import Any, Generic, TypeVar, overload

import redis
from django.db import models

from diffs.clock import datetime_to_ms, now_ms
from diffs.connection import get_connection
from diffs.diff import Diff, new_diff_id
from diffs.keys import object_key
from diffs.settings import get_settings
from diffs.sortedset import DiffSortedSet

_M = TypeVar("_M", bound=models.Model)


class DiffModelManager(Generic[_M]):
    """Reads and writes the diffs of one registered model.

    It holds no connection and no prefix of its own: both are looked up on every call,
    so ``override_settings(DIFFS_SETTINGS=...)`` takes effect at once.
    """

    def __init__(self, model: type[_M]) -> None:
        self.model = model

    def __repr__(self) -> str:
        return f"<DiffModelManager for {self.model._meta.label}>"

    @property
    def db(self) -> redis.Redis:
        """The Redis client in use (kept from 0.1.16, where it was an attribute)."""
        return get_connection()

    @property
    def prefix(self) -> str:
        """The key prefix in use."""
        return get_settings().prefix

    def get_key(self, pk: Any, model_cls: type[models.Model] | None = None) -> str:
        """Return the Redis key of the object ``pk`` (of ``model_cls``, default this model)."""
        return object_key(self.prefix, model_cls or self.model, pk)

    def get_sortedset(self, pk: Any, model_cls: type[models.Model] | None = None) -> DiffSortedSet:
        """Return the sorted set holding the diffs of the object ``pk``."""
        return DiffSortedSet(self.get_key(pk, model_cls), get_connection())

    def get_by_object_id(self, pk: Any) -> list[Diff]:
        """Return the diffs of the object ``pk``, oldest first (any pk type works)."""
        return list(self.get_sortedset(pk))

    def create(
        self,
        data: Any = None,
        created: bool | None = None,
        pk: Any = None,
        model_cls: type[models.Model] | None = None,
        timestamp: float | dt.datetime | None = None,
        deleted: bool = False,
    ) -> Diff:
        """Store a diff for the object ``pk`` right away and return it.

        This is the low-level write (no hooks, no transaction); saves of registered
        models call it for you. ``timestamp`` is epoch ms or a datetime (default: now).
        Redis errors propagate, since the caller asked for this write explicitly.
        """
        if pk is None:
            msg = f"{self.model.__name__}.diffs.create() needs the pk of the object it describes."
            raise ValueError(msg)
        score = _score(timestamp)
        diff = Diff(data=data, created=created, timestamp=score, deleted=deleted, id=new_diff_id())
        self.get_sortedset(pk, model_cls).zadd({diff.to_member(): score})
        return diff


def _score(timestamp: float | dt.datetime | None) -> float:
    if timestamp is None:
        return now_ms()
    if isinstance(timestamp, dt.datetime):
        return datetime_to_ms(timestamp)
    return float(timestamp)


class DiffModelDescriptor(Generic[_M]):
    """``Model.diffs`` gives the manager; ``instance.diffs`` gives that object's diffs."""

    def __init__(self, manager: DiffModelManager[_M]) -> None:
        self.manager = manager

    @overload
    def __get__(self, instance: None, owner: type[_M]) -> DiffModelManager[_M]: ...

    @overload
    def __get__(self, instance: _M, owner: type[_M]) -> list[Diff]: ...

    def __get__(self, instance: _M | None, owner: type[_M]) -> DiffModelManager[_M] | list[Diff]:
        if instance is None:
            return self.manager
        if instance.pk is None:
            return []  # an unsaved object has no diffs yet
        return self.manager.get_by_object_id(instance.pk)
