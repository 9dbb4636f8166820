"""Mutation test of check_v2.py: each mutation of the v2 prototype must make it fail.

PYTHONPATH=/work/main python mutate_check.py nolegacy|noidem|inclusive|nolegacyclock
"""

from __future__ import annotations

import runpy
import sys

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
import layout_v2 as v2

which = sys.argv[1]
if which == "nolegacy":
    v2.FEED_PAGE_V2 = v2.FEED_PAGE_V2.replace(
        "local legacy = redis.call(", "local legacy = {} or redis.call("
    )
elif which == "noidem":
    v2.WRITE_V2 = v2.WRITE_V2.replace("if not existing and maybe == '1'", "if false")
elif which == "inclusive":
    v2.FEED_PAGE_V2 = v2.FEED_PAGE_V2.replace(
        "local start = (exclusive and '(' or '') .. sid(value)", "local start = sid(value)"
    )
elif which == "nolegacyclock":
    v2.WRITE_V2 = v2.WRITE_V2.replace(
        "newest(set, 'z'), newest(feed, 'z'), newest(log, 's')", "newest(log, 's')"
    )
sys.argv = ["check_v2.py"]
try:
    runpy.run_path(
        str(__import__("pathlib").Path(__file__).resolve().parent / "check_v2.py"),
        run_name="__main__",
    )
    print(which, "PASSED (mutation not caught)")
except AssertionError as e:
    print(which, "caught:", str(e)[:150])
