"""Exit hooks: the diffs a process holds for Redis are written at every exit but a kill.

With ``write_behind``, a committed diff waits a few milliseconds in this process's memory
(:mod:`diffs.delivery.queue`) for the background thread. A normal exit writes what waits
(``atexit``), but two common ends of a process skip ``atexit``:

* SIGTERM, the stop signal of systemd, Docker and Kubernetes, whose default action ends
  the process on the spot. :func:`install_exit_hooks` puts a handler in front of the one
  the process had: it writes the waiting diffs, then does what that handler would have
  done (calls a Python handler; under ``SIG_DFL``, dies of SIGTERM, with the same exit
  status). An ignored SIGTERM stays ignored.
* the normal end of a ``multiprocessing`` child started by fork or forkserver, a
  ``ProcessPoolExecutor`` worker among them: ``Process._bootstrap`` ends in
  ``os._exit()``, after running the finalizers registered with
  ``multiprocessing.util.Finalize``. One of them writes the waiting diffs. (A spawned
  child ends with ``sys.exit()``: it runs ``atexit`` as well.)

Every hook waits for Redis at most :func:`exit_wait_seconds`, then logs an ERROR with
the number of diffs it could not write. SIGKILL, or a crash, still loses them: nothing
of the process runs then.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.util import Finalize
from types import FrameType
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ImproperlyConfigured

from diffs.delivery import background, queue
from diffs.settings import get_settings

if TYPE_CHECKING:
    from multiprocessing.util import Finalize

logger = logging.getLogger("diffs")

#: How long an exit waits for Redis when ``socket_timeout`` is None (no timeout).
EXIT_WAIT_WITHOUT_SOCKET_TIMEOUT = 10.0

#: Priority of the finalizer of a multiprocessing child (higher ones run first): before
#: the finalizers that close the child's queues and pools, which the write does not need,
#: and with logging still in place to report a loss.
CHILD_EXIT_PRIORITY = 100

#: Code of these packages may hold a lock that the write of the waiting diffs needs (the
#: queue's, a connection pool's): a signal that interrupts it must not wait for that write.
_WRITE_PATH_PACKAGES = frozenset({"diffs", "redis", "fakeredis"})

#: What SIGTERM did before django-diffs' handler: a Python callable, or ``SIG_DFL``.
PreviousHandler = Callable[[int, FrameType | None], Any] | int


def exit_wait_seconds() -> float:
    """How long an exit waits for Redis at most: twice ``socket_timeout`` (a write already
    in flight may take one, the exit's own write another), or
    :data:`EXIT_WAIT_WITHOUT_SOCKET_TIMEOUT` when ``socket_timeout`` is None."""
    try:
        timeout = get_settings().socket_timeout
    except ImproperlyConfigured:  # the checks name the problem; the exit still waits
        timeout = None
    return 2 * timeout if timeout else EXIT_WAIT_WITHOUT_SOCKET_TIMEOUT


def write_waiting_diffs(timeout: float | None = None) -> int:
    """Write the diffs this process still holds for Redis; return how many were not.

    For exits django-diffs cannot hook by itself, above all a SIGTERM handler of yours
    installed after Django's setup (it replaced django-diffs' handler): call this first,
    then end the process your way. It waits at most ``timeout`` seconds (default
    :func:`exit_wait_seconds`), even when Redis hangs, and never for a write that the
    calling thread was itself interrupted in (a signal arriving mid-write). Diffs it could
    not write are counted in an ERROR log; 0 means Redis has them all.
    """
    if _in_write_path(sys._getframe(1)):  # first: this thread may hold the queue's lock
        return _report_unwritten("a signal interrupted this thread in the middle of a write")
    if not queue.unwritten():
        return 0
    return _write_for_exit(exit_wait_seconds() if timeout is None else timeout)


def at_exit() -> None:
    """The ``atexit`` hook, and the finalizer of a multiprocessing child: write what
    waits, within :func:`exit_wait_seconds`."""
    if queue.unwritten():
        _write_for_exit(exit_wait_seconds())


def install_exit_hooks() -> None:
    """Have every exit that is not a kill write the diffs still waiting for Redis.

    Installs django-diffs' SIGTERM handler (from the main thread only, where Python allows
    it, and once per process; a forked child inherits it) and, in a multiprocessing child,
    a finalizer. Called by ``AppConfig.ready()`` when ``write_behind`` is on, and each time
    the write-behind thread starts. Never raises: a save must not fail because of it.
    """
    try:
        _install_sigterm_hook()
        _install_child_finalizer()
    except Exception:
        logger.exception(
            "django-diffs could not install its exit hooks: diffs waiting for Redis when "
            "this process gets SIGTERM, or ends as a multiprocessing child, may be lost."
        )


def _write_for_exit(seconds: float) -> int:
    finished = _write_within(seconds)
    if finished:
        return _report_unwritten("the write failed, see the error above")
    return _report_unwritten(f"Redis did not answer within {seconds:g} s")


def _write_within(seconds: float) -> bool:
    # From a helper thread, waited for at most `seconds`: neither a Redis that hangs nor a
    # lock some thread never lets go can hold the exit longer. The helper is a daemon,
    # abandoned when the process ends. True when it finished.
    deadline = time.monotonic() + seconds
    helper = threading.Thread(
        target=_write_until_done, args=(deadline,), name="diffs-exit-write", daemon=True
    )
    try:
        helper.start()
    except RuntimeError:
        # Python 3.12+ starts no thread once the interpreter is shutting down (atexit):
        # write from here; each Redis call still gives up after socket_timeout.
        _write_until_done(deadline)
        return True
    helper.join(max(0.0, deadline - time.monotonic()))
    return not helper.is_alive()


def _write_until_done(deadline: float) -> None:
    # A loop, since other threads may commit meanwhile; it ends at the first write that
    # fails (write_queued() logged why) or at the deadline.
    try:
        while queue.unwritten() and time.monotonic() < deadline:
            if not queue.write_queued(force=True).written:
                return
    except Exception:  # the process is ending: report, never raise
        logger.exception("Could not write the diffs waiting for Redis at exit.")


def _report_unwritten(why: str) -> int:
    left = queue.unwritten()
    if left:
        logger.error(
            "%d diff(s) committed in this process were not written to Redis: they were "
            "still waiting for Redis when the process exited (%s). They are lost unless "
            "durable mode kept them in the outbox table: clients syncing these objects "
            "must reload them.",
            left,
            why,
        )
    return left


def _in_write_path(frame: FrameType | None) -> bool:
    # True when `frame`, or a caller of it, runs code of django-diffs (but this module),
    # redis-py or fakeredis.
    while frame is not None:
        module = str(frame.f_globals.get("__name__", ""))
        if module != __name__ and module.partition(".")[0] in _WRITE_PATH_PACKAGES:
            return True
        frame = frame.f_back
    return False


class SigtermHook:
    """django-diffs' SIGTERM handler: writes the waiting diffs, then does what the handler
    it replaced (``previous``) would have done."""

    def __init__(self, previous: PreviousHandler) -> None:
        self.previous = previous
        #: "idle"; "writing" (this handler is); "handed over" (a helper thread writes, then
        #: sends the signal again); "written" (the helper did: the next call ends).
        self.state = "idle"

    def __repr__(self) -> str:
        return f"<django-diffs SIGTERM handler, then {self.previous!r}>"

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.state == "written":
            self.state = "idle"
            self.end_as_before(signum, frame)
        elif self.state != "idle":
            return  # sent again while we write: the first one ends the process
        elif _in_write_path(frame):
            self.hand_over(signum, frame)
        else:
            self.state = "writing"
            try:
                _write_for_exit(exit_wait_seconds())
            finally:
                self.state = "idle"
            self.end_as_before(signum, frame)

    def hand_over(self, signum: int, frame: FrameType | None) -> None:
        """Write from a helper thread, then signal the main thread again.

        The signal interrupted the main thread in the middle of django-diffs' or
        redis-py's code, maybe holding a lock the write needs: waiting here would wait for
        ourselves. Returning lets that code finish (within socket_timeout); the helper
        writes the rest, then sends the signal again, and that call ends the process.
        """
        self.state = "handed over"
        helper = threading.Thread(
            target=self._write_then_signal, args=(signum,), name="diffs-exit-write", daemon=True
        )
        try:
            helper.start()
        except RuntimeError:  # the interpreter is shutting down: end now
            self.state = "idle"
            _report_unwritten("a signal interrupted the main thread in the middle of a write")
            self.end_as_before(signum, frame)

    def _write_then_signal(self, signum: int) -> None:
        try:
            _write_for_exit(exit_wait_seconds())
        finally:
            self.state = "written"
            main = threading.main_thread().ident
            if main is not None:  # Python handlers run in the main thread only
                signal.pthread_kill(main, signum)

    def end_as_before(self, signum: int, frame: FrameType | None) -> None:
        """Do what the replaced handler does: call it, or, for ``SIG_DFL``, die of the
        signal (the exit status a supervisor expects: -15 in Python's terms, 143 in a
        shell's)."""
        if callable(self.previous):
            self.previous(signum, frame)
            return
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        # Not reached: the kernel ends the process before kill() returns to a thread that
        # does not block the signal, as this one (running a Python handler) does not.
        os._exit(128 + signum)  # pragma: no cover


_sigterm_hook: SigtermHook | None = None
#: The finalizer of this multiprocessing child, with the pid it was registered in.
_child_finalizer: tuple[int, Finalize[None]] | None = None


def _install_sigterm_hook() -> None:
    global _sigterm_hook
    if _sigterm_hook is not None or os.name != "posix":
        return
    if threading.current_thread() is not threading.main_thread():
        return  # signal.signal() raises elsewhere; a start from the main thread installs it
    previous = signal.getsignal(signal.SIGTERM)
    if previous is None or previous == signal.SIG_IGN or isinstance(previous, SigtermHook):
        # Ignored stays ignored, and a handler set outside Python cannot be called from
        # ours: leave those alone.
        return
    hook = SigtermHook(previous)
    signal.signal(signal.SIGTERM, hook)
    _sigterm_hook = hook


def _install_child_finalizer() -> None:
    global _child_finalizer
    # Imported by every multiprocessing child; importing it here would register its exit
    # function in processes that never use it.
    multiprocessing = sys.modules.get("multiprocessing")
    if multiprocessing is None or multiprocessing.parent_process() is None:
        return  # not a multiprocessing child: atexit runs at the end
    pid = os.getpid()
    if _child_finalizer is not None:
        registered_in, finalizer = _child_finalizer
        # A child's bootstrap empties the registry it inherited; a forked one inherits ours.
        if registered_in == pid and finalizer.still_active():
            return
    _child_finalizer = (pid, Finalize(None, at_exit, exitpriority=CHILD_EXIT_PRIORITY))


# The write-behind thread calls this at each start: from then on the process holds
# diffs that these hooks must write at exit.
background.thread_start_callbacks.append(install_exit_hooks)
