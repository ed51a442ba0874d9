"""Progress on long work: lines every few per cent with rate and ETA when not on a terminal, a bar on one."""

from __future__ import annotations

import logging
import sys

import pytest

from t2t_vit.progress import LineProgress, format_seconds, progress_bar


@pytest.mark.parametrize("seconds, text", [(0, "0s"), (59.4, "59s"), (61, "1m01s"), (3600 * 6.5, "6h30m")])
def test_format_seconds(seconds, text):
    assert format_seconds(seconds) == text


class FakeClock:
    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        return self.now

    def advance(self) -> None:
        self.now += self.step


@pytest.mark.parametrize("seconds_per_batch, expected", [(10.0, 20), (1.0, 13), (0.0, 1)])
def test_a_line_every_five_per_cent_and_ten_seconds_with_rate_and_eta(caplog, seconds_per_batch, expected):
    """A slow run logs every 5 %; a faster one every 10 s at most; one that takes no time, its last line only."""
    caplog.set_level(logging.INFO, logger="t2t_vit.progress")
    clock = FakeClock(seconds_per_batch)
    bar = LineProgress(1000, "infer bs8", "img", clock=clock)
    for _ in range(125):
        clock.advance()
        bar.update(8)
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == expected  # 50,000 images at 10 s per 5 % give the same 20 lines
    assert lines[-1].startswith("infer bs8: 100% (1000/1000")
    if seconds_per_batch == 10.0:
        assert lines[0].startswith("infer bs8:   6% (56/1000 img), ")
    if seconds_per_batch == 1.0:  # 10 s = 10 batches = 80 images
        assert lines[0].startswith("infer bs8:   8% (80/1000 img), ")
    assert all(" img/s, " in line and " elapsed, ETA " in line for line in lines)


def test_few_items_give_one_line(caplog):
    caplog.set_level(logging.INFO, logger="t2t_vit.progress")
    bar = LineProgress(5, "preprocess")
    for _ in range(5):
        bar.update()
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 1 and lines[0].startswith("preprocess: 100% (5/5 img), ")


def test_bar_on_a_terminal_lines_elsewhere_nothing_when_off(monkeypatch):
    from tqdm import tqdm

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    bar = progress_bar(10, "x")
    assert isinstance(bar, tqdm) and not bar.disable
    bar.close()
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert isinstance(progress_bar(10, "x"), LineProgress)
    off = progress_bar(10, "x", enabled=False)
    assert isinstance(off, tqdm) and off.disable
