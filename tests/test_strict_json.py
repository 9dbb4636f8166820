"""Members are strict JSON (RFC 8259), and one bad member never breaks a read.

JSON has no NaN or infinity: a non-finite float is stored as the string "NaN",
"Infinity" or "-Infinity". A member holding Python's NaN/Infinity tokens (written by an
older version, or by anyone) or broken JSON is undecodable: reads skip it with a warning
instead of failing, and ``Diff.data`` never holds a non-finite float.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from typing import Any

import pytest
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, models

import diffs
import diffs.diff
from diffs import Diff, HookError
from diffs.diff import build_member, encode_data, with_original_time
from tests.support.stored import stored_members as members_of

pytestmark = pytest.mark.django_db(transaction=True)

NAN = float("nan")
INF = float("inf")


@diffs.register
class StrictJSONReading(models.Model):
    """A FloatField: PostgreSQL stores inf, -inf and NaN; SQLite stores NaN as NULL."""

    label = models.CharField(max_length=20, default="")
    value = models.FloatField(null=True)

    class Meta:
        app_label = "testapp"


@diffs.register
class StrictJSONCustom(models.Model):
    """serialize_diff() returns whatever the test puts in ``payload``."""

    name = models.CharField(max_length=20, default="")

    payload: Any = None

    class Meta:
        app_label = "testapp"

    def serialize_diff(self, dirty_fields: dict[str, Any], created: bool = False) -> Any:
        return self.payload


def refuse_constant(name: str) -> None:
    raise AssertionError(f"the member holds the non-JSON token {name}")


def strict_loads(member: bytes | str) -> Any:
    """``json.loads`` that fails on NaN/Infinity tokens (json's own default accepts them)."""
    return json.loads(member, parse_constant=refuse_constant)


def stored_members(redis_client, model: type[models.Model], pk: Any) -> list[bytes]:
    return members_of(redis_client, model.diffs.get_key(pk))


def non_finite_floats(value: Any) -> list[float]:
    """Every float in ``value`` (nested lists and dicts, keys too) that is not finite."""
    if isinstance(value, float):
        return [] if math.isfinite(value) else [value]
    if isinstance(value, dict):
        return [f for k, v in value.items() for f in non_finite_floats(k) + non_finite_floats(v)]
    if isinstance(value, (list, tuple)):
        return [f for item in value for f in non_finite_floats(item)]
    return []


def member(data_json: str, diff_id: str = "0123456789abcdef") -> bytes:
    """A member with our exact head around ``data_json`` (which may be anything)."""
    return build_member(diff_id, data_json, False, False).encode()


# --- writing -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "stored"), [(INF, "Infinity"), (-INF, "-Infinity"), (NAN, "NaN")]
)
def test_a_float_field_saved_with_a_non_finite_value_is_stored_as_strict_json(
    redis_client, value, stored
):
    reading = StrictJSONReading.objects.create(label="a", value=value)
    reading.value = 1.5
    reading.save()
    reading.value = value
    reading.save()

    members = stored_members(redis_client, StrictJSONReading, reading.pk)

    assert len(members) == 3
    created, finite, again = (strict_loads(m)["data"][0]["fields"] for m in members)
    assert created == {"label": "a", "value": stored}
    assert finite == {"value": 1.5}
    assert again == {"value": stored}
    read = StrictJSONReading.diffs.get_by_object_id(reading.pk)
    assert [d.data[0]["fields"].get("value") for d in read] == [stored, 1.5, stored]


def test_the_non_finite_values_the_database_keeps_are_stored_as_strict_json(redis_client):
    rows = [
        StrictJSONReading.objects.create(label=n, value=v)
        for n, v in [("i", INF), ("m", -INF), ("n", NAN)]
    ]
    loaded = list(StrictJSONReading.objects.filter(pk__in=[r.pk for r in rows]).order_by("label"))
    kept_nan = connection.vendor == "postgresql"  # SQLite stores NaN as NULL
    assert [row.value for row in loaded[:2]] == [INF, -INF]
    assert math.isnan(loaded[2].value) if kept_nan else loaded[2].value is None

    for row in loaded:
        row.delete()  # the deletion diff holds the row as the database returned it

    deleted = [
        strict_loads(stored_members(redis_client, StrictJSONReading, row.pk)[-1]) for row in rows
    ]
    assert all(d["deleted"] is True for d in deleted)
    assert [d["data"][0]["fields"]["value"] for d in deleted] == [
        "Infinity",
        "-Infinity",
        "NaN" if kept_nan else None,
    ]


def test_a_custom_serialize_diff_with_nested_non_finite_floats_is_stored_as_strict_json(
    redis_client,
):
    item = StrictJSONCustom(name="x")
    item.payload = {
        "series": [1.5, NAN, [INF, {"low": -INF, "deep": [[[NAN]]]}]],
        "pair": (-INF, 0.25),
        INF: "a non-finite key",
        "fine": {"n": 3, "text": "é", "nothing": None},
    }
    item.save()

    [stored] = stored_members(redis_client, StrictJSONCustom, item.pk)

    expected = {
        "series": [1.5, "NaN", ["Infinity", {"low": "-Infinity", "deep": [[["NaN"]]]}]],
        "pair": ["-Infinity", 0.25],
        "Infinity": "a non-finite key",
        "fine": {"n": 3, "text": "é", "nothing": None},
    }
    assert strict_loads(stored)["data"] == expected
    assert StrictJSONCustom.diffs.get_by_object_id(item.pk)[0].data == expected


def test_encode_data_writes_non_finite_floats_as_names_and_everything_else_as_before():
    ordinary = [{"model": "a.b", "pk": 1, "fields": {"x": 1.5, "y": "é\u2028", "z": [True, None]}}]
    # Byte for byte what the encoder wrote before: members of ordinary data do not change.
    before = json.dumps(ordinary, cls=DjangoJSONEncoder, separators=(",", ":"), ensure_ascii=False)
    assert encode_data(ordinary) == before

    assert encode_data(NAN) == '"NaN"'
    assert encode_data([INF, -INF, {"k": NAN}]) == '["Infinity","-Infinity",{"k":"NaN"}]'
    assert encode_data({-INF: 1, 2.5: 2}) == '{"-Infinity":1,"2.5":2}'


def test_data_json_cannot_hold_is_refused_with_a_clear_error():
    circular: list[Any] = [NAN]
    circular.append(circular)
    deep: list[Any] = [NAN]
    for _ in range(100_000):
        deep = [deep]

    with pytest.raises(ValueError, match="Circular reference"):
        encode_data(circular)
    with pytest.raises(ValueError, match="nested too deeply"):
        encode_data(deep)  # not a RecursionError: payload.py turns ValueError into HookError
    with pytest.raises(TypeError, match="not JSON serializable"):
        encode_data([NAN, object()])

    item = StrictJSONCustom(name="deep")
    item.payload = {"deep": deep}
    with pytest.raises(HookError, match=r"StrictJSONCustom.serialize_diff\(\) returned data"):
        item.save()


def test_text_that_is_not_unicode_is_stored_with_replacement_characters(redis_client, caplog):
    # UTF-8 cannot hold a lone surrogate: the Redis client refused to send such a member,
    # so the diff was never written (and waited, retried, in front of later ones).
    item = StrictJSONCustom(name="s")
    item.payload = {"text": "a\ud800b", "key\udfff": ["\udbff"]}
    with caplog.at_level(logging.ERROR, logger="diffs"):
        item.save()
        item.name, item.payload = "t", {"next": 1}
        item.save()

    members = stored_members(redis_client, StrictJSONCustom, item.pk)

    assert [r.getMessage() for r in caplog.records] == []
    assert [strict_loads(m)["data"] for m in members] == [
        {"text": "a\ufffdb", "key\ufffd": ["\ufffd"]},
        {"next": 1},
    ]
    members[0].decode("utf-8")  # valid UTF-8


def test_a_late_diff_with_a_time_that_is_not_finite_keeps_a_valid_member():
    original = build_member("0123456789abcdef", "[1]", True, False)
    for bad_time in (NAN, INF, -INF):
        assert with_original_time(original, bad_time) == original
    strict_loads(with_original_time(original, 1234.5))


# --- reading ---------------------------------------------------------------------------


UNDECODABLE = {
    "NaN token": member("[NaN]"),
    "Infinity token": member('{"x":Infinity}'),
    "-Infinity token": member('[1,{"y":[-Infinity]}]'),
    "broken JSON holding NaN": member('[NaN,"unterminated'),
}
#: Numbers too large for a float would decode to infinity; no NaN/Infinity bytes in them.
OVERFLOWING = {
    "1e999": member("[1e999]"),
    "-1.5e400": member('{"x":-1.5e400}'),
    "long mantissa": member("[" + "9" * 400 + ".0]"),
}


def test_diff_data_never_holds_a_non_finite_float():
    for name, raw in {**UNDECODABLE, **OVERFLOWING}.items():
        with pytest.raises(ValueError, match=r"not JSON|too large|Expecting|Unterminated"):
            Diff.from_member(raw, 1.0, "testapp.question", 1)
        lazy = Diff.decoded_on_use(raw, 1.0, "testapp.question", 1)
        with pytest.raises(ValueError, match=r"testapp\.question pk=1 is not valid"):
            lazy.data  # noqa: B018
        assert repr(lazy) == "<Diff (undecodable)>", name

    # The strings a non-finite float is stored as are data like any other.
    ours = Diff.from_member(member('["NaN","Infinity","-Infinity"]'), 1.0)
    assert ours.data == ["NaN", "Infinity", "-Infinity"]


def test_a_diff_given_json_text_gets_the_names_of_non_finite_numbers():
    # 0.1.16 took a str as a JSON document; Django's serializer writes NaN tokens in it.
    given = Diff(data='[{"fields": {"a": NaN, "b": [Infinity, -Infinity], "c": 1e999}}]')
    assert given.data == [
        {"fields": {"a": "NaN", "b": ["Infinity", "-Infinity"], "c": "Infinity"}}
    ]
    assert strict_loads(Diff(data="[NaN]", id="0123456789abcdef").to_member())["data"] == ["NaN"]


def test_a_read_never_returns_non_finite_floats_from_members_it_did_not_decode(redis_client):
    reading = StrictJSONReading.objects.create(label="fine", value=2.0)
    key = StrictJSONReading.diffs.get_key(reading.pk)
    redis_client.zadd(key, {raw: 1e15 + n for n, raw in enumerate(UNDECODABLE.values())})

    read = StrictJSONReading.diffs.get_by_object_id(reading.pk)

    usable = []
    for diff in read:
        # A diff read lazily that is undecodable says so when used.
        with contextlib.suppress(ValueError):
            usable.append(diff.data)
    assert usable == [
        [
            {
                "model": "testapp.strictjsonreading",
                "pk": reading.pk,
                "fields": {"label": "fine", "value": 2.0},
            }
        ]
    ]
    assert non_finite_floats(usable) == []


@pytest.mark.parametrize("eager", [False, True], ids=["lazy", "eager"])
def test_decode_members_skips_undecodable_members_with_a_warning(eager, caplog):
    good = member('{"n":1}', "1111111111111111")
    named = member('{"v":"NaN","w":["Infinity"]}', "2222222222222222")  # our strict names
    last = member('{"n":3}', "3333333333333333")
    entries = [
        (good, 1.0),
        (UNDECODABLE["NaN token"], 2.0),
        (b"not ours at all", 3.0),
        (named, 4.0),
        (UNDECODABLE["broken JSON holding NaN"], 5.0),
        (UNDECODABLE["-Infinity token"], 6.0),
        (last, 7.0),
    ]

    with caplog.at_level(logging.WARNING, logger="diffs"):
        read = diffs.diff.decode_members(
            "diffs:testapp.question:7", entries, "testapp.question", 7, eager=eager
        )

    assert [d.id for d in read] == ["1111111111111111", "2222222222222222", "3333333333333333"]
    assert [d.data for d in read] == [{"n": 1}, {"v": "NaN", "w": ["Infinity"]}, {"n": 3}]
    assert [(d.timestamp, d.model, d.pk) for d in read] == [
        (1.0, "testapp.question", 7),
        (4.0, "testapp.question", 7),
        (7.0, "testapp.question", 7),
    ]
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(messages) == 4
    assert all("'diffs:testapp.question:7'" in m for m in messages)
    assert sum("did not write" in m and "not ours at all" in m for m in messages) == 1
    undecodable = [m for m in messages if "not strict JSON" in m]
    assert len(undecodable) == 3
    assert any("NaN is not JSON" in m and "[NaN]" in m for m in undecodable)
    assert any("-Infinity is not JSON" in m for m in undecodable)


def test_decode_members_eager_skips_broken_json_and_lazy_leaves_it_to_fail_when_used(caplog):
    good = member("[1]", "1111111111111111")
    broken = member('{"x":[1,}', "2222222222222222")  # a valid head, broken data
    overflowing = OVERFLOWING["1e999"]
    entries = [(good, 1.0), (broken, 2.0), (overflowing, 3.0)]

    with caplog.at_level(logging.WARNING, logger="diffs"):
        eager = diffs.diff.decode_members("k", entries, eager=True)
    assert [d.data for d in eager] == [[1]]
    assert sum("not strict JSON" in r.getMessage() for r in caplog.records) == 2

    # Lazy: decoding is what costs, so only members that may hold NaN/Infinity tokens
    # are decoded while reading; others fail, clearly, when used.
    lazy = diffs.diff.decode_members("k", entries, eager=False)
    assert [d.data for d in lazy[:1]] == [[1]]
    for undecodable in lazy[1:]:
        with pytest.raises(ValueError, match="not valid django-diffs JSON"):
            undecodable.data  # noqa: B018


def test_lazy_decoding_still_decodes_only_the_diffs_used(monkeypatch):
    calls = []
    real = diffs.diff.parse_strict_json

    def counting(document):
        calls.append(document)
        return real(document)

    monkeypatch.setattr(diffs.diff, "parse_strict_json", counting)
    entries = [(member(f'{{"n":{n},"ratio":0.5}}', f"{n:016x}"), float(n)) for n in range(50)]
    entries.append((member('{"v":"NaN"}', "f" * 16), 99.0))

    read = diffs.diff.decode_members("k", entries, eager=False)

    assert len(read) == 51
    assert calls == [entries[-1][0]]  # only the member holding NaN bytes, checked at once
    assert read[7].data == {"n": 7, "ratio": 0.5}
    assert len(calls) == 2
    assert read[-1].data == {"v": "NaN"} and len(calls) == 2


def test_members_nested_too_deeply_are_undecodable_not_a_recursion_error(caplog):
    deep = member("[" * 100_000 + "]" * 100_000)

    with caplog.at_level(logging.WARNING, logger="diffs"):
        assert diffs.diff.decode_members("k", [(deep, 1.0)], eager=True) == []
    assert "nested too deeply" in caplog.text
    with pytest.raises(ValueError, match="nested too deeply"):
        Diff.from_member(deep, 1.0)
    with pytest.raises(ValueError, match="nested too deeply"):
        Diff.decoded_on_use(deep, 1.0).data  # noqa: B018


def test_members_with_head_values_of_the_wrong_type_are_undecodable():
    wrong = {
        # duplicate keys: the last one wins, after the head check of looks_like_member
        "created twice": b'{"id":"0123456789abcdef","created":true,"created":5,"data":1}',
        "model not a str": b'{"id":"0123456789abcdef","created":true,"m":["x"],"data":1}',
        "id not a str": b'{"id":"0123456789abcdef","created":null,"id":7,"data":1}',
        "time too large": b'{"t":1'
        + b"0" * 400
        + b',"id":"0123456789abcdef","created":false,"data":1}',
        "trailing data": b'{"id":"0123456789abcdef","created":false,"data":1}{"x":1}',
        "escaped lone surrogate": b'{"id":"0123456789abcdef","created":false,"data":"\\ud800"}',
    }
    for name, raw in wrong.items():
        with pytest.raises(ValueError):
            Diff.from_member(raw, 1.0)
        assert diffs.diff.decode_members("k", [(raw, 1.0)], eager=True) == [], name

    # A surrogate pair written as escapes is one character, and fine.
    pair = Diff.from_member(
        b'{"id":"0123456789abcdef","created":false,"data":"\\ud83d\\ude00"}', 1.0
    )
    assert pair.data == "\U0001f600"


def test_a_read_full_of_foreign_members_logs_a_bounded_number_of_lines(caplog):
    entries = [(f"foreign {n}".encode(), float(n)) for n in range(30)]
    entries += [(UNDECODABLE["NaN token"], 31.0), (member("[1]"), 32.0)]

    with caplog.at_level(logging.WARNING, logger="diffs"):
        read = diffs.diff.decode_members("k", entries, eager=False)

    assert [d.data for d in read] == [[1]]
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 11
    assert "foreign 9" in messages[9]
    assert "Skipped 21 more members of 'k'" in messages[10]


def test_members_as_str_are_read_like_bytes(caplog):
    # A client built with decode_responses=True returns str members.
    entries = [(member("[1]").decode(), 1.0), (UNDECODABLE["NaN token"].decode(), 2.0)]
    for eager in (False, True):
        read = diffs.diff.decode_members("k", entries, eager=eager)
        assert [d.data for d in read] == [[1]]
    with pytest.raises(ValueError, match="lone surrogate"):
        Diff.from_member('{"id":"0123456789abcdef","created":false,"data":"\ud800"}', 1.0)
