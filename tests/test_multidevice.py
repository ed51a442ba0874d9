"""--device 0,1 on the CPU runner: one process per device, as today's ais_bench does on a card."""

from __future__ import annotations

import json

import numpy as np
import pytest

import T2T_ViT_infer
import T2T_ViT_postprocess
from conftest import reference_transform
from t2t_vit.data.dataset import write_labels
from t2t_vit.runtime.multidevice import device_spans, split_inputs, thread_shares, wall_rate_of_lines


def test_shares_are_contiguous_and_the_first_devices_get_the_remainder():
    files = [f"f{index}" for index in range(7)]
    assert split_inputs(files, 2) == [files[:4], files[4:]]
    assert split_inputs(files, 3) == [files[:3], files[3:5], files[5:]]
    assert thread_shares(2, 2) == [1, 1] and thread_shares(5, 2) == [3, 2] and thread_shares(1, 2) == [1, 1]


@pytest.fixture(scope="module")
def bins(tmp_path_factory, sample_images):
    """Nine shipped images as float32 bins and their labels (nine: the split is uneven, 5 + 4)."""
    folder = tmp_path_factory.mktemp("bins")
    names = []
    for path in sample_images[:9]:
        reference_transform(path).astype("<f4").tofile(folder / f"{path.stem}.bin")
        names.append(path.stem)
    labels = folder.parent / "label.npy"
    write_labels(labels, names, np.arange(len(names)))
    return folder, labels, names


def _logits(folder, names):
    return np.stack([np.fromfile(folder / f"{name}_0.bin", dtype=np.float32) for name in names])


def test_two_devices_with_divide_input_score_every_image_once_with_one_devices_logits(
        bins, exports_by_size, tmp_path, capsys):
    exported_onnx = exports_by_size  # tiny (fast tier), T2T-ViT-14 (slow tier)
    folder, labels, names = bins
    model = str(exported_onnx["matmul"])
    common = ["--model", model, "--input", str(folder), "--output", str(tmp_path / "out"), "--batchsize", "4",
              "--backend", "onnxruntime", "--no-progress", "-q"]
    assert T2T_ViT_infer.main([*common, "--output_dirname", "one"]) == 0
    assert T2T_ViT_infer.main([*common, "--output_dirname", "two", "--device", "0,1", "--divide_input", "1"]) == 0
    out = capsys.readouterr().out
    two = tmp_path / "out" / "two"
    assert sorted(path.name for path in two.iterdir()) == ["device0_0", "device0_0_summary.json", "device1_1",
                                                           "device1_1_summary.json"]
    first = {path.name[:-len("_0.bin")] for path in (two / "device0_0").glob("*_0.bin")}
    second = {path.name[:-len("_0.bin")] for path in (two / "device1_1").glob("*_0.bin")}
    assert first == set(names[:5]) and second == set(names[5:])  # each image once, the first device one more
    merged = {**{name: two / "device0_0" for name in first}, **{name: two / "device1_1" for name in second}}
    together = np.stack([np.fromfile(merged[name] / f"{name}_0.bin", dtype=np.float32) for name in names])
    np.testing.assert_allclose(together, _logits(tmp_path / "out" / "one", names), rtol=0, atol=1e-5)
    summary = json.loads((two / "device1_1_summary.json").read_text())
    assert summary["cpu_runner"]["threads"] == 1  # each device its share of the 2 cores
    assert "i:0 device_0 throughput:" in out and "i:1 device_1 throughput:" in out
    assert "[INFO] summary throughput:" in out
    # As ais_bench's, the printed start_time/end_time bound each device's timed runs (its summary's timed_span),
    # so the devices' wall-clock rate follows from the printed lines alone
    spans = {device: json.loads((two / f"device{device}_{device}_summary.json").read_text())["cpu_runner"]["timed_span"]
             for device in (0, 1)}
    assert device_spans(out.splitlines()) == {device: tuple(span) for device, span in spans.items()}  # repr: exact
    seconds = max(span[1] for span in spans.values()) - min(span[0] for span in spans.values())
    assert wall_rate_of_lines(out.splitlines(), {0: 5, 1: 4}) == pytest.approx(9 / seconds)
    assert T2T_ViT_postprocess.main(["--result-dir", str(two), "--gt-path", str(labels), "--results-file",
                                     str(tmp_path / "acc.json"), "-q"]) == 0
    scored = json.loads((tmp_path / "acc.json").read_text())
    assert scored["count"] == len(names) and scored["layout"] == "split"


def test_the_wall_clock_rate_comes_from_the_closing_lines_of_either_form():
    lines = ["[INFO] multidevice run end qsize:4 result:1",
             "[INFO] i:0 device_3 throughput:281.38 start_time:1676875630.5 end_time:1676875632.5",  # ais_bench's logger
             "i:1 device_5 throughput:276.54 start_time:1676875630.0 end_time:1676875632.0",  # its print, and ours
             "[INFO] summary throughput:557.93"]
    assert device_spans(lines) == {3: (1676875630.5, 1676875632.5), 5: (1676875630.0, 1676875632.0)}
    assert wall_rate_of_lines(lines, {3: 10, 5: 15}) == pytest.approx(25 / 2.5)  # the first start to the last end
    assert wall_rate_of_lines(lines, {3: 10, 5: 15, 7: 1}) is None  # a device that printed no line: not measured
    assert wall_rate_of_lines(lines[:1], {0: 1}) is None and wall_rate_of_lines(lines, {}) is None


def test_two_devices_without_divide_input_each_run_every_input(bins, tmp_path, capsys):
    from test_runner import tiny_model

    folder, _, names = bins
    model = tiny_model(tmp_path / "tiny.onnx")
    small = tmp_path / "small"
    small.mkdir()
    for index, name in enumerate(names[:3]):
        np.random.default_rng(index).standard_normal((1, 3, 4, 4)).astype("<f4").tofile(small / f"{name}.bin")
    assert T2T_ViT_infer.main(["--model", str(model), "--input", str(small), "--output", str(tmp_path / "o"),
                               "--output_dirname", "copies", "--device", "0,1", "--backend", "onnxruntime",
                               "--no-progress", "-q"]) == 0
    copies = tmp_path / "o" / "copies"
    for device in ("device0_0", "device1_1"):
        assert sorted(path.name for path in (copies / device).glob("*_0.bin")) == sorted(
            f"{name}_0.bin" for name in names[:3])
    np.testing.assert_array_equal(_logits(copies / "device0_0", names[:3]), _logits(copies / "device1_1", names[:3]))


def test_divide_input_with_fewer_inputs_than_devices_is_one_line(bins, tmp_path, capsys):
    from test_runner import tiny_model

    model = tiny_model(tmp_path / "tiny.onnx")
    one = tmp_path / "one"
    one.mkdir()
    np.zeros((1, 3, 4, 4), "<f4").tofile(one / "a.bin")
    assert T2T_ViT_infer.main(["--model", str(model), "--input", str(one), "--output", str(tmp_path / "o"),
                               "--device", "0,1,2", "--divide_input", "true", "--backend", "onnxruntime",
                               "--no-progress", "-q"]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "--divide_input: 1 inputs for 3 devices" in error, error


def test_a_device_process_that_dies_ends_the_run_in_one_line_not_a_hang(tmp_path, monkeypatch, capsys):
    import os

    from t2t_vit.runtime import multidevice
    from test_runner import tiny_model

    def killed(queue, index, device, kwargs, display_all_summary):
        if device == 1:
            os._exit(9)  # as the OOM killer leaves it: no word on the queue
        queue.put((index, multidevice.DeviceRun(index, device, 0, 1.0, 0.0, 0.0, [], None, None)))

    monkeypatch.setattr(multidevice, "_child", killed)  # the forked children run it
    model = tiny_model(tmp_path / "tiny.onnx")
    assert T2T_ViT_infer.main(["--model", str(model), "--device", "0,1", "--backend", "onnxruntime",
                               "--no-progress", "-q"]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "device 1: its process ended with exit code 9 before it reported" in error, error
