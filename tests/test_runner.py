"""T2T_ViT_infer.py: ais_bench's batching, padding, naming, formats and summary, on the CPU."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

import T2T_ViT_infer
from conftest import BACKENDS, REPO_ROOT
from t2t_vit.runtime.runner import run_inference
from t2t_vit.runtime.batching import RunnerError, natural_key

SAMPLE = (3, 4, 4)


def tiny_model(path, batch="N", metadata=None):
    """image (batch,3,4,4) -> class = flatten @ W (batch,10), aux = mean over pixels (batch,3)."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((48, 10)).astype(np.float32), "W")
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [-1, 48])
    nodes = [helper.make_node("Reshape", ["image", "shape"], ["flat"]),
             helper.make_node("MatMul", ["flat", "W"], ["class"]),
             helper.make_node("ReduceMean", ["image"], ["aux"], axes=[2, 3], keepdims=0)]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, *SAMPLE])],
                              [helper.make_tensor_value_info("class", TensorProto.FLOAT, [batch, 10]),
                               helper.make_tensor_value_info("aux", TensorProto.FLOAT, [batch, 3])],
                              initializer=[weight, shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)], ir_version=7)
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    return path


def write_samples(folder, names, shape=SAMPLE, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    data = {}
    for name in names:
        data[name] = rng.standard_normal((1, *shape)).astype("<f4")
        data[name].tofile(folder / name)
    return data


def direct(model_path, sample):
    session = onnxruntime.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    return session.run(None, {"image": sample})


def infer(*args) -> int:
    return T2T_ViT_infer.main([*map(str, args), "--no-progress", "-q"])


TRAPS = ["2.bin", "10.bin", "1.bin", "a.b.c.bin", "img_9.bin", "img_10.bin", "IMG_11.bin", "x.npy.bin", "b.bin", "3.bin"]


def test_ten_files_at_batch_4(tmp_path, capsys):
    model = tiny_model(tmp_path / "tiny.onnx")
    data = write_samples(tmp_path / "bins", TRAPS)
    (tmp_path / "bins" / "notes.txt").write_text("ignored")
    assert infer("--model", model, "--input", tmp_path / "bins", "--output", tmp_path / "out", "--output_dirname",
                 "bs4", "--batchsize", 4, "--backend", "onnxruntime") == 0
    result_dir = tmp_path / "out" / "bs4"
    expected_order = sorted(TRAPS, key=lambda name: natural_key(str(tmp_path / "bins" / name)))
    assert expected_order[:4] == ["1.bin", "2.bin", "3.bin", "10.bin"]
    produced = sorted(path.name for path in result_dir.iterdir())
    stems = [name.split(".")[0] for name in TRAPS]
    assert produced == sorted([f"{stem}_0.bin" for stem in stems] + [f"{stem}_1.bin" for stem in stems])
    for name, sample in data.items():
        stem = name.split(".")[0]
        want_class, want_aux = direct(model, sample)
        np.testing.assert_allclose(np.fromfile(result_dir / f"{stem}_0.bin", dtype=np.float32), want_class[0],
                                   rtol=0, atol=1e-5)
        np.testing.assert_allclose(np.fromfile(result_dir / f"{stem}_1.bin", dtype=np.float32), want_aux[0],
                                   rtol=0, atol=1e-5)
    summary = json.loads((tmp_path / "out" / "bs4_summary.json").read_text())
    assert list(summary["filesinfo"]) == [str(i) for i in range(10)]  # 3 groups of 4, 2 padded slots unwritten
    assert [entry["infiles"] for entry in summary["filesinfo"].values()] == \
        [[str(tmp_path / "bins" / name)] for name in expected_order]
    assert summary["filesinfo"]["9"]["outfiles"] == [str(result_dir / f"{expected_order[9].split('.')[0]}_{i}.bin")
                                                     for i in (0, 1)]
    assert list(summary) == ["filesinfo", "args", "NPU_compute_time", "H2D_latency", "D2H_latency", "throughput",
                             "npu_compute_time_list", "pid", "cpu_runner"]  # ais_bench's keys, then one more
    runner = summary["cpu_runner"]
    assert summary["NPU_compute_time"]["count"] == 3 and runner["batchsize"] == 4
    for key in ("min", "max", "mean", "median", "percentile(99%)", "count"):
        assert key in summary["NPU_compute_time"] and key in summary["H2D_latency"] and key in summary["D2H_latency"]
    assert summary["throughput"] == pytest.approx(1000 * 4 / summary["NPU_compute_time"]["mean"])
    assert summary["args"][1:] == ["--model", str(model), "--input", str(tmp_path / "bins"), "--output",
                                   str(tmp_path / "out"), "--output_dirname", "bs4", "--batchsize", "4", "--backend",
                                   "onnxruntime", "--no-progress", "-q"]  # the command line, as ais_bench's sys.argv
    assert runner["options"]["batchsize"] == 4 and runner["backend"] == "onnxruntime"
    assert "onnxruntime" in runner["versions"]
    assert "throughput 1000*batchsize.mean(4)/NPU_compute_time.mean(" in capsys.readouterr().out


def test_padding_repeats_the_groups_first_file(tmp_path, monkeypatch):
    import t2t_vit.runtime.backends as backends

    model = tiny_model(tmp_path / "tiny.onnx")
    data = write_samples(tmp_path / "bins", [f"{i}.bin" for i in range(6)])
    seen = []
    original = backends.OnnxRuntimeBackend.run
    monkeypatch.setattr(backends.OnnxRuntimeBackend, "run", lambda self, batch, slot=0: seen.append(batch.copy()) or
                        original(self, batch, slot))
    run_inference(str(model), [str(tmp_path / "bins")], str(tmp_path / "out"), "x", batchsize=4, warmup_count=0,
                  backend_name="onnxruntime", streams=1, micro_batch=4)  # whole batches, in order
    last = seen[-1]
    np.testing.assert_array_equal(last[:2], np.concatenate([data["4.bin"], data["5.bin"]]))
    np.testing.assert_array_equal(last[2], data["4.bin"][0])
    np.testing.assert_array_equal(last[3], data["4.bin"][0])


def test_a_batch_larger_than_the_inputs_says_how_much_is_padding(tmp_path, caplog):
    model = tiny_model(tmp_path / "tiny.onnx")
    write_samples(tmp_path / "bins", [f"{i}.bin" for i in range(5)])
    run_inference(str(model), [str(tmp_path / "bins")], str(tmp_path / "out"), "x", batchsize=16)
    assert "batch 16 is larger than the 5 inputs: its one batch is 5 inputs and 11 padding copies (69 % of the " \
           "computation" in caplog.text
    caplog.clear()
    run_inference(str(model), [str(tmp_path / "bins")], str(tmp_path / "out"), "y", batchsize=4)
    assert "padding copies" not in caplog.text


@pytest.mark.parametrize("fmt", ["NPY", "TXT"])
def test_npy_and_txt_formats(tmp_path, fmt):
    model = tiny_model(tmp_path / "tiny.onnx")
    data = write_samples(tmp_path / "bins", ["a.bin", "b.bin", "c.bin"])
    for dirname, outfmt in (("r", fmt.lower()), ("same_run_npy", "npy")):
        assert infer("--model", model, "--input", tmp_path / "bins", "--output", tmp_path / "out", "--output_dirname",
                     dirname, "--outfmt", outfmt, "--batchsize", 2) == 0
    for name, sample in data.items():
        want = direct(model, sample)[0]
        computed = np.load(tmp_path / "out" / "same_run_npy" / f"{name[0]}_0.npy")  # the same backend's values
        path = tmp_path / "out" / "r" / f"{name[0]}_0.{fmt.lower()}"
        if fmt == "NPY":
            got = np.load(path)
            assert got.shape == (1, 10) and got.dtype == np.float32
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
        else:
            text = path.read_text()
            assert text.endswith(" \n") and text.count("\n") == 1
            assert all(re.fullmatch(r"-?\d+\.\d{6}", value) for value in text.split())  # '%f'
            # '%f' rounds to 6 decimals: within 5e-7 of what was computed (the backend may differ from
            # onnxruntime's batch of one by a few ulp, as the NPY branch allows)
            np.testing.assert_allclose(np.array(text.split(), dtype=np.float64), computed[0], rtol=0, atol=5e-7)
            np.testing.assert_allclose(computed, want, rtol=0, atol=1e-5)


def test_whole_batch_files_and_npy_inputs(tmp_path):
    model = tiny_model(tmp_path / "tiny.onnx")
    rng = np.random.default_rng(3)
    folder = tmp_path / "batches"
    folder.mkdir()
    batches = {name: rng.standard_normal((4, *SAMPLE)).astype(np.float32) for name in ("p0", "p1")}
    for name, batch in batches.items():
        np.save(folder / f"{name}.npy", batch)
    result = run_inference(str(model), [str(folder)], str(tmp_path / "out"), "r", batchsize=4)
    assert len(result.filesinfo) == 2
    for name, batch in batches.items():
        np.testing.assert_allclose(np.fromfile(tmp_path / "out" / "r" / f"{name}_0.bin", np.float32).reshape(4, 10),
                                   direct(model, batch)[0], rtol=0, atol=1e-5)


def test_static_batch_model_uses_its_own_batch(tmp_path, caplog):
    model = tiny_model(tmp_path / "static.onnx", batch=2)
    write_samples(tmp_path / "bins", [f"{i}.bin" for i in range(3)])
    result = run_inference(str(model), [str(tmp_path / "bins")], str(tmp_path / "out"), "r", batchsize=8)
    assert result.batch == 2 and len(result.compute_ms) == 2 and len(result.filesinfo) == 3
    assert "--batchsize 8 is ignored" in caplog.text


@pytest.mark.parametrize("case, pattern", [
    ("wrong_size", r"input .*bad\.bin has 100 bytes: neither one sample \(192\) nor one batch of 4 \(768\)"),
    ("mixed_sizes", r"input .*z\.bin has 768 bytes, unlike"),
    ("missing_folder", "does not exist"),
    ("empty_folder", "holds no .bin or .npy files"),
    ("clashing_names", "would both write a_0"),
    ("missing_file", "does not exist or is not a file"),
    ("stray_text_npy", r"input .*notes\.npy is named \.npy but is a text file .*: a stray file\? ais_bench and this "
                       r"runner read every \.bin and \.npy file of an input folder: move it out"),
    ("stray_label_npy", r"input .*label\.npy is a table with fields name, label \(a label file\?\)"),
])
def test_bad_inputs_fail_before_any_output(tmp_path, capsys, case, pattern):
    model = tiny_model(tmp_path / "tiny.onnx")
    folder = tmp_path / "bins"
    write_samples(folder, ["a.bin", "b.bin"])
    target = str(folder)
    if case == "wrong_size":
        (folder / "bad.bin").write_bytes(b"\0" * 100)
    elif case == "mixed_sizes":
        (folder / "z.bin").write_bytes(b"\0" * 768)
    elif case == "missing_folder":
        target = str(tmp_path / "nowhere")
    elif case == "empty_folder":
        target = str(tmp_path / "empty")
        os.mkdir(target)
    elif case == "clashing_names":
        write_samples(folder, ["a.1.bin"], seed=4)
    elif case == "missing_file":
        target = f"{folder / 'a.bin'},{folder / 'gone.bin'}"
    elif case == "stray_text_npy":
        (folder / "notes.npy").write_text("run 3: bs8 looked slow\n")
    elif case == "stray_label_npy":
        from t2t_vit.data.dataset import write_labels

        write_labels(folder / "label.npy", ["a", "b"], [1, 2])
    assert infer("--model", model, "--input", target, "--output", tmp_path / "out", "--batchsize", 4) == 1
    error = capsys.readouterr().err
    assert re.search(pattern, error), error
    assert error.count("\n") == 1 and "allow_pickle" not in error
    assert not (tmp_path / "out").exists()


def test_file_list_input(tmp_path):
    model = tiny_model(tmp_path / "tiny.onnx")
    write_samples(tmp_path / "bins", ["a.bin", "b.bin", "c.bin"])
    files = ",".join(str(tmp_path / "bins" / name) for name in ("c.bin", "a.bin"))
    result = run_inference(str(model), files.split(","), str(tmp_path / "out"), "r", batchsize=1)
    assert [entry["infiles"][0].rsplit("/", 1)[1] for entry in result.filesinfo.values()] == ["c.bin", "a.bin"]


def test_pure_inference_prints_ais_bench_summary(tmp_path, capsys):
    model = tiny_model(tmp_path / "tiny.onnx")
    assert infer("--model", model, "--batchsize", 8, "--loop", 5, "--warmup_count", 2) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "[INFO] -----------------Performance Summary------------------"
    timing = re.fullmatch(r"\[INFO\] NPU_compute_time \(ms\): min = (\S+), max = (\S+), mean = (\S+), "
                          r"median = (\S+), percentile\(99%\) = (\S+)", out[1])
    assert timing
    minimum, maximum, mean = (float(timing.group(i)) for i in (1, 2, 3))
    assert 0 < minimum <= mean <= maximum
    throughput = re.fullmatch(r"\[INFO\] throughput 1000\*batchsize\.mean\(8\)/NPU_compute_time\.mean\((\S+)\): (\S+)",
                              out[2])
    assert float(throughput.group(1)) == mean
    assert float(throughput.group(2)) == pytest.approx(1000 * 8 / mean)
    assert not (tmp_path / "out").exists()


@pytest.mark.needs("openvino")
def test_openvino_backend_agrees_with_onnxruntime(tmp_path):
    model = tiny_model(tmp_path / "tiny.onnx")
    data = write_samples(tmp_path / "bins", [f"{i}.bin" for i in range(5)])
    run_inference(str(model), [str(tmp_path / "bins")], str(tmp_path / "out"), "ov", batchsize=2,
                  backend_name="openvino")
    for name, sample in data.items():
        np.testing.assert_allclose(np.fromfile(tmp_path / "out" / "ov" / f"{name[0]}_0.bin", np.float32),
                                   direct(model, sample)[0][0], rtol=0, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_streams_give_the_same_files_as_one_stream(tmp_path, backend):
    model = tiny_model(tmp_path / "tiny.onnx")
    data = write_samples(tmp_path / "bins", [f"{i}.bin" for i in range(23)])
    for streams in (1, 2):
        result = run_inference(str(model), [str(tmp_path / "bins")], str(tmp_path / "out"), f"s{streams}",
                               outfmt="NPY", batchsize=2, loop=3, backend_name=backend, threads=2, streams=streams)
        assert result.streams == streams and len(result.compute_ms) == len(result.request_ms) == 12 * 3
        summary = json.loads((tmp_path / "out" / f"s{streams}_summary.json").read_text())
        assert summary["cpu_runner"]["streams"] == streams and summary["cpu_runner"]["request_latency"]["count"] == 36
        assert [entry["infiles"] for _, entry in sorted(summary["filesinfo"].items(), key=lambda kv: int(kv[0]))] == \
            [[str(tmp_path / "bins" / f"{i}.bin")] for i in range(23)]
    for name, sample in data.items():
        one = np.load(tmp_path / "out" / "s1" / f"{name[:-4]}_0.npy")
        two = np.load(tmp_path / "out" / "s2" / f"{name[:-4]}_0.npy")
        np.testing.assert_array_equal(one, two)
        np.testing.assert_allclose(two[0], direct(model, sample)[0][0], rtol=0, atol=1e-5)


class RecordingBackend:
    """A stand-in backend: each run sleeps, and records which slots were busy at the same time."""

    name, version, output_names = "recording", "0", ["class"]

    def __init__(self, streams):
        import threading

        self.streams, self.busy, self.lock = streams, set(), threading.Lock()
        self.overlaps, self.batches = [], []

    def run(self, batch, slot=0):
        import time

        with self.lock:
            assert slot not in self.busy, "two runs on one slot"
            self.busy.add(slot)
            self.overlaps.append(len(self.busy))
        time.sleep(0.02)
        with self.lock:
            self.busy.discard(slot)
            self.batches.append(float(batch[0]))
        return [batch * 2]


@pytest.mark.parametrize("streams", [1, 2, 3])
def test_pipeline_runs_streams_batches_at_once_and_keeps_the_order(streams):
    from t2t_vit.runtime.timing import completion_intervals, pipeline

    backend = RecordingBackend(streams)
    start = __import__("time").perf_counter()
    results = list(pipeline(backend, (np.full(1, index, np.float32) for index in range(9))))
    assert [float(outputs[0][0]) for outputs, _, _ in results] == [2.0 * index for index in range(9)]
    assert max(backend.overlaps) == streams
    intervals = completion_intervals(start, [done for _, _, done in results])
    assert len(intervals) == 9 and min(intervals) >= 0
    assert sum(intervals) == pytest.approx(max(done for _, _, done in results) - start)


def test_per_batch_times_keep_the_wall_time_and_each_batchs_spread():
    from t2t_vit.runtime.timing import per_batch_times

    # two streams: batches of 100 ms finish in pairs, so completion intervals swing between ~0 and ~100 ms
    request_ms = [100.0, 101.0, 99.0, 100.0, 140.0, 100.0]
    intervals_s = [0.100, 0.001, 0.099, 0.002, 0.140, 0.001]
    times = per_batch_times(request_ms, intervals_s)
    assert sum(times) == pytest.approx(1000 * sum(intervals_s))  # the mean, so the throughput, is the wall's
    assert min(times) == pytest.approx(99.0 * sum(intervals_s) * 1000 / sum(request_ms))  # a batch, not ~0 ms
    assert max(times) / min(times) == pytest.approx(140.0 / 99.0)  # the slow batch stays the slowest


def test_default_streams_never_exceed_the_batch_runs(tmp_path, caplog, monkeypatch):
    import t2t_vit.runtime.runner as runner

    loads = []
    original_load = runner.load_backend
    # load_backend(name, model, threads, batch, streams, ...): record the streams of every load
    monkeypatch.setattr(runner, "load_backend", lambda *args: loads.append(args[4]) or original_load(*args))
    model = tiny_model(tmp_path / "tiny.onnx")
    write_samples(tmp_path / "bins", [f"{i}.bin" for i in range(3)])
    one_run = run_inference(str(model), [str(tmp_path / "bins")], None, None, batchsize=4, threads=2, micro_batch=4)
    assert one_run.streams == 1  # a single backend run gets every thread
    assert loads == [1]  # compiled once, with one stream
    static = run_inference(str(tiny_model(tmp_path / "static.onnx", batch=4)), [str(tmp_path / "bins")], None, None,
                           threads=2)
    assert static.streams == 1 and loads[-2:] == [2, 1]  # its batch of 4 shows only once loaded: one run
    in_pieces = run_inference(str(model), [str(tmp_path / "bins")], None, None, batchsize=4, threads=2)
    assert (in_pieces.micro_batch, in_pieces.streams) == (2, 2)  # the one batch runs as two pieces at once
    pure = run_inference(str(model), None, None, None, batchsize=4, threads=2, loop=4, micro_batch=4)
    assert pure.streams == 2
    with caplog.at_level("WARNING"):
        explicit = run_inference(str(model), None, None, None, batchsize=4, threads=2, streams=2, micro_batch=4)
    assert explicit.streams == 2 and "1 backend run(s) for 2 streams" in caplog.text


@pytest.mark.parametrize("backend", BACKENDS)
def test_micro_batches_give_the_same_files_as_whole_batches(tmp_path, backend):
    model = tiny_model(tmp_path / "tiny.onnx")
    data = write_samples(tmp_path / "bins", [f"{i}.bin" for i in range(10)])
    for micro in (1, 2, 4):
        result = run_inference(str(model), [str(tmp_path / "bins")], str(tmp_path / "out"), f"m{micro}",
                               outfmt="NPY", batchsize=4, backend_name=backend, threads=2, micro_batch=micro)
        assert result.micro_batch == micro and len(result.compute_ms) == 3
        assert json.loads((tmp_path / "out" / f"m{micro}_summary.json").read_text())["cpu_runner"]["micro_batch"] == micro
    for name, sample in data.items():
        whole = np.load(tmp_path / "out" / "m4" / f"{name[:-4]}_0.npy")
        for micro in (1, 2):  # each shape compiles its own kernels: fp32 reordering only (2 ulp in OpenVINO 2023.1)
            np.testing.assert_allclose(np.load(tmp_path / "out" / f"m{micro}" / f"{name[:-4]}_0.npy"), whole,
                                       rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(whole[0], direct(model, sample)[0][0], rtol=0, atol=1e-5)


@pytest.mark.parametrize("batch, micro", [(1, 1), (3, 1), (4, 2), (8, 2)])
def test_default_micro_batch(tmp_path, batch, micro):
    model = tiny_model(tmp_path / "tiny.onnx")
    assert run_inference(str(model), None, None, None, batchsize=batch, loop=2).micro_batch == micro
    static = tiny_model(tmp_path / "static.onnx", batch=batch)
    assert run_inference(str(static), None, None, None, loop=2).micro_batch == batch


def test_pipeline_batches_joins_the_pieces_in_order():
    from t2t_vit.runtime.timing import pipeline_batches

    backend = RecordingBackend(2)
    batches = [np.arange(start, start + 4, dtype=np.float32) for start in range(0, 20, 4)]
    joined = list(pipeline_batches(backend, batches, batch=4, micro=2))
    assert [outputs[0].tolist() for outputs, _, _ in joined] == [(2 * batch).tolist() for batch in batches]
    assert sorted(backend.batches) == list(range(0, 20, 2))  # each run saw one piece of 2, starting here
    assert all(started <= done for _, started, done in joined)


@pytest.mark.parametrize("options, pattern", [
    ({"threads": 1, "streams": 2}, "--streams 2 needs"), ({"streams": 0}, "^--streams must be at least 1, got 0$"),
    ({"threads": 0}, "^--threads must be at least 1, got 0$"),
    ({"micro_batch": 0}, "^--micro-batch must be at least 1, got 0$"),
    ({"batchsize": 0}, "^--batchsize must be at least 1, got 0$"), ({"loop": 0}, "^--loop must be at least 1, got 0$"),
    ({"warmup_count": -1}, "^--warmup_count must be at least 0, got -1$"),
    ({"batchsize": 8, "micro_batch": 3}, "--micro-batch 3 must divide")])
def test_bad_streams_and_micro_batches_are_refused(tmp_path, options, pattern):
    model = tiny_model(tmp_path / "tiny.onnx")
    with pytest.raises(RunnerError, match=pattern):
        run_inference(str(model), None, None, None, **options)


@pytest.mark.parametrize("case", ["text", "truncated", "directory"])
def test_a_model_that_is_not_onnx_is_one_error_line(tmp_path, capsys, case):
    model = tmp_path / "model.onnx"
    if case == "text":
        model.write_text("not a model\n" * 100)
    elif case == "truncated":
        model.write_bytes(tiny_model(tmp_path / "good.onnx").read_bytes()[:150])
    else:
        model.mkdir()
    write_samples(tmp_path / "bins", ["a.bin"])
    assert infer("--model", model, "--input", tmp_path / "bins", "--output", tmp_path / "out") == 1
    error = capsys.readouterr().err
    assert error.startswith("error: ") and error.count("\n") == 1 and "Traceback" not in error, error
    assert str(model) in error and not (tmp_path / "out").exists()


def test_bins_made_with_another_data_config_are_refused(tmp_path, capsys):
    model = tiny_model(tmp_path / "tiny.onnx", metadata={"t2t_vit.data_config_hash": "aaaa"})
    write_samples(tmp_path / "bins", ["a.bin"])
    (tmp_path / "bins" / "manifest.json").write_text(json.dumps({"data_config_hash": "bbbb",
                                                                 "data_config": {"crop_pct": 0.875}}))
    assert infer("--model", model, "--input", tmp_path / "bins", "--output", tmp_path / "out") == 1
    assert "made with data config" in capsys.readouterr().err


def test_om_model_without_ais_bench_says_what_to_install(tmp_path, capsys):
    om = tmp_path / "T2T_ViT_bs1.om"
    om.write_bytes(b"om")
    assert infer("--model", om, "--input", tmp_path) == 1
    assert "install the aclruntime and ais_bench wheels" in capsys.readouterr().err.lower()


def test_om_model_is_handed_to_ais_bench(tmp_path):
    # A stand-in ais_bench package records the command line it was given (the real one needs an NPU).
    package = tmp_path / "site" / "ais_bench"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text("import json, os, sys\n"
                                         "json.dump(sys.argv[1:], open(os.environ['AIS_ARGS'], 'w'))\n")
    om = tmp_path / "T2T_ViT_bs8.om"
    om.write_bytes(b"om")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path / 'site'}:{REPO_ROOT}", "AIS_ARGS": str(tmp_path / "bs8.args")}
    command = [sys.executable, str(REPO_ROOT / "T2T_ViT_infer.py"), "--model", str(om), "--backend", "openvino",
               "--streams", "2", "--micro-batch", "2", "--threads", "2", "--input", "bins", "--output", "result",
               "--outfmt", "BIN", "--batchsize", "8", "--output_dirname", str(tmp_path / "bs8")]
    assert subprocess.run(command, env=env).returncode == 0
    forwarded = json.loads((tmp_path / "bs8.args").read_text())
    assert forwarded == ["--model", str(om), "--input", "bins", "--output", "result", "--output_dirname",
                         str(tmp_path / "bs8"), "--outfmt", "BIN", "--batchsize", "8"]  # in ais_bench's table order


@pytest.mark.parametrize("backend", BACKENDS)
def test_real_export_outputs_equal_single_image_runs(exports_by_size, tmp_path, backend):
    exported_onnx = exports_by_size  # tiny (fast tier), T2T-ViT-14 (slow tier)
    data = write_samples(tmp_path / "bins", [f"ILSVRC2012_val_{i:08d}.bin" for i in range(1, 6)], (3, 224, 224))
    run_inference(str(exported_onnx["matmul"]), [str(tmp_path / "bins")], str(tmp_path / "out"), "bs4",
                  batchsize=4, backend_name=backend)
    for name, sample in data.items():
        got = np.fromfile(tmp_path / "out" / "bs4" / f"{name[:-4]}_0.bin", np.float32)
        np.testing.assert_allclose(got, direct(exported_onnx["matmul"], sample)[0][0], rtol=0, atol=1e-5)


def test_runner_error_type_is_a_toolkit_error():
    with pytest.raises(RunnerError, match="--outfmt XML"):
        run_inference("x.onnx", None, None, None, outfmt="XML")
