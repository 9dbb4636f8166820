"""One clock per job (see diffs/clock.py): scores from Redis, commit times from
clock.now_ms(), durations from time.monotonic(); no other wall clock in the package."""

from __future__ import annotations

import re
from pathlib import Path

from diffs.clock import now_ms

PACKAGE = Path(__file__).resolve().parent.parent / "diffs"
WALL_CLOCKS = re.compile(r"\btime\.time(_ns)?\(|\btimezone\.now\(|\bdatetime\.now\(|utcnow\(")


def test_the_process_wall_clock_is_read_in_one_place():
    readers = [
        f"{path.relative_to(PACKAGE)}:{text[: m.start()].count(chr(10)) + 1}"
        for path in PACKAGE.rglob("*.py")
        for text in [path.read_text(encoding="utf-8")]
        for m in WALL_CLOCKS.finditer(text)
    ]
    assert [r.split(":")[0] for r in readers] == ["clock.py"], readers


def test_now_ms_is_unix_epoch_milliseconds_to_the_microsecond():
    import time

    before = time.time() * 1000
    value = now_ms()
    after = time.time() * 1000
    assert before - 1 <= value <= after + 1
    assert round(value, 3) == value
