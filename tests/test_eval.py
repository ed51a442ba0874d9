"""T2T_ViT_eval.sh --demo end to end: every stage, the tables, the JSON, the plot, reuse on a re-run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO_ROOT
from t2t_vit.checkpoint import load_checkpoint
from t2t_vit.data import read_bin
from t2t_vit.model import create_model

pytestmark = pytest.mark.slow


def run_eval(work, *args):
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run(["bash", str(REPO_ROOT / "T2T_ViT_eval.sh"), "--work-dir", str(work), *args],
                          env=env, capture_output=True, text=True, timeout=1200)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("eval") / "work"
    result = run_eval(work, "--demo", "--demo-images", "5", "--batch-sizes", "1 4", "--loop", "1")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return work, result


def test_tables_json_and_plot(demo_run):
    work, result = demo_run
    out = result.stdout
    assert "| batch size | top-1 (%) | top-5 (%) | images |" in out
    assert "| batch size | images/s | compute ms / batch | runner |" in out
    assert "DEMO: random weights and synthetic images, the accuracy means nothing" in out
    summary = json.loads((work / "eval_summary.json").read_text())
    assert [row["batch_size"] for row in summary["rows"]] == [1, 4]
    for row in summary["rows"]:
        assert {"batch_size", "top1", "top5", "images_per_s"} <= set(row)
        assert row["count"] == 5 and row["images_per_s"] > 0 and row["runner"] == "openvino"
        assert f"| {row['batch_size']} | {row['top1']:.3f} | {row['top5']:.3f} | 5 |" in out
    assert summary["demo"] is True and summary["backend"] == "openvino"
    assert {"cpu", "cores"} <= set(summary["machine"]) and "openvino" in summary["versions"] and summary["date"]
    assert (work / "eval_summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (work / "keep_dtype.cfg").read_text().count("\n") == 76  # the NPU's files are made too


def test_results_do_not_depend_on_batch_and_equal_pytorch(demo_run):
    # The accuracy is the same at every batch size because the logits are: compare them, and with
    # the checkpoint run in PyTorch on the same bins (random weights make top-1 itself meaningless).
    work, _ = demo_run
    labels = np.load(work / "label.npy", allow_pickle=False)
    model = create_model("einsum")
    load_checkpoint(model, work / "demo" / "random_t2t_vit_14.pth.tar")
    for name in labels["name"].tolist():
        image = torch.from_numpy(read_bin(work / "prep_bins" / f"{name}.bin", (1, 3, 224, 224)))
        with torch.no_grad():
            expected = model(image).numpy()[0]
        for batch_size in (1, 4):
            got = np.fromfile(work / "result" / f"bs{batch_size}" / f"{name}_0.bin", dtype=np.float32)
            np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


def test_rerun_reuses_what_is_done(demo_run):
    work, _ = demo_run
    before = {path: path.stat().st_mtime_ns for path in
              [work / "T2T_ViT_14_sum.onnx", work / "T2T_ViT_14_matmul.onnx", work / "result" / "bs4_summary.json",
               work / "perf" / "bs1_summary.json"]}
    result = run_eval(work, "--demo", "--demo-images", "5", "--batch-sizes", "1 4", "--loop", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "reusing" in result.stdout + result.stderr
    assert {path: path.stat().st_mtime_ns for path in before} == before


def test_bad_arguments(tmp_path):
    result = run_eval(tmp_path / "w", "--batch-sizes", "1 x", "--demo")
    assert result.returncode == 1 and "batch size 'x'" in result.stderr
    result = run_eval(tmp_path / "w", "--pth-path", str(tmp_path / "none.pth"), "--data-dir", str(tmp_path))
    assert result.returncode == 1 and "does not exist" in result.stderr
