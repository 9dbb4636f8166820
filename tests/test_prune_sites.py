"""Sites sharing a Redis db never prune each other's diffs, and
a prune moves each model's horizon up to its cutoff.

Two sites on one db with the prefixes ``diffs:`` and ``diffs:siteb:``: a SCAN of
``diffs:*`` returns both sites' keys, so the first site's prune must tell its own keys
from the other's by their shape, their model label and their pk text.
"""

from __future__ import annotations

import io
import time

import pytest
from django.core.management import call_command

from diffs import pruning
from diffs.clock import redis_time_ms
from diffs.keys import KeyLayout, KeyShape
from diffs.layout import current_layout
from tests.conftest import diffs_settings
from tests.support.keynames import (
    birth_key,
    feed_key,
    horizon_key,
    index_key,
    log_key,
    object_key,
)
from tests.test_prune import create_old
from tests.testapp.models import Choice, Question

HOUR_MS = 3600 * 1000
SITE_B = "diffs:siteb:"


def run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("prune_diffs", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def snapshot(client, prefix: str) -> dict[str, object]:
    """Every key under ``prefix`` (a plain glob: the prefixes here hold no glob
    characters) with its type and whole value."""
    found: dict[str, object] = {}
    for key in client.scan_iter(match=f"{prefix}*"):
        kind = text(client.type(key))
        if kind == "zset":
            value: object = client.zrange(key, 0, -1, withscores=True)
        elif kind == "hash":
            value = client.hgetall(key)
        elif kind == "stream":
            value = client.xrange(key)
        else:
            value = client.get(key)
        found[text(key)] = (kind, value)
    return found


def write_site(prefix: str, now: float) -> None:
    """One old and one fresh diff of Question 1 and of Choice 1 under ``prefix``."""
    with diffs_settings(prefix=prefix):
        for model in (Question, Choice):
            create_old(model, 1, {"site": prefix, "age": "old"}, now - 2 * HOUR_MS)
            model.diffs.create(data={"site": prefix, "age": "fresh"}, pk=1)


def ages(model, prefix: str = "diffs:") -> list[str]:
    with diffs_settings(prefix=prefix):
        return [d.data["age"] for d in model.diffs.get_sortedset(1)]


def test_a_site_never_prunes_the_keys_of_a_site_whose_prefix_starts_with_its_own(
    redis_client,
):
    now = time.time() * 1000
    write_site("diffs:", now)
    write_site(SITE_B, now)
    redis_client.hset(horizon_key("testapp.question", SITE_B), "from", "5")
    site_b = snapshot(redis_client, SITE_B)
    assert index_key("testapp.question", 1, SITE_B) in site_b
    assert log_key("testapp.question", SITE_B) in site_b

    out, err = run()

    assert snapshot(redis_client, SITE_B) == site_b  # not one byte of site B changed
    assert ages(Question) == ages(Choice) == ["fresh"]
    assert ages(Question, SITE_B) == ages(Choice, SITE_B) == ["old", "fresh"]
    assert "Removed 2 diff(s) from 2 of 2 key(s) under 'diffs:'." in out
    assert err == ""
    # and site B prunes its own
    with diffs_settings(prefix=SITE_B):
        run()
    assert ages(Question, SITE_B) == ["fresh"]


@pytest.mark.parametrize(
    "other_prefix",
    [
        "diffs:x.y:",  # looks like our object keys of a model x.y (not installed)
        "diffs:testapp.question:",  # ... of an installed model, with a pk no int can be
        "diffs:feed:",  # looks like our feeds
        "diffs:horizon:",
    ],
)
def test_contrived_prefixes_that_look_like_our_keys_are_left_alone(redis_client, other_prefix):
    now = time.time() * 1000
    write_site("diffs:", now)
    ours = set(snapshot(redis_client, "diffs:"))  # some fall under the other prefix too
    write_site(other_prefix, now)
    theirs = {k: v for k, v in snapshot(redis_client, other_prefix).items() if k not in ours}
    assert len(theirs) >= 4

    report = pruning.prune(redis_client, current_layout(), now - HOUR_MS)

    after = snapshot(redis_client, other_prefix)
    assert {k: v for k, v in after.items() if k in theirs} == theirs
    assert report.diffs_removed == 2
    assert report.skipped == []
    assert report.keys_left_alone == len(theirs)


def test_keys_of_no_installed_model_or_not_utf8_are_left_alone_and_counted(redis_client):
    old = time.time() * 1000 - 2 * HOUR_MS
    foreign = [
        object_key("nosuch.model", 1),
        object_key("testapp.question", "not-an-int"),
        feed_key("nosuch.model"),
        b"diffs:testapp.question:\xff\xfe",
        "diffs:Question-1",  # written by django-diffs 0.1.16
    ]
    for key in foreign:
        redis_client.zadd(key, {"member": old})
    out, err = run("-v", "2")
    for key in foreign:
        assert redis_client.zcard(key) == 1, key
    assert f"Left {len(foreign)} key(s) under 'diffs:' alone" in out
    assert err == ""


def test_horizon_and_birth_keys_are_neither_touched_nor_reported(redis_client):
    now = time.time() * 1000
    write_site("diffs:", now)
    birth = birth_key("testapp.question", 7)
    choice_horizon = horizon_key("testapp.choice")
    redis_client.set(birth, repr(now))
    redis_client.hset(choice_horizon, mapping={"from": repr(now + HOUR_MS), "age": "3600"})
    out, err = run()
    assert err == ""  # no 'Skipped key ...: WRONGTYPE' for the hash and the string
    assert text(redis_client.get(birth)) == repr(now)
    assert text(redis_client.hget(choice_horizon, "age")) == "3600"
    assert "Removed 2 diff(s) from 2 of 2 key(s)" in out


def test_keys_not_shown_raw_on_the_terminal(redis_client):
    key = object_key("testapp.codeitem", "x\x1b[2Jy")
    redis_client.zadd(key, {"m": 1})
    out, _ = run("-v", "3")
    assert "\x1b" not in out
    assert "x\\x1b[2Jy" in out


# The horizon


def old_horizons(client, now: float, *labels: str) -> None:
    """Horizons saying the models' diffs are complete since two hours ago."""
    for label in labels:
        client.hset(horizon_key(label), mapping={"from": repr(now - 2 * HOUR_MS), "age": "3600"})


def horizon_from(client, label: str, prefix: str = "diffs:") -> float | None:
    found = client.hget(horizon_key(label, prefix), "from")
    return None if found is None else float(found)


def test_a_prune_raises_the_horizon_of_each_model_to_its_cutoff(redis_client):
    now = time.time() * 1000
    write_site("diffs:", now)
    old_horizons(redis_client, now, "testapp.question", "testapp.choice")
    cutoff = now - HOUR_MS
    report = pruning.prune(redis_client, current_layout(), cutoff)
    assert horizon_from(redis_client, "testapp.question") == cutoff
    assert horizon_from(redis_client, "testapp.choice") == cutoff
    assert report.horizons == {horizon_key("testapp.question"), horizon_key("testapp.choice")}
    assert text(redis_client.hget(horizon_key("testapp.question"), "age")) == "3600"


def test_the_command_raises_the_horizon_to_its_max_age_cutoff(redis_client):
    now = time.time() * 1000
    write_site("diffs:", now)
    old_horizons(redis_client, now, "testapp.question")
    before = redis_time_ms(redis_client)
    out, _ = run("--max-age", "600", "-v", "2")
    after = redis_time_ms(redis_client)
    moved_to = horizon_from(redis_client, "testapp.question")
    assert moved_to is not None
    assert before - 600_000 <= moved_to <= after - 600_000
    assert f"horizon {horizon_key('testapp.question')} raised" in out


def test_the_horizon_never_moves_down(redis_client):
    now = time.time() * 1000
    write_site("diffs:", now)
    old_horizons(redis_client, now, "testapp.choice")
    redis_client.hset(horizon_key("testapp.question"), "from", repr(now))
    pruning.prune(redis_client, current_layout(), now - HOUR_MS)
    assert horizon_from(redis_client, "testapp.question") == now  # above the cutoff: kept
    assert horizon_from(redis_client, "testapp.choice") == now - HOUR_MS  # below: raised


def test_a_dry_run_leaves_every_horizon_alone(redis_client):
    now = time.time() * 1000
    write_site("diffs:", now)
    old_horizons(redis_client, now, "testapp.question")
    redis_client.delete(horizon_key("testapp.choice"))
    report = pruning.prune(redis_client, current_layout(), now - HOUR_MS, dry_run=True)
    assert horizon_from(redis_client, "testapp.question") == now - 2 * HOUR_MS
    assert not redis_client.exists(horizon_key("testapp.choice"))
    assert report.horizons == set()
    run("--dry-run")
    assert horizon_from(redis_client, "testapp.question") == now - 2 * HOUR_MS


def test_another_sites_horizon_is_untouched(redis_client):
    now = time.time() * 1000
    write_site("diffs:", now)
    write_site(SITE_B, now)
    old_horizons(redis_client, now, "testapp.question")
    theirs = horizon_key("testapp.question", SITE_B)
    redis_client.hset(theirs, mapping={"from": "5", "age": "60"})
    run("--max-age", "60")
    assert redis_client.hgetall(theirs) == {b"from": b"5", b"age": b"60"}
    assert horizon_from(redis_client, "testapp.question") > now - HOUR_MS  # ours moved


def test_the_horizon_moves_before_any_diff_of_its_model_is_removed(redis_client, monkeypatch):
    # Readers refuse old cursors from the moment the horizon moves: moved first, a reader
    # never pages through a gap the prune is making.
    now = time.time() * 1000
    write_site("diffs:", now)
    events: list[str] = []
    real_raise, real_batch = pruning.raise_to, pruning._prune_batch

    def raise_to(client, key, from_ms):
        events.append("horizon")
        return real_raise(client, key, from_ms)

    def prune_batch(client, ours, report, **options):
        events.append("prune")
        return real_batch(client, ours, report, **options)

    monkeypatch.setattr(pruning, "raise_to", raise_to)
    monkeypatch.setattr(pruning, "_prune_batch", prune_batch)
    pruning.prune(redis_client, current_layout(), now - HOUR_MS)
    assert events == ["horizon", "horizon", "prune"]


@pytest.mark.parametrize(
    ("key", "shape", "expected"),
    [
        ("diffs:testapp.question:1", KeyShape("object", "testapp.question", "1"), "plain"),
        ("diffs:{testapp.question}:1", KeyShape("object", "testapp.question", "1"), "tagged"),
        ("diffs:feed:testapp.question", KeyShape("feed", "testapp.question"), "plain"),
        (b"diffs:feed:{testapp.question}", KeyShape("feed", "testapp.question"), "tagged"),
    ],
)
def test_the_horizon_key_keeps_the_layout_of_the_key_found(key, shape, expected):
    part = "testapp.question" if expected == "plain" else "{testapp.question}"
    for cluster in (False, True):  # the key decides, not the layout of the settings
        layout = KeyLayout("diffs:", cluster=cluster)
        assert pruning.horizon_key_of(layout, key, shape) == f"diffs:horizon:{part}"
