"""Every process-wide hook of gpulog, in one place (host side, torch-free): SIGTERM, Ctrl-C
during the exit drain, interpreter exit (in the order written down at ``EXIT_PHASES``), fork, and
the two torch functions gpulog wraps (``destroy_process_group``, ``CUDAGraph.capture_begin/end``).

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
* **gpulog's handler is the installed one and it replaced a Python handler**: it flushes
  everything queued (the writer keeps running: the process may go on), waiting at most 30 s, then
  calls the replaced handler with the signal (it may exit: the exit hook writes the rest).
* **another handler was installed after gpulog's and calls it** (PyTorch Lightning's signal
  connector composes the previous handler into its own): gpulog starts a flush and returns.  The
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
from typing import Any, Callable, Dict, Iterator, List, Optional

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


# -- interpreter exit, fork, and the two torch functions gpulog wraps ------------------------------
# Every process-wide hook of gpulog is registered here, once, and runs in this written order.
#
# At interpreter exit, before ``concurrent.futures`` shuts its executors down (CPython's
# threading-shutdown hooks, which precede ``atexit``): the "uploads" phase, because fsspec backends
# (aiobotocore) cannot schedule work afterwards.  Then, from one ``atexit`` hook:
#   1. "rings":  values logged inside compiled steps are picked up from the device rings,
#   2. "ranks":  distributed writers settle their last sync point (a collective every rank makes),
#   3. "writer": the writer thread writes everything queued, is stopped and joined, and what could
#                not be written (a full disk, a store outage) is named on stderr.
# Each phase needs the ones before it: rings feed ranks and the writer; ranks feed the writer.
EXIT_PHASES = ("rings", "ranks", "writer")
_exit_steps: Dict[str, Dict[int, Callable[[], None]]] = {phase: {} for phase in ("uploads",) + EXIT_PHASES}
_exit_registered = False
_thread_hook_registered = False
_fork_children: List[Callable[[], None]] = []


def at_exit(phase: str, fn: Callable[[], None]) -> Callable[[], None]:
    """Run ``fn`` at interpreter exit in ``phase`` (``"uploads"`` or one of :data:`EXIT_PHASES`);
    returns the function that unregisters it.  A step that fails is reported on stderr: the
    later steps still run."""
    global _exit_registered, _thread_hook_registered
    steps = _exit_steps[phase]
    key = id(fn)
    steps[key] = fn
    if phase == "uploads":
        if not _thread_hook_registered:
            register = getattr(threading, "_register_atexit", None)
            if register is not None:
                try:
                    register(lambda: _run_phase("uploads"))
                    _thread_hook_registered = True
                except RuntimeError:  # already shutting down
                    pass
    elif not _exit_registered:
        import atexit
        atexit.register(_run_exit)
        _exit_registered = True
    return lambda: steps.pop(key, None) and None


def _run_phase(phase: str) -> None:
    for fn in list(_exit_steps[phase].values()):
        try:
            fn()
        except BaseException as err:  # noqa: BLE001 - an exit step must not stop the others
            sys.stderr.write(f"gpulog: exit step {phase} failed: {type(err).__name__}: {err}\n")


def _run_exit() -> None:
    for phase in EXIT_PHASES:
        _run_phase(phase)


def in_forked_child(fn: Callable[[], None]) -> None:
    """Run ``fn`` in the child after every ``os.fork()`` (in registration order)."""
    if not _fork_children and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=lambda: [f() for f in list(_fork_children)])
    _fork_children.append(fn)


def wrap_destroy_process_group(dist: Any, before: Callable[[], None]) -> None:
    """Make ``torch.distributed.destroy_process_group()`` (of the default group) call ``before()``
    first: every rank calls it at the same point of a script, so distributed writers settle their
    last collective there (code that imported the function by name earlier keeps the original and
    relies on the "ranks" exit phase instead)."""
    original = dist.destroy_process_group
    if getattr(original, "__gpulog_wrapped__", False):
        return

    def destroy_process_group(group: Any = None) -> Any:
        if group is None or group is dist.GroupMember.WORLD:
            before()
        return original(group)

    destroy_process_group.__gpulog_wrapped__ = True  # type: ignore[attr-defined]
    destroy_process_group.__doc__ = original.__doc__
    dist.destroy_process_group = destroy_process_group


def wrap_graph_capture(graph_class: Any, lock: Any, began: Callable[[], None],
                       ended: Callable[[], None]) -> None:
    """Make ``torch.cuda.CUDAGraph.capture_begin``/``capture_end`` tell gpulog's capture gate
    (``_transfer.GATE``): ``began()`` under ``lock`` (which waits for a CUDA call of gpulog's
    threads in flight), ``ended()`` after the capture (also when beginning failed)."""
    begin, end = graph_class.capture_begin, graph_class.capture_end

    def capture_begin(self: Any, *args: Any, **kwargs: Any) -> Any:
        with lock:
            began()
        try:
            return begin(self, *args, **kwargs)
        except BaseException:
            ended()
            raise

    def capture_end(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return end(self, *args, **kwargs)
        finally:
            ended()

    capture_begin.__wrapped__ = begin  # type: ignore[attr-defined]
    capture_end.__wrapped__ = end  # type: ignore[attr-defined]
    graph_class.capture_begin, graph_class.capture_end = capture_begin, capture_end
