"""ais_bench parity: its command lines run unchanged on the CPU runner, its checks, its summary, the .om hand-over."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import T2T_ViT_infer
from conftest import REPO_ROOT
from t2t_vit.aisbench import AIS_OPTIONS
from test_runner import direct, tiny_model, write_samples

# The summary ais_bench writes (ais_bench/infer/summary.py), key for key.
SUMMARY_KEYS = ["filesinfo", "args", "NPU_compute_time", "H2D_latency", "D2H_latency", "throughput",
                "npu_compute_time_list", "pid"]
STATS_KEYS = ["min", "max", "mean", "median", "percentile(99%)", "count"]

# Command lines from ais_bench's README and the ModelZoo T2T-ViT README that feed a one-input model,
# with the program and the model changed only (MODEL).
USAGE_LINES = [
    "--model MODEL --input ./data --output ./result",
    "--model MODEL --output ./result",
    "--model MODEL --output ./result --dump 1",
    "--model MODEL --output ./result --output_dirname subdir",
    "--model MODEL --output ./result --profiler 1",
    "--model MODEL --output ./ --dump 1",
    "--model MODEL --input ./data/ --device 1,2",
    "--model MODEL --outputSize 100000 --auto_set_dymshape_mode 1 --input ./data",
    "--model MODEL --outputSize 100000 --dymShape_range image:1,3,4,4~6",
    "--model MODEL --acl_json_path ./acl.json",
    "--model MODEL --input ./",
    "--model MODEL --input ./1.bin,./2.bin,./3.bin,./4.bin,./5.bin",
    "--model MODEL --input=./data/ --dymBatch 2",
    "--model MODEL --input=./data/ --dymHW 224,224",
    "--model MODEL --output ./ --debug 1",
    "--model MODEL --output ./ --outfmt BIN --loop 5",
    "--model MODEL --dymShape image:1,3,4,4 --outputSize 10000",
    "--model MODEL --input=./data/ --auto_set_dymdims_mode 1",
    "--model MODEL --input=./data/ --dymDims image:1,3,4,4",
    "--model MODEL --input prep_bins --output result --output_dirname bs4 --outfmt BIN --batchsize 4",
    "--model MODEL --batchsize 4 --loop 100",
    "-m MODEL -i ./data -o ./result -l 2 -d 0 --outfmt NPY --warmup_count 0 --run_mode full",
    "--model MODEL --loop 3 --pure_data_type random --display_all_summary true --output ./r --output_dirname p",
]


def run_cli(line, model, capsys):
    """The line through the script's own ``main``, as its command line runs it (in this process: 23 lines, each
    a second of interpreter and runtime start-up saved; tests/test_runner.py runs the script as a process)."""
    argv = shlex.split(line.replace("MODEL", str(model)))
    returncode = T2T_ViT_infer.main([*argv, "--backend", "onnxruntime"])
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(argv, returncode, captured.out, captured.err)


@pytest.fixture
def usage_dir(tmp_path):
    tiny_model(tmp_path / "tiny.onnx")
    samples = write_samples(tmp_path / "data", [f"{i}.bin" for i in range(1, 6)])
    write_samples(tmp_path / "prep_bins", [f"{i}.bin" for i in range(1, 6)])
    for name in samples:
        (tmp_path / name).write_bytes((tmp_path / "data" / name).read_bytes())
    (tmp_path / "acl.json").write_text("{}")
    return tmp_path, samples


@pytest.mark.parametrize("line", USAGE_LINES, ids=range(len(USAGE_LINES)))
def test_ais_bench_usage_lines_run_unchanged(usage_dir, line, capsys, monkeypatch):
    folder, samples = usage_dir
    monkeypatch.chdir(folder)
    monkeypatch.setattr(sys, "argv", [str(REPO_ROOT / "T2T_ViT_infer.py")])
    result = run_cli(line, folder / "tiny.onnx", capsys)
    assert result.returncode == 0, result.stderr
    assert "throughput 1000*batchsize.mean(" in result.stdout
    for flag in ("--dump", "--profiler", "--acl_json_path", "--dymHW", "--dymDims", "--dymShape ", "--outputSize",
                 "--dymShape_range", "--auto_set_dymshape_mode", "--auto_set_dymdims_mode"):
        if flag in line:
            assert f"{flag.strip()} " in result.stderr and "has no effect on the CPU" in result.stderr
    summaries = list(folder.rglob("*_summary.json"))
    if " -o " in line or "--output " in line:
        assert len(summaries) == 1
        summary = json.loads(summaries[0].read_text())
        assert list(summary) == SUMMARY_KEYS + ["cpu_runner"]
        assert summary["args"][1:] == [*shlex.split(line.replace("MODEL", str(folder / "tiny.onnx"))), "--backend",
                                       "onnxruntime"]
        for key in ("NPU_compute_time", "H2D_latency", "D2H_latency"):
            assert list(summary[key]) == STATS_KEYS and isinstance(summary[key]["count"], int)
        assert isinstance(summary["throughput"], float) and isinstance(summary["pid"], int)
        assert all(isinstance(value, float) for value in summary["npu_compute_time_list"])
        result_dir = summaries[0].with_name(summaries[0].name[:-len("_summary.json")])
        for entry in summary["filesinfo"].values():
            for infile, outfile in zip(entry["infiles"] * 2, entry["outfiles"]):
                if infile == "pure_infer_data":
                    continue
                data = np.fromfile(folder / infile, dtype="<f4").reshape(1, 3, 4, 4)
                index = int(outfile.rsplit("_", 1)[1].split(".")[0])
                path = folder / outfile
                got = np.load(path) if outfile.endswith(".npy") else np.fromfile(path, dtype=np.float32)
                np.testing.assert_allclose(got.reshape(-1), direct(folder / "tiny.onnx", data)[index][0], rtol=0,
                                           atol=1e-5)
            assert all((folder / outfile).parent.resolve() == result_dir.resolve() for outfile in entry["outfiles"])


def infer(*args):
    return T2T_ViT_infer.main([*map(str, args), "--no-progress", "-q", "--backend", "onnxruntime"])


@pytest.mark.parametrize("args, pattern", [
    (("--output_dirname", "x"), r"--output_dirname cannot be used alone"),
    (("--loop", "0"), r"argument --loop/-l: 0 is an invalid positive int value"),
    (("--warmup_count", "-1"), r"argument --warmup_count/--warmup-count: -1 is an invalid nonnegative int value"),
    (("--batchsize", "0"), r"argument --batchsize: 0 is an invalid positive int value"),
    (("--device", "256"), r"device 256 is invalid"), (("-d", "0,300"), r"device 300 is invalid"),
    (("--debug", "maybe"), r"--debug: boolean value expected"), (("--outfmt", "XML"), r"invalid choice 'XML'"),
    (("--pure_data_type", "ones"), r"invalid choice: 'ones'"), (("--run_mode", "fast"), r"invalid choice: 'fast'"),
    (("--output_batchsize_axis", "-1"), r"-1 is an invalid nonnegative int value"),
    (("--profiler", "1", "--dump", "1", "--output", "o"), r"--profiler and --dump cannot both be true"),
    (("--dump", "yes"), r"--profiler and --dump need --output"),
    (("--dymBatch", "2", "--batchsize", "4"), r"--dymBatch 2 and --batchsize 4 disagree"),
    (("--loop", "two"), r"--loop/-l: integer expected, got 'two'"),
])
def test_bad_values_are_usage_errors(tmp_path, capsys, args, pattern):
    model = tiny_model(tmp_path / "tiny.onnx")
    with pytest.raises(SystemExit) as raised:
        infer("--model", model, *args)
    assert raised.value.code == 2
    assert re.search(pattern, capsys.readouterr().err)


@pytest.mark.parametrize("value, expected", [("1", True), ("TRUE", True), ("y", True), ("Yes", True), ("t", True),
                                             ("0", False), ("false", False), ("N", False), ("no", False)])
def test_booleans_take_every_ais_bench_form(tmp_path, capsys, value, expected):
    model = tiny_model(tmp_path / "tiny.onnx")
    assert infer("--model", model, "--debug", value, "--display_all_summary", value) == 0
    out = capsys.readouterr().out
    assert ("[DEBUG] model" in out) is expected and ("H2D_latency (ms): min = " in out) is expected
    assert ("D2H_latency (ms): min = " in out) is expected


def test_every_npu_only_option_warns_once(tmp_path, capsys):
    model = tiny_model(tmp_path / "tiny.onnx")
    values = {"--dymHW": "224,224", "--dymDims": "image:1,3,4,4", "--dymShape": "image:1,3,4,4", "--outputSize": "99",
              "--auto_set_dymshape_mode": "1", "--auto_set_dymdims_mode": "1", "--profiler": "1",
              "--acl_json_path": "acl.json", "--dymShape_range": "image:1,3,4,4~6", "--aipp_config": "aipp.cfg",
              "--energy_consumption": "1", "--npu_id": "3"}
    npu_only = [option.name for option in AIS_OPTIONS if option.cpu == "npu"]
    assert sorted(npu_only) == sorted([*values, "--dump"])
    args = [item for pair in values.items() for item in pair]
    assert infer("--model", model, "--output", tmp_path / "out", *args) == 0
    warnings = [line.split(": ", 1)[1] for line in capsys.readouterr().err.splitlines()
                if "has no effect on the CPU" in line]
    assert sorted(message.split()[0] for message in warnings) == sorted(values)


def test_pure_inference_with_output_writes_what_ais_bench_writes(tmp_path, capsys):
    model = tiny_model(tmp_path / "tiny.onnx")
    assert infer("--model", model, "--batchsize", 2, "--loop", 2, "--output", tmp_path / "out", "--output_dirname",
                 "pure", "--outfmt", "NPY") == 0
    folder = tmp_path / "out" / "pure"
    assert sorted(path.name for path in folder.iterdir()) == ["pure_infer_data_0.npy", "pure_infer_data_1.npy"]
    np.testing.assert_allclose(np.load(folder / "pure_infer_data_0.npy"),
                               direct(model, np.zeros((2, 3, 4, 4), np.float32))[0], rtol=0, atol=1e-6)
    summary = json.loads((tmp_path / "out" / "pure_summary.json").read_text())
    assert summary["filesinfo"] == {"0": {"infiles": ["pure_infer_data"],
                                          "outfiles": [str(folder / f"pure_infer_data_{i}.npy") for i in (0, 1)]}}
    assert f"results in {folder}" in capsys.readouterr().out


def test_random_pure_data_is_random_bytes(tmp_path):
    from t2t_vit.runtime.batching import pure_infer_data

    zero = pure_infer_data((2, 3), np.dtype(np.float32), "zero")
    assert zero.dtype == np.float32 and not zero.any()
    first, second = (pure_infer_data((64, 3), np.dtype(np.uint8), "random") for _ in range(2))
    assert first.dtype == np.uint8 and first.shape == (64, 3) and not np.array_equal(first, second)
    floats = pure_infer_data((4, 48), np.dtype(np.float32), "random")
    assert floats.dtype == np.float32 and floats.view(np.uint8).std() > 40  # bytes spread over 0..255


def test_output_batchsize_axis_splits_along_that_axis(tmp_path):
    # A model whose batch is on axis 1 of its output: class (10, N).
    import onnx
    from onnx import TensorProto, helper

    model = tiny_model(tmp_path / "tiny.onnx")
    proto = onnx.load(str(model))
    proto.graph.node.append(helper.make_node("Transpose", ["class"], ["class_t"], perm=[1, 0]))
    del proto.graph.output[:]
    proto.graph.output.append(helper.make_tensor_value_info("class_t", TensorProto.FLOAT, [10, "N"]))
    onnx.save(proto, str(tmp_path / "t.onnx"))
    samples = write_samples(tmp_path / "bins", ["a.bin", "b.bin"])
    assert infer("--model", tmp_path / "t.onnx", "--input", tmp_path / "bins", "--batchsize", 2, "--output",
                 tmp_path / "out", "--output_dirname", "r", "--output_batchsize_axis", 1) == 0
    for name, sample in samples.items():
        got = np.fromfile(tmp_path / "out" / "r" / f"{name[:-4]}_0.bin", dtype=np.float32)
        np.testing.assert_allclose(got, direct(model, sample)[0][0], rtol=0, atol=1e-5)
    assert infer("--model", tmp_path / "t.onnx", "--input", tmp_path / "bins", "--batchsize", 2, "--output",
                 tmp_path / "out2", "--output_batchsize_axis", 2) == 1


def test_dymbatch_is_the_batch_and_a_device_list_runs_one_process_per_device(tmp_path, capsys):
    model = tiny_model(tmp_path / "tiny.onnx")
    write_samples(tmp_path / "bins", [f"{i}.bin" for i in range(4)])
    assert infer("--model", model, "--input", tmp_path / "bins", "--dymBatch", 2, "--device", "0,1", "--output",
                 tmp_path / "out", "--output_dirname", "r") == 0
    for index, device in enumerate((0, 1)):  # without --divide_input each device runs every input, as ais_bench
        summary = json.loads((tmp_path / "out" / "r" / f"device{device}_{index}_summary.json").read_text())
        assert summary["NPU_compute_time"]["count"] == 2 and summary["cpu_runner"]["batchsize"] == 2
        assert summary["cpu_runner"]["options"]["device"] == [0, 1]
        assert len(list((tmp_path / "out" / "r" / f"device{device}_{index}").glob("*_0.bin"))) == 4
    assert "[INFO] summary throughput:" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------ the hand-over

# A stand-in for `python3 -m ais_bench`: ais_bench's 2023 option table and checks, restated from its
# source (get_args), without this toolkit's code; it records what it parsed and exits as ais_bench would.
STAND_IN = textwrap.dedent('''
    import argparse, json, os, sys

    def str2bool(v):
        if v.lower() in ("yes", "true", "t", "y", "1"):
            return True
        if v.lower() in ("no", "false", "f", "n", "0"):
            return False
        raise argparse.ArgumentTypeError("Boolean value expected")

    def positive(v):
        if int(v) <= 0:
            raise argparse.ArgumentTypeError("invalid positive int")
        return int(v)

    def nonnegative(v):
        if int(v) < 0:
            raise argparse.ArgumentTypeError("invalid nonnegative int")
        return int(v)

    def device(v):
        values = [int(x) for x in v.split(",")]
        if any(not 0 <= x <= 255 for x in values):
            raise argparse.ArgumentTypeError("device out of range")
        return values if "," in v else values[0]

    p = argparse.ArgumentParser()
    p.add_argument("--model", "-m", required=True)
    p.add_argument("--input", "-i", default=None)
    p.add_argument("--output", "-o", default=None)
    p.add_argument("--output_dirname", type=str, default=None)
    p.add_argument("--outfmt", default="BIN", choices=["NPY", "BIN", "TXT"])
    p.add_argument("--loop", "-l", type=positive, default=1)
    p.add_argument("--debug", type=str2bool, default=False)
    p.add_argument("--device", "-d", type=device, default=0)
    p.add_argument("--dymBatch", type=int, default=0)
    for name in ("--dymHW", "--dymDims", "--dymShape", "--outputSize", "--acl_json_path", "--dymShape_range"):
        p.add_argument(name, type=str, default=None)
    for name in ("--auto_set_dymshape_mode", "--auto_set_dymdims_mode", "--profiler", "--dump",
                 "--display_all_summary"):
        p.add_argument(name, type=str2bool, default=False)
    p.add_argument("--batchsize", type=positive, default=None)
    p.add_argument("--pure_data_type", type=str, default="zero", choices=["zero", "random"])
    p.add_argument("--output_batchsize_axis", type=nonnegative, default=0)
    p.add_argument("--run_mode", type=str, default="array", choices=["array", "files", "tensor", "full"])
    p.add_argument("--warmup_count", type=nonnegative, default=1)
    args = p.parse_args()
    if args.output is None and args.output_dirname is not None:
        raise RuntimeError("error bad parameters --output_dirname")
    with open(os.environ["AIS_BENCH_RECORD"], "w") as handle:
        json.dump({"argv": sys.argv[1:], "parsed": vars(args)}, handle)
''')


@pytest.fixture
def stand_in(tmp_path):
    package = tmp_path / "site" / "ais_bench"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text(STAND_IN)
    om = tmp_path / "T2T_ViT_bs8.om"
    om.write_bytes(b"om")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path / 'site'}:{REPO_ROOT}", "AIS_BENCH_RECORD": str(tmp_path / "r.json")}

    def hand_over(*args):
        result = subprocess.run([sys.executable, str(REPO_ROOT / "T2T_ViT_infer.py"), "--model", str(om), *args],
                                env=env, capture_output=True, text=True, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        return json.loads((tmp_path / "r.json").read_text())

    return hand_over, om


@pytest.mark.parametrize("typed, meant", [
    (["--input", "bins", "--output", "result", "--output_dirname", "bs8", "--outfmt", "BIN", "--batchsize", "8"],
     {"input": "bins", "output": "result", "output_dirname": "bs8", "outfmt": "BIN", "batchsize": 8}),
    (["-i", "bins", "-o", "result", "--output-dirname", "bs8", "--outfmt", "bin", "--warmup-count", "0", "-l", "3"],
     {"input": "bins", "output": "result", "output_dirname": "bs8", "outfmt": "BIN", "warmup_count": 0, "loop": 3}),
    (["--input=bins", "--outfmt=npy", "--backend", "openvino", "--threads", "2", "--streams", "2", "--micro-batch",
      "2", "--no-progress", "-q", "--batchsize=8"], {"input": "bins", "outfmt": "NPY", "batchsize": 8}),
    (["--debug", "Y", "--display_all_summary", "1", "--device", "0,1", "--pure_data_type", "random", "--run_mode",
      "tensor", "--output_batchsize_axis", "0", "--dymBatch", "8", "--profiler", "no"],
     {"debug": True, "display_all_summary": True, "device": [0, 1], "pure_data_type": "random", "run_mode": "tensor",
      "output_batchsize_axis": 0, "dymBatch": 8, "profiler": False}),
    (["--dymHW", "224,224", "--dymShape", "image:8,3,224,224", "--outputSize", "4000", "--auto_set_dymdims_mode", "0",
      "--acl_json_path", "acl.json", "-d", "3"],
     {"dymHW": "224,224", "dymShape": "image:8,3,224,224", "outputSize": "4000", "auto_set_dymdims_mode": False,
      "acl_json_path": "acl.json", "device": 3}),
], ids=["modelzoo", "dash_and_short_forms", "equals_and_own_options", "bools_and_lists", "npu_options"])
def test_om_commands_reach_ais_bench_in_forms_its_parser_accepts(stand_in, typed, meant):
    hand_over, om = stand_in
    record = hand_over(*typed)
    parsed = record["parsed"]
    assert parsed["model"] == str(om)
    for key, value in meant.items():
        assert parsed[key] == value, key
    own = {"--backend", "--threads", "--streams", "--micro-batch", "--no-progress", "-q", "--output-dirname",
           "--warmup-count"}
    assert not own & {item.split("=")[0] for item in record["argv"]}
    assert all(item in ("-m",) or not re.fullmatch(r"-[a-z]", item) for item in record["argv"])  # long forms only


def test_the_om_hand_over_keeps_ais_bench_checks_first(stand_in, tmp_path):
    result = subprocess.run([sys.executable, str(REPO_ROOT / "T2T_ViT_infer.py"), "--model", str(stand_in[1]),
                             "--output_dirname", "x"], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert result.returncode == 2 and "--output_dirname cannot be used alone" in result.stderr


def test_random_pure_data_reaches_the_model(tmp_path):
    # A model that echoes its input's mean: zero data gives 0, ais_bench's random bytes give something else.
    model = tiny_model(tmp_path / "tiny.onnx")
    for kind in ("zero", "random"):
        assert infer("--model", model, "--output", tmp_path / kind, "--output_dirname", "p", "--pure_data_type",
                     kind, "--outfmt", "NPY") == 0
    zero = np.load(tmp_path / "zero" / "p" / "pure_infer_data_1.npy")
    random = np.load(tmp_path / "random" / "p" / "pure_infer_data_1.npy")
    assert not zero.any() and not np.array_equal(np.nan_to_num(random), zero)


@pytest.mark.parametrize("mode", ["array", "files", "tensor", "full"])
def test_every_run_mode_gives_the_same_files(tmp_path, mode):
    model = tiny_model(tmp_path / "tiny.onnx")
    samples = write_samples(tmp_path / "bins", ["a.bin", "b.bin", "c.bin"])
    assert infer("--model", model, "--input", tmp_path / "bins", "--batchsize", 2, "--run_mode", mode, "--output",
                 tmp_path / "out", "--output_dirname", mode) == 0
    for name, sample in samples.items():
        got = np.fromfile(tmp_path / "out" / mode / f"{name[:-4]}_0.bin", dtype=np.float32)
        np.testing.assert_allclose(got, direct(model, sample)[0][0], rtol=0, atol=1e-5)
    summary = json.loads((tmp_path / "out" / f"{mode}_summary.json").read_text())
    assert summary["cpu_runner"]["options"]["run_mode"] == mode


def test_a_dynamic_batch_om_goes_to_ais_bench_with_a_gear_and_every_device(stand_in, tmp_path):
    """T2T_ViT_atc.sh --dynamic-batch's .om: --dymBatch 4 --device 0,1 reaches ais_bench's own option table as it
    means; no gear, or one the model was not built with, is refused before ais_bench starts."""
    hand_over, om = stand_in
    dynamic = om.with_name("T2T_ViT_dyn.om")
    dynamic.write_bytes(b"om")
    dynamic.with_name("T2T_ViT_dyn.om.json").write_text(json.dumps(
        {"dynamic_batch_sizes": [1, 4, 8, 16, 32, 64], "batch_size": None, "input_dtype": "float32",
         "input_shape": "3,224,224"}))
    env = {**os.environ, "PYTHONPATH": f"{tmp_path / 'site'}:{REPO_ROOT}", "AIS_BENCH_RECORD": str(tmp_path / "r.json")}

    def infer(*args):
        return subprocess.run([sys.executable, str(REPO_ROOT / "T2T_ViT_infer.py"), "--model", str(dynamic), *args],
                              env=env, capture_output=True, text=True, cwd=tmp_path)

    result = infer("--dymBatch", "4", "--device", "0,1", "--loop", "5")
    assert result.returncode == 0, result.stderr
    parsed = json.loads((tmp_path / "r.json").read_text())["parsed"]
    assert parsed["model"] == str(dynamic) and parsed["dymBatch"] == 4 and parsed["device"] == [0, 1]
    (tmp_path / "r.json").unlink()
    for args, expected in ((["--loop", "5"], "is a dynamic-batch model (gears 1,4,8,16,32,64): give --dymBatch N"),
                           (["--dymBatch", "2"], "--dymBatch 2 is not a gear of")):
        result = infer(*args)
        assert result.returncode == 1 and expected in result.stderr and result.stderr.count("\n") == 1, result.stderr
        assert not (tmp_path / "r.json").exists()  # ais_bench never started


def test_device_folder_names_have_one_writer_and_one_reader():
    from t2t_vit.aisbench import device_folder, device_folders, is_device_entry, parse_device_folder

    assert device_folders([3, 0]) == ["device3_0", "device0_1"] == [device_folder(3, 0), device_folder(0, 1)]
    assert [parse_device_folder(name) for name in ("device3_0", "device12", "device_1", "result")] == \
        [(3, 0), (12, None), None, None]
    assert [is_device_entry(name) for name in ("device0_1", "device0_1_summary.json", "device0_1_resume.json",
                                               "device0_1.json", "bs1_summary.json")] == [True, True, True, False, False]
