"""Progress on long work: a tqdm bar on a terminal, a line every few per cent (at most one each 10 s) in a log file.

Both show the count, the rate (images/s) and the time left, so a run of 50,000 images that is
redirected to a file still says how far it is and when it will end.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, Callable

log = logging.getLogger(__name__)

LINE_EVERY = 0.05  # one line per 5 % when not on a terminal ...
LINE_SECONDS = 10.0  # ... and at most one per 10 s, so a short stage logs its last line only
SMALL = 40  # fewer items than this: one line at the end


def format_seconds(seconds: float) -> str:
    """``3h05m``, ``4m07s`` or ``12s``."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


class LineProgress:
    """tqdm's ``update`` / ``close`` interface, logging one line each time another ``every`` of the total is done
    and ``seconds`` have passed since the last line, and one when the total is reached."""

    def __init__(self, total: int, desc: str, unit: str = "img", every: float = LINE_EVERY,
                 seconds: float = LINE_SECONDS, clock: Callable[[], float] = time.perf_counter) -> None:
        self.total, self.desc, self.unit, self.seconds, self.clock = total, desc, unit, seconds, clock
        self.step = max(1, int(total * every)) if total >= SMALL else max(1, total)
        self.count = 0
        self.next_report = self.step
        self.started = self.last_line = clock()

    def update(self, count: int = 1) -> None:
        self.count += count
        due = self.count >= self.next_report and self.clock() - self.last_line >= self.seconds
        if due or self.count == self.total:
            while self.next_report <= self.count:
                self.next_report += self.step
            self.last_line = self.clock()
            log.info("%s", self.line())

    def line(self) -> str:
        elapsed = self.clock() - self.started
        rate = self.count / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.count) / rate if rate > 0 else float("nan")
        percent = 100.0 * self.count / self.total if self.total else 100.0
        eta = format_seconds(left) if left == left else "?"
        return (f"{self.desc}: {percent:3.0f}% ({self.count}/{self.total} {self.unit}), {rate:.1f} {self.unit}/s, "
                f"{format_seconds(elapsed)} elapsed, ETA {eta}")

    def close(self) -> None:
        pass

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def progress_bar(total: int, desc: str, unit: str = "img", enabled: bool | None = None) -> Any:
    """A progress display for ``total`` items.

    Args:
        enabled: True or None: a tqdm bar when stderr is a terminal, else :class:`LineProgress`
            lines (through logging, at INFO); False: nothing.
    """
    from tqdm import tqdm

    if enabled is False or total < 1:
        return tqdm(total=total, disable=True)
    if sys.stderr.isatty():
        return tqdm(total=total, desc=desc, unit=unit, unit_scale=False, dynamic_ncols=True)
    return LineProgress(total, desc, unit)


def plural(count: int, word: str, many: str | None = None) -> str:
    """``1 folder``, ``2 folders`` (``many`` for an irregular plural)."""
    return f"{count} {word if count == 1 else many or word + 's'}"


def format_bytes(count: int) -> str:
    """A size as a person reads it: GB from 0.1 GB up, else MB."""
    return f"{count / 1e9:.2f} GB" if count >= 10**8 else f"{count / 1e6:.1f} MB"
