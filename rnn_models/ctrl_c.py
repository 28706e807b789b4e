"""Ctrl-C that C code swallowed: deliver it again, so the command still ends with one line.

Python raises ``KeyboardInterrupt`` wherever the main thread happens to be when SIGINT arrives.
If that is a Python callback called from C (numba's compiler calls back into Python while it
compiles or caches a kernel; a ``__del__`` run by the garbage collector), the exception cannot
propagate: CPython passes it to ``sys.unraisablehook``, prints "Exception ignored in ..." with a
traceback, and the command goes on as if nothing happened.

:func:`redeliver_swallowed_sigint` installs, for the length of a ``with`` block, a hook that
*arms* a helper thread instead; while armed, the thread sends SIGINT to the main thread every
``RETRY_S`` seconds. The SIGINT handler disarms it the moment a ``KeyboardInterrupt`` is raised;
if that one is swallowed too, the hook arms the thread again. Why a thread: a ``KeyboardInterrupt``
re-raised inside the hook is raised *in the hook* (CPython checks for pending signals there) and
is swallowed once more. ``signal.pthread_kill`` (not ``_thread.interrupt_main``) also wakes a
main thread blocked in a system call.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from collections.abc import Iterator

RETRY_S = 0.1  # s between re-sent SIGINTs while a swallowed one has not reached the main thread


class _Redelivery:
    def __init__(self) -> None:
        self.armed = False
        self.closed = False
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._main = threading.main_thread().ident or 0  # ident is set once a thread has started

    def unraisable_hook(self, unraisable) -> None:
        if unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt):
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._resend, name="sigint-redelivery", daemon=True)
                    self._thread.start()
            self.armed = True  # last: nothing printed; the command prints its one line when SIGINT lands
            return
        sys.__unraisablehook__(unraisable)

    def on_sigint(self, signum, frame) -> None:
        self.armed = False  # plain assignment, no lock: this runs between any two bytecodes
        raise KeyboardInterrupt

    def _resend(self) -> None:
        while not self.closed:
            time.sleep(RETRY_S)  # (releases the GIL)
            if self.armed and not self.closed:
                signal.pthread_kill(self._main, signal.SIGINT)


@contextlib.contextmanager
def redeliver_swallowed_sigint() -> Iterator[None]:
    """Within the block, a Ctrl-C swallowed by C code is delivered to the main thread again.

    Takes effect only in the main thread and while SIGINT has Python's default handler (raise
    ``KeyboardInterrupt``); a caller's own handler is left alone. The caller's
    ``sys.unraisablehook`` and SIGINT handler are restored on exit.
    """
    main_thread = threading.current_thread() is threading.main_thread()
    if not main_thread or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    redelivery = _Redelivery()
    previous_hook, sys.unraisablehook = sys.unraisablehook, redelivery.unraisable_hook
    signal.signal(signal.SIGINT, redelivery.on_sigint)
    try:
        yield
    finally:
        redelivery.closed = True
        redelivery.armed = False
        sys.unraisablehook = previous_hook
        signal.signal(signal.SIGINT, signal.default_int_handler)
