"""The plan of a run: every pass it will run or reuse, as data that can be printed and tested without running.

An accuracy pass infers every bin once at one batch size; the NPU emulation is an accuracy pass of the sum
export in fp16 on the CPU; a throughput run is pure inference, ``--loop`` timed batches. Each pass has the
stamp key it is made with and whether an earlier run's stamp already covers it (``reuse_reason`` is '').
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from t2t_vit.job.stamps import STAMP_SUFFIX, Digests, bins_fingerprint, read_stamp, stamp_mismatch


@dataclass(frozen=True)
class Pass:
    """One inference pass to run or reuse: the accuracy over the bins, or pure-inference throughput."""

    kind: str  # "accuracy", "throughput" or "emulation" (an accuracy pass of the NPU's fp16 on the CPU)
    batch: int
    model: Path
    runner: str  # a CPU backend name, or "ais_bench"
    key: dict[str, Any]
    stamp: Path
    images: int  # images it infers when run
    reuse_reason: str = ""  # '' = reusable
    keep_dtype: Path | None = None  # with kind "emulation": the nodes kept in fp32
    stamp_date: str | None = None  # when the stamped run was made (reused figures are marked with it)

    @property
    def dirname(self) -> str:
        return f"npu_fp16_bs{self.batch}" if self.kind == "emulation" else f"bs{self.batch}"

    @property
    def computed(self) -> int:
        """Images the model computes when the pass runs: an accuracy pass's last batch is padded to a whole batch
        (as ais_bench pads), so a batch of 64 over 16 images costs 64."""
        return self.images if self.kind == "throughput" else -(-self.images // self.batch) * self.batch

    def computed_after(self, done: int) -> int:
        """Images computed once ``done`` real images (the runner's count) are done."""
        return done if self.kind == "throughput" else min(self.computed, -(-done // self.batch) * self.batch)

    def describe(self) -> str:
        state = "reuse" if not self.reuse_reason else f"run ({self.reuse_reason})"
        return f"{self.kind} at batch {self.batch} on {self.runner}: {state}"


@dataclass(frozen=True)
class Plan:
    """The accuracy passes (the NPU emulation's last, if any) and the throughput runs, in the order they run."""

    accuracy: tuple[Pass, ...]
    throughput: tuple[Pass, ...]
    image_count: int

    @property
    def scored(self) -> list[Pass]:
        """The fp32 accuracy passes (not the emulation)."""
        return [item for item in self.accuracy if item.kind == "accuracy"]

    @property
    def emulation(self) -> Pass | None:
        return next((item for item in self.accuracy if item.kind == "emulation"), None)

    @property
    def to_run(self) -> list[Pass]:
        """The passes this run computes (not reused), in the order they run."""
        return [item for item in self.accuracy + self.throughput if item.reuse_reason]

    @property
    def images_to_infer(self) -> int:
        """Images the model computes in this run, padding copies included (what its time depends on)."""
        return sum(item.computed for item in self.to_run)

    def headline(self) -> str:
        """What the run has to infer, in one line ('' when everything is reused)."""
        from t2t_vit.progress import plural

        if not self.to_run:
            return ""
        scored = [item for item in self.accuracy if item.reuse_reason]
        runs = [item for item in self.throughput if item.reuse_reason]
        padding = sum(item.computed - item.images for item in scored)
        padded = f" ({plural(padding, 'padding copy', 'padding copies')} among them)" if padding else ""
        passes = plural(len(scored), "accuracy pass", "accuracy passes")
        return (f"{self.images_to_infer} images to compute{padded}: {passes} of {plural(self.image_count, 'image')}, "
                f"{plural(len(runs), 'throughput run')}")

    def describe(self) -> list[str]:
        return [item.describe() for item in self.accuracy + self.throughput]


def plan_passes(job, models: dict[int, tuple[Path, str]], digest: Digests, image_count: int,
                warmup: int = 1) -> Plan:
    """The accuracy passes (plus the NPU emulation with --emulate-npu) and the throughput runs, each with its stamp
    key and whether it can be reused."""
    from t2t_vit.provenance import machine

    request = job.request
    bins = bins_fingerprint(job.paths.bins_dir, job.paths.labels_path, digest)
    machine_id = f"{machine()['cpu']} x{machine()['cores']}"
    accuracy = [_accuracy_pass(job, batch, *models[batch], digest, bins, image_count)
                for batch in accuracy_batches(job, models)]
    if request.emulate_npu:  # once: on the CPU the logits do not depend on the batch size
        batch = fp32_pass(accuracy).batch
        sum_onnx, keep = job.paths.emulation_onnx, job.paths.keep_dtype_cfg
        key = {"kind": "emulation", "variant": job.spec.name, "model_sha256": digest(sum_onnx),
               "keep_dtype_sha256": digest(keep), "runner": "onnxruntime", "batch": batch, "bins": bins}
        accuracy.append(_checked(Pass("emulation", batch, sum_onnx, "onnxruntime", key,
                                      job.paths.results / f"npu_fp16_bs{batch}{STAMP_SUFFIX}", image_count,
                                      keep_dtype=keep)))
    throughput = []
    for batch in job.batch_sizes:
        model, runner = models[batch]
        key = {"kind": "throughput", "variant": job.spec.name, "model_sha256": digest(model), "runner": runner,
               "batch": batch, "loop": request.loop, "threads": request.threads, "machine": machine_id,
               "devices": stamp_devices(job, runner)}
        throughput.append(_checked(Pass("throughput", batch, model, runner, key,
                                        job.paths.perf / f"bs{batch}{STAMP_SUFFIX}", batch * (request.loop + warmup))))
    return Plan(tuple(accuracy), tuple(throughput), image_count)


def accuracy_batches(job, models: dict[int, tuple[Path, str]]) -> list[int]:
    """Every batch size with --accuracy-all; else each batch size of an .om (its own compiled graph) and one CPU
    pass, at --accuracy-batch or the largest CPU batch size (the CPU logits do not depend on the batch size)."""
    request = job.request
    if request.accuracy_all:
        return list(job.batch_sizes)
    on_npu = {batch for batch, (_, runner) in models.items() if runner == "ais_bench"}
    cpu_batches = [batch for batch in job.batch_sizes if batch not in on_npu]
    batches = sorted(on_npu)
    if cpu_batches:
        batches.append(request.accuracy_batch if request.accuracy_batch in cpu_batches else max(cpu_batches))
    return batches


def _accuracy_pass(job, batch: int, model: Path, runner: str, digest: Digests, bins: str, images: int) -> Pass:
    key = {"kind": "accuracy", "variant": job.spec.name, "model_sha256": digest(model), "runner": runner,
           "batch": batch, "bins": bins, "devices": stamp_devices(job, runner)}
    return _checked(Pass("accuracy", batch, model, runner, key, job.paths.results / f"bs{batch}{STAMP_SUFFIX}",
                         images))


def _checked(item: Pass) -> Pass:
    """The pass with what its stamp says: why it cannot be reused ('' when it can), and the stamped run's date."""
    recorded = read_stamp(item.stamp)
    return replace(item, reuse_reason=stamp_mismatch(recorded, item.key), stamp_date=(recorded or {}).get("date"))


def stamp_devices(job, runner: str) -> list[int] | None:
    """The devices a pass's stamp records: None for one device (the CPU, or chip 0 on the NPU), else the list."""
    devices = job.device_list or (job.request.devices if runner == "ais_bench" and job.request.devices != [0]
                                  else None)
    return list(devices) if devices else None


def fp32_pass(accuracy: list[Pass] | tuple[Pass, ...]) -> Pass:
    """The accuracy pass the emulation is compared with: the CPU's fp32 one when there is one."""
    passes = [item for item in accuracy if item.kind == "accuracy"]
    return next((item for item in passes if item.runner != "ais_bench"), passes[0])
