"""A queryset ``update()`` of many rows holds a bounded amount of memory.

Rows are processed in chunks and their diffs handed to the writer a chunk at a time
(one on-commit callback per piece, not per diff); past ``spill_after_bytes``
of diffs waiting in one transaction, they go to the outbox table until the commit.
The tests shrink the chunks and the budget so that a few hundred rows go through
every path: several chunks, spilled pieces, savepoints, outages, a missing table.
"""

from __future__ import annotations

import logging
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from django.db import DatabaseError, connection, models, transaction
from django.db.models import F, OuterRef, Q, Subquery, Value
from django.db.models.expressions import RawSQL
from django.db.models.functions import Coalesce, Concat, Lower, Now
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

import diffs
from diffs import bulk, delivery
from diffs.delivery import on_commit, queue, store
from diffs.exceptions import DiffsWriteError
from diffs.layout import current_layout
from diffs.models import OutboxEntry
from tests.conftest import diffs_settings, unreachable_url
from tests.support.keynames import feed_key
from tests.support.stored import feed_count
from tests.testapp.models import Article, Question, UUIDItem

pytestmark = pytest.mark.django_db(transaction=True)


class Boom(Exception):
    pass


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Chunks of 4 to 16 rows, pieces of 8 diffs, and room for about 4 diffs in memory
    per transaction: a few dozen rows take every path."""
    monkeypatch.setattr(bulk, "FIRST_CHUNK_ROWS", 4, raising=False)
    monkeypatch.setattr(bulk, "MAX_CHUNK_ROWS", 16, raising=False)
    monkeypatch.setattr(on_commit, "PIECE_DIFFS", 8, raising=False)
    with diffs_settings(spill_after_bytes=2048):
        yield


@pytest.fixture(params=[False, True], ids=["default", "durable"])
def durable(request: pytest.FixtureRequest) -> Iterator[bool]:
    with diffs_settings(durable=request.param):
        yield request.param


def make_questions(count: int, start: int = 0) -> list[int]:
    """``count`` questions (votes = their number), inserted without recording diffs."""
    rows = [Question(question_text=f"q{n}", votes=n) for n in range(start, start + count)]
    models.QuerySet(Question).bulk_create(rows)
    return list(models.QuerySet(Question).order_by("pk").values_list("pk", flat=True)[start:])


def delete_questions() -> None:
    """Delete every question without recording diffs (a delete() sends signals)."""
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {Question._meta.db_table}")


def feed_size() -> int:
    return feed_count(diffs.get_connection(), feed_key("testapp.question"))


def fields_of(diff: Any) -> dict[str, Any]:
    return dict(diff.data[0]["fields"])


def assert_one_diff_each(pks: list[int], expected: Callable[[int], dict[str, Any]]) -> None:
    for pk in pks:
        found = Question.diffs.get_by_object_id(pk)
        assert len(found) == 1, (pk, found)
        assert fields_of(found[0]) == expected(pk)


def stored_votes() -> dict[int, int]:
    return dict(models.QuerySet(Question).values_list("pk", "votes"))


# Bounded bookkeeping and memory ----------------------------------------------------


@pytest.fixture
def stub_redis(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Writes counted, not stored: fakeredis keeps its data in this process's memory,
    which would count in the peaks measured here."""
    written = [0]

    def write_many(client: Any, writes: Any, **kwargs: Any) -> list[float]:
        written[0] += len(writes)
        return [0.0] * len(writes)

    monkeypatch.setattr(store, "write_many", write_many)
    return written


def hooks_of_an_update(rows: int) -> int:
    make_questions(rows)
    with transaction.atomic():
        Question.objects.update(votes=F("votes") + 1)
        hooks = len(connection.run_on_commit)
    delete_questions()
    return hooks


def test_on_commit_callbacks_come_per_chunk_not_per_row(stub_redis):
    # Before: one callback and one flush entry per diff, each with its savepoint set
    # (and Django's commit pops them from the front of a list: quadratic).
    few, many = hooks_of_an_update(500), hooks_of_an_update(2000)
    assert few <= 500 // 50
    assert many <= 2000 // 50
    assert stub_redis[0] == 2500


def measure_update(rows: int, *, in_transaction: bool) -> tuple[int, int]:
    """(bytes still allocated when the update returned, peak during it) for an update
    of ``rows`` rows, inside ``atomic()`` (before its commit) or in autocommit."""
    make_questions(rows)
    outer = transaction.atomic() if in_transaction else _nothing()
    with outer:
        tracemalloc.start()
        try:
            Question.objects.update(votes=F("votes") + 1, question_text="updated")
            held, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    delete_questions()
    return held, peak


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


@pytest.fixture
def small_budget(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Budgets smaller than the defaults, so that a few thousand rows exceed them.
    monkeypatch.setattr(bulk, "MAX_CHUNK_ROWS", 200, raising=False)
    with diffs_settings(spill_after_bytes=64 * 1024):
        yield


@pytest.mark.usefixtures("small_budget", "durable")
def test_memory_waiting_for_the_commit_does_not_grow_with_the_rows(stub_redis):
    rows = 1000
    # Caches fill up first (the database driver keeps the last queries it parsed).
    measure_update(4 * rows, in_transaction=True)
    held_few, _ = measure_update(rows, in_transaction=True)
    held_many, _ = measure_update(4 * rows, in_transaction=True)
    # Before: about 1.5 kB more per row (instances, diffs and callbacks, all kept).
    # After: 16 bytes per row (a pk and an outbox row id, in arrays).
    assert held_many - held_few < 3 * rows * 64, (held_few, held_many)
    assert stub_redis[0] == 4 * rows + rows + 4 * rows


@pytest.mark.usefixtures("small_budget", "durable")
def test_peak_memory_of_an_update_does_not_grow_with_the_rows(stub_redis):
    rows = 1000
    measure_update(4 * rows, in_transaction=False)  # caches fill up first
    _, peak_few = measure_update(rows, in_transaction=False)
    _, peak_many = measure_update(4 * rows, in_transaction=False)
    assert peak_many < 1.3 * peak_few + 3 * rows * 64, (peak_few, peak_many)
    assert stub_redis[0] == 4 * rows + rows + 4 * rows
    assert not OutboxEntry.objects.exists()


# Every committed change gets its diff, once ------------------------------------------


@pytest.mark.usefixtures("small_chunks")
@pytest.mark.parametrize("in_transaction", [False, True], ids=["autocommit", "atomic"])
def test_every_row_gets_exactly_one_diff_with_its_new_values(durable, in_transaction):
    pks = make_questions(60)
    before = stored_votes()
    with transaction.atomic() if in_transaction else _nothing():
        rows = Question.objects.filter(votes__gte=0).update(
            votes=F("votes") * 2 + 1, question_text=Concat(Value("n"), F("question_text"))
        )
    assert rows == 60
    assert feed_size() == 60
    assert_one_diff_each(
        pks,
        lambda pk: {"votes": 2 * before[pk] + 1, "question_text": f"nq{before[pk]}"},
    )
    assert not OutboxEntry.objects.exists()


@pytest.mark.usefixtures("small_chunks")
def test_diffs_over_the_budget_wait_in_the_outbox_until_the_commit(durable):
    pks = make_questions(40)
    with transaction.atomic():
        Question.objects.update(votes=7)
        waiting = OutboxEntry.objects.count()
        assert feed_size() == 0
    # Durable mode writes a row for every diff; otherwise only past the budget.
    assert waiting == 40 if durable else 0 < waiting < 40
    assert_one_diff_each(pks, lambda pk: {"votes": 7})
    assert not OutboxEntry.objects.exists()


@pytest.mark.usefixtures("small_chunks")
def test_a_rolled_back_update_leaves_no_diff_and_no_row(durable):
    make_questions(40)
    with pytest.raises(Boom), transaction.atomic():
        Question.objects.update(votes=1)
        assert OutboxEntry.objects.exists()
        raise Boom
    assert feed_size() == 0
    assert not OutboxEntry.objects.exists()
    assert set(stored_votes().values()) != {1}


@pytest.mark.usefixtures("small_chunks")
def test_a_rolled_back_savepoint_discards_exactly_its_diffs(durable):
    pks = make_questions(60)
    first, second, third = pks[:20], pks[20:40], pks[40:]
    with transaction.atomic():
        Question.objects.filter(pk__in=first).update(votes=100)
        with pytest.raises(Boom), transaction.atomic():
            Question.objects.filter(pk__in=second).update(votes=200)
            Question.objects.filter(pk__in=first).update(votes=300)
            raise Boom
        Question.objects.filter(pk__in=third).update(votes=400)
    assert feed_size() == 40
    assert_one_diff_each(first, lambda pk: {"votes": 100})
    assert_one_diff_each(third, lambda pk: {"votes": 400})
    assert all(Question.diffs.get_by_object_id(pk) == [] for pk in second)
    assert not OutboxEntry.objects.exists()


@pytest.mark.usefixtures("small_chunks")
def test_diffs_keep_commit_order_around_spilled_pieces(durable):
    pks = make_questions(30)
    with transaction.atomic():
        early = Question.objects.create(question_text="early")
        Question.objects.filter(pk__in=pks).update(votes=5)
        late = Question.objects.create(question_text="late")
        Question.objects.filter(pk=pks[0]).update(votes=6)
    page = Question.diffs.since(limit=100)
    order = [diff.pk for diff in page.diffs]
    assert order == [early.pk, *pks, late.pk, pks[0]]


@pytest.mark.usefixtures("small_chunks")
def test_spilled_pieces_with_write_behind():
    pks = make_questions(40)
    with diffs_settings(write_behind=True), transaction.atomic():
        Question.objects.update(votes=4)
    assert not OutboxEntry.objects.exists()  # written by the committing thread
    assert_one_diff_each(pks, lambda pk: {"votes": 4})


@pytest.mark.usefixtures("small_chunks")
def test_bulk_create_and_bulk_update_spill_too():
    with transaction.atomic():
        created = Question.objects.bulk_create(
            [Question(question_text=f"b{n}") for n in range(30)]
        )
        assert OutboxEntry.objects.exists()
        for question in created:
            question.votes = 9
        Question.objects.bulk_update(created, ["votes"])
    for question in created:
        found = Question.diffs.get_by_object_id(question.pk)
        assert [d.created for d in found] == [True, False]
        assert fields_of(found[1]) == {"votes": 9}
    assert not OutboxEntry.objects.exists()


@pytest.mark.usefixtures("small_chunks")
def test_non_integer_primary_keys_are_chunked_too():
    items = [UUIDItem(name=f"u{n}") for n in range(30)]
    models.QuerySet(UUIDItem).bulk_create(items)
    assert UUIDItem.objects.update(name="renamed") == 30
    for item in items:
        [diff] = UUIDItem.diffs.get_by_object_id(item.pk)
        assert fields_of(diff) == {"name": "renamed"}


@pytest.mark.usefixtures("small_chunks")
def test_rows_between_the_updated_ones_are_left_alone():
    pks = make_questions(40)
    before = stored_votes()
    # Every third row: chunks whose pks are not consecutive go by list, not by range.
    chosen = pks[::3]
    assert Question.objects.filter(pk__in=chosen).update(votes=F("votes") + 1000) == len(chosen)
    after = stored_votes()
    assert all(after[pk] == before[pk] + (1000 if pk in chosen else 0) for pk in pks)
    assert feed_size() == len(chosen)
    assert_one_diff_each(chosen, lambda pk: {"votes": before[pk] + 1000})


@pytest.mark.parametrize(
    ("pks", "consecutive"),
    [
        ([4, 5, 6], True),
        ([4, 6, 5], False),
        ([1, 5, 3], False),
        ([4, 5, 7], False),
        ([4], False),
        (["a", "b"], False),
    ],
)
def test_a_chunk_is_a_range_only_when_its_pks_are_consecutive(pks, consecutive):
    assert bulk._consecutive(pks) is consecutive


@pytest.mark.usefixtures("small_chunks")
def test_where_a_locking_query_takes_no_limit_every_pk_is_locked_first(monkeypatch):
    # Oracle, say: no LIMIT with FOR UPDATE, so no first chunk read with the lock.
    monkeypatch.setattr(bulk._RowUpdate, "_lock_head", lambda self: None)
    pks = make_questions(30)
    assert Question.objects.update(votes=F("votes") - 1) == 30
    assert_one_diff_each(pks, lambda pk: {"votes": pks.index(pk) - 1})


@pytest.mark.usefixtures("small_chunks")
def test_without_use_transactions_each_piece_is_queued_at_once():
    pks = make_questions(30)
    with diffs_settings(use_transactions=False), transaction.atomic():
        Question.objects.update(votes=3)
        assert feed_size() == 30  # not waiting for the commit: the setting says so
        assert not OutboxEntry.objects.exists()
    assert_one_diff_each(pks, lambda pk: {"votes": 3})


# Values that read other rows, and chunk sizes --------------------------------------


def update_statements(run: Callable[[], object]) -> int:
    with CaptureQueriesContext(connection) as captured:
        run()
    return sum(q["sql"].startswith("UPDATE") for q in captured.captured_queries)


@pytest.mark.usefixtures("small_chunks")
def test_values_reading_other_rows_are_written_by_one_statement():
    pks = make_questions(30)
    previous = Question.objects.filter(pk=OuterRef("pk") - 1).values("votes")[:1]
    votes = Coalesce(Subquery(previous), Value(-1))
    # What the database writes without django-diffs (rows as one UPDATE sees them:
    # PostgreSQL reads the rows as they were, SQLite as it goes).
    with pytest.raises(Boom), transaction.atomic():
        models.QuerySet(Question).update(votes=votes)
        expected = stored_votes()
        raise Boom
    assert update_statements(lambda: Question.objects.update(votes=votes)) == 1
    assert stored_votes() == expected
    assert_one_diff_each(pks, lambda pk: {"votes": expected[pk]})
    # A value of the row's own columns goes in chunks.
    assert update_statements(lambda: Question.objects.update(votes=F("votes") + 1)) > 1


@pytest.mark.usefixtures("small_chunks")
def test_the_statement_clock_is_read_once():
    pks = make_questions(30)
    Question.objects.update(pub_date=Now())
    assert len(set(Question.objects.values_list("pub_date", flat=True))) == 1
    assert feed_size() == len(pks)


@pytest.mark.parametrize(
    ("value", "row_local"),
    [
        (5, True),
        ("text", True),
        (None, True),
        (F("votes") + 1, True),
        (Concat(Lower(F("question_text")), Value("!")), True),
        (Coalesce(F("pub_date"), Value(None)), True),
        (Q(votes__gt=3), True),
        (Now(), False),
        (Subquery(Question.objects.values("votes")[:1]), False),
        (RawSQL("SELECT 1", []), False),
        (Q(pk__in=Question.objects.values("pk")), False),
        (Coalesce(F("votes"), Subquery(Question.objects.values("votes")[:1])), False),
    ],
)
def test_which_values_an_update_may_write_in_chunks(value, row_local):
    assert bulk._row_local(value) is row_local


def test_chunks_shrink_to_keep_large_rows_within_their_byte_budget(monkeypatch):
    monkeypatch.setattr(bulk, "FIRST_CHUNK_ROWS", 10, raising=False)
    monkeypatch.setattr(bulk, "CHUNK_BYTES", 64 * 1024, raising=False)
    body = "x" * 20_000  # about 20 kB a row: 3 rows fit the budget
    models.QuerySet(Article).bulk_create([Article(title=f"a{n}", body=body) for n in range(30)])
    with CaptureQueriesContext(connection) as captured:
        assert Article.objects.update(rank=F("rank") + 1) == 30
    updates = [q for q in captured.captured_queries if q["sql"].startswith("UPDATE")]
    # 10 rows, then chunks of 3 instead of 20.
    assert len(updates) == 1 + 7


def test_a_small_update_still_costs_three_queries():
    make_questions(bulk.FIRST_CHUNK_ROWS)
    with CaptureQueriesContext(connection) as captured:
        Question.objects.update(votes=1)
    verbs = [q["sql"].split(None, 1)[0].upper() for q in captured.captured_queries]
    assert sorted(v for v in verbs if v in ("SELECT", "UPDATE")) == ["SELECT", "SELECT", "UPDATE"]


# When the outbox or Redis cannot take the diffs ------------------------------------


@pytest.fixture
def no_outbox_table() -> Iterator[None]:
    with connection.schema_editor() as editor:
        editor.delete_model(OutboxEntry)
    try:
        yield
    finally:
        with connection.schema_editor() as editor:
            editor.create_model(OutboxEntry)


@pytest.mark.usefixtures("small_chunks", "no_outbox_table")
def test_a_missing_outbox_table_keeps_diffs_in_memory_with_one_warning(monkeypatch, caplog):
    monkeypatch.setattr(on_commit, "_warned_no_outbox", set(), raising=False)
    pks = make_questions(40)
    with caplog.at_level(logging.WARNING, logger="diffs"):
        for votes in (1, 2):
            with transaction.atomic():
                Question.objects.update(votes=votes)
    warnings = [r.getMessage() for r in caplog.records if "outbox" in r.getMessage()]
    assert len(warnings) == 1
    assert "manage.py migrate diffs --database=default" in warnings[0]
    for pk in pks:
        assert [fields_of(d) for d in Question.diffs.get_by_object_id(pk)] == [
            {"votes": 1},
            {"votes": 2},
        ]


def unreachable(**changes: object) -> Any:
    url = unreachable_url()
    return diffs_settings(url=url, test_mode=False, socket_timeout=0.5, **changes)


@pytest.mark.usefixtures("small_chunks")
def test_redis_down_at_commit_keeps_the_diffs_in_memory_in_retry_mode():
    pks = make_questions(40)
    with unreachable(), transaction.atomic():
        Question.objects.update(votes=8)
    assert delivery.waiting() == 40
    assert not OutboxEntry.objects.exists()
    assert diffs.flush_diffs().from_memory == 40
    assert_one_diff_each(pks, lambda pk: {"votes": 8})


@pytest.mark.django_db(transaction=True, databases="__all__")  # flush_diffs reads each outbox
@pytest.mark.usefixtures("small_chunks")
def test_redis_down_at_commit_leaves_durable_rows_for_flush_diffs():
    pks = make_questions(40)
    with unreachable(durable=True), transaction.atomic():
        Question.objects.update(votes=8)
    assert OutboxEntry.objects.count() == 40
    delivery.clear()  # the process ends: only the rows remain
    with diffs_settings(durable=True):
        assert diffs.flush_diffs().from_outbox == 40
    assert_one_diff_each(pks, lambda pk: {"votes": 8})
    assert not OutboxEntry.objects.exists()


@pytest.mark.usefixtures("small_chunks")
def test_redis_down_at_commit_in_log_mode_drops_the_diffs_with_an_error(caplog):
    make_questions(40)
    log_only = unreachable(on_redis_error="log")
    with caplog.at_level(logging.ERROR, logger="diffs"), log_only, transaction.atomic():
        Question.objects.update(votes=8)
    assert set(stored_votes().values()) == {8}
    assert delivery.waiting() == 0
    assert not OutboxEntry.objects.exists()
    assert "diff(s) of bulk writes" in caplog.text and "on_redis_error='log'" in caplog.text


@pytest.mark.usefixtures("small_chunks")
def test_redis_down_at_commit_in_raise_mode_raises_after_the_commit():
    make_questions(40)
    raising = unreachable(on_redis_error="raise")
    with pytest.raises(DiffsWriteError), raising, transaction.atomic():
        Question.objects.update(votes=8)
    assert set(stored_votes().values()) == {8}
    assert not OutboxEntry.objects.exists()


@pytest.mark.usefixtures("small_chunks")
def test_an_outbox_that_fails_at_commit_never_breaks_the_update(monkeypatch, caplog):
    make_questions(40)

    def broken(alias: str, ids: Any) -> Any:
        raise DatabaseError("connection lost")

    monkeypatch.setattr(on_commit.outbox, "read", broken)
    with caplog.at_level(logging.ERROR, logger="diffs"), transaction.atomic():
        Question.objects.update(votes=8)
    assert set(stored_votes().values()) == {8}
    assert "spilled" in caplog.text


def test_a_callback_that_fails_is_logged_and_the_next_ones_still_run(monkeypatch, caplog):
    # Django names a failing robust callback by its __qualname__: a callable object
    # without one turned the log line into an AttributeError raised after the commit,
    # and every callback after it was skipped.
    def broken(items: Any) -> None:
        raise RuntimeError("queue broken")

    monkeypatch.setattr(queue, "enqueue", broken)
    ran = []
    with caplog.at_level(logging.ERROR), transaction.atomic():
        Question.objects.create(question_text="saved")
        transaction.on_commit(lambda: ran.append(True))
    assert ran == [True]
    assert "Error calling _QueueOnCommit in on_commit()" in caplog.text


@pytest.mark.django_db(transaction=True, databases="__all__")  # flush_diffs reads each outbox
@pytest.mark.usefixtures("small_chunks")
@pytest.mark.parametrize("mode", ["log", "raise"])
def test_redis_down_at_commit_keeps_durable_rows_in_log_and_raise_modes(mode, caplog):
    pks = make_questions(40)
    failing = unreachable(durable=True, on_redis_error=mode)
    raised = pytest.raises(DiffsWriteError) if mode == "raise" else _nothing()
    with caplog.at_level(logging.ERROR, logger="diffs"), raised, failing, transaction.atomic():
        Question.objects.update(votes=6)
    assert OutboxEntry.objects.exists()
    assert "stay in the diffs outbox table" in caplog.text
    delivery.clear()
    with diffs_settings(durable=True):
        diffs.flush_diffs()
    assert_one_diff_each(pks, lambda pk: {"votes": 6})
    assert not OutboxEntry.objects.exists()


@pytest.mark.usefixtures("small_chunks")
@pytest.mark.parametrize("mode", ["retry", "log"])
def test_a_spilled_piece_redis_refuses_is_handed_to_delivery(mode, monkeypatch):
    # Redis answering with an error (not out of reach): delivery writes the piece
    # again, one diff at a time if need be, instead of dropping what follows.
    pks = make_questions(40)
    real = store.write_many
    refusals = iter([redis.ResponseError("WRONGTYPE Operation against a key")])

    def refuse_once(client: Any, writes: Any, **kwargs: Any) -> list[float]:
        refusal = next(refusals, None)
        if refusal is not None and len(writes) > 1:  # the piece's write, not a single diff
            raise refusal
        return real(client, writes, **kwargs)

    monkeypatch.setattr(store, "write_many", refuse_once)
    with diffs_settings(on_redis_error=mode), transaction.atomic():
        Question.objects.update(votes=2)
    assert_one_diff_each(pks, lambda pk: {"votes": 2})
    assert not OutboxEntry.objects.exists()


class NoDiffsTablesHere:
    """A router keeping diffs' tables off the default database."""

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool | None:
        return False if app_label == "diffs" and db == "default" else None


@pytest.mark.usefixtures("small_chunks")
def test_a_router_keeping_the_outbox_elsewhere_keeps_diffs_in_memory(monkeypatch, caplog):
    monkeypatch.setattr(on_commit, "_warned_no_outbox", set(), raising=False)
    pks = make_questions(40)
    routed = override_settings(DATABASE_ROUTERS=[NoDiffsTablesHere()])
    with caplog.at_level(logging.WARNING, logger="diffs"), routed, transaction.atomic():
        Question.objects.update(votes=3)
        assert not OutboxEntry.objects.exists()
    assert "database router" in caplog.text and "migrate diffs" in caplog.text
    assert_one_diff_each(pks, lambda pk: {"votes": 3})


@pytest.mark.parametrize("backend", ["this_one", "bulk_create", "one_by_one"])
def test_the_outbox_takes_many_diffs_in_order_on_every_kind_of_backend(backend, monkeypatch):
    # this_one: COPY on PostgreSQL, INSERT ... RETURNING on SQLite; then what other
    # backends get: Django's bulk_create(), or one INSERT per diff.
    from diffs.delivery import outbox

    if backend != "this_one":
        monkeypatch.setattr(outbox, "_RETURNING_VENDORS", ())
        monkeypatch.setattr(outbox, "_can_copy", lambda connection: False)
    if backend == "one_by_one":
        features = type(connection.features)
        monkeypatch.setattr(features, "can_return_rows_from_bulk_insert", False)
    questions = Question.objects.bulk_create([Question(question_text="x") for _ in range(3)])
    outgoing = [
        diffs.payload.build_diff(q, {"votes": 0}, layout=current_layout(), created=False)
        for q in questions
    ]
    with transaction.atomic():
        ids = outbox.insert_many(outgoing, "default")
        back = outbox.read("default", list(reversed(ids)))
    assert [diff.outbox_row for diff in back] == [("default", i) for i in reversed(ids)]
    assert [diff.member for diff in back] == [d.member for d in reversed(outgoing)]


def test_an_unknown_field_keeps_djangos_error():
    from django.core.exceptions import FieldDoesNotExist, FieldError

    with pytest.raises((FieldError, FieldDoesNotExist)):
        Question.objects.update(no_such_field=1)
