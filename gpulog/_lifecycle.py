"""How a process that logs ends: SIGTERM, Ctrl-C during the exit drain (host side, torch-free).

SIGTERM (how SLURM and Kubernetes preempt jobs)
------------------------------------------------
gpulog installs one handler, the first time a writer thread starts, unless ``GPULOG_SIGTERM=0``
or the current handler is ``SIG_IGN`` or not a Python function or ``SIG_DFL``.  When SIGTERM
arrives, the handler's behaviour depends on who is in charge of the signal:

* **gpulog's handler is the installed one and it replaced the default**: it drains every event
  file on a helper thread (the handler itself takes no lock: it may have interrupted code holding
  one), makes later ``add_*`` calls wait for that end, then restores the default and re-raises
  SIGTERM, so the exit status still says "killed by SIGTERM".  Every value whose call returned
  is written.
* **gpulog's handler is the installed one and it replaced a Python handler**: the drain runs,
  then the replaced handler is called with the signal (it may exit: the exit hook writes the rest).
* **another handler was installed after gpulog's and calls it** (PyTorch Lightning's signal
  connector composes the previous handler into its own): gpulog starts the drain and returns.  The
  framework decides how the process ends (Lightning finishes its step, runs ``on_exception`` and
  teardown, which closes the writer); gpulog never kills a process whose current handler is
  someone else's.

A writer built on a thread other than the main one cannot install a handler there (Python allows
``signal.signal`` on the main thread only).  gpulog then asks the interpreter to install it from
the main thread at that thread's next bytecode (``Py_AddPendingCall``): at once if the main
thread runs Python code, later if it is blocked in a C call (a ``join()`` without timeout, say).
Where that is not possible (not CPython) it warns once; a writer created on the main thread
installs it, or call ``writer.flush()`` in a handler of your own.

Ctrl-C
------
The exit drain (``atexit``) ignores further SIGINTs while it writes the backlog: a second Ctrl-C
used to abort it and lose what was queued.  A note on stderr says that it is still writing.
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading
from typing import Any, Callable, Iterator, List, Optional

_installed = False
_pending_calls: List[Any] = []  # ctypes callbacks kept alive until the interpreter runs them
_warned_thread = False


def install_sigterm_handler(drain: Callable[[], None], flush: Callable[[], None],
                            block: Callable[[Callable[[], Any]], None]) -> bool:
    """Install gpulog's SIGTERM handler (see the module docstring); returns whether it did.

    ``drain`` writes everything queued and stops the writer (the exit drain: the process dies
    after it), ``flush`` writes everything queued and keeps the writer running (the process may
    go on), ``block`` makes later ``add_*`` calls wait on the function it is given (the writer
    engine passes its own).  From a non-main thread the install is scheduled on the main thread."""
    global _installed
    import signal
    if _installed or os.environ.get("GPULOG_SIGTERM", "1") == "0" or not hasattr(signal, "SIGTERM"):
        return False
    if threading.current_thread() is not threading.main_thread():
        return _install_from_main_thread_soon(lambda: install_sigterm_handler(drain, flush, block))
    previous = signal.getsignal(signal.SIGTERM)
    if previous is not signal.SIG_DFL and not callable(previous):
        return False
    handler = _Handler(previous, drain, flush, block)
    try:
        signal.signal(signal.SIGTERM, handler)
    except (ValueError, OSError):  # not the main interpreter, or an embedded one
        return False
    _installed = True
    return True


class _Handler:
    def __init__(self, previous: Any, drain: Callable[[], None], flush: Callable[[], None],
                 block: Callable[[Callable[[], Any]], None]) -> None:
        self.previous, self.drain, self.flush, self.block = previous, drain, flush, block
        self.drained = threading.Event()
        self.started = False
        self.gpulog_sigterm = True  # recognisable in signal.getsignal()

    def _start_drain(self, then_die: bool) -> None:
        if self.started:
            return
        self.started = True

        def run() -> None:
            try:
                # Dying: write everything and stop the writer.  Otherwise the process goes on
                # (and logs on): write what is queued, keep the writer.
                (self.drain if then_die else self.flush)()
            finally:
                self.drained.set()
                if then_die:
                    import signal
                    os.kill(os.getpid(), signal.SIGTERM)  # back in the main thread: see __call__

        threading.Thread(target=run, name="gpulog-sigterm", daemon=True).start()

    def __call__(self, signum: int, frame: Any) -> None:
        # Runs in the main thread between two bytecodes, possibly while it holds a lock of
        # gpulog's (inside Event.set(), say): it takes no lock itself.
        import signal
        chained = signal.getsignal(signal.SIGTERM) is not self
        if chained:
            # Chained: a handler installed later calls this one (Lightning).  It decides.
            self._start_drain(then_die=False)
            return
        if callable(self.previous):
            # Drain first (bounded: the interrupted code may hold a lock the drain needs), then
            # defer to the handler gpulog replaced.
            self._start_drain(then_die=False)
            self.drained.wait(30.0)
            self.previous(signum, frame)
            return
        if self.drained.is_set():
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        if not self.started:
            # From here on an add_* never returns: it waits for the end, so every call that did
            # return is covered by the drain.
            self.block(self.drained.wait)
            self._start_drain(then_die=True)


def _install_from_main_thread_soon(install: Callable[[], Any]) -> bool:
    """Schedule ``install()`` on the main thread (CPython's pending calls)."""
    global _warned_thread
    try:
        import ctypes
        callback_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)

        def run(_: Any) -> int:
            try:
                install()
            except Exception:  # noqa: BLE001 - nothing may escape into the interpreter loop
                pass
            return 0

        cb = callback_type(run)
        _pending_calls.append(cb)
        if ctypes.pythonapi.Py_AddPendingCall(cb, None) == 0:
            return True
    except Exception:  # noqa: BLE001 - no ctypes, not CPython
        pass
    if not _warned_thread:
        _warned_thread = True
        import warnings
        warnings.warn("gpulog: this SummaryWriter was created off the main thread, where no SIGTERM "
                      "handler can be installed: values still queued when SIGTERM arrives may be "
                      "lost. Create a writer on the main thread first (it installs the handler), "
                      "or call writer.flush() in your own handler.", RuntimeWarning, stacklevel=4)
    return False


@contextlib.contextmanager
def sigint_deferred(what: str) -> Iterator[None]:
    """Within: Ctrl-C does not raise (the exit drain must not be cut short); each press prints
    a note.  A no-op off the main thread."""
    import signal
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    try:
        previous = signal.signal(signal.SIGINT, lambda signum, frame: sys.stderr.write(
            f"gpulog: still {what}; it cannot be interrupted (it ends by itself)\n"))
    except (ValueError, OSError):
        yield
        return
    try:
        yield
    finally:
        try:
            signal.signal(signal.SIGINT, previous)
        except (ValueError, OSError, TypeError):
            pass
