"""The main job's steps: resolve, make the artefacts, choose the runners, plan, run or reuse each pass, summarise.

    run_job(request) = resolve -> [demo data] -> preprocess -> export -> choose_runners -> plan_passes
                       -> score each accuracy pass -> [the NPU emulation] -> measure each throughput -> summary

Re-running reuses what is still valid, decided by content, never by file times (t2t_vit.job.stamps).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from t2t_vit.aisbench import DEVICE_FILE_SUFFIXES, device_folders, is_device_entry
from t2t_vit.files import remove_if_present
from t2t_vit.job.invocation import Invocation
from t2t_vit.job.om import DYNAMIC_OM
from t2t_vit.job.plan import Pass, fp32_pass
from t2t_vit.job.request import DEMO_MARKER, JOB_NAME, CPU_PERFORMER, NPU_PERFORMER, JobError, JobRequest
from t2t_vit.job.stamps import Digests, read_json, running_why, write_stamp

ESTIMATE_AFTER_S = 10.0  # seconds of the first pass before the run's time is estimated
RATE_NAMES = {"ais_bench": "ais_bench (its whole first pass, loading the .om included)"}
PENDING_RATES = {"fp32": "the CPU's rate is measured when it runs",
                 "emulation": "the NPU emulation's rate is measured when it runs",
                 "ais_bench": "ais_bench's rate is measured when its first pass ends (it reports no progress)"}
ORIGIN_IMAGES = 2  # bins the nothing-kept graph is searched on for the NaN's origin (it shows on the first)


@dataclass
class JobState:
    """What the run has measured so far: stage times, the passes it ran, and the rates its estimate uses."""

    stage_seconds: dict[str, float] = field(default_factory=dict)
    ran: set = field(default_factory=set)  # the stamps of the passes this run computed
    started: float = field(default_factory=time.perf_counter)
    queue: list = field(default_factory=list)  # the passes still to run (not reused), the current one first
    rates: dict = field(default_factory=dict)  # images computed per second, by rate class (fp32, emulation)

    def timed(self, stage: str, action: Callable[[], Any]) -> Any:
        print(f"\n== {stage}", flush=True)
        begin = time.perf_counter()
        try:
            return action()
        finally:
            self.stage_seconds[stage] = round(time.perf_counter() - begin, 3)

    def reused_from(self, item: Pass) -> str | None:
        """The date of the earlier run whose figures a pass reuses, or None when this run measured it."""
        return None if item.stamp in self.ran else (item.stamp_date or "an earlier run")

    def starting(self, item: Pass) -> None:
        """``item`` runs now: the passes before it in the queue are done (a reused pass run again is not queued)."""
        while item in self.queue and self.queue[0] != item:
            self.queue.pop(0)

    def on_progress(self, done: int, total: int, seconds: float) -> None:
        """Once the first batches of a pass of a new rate class (fp32; the NPU emulation, slower) have run (10 s,
        or the whole pass if shorter; earlier, streams still filling make the rate look low): print how long the
        rest of the run and the whole of it will take. The rate counts what the model computes, padding copies
        included, and so does the work left, so a batch of 64 over 16 images costs what it costs. ais_bench reports
        no progress: its rate is its whole first pass's, loading the .om included."""
        item = self.queue[0] if self.queue else None
        group = rate_class(item)
        if item is None or group in self.rates or seconds <= 0 or done <= 0 or (
                seconds < ESTIMATE_AFTER_S and done < total):
            return
        computed = item.computed_after(done)
        self.rates[group] = computed / seconds
        left = (item.computed - computed) / self.rates[group] + sum(
            later.computed / self.rates.get(rate_class(later), self.rates[group]) for later in self.queue[1:])
        self.print_estimate(left, sum(later.computed for later in self.queue) - computed)

    def print_estimate(self, left: float, images: int) -> None:
        from tqdm import tqdm

        from t2t_vit.progress import format_seconds

        rates = ", ".join(f"{rate:.1f} images/s {RATE_NAMES.get(name, name)}" for name, rate in self.rates.items())
        revised = "revised " if len(self.rates) > 1 else ""
        pending = "".join(f"; {text}" for group, text in PENDING_RATES.items() if group not in self.rates and any(
            rate_class(later) == group for later in self.queue))
        finish = time.strftime("%H:%M", time.localtime(time.time() + left))
        whole = time.perf_counter() - self.started + left
        tqdm.write(f"{revised}estimate: {images} more images to compute (padding copies included) at {rates}: the "
                   f"rest of the run takes about {format_seconds(left)}, the whole run about {format_seconds(whole)} "
                   f"(done around {finish}){pending}", file=sys.stdout)  # clears a progress bar, then draws it again


def rate_class(item: Pass | None) -> str:
    """Passes that run at one rate: ais_bench's (the NPU), the NPU emulation (fp16 on onnxruntime, slower), and the
    CPU's fp32 passes."""
    if item is not None and item.runner == "ais_bench":
        return "ais_bench"
    return "emulation" if item is not None and item.kind == "emulation" else "fp32"


def run_job(request: JobRequest) -> dict[str, Any]:
    """Run the main job, holding the work dir for the whole run (a second job on it stops at once, changing
    nothing); returns what eval_summary.json holds."""
    from t2t_vit.files import exclusive_lock
    from t2t_vit.job import report
    from t2t_vit.job.artefacts import export_all, prepare_demo, preprocess
    from t2t_vit.job.om import choose_runners
    from t2t_vit.job.resolve import resolve

    job = resolve(request)
    with exclusive_lock(job.work_dir, "--work-dir"):
        if request.demo:
            (job.work_dir / DEMO_MARKER).write_text(
                "Made by T2T_ViT_eval.sh --demo: synthetic images and a randomly initialised checkpoint; every file "
                "in this folder is the demo's (it writes nowhere else), and the accuracy means nothing.\n")
        for stale in (job.work_dir / report.SUMMARY_JSON, job.work_dir / report.SUMMARY_PNG, job.paths.variant_summary):
            remove_if_present(stale)  # a failed run must not leave the last run's tables looking current
        state, digest = JobState(), Digests()
        if request.demo:
            state.timed("demo data (random weights: the accuracy means nothing)", lambda: prepare_demo(job))
        state.timed(f"preprocess {job.data_dir} -> {job.paths.bins_dir}", lambda: preprocess(job))
        forms = (f"{NPU_PERFORMER} form + keep_dtype for the NPU, {CPU_PERFORMER} form with {job.dtype} input for "
                 f"the CPU" if job.spec.performer else f"its one form, softmax, + keep_dtype, {job.dtype} input "
                                                       f"for the CPU")
        state.timed(f"export {job.spec.name} ({forms})", lambda: export_all(job, digest))
        models = choose_runners(job, digest)
        return run_passes(job, models, state, digest)


def run_passes(job, models: dict[int, tuple[Path, str]], state: JobState, digest: Digests) -> dict[str, Any]:
    """Plan the passes, run (or reuse) each, and gather what eval_summary.json holds."""
    from t2t_vit.data.dataset import read_labels
    from t2t_vit.job.plan import plan_passes
    from t2t_vit.job.report import build_summary

    plan = plan_passes(job, models, digest, len(read_labels(job.paths.labels_path)))
    state.queue = plan.to_run
    if plan.headline():
        print(f"\n{plan.headline()}")
    scores = {item.batch: state.timed(f"accuracy at batch {item.batch} ({item.runner})",
                                      lambda item=item: score_pass(item, job, state))
              for item in plan.scored}
    npu = None
    if plan.emulation is not None:
        npu = state.timed(f"NPU fp16 emulation at batch {plan.emulation.batch} (onnxruntime, sum export, "
                          f"keep_dtype.cfg)", lambda: emulate_npu(plan.emulation, job, state, fp32_pass(plan.accuracy)))
    perf = {item.batch: state.timed(f"throughput at batch {item.batch} ({item.runner}, pure inference)",
                                    lambda item=item: measure_throughput(item, job, state))
            for item in plan.throughput}
    state.stage_seconds["total"] = round(time.perf_counter() - state.started, 3)
    return build_summary(job, models, plan, state, scores, perf, npu, digest)


def invocation_of(item: Pass, job) -> Invocation:
    """How ais_bench or the CPU runner runs a pass: an accuracy pass over the bins (one warm-up batch, so the
    estimate is fair), or ``--loop`` timed batches of pure inference."""
    throughput = item.kind == "throughput"
    return Invocation(model=item.model, inputs=None if throughput else job.paths.bins_dir,
                      output=job.paths.folder_of(item.kind), output_dirname=item.dirname, batch=item.batch,
                      loop=job.request.loop if throughput else 1, warmup=1,
                      gear=item.batch if item.model.name == DYNAMIC_OM else None)


def run_pass(item: Pass, job, state: JobState) -> dict[str, Any]:
    """Run one pass, then stamp it; returns its summary JSON. Its stamp and summary are removed first. A CPU
    accuracy pass resumes (the runner keeps what an interrupted run of the same pass wrote whole); any other
    pass starts from an empty folder. With several devices every device writes its own folder in
    ``<folder>/<dirname>/`` (ais_bench's ``device<N>_<i>/``) and the pass's summary gathers theirs."""
    from t2t_vit.job.cpu import run_on_cpu
    from t2t_vit.job.npu import ais_bench_wall_rate, run_ais_bench
    from t2t_vit.provenance import write_json

    state.starting(item)
    invocation = invocation_of(item, job)
    result_dir = invocation.output / item.dirname
    summary_path = invocation.output / f"{item.dirname}_summary.json"
    resume = item.runner != "ais_bench" and item.kind != "throughput"
    devices = job.device_list
    remove_if_present(item.stamp)  # an interrupted redo never leaves a valid-looking stamp
    if not resume:
        shutil.rmtree(result_dir, ignore_errors=True)
    else:
        clear_other_layout(result_dir, devices)
    remove_if_present(summary_path)
    invocation.output.mkdir(parents=True, exist_ok=True)
    wall = None
    if item.runner == "ais_bench":
        begin = time.perf_counter()
        printed = run_ais_bench(invocation, job.request.devices, job.multi_device)
        state.on_progress(item.images, item.images, time.perf_counter() - begin)  # the whole pass: its rate
        if devices and printed:
            pure = item.batch * invocation.loop if invocation.inputs is None else None
            wall = ais_bench_wall_rate(printed, result_dir, devices, pure)
    else:
        wall = run_on_cpu(item, job, invocation, state, resume)
    if devices:
        write_json(summary_path, device_summary(result_dir, devices, wall, item.runner))
    summary = read_json(summary_path)
    if summary is None:
        raise JobError(f"{item.runner} wrote no summary {summary_path}")
    state.ran.add(item.stamp)
    write_stamp(item.stamp, item.key)
    return summary


def clear_other_layout(result_dir: Path, devices: list[int] | None) -> None:
    """Before a resumed pass: remove what a pass of the other layout left (one device's results at the top of
    ``result_dir``, or device folders and files, or another device list's), which would be read with this pass's."""
    if not result_dir.is_dir():
        return
    keep = {name + suffix for name in device_folders(devices or []) for suffix in ("",) + DEVICE_FILE_SUFFIXES}
    for entry in os.scandir(result_dir):
        device_entry = is_device_entry(entry.name)
        if (devices and not device_entry and entry.is_file()) or (device_entry and entry.name not in keep):
            shutil.rmtree(entry.path) if entry.is_dir() else os.unlink(entry.path)


def device_summary(result_dir: Path, devices: list[int], wall: float | None, runner: str) -> dict[str, Any]:
    """The pass's summary from its devices': ``throughput`` the card's figure (the sum of each device's compute
    rate, as ais_bench's ``summary throughput``), ``per_device`` each one's, ``wall_images_per_s`` the
    devices together per wall-clock second where it was measured (the CPU runner, and today's ais_bench from the
    times it prints; None for an older ais_bench run one per chip)."""
    per_device, means = [], []
    for name, device in zip(device_folders(devices), devices):
        path = result_dir / f"{name}_summary.json"
        summary = read_json(path)
        if summary is None or "throughput" not in summary:
            raise JobError(f"{runner} wrote no summary {path} for device {device}")
        per_device.append({"device": device, "images_per_s": float(summary["throughput"])})
        means.append(float(summary["NPU_compute_time"]["mean"]))
    return {"throughput": sum(entry["images_per_s"] for entry in per_device), "per_device": per_device,
            "NPU_compute_time": {"mean": sum(means) / len(means)}, "wall_images_per_s": wall, "devices": devices,
            "note": "throughput: the card's figure, the sum of each device's 1000 x batch / mean compute time (as "
                    "ais_bench's summary throughput); one chip's figure is in per_device"}


def score_pass(item: Pass, job, state: JobState) -> dict[str, Any]:
    """The accuracy of one pass (run or reused) as the postprocess stage computes it, written to acc_<variant>_bs<N>.json."""
    from t2t_vit.data.metrics import ConstantOutputError, ResultError, evaluate
    from t2t_vit.provenance import provenance, write_json

    result_dir, labels_path = job.paths.folder_of(item.kind) / item.dirname, job.paths.labels_path
    allow_constant = job.request.allow_constant
    if item.reuse_reason:
        print(f"{item.kind} at batch {item.batch} ({item.runner}): {running_why(item.reuse_reason)}")
        run_pass(item, job, state)
    else:
        print(f"reusing {result_dir}: same model, runner, batch and bins")
    try:
        results, _ = evaluate(result_dir, labels_path, allow_constant=allow_constant)
    except ConstantOutputError:
        raise
    except ResultError as error:
        if item.reuse_reason:
            raise
        print(f"the reused results are incomplete ({error}): running the pass again")
        run_pass(item, job, state)
        results, _ = evaluate(result_dir, labels_path, allow_constant=allow_constant)
    results["batch_size"] = item.batch
    results["runner"] = item.runner
    write_json(job.paths.accuracy_json(item.kind, item.batch), {**results, **provenance({"job": JOB_NAME})})
    print(f"Top-1 accuracy of the model is: {results['top1']:.3f}%  Top-5: {results['top5']:.3f}%  "
          f"({results['count']} images, batch {item.batch})")
    return results


def emulate_npu(item: Pass, job, state: JobState, fp32: Pass) -> dict[str, Any]:
    """The NPU's fp16 emulated on the CPU (one accuracy pass), and its comparison with the fp32 pass."""
    from t2t_vit.data.metrics import align, compare, match_results

    labels_path = job.paths.labels_path
    results = score_pass(item, job, state)
    names, emulated, reference, _ = align(match_results(job.paths.folder_of(item.kind) / item.dirname, labels_path),
                                          match_results(job.paths.folder_of(fp32.kind) / fp32.dirname, labels_path),
                                          allow_missing=False)
    comparison = compare(names, emulated, reference)
    figures = {"top1": results["top1"], "top5": results["top5"], "count": results["count"],
               "batch_size": item.batch, "nonfinite": comparison["nonfinite"],
               "max_abs_diff": comparison["max_abs_diff"], "top1_agreement": comparison["top1_agreement"],
               "top1_flips": len(comparison["top1_changed"]), "keep_dtype": str(item.keep_dtype),
               "compared_with": f"{fp32.runner} fp32 at batch {fp32.batch}"}
    print(f"NPU fp16 emulation: top-1 {figures['top1']:.3f}%, top-5 {figures['top5']:.3f}%; against fp32: "
          f"{figures['nonfinite']} non-finite, max |diff| {figures['max_abs_diff']:.4g}, "
          f"{figures['top1_flips']} top-1 flips")
    figures.update(why_kept(item, job.paths.bins_dir))
    return figures


def why_kept(item: Pass, bins_dir: Path) -> dict[str, Any]:
    """The keep set's size, and where the emulation with nothing kept (ATC without --keep_dtype) first turns
    non-finite, on the first bins (gen_cfg.py --explain gives the whole per-node report)."""
    from t2t_vit.ascend.fp16_diagnosis import images_for, nan_origin, origin_text
    from t2t_vit.ascend.npu_precision import read_keep_list
    from t2t_vit.model.export import load_onnx
    from t2t_vit.progress import plural

    bins = sorted(bins_dir.glob("*.bin"))[:ORIGIN_IMAGES]
    origin = nan_origin(load_onnx(item.model, "the sum export"), images_for(item.model, bins))
    kept = len(read_keep_list(item.keep_dtype))
    print(f"with nothing kept (ATC without --keep_dtype), on the first {plural(len(bins), 'image')}: "
          f"{origin_text(origin)}; {item.keep_dtype.name} keeps {kept} nodes in fp32")
    return {"keep_dtype_nodes": kept, "nan_origin_images": len(bins), "nan_origin_nothing_kept": origin and {
        key: origin[key] for key in ("node", "op_type", "inputs", "image")}}


def measure_throughput(item: Pass, job, state: JobState) -> dict[str, Any]:
    summary_path = job.paths.perf / f"bs{item.batch}_summary.json"
    if item.reuse_reason:
        print(f"throughput at batch {item.batch} ({item.runner}, {job.request.loop} runs): "
              f"{running_why(item.reuse_reason)}")
        return run_pass(item, job, state)
    summary = read_json(summary_path)
    if summary is None:
        print(f"the reused throughput summary {summary_path} is unreadable: running again")
        return run_pass(item, job, state)
    print(f"reusing {summary_path}: same model, runner, batch and loop: {summary['throughput']:.2f} images/s")
    return summary
