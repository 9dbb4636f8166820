"""Removed in django-diffs 1.0 (0.1.16's signal receivers): importing it says what replaced it."""

from __future__ import annotations

from diffs import _REPLACED

raise ImportError(_REPLACED["signals"])
