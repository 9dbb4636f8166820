"""Helpers kept from 0.1.16 (``diffs.helpers.precise_timestamp``)."""

from __future__ import annotations

from diffs.clock import precise_timestamp

__all__ = ["precise_timestamp"]
