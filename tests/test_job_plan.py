"""The main job's plan is data: which passes a run makes or reuses, decided and printed without running any."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY
from t2t_vit.data.dataset import write_labels
from t2t_vit.job.plan import plan_passes
from t2t_vit.job.request import JobRequest
from t2t_vit.job.resolve import JobPaths, ResolvedJob
from t2t_vit.job.stamps import Digests, write_stamp
from t2t_vit.model.variants import by_name


def a_job(tmp_path: Path, **asked) -> ResolvedJob:
    request = JobRequest(None, None, tmp_path, [1, 4, 8], loop=3, **asked)
    spec = by_name(TINY)
    paths = JobPaths.of(tmp_path, spec, request.dtype, None)
    paths.bins_dir.mkdir(parents=True, exist_ok=True)
    for folder in (paths.results, paths.perf):
        folder.mkdir()
    for index in range(5):
        (paths.bins_dir / f"img{index}.bin").write_bytes(bytes(8))
    write_labels(paths.labels_path, [f"img{index}" for index in range(5)], range(5))
    for model in (paths.cpu_onnx, paths.sum_onnx, paths.emulation_onnx, paths.keep_dtype_cfg):
        model.write_bytes(model.name.encode())
    return ResolvedJob(request, spec, tmp_path / "ckpt.pth", tmp_path / "val", paths)


def cpu_models(job: ResolvedJob) -> dict[int, tuple[Path, str]]:
    return {batch: (job.paths.cpu_onnx, "onnxruntime") for batch in job.batch_sizes}


def test_a_first_cpu_run_plans_one_accuracy_pass_and_a_throughput_run_per_batch_size(tmp_path):
    job = a_job(tmp_path)
    plan = plan_passes(job, cpu_models(job), Digests(), image_count=5)
    assert [(item.kind, item.batch) for item in plan.accuracy] == [("accuracy", 8)]  # the CPU's logits: once
    assert [(item.kind, item.batch, item.images) for item in plan.throughput] == [
        ("throughput", 1, 4), ("throughput", 4, 16), ("throughput", 8, 32)]  # batch x (loop + one warm-up)
    assert plan.images_to_infer == 8 + 4 + 16 + 32  # 5 images in one batch of 8 cost 8: padding is work too
    assert plan.headline() == ("60 images to compute (3 padding copies among them): 1 accuracy pass of 5 images, "
                               "3 throughput runs")
    assert [plan.accuracy[0].computed_after(done) for done in (0, 1, 5)] == [0, 8, 8]
    assert plan.throughput[1].computed_after(8) == 8  # pure inference has no padding
    assert plan.describe()[0] == "accuracy at batch 8 on onnxruntime: run (not made yet)"
    assert plan.accuracy[0].stamp == tmp_path / f"result_{TINY}" / "bs8.stamp.json"


def test_a_stamped_pass_is_reused_and_a_changed_key_says_why_not(tmp_path):
    job = a_job(tmp_path)
    first = plan_passes(job, cpu_models(job), Digests(), 5)
    write_stamp(first.accuracy[0].stamp, first.accuracy[0].key)
    write_stamp(first.throughput[0].stamp, {**first.throughput[0].key, "loop": 99})
    again = plan_passes(job, cpu_models(job), Digests(), 5)
    assert again.accuracy[0].reuse_reason == "" and again.accuracy[0].stamp_date
    assert again.throughput[0].reuse_reason == "made with another --loop"
    assert again.images_to_infer == 4 + 16 + 32
    with pytest.raises(dataclasses.FrozenInstanceError):  # a step returns new facts, it never edits the plan
        again.accuracy[0].reuse_reason = "changed"


def test_every_batch_size_and_the_emulation_when_asked(tmp_path):
    job = a_job(tmp_path, accuracy_all=True, emulate_npu=True)
    plan = plan_passes(job, cpu_models(job), Digests(), 5)
    assert [(item.kind, item.batch) for item in plan.accuracy] == [
        ("accuracy", 1), ("accuracy", 4), ("accuracy", 8), ("emulation", 1)]
    assert plan.emulation.model == job.paths.emulation_onnx and plan.emulation.keep_dtype == job.paths.keep_dtype_cfg
    assert plan.emulation.dirname == "npu_fp16_bs1"
    assert [item.batch for item in plan.scored] == [1, 4, 8]


def test_the_resolved_job_is_never_changed(tmp_path):
    job = a_job(tmp_path)
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.spec = None
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.request.backend = "openvino"
    assert np.array_equal(job.batch_sizes, [1, 4, 8]) and job.device_list is None


def test_the_estimate_once_the_first_pass_has_run_enough(tmp_path, capsys):
    """16 images at batch 8 in 1 s: 16 images/s; the 3 throughput runs left (batch x (loop + warm-up) = 4 + 16 + 32
    images) take 52 / 16 s."""
    from t2t_vit.job.run import JobState

    job = a_job(tmp_path, accuracy_batch=8)
    plan = plan_passes(job, cpu_models(job), Digests(), image_count=16)
    state = JobState(queue=plan.to_run)
    state.starting(plan.accuracy[0])
    state.on_progress(8, 16, 0.5)  # a first batch, too early (under 10 s, pass not done): nothing yet
    assert capsys.readouterr().out == ""
    state.on_progress(16, 16, 1.0)  # 16 images in 2 batches of 8 = 16 computed in 1 s
    printed = capsys.readouterr().out
    assert printed.startswith("estimate: 52 more images to compute (padding copies included) at 16.0 images/s fp32: "
                              "the rest of the run takes about 3s, "), printed
    state.on_progress(16, 16, 1.0)  # once per rate
    assert capsys.readouterr().out == ""


def test_the_estimate_counts_padding_as_work_at_the_rate_the_model_computes(tmp_path, capsys):
    """5 images at batch 8 are one batch of 8: 8 computed in 0.5 s is 16 images/s (5 / 0.5 s, the old rate, would
    make the rest of the run look 1.6x as long)."""
    from t2t_vit.job.run import JobState

    job = a_job(tmp_path)  # accuracy at batch 8 over 5 images: one batch of 8
    plan = plan_passes(job, cpu_models(job), Digests(), image_count=5)
    state = JobState(queue=plan.to_run)
    state.starting(plan.accuracy[0])
    state.on_progress(5, 5, 0.5)  # 8 computed in 0.5 s: 16 images/s; 52 left take 3.25 s
    assert "at 16.0 images/s fp32: the rest of the run takes about 3s" in capsys.readouterr().out


def test_the_emulation_gets_its_own_rate_and_a_revised_estimate(tmp_path, capsys):
    from t2t_vit.job.run import JobState

    job = a_job(tmp_path, emulate_npu=True)
    plan = plan_passes(job, cpu_models(job), Digests(), image_count=5)
    state = JobState(queue=plan.to_run)
    state.starting(plan.accuracy[0])
    state.on_progress(5, 5, 0.5)
    first = capsys.readouterr().out
    assert "16.0 images/s fp32" in first and "the NPU emulation's rate is measured when it runs" in first
    state.starting(plan.emulation)
    state.on_progress(5, 5, 2.0)  # the emulation: 8 in 2 s, 4 images/s; then 52 fp32 images at 16/s
    revised = capsys.readouterr().out
    assert revised.startswith("revised estimate: 52 more images to compute (padding copies included) at 16.0 "
                              "images/s fp32, 4.0 images/s emulation: the rest of the run takes about 3s"), revised


def test_every_caveat_of_the_figures_is_said(tmp_path):
    """Images --skip-bad left out (named), a check made on a sample (its size), the CPU standing in for the NPU
    that --device asked for, and reused figures: each one sentence in the summary."""
    from t2t_vit.job.report import caveats, left_out

    job = a_job(tmp_path, devices=[0, 1])
    manifest = {"bad": [{"name": "n01440764_broken", "source": "n01440764/broken.JPEG",
                         "reason": "UnidentifiedImageError: cannot identify image file"}], "ignored": ["notes.txt"]}
    rows = [{"accuracy_reused_from": None, "throughput_reused_from": "2026-12-01T10:00:00+00:00"}]
    notes = caveats(job, cpu_models(job), rows, manifest, {"nan_origin_images": 2})
    assert notes[0] == ("1 undecodable image left out of every figure (--skip-bad): n01440764/broken.JPEG "
                        "(UnidentifiedImageError: cannot identify image file)")
    assert "checked on the first 2 images only" in notes[1]
    assert notes[2].startswith("batch 1, 4, 8 ran on the CPU (onnxruntime), not the NPU: no CANN and ais_bench on "
                               "this host; these are CPU figures")
    assert notes[3].startswith("some figures are reused from earlier runs (2026-12-01T10:00:00+00:00)")
    assert left_out(manifest) == {"undecodable": manifest["bad"], "non_image_files": 1, "unlabelled_images": 0}
    assert caveats(a_job(tmp_path / "plain"), cpu_models(job), [{}], {}, None) == []  # a plain run: nothing to say


def test_the_accuracy_table_says_images_were_left_out():
    from t2t_vit.job.report import markdown_tables

    row = {"batch_size": 8, "top1": 50.0, "top5": 75.0, "count": 40, "accuracy_batch_size": 8, "runner": "openvino",
           "images_per_s": 16.0, "compute_ms_mean": 500.0}
    summary = {"rows": [row], "accuracy_note": "", "left_out": {"undecodable": [{"name": "broken"}]}}
    assert "| 50.000 | 75.000 | 40 (1 undecodable left out: caveats) | this run |" in markdown_tables(summary)
    assert "| 40 | this run |" in markdown_tables({**summary, "left_out": {"undecodable": []}})
