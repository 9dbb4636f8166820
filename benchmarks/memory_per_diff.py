"""Redis memory per diff, each storage side by side in one run: the log (default), the
log with compact members (``member_format: "compact"``), and the sorted sets of earlier
versions (``storage: "sets"``).

Writes typical diffs (an update of three fields, default serializer format) through
the same write path saves use, to a real Redis, then sums ``MEMORY USAGE`` of every
key under the prefix (object sets or indexes, the model's feed or log, its horizon).
Run from the repository root:

    python benchmarks/memory_per_diff.py --url redis://127.0.0.1:6379/13

The db given is flushed before, between and after (never use db 0 or a db holding data).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

#: What is measured: a name, and the DIFFS_SETTINGS it adds.
STORAGES = (
    ("sets (earlier versions)", {"storage": "sets"}),
    ("log (default)", {}),
    ("log, compact members", {"member_format": "compact"}),
)


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
    from django.test import override_settings

    from diffs import get_connection
    from diffs.layout import current_layout

    client = get_connection()
    if client.connection_pool.connection_kwargs.get("db", 0) == 0:
        sys.exit("Refusing to use db 0: pass --url redis://host:port/<another db>.")
    total = args.objects * args.diffs_per_object
    print(
        f"redis-server {client.info('server')['redis_version']}, {total} diffs "
        f"in {args.objects} objects ({args.diffs_per_object} each)"
    )
    for name, extra in STORAGES:
        with override_settings(DIFFS_SETTINGS={"url": args.url, **extra}):
            client = get_connection()
            client.flushdb()
            member = write(args.objects, args.diffs_per_object)
            used = {
                key: client.memory_usage(key, samples=0) or 0
                for key in client.scan_iter(match=current_layout().pattern(), count=1000)
            }
            client.flushdb()
        everything = sum(used.values())
        print(f"{name}: {everything / total:.1f} bytes per diff, {len(used)} keys")
        print(f"  member: {len(member.encode())} bytes, e.g. {member}")


def write(objects: int, diffs_per_object: int) -> str:
    """Write the diffs, as saves would; return the last member."""
    from django.contrib.auth.models import Group

    from diffs import get_connection
    from diffs.delivery import OutgoingDiff, write_one
    from diffs.diff import build_compact_member, build_member, encode_data, new_diff_id
    from diffs.keys import feed_member
    from diffs.layout import current_layout
    from diffs.settings import get_settings

    client = get_connection()
    layout = current_layout()
    member = ""
    for n in range(diffs_per_object):
        for pk in range(1, objects + 1):
            data = [
                {
                    "model": "auth.group",
                    "pk": pk,
                    "fields": {"name": f"group {pk} v{n}", "rank": n, "active": n % 2 == 0},
                }
            ]
            diff_id = new_diff_id()
            if get_settings().member_format == "compact":  # as diffs.payload builds it
                member = build_compact_member(
                    diff_id, encode_data(data[0]["fields"]), False, False
                )
            else:
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
    return member


if __name__ == "__main__":
    main()
