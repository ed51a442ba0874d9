"""One guarded process pool for every stage that uses processes: a worker that dies ends the stage at once.

``multiprocessing.Pool`` replaces a worker killed by a signal (the OOM killer's ``kill -9``) and waits forever
for the task it held. :func:`guarded_map` runs on ``concurrent.futures.ProcessPoolExecutor`` instead, which
notices a dead worker within milliseconds; the pool is then stopped and :class:`WorkerDied` names what happened
(``a preprocess worker was killed (signal 9: SIGKILL, out of memory?)``). Ctrl-C in the parent stops the
workers too (they ignore SIGINT: the parent decides); a parent killed outright leaves no worker behind (each
ends within a fraction of a second once its parent is gone, and none keeps the parent's folder lock). Tasks go
to the workers in chunks, at most ``window`` chunks in flight, so a lazy task stream (a compressed archive's
members) is read only as fast as it is used.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import threading
import time
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterable, Iterator, Sequence

from t2t_vit import ToolkitError

_LIKELY = {signal.SIGKILL: "out of memory?", signal.SIGSEGV: "a crash in native code",
           signal.SIGBUS: "a crash in native code (or a file truncated under it)", signal.SIGABRT: "an abort in native code",
           signal.SIGTERM: "stopped by another process"}
_PARENT_POLL_S = 0.2
_EXIT_WAIT_S = 10.0  # once every result is in, how long a worker may take to exit before it is killed


class WorkerDied(ToolkitError):
    """A worker process ended without finishing its task."""


def _start_worker(initializer: Callable[..., None] | None, *initargs: Any) -> None:
    """In each worker: ignore Ctrl-C (the parent decides), release the parent's folder locks, end with the parent."""
    from t2t_vit.files import close_inherited_locks

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    close_inherited_locks()
    parent = os.getppid()

    def end_with_parent() -> None:  # a parent killed by kill -9 cannot stop its workers; they see it gone
        while os.getppid() == parent:
            time.sleep(_PARENT_POLL_S)
        os._exit(1)

    threading.Thread(target=end_with_parent, name="end-with-parent", daemon=True).start()
    if initializer is not None:
        initializer(*initargs)


def _run_chunk(func: Callable[[Any], Any], chunk: Sequence[Any]) -> list[Any]:
    return [func(task) for task in chunk]


def death_text(exitcode: int | None) -> str:
    """How a worker's exit code reads: ``killed (signal 9: SIGKILL, out of memory?)`` or ``exited with status 3``."""
    if exitcode is None:
        return "ended (its exit status is unknown)"
    if exitcode < 0:
        number = -exitcode
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        likely = _LIKELY.get(number)
        return f"was killed (signal {number}: {name}{', ' + likely if likely else ''})"
    return f"exited with status {exitcode}"


def _dead_worker(processes: Iterable[Any], wait_s: float = 2.0) -> int | None:
    """The exit code of the worker that died first, as far as it can be told. The pool's own thread reaps its
    workers and then stops the others with SIGTERM, so the codes are read again for a moment (a code is only
    seen once that thread has set it), and a code other than SIGTERM's is preferred."""
    processes = list(processes)
    deadline = time.monotonic() + wait_s
    while True:
        codes = [process.exitcode for process in processes]
        died = [code for code in codes if code not in (None, 0)]
        preferred = [code for code in died if code != -signal.SIGTERM]
        if preferred or (died and None not in codes) or time.monotonic() > deadline:
            return (preferred or died or [None])[0]
        time.sleep(0.02)


def _finish(executor: concurrent.futures.ProcessPoolExecutor, processes: Iterable[Any]) -> None:
    """Every result is in: let the workers exit, and kill one still there after ``_EXIT_WAIT_S`` (a worker forked
    from a parent with threads can deadlock on its way out, seen under qemu: waiting for it hung the stage forever
    with its work done)."""
    processes = list(processes)
    executor.shutdown(wait=False)  # tells the workers to exit
    deadline = time.monotonic() + _EXIT_WAIT_S
    while any(process.is_alive() for process in processes) and time.monotonic() < deadline:
        time.sleep(0.02)
    for process in processes:
        if process.is_alive():
            process.kill()
    executor.shutdown(wait=True)


def _stop(executor: concurrent.futures.ProcessPoolExecutor, processes: Iterable[Any]) -> None:
    """Stop every worker now (the tasks still queued are dropped)."""
    for process in processes:
        if process.is_alive():
            process.terminate()
    executor.shutdown(wait=True)


def guarded_map(func: Callable[[Any], Any], tasks: Iterable[Any], workers: int, what: str,
                initializer: Callable[..., None] | None = None, initargs: tuple = (), chunk_size: int = 4,
                window: int | None = None) -> Iterator[Any]:
    """``func(task)`` for every task, in ``workers`` processes; results in completion order.

    Args:
        func: a picklable function of one task.
        tasks: the tasks (consumed lazily: at most ``window`` chunks are taken ahead of the results).
        workers: processes (at least 1).
        what: what a worker is, for the error (``preprocess`` -> ``a preprocess worker was killed ...``).
        initializer: run once in each worker, with ``initargs``.
        chunk_size: tasks sent to a worker at once.
        window: chunks in flight (default: two per worker).

    Raises:
        WorkerDied: a worker ended (signal, crash, ``os._exit``) before finishing its chunk; the other workers
            are stopped first.
    """
    window = window or 2 * workers
    executor = concurrent.futures.ProcessPoolExecutor(workers, initializer=_start_worker,
                                                      initargs=(initializer, *initargs))
    stream = iter(tasks)
    processes: dict[int, Any] = {}  # every worker started, kept here: the executor forgets them when it breaks
    pending: set = set()
    finished = False
    try:
        while True:
            while not finished and len(pending) < window:
                chunk = [task for _, task in zip(range(chunk_size), stream)]
                if not chunk:
                    finished = True
                    break
                pending.add(executor.submit(_run_chunk, func, chunk))
                processes.update(getattr(executor, "_processes", None) or {})  # workers start as chunks are sent
            if not pending:
                break
            done, pending = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in done:
                yield from future.result()
    except BrokenProcessPool:
        code = _dead_worker(processes.values())
        _stop(executor, processes.values())
        raise WorkerDied(f"a {what} worker {death_text(code)}; the pool is stopped") from None
    except BaseException:
        for future in pending:
            future.cancel()
        _stop(executor, processes.values())
        raise
    _finish(executor, processes.values())
