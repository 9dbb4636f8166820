"""Following cursors page by page, in a bounded number of steps.

A cursor that stopped moving forward (or a ``has_more`` that never turns false) would keep
a ``while True`` loop reading forever; these helpers fail the test instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar


class PageLike(Protocol):
    """What a page of ``since()`` or ``object_since()`` has."""

    diffs: list[Any]
    has_more: bool

    @property
    def cursor(self) -> str: ...


P = TypeVar("P", bound=PageLike)

#: Most pages a test follows before it decides the cursor is not moving forward.
MOST_PAGES = 1000


def follow(
    read_page: Callable[[str | None], P], cursor: str | None = None, most: int = MOST_PAGES
) -> tuple[list[P], str | None]:
    """Read pages with ``read_page(cursor)`` until one has no more after it.

    Returns the pages read and the last page's cursor.

    Raises:
        AssertionError: ``most`` pages were read and there was still more.
    """
    pages: list[P] = []
    for _ in range(most):
        page = read_page(cursor)
        pages.append(page)
        cursor = page.cursor
        if not page.has_more:
            return pages, cursor
    msg = f"still more after {most} pages: the cursor does not move forward"
    raise AssertionError(msg)


def follow_diffs(
    read_page: Callable[[str | None], PageLike], cursor: str | None = None, most: int = MOST_PAGES
) -> list[Any]:
    """Every diff of the pages :func:`follow` reads, in order."""
    pages, _ = follow(read_page, cursor, most)
    return [diff for page in pages for diff in page.diffs]
