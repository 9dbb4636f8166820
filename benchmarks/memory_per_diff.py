"""Redis memory per diff: an object's sorted set and the model feed, measured.

Writes typical diffs (an update of three fields, default serializer format) through
the same write path saves use, to a real Redis, then reads ``MEMORY USAGE`` of every
key. Run from the repository root:

    python benchmarks/memory_per_diff.py --url redis://127.0.0.1:6379/13

The db given is flushed before and after (never use db 0 or a db holding data).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="redis://127.0.0.1:6379/13")
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--diffs-per-object", type=int, default=10)
    args = parser.parse_args()

    import django
    from django.conf import settings

    settings.configure(
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "diffs"],
        DIFFS_SETTINGS={"url": args.url},
        USE_TZ=True,
    )
    django.setup()
    from django.contrib.auth.models import Group

    from diffs import get_connection
    from diffs.delivery import OutgoingDiff, write_one
    from diffs.diff import build_member, encode_data, new_diff_id
    from diffs.keys import feed_member
    from diffs.layout import current_layout

    client = get_connection()
    if client.connection_pool.connection_kwargs.get("db", 0) == 0:
        sys.exit("Refusing to use db 0: pass --url redis://host:port/<another db>.")
    client.flushdb()
    layout = current_layout()
    total = args.objects * args.diffs_per_object
    for n in range(args.diffs_per_object):
        for pk in range(1, args.objects + 1):
            data = [
                {
                    "model": "auth.group",
                    "pk": pk,
                    "fields": {"name": f"group {pk} v{n}", "rank": n, "active": n % 2 == 0},
                }
            ]
            diff_id = new_diff_id()
            member = build_member(diff_id, encode_data(data), False, False)
            diff = OutgoingDiff(
                key=layout.object_key(Group, pk),
                member=member,
                feed_key=layout.feed_key(Group),
                feed_member=feed_member(diff_id, str(pk)),
                score=None,
                label="auth.group",
                object_pk=str(pk),
            )
            write_one(client, diff)
    sets = sum(
        client.memory_usage(layout.object_key(Group, pk), samples=0) or 0
        for pk in range(1, args.objects + 1)
    )
    feed = client.memory_usage(layout.feed_key(Group), samples=0) or 0
    sample = member
    client.flushdb()
    print(
        f"redis-server {client.info('server')['redis_version']}, {total} diffs "
        f"in {args.objects} objects ({args.diffs_per_object} each)"
    )
    print(f"member size (JSON): {len(sample.encode())} bytes, e.g. {sample}")
    print(f"per-object sets: {sets / total:.1f} bytes per diff")
    print(f"model feed:      {feed / total:.1f} bytes per diff")
    print(f"together:        {(sets + feed) / total:.1f} bytes per diff")


if __name__ == "__main__":
    main()
