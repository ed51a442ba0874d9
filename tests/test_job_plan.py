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
    for folder in ("result", "perf"):
        (tmp_path / folder).mkdir()
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
    assert plan.images_to_infer == 5 + 4 + 16 + 32
    assert plan.headline() == "57 images to infer: 1 accuracy pass(es) of 5 images, 3 throughput run(s)"
    assert plan.describe()[0] == "accuracy at batch 8 on onnxruntime: run (not made yet)"
    assert plan.accuracy[0].stamp == tmp_path / "result" / "bs8.stamp.json"


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
