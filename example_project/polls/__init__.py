"""The polls app: the README's Question and Choice, both registered with django-diffs."""

from __future__ import annotations
