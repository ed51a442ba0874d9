"""Progress on long work: lines every few per cent with rate and ETA when not on a terminal, a bar on one."""

from __future__ import annotations

import logging
import sys

import pytest

from t2t_vit.progress import LineProgress, format_seconds, progress_bar


@pytest.mark.parametrize("seconds, text", [(0, "0s"), (59.4, "59s"), (61, "1m01s"), (3600 * 6.5, "6h30m")])
def test_format_seconds(seconds, text):
    assert format_seconds(seconds) == text


def test_a_line_every_five_per_cent_with_rate_and_eta(caplog):
    caplog.set_level(logging.INFO, logger="t2t_vit.progress")
    bar = LineProgress(1000, "infer bs8", "img")
    for _ in range(125):
        bar.update(8)
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 20  # 50,000 images would give the same 20 lines
    assert lines[0].startswith("infer bs8:   6% (56/1000 img), ") and lines[-1].startswith("infer bs8: 100% (1000/1000")
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
