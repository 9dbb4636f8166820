"""The django-diffs example project: a polls app whose changes are recorded in Redis."""

from __future__ import annotations
