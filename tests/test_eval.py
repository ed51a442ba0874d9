"""T2T_ViT_eval.sh end to end: every stage, the tables, the JSON, the plot, and what a re-run may reuse."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import AIS_BENCH, REPO_ROOT, TINY
from t2t_vit.runtime.backends import choose_backend
from t2t_vit.model.checkpoint import load_checkpoint
from t2t_vit.data.bins import read_bin
from t2t_vit.job.demo import make_checkpoint, make_images
from t2t_vit.job.om import om_for_batch
from t2t_vit.job.request import JobError
from t2t_vit.job.stamps import Digests
from t2t_vit.model.export import read_metadata
from t2t_vit.version_bridge import installed
from t2t_vit.data.metrics import evaluate

# The main job on the tiny test variant: what is checked here (files, tables, reuse, refusals) does not depend on
# the model's size; every published variant's run is in test_family.py (slow tier).
MODEL = TINY
DEMO = ("--demo", "--demo-images", "5", "--batch-sizes", "1 4", "--loop", "1", "--model", MODEL)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
BINS = "prep_bins_uint8"  # the job's default: uint8 bins
RUNNER = choose_backend(None)  # the job's default CPU runtime here: OpenVINO, or onnxruntime where it is absent


def run_eval(work, *args):
    """The main job with its files in ``work``; a demo's go to WORK/demo, so it is given ``work``'s parent."""
    if "--demo" in args:
        assert work.name == "demo", "a demo's files are in <--work-dir>/demo"
        work = work.parent
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run(["bash", str(REPO_ROOT / "T2T_ViT_eval.sh"), "--work-dir", str(work), *args],
                          env=env, capture_output=True, text=True, timeout=1200)


def mtimes(paths):
    return {path: path.stat().st_mtime_ns for path in paths}


def pytorch_logits(checkpoint, bins_dir, names):
    """PyTorch's logits for the bins; uint8 bins (the job's default) are normalised here as timm does."""
    model = create_model_with(checkpoint)
    if (bins_dir / f"{names[0]}.bin").stat().st_size == 224 * 224 * 3:
        pixels = torch.from_numpy(np.concatenate([read_bin(bins_dir / f"{name}.bin", (1, 224, 224, 3), "uint8")
                                                  for name in names]))
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        images = (pixels.permute(0, 3, 1, 2).float().div(255) - mean) / std
    else:
        images = torch.from_numpy(np.concatenate([read_bin(bins_dir / f"{name}.bin", (1, 3, 224, 224))
                                                  for name in names]))
    with torch.no_grad():
        return model(images).numpy()


def create_model_with(checkpoint):
    from t2t_vit.model.network import create_model

    model = create_model("einsum", MODEL)
    load_checkpoint(model, checkpoint)
    return model


def result_logits(result_dir, names):
    return np.stack([np.fromfile(result_dir / f"{name}_0.bin", dtype=np.float32) for name in names])


REAL_RUN = ("prep_bins_uint8/manifest.json", "prep_bins_uint8/ILSVRC2012_val_00000001.bin", "label.npy",
            "t2t_vit_14_sum.onnx", "t2t_vit_14_matmul_uint8.onnx", "t2t_vit_14_keep_dtype.cfg",
            "result_t2t_vit_14/bs4/ILSVRC2012_val_00000001_0.bin", "result_t2t_vit_14/bs4.stamp.json",
            "acc_t2t_vit_14_bs4.json", "perf_t2t_vit_14/bs4_summary.json", "eval_summary.json",
            "eval_summary_t2t_vit_14.json", "eval_summary.png")


def real_run_files(work):
    """Every file of a real run's work dir but the demo's folder: path -> (bytes, mtime)."""
    return {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in sorted(work.rglob("*"))
            if path.is_file() and "demo" not in path.relative_to(work).parts}


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """The demo in a work dir that already holds a real run's files (both default to ./work)."""
    base = tmp_path_factory.mktemp("eval") / "work"
    for name in REAL_RUN:
        (base / name).parent.mkdir(parents=True, exist_ok=True)
        (base / name).write_bytes(f"the real run's {name}".encode())
    real = real_run_files(base)
    work = base / "demo"  # the demo's own folder in --work-dir
    result = run_eval(work, *DEMO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert real_run_files(base) == real, "the demo touched a real run's files"
    return work, result


def test_the_demo_never_touches_a_real_run_and_refuses_a_folder_it_did_not_make(demo_run, tmp_path):
    work, result = demo_run
    assert (work / "DEMO.txt").is_file() and (work / "eval_summary.json").is_file()
    assert f"wrote {work / 'eval_summary.json'}" in result.stdout
    (tmp_path / "w" / "demo").mkdir(parents=True)
    (tmp_path / "w" / "demo" / "results.csv").write_text("a user's file\n")
    refused = run_eval(tmp_path / "w" / "demo", *DEMO)
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1
    assert "holds files that the demo did not make (no DEMO.txt)" in refused.stderr
    assert sorted(path.name for path in (tmp_path / "w").rglob("*")) == ["demo", "results.csv"]


def test_tables_json_and_plot(demo_run):
    work, result = demo_run
    out = result.stdout
    assert "| accuracy pass | stands for batch sizes | top-1 (%) | top-5 (%) | images |" in out
    assert "| batch size | images/s | ms per batch | runner |" in out
    assert "CPU accuracy measured once, at batch 4: the CPU logits do not depend on the batch size" in out
    assert "DEMO: random weights and synthetic images, the accuracy means nothing" in out
    summary = json.loads((work / "eval_summary.json").read_text())
    assert [row["batch_size"] for row in summary["rows"]] == [1, 4]
    for row in summary["rows"]:
        assert row["count"] == 5 and row["images_per_s"] > 0 and row["runner"] == RUNNER
        assert row["accuracy_batch_size"] == 4  # one accuracy pass, at the largest batch size
        assert f"| {row['batch_size']} | {row['images_per_s']:.1f} | {row['compute_ms_mean']:.1f} | {RUNNER} | " \
               f"this run |" in out
        assert row["accuracy_reused_from"] is None and row["throughput_reused_from"] is None
    top1, top5 = summary["rows"][0]["top1"], summary["rows"][0]["top5"]
    assert f"| batch 4, {RUNNER} | 1, 4 | {top1:.3f} | {top5:.3f} | 5 | this run |" in out  # one accuracy pass
    assert f"checkpoint {work / f'random_{MODEL}.pth.tar'} (sha256 {summary['checkpoint_sha256']})" in out
    assert summary["checkpoint_sha256"] == Digests()(work / f"random_{MODEL}.pth.tar")
    assert "5 images in 1 batch of 4" not in out and "5 images in 2 batches of 4" in out
    assert "the last batch was padded with 3 copies" in out  # why the pass's images/s differs from the model's
    assert "throughput at batch 1: " in out and "1000*batchsize" not in out  # the job's words, not ais_bench's
    assert "not made yet" not in out and f"accuracy at batch 4 ({RUNNER}): running\n" in out
    assert not any(line.startswith(("INFO ", "WARNING ")) for line in (out + result.stderr).splitlines())
    assert summary["demo"] is True and summary["backend"] == RUNNER
    assert {"cpu", "cores"} <= set(summary["machine"]) and RUNNER in summary["versions"] and summary["date"]
    if installed("matplotlib"):
        assert (work / "eval_summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:  # optional on a host: the tables and the JSON hold the same figures
        assert "no eval_summary.png: matplotlib is not installed here" in out and not (work / "eval_summary.png").exists()
    assert (work / f"{MODEL}_keep_dtype.cfg").read_text().count("\n") == 76  # the NPU's files are made too


def test_one_accuracy_pass_stage_times_and_estimate(demo_run):
    work, result = demo_run
    assert sorted(path.name for path in (work / f"result_{MODEL}").iterdir() if path.is_dir()) == ["bs4"]
    summary = json.loads((work / "eval_summary.json").read_text())
    stages = summary["stage_seconds"]
    assert any(stage.startswith("preprocess") for stage in stages) and f"accuracy at batch 4 ({RUNNER})" in stages
    assert {f"throughput at batch 1 ({RUNNER}, pure inference)", "total"} <= set(stages)
    assert all(seconds >= 0 for seconds in stages.values())
    assert stages["total"] >= stages[f"accuracy at batch 4 ({RUNNER})"]
    assert "| stage | elapsed |" in result.stdout
    assert "estimate: " in result.stdout and "more images to compute (padding copies included) at " in result.stdout
    assert "infer bs4: 100% (5/5 img)" in result.stderr  # a progress line when not on a terminal


def test_results_equal_pytorch(demo_run):
    work, _ = demo_run
    names = np.load(work / "label.npy", allow_pickle=False)["name"].tolist()
    expected = pytorch_logits(work / f"random_{MODEL}.pth.tar", work / BINS, names)
    np.testing.assert_allclose(result_logits(work / f"result_{MODEL}" / "bs4", names), expected, rtol=0, atol=1e-4)


def test_rerun_reuses_what_is_done(demo_run):
    work, _ = demo_run
    kept = [work / f"{MODEL}_sum.onnx", work / f"{MODEL}_matmul_uint8.onnx", work / f"result_{MODEL}" / "bs4_summary.json",
            work / f"perf_{MODEL}" / "bs1_summary.json", work / BINS / "demo_0000.bin"]
    before = mtimes(kept)
    result = run_eval(work, *DEMO)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "reusing" in result.stdout and "estimate:" not in result.stdout
    assert mtimes(kept) == before


def test_accuracy_all_agrees_with_the_one_pass(demo_run):
    work, _ = demo_run  # the same work dir (a copy would be another data dir): it is left as it was found
    result = run_eval(work, *DEMO, "--accuracy-all")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "reusing " + str(work / f"result_{MODEL}" / "bs4") in result.stdout  # the bs4 pass was already there
    rows = json.loads((work / "eval_summary.json").read_text())["rows"]
    assert [row["accuracy_batch_size"] for row in rows] == [1, 4]
    assert rows[0]["top1"] == rows[1]["top1"] and rows[0]["top5"] == rows[1]["top5"]
    names = np.load(work / "label.npy", allow_pickle=False)["name"].tolist()
    # Same logits at every batch size (1e-5: OpenVINO compiles each micro-batch shape on its own).
    np.testing.assert_allclose(result_logits(work / f"result_{MODEL}" / "bs1", names),
                               result_logits(work / f"result_{MODEL}" / "bs4", names), rtol=0, atol=1e-5)
    result = run_eval(work, *DEMO)
    assert result.returncode == 0 and "estimate:" not in result.stdout  # back to one pass: all reused
    rows = json.loads((work / "eval_summary.json").read_text())["rows"]
    assert [row["accuracy_batch_size"] for row in rows] == [4, 4]


@pytest.mark.slow  # three and two main-job runs
def test_a_swapped_checkpoint_a_corrupt_one_and_a_changed_data_dir(demo_run, tmp_path):
    source, _ = demo_run
    work = tmp_path / "work"
    shutil.copytree(source, work, symlinks=True)
    checkpoint, data = work / f"random_{MODEL}.pth.tar", work / "val"
    common = ("--pth-path", str(checkpoint), "--data-dir", str(data), "--batch-sizes", "1 4", "--loop", "1")
    # Another checkpoint under the same name, with an older time (as cp -p or tar x leave it).
    old_time = checkpoint.stat().st_mtime - 86400
    make_checkpoint(checkpoint, seed=1, model=MODEL)
    os.utime(checkpoint, (old_time, old_time))
    result = run_eval(work, *common, "--threads", "1", "--workers", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("it was made from another checkpoint") == 2
    assert "running again: made with another model file" in result.stdout
    names = np.load(work / "label.npy", allow_pickle=False)["name"].tolist()
    expected = pytorch_logits(checkpoint, work / BINS, names)
    np.testing.assert_allclose(result_logits(work / f"result_{MODEL}" / "bs4", names), expected, rtol=0, atol=1e-4)
    perf = json.loads((work / f"perf_{MODEL}" / "bs1_summary.json").read_text())
    assert perf["cpu_runner"]["threads"] == 1  # --threads reached it
    # A corrupt checkpoint: refused before anything is done, changing nothing; the summary there is the last run's,
    # and it names that run's checkpoint by its SHA-256, which is not this file's.
    checkpoint.write_bytes(checkpoint.read_bytes()[:100_000])
    before = {path: path.stat().st_mtime_ns for path in work.rglob("*") if path != checkpoint}
    result = run_eval(work, *common)
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and not result.stdout
    assert "truncated or corrupt" in result.stderr and "weights_only" not in result.stderr
    assert {path: path.stat().st_mtime_ns for path in work.rglob("*") if path != checkpoint} == before
    assert json.loads((work / "eval_summary.json").read_text())["checkpoint_sha256"] != Digests()(checkpoint)
    # A changed data dir: its bins and every pass over them are made again.
    make_checkpoint(checkpoint, seed=1, model=MODEL)
    other = tmp_path / "other"
    make_images(other, 3, seed=7)
    result = run_eval(work, "--pth-path", str(checkpoint), "--data-dir", str(other), "--batch-sizes", "1 4",
                      "--loop", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"removing the bins in {work / BINS}: they were made from {data.resolve()}" in result.stdout
    assert "set of bins, labels or data source" in result.stdout  # with the model file, if the export was redone
    assert len(list((work / BINS).glob("*.bin"))) == 3
    summary = json.loads((work / "eval_summary.json").read_text())
    assert [row["count"] for row in summary["rows"]] == [3, 3] and summary["data_dir"] == str(other)


@pytest.mark.slow  # three and two main-job runs
def test_skip_bad_is_passed_through(tmp_path):
    data = tmp_path / "val"
    make_images(data, 2)
    (data / "n01440764" / "broken.JPEG").write_bytes(b"not a jpeg")
    checkpoint = make_checkpoint(tmp_path / "ck.pth.tar", model=MODEL)
    args = ("--pth-path", str(checkpoint), "--data-dir", str(data), "--batch-sizes", "2", "--loop", "1")
    result = run_eval(tmp_path / "work", *args)
    assert result.returncode == 1 and "--skip-bad" in result.stderr
    assert not (tmp_path / "work" / f"{MODEL}_sum.onnx").exists()  # it stopped at the failed stage
    result = run_eval(tmp_path / "work", *args, "--skip-bad")
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((tmp_path / "work" / "eval_summary.json").read_text())["rows"][0]["count"] == 2


@pytest.mark.parametrize("script", ["T2T_ViT_eval.sh", "T2T_ViT_atc.sh"])
def test_help_is_the_usage_only(script):
    result = subprocess.run(["bash", str(REPO_ROOT / script), "--help"], capture_output=True, text=True,
                            env={**os.environ, "PYTHON": sys.executable})
    assert result.returncode == 0 and script in result.stdout
    assert "set -euo" not in result.stdout and "pipefail" not in result.stdout


def test_bad_arguments(tmp_path):
    result = run_eval(tmp_path / "w" / "demo", "--batch-sizes", "1 x", "--demo")
    assert result.returncode == 2 and "batch size 'x'" in result.stderr
    result = run_eval(tmp_path / "w", "--pth-path", str(tmp_path / "none.pth"), "--data-dir", str(tmp_path))
    assert result.returncode == 1 and "does not exist" in result.stderr
    result = run_eval(tmp_path / "w" / "demo", "--demo", "--pth-path", "x.pth")
    assert result.returncode == 2 and "--demo makes its own checkpoint" in result.stderr
    result = run_eval(tmp_path / "w" / "demo", "--demo", "--batch-sizes", "1 4", "--accuracy-batch", "8")
    assert result.returncode == 2 and "--accuracy-batch 8 is not one of" in result.stderr


def _om_with_record(folder, onnx_sha, keep_sha, om_bytes=b"om", input_dtype="uint8"):
    om = folder / "T2T_ViT_bs4.om"
    om.write_bytes(om_bytes)
    record = {"onnx_sha256": onnx_sha, "keep_dtype_sha256": keep_sha, "om_sha256": Digests()(om), "batch_size": 4}
    if input_dtype is not None:  # records from before --aipp have no input_dtype: float32
        record["input_dtype"] = input_dtype
    (folder / "T2T_ViT_bs4.om.json").write_text(json.dumps(record))
    return om


@pytest.mark.parametrize("case", ["matching", "no_record", "other_onnx", "om_replaced", "no_om", "float_om",
                                  "aipp_om_for_float_bins", "old_record_for_float_bins"])
def test_an_om_runs_only_when_built_from_this_runs_export(tmp_path, case):
    digest = Digests()
    om_dtype = {"float_om": "float32", "old_record_for_float_bins": None}.get(case, "uint8")
    bins_dtype = "float32" if case in ("aipp_om_for_float_bins", "old_record_for_float_bins") else "uint8"
    if case != "no_om":
        om = _om_with_record(tmp_path, "a" * 64, "b" * 64, input_dtype=om_dtype)
    if case == "no_record":
        (tmp_path / "T2T_ViT_bs4.om.json").unlink()
    if case == "om_replaced":
        om.write_bytes(b"another om")
    onnx_sha = "c" * 64 if case == "other_onnx" else "a" * 64
    if case in ("matching", "old_record_for_float_bins"):
        assert om_for_batch(tmp_path, 4, onnx_sha, "b" * 64, digest, bins_dtype) == om
    elif case == "no_om":
        assert om_for_batch(tmp_path, 4, onnx_sha, "b" * 64, digest, bins_dtype) is None
    else:
        pattern = {"no_record": "has no build record", "other_onnx": "built from another ONNX",
                   "om_replaced": "is not the file T2T_ViT_atc.sh built",
                   "float_om": r"takes float32 input \(built without --aipp\), this run's bins are uint8.*--aipp \(",
                   "aipp_om_for_float_bins": r"takes uint8 input \(built with --aipp\), this run's bins are float32"}[case]
        with pytest.raises(JobError, match=pattern):
            om_for_batch(tmp_path, 4, onnx_sha, "b" * 64, digest, bins_dtype)


@pytest.mark.needs("matplotlib")
def test_the_plot_starts_images_per_s_at_zero():
    from t2t_vit.job.report import figure_of

    rows = [{"batch_size": size, "images_per_s": speed, "top1": 80.0, "top5": 95.0, "count": 10,
             "accuracy_batch_size": 64, "runner": "openvino"} for size, speed in ((1, 13.1), (8, 13.4), (64, 13.2))]
    figure = figure_of(rows, "t")
    assert figure.axes[0].get_ylim()[0] == 0 and figure.axes[0].get_ylim()[1] >= 13.4


@pytest.mark.needs("matplotlib")
def test_the_accuracy_panel_shows_each_pass_once_and_labels_even_zero_bars():
    """One CPU pass stands for every batch size: one pair of bars, not six; a 0 % bar still says what it is."""
    from t2t_vit.job.report import figure_of

    rows = [{"batch_size": size, "images_per_s": 5.0, "top1": 0.0, "top5": 0.0, "count": 16,
             "accuracy_batch_size": 64, "runner": "openvino"} for size in (1, 4, 64)]
    rows[1].update(runner="ais_bench", accuracy_batch_size=4, top1=50.0, top5=75.0)  # an .om: its own pass
    accuracy = figure_of(rows, "t").axes[1]
    labels = sorted(text.get_text() for text in accuracy.texts)
    assert labels == ["top-1\n0.0 %", "top-1\n50.0 %", "top-5\n0.0 %", "top-5\n75.0 %"]
    assert [tick.get_text() for tick in accuracy.get_xticklabels()] == ["batch 64\n(for 1, 64)", "batch 4\n(for 4)"]
    assert accuracy.get_title() == "accuracy (16 images)"


def test_on_the_ascend_host_each_om_runs_through_ais_bench(demo_run, tmp_path):
    source, _ = demo_run
    work = tmp_path / "work" / "demo"
    shutil.copytree(source, work, symlinks=True)  # another data dir path: the bins are made again (5 images)
    package = tmp_path / "site" / "ais_bench"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text(AIS_BENCH)
    digest = Digests()
    om_dir = work / f"om_{MODEL}"  # a variant's own (T2T-ViT-14's is om/)
    om_dir.mkdir()
    om = om_dir / "T2T_ViT_bs4.om"
    om.write_bytes(b"an offline model")
    (om_dir / "T2T_ViT_bs4.om.json").write_text(json.dumps({
        "onnx_sha256": digest(work / f"{MODEL}_sum.onnx"), "keep_dtype_sha256": digest(work / f"{MODEL}_keep_dtype.cfg"),
        "om_sha256": digest(om), "input_dtype": "uint8"}))
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(tmp_path / "site"),
           "AIS_BENCH_LOG": str(tmp_path / "ais_bench.log")}
    result = subprocess.run(["bash", str(REPO_ROOT / "T2T_ViT_eval.sh"), "--work-dir", str(work.parent), *DEMO], env=env,
                            capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    first, revised = [line for line in result.stdout.splitlines() if "estimate: " in line]
    assert first.startswith("estimate: 13 more images to compute") and "images/s ais_bench (its whole first" in first
    assert "the CPU's rate is measured when it runs" in first  # bs1 has no .om: its CPU pass is still to come
    assert revised.startswith("revised estimate: 8 more images") and "images/s fp32" in revised
    calls = [json.loads(line) for line in (tmp_path / "ais_bench.log").read_text().splitlines()]
    assert calls == [
        ["--model", str(om), "--input", str(work / BINS), "--output", str(work / f"result_{MODEL}"), "--output_dirname",
         "bs4", "--outfmt", "BIN", "--batchsize", "4", "--loop", "1", "--warmup_count", "1"],
        ["--model", str(om), "--output", str(work / f"perf_{MODEL}"), "--output_dirname", "bs4", "--outfmt", "BIN",
         "--batchsize", "4", "--loop", "1", "--warmup_count", "1"]]
    rows = {row["batch_size"]: row for row in json.loads((work / "eval_summary.json").read_text())["rows"]}
    assert rows[4]["runner"] == "ais_bench" and rows[4]["accuracy_batch_size"] == 4 and rows[4]["images_per_s"] == 800
    assert rows[1]["runner"] == RUNNER and rows[1]["accuracy_batch_size"] == 1  # the CPU pass, for bs1 only
    scored, _ = evaluate(work / f"result_{MODEL}" / "bs4", work / "label.npy")  # the stand-in's logits: the input's bytes
    assert (rows[4]["top1"], rows[4]["top5"], rows[4]["count"]) == (scored["top1"], scored["top5"], 5)


def test_emulate_npu_adds_the_fp16_pass_and_its_comparison(demo_run):
    work, _ = demo_run
    result = run_eval(work, *DEMO, "--emulate-npu")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| NPU fp16 emulated on the CPU | top-1 (%) |" in result.stdout
    npu = json.loads((work / "eval_summary.json").read_text())["npu_emulation"]
    assert npu["batch_size"] == 4 and npu["count"] == 5 and npu["nonfinite"] == 0
    assert npu["keep_dtype_nodes"] == 76 and "nan_origin_nothing_kept" in npu  # demo weights: maybe no NaN at all
    assert "with nothing kept (ATC without --keep_dtype), on the first 2 images: " in result.stdout
    assert f"{MODEL}_keep_dtype.cfg keeps 76 nodes in fp32. With nothing kept (on the first 2 images): " in result.stdout
    assert read_metadata(work / f"{MODEL}_sum_uint8.onnx")["input_dtype"] == "uint8"  # it reads the uint8 bins
    assert 0 < npu["max_abs_diff"] < 0.05 and npu["top1_flips"] == 0  # it rounds, and stays close
    names = np.load(work / "label.npy", allow_pickle=False)["name"].tolist()
    logits = result_logits(work / f"result_{MODEL}" / "npu_fp16_bs4", names)
    np.testing.assert_array_equal(logits, logits.astype(np.float16).astype(np.float32))  # fp16 values
    again = run_eval(work, *DEMO, "--emulate-npu")
    assert again.returncode == 0 and "estimate:" not in again.stdout  # the emulation pass is reused too


def test_float32_bins_give_the_uint8_runs_results(demo_run, tmp_path):
    source, _ = demo_run
    work = tmp_path / "work"
    checkpoint, data = source / f"random_{MODEL}.pth.tar", source / "val"
    result = run_eval(work, "--pth-path", str(checkpoint), "--data-dir", str(data), "--batch-sizes", "4", "--loop",
                      "1", "--dtype", "float32")
    assert result.returncode == 0, result.stderr[-3000:]
    bins = sorted((work / "prep_bins").glob("*.bin"))
    assert len(bins) == 5 and all(path.stat().st_size == 602_112 for path in bins)
    assert all(path.stat().st_size == 150_528 for path in (source / BINS).glob("*.bin"))
    assert not (work / BINS).exists() and (work / f"{MODEL}_matmul.onnx").is_file()
    summary = json.loads((work / "eval_summary.json").read_text())
    assert summary["bins_dtype"] == "float32" and summary["cpu_onnx"].endswith(f"{MODEL}_matmul.onnx")
    names = np.load(work / "label.npy", allow_pickle=False)["name"].tolist()
    np.testing.assert_allclose(result_logits(work / f"result_{MODEL}" / "bs4", names),
                               result_logits(source / f"result_{MODEL}" / "bs4", names), rtol=0, atol=1e-5)


def test_variants_share_a_work_dir_and_the_family_table_holds_them(demo_run, tmp_path):
    """A second variant's run replaces nothing of the first's, and the family table (printed, family_summary.json
    and .png) holds both, on the same images. (Going back to a variant reusing all of it: tests/test_family.py,
    slow tier, on published variants.)"""
    source, _ = demo_run
    work = tmp_path / "work" / "demo"
    shutil.copytree(source, work, symlinks=True)
    first = {path: path.stat().st_mtime_ns for path in work.rglob("*") if path.is_file() and MODEL in str(
        path.relative_to(work)) and "eval_summary" not in path.name}
    other = run_eval(work, *DEMO[:-1], "t2t_vit_t_test")
    assert other.returncode == 0, other.stdout[-3000:] + other.stderr[-3000:]
    assert {path: path.stat().st_mtime_ns for path in first} == first and "running again" not in other.stdout
    assert "== the family measured in " in other.stdout and "| t2t_vit_t_test (T2T-ViT_t-test) |" in other.stdout
    family = json.loads((work / "family_summary.json").read_text())
    rows = {row["variant"]: row for row in family["rows"]}
    assert set(rows) == {MODEL, "t2t_vit_t_test"} and len(family["groups"]) == 1  # the same 5 images
    summary = json.loads((work / "eval_summary.json").read_text())  # the run just made
    assert summary["model"]["model"] == "t2t_vit_t_test" and rows["t2t_vit_t_test"]["top1"] == summary["rows"][0]["top1"]
    assert rows["t2t_vit_t_test"]["images_per_s"] == {"1": summary["rows"][0]["images_per_s"],
                                                      "4": summary["rows"][1]["images_per_s"]}
    kept = json.loads((work / f"eval_summary_{MODEL}.json").read_text())  # the first variant's, as it was
    assert rows[MODEL]["top1"] == kept["rows"][0]["top1"] and rows[MODEL]["params_m"] > 0 and rows[MODEL]["images"] == 5
    if installed("matplotlib"):
        assert (work / "family_summary.png").read_bytes()[:4] == b"\x89PNG"
