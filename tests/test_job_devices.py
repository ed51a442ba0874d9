"""The main job on the whole card: --device 0,1 (one process per chip, or per CPU device), each ais_bench era's
multi-device behaviour, the host check first, and the one dynamic-batch .om with --dymBatch per batch size."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO_ROOT, TINY
from test_atc import NPU_SMI_DUO
from test_doctor import NUMPY_FITS_CANN
from T2T_ViT_eval import _devices
from t2t_vit.job.invocation import Invocation
from t2t_vit.job.npu import ais_bench_commands, pass_through
from t2t_vit.job.om import DYNAMIC_OM, check_gears
from t2t_vit.job.request import JobError
from t2t_vit.job.run import clear_other_layout, device_summary
from t2t_vit.job.stamps import Digests
from t2t_vit.data.metrics import device_layout, evaluate

DEMO = ("--demo", "--demo-images", "5", "--loop", "1", "--model", TINY)  # the test-only variant: the size is no matter
IMAGES = 5

# ais_bench of each era (FACTS 12): "early" runs every input on every device into one folder; "mid" always splits
# into device<N>/; "today" splits only with --divide_input, into device<N>_<i>/. Logits: the input's first 1000
# bytes; each device's compute time differs (5 ms + device), so its throughput does.
ERA_AIS_BENCH = textwrap.dedent('''
    import argparse, json, os, sys
    import numpy as np
    era = os.environ["AIS_BENCH_ERA"]
    p = argparse.ArgumentParser(prog="ais_bench")
    for name in ("--model", "--input", "--output", "--output_dirname", "--outfmt", "--device"):
        p.add_argument(name)
    for name in ("--batchsize", "--loop", "--warmup_count", "--dymBatch"):
        p.add_argument(name, type=int, default=0)
    if era == "today":
        p.add_argument("--divide_input", default="false")
    args = p.parse_args()
    with open(os.environ["AIS_BENCH_LOG"], "a") as log:
        log.write(json.dumps(sys.argv[1:]) + "\\n")
    devices = [int(d) for d in (args.device or "0").split(",")]
    files = sorted(n for n in os.listdir(args.input) if n.endswith(".bin")) if args.input else []
    batch = args.dymBatch or args.batchsize
    def write(folder, names, summary, device):
        os.makedirs(folder, exist_ok=True)
        for name in names:
            pixels = np.fromfile(os.path.join(args.input, name), np.uint8)[:1000].astype(np.float32)
            pixels.tofile(os.path.join(folder, name.split(".")[0] + "_0.bin"))
        ms = 5.0 + device
        stats = {"min": ms, "max": ms, "mean": ms, "median": ms, "percentile(99%)": ms, "count": args.loop}
        json.dump({"filesinfo": {}, "NPU_compute_time": stats, "throughput": 1000.0 * batch / ms}, open(summary, "w"))
    def shares():
        size, extra = divmod(len(files), len(devices))
        start = 0
        for i in range(len(devices)):
            end = start + size + (i < extra)
            yield files[start:end]
            start = end
    top = os.path.join(args.output, args.output_dirname)
    if len(devices) == 1:
        write(top, files, top + "_summary.json", devices[0])
    elif era == "early":
        for device in devices:
            write(top, files, top + "_summary.json", device)
    elif era == "mid":
        for device, share in zip(devices, shares()):
            write(os.path.join(top, f"device{device}"), share, os.path.join(top, f"device{device}_summary.json"), device)
    else:
        divide = args.divide_input.lower() in ("true", "1")
        for i, (device, share) in enumerate(zip(devices, shares() if divide else [files] * len(devices))):
            write(os.path.join(top, f"device{device}_{i}"), share, os.path.join(top, f"device{device}_{i}_summary.json"),
                  device)
            # its closing lines: each device's timed runs from 1000.0 + 0.1 i to 1001.0 + 0.1 i
            print(f"[INFO] i:{i} device_{device} throughput:{1000.0 * batch / (5.0 + device)} "
                  f"start_time:{1000.0 + 0.1 * i} end_time:{1001.0 + 0.1 * i}")
''')


def run_eval(work, *args, env=None):
    return subprocess.run(["bash", str(REPO_ROOT / "T2T_ViT_eval.sh"), "--work-dir", str(work.parent), *args],
                          env={**os.environ, "PYTHON": sys.executable, **(env or {})}, capture_output=True, text=True,
                          timeout=1200)


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
    """A demo run on one device at batch 4."""
    work = tmp_path_factory.mktemp("devices") / "work" / "demo"
    result = run_eval(work, *DEMO, "--batch-sizes", "4")
    assert result.returncode == 0, result.stderr[-3000:]
    return work


def copy_of(work, tmp_path):
    target = tmp_path / "work" / "demo"
    shutil.copytree(work, target, symlinks=True)  # another data dir path: the 5 bins are made again
    return target


def names_of(work):
    return np.load(work / "label.npy", allow_pickle=False)["name"].tolist()


def logits_in(folder):
    return {path.name: np.fromfile(path, np.float32) for path in Path(folder).glob("*_0.bin")}


def test_two_cpu_devices_score_each_image_once_with_the_logits_of_one(one_device, tmp_path):
    work = copy_of(one_device, tmp_path)
    result = run_eval(work, *DEMO, "--batch-sizes", "4", "--device", "0,1")
    assert result.returncode == 0, result.stderr[-3000:]
    host = result.stdout.split("\n== ")[0]  # the host check comes first, and says first that the run is on the CPU
    assert host.startswith("== host check (T2T_ViT_doctor.py): this run is on the CPU (no CANN here): --device 0,1 "
                           "runs")
    assert "| atc | not on PATH | blocker |" in host and "| Python |" not in host  # what an NPU run still needs
    assert "running again: made with another --device list" in result.stdout  # one device's stamp is not reused
    layout = device_layout(work / f"result_{TINY}" / "bs4")
    assert layout.kind == "split" and list(layout.folders) == ["device0_0", "device1_1"]
    assert [len(found) for found in layout.folders.values()] == [3, 2]  # the first len % 2 devices one more
    single = logits_in(one_device / f"result_{TINY}" / "bs4")
    split = {**logits_in(work / f"result_{TINY}" / "bs4" / "device0_0"), **logits_in(work / f"result_{TINY}" / "bs4" / "device1_1")}
    assert sorted(split) == sorted(single) and len(single) == IMAGES
    for name in single:
        np.testing.assert_allclose(split[name], single[name], atol=1e-5, rtol=0)
    one = json.loads((one_device / "eval_summary.json").read_text())["rows"][0]
    summary = json.loads((work / "eval_summary.json").read_text())
    (row,) = summary["rows"]
    assert (row["top1"], row["top5"], row["count"]) == (one["top1"], one["top5"], one["count"])
    assert [entry["device"] for entry in row["per_device"]] == [0, 1] and summary["devices"] == [0, 1]
    assert row["images_per_s"] == pytest.approx(sum(entry["images_per_s"] for entry in row["per_device"]))
    assert 0 < row["wall_images_per_s"] <= row["images_per_s"] * 1.5
    assert "| batch size | device 0 images/s (one chip) | device 1 images/s (one chip) | card images/s (sum of 2) |" \
        in result.stdout
    again = run_eval(work, *DEMO, "--batch-sizes", "4", "--device", "0,1")
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"reusing {work / f'result_{TINY}' / 'bs4'}: same model, runner, batch and bins" in again.stdout
    assert json.loads((work / "eval_summary.json").read_text())["rows"][0]["per_device"] == row["per_device"]


def fake_host(tmp_path, era):
    """An Atlas 300I Duo host: npu-smi, atc, CANN's environment, aclruntime and an ais_bench of ``era``."""
    bin_dir, site = tmp_path / "host" / "bin", tmp_path / "host" / "site"
    bin_dir.mkdir(parents=True)
    (bin_dir / "npu-smi").write_text(NPU_SMI_DUO)
    (bin_dir / "atc").write_text("#!/usr/bin/env bash\nexit 0\n")
    for tool in ("npu-smi", "atc"):
        (bin_dir / tool).chmod(0o755)
    toolkit = tmp_path / "host" / "ascend-toolkit"
    toolkit.mkdir()
    (toolkit / "ascend_toolkit_install.info").write_text("version=8.0.RC2\n")
    for package in ("aclruntime", "ais_bench"):
        (site / package).mkdir(parents=True)
        (site / package / "__init__.py").write_text("")
    (site / "ais_bench" / "__main__.py").write_text(ERA_AIS_BENCH)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}", "ASCEND_TOOLKIT_HOME": str(toolkit),
            "PYTHONPATH": str(site), "AIS_BENCH_ERA": era, "AIS_BENCH_LOG": str(tmp_path / "ais_bench.log")}


def built_om(work, name, **record):
    """An .om with the build record T2T_ViT_atc.sh writes, for the work dir's sum export and keep_dtype.cfg."""
    digest = Digests()
    om_dir = work / f"om_{TINY}"  # a variant's own (T2T-ViT-14's is om/)
    om_dir.mkdir(exist_ok=True)
    om = om_dir / name
    om.write_bytes(b"an offline model")
    (om_dir / f"{name}.json").write_text(json.dumps({
        "onnx_sha256": digest(work / f"{TINY}_sum.onnx"), "keep_dtype_sha256": digest(work / f"{TINY}_keep_dtype.cfg"),
        "om_sha256": digest(om), "input_dtype": "uint8", "input_shape": "3,224,224", **record}))
    return om


@pytest.mark.parametrize("era", ["early", "mid", "today"])
def test_both_chips_of_a_duo_whichever_ais_bench_is_installed(one_device, tmp_path, era):
    work = copy_of(one_device, tmp_path)
    om = built_om(work, "T2T_ViT_bs4.om", batch_size=4)
    env = fake_host(tmp_path, era)
    result = run_eval(work, *DEMO, "--batch-sizes", "4", "--device", "0,1", env=env)
    if not NUMPY_FITS_CANN:  # numpy 2 below Python 3.13: the host check stops the job before anything runs
        assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr[-3000:]
        assert "error: the NPU flow cannot run here: numpy: " in result.stderr and "numpy<2" in result.stderr
        assert "leave out --device to run on the CPU" in result.stderr
        assert not (tmp_path / "ais_bench.log").exists()
        return
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    calls = [json.loads(line) for line in (tmp_path / "ais_bench.log").read_text().splitlines()]
    accuracy = sorted((call for call in calls if "--input" in call), key=lambda call: call[call.index("--device") + 1])
    if era == "today":  # it splits the inputs itself
        assert len(calls) == 2 and accuracy[0][-4:] == ["--device", "0,1", "--divide_input", "true"]
        assert "--divide_input" not in calls[1]  # pure inference: nothing to divide
    else:  # one ais_bench per chip, each with its own share of the bins and its own folder
        assert len(calls) == 4 and [call[call.index("--device") + 1] for call in accuracy] == ["0", "1"]
        shares = [call[call.index("--input") + 1] for call in accuracy]
        assert [Path(share).name for share in shares] == ["device0_0", "device1_1"]
        assert [call[call.index("--output_dirname") + 1] for call in accuracy] == ["device0_0", "device1_1"]
        assert not Path(shares[0]).exists()  # the links to the bins are removed afterwards
    assert all(call[call.index("--model") + 1] == str(om) for call in calls)
    layout = device_layout(work / f"result_{TINY}" / "bs4")
    assert layout.kind == "split" and [len(found) for found in layout.folders.values()] == [3, 2]
    scored, _ = evaluate(work / f"result_{TINY}" / "bs4", work / "label.npy")
    (row,) = json.loads((work / "eval_summary.json").read_text())["rows"]
    assert row["runner"] == "ais_bench" and (row["top1"], row["count"]) == (scored["top1"], IMAGES)
    assert row["per_device"] == [{"device": 0, "images_per_s": 800.0}, {"device": 1, "images_per_s": 4000 / 6}]
    assert row["images_per_s"] == pytest.approx(800.0 + 4000 / 6)
    # the chips together per wall-clock second, where ais_bench prints their times (today's, one command): the
    # throughput pass's 2 x batch 4 x --loop 1 images from the first start (1000.0) to the last end (1001.1)
    assert row["wall_images_per_s"] == (pytest.approx(8 / 1.1) if era == "today" else None)
    assert ("i:1 device_1 throughput:" in result.stdout) == (era == "today")  # ais_bench's lines reach the user
    assert "| check | found | status | fix |" in result.stdout and "the NPU flow can run: --soc-version Ascend310P3" \
        in result.stdout


def test_a_chip_the_host_lacks_is_refused_before_anything_runs(one_device, tmp_path):
    work = copy_of(one_device, tmp_path)
    result = run_eval(work, *DEMO, "--batch-sizes", "4", "--device", "0,2", env=fake_host(tmp_path, "today"))
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    if NUMPY_FITS_CANN:
        assert "error: --device 0,2: npu-smi lists no chip with logical id 2 (the chips here: --device 0,1)" \
            in result.stderr
    else:
        assert "error: the NPU flow cannot run here: numpy: " in result.stderr
    assert not (tmp_path / "ais_bench.log").exists()


def test_one_dynamic_batch_om_runs_every_batch_size_at_its_gear(one_device, tmp_path):
    work = copy_of(one_device, tmp_path)
    om = built_om(work, DYNAMIC_OM, batch_size=None, dynamic_batch_sizes=[1, 4])
    env = fake_host(tmp_path, "today")
    result = run_eval(work, *DEMO, "--batch-sizes", "1 4", env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    calls = [json.loads(line) for line in (tmp_path / "ais_bench.log").read_text().splitlines()]
    assert {call[call.index("--model") + 1] for call in calls} == {str(om)}
    assert sorted(call[call.index("--dymBatch") + 1] for call in calls) == ["1", "1", "4", "4"]
    rows = json.loads((work / "eval_summary.json").read_text())["rows"]
    assert [row["runner"] for row in rows] == ["ais_bench", "ais_bench"]
    (tmp_path / "ais_bench.log").unlink()
    (work / "eval_summary.json").unlink()
    refused = run_eval(work, *DEMO, "--batch-sizes", "1 8", env=env)
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stderr
    assert f"{work / f'om_{TINY}' / DYNAMIC_OM} was built for the batch sizes 1 4; batch size 8 is not one of its gears" \
        in refused.stderr
    assert "== preprocess" not in refused.stdout and not (tmp_path / "ais_bench.log").exists()


# -------------------------------------------------------------------------------------- without a model run

def an_invocation(tmp_path, inputs=None, model="M.om", gear=None):
    return Invocation(Path(model), inputs, tmp_path / "result", "bs4", batch=4, loop=1, warmup=1, gear=gear)


def arguments(tmp_path, inputs=None):
    return ["--model", "M.om", *(["--input", str(inputs)] if inputs else []), "--output", str(tmp_path / "result"),
            "--output_dirname", "bs4", "--outfmt", "BIN", "--batchsize", "4", "--loop", "1", "--warmup_count", "1"]


def test_one_pass_description_renders_to_ais_bench_and_to_the_cpu_runner(tmp_path):
    invocation = an_invocation(tmp_path, tmp_path / "bins")
    assert invocation.arguments() == arguments(tmp_path, tmp_path / "bins")
    assert invocation.runner_options() == {
        "model": "M.om", "inputs": [str(tmp_path / "bins")], "output": str(tmp_path / "result"),
        "output_dirname": "bs4", "outfmt": "BIN", "batchsize": 4, "loop": 1, "warmup_count": 1}
    assert an_invocation(tmp_path).runner_options()["inputs"] is None  # pure inference


@pytest.mark.parametrize("behaviour", ["divide_input", "older", "unknown"])
def test_the_ais_bench_command_lines_of_each_behaviour(tmp_path, behaviour):
    bins = tmp_path / "bins"
    bins.mkdir()
    for index in range(5):
        (bins / f"img{index}.bin").write_bytes(b"x")
    commands = ais_bench_commands(an_invocation(tmp_path, bins), [0, 1], behaviour)
    base = [sys.executable, "-m", "ais_bench"]
    if behaviour == "divide_input":
        assert commands == [[*base, *arguments(tmp_path, bins), "--device", "0,1", "--divide_input", "true"]]
        return
    shares = [tmp_path / "result" / ".bs4_inputs" / name for name in ("device0_0", "device1_1")]
    assert commands == [[*base, "--model", "M.om", "--input", str(share), "--output", str(tmp_path / "result" / "bs4"),
                         "--output_dirname", share.name, "--outfmt", "BIN", "--batchsize", "4", "--loop", "1",
                         "--warmup_count", "1", "--device", str(device)] for device, share in zip((0, 1), shares)]
    assert [sorted(path.name for path in share.iterdir()) for share in shares] == [
        ["img0.bin", "img1.bin", "img2.bin"], ["img3.bin", "img4.bin"]]
    assert (shares[1] / "img3.bin").resolve() == (bins / "img3.bin").resolve()


def test_one_chip_and_a_dynamic_om_and_pure_inference(tmp_path):
    base = [sys.executable, "-m", "ais_bench"]
    bins = tmp_path / "bins"
    assert ais_bench_commands(an_invocation(tmp_path, bins, DYNAMIC_OM, gear=4), [1], None) == [
        [*base, *arguments(tmp_path, bins)[:1], DYNAMIC_OM, *arguments(tmp_path, bins)[2:], "--dymBatch", "4",
         "--device", "1"]]
    assert ais_bench_commands(an_invocation(tmp_path, bins), None, None) == [
        [*base, *arguments(tmp_path, bins)]]  # chip 0: ais_bench's default, no --device
    assert ais_bench_commands(an_invocation(tmp_path), [0, 1], "divide_input") == [
        [*base, *arguments(tmp_path), "--device", "0,1"]]
    few = tmp_path / "few"
    few.mkdir()
    (few / "a.bin").write_bytes(b"x")
    with pytest.raises(JobError, match="1 bins for 2 devices"):
        ais_bench_commands(an_invocation(tmp_path, few), [0, 1], "older")


def test_a_batch_size_the_dynamic_om_has_no_gear_for_is_refused(tmp_path):
    assert check_gears(tmp_path, [1, 8]) is None  # no dynamic .om: nothing to check
    (tmp_path / DYNAMIC_OM).write_bytes(b"om")
    with pytest.raises(JobError, match="has no build record listing its gears"):
        check_gears(tmp_path, [1])
    (tmp_path / f"{DYNAMIC_OM}.json").write_text(json.dumps({"dynamic_batch_sizes": [1, 4, 8]}))
    assert check_gears(tmp_path, [1, 8]) == [1, 4, 8]
    with pytest.raises(JobError, match=r"batch size 16, 32 is not one of its gears: give --batch-sizes '1 8', or "
                                       r"rebuild it with T2T_ViT_atc.sh --dynamic-batch --batch-sizes '1 4 8 16 32'"):
        check_gears(tmp_path, [1, 16, 32, 8])


def test_the_card_figure_is_the_sum_of_the_devices(tmp_path):
    for name, ms in (("device0_0", 4.0), ("device1_1", 5.0)):
        (tmp_path / f"{name}_summary.json").write_text(json.dumps({"throughput": 8000 / ms,
                                                                   "NPU_compute_time": {"mean": ms}}))
    summary = device_summary(tmp_path, [0, 1], 3000.0, "ais_bench")
    assert summary["per_device"] == [{"device": 0, "images_per_s": 2000.0}, {"device": 1, "images_per_s": 1600.0}]
    assert summary["throughput"] == 3600.0 and summary["NPU_compute_time"]["mean"] == 4.5
    assert summary["wall_images_per_s"] == 3000.0
    (tmp_path / "device1_1_summary.json").unlink()
    with pytest.raises(JobError, match="wrote no summary .*device1_1_summary.json for device 1"):
        device_summary(tmp_path, [0, 1], None, "ais_bench")


def test_what_ais_bench_prints_reaches_the_user_as_it_came_and_is_kept(capfd):
    script = ("import sys; sys.stdout.write('bar 1/2\\rbar 2/2\\n[INFO] i:0 device_0'); sys.stdout.flush(); "
              "sys.stderr.write('[ERROR] a warning\\n'); sys.stdout.write(' start_time:1 end_time:2\\n')")
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    printed = pass_through(process)
    assert process.wait() == 0
    out, err = capfd.readouterr()
    assert out == "bar 1/2\rbar 2/2\n[INFO] i:0 device_0 start_time:1 end_time:2\n"  # a progress bar's \r kept
    assert err == "[ERROR] a warning\n"
    assert "[INFO] i:0 device_0 start_time:1 end_time:2\n" in printed and "[ERROR] a warning\n" in printed


def test_a_resumed_pass_drops_what_the_other_layout_left(tmp_path):
    (tmp_path / "a_0.bin").write_bytes(b"one device's")
    for name in ("device0_0", "device1_1", "device2_1"):
        (tmp_path / name).mkdir()
        (tmp_path / f"{name}_summary.json").write_text("{}")
    (tmp_path / "device0_0_resume.json").write_text("{}")
    clear_other_layout(tmp_path, [0, 1])
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "device0_0", "device0_0_resume.json", "device0_0_summary.json", "device1_1", "device1_1_summary.json"]
    (tmp_path / "b_0.bin").write_bytes(b"x")
    clear_other_layout(tmp_path, None)
    assert [path.name for path in tmp_path.iterdir()] == ["b_0.bin"]


@pytest.mark.parametrize("text, expected", [("0,1", [0, 1]), ("1", [1]), ("0, 1", [0, 1])])
def test_device_lists(text, expected):
    assert _devices(text) == expected


@pytest.mark.parametrize("text", ["0,0", "a", "0,,1", "-1"])
def test_bad_device_lists_are_usage_errors(text):
    import argparse

    with pytest.raises(argparse.ArgumentTypeError):
        _devices(text)
