"""With ``write_behind``, what waits for Redis is written at every exit that is not a kill.

Real processes (``tests/support/exit_child.py``) run Django against a redis-server of the test's
own, in every configuration of the suite. To have diffs wait at the exit for sure, the
test stops that server (SIGSTOP) before the child saves: one diff is then in a write that
cannot finish and four more wait behind it. The test ends the child the way it ends in
production (SIGTERM, the normal end of a multiprocessing child), lets Redis run again
(SIGCONT), and counts what reached it. Without the exit hooks the four are lost: the
process is gone before Redis answers.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from diffs import delivery
from diffs.delivery import background, exit_hooks, store
from diffs.delivery import queue as delivery_queue
from tests.conftest import diffs_settings
from tests.support.redis_server import RedisServer, redis_server
from tests.support.stored import stored_count
from tests.testapp.models import Question

ROOT = Path(__file__).resolve().parent.parent
RUN = "from tests.support.exit_child import main; main()"

#: Seconds any wait for a child gives up after; never reached when all goes well.
BOUND = 60.0

pytestmark = pytest.mark.skipif(os.name != "posix", reason="signals and fork are POSIX")


class Child:
    """A child process of ``tests/support/exit_child.py``, read line by line with a timeout."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", RUN, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.errors: list[str] = []
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        self.errors.extend(self.process.stderr)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def stderr(self) -> str:
        return "".join(self.errors)

    def expect(self, prefix: str) -> list[str]:
        """Wait for a line starting with ``prefix``; return the words after it."""
        deadline = time.monotonic() + BOUND
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:  # the child closed its stdout
                break
            if line.startswith(prefix):
                return line[len(prefix) :].split()
        self.stop()
        pytest.fail(f"no line {prefix!r} from the child; its stderr:\n{self.stderr}")

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def wait(self) -> int:
        """The exit status (``-N``: killed by signal N), within ``BOUND`` seconds."""
        try:
            return self.process.wait(timeout=BOUND)
        except subprocess.TimeoutExpired:
            self.stop()
            pytest.fail(f"the child did not end; its stderr:\n{self.stderr}")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=BOUND)


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with redis_server() as started:
        try:
            yield started
        finally:
            os.kill(started.pid, signal.SIGCONT)  # stopped or not, it must stop on SIGTERM


@pytest.fixture
def start_child(server: RedisServer, tmp_path: Path) -> Iterator:
    children: list[Child] = []

    def start(*args: str, socket_timeout: float = 10.0) -> Child:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.support.exit_settings",
            "PYTHONPATH": str(ROOT),
            "DIFFS_EXIT_DB": str(tmp_path / "db.sqlite3"),
            "DIFFS_EXIT_REDIS_URL": f"redis://127.0.0.1:{server.port}/1",
            "DIFFS_EXIT_SOCKET_TIMEOUT": str(socket_timeout),
        }
        children.append(Child(list(args), env))
        return children[-1]

    yield start
    for child in children:
        child.stop()


@contextlib.contextmanager
def stopped(server: RedisServer) -> Iterator[None]:
    """Redis takes commands but answers none until the block ends (SIGSTOP, SIGCONT)."""
    os.kill(server.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.pid, signal.SIGCONT)


def stored(server: RedisServer, pks: list[str]) -> tuple[int, list[str]]:
    """How many diffs the feed holds, and which of ``pks`` have no diff."""
    client = redis.Redis(port=server.port, db=1, socket_timeout=BOUND)
    try:
        in_feed = client.xlen("diffs:log:testapp.question")
        missing = [pk for pk in pks if client.strlen(f"diffs:ix:testapp.question:{pk}") != 16]
    finally:
        client.close()
    return in_feed, missing


def save_then_sigterm(child: Child, server: RedisServer) -> list[str]:
    """Have the child save with Redis stopped, SIGTERM it, then let Redis run again."""
    child.expect("up")
    with stopped(server):
        child.send("go")
        pks = child.expect("ready")
        os.kill(child.pid, signal.SIGTERM)
        time.sleep(0.3)  # the handler is waiting for Redis when it answers again
    return pks


# SIGTERM -------------------------------------------------------------------------------


def test_sigterm_writes_the_waiting_diffs_then_the_process_dies_of_it(start_child, server):
    child = start_child("sigterm", "default")
    pks = save_then_sigterm(child, server)

    assert child.wait() == -signal.SIGTERM, child.stderr  # as under SIG_DFL
    assert stored(server, pks) == (1 + 5, []), child.stderr  # the warm-up's and the five
    assert "ERROR" not in child.stderr


def test_an_application_handler_installed_before_django_runs_after_the_write(start_child, server):
    child = start_child("sigterm", "app-before")
    pks = save_then_sigterm(child, server)

    assert child.wait() == 5, child.stderr  # the application's handler ends the process
    child.expect("app handler")
    assert stored(server, pks) == (6, []), child.stderr


def test_an_application_handler_installed_after_django_can_chain_to_ours(start_child, server):
    # signal.signal() returned django-diffs' handler; calling it last writes the diffs,
    # then ends the process as SIGTERM's default would have.
    child = start_child("sigterm", "app-after-chains")
    pks = save_then_sigterm(child, server)

    assert child.wait() == -signal.SIGTERM, child.stderr
    child.expect("app handler")
    assert stored(server, pks) == (6, []), child.stderr


def test_an_application_handler_installed_after_django_can_call_write_waiting_diffs(
    start_child, server
):
    child = start_child("sigterm", "app-after-helper")
    pks = save_then_sigterm(child, server)

    assert child.wait() == 7, child.stderr
    assert child.expect("app handler, unwritten:") == ["0"]
    assert stored(server, pks) == (6, []), child.stderr


def test_sigterm_while_the_main_thread_itself_writes_neither_deadlocks_nor_loses(
    start_child, server
):
    # The main thread holds the queue's send lock, blocked in a write to the stopped
    # Redis, when SIGTERM comes: the handler must not wait for that lock.
    child = start_child("sigterm-mid-write")
    pks = save_then_sigterm(child, server)

    assert child.wait() == -signal.SIGTERM, child.stderr
    child.expect("flush_diffs returned")  # the interrupted write finished first
    assert stored(server, pks) == (1 + 3, []), child.stderr


def test_sigterm_gives_up_on_a_redis_that_never_answers_and_says_how_many_are_lost(
    start_child, server
):
    child = start_child("sigterm", "default", socket_timeout=0.5)
    child.expect("up")
    with stopped(server):
        child.send("go")
        child.expect("ready")
        signalled = time.monotonic()
        os.kill(child.pid, signal.SIGTERM)
        status = child.wait()  # Redis stays stopped: the handler must give up by itself
        waited = time.monotonic() - signalled

    assert status == -signal.SIGTERM, child.stderr
    assert waited < 30, waited  # twice socket_timeout (1 s), on a loaded machine
    assert "ERROR diffs: 5 diff(s) committed in this process were not written" in child.stderr
    assert "lost unless durable mode" in child.stderr


# multiprocessing children ---------------------------------------------------------------


def start_methods() -> list[str]:
    import multiprocessing

    available = multiprocessing.get_all_start_methods()
    return [method for method in ("fork", "spawn", "forkserver") if method in available]


@pytest.mark.parametrize("method", start_methods())
def test_a_multiprocessing_child_that_returns_writes_what_it_saved(start_child, server, method):
    child = start_child("process", method)
    child.expect("up")
    with stopped(server):
        child.send("go")
        pks = child.expect("child saved")
        child.expect("ready, child running:")

    assert child.expect("child exit code:") == ["0"], child.stderr
    assert child.wait() == 0, child.stderr
    assert stored(server, pks) == (1 + 5, []), child.stderr


@pytest.mark.parametrize("method", [m for m in start_methods() if m != "spawn"])
def test_a_process_pool_worker_writes_what_it_saved_when_the_pool_shuts_down(
    start_child, server, method
):
    child = start_child("pool", method)
    child.expect("up")
    with stopped(server):
        child.send("go")
        pks = child.expect("child saved")
        child.expect("ready, worker running:")

    assert child.expect("pool shut down:") == ["True"], child.stderr
    assert child.wait() == 0, child.stderr
    assert stored(server, pks) == (1 + 5, []), child.stderr


# In this process: the parts, one by one ------------------------------------------------
#
# The child processes above show the whole; these pin each rule down quickly (and count
# for coverage, which child processes do not).


set_handler = signal.signal


@pytest.fixture
def sigterm_restored() -> Iterator[None]:
    """SIGTERM as in a fresh process (SIG_DFL, no hook installed), then as it was."""
    before = signal.getsignal(signal.SIGTERM)
    installed = exit_hooks._sigterm_hook
    exit_hooks._sigterm_hook = None
    set_handler(signal.SIGTERM, signal.SIG_DFL)  # as a fresh process has it
    yield
    set_handler(signal.SIGTERM, before)  # the real one: a test may have patched signal.signal
    exit_hooks._sigterm_hook = installed


@pytest.fixture
def queued(monkeypatch) -> Iterator[None]:
    """write_behind with the background writer kept asleep: saved diffs stay queued."""
    monkeypatch.setattr(background._thread, "wake", lambda **kwargs: None)
    with diffs_settings(write_behind=True):
        yield
    delivery.clear()


@pytest.fixture
def redis_hangs(monkeypatch) -> Iterator[threading.Event]:
    """Writes block until the returned event is set (or 10 s pass)."""
    answer = threading.Event()
    real = store.write_many

    def hanging(*args, **kwargs):
        answer.wait(10)
        return real(*args, **kwargs)

    monkeypatch.setattr(store, "write_many", hanging)
    yield answer
    answer.set()


def stored_for(redis_client, question) -> int:
    return stored_count(redis_client, Question.diffs.get_key(question.pk))


def test_the_hook_goes_in_front_of_a_python_handler_once(sigterm_restored):
    def app_handler(signum, frame):
        pass

    signal.signal(signal.SIGTERM, app_handler)
    exit_hooks.install_exit_hooks()
    hook = signal.getsignal(signal.SIGTERM)
    exit_hooks.install_exit_hooks()  # again (the writer restarted): nothing changes

    assert isinstance(hook, exit_hooks.SigtermHook)
    assert hook.previous is app_handler
    assert signal.getsignal(signal.SIGTERM) is hook
    assert "app_handler" in repr(hook)


@pytest.mark.parametrize("disposition", [signal.SIG_IGN, None])
def test_an_ignored_sigterm_stays_ignored_and_a_foreign_handler_is_left_alone(
    sigterm_restored, monkeypatch, disposition
):
    monkeypatch.setattr(signal, "getsignal", lambda signum: disposition)
    installed = []
    monkeypatch.setattr(signal, "signal", lambda *args: installed.append(args))

    exit_hooks.install_exit_hooks()

    assert installed == []
    assert exit_hooks._sigterm_hook is None


def test_no_hook_is_installed_from_another_thread(sigterm_restored):
    before = signal.getsignal(signal.SIGTERM)
    thread = threading.Thread(target=exit_hooks.install_exit_hooks)
    thread.start()
    thread.join(BOUND)

    assert signal.getsignal(signal.SIGTERM) is before
    exit_hooks.install_exit_hooks()  # from the main thread, later: now it is
    assert isinstance(signal.getsignal(signal.SIGTERM), exit_hooks.SigtermHook)


def test_a_failing_install_is_logged_and_never_raises(sigterm_restored, monkeypatch, caplog):
    def refuse(*args):
        raise ValueError("signal only works in main thread of the main interpreter")

    monkeypatch.setattr(signal, "signal", refuse)
    exit_hooks.install_exit_hooks()

    assert "could not install its exit hooks" in caplog.text


@pytest.mark.django_db(transaction=True)
def test_the_hook_writes_then_calls_the_handler_it_replaced(queued, redis_client):
    question = Question.objects.create(question_text="waits")
    calls = []
    hook = exit_hooks.SigtermHook(
        lambda signum, frame: calls.append(stored_for(redis_client, question))
    )

    hook(signal.SIGTERM, None)

    assert calls == [1]  # the diff was in Redis when the application's handler ran
    assert hook.state == "idle"


@pytest.mark.django_db(transaction=True)
def test_under_sig_dfl_the_hook_dies_of_the_signal_after_writing(
    sigterm_restored, queued, redis_client, monkeypatch
):
    question = Question.objects.create(question_text="waits")
    kills = []
    monkeypatch.setattr(os, "kill", lambda pid, signum: kills.append((pid, signum)))
    monkeypatch.setattr(os, "_exit", lambda status: kills.append(status))

    exit_hooks.SigtermHook(signal.SIG_DFL)(signal.SIGTERM, None)

    assert stored_for(redis_client, question) == 1
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    assert kills[0] == (os.getpid(), signal.SIGTERM)


@pytest.mark.django_db(transaction=True)
def test_a_signal_inside_a_write_hands_the_write_over_and_comes_again(
    queued, redis_client, monkeypatch
):
    question = Question.objects.create(question_text="waits")
    sent = threading.Event()
    monkeypatch.setattr(signal, "pthread_kill", lambda thread, signum: sent.set())
    calls = []
    hook = exit_hooks.SigtermHook(lambda signum, frame: calls.append(signum))
    # The helper's write waits until the second signal below has come: without the
    # gate, a helper that finished first made that signal end the process already.
    gate, write = threading.Event(), delivery_queue.write_queued

    def held_write(*args, **kwargs):
        assert gate.wait(BOUND)
        return write(*args, **kwargs)

    monkeypatch.setattr(delivery_queue, "write_queued", held_write)

    hook(signal.SIGTERM, _frame_inside_diffs())
    assert calls == []  # returned at once: the interrupted code goes on
    hook(signal.SIGTERM, None)  # sent again by the user meanwhile: ignored
    gate.set()
    assert sent.wait(BOUND)
    hook(signal.SIGTERM, None)  # the helper's signal

    assert calls == [signal.SIGTERM]
    assert stored_for(redis_client, question) == 1


def _frame_inside_diffs():
    captured = []
    exec(
        "captured.append(sys._getframe())",
        {"__name__": "diffs.delivery", "sys": sys, "captured": captured},
    )
    return captured[0]


@pytest.mark.django_db(transaction=True)
def test_the_wait_is_bounded_and_the_loss_is_counted_in_an_error(queued, redis_hangs, caplog):
    Question.objects.create(question_text="one")
    Question.objects.create(question_text="two")
    started = time.monotonic()

    with caplog.at_level("ERROR", logger="diffs"):
        left = exit_hooks.write_waiting_diffs(timeout=0.3)

    assert left == 2
    assert time.monotonic() - started < 5
    assert "2 diff(s) committed in this process were not written" in caplog.text
    assert "Redis did not answer within 0.3 s" in caplog.text


@pytest.mark.django_db(transaction=True)
def test_write_waiting_diffs_never_waits_for_a_write_its_own_thread_was_in(queued, caplog):
    # As called from a signal handler that interrupted this thread in enqueue(), with
    # the queue's lock held.
    Question.objects.create(question_text="one")
    namespace = {"__name__": "diffs.delivery", "exit_hooks": exit_hooks, "result": []}

    def interrupted_in_enqueue() -> None:
        with delivery_queue._queue.lock:
            exec("result.append(exit_hooks.write_waiting_diffs())", namespace)

    thread = threading.Thread(target=interrupted_in_enqueue, daemon=True)
    thread.start()
    thread.join(10)

    assert not thread.is_alive(), "write_waiting_diffs() waited for its own thread"
    assert namespace["result"] == [1]
    assert "interrupted this thread in the middle of a write" in caplog.text


def test_write_waiting_diffs_with_nothing_waiting_returns_at_once():
    assert exit_hooks.write_waiting_diffs() == 0


@pytest.mark.django_db(transaction=True)
def test_a_write_that_fails_at_exit_is_counted(queued, monkeypatch, caplog):
    Question.objects.create(question_text="one")

    def broken(*args, **kwargs):
        raise redis.ConnectionError("Redis is down")

    monkeypatch.setattr(store, "write_many", broken)
    exit_hooks.at_exit()

    assert "1 diff(s) committed in this process were not written" in caplog.text
    assert "the write failed, see the error above" in caplog.text


@pytest.mark.django_db(transaction=True)
def test_without_new_threads_the_exit_writes_in_place(queued, redis_client, monkeypatch):
    # Python 3.12+ refuses to start threads once the interpreter is shutting down.
    class Refused(threading.Thread):
        def start(self):
            raise RuntimeError("can't create new thread at interpreter shutdown")

    question = Question.objects.create(question_text="one")
    monkeypatch.setattr(exit_hooks.threading, "Thread", Refused)
    exit_hooks.at_exit()
    assert stored_for(redis_client, question) == 1

    calls = []
    exit_hooks.SigtermHook(lambda s, f: calls.append(s)).hand_over(signal.SIGTERM, None)
    assert calls == [signal.SIGTERM]  # no helper for the hand-over: it ends at once


def test_an_unexpected_error_in_the_exit_write_is_logged(queued, monkeypatch, caplog):
    monkeypatch.setattr(delivery_queue, "unwritten", lambda: 1)
    monkeypatch.setattr(delivery_queue, "write_queued", lambda force=False: None)  # not a Written
    exit_hooks._write_until_done(time.monotonic() + 1)
    assert "Could not write the diffs waiting for Redis at exit" in caplog.text


def test_the_exit_wait_is_twice_socket_timeout(settings):
    with diffs_settings(socket_timeout=1.5):
        assert exit_hooks.exit_wait_seconds() == 3.0
    with diffs_settings(socket_timeout=None):
        assert exit_hooks.exit_wait_seconds() == exit_hooks.EXIT_WAIT_WITHOUT_SOCKET_TIMEOUT
    with diffs_settings(socket_timeout="soon"):  # refused by the checks; the exit still waits
        assert exit_hooks.exit_wait_seconds() == exit_hooks.EXIT_WAIT_WITHOUT_SOCKET_TIMEOUT


def test_in_a_multiprocessing_child_one_finalizer_is_registered(monkeypatch):
    import multiprocessing

    monkeypatch.setattr(multiprocessing, "parent_process", lambda: object())
    monkeypatch.setattr(exit_hooks, "_child_finalizer", None)
    exit_hooks._install_child_finalizer()
    pid, finalizer = exit_hooks._child_finalizer
    try:
        exit_hooks._install_child_finalizer()
        assert exit_hooks._child_finalizer[1] is finalizer
        assert pid == os.getpid()
        assert finalizer.still_active()
    finally:
        finalizer.cancel()
    exit_hooks._install_child_finalizer()  # its bootstrap emptied the registry: again
    assert exit_hooks._child_finalizer[1] is not finalizer
    exit_hooks._child_finalizer[1].cancel()


def test_ready_reads_write_behind_without_failing_on_bad_settings():
    from diffs.apps import _write_behind_configured

    with diffs_settings(write_behind=True):
        assert _write_behind_configured() is True
    with diffs_settings(write_behind="yes"):
        assert _write_behind_configured() is False  # diffs.E022 says why
