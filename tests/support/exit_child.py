"""The processes ``tests/test_exit_hooks.py`` ends in the ways processes end in production.

Run as ``python -c "from tests.support.exit_child import main; main()" SCENARIO [ARG]`` with
``DJANGO_SETTINGS_MODULE=tests.support.exit_settings``. Each scenario talks to the test over
stdin/stdout, one line at a time: it says ``up`` once Django runs and its connection to
Redis is made, waits for ``go`` (the test has stopped its redis-server with SIGSTOP
meanwhile), then saves so that one diff is in a write Redis cannot answer and four more
wait behind it, and says ``ready`` with the pks it saved. The test then ends the process
(or lets it end) and, once Redis runs again, counts what reached it.

Every wait here gives up after ``BOUND`` seconds: a broken scenario fails, never hangs.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from types import FrameType

BOUND = 30.0

#: How long a parent gives its multiprocessing child to end after the child's work is
#: done. A child that skips the exit write ends in milliseconds; one that writes waits
#: for the stopped Redis (twice socket_timeout, 20 s here) and is still running.
CHILD_ENDS_WITHIN = 2.0


def say(*words: object) -> None:
    print(*words, flush=True)


def expect_go() -> None:
    readable, _, _ = select.select([sys.stdin], [], [], BOUND)
    line = sys.stdin.readline().strip() if readable else ""
    if line != "go":
        raise RuntimeError(f"expected 'go' from the test, got {line!r}")


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + BOUND
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"gave up waiting for {what}")
        time.sleep(0.002)


def setup_django() -> None:
    import django
    from django.apps import apps

    if not apps.ready:
        django.setup()


def save(text: str) -> int:
    from tests.testapp.models import Question

    return int(Question.objects.create(question_text=text).pk)


def nothing_unwritten() -> bool:
    from diffs import delivery

    return delivery.unwritten() == 0


def prepare(table: bool = True) -> None:
    """Django, the table, and a first diff written: the connection to Redis is made."""
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    setup_django()
    if table:
        from django.db import connection

        from tests.testapp.models import Question

        with connection.schema_editor() as editor:
            editor.create_model(Question)
    save("warm-up")
    wait_for(nothing_unwritten, "the warm-up diff to be written")


def one_in_flight_four_waiting(tag: str) -> list[int]:
    """With Redis stopped: one diff in a write that cannot finish, four queued behind."""
    from diffs import delivery

    pks = [save(f"{tag} in flight")]
    wait_for(
        lambda: delivery.waiting() == 0 and delivery.unwritten() == 1,
        "the write-behind thread to take the first diff",
    )
    pks += [save(f"{tag} waiting {n}") for n in range(4)]
    if delivery.unwritten() != 5:
        raise RuntimeError(f"expected 5 diffs unwritten, found {delivery.unwritten()}")
    return pks


def sleep_until_signalled() -> int:
    time.sleep(BOUND)
    say("no signal came")
    return 2


# SIGTERM scenarios ---------------------------------------------------------------------


def app_handler_that_exits(signum: int, frame: FrameType | None) -> None:
    say("app handler")
    os._exit(5)


def sigterm(handler: str) -> int:
    """SIGTERM with django-diffs' handler in front of SIG_DFL or an application's."""
    if handler == "app-before":
        signal.signal(signal.SIGTERM, app_handler_that_exits)
    prepare()
    if handler == "app-after-chains":
        previous = signal.signal(signal.SIGTERM, lambda s, f: chain(previous, s, f))
    elif handler == "app-after-helper":
        signal.signal(signal.SIGTERM, app_handler_calling_the_helper)
    say("up")
    expect_go()
    say("ready", *one_in_flight_four_waiting("t"))
    return sleep_until_signalled()


def chain(previous: object, signum: int, frame: FrameType | None) -> None:
    # The usual way to keep the handler one replaced: call it last.
    say("app handler")
    assert callable(previous), f"the handler before ours is {previous!r}"
    previous(signum, frame)
    os._exit(6)  # not reached when django-diffs' handler ends the process


def app_handler_calling_the_helper(signum: int, frame: FrameType | None) -> None:
    from diffs import write_waiting_diffs

    say("app handler, unwritten:", write_waiting_diffs())
    os._exit(7)


def sigterm_mid_write() -> int:
    """SIGTERM while the main thread itself writes (flush_diffs()) to the stopped Redis."""
    import diffs
    from diffs import delivery
    from diffs.delivery import background

    prepare()
    say("up")
    expect_go()
    # The write-behind thread waits this long before its next write: this thread writes.
    background.WRITE_BEHIND_WINDOW_SECONDS = BOUND
    pks = [save("main thread writes")]

    def meanwhile() -> None:
        wait_for(lambda: delivery.unwritten() == 1 and delivery.waiting() == 0, "the write")
        more = [save(f"saved during the write {n}") for n in range(2)]
        say("ready", *pks, *more)

    threading.Thread(target=meanwhile, daemon=True).start()
    diffs.flush_diffs()
    say("flush_diffs returned")
    return sleep_until_signalled()


# multiprocessing scenarios -------------------------------------------------------------


def child_work(ready: threading.Event | None = None) -> list[int]:
    """A multiprocessing child's work: returns right after saving, diffs still waiting."""
    setup_django()
    pks = one_in_flight_four_waiting(f"child {os.getpid()}")
    say("child saved", *pks)
    if ready is not None:
        ready.set()
    return pks


def process(method: str) -> int:
    """A ``multiprocessing.Process`` child that returns normally."""
    from django.db import connections

    prepare()
    connections.close_all()  # a forked child must not share our SQLite connection
    context = multiprocessing.get_context(method)
    say("up")
    expect_go()
    ready = context.Event()
    child = context.Process(target=child_work, args=(ready,))
    child.start()
    if not ready.wait(BOUND):
        raise RuntimeError("the child did not save")
    child.join(CHILD_ENDS_WITHIN)
    say("ready, child running:", child.is_alive())
    child.join(BOUND)
    say("child exit code:", child.exitcode)
    return 0


def pool(method: str) -> int:
    """A ``ProcessPoolExecutor`` worker that ends at ``shutdown()``."""
    from django.db import connections

    prepare()
    connections.close_all()
    say("up")
    expect_go()
    executor = ProcessPoolExecutor(
        max_workers=1, mp_context=multiprocessing.get_context(method), initializer=setup_django
    )
    executor.submit(child_work).result(BOUND)
    stopping = threading.Thread(target=executor.shutdown, daemon=True)
    stopping.start()
    stopping.join(CHILD_ENDS_WITHIN)
    say("ready, worker running:", stopping.is_alive())
    stopping.join(BOUND)
    say("pool shut down:", not stopping.is_alive())
    return 0


SCENARIOS: dict[str, Callable[..., int]] = {
    "sigterm": sigterm,
    "sigterm-mid-write": sigterm_mid_write,
    "process": process,
    "pool": pool,
}


def main() -> None:
    scenario, *args = sys.argv[1:]
    sys.exit(SCENARIOS[scenario](*args))
