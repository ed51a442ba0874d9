"""The guarded pool: every result once, a dead worker ends the run at once and says how it died."""

from __future__ import annotations

import os
import signal
import time

import pytest

from t2t_vit.workers import WorkerDied, death_text, guarded_map


def _square(task: int) -> int:
    return task * task


def _dies_at_13(task: int) -> int:
    if task == 13:
        os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer does
    return task


def _exits_at_13(task: int) -> int:
    if task == 13:
        os._exit(3)  # a native library calling exit()
    return task


def _raises_at_13(task: int) -> int:
    if task == 13:
        raise ValueError("task 13 is bad")
    return task


def _pid(_task: int) -> int:
    time.sleep(0.01)
    return os.getpid()


def _hang_on_exit() -> None:
    import multiprocessing.util

    multiprocessing.util.Finalize(None, time.sleep, args=(3600,), exitpriority=10)  # stuck on its way out


def test_a_worker_stuck_on_its_way_out_does_not_hold_the_results(monkeypatch):
    from t2t_vit import workers

    monkeypatch.setattr(workers, "_EXIT_WAIT_S", 1.0)  # 10 s in use; the rule is the same
    started = time.monotonic()
    assert sorted(guarded_map(_square, range(20), 2, "test", initializer=_hang_on_exit)) == [
        task * task for task in range(20)]
    assert time.monotonic() - started < 6  # killed after _EXIT_WAIT_S (1 s here); waiting for it hung forever


def test_every_task_once_in_the_workers():
    assert sorted(guarded_map(_square, range(50), 2, "test", chunk_size=3)) == [task * task for task in range(50)]
    assert len(set(guarded_map(_pid, range(40), 2, "test")) - {os.getpid()}) == 2  # two worker processes


def test_tasks_are_taken_only_as_fast_as_they_are_used():
    taken = []

    def stream():
        for task in range(100):
            taken.append(task)
            yield task

    results = guarded_map(_square, stream(), 2, "test", chunk_size=4, window=2)
    next(results)
    assert len(taken) <= 3 * 4  # the window's chunks and the one being formed, not all 100
    results.close()


@pytest.mark.parametrize("func, text", [
    (_dies_at_13, "a preprocess worker was killed (signal 9: SIGKILL, out of memory?); the pool is stopped"),
    (_exits_at_13, "a preprocess worker exited with status 3; the pool is stopped"),
], ids=["sigkill", "exit-3"])
def test_a_dead_worker_ends_the_run_at_once_naming_how(func, text):
    started = time.monotonic()
    with pytest.raises(WorkerDied) as raised:
        list(guarded_map(func, range(200), 2, "preprocess"))
    assert str(raised.value) == text and time.monotonic() - started < 10  # the old Pool waited here forever


def test_an_exception_in_a_task_reaches_the_caller_and_stops_the_pool():
    with pytest.raises(ValueError, match="task 13 is bad"):
        list(guarded_map(_raises_at_13, range(200), 2, "test"))


def test_death_text():
    assert death_text(-signal.SIGSEGV) == "was killed (signal 11: SIGSEGV, a crash in native code)"
    assert death_text(-signal.SIGTERM) == "was killed (signal 15: SIGTERM, stopped by another process)"
    assert death_text(2) == "exited with status 2" and death_text(None) == "ended (its exit status is unknown)"
