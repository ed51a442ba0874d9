"""Long runs that survive: resume after kill -9, one job per folder, a full disk mid-pass."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import REPO_ROOT
from t2t_vit.files import LOCK_NAME, FolderInUseError, exclusive_lock
from t2t_vit.version_bridge import make_onnx_model

INFER = REPO_ROOT / "T2T_ViT_infer.py"
SAMPLE = (2, 16, 16)


def slow_model(path: Path, layers: int = 120, seed: int = 0) -> Path:
    """image (N,2,16,16) -> class (N,512) through ``layers`` 512x512 MatMuls: slow enough to be killed mid-pass."""
    rng = np.random.default_rng(seed)
    weights = [numpy_helper.from_array((rng.standard_normal((512, 512)) / 22.6).astype(np.float32), f"W{i}")
               for i in range(layers)]
    nodes = [helper.make_node("Reshape", ["image", "shape"], ["h"])]
    for index in range(layers):
        nodes.append(helper.make_node("MatMul", [nodes[-1].output[0], f"W{index}"], [f"h{index}"]))
    nodes.append(helper.make_node("Identity", [nodes[-1].output[0]], ["class"]))
    graph = helper.make_graph(nodes, "slow",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", *SAMPLE])],
                              [helper.make_tensor_value_info("class", TensorProto.FLOAT, ["N", 512])],
                              initializer=[*weights, numpy_helper.from_array(np.array([-1, 512], np.int64), "shape")])
    onnx.save(make_onnx_model(graph, 11), str(path))
    return path


def write_bins(folder: Path, count: int, big: tuple[int, ...] = ()) -> Path:
    """``count`` one-sample bins; those in ``big`` are scaled by 1e6 (their TXT outputs are much longer)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for index in range(count):
        data = rng.standard_normal((1, *SAMPLE)).astype("<f4") * (1e6 if index in big else 1)
        data.tofile(folder / f"img_{index:03d}.bin")
    return folder


def infer_command(model, bins, output, dirname, *extra):
    return [sys.executable, str(INFER), "--model", str(model), "--input", str(bins), "--output", str(output),
            "--output_dirname", dirname, "--batchsize", "4", "--backend", "onnxruntime", "--threads", "1",
            "--no-progress", *map(str, extra)]


def run(command, **kwargs):
    return subprocess.run(command, capture_output=True, text=True, timeout=600, **kwargs)


def outputs(folder: Path, suffix: str = "bin") -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.glob(f"*_0.{suffix}"))}


@pytest.fixture
def pass_setup(tmp_path):
    model = slow_model(tmp_path / "slow.onnx")
    bins = write_bins(tmp_path / "bins", 120)
    assert run(infer_command(model, bins, tmp_path / "ref", "r")).returncode == 0  # the uninterrupted pass
    return model, bins, outputs(tmp_path / "ref" / "r")


def test_a_pass_killed_at_a_random_point_resumes_to_the_uninterrupted_results(tmp_path, pass_setup):
    model, bins, reference = pass_setup
    rng = np.random.default_rng(int(time.time()))
    kill_after = int(rng.integers(8, 100))
    result_dir = tmp_path / "out" / "r"
    process = subprocess.Popen(infer_command(model, bins, tmp_path / "out", "r", "--resume"),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while process.poll() is None and not (result_dir.is_dir() and len(list(result_dir.glob("*_0.bin"))) >= kill_after):
        time.sleep(0.005)
    assert process.poll() is None, "the pass ended before it could be killed: make the model slower"
    process.send_signal(signal.SIGKILL)
    process.wait()
    survived = outputs(result_dir)
    assert kill_after <= len(survived) < len(reference), (kill_after, len(survived))
    assert all(reference[name] == data for name, data in survived.items())  # whole, or not there at all
    cut = sorted(survived)[-1]
    (result_dir / cut).write_bytes(survived[cut][:100])  # a file cut short under its final name is not done
    (result_dir / f".{cut}.x1y2.partial").write_bytes(b"half")  # nor is a temporary one

    again = run(infer_command(model, bins, tmp_path / "out", "r", "--resume"))
    assert again.returncode == 0, again.stderr
    assert outputs(result_dir) == reference  # bit for bit
    assert not list(result_dir.glob(".*"))
    summary = json.loads((tmp_path / "out" / "r_summary.json").read_text())
    resumed = summary["cpu_runner"]["resume"]
    kept = len(survived) // 4 * 4 - (4 if len(survived) % 4 == 0 else 0)  # whole groups, less the one cut short
    assert resumed["reused_outputs"] >= kept and resumed["reused_outputs"] + resumed["computed_samples"] == 120
    assert len(summary["filesinfo"]) == 120 and summary["NPU_compute_time"]["count"] == resumed["computed_samples"] // 4


def test_resume_starts_over_for_another_model_and_is_off_without_the_flag(tmp_path, pass_setup):
    model, bins, reference = pass_setup
    assert run(infer_command(model, bins, tmp_path / "out", "r", "--resume")).returncode == 0
    other = slow_model(tmp_path / "other.onnx", seed=7)
    assert run(infer_command(other, bins, tmp_path / "other_ref", "r")).returncode == 0
    result = run(infer_command(other, bins, tmp_path / "out", "r", "--resume"))
    assert result.returncode == 0, result.stderr
    assert outputs(tmp_path / "out" / "r") == outputs(tmp_path / "other_ref" / "r") != reference
    assert json.loads((tmp_path / "out" / "r_summary.json").read_text())["cpu_runner"]["resume"]["reused_outputs"] == 0
    assert not (tmp_path / "ref" / "r_resume.json").exists()  # without --resume: ais_bench's behaviour, no key


def test_resume_needs_a_named_output_folder(tmp_path, pass_setup):
    model, bins, _ = pass_setup
    result = run([sys.executable, str(INFER), "--model", str(model), "--input", str(bins), "--output",
                  str(tmp_path / "out"), "--resume", "--backend", "onnxruntime"])
    assert result.returncode == 1
    assert result.stderr.strip() == ("error: --resume continues the pass in OUTPUT/OUTPUT_DIRNAME: give --input, "
                                     "--output and --output_dirname")


LIMITED = """
import resource, runpy, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit a write fails with EFBIG instead of killing
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1])))
sys.argv = sys.argv[2:]
sys.path.insert(0, sys.argv[0].rsplit("/", 1)[0])  # as `python script.py` puts the script's folder first
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_a_full_disk_mid_pass_is_one_error_and_the_next_run_finishes(tmp_path):
    """RLIMIT_FSIZE stands for the full disk: the TXT output of a large sample (the 41st) outgrows it."""
    model = slow_model(tmp_path / "slow.onnx", layers=4)
    bins = write_bins(tmp_path / "bins", 60, big=(40,))
    txt = ("--outfmt", "TXT")
    assert run(infer_command(model, bins, tmp_path / "ref", "r", *txt)).returncode == 0
    reference = outputs(tmp_path / "ref" / "r", "txt")
    limit = max(len(data) for name, data in reference.items() if name != "img_040_0.txt") + 1024
    assert len(reference["img_040_0.txt"]) > limit
    result = run([sys.executable, "-c", LIMITED, str(limit),
                  *infer_command(model, bins, tmp_path / "out", "r", *txt, "--resume")[1:]])
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot write ") and "img_040_0.txt" in lines[0], lines
    assert "File too large" in lines[0]
    written = outputs(tmp_path / "out" / "r", "txt")
    assert 0 < len(written) < 60 and "img_040_0.txt" not in written
    assert all(reference[name] == data for name, data in written.items())  # nothing half-written counts
    assert not list((tmp_path / "out" / "r").glob(".*")) and not (tmp_path / "out" / "r_summary.json").exists()
    again = run(infer_command(model, bins, tmp_path / "out", "r", *txt, "--resume"))
    assert again.returncode == 0, again.stderr
    assert outputs(tmp_path / "out" / "r", "txt") == reference


# ------------------------------------------------------------------------------------------ one job per folder

HOLDER = """
import sys, time
from t2t_vit.files import exclusive_lock
with exclusive_lock(sys.argv[1], "--work-dir"):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "work")], stdout=subprocess.PIPE,
                              text=True, cwd=REPO_ROOT)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(FolderInUseError, match=rf"--work-dir {tmp_path / 'work'} is in use by another job: PID "
                                               rf"{holder.pid}, started \d{{4}}-\d\d-\d\dT"):
        with exclusive_lock(tmp_path / "work", "--work-dir"):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with exclusive_lock(tmp_path / "work", "--work-dir"):  # the kernel released it
        assert json.loads((tmp_path / "work" / LOCK_NAME).read_text())["pid"] == os.getpid()


@pytest.mark.slow
def test_a_second_main_job_on_a_busy_work_dir_stops_at_once_and_the_first_finishes(tmp_path):
    work = tmp_path / "work"
    env = {**os.environ, "PYTHON": sys.executable}
    demo = ["bash", str(REPO_ROOT / "T2T_ViT_eval.sh"), "--work-dir", str(work), "--demo", "--demo-images", "5",
            "--batch-sizes", "1 4", "--loop", "1", "--no-progress"]
    first = subprocess.Popen(demo, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while first.poll() is None and not (work / "demo").exists():  # it holds the lock before it makes anything
        time.sleep(0.05)
    second = run(demo, env=env)
    assert first.poll() is None  # refused while the first was busy
    assert second.returncode == 1
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: --work-dir {work / 'demo'} is in use by another job: PID "), \
        lines  # the demo's own folder in --work-dir
    assert "T2T_ViT_eval" in lines[0] or "evaljob" in lines[0]
    out, err = first.communicate(timeout=1200)
    assert first.returncode == 0, err[-2000:]
    summary = json.loads((work / "demo" / "eval_summary.json").read_text())
    assert [row["count"] for row in summary["rows"]] == [5, 5]  # finished, on all of its images


def test_a_second_preprocess_on_a_busy_out_dir_changes_nothing(tmp_path, sample_images):
    import T2T_ViT_preprocess
    from conftest import make_val_tree

    make_val_tree(tmp_path / "val", sample_images[:3])
    arguments = ["--data-dir", str(tmp_path / "val"), "--out-dir", str(tmp_path / "bins"), "--gt-path",
                 str(tmp_path / "label.npy"), "--workers", "0", "--no-progress"]
    with exclusive_lock(tmp_path / "bins", "--out-dir"):
        result = run([sys.executable, str(REPO_ROOT / "T2T_ViT_preprocess.py"), *arguments], cwd=tmp_path)
        assert result.returncode == 1
        assert result.stderr.strip().splitlines() == [
            f"error: --out-dir {tmp_path / 'bins'} is in use by another job: PID {os.getpid()}, started "
            + json.loads((tmp_path / "bins" / LOCK_NAME).read_text())["started"] + " ("
            + json.loads((tmp_path / "bins" / LOCK_NAME).read_text())["command"]
            + "); wait for it to finish, or use another --out-dir"]
        assert sorted(path.name for path in (tmp_path / "bins").iterdir()) == [LOCK_NAME]
        assert not (tmp_path / "label.npy").exists()
    assert T2T_ViT_preprocess.main(arguments) == 0  # once free, it runs
    assert len(list((tmp_path / "bins").glob("*.bin"))) == 3


def test_a_main_job_on_a_held_work_dir_changes_nothing(tmp_path, capsys):
    from T2T_ViT_eval import main

    work = tmp_path / "work" / "demo"  # the demo's own work dir
    work.mkdir(parents=True)
    (work / "eval_summary.json").write_text('{"rows": []}\n')  # a free job removes this first
    (work / "DEMO.txt").write_text("an earlier demo\n")
    with exclusive_lock(work, "--work-dir"):
        assert main(["--work-dir", str(work.parent), "--demo"]) == 1
    assert sorted(path.name for path in work.iterdir()) == [LOCK_NAME, "DEMO.txt", "eval_summary.json"]
    assert (work / "eval_summary.json").read_text() == '{"rows": []}\n'
    assert capsys.readouterr().err.startswith(f"error: --work-dir {work} is in use by another job: PID {os.getpid()}")
