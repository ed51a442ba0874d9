"""How the runner times batches: micro-batches in parallel streams, and each batch's share of the wall time.
"""

from __future__ import annotations

import queue
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, Iterator, Sequence

import numpy as np

from t2t_vit.runtime.backends import Backend
from t2t_vit.runtime.batching import RunnerError


PERCENTILE = 99


MICRO_BATCH = 2  # images per backend run within a batch, by default (benchmarks/bench_backends.py)


def time_stats(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"min": 0.0, "max": 0.0, "mean": 0.0, "median": 0.0, f"percentile({PERCENTILE}%)": 0.0, "count": 0}
    array = np.asarray(values, dtype=np.float64)
    return {"min": float(array.min()), "max": float(array.max()), "mean": float(array.mean()),
            "median": float(np.median(array)), f"percentile({PERCENTILE}%)": float(np.percentile(array, PERCENTILE)),
            "count": len(values)}


def pipeline(backend: Backend, batches: Iterable[np.ndarray]) -> Iterator[tuple[list[np.ndarray], float, float]]:
    """Run every batch, ``backend.streams`` at a time; yield ``(outputs, started, finished)`` in input order.

    The next batch is taken from ``batches`` (and the caller handles the yielded outputs) while the
    submitted ones run, so reading inputs and writing outputs overlap the computation.
    """
    if backend.streams == 1:
        for data in batches:
            started = time.perf_counter()
            outputs = backend.run(data)
            yield outputs, started, time.perf_counter()
        return
    slots: queue.SimpleQueue[int] = queue.SimpleQueue()
    for slot in range(backend.streams):
        slots.put(slot)

    def work(data: np.ndarray) -> tuple[list[np.ndarray], float, float]:
        slot = slots.get()
        try:
            started = time.perf_counter()
            outputs = backend.run(data, slot)
            return outputs, started, time.perf_counter()
        finally:
            slots.put(slot)

    pending: deque = deque()
    with ThreadPoolExecutor(backend.streams, thread_name_prefix="infer") as pool:
        try:
            for data in batches:
                pending.append(pool.submit(work, data))
                if len(pending) > backend.streams:  # one batch ready beyond those running
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def default_micro_batch(batch: int) -> int:
    """The piece a batch runs in by default: 2 images when 2 divides the batch, else 1 (README "CPU speed")."""
    return MICRO_BATCH if batch % MICRO_BATCH == 0 else 1


def pipeline_batches(backend: Backend, batches: Iterable[np.ndarray], batch: int,
                     micro: int) -> Iterator[tuple[list[np.ndarray], float, float]]:
    """:func:`pipeline` for batches of ``batch`` samples that the backend runs ``micro`` at a time.

    Each batch is cut into ``batch // micro`` pieces, the pieces run through the streams, and their
    outputs are joined again in order: one ``(outputs, first start, last finish)`` per batch.
    """
    if batch % micro:
        raise RunnerError(f"a micro-batch of {micro} does not divide the batch of {batch}")
    parts = batch // micro

    def pieces() -> Iterator[np.ndarray]:
        for data in batches:
            for start in range(0, batch, micro):
                yield data[start:start + micro]

    collected: list[tuple[list[np.ndarray], float, float]] = []
    for piece in pipeline(backend, pieces()):
        collected.append(piece)
        if len(collected) == parts:
            outputs = [np.concatenate([np.asarray(outs[index]) for outs, _, _ in collected]) if parts > 1
                       else collected[0][0][index] for index in range(len(collected[0][0]))]
            yield outputs, min(item[1] for item in collected), max(item[2] for item in collected)
            collected = []


def completion_intervals(start: float, finished: Sequence[float]) -> list[float]:
    """Seconds between successive completions, the first measured from ``start``; they sum to the wall time."""
    times = [start, *sorted(finished)]
    return [later - earlier for earlier, later in zip(times, times[1:])]


def per_batch_times(request_ms: Sequence[float], intervals_s: Sequence[float]) -> list[float]:
    """Each batch's share of the wall time, in ms: its own duration scaled so that the times add up to the wall
    time. Batches that run at once in streams finish in bursts, so the intervals between completions swing from
    about 0 to twice a batch; these times keep each batch's own spread (min, max, percentiles are per batch) and
    the intervals' mean, so ``1000 * batch / mean`` is still images per wall-clock second."""
    own = float(sum(request_ms))
    if own <= 0:
        return [1000 * seconds for seconds in intervals_s]
    scale = 1000 * float(sum(intervals_s)) / own
    return [value * scale for value in request_ms]
