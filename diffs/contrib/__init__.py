"""Optional integrations with other packages (each module imports its own dependency)."""

from __future__ import annotations
