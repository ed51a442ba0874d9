"""The main job: every stage for a list of batch sizes, ending with accuracy and images/s tables.

    bash T2T_ViT_eval.sh --pth-path 81.5_T2T_ViT_14.pth.tar --data-dir /data/imagenet/val
    bash T2T_ViT_eval.sh --pth-path 81.5_T2T_ViT_14.pth.tar --data-dir ILSVRC2012_img_val.tar \\
        --devkit ILSVRC2012_devkit_t12.tar.gz      # ImageNet as downloaded, read in place
    bash T2T_ViT_eval.sh --pth-path 82.6_T2T_ViTt_24.pth.tar --data-dir /data/imagenet/val   # any variant
    bash T2T_ViT_eval.sh --demo [--model t2t_vit_7]   # no checkpoint, no dataset: synthetic images, random weights

The variant (T2T-ViT-7 ... 24, 14 at 384, the transformer-token ones) and its input size come from the
checkpoint's shapes (--model NAME confirms it); every file the job writes for a model carries its name
(below for t2t_vit_14; <name> = the variant's).

Stages, in WORK (--work-dir): preprocess once into uint8 bins (WORK/prep_bins_uint8, WORK/label.npy; with
--dtype float32 the ModelZoo's float32 bins, WORK/prep_bins; another input size than 224 adds _<size>, so
WORK/prep_bins_uint8_384: bins depend only on the data config, and variants of one input size share them);
export the sum form and its keep_dtype file for the NPU (WORK/t2t_vit_14_sum.onnx,
WORK/t2t_vit_14_keep_dtype.cfg; ATC puts AIPP in front for uint8 bins) and the matmul form for the CPU
(WORK/t2t_vit_14_matmul_uint8.onnx, which normalises inside, or WORK/t2t_vit_14_matmul.onnx for float32
bins; a transformer-token variant has one form, WORK/t2t_vit_t_14[_uint8].onnx); the accuracy pass (WORK/result/bs<N>,
WORK/acc_bs<N>.json); the throughput per batch size from pure inference (WORK/perf/bs<N>_summary.json). The tables go to stdout,
WORK/eval_summary.json and WORK/eval_summary.png.

With --device 0,1 every pass uses each listed chip (one ais_bench for today's, which splits the bins with
--divide_input; one per chip, each with its share, for older ones), or on the CPU one process per device; results go
to WORK/result/bs<N>/device<N>_<i>/, and throughput is per device and per card (their sum). WORK/om/T2T_ViT_dyn.om
(T2T_ViT_atc.sh --dynamic-batch) serves every batch size with --dymBatch N; a batch size that is not one of its
gears is refused before anything runs. With --om-dir or --device, T2T_ViT_doctor.py's host checks run first.

On the CPU the logits do not depend on the batch size, so accuracy is measured once (at the largest
batch size, or --accuracy-batch N; --accuracy-all runs every batch size). With ais_bench installed and
WORK/om/T2T_ViT_bs<N>.om built by T2T_ViT_atc.sh from WORK's sum export (with --aipp for uint8 bins),
each batch size runs its own .om, and accuracy is measured per batch size (each .om is its own compiled
graph). --emulate-npu adds
one accuracy pass of the NPU's fp16 emulated on the CPU (the sum export, force_fp16 + keep_dtype.cfg)
and its comparison with fp32 (for uint8 bins, on the sum form's uint8 export,
WORK/t2t_vit_14_sum_uint8.onnx, its normalised input rounded to fp16 as AIPP hands it on).

Re-running reuses what is still valid, decided by content, never by file times: bins whose manifest
records this data dir and data config and whose source images are unchanged; an ONNX whose metadata
records this checkpoint's SHA-256 and variant; results and throughput whose stamp records the variant, the
SHA-256 of the model file, the runner, the batch size and the exact bins. Anything else is redone, and the run says why.
A stage that fails stops the job with its error and exit code 1; eval_summary.json is then absent.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from t2t_vit import ToolkitError, cli
from t2t_vit.aisbench import DEVICE_FILE_SUFFIXES, device_folders, is_device_entry
from t2t_vit.files import remove_if_present

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZES = (1, 4, 8, 16, 32, 64)
DEFAULT_LOOP = 6        # timed runs per batch size: a multiple of the runner's default streams (one per core)
DEMO_LOOP = 2
CPU_PERFORMER = "matmul"  # the fastest CPU form (README "CPU speed"); the NPU takes the sum form
NPU_PERFORMER = "sum"
STAMP_SUFFIX = ".stamp.json"
DEMO_NOTE = "DEMO: random weights and synthetic images, the accuracy means nothing"
ESTIMATE_AFTER_S = 10.0  # seconds of the first pass before the run's time is estimated


class JobError(ToolkitError):
    """The main job cannot go on."""


# ------------------------------------------------------------------------------------------ fingerprints

class Digests:
    """SHA-256 of files, computed once per file content within a run (keyed on path, size, mtime, inode)."""

    def __init__(self) -> None:
        self._known: dict[tuple, str] = {}

    def __call__(self, path: str | os.PathLike) -> str:
        from t2t_vit.files import sha256_file

        stat = os.stat(path)
        key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)
        if key not in self._known:
            self._known[key] = sha256_file(path)
        return self._known[key]


def bins_fingerprint(bins_dir: Path, labels_path: Path, digest: Digests) -> str:
    """What identifies the exact inputs of a pass: every bin's name, size and modification time (a rewritten
    bin gets a new one; this is an identity, never an order), the label file's content, and the data source and
    label sources the bins' manifest records (an archive's size and time, the SHA-256 of each label file)."""
    import hashlib

    from t2t_vit.data.bins import read_manifest

    entries = sorted((entry.name, entry.stat().st_size, entry.stat().st_mtime_ns)
                     for entry in os.scandir(bins_dir) if entry.name.endswith(".bin") and entry.is_file())
    manifest = read_manifest(bins_dir) or {}
    text = json.dumps({"bins": entries, "labels": digest(labels_path), "source": manifest.get("source"),
                       "label_sources": manifest.get("label_sources")})
    return hashlib.sha256(text.encode()).hexdigest()


def read_json(path: Path) -> dict[str, Any] | None:
    """A stamp or summary, or None when it is missing or unreadable (the artefact is then redone)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


NOT_MADE = "not made yet"  # no stamp: a first run in this work dir (or one stopped before it stamped)


def running_why(reason: str) -> str:
    """How a pass that runs says why: nothing on a first run, the reason when it runs again."""
    return "running" if reason == NOT_MADE else f"running again: {reason}"


def stamp_mismatch(recorded: dict[str, Any] | None, key: dict[str, Any]) -> str:
    """Why an artefact cannot be reused ('' when it can)."""
    if recorded is None:
        return NOT_MADE
    changed = [_KEY_WORDS.get(name, name) for name in key if recorded.get(name) != key[name]]
    return f"made with another {', '.join(changed)}" if changed else ""


_KEY_WORDS = {"devices": "--device list", "variant": "variant", "model_sha256": "model file (its SHA-256 differs)", "bins": "set of bins, labels or data source",
              "runner": "runner", "batch": "batch size", "loop": "--loop", "threads": "--threads",
              "machine": "machine", "kind": "kind of pass", "keep_dtype_sha256": "keep_dtype.cfg"}


# ---------------------------------------------------------------------------------------------- options

@dataclass
class JobOptions:
    pth_path: Path | None
    data_dir: Path | None  # a folder or a tar archive (t2t_vit.data.sources)
    work_dir: Path
    batch_sizes: list[int]
    label_file: Path | None = None  # the labels of flat images (t2t_vit.data.labels), or
    devkit: Path | None = None  # the ILSVRC2012 devkit
    class_list: Path | None = None
    backend: str | None = None  # None: backends.choose_backend's default
    loop: int = DEFAULT_LOOP
    om_dir: Path | None = None
    demo: bool = False
    demo_images: int = 16
    accuracy_batch: int | None = None
    accuracy_all: bool = False
    skip_bad: bool = False
    workers: int | None = None
    threads: int | None = None
    progress: bool | None = None
    emulate_npu: bool = False
    dtype: str = "uint8"  # of the bins: uint8 (the cropped image, normalised in the model) or float32 (ModelZoo)
    allow_constant: bool = False  # score result sets that are mostly constant or one same vector (t2t_vit.data.metrics)
    model: str | None = None  # --model: the variant the checkpoint must be (the demo's variant)
    spec: Any = None  # the variant (t2t_vit.model.variants.VariantSpec), read from the checkpoint by check_inputs
    devices: list[int] | None = None  # --device: the chips (or, on the CPU, device processes) every pass uses
    multi_device: str | None = None  # how the installed ais_bench runs a device list (t2t_vit.ascend.doctor)

    @property
    def device_list(self) -> list[int] | None:
        """The devices of a multi-device run (two or more), else None."""
        return list(self.devices) if self.devices and len(self.devices) > 1 else None


@dataclass
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
    ran: bool = False  # this run computed it (else its figures are reused from the stamped run)

    @property
    def reused_from(self) -> str | None:
        """The date of the earlier run whose figures this pass reuses, or None when this run measured it."""
        return None if self.ran else (self.stamp_date or "an earlier run")

    @property
    def dirname(self) -> str:
        return f"npu_fp16_bs{self.batch}" if self.kind == "emulation" else f"bs{self.batch}"

    @property
    def folder(self) -> str:
        return "perf" if self.kind == "throughput" else "result"


@dataclass
class JobState:
    """What the run has measured so far: stage times, and the estimate printed after the first batch."""

    stage_seconds: dict[str, float] = field(default_factory=dict)
    images_to_infer: int = 0
    images_inferred: int = 0
    estimate_printed: bool = False
    started: float = field(default_factory=time.perf_counter)

    def timed(self, stage: str, action: Callable[[], Any]) -> Any:
        print(f"\n== {stage}", flush=True)
        begin = time.perf_counter()
        try:
            return action()
        finally:
            self.stage_seconds[stage] = round(time.perf_counter() - begin, 3)

    def on_progress(self, done: int, total: int, seconds: float) -> None:
        """Once the first batches of the first pass have run (10 s, or the whole pass if shorter): print how long
        the rest of the run and the whole of it will take. Earlier, streams still filling make the rate look low."""
        if self.estimate_printed or seconds <= 0 or done <= 0 or (seconds < ESTIMATE_AFTER_S and done < total):
            return
        self.estimate_printed = True
        from t2t_vit.progress import format_seconds

        rate = done / seconds
        left = max(0, self.images_to_infer - self.images_inferred - done)
        whole = time.perf_counter() - self.started + left / rate
        finish = time.strftime("%H:%M", time.localtime(time.time() + left / rate))
        from tqdm import tqdm

        tqdm.write(f"estimate: {left} more images to infer at about {rate:.1f} images/s: the rest of the run takes "
                   f"about {format_seconds(left / rate)}, the whole run about {format_seconds(whole)} (done around "
                   f"{finish})", file=sys.stdout)  # clears a progress bar on the terminal, then draws it again


# ------------------------------------------------------------------------------------------------ stages

DEMO_ROOM = "demo"  # the demo's work dir, inside --work-dir: it never touches a real run's files
DEMO_MARKER = "DEMO.txt"


def check_demo_room(room: Path) -> None:
    """The demo's own work dir (WORK/demo) is refused when it holds files that a demo did not make (no marker)."""
    from t2t_vit.files import LOCK_NAME

    made_by_others = room.is_dir() and any(entry.name != LOCK_NAME for entry in room.iterdir())
    if made_by_others and not (room / DEMO_MARKER).is_file():
        raise JobError(f"{room} holds files that the demo did not make (no {DEMO_MARKER}); the demo writes only there: "
                       f"move them, or give the demo another --work-dir")
    if room.exists() and not room.is_dir():
        raise JobError(f"{room} is a file; the demo needs that path for its folder: give another --work-dir")


def prepare_demo(options: JobOptions) -> None:
    from t2t_vit.job.demo import make_demo

    from t2t_vit.model.variants import DEFAULT

    options.spec = options.spec or DEFAULT
    options.pth_path, options.data_dir = make_demo(options.work_dir, options.demo_images, options.spec.name)
    print(f"demo data: {options.data_dir} ({options.demo_images} synthetic images), checkpoint {options.pth_path} "
          f"({options.spec.name}, random weights: the accuracy means nothing)")


def preprocess(options: JobOptions, bins_dir: Path, labels_path: Path, discovery=None) -> None:
    """Bins for the data dir, reusing only bins made from the same images with the same data config and dtype."""
    from t2t_vit.config import data_config_hash
    from t2t_vit.data.preprocess import run_preprocess
    from t2t_vit.data.bins import MANIFEST_NAME, bins_dtype, read_manifest

    data_config = options.spec.data_config()
    reason = ""
    try:
        manifest = read_manifest(bins_dir)
    except ToolkitError as error:
        manifest, reason = None, f"its manifest is unusable ({error})"
    if manifest is not None:
        if manifest.get("source_root") != str(options.data_dir.resolve()):
            reason = f"they were made from {manifest.get('source_root')}"
        elif manifest.get("data_config_hash") != data_config_hash(data_config):
            reason = f"they were made with another data config ({manifest.get('data_config')})"
        elif bins_dtype(manifest) != options.dtype:
            reason = f"they are {bins_dtype(manifest)} bins, not {options.dtype}"
    if reason:
        print(f"removing the bins in {bins_dir}: {reason}")
        for path in bins_dir.iterdir():
            if path.name == MANIFEST_NAME or path.name.endswith((".bin", ".partial")):
                path.unlink()
    report = run_preprocess(options.data_dir, bins_dir, labels_path, data_config, label_file=options.label_file,
                            class_list=options.class_list, devkit=options.devkit, workers=options.workers,
                            skip_bad=options.skip_bad, progress=options.progress, remove_extra_bins=True,
                            run_args={"job": "T2T_ViT_eval.sh", "data_dir": str(options.data_dir),
                                      "model": options.spec.name},
                            dtype=options.dtype, discovery=discovery)
    print(f"{report.summary()}; {options.dtype} bins")


def export_form(pth_path: Path, checkpoint_sha: str, onnx_path: Path, performer: str,
                input_dtype: str = "float32", spec: Any = None) -> None:
    """Export ``performer`` unless ``onnx_path`` records this checkpoint, variant, form, input dtype and data
    config."""
    from t2t_vit.config import data_config_hash
    from t2t_vit.model.export import DEFAULT_OPSET, export_checkpoint, read_metadata
    from t2t_vit.model.variants import DEFAULT

    spec = spec or DEFAULT
    performer = spec.form(performer)
    expected = {"checkpoint_sha256": checkpoint_sha, "model": spec.name, "performer": performer,
                "opset": str(DEFAULT_OPSET), "data_config_hash": data_config_hash(spec.data_config()),
                "input_dtype": input_dtype}
    if onnx_path.is_file():
        try:
            metadata = read_metadata(onnx_path)
        except ToolkitError as error:
            reason = str(error)
        else:
            metadata.setdefault("input_dtype", "float32")  # exports from before the uint8 input took float32
            metadata.setdefault("model", DEFAULT.name)  # and from before the variants, T2T-ViT-14
            changed = [name for name in expected if metadata.get(name) != expected[name]]
            reason = ("it was made from another checkpoint (or by a version that did not record one)"
                      if "checkpoint_sha256" in changed else f"its {', '.join(changed)} differ" if changed else "")
        if not reason:
            print(f"reusing {onnx_path}: made from this checkpoint (sha256 {checkpoint_sha[:12]}...)")
            return
        print(f"exporting {onnx_path} again: {reason}")
    report, weights_key = export_checkpoint(pth_path, onnx_path, performer, input_dtype=input_dtype,
                                            model_name=spec.name)
    print(f"wrote {onnx_path}: {spec.name}, performer {performer}, input {input_dtype}, weights "
          f"{weights_key or 'bare state dict'}, "
          f"{report.verification}")


def write_keep_dtype_cfg(sum_onnx: Path, cfg_path: Path) -> None:
    """keep_dtype.cfg from the sum export, made anew every run (it takes about a second)."""
    from t2t_vit.ascend.keep_dtype import describe, keep_dtype_nodes, write_keep_dtype

    subgraphs = keep_dtype_nodes(sum_onnx)
    write_keep_dtype(cfg_path, subgraphs)
    print(f"wrote {cfg_path}: {describe(subgraphs)}")


DYNAMIC_OM = "T2T_ViT_dyn.om"  # T2T_ViT_atc.sh --dynamic-batch: one .om for every gear


def dynamic_gears(om_dir: Path) -> list[int] | None:
    """The gears of the dynamic-batch .om in ``om_dir`` (its build record's ``dynamic_batch_sizes``), or None when
    there is none."""
    om = om_dir / DYNAMIC_OM
    if not om.is_file():
        return None
    from t2t_vit.ascend.om_record import read_record

    record = read_record(om)
    gears = record.dynamic_batch_sizes if record is not None else None
    if not gears:
        raise JobError(f"{om} has no build record listing its gears ({DYNAMIC_OM}.json from T2T_ViT_atc.sh "
                       f"--dynamic-batch), so nothing shows which batch sizes it takes; rebuild it, or remove it")
    return [int(gear) for gear in gears]


def check_gears(om_dir: Path, batch_sizes: list[int]) -> list[int] | None:
    """Refuse, before anything runs, batch sizes that the dynamic-batch .om in ``om_dir`` has no gear for."""
    gears = dynamic_gears(om_dir)
    if gears is None:
        return None
    outside = [batch for batch in batch_sizes if batch not in gears]
    if outside:
        inside = [batch for batch in batch_sizes if batch in gears]
        listed = " ".join(map(str, gears))
        raise JobError(f"{om_dir / DYNAMIC_OM} was built for the batch sizes {listed}; batch size "
                       f"{', '.join(map(str, outside))} is not one of its gears: give --batch-sizes "
                       f"'{' '.join(map(str, inside)) or listed}', or rebuild it with T2T_ViT_atc.sh --dynamic-batch "
                       f"--batch-sizes '{' '.join(map(str, sorted(set(gears) | set(outside))))}'")
    return gears


def om_for_batch(om_dir: Path, batch: int, sum_onnx_sha: str, keep_dtype_sha: str, digest: Digests,
                 dtype: str = "float32", sum_onnx: Path | None = None, keep_dtype: Path | None = None,
                 img_size: int = 224) -> Path | None:
    """The .om to run at ``batch`` on the NPU, or None when there is none (the CPU runner is used): the
    dynamic-batch T2T_ViT_dyn.om when it is there (``batch`` must be one of its gears), else T2T_ViT_bs<N>.om.

    An .om is used only when the record T2T_ViT_atc.sh wrote beside it says it was built from this
    sum export and keep_dtype.cfg for bins of ``dtype`` (uint8: with --aipp), and the .om is the file
    that was built then.
    """
    gears = check_gears(om_dir, [batch])
    om = om_dir / (DYNAMIC_OM if gears else f"T2T_ViT_bs{batch}.om")
    if not om.is_file():
        return None
    from t2t_vit.ascend.om_record import read_record

    record = read_record(om)
    sizes = f"--dynamic-batch --batch-sizes '{' '.join(map(str, gears))}'" if gears else f"--batch-sizes {batch}"
    rebuild = (f"rebuild it: bash T2T_ViT_atc.sh --onnx {sum_onnx or '<WORK>/t2t_vit_14_sum.onnx'} --keep-dtype "
               f"{keep_dtype or '<WORK>/t2t_vit_14_keep_dtype.cfg'} "
               f"--out-dir {om_dir} {sizes}{' --aipp' if dtype == 'uint8' else ''} (or remove it to "
               f"run {'these batch sizes' if gears else 'this batch size'} on the CPU)")
    if record is None:
        raise JobError(f"{om} has no build record ({om.name}.json from T2T_ViT_atc.sh), so nothing shows which "
                       f"model it holds; {rebuild}")
    side = record.input_side
    if side and side != img_size:
        raise JobError(f"{om} takes {side}x{side} images, this run's model and bins are {img_size}x{img_size}; "
                       f"{rebuild}")
    if record.onnx_sha256 != sum_onnx_sha or record.keep_dtype_sha256 != keep_dtype_sha:
        raise JobError(f"{om} was built from another ONNX or keep_dtype.cfg than this run's (another checkpoint?); "
                       f"{rebuild}")
    built_for = record.input_dtype
    if built_for != dtype:
        raise JobError(f"{om} takes {built_for} input ({'built with' if built_for == 'uint8' else 'built without'} "
                       f"--aipp), this run's bins are {dtype} (--dtype); {rebuild}")
    if record.om_sha256 != digest(om):
        raise JobError(f"{om} is not the file T2T_ViT_atc.sh built (its SHA-256 differs); {rebuild}")
    return om


def plan_passes(options: JobOptions, models: dict[int, tuple[Path, str]], bins_dir: Path, labels_path: Path,
                digest: Digests, image_count: int, emulate: tuple[Path, Path] | None = None,
                warmup: int = 1) -> tuple[list[Pass], list[Pass]]:
    """The accuracy passes (the NPU emulation's last, when ``emulate`` gives the sum export and keep list) and
    the throughput runs, each with its stamp key and whether it can be reused."""
    from t2t_vit.provenance import machine

    work = options.work_dir
    bins = bins_fingerprint(bins_dir, labels_path, digest)
    machine_id = f"{machine()['cpu']} x{machine()['cores']}"
    on_npu = {batch for batch, (_, runner) in models.items() if runner == "ais_bench"}
    cpu_batches = [batch for batch in options.batch_sizes if batch not in on_npu]
    if options.accuracy_all:
        accuracy_batches = list(options.batch_sizes)
    else:
        accuracy_batches = sorted(on_npu)
        if cpu_batches:
            accuracy_batches.append(options.accuracy_batch if options.accuracy_batch in cpu_batches
                                    else max(cpu_batches))
    accuracy, throughput = [], []
    for batch in accuracy_batches:
        model, runner = models[batch]
        key = {"kind": "accuracy", "variant": options.spec.name, "model_sha256": digest(model), "runner": runner,
               "batch": batch, "bins": bins, "devices": stamp_devices(options, runner)}
        accuracy.append(Pass("accuracy", batch, model, runner, key, work / "result" / f"bs{batch}{STAMP_SUFFIX}",
                             image_count))
    if emulate is not None:  # once: on the CPU the logits do not depend on the batch size
        batch = fp32_pass(accuracy).batch
        sum_onnx, keep = emulate
        key = {"kind": "emulation", "variant": options.spec.name, "model_sha256": digest(sum_onnx),
               "keep_dtype_sha256": digest(keep),
               "runner": "onnxruntime", "batch": batch, "bins": bins}
        accuracy.append(Pass("emulation", batch, sum_onnx, "onnxruntime", key,
                             work / "result" / f"npu_fp16_bs{batch}{STAMP_SUFFIX}", image_count, keep_dtype=keep))
    for batch in options.batch_sizes:
        model, runner = models[batch]
        key = {"kind": "throughput", "variant": options.spec.name, "model_sha256": digest(model), "runner": runner,
               "batch": batch,
               "loop": options.loop, "threads": options.threads, "machine": machine_id,
               "devices": stamp_devices(options, runner)}
        throughput.append(Pass("throughput", batch, model, runner, key, work / "perf" / f"bs{batch}{STAMP_SUFFIX}",
                               batch * (options.loop + warmup)))
    for item in accuracy + throughput:
        recorded = read_json(item.stamp)
        item.reuse_reason = stamp_mismatch(recorded, item.key)
        item.stamp_date = (recorded or {}).get("date")
    return accuracy, throughput


def stamp_devices(options: JobOptions, runner: str) -> list[int] | None:
    """The devices a pass's stamp records: None for one device (the CPU, or chip 0 on the NPU), else the list."""
    devices = options.device_list or (options.devices if runner == "ais_bench" and options.devices != [0] else None)
    return list(devices) if devices else None


def run_pass(item: Pass, options: JobOptions, bins_dir: Path, state: JobState) -> dict[str, Any]:
    """Run one pass, then stamp it; returns its summary JSON. Its stamp and summary are removed first. A CPU
    accuracy pass resumes (the runner keeps what an interrupted run of the same pass wrote whole); any other
    pass starts from an empty folder. With several devices every device writes its own folder in
    ``<folder>/<dirname>/`` (ais_bench's ``device<N>_<i>/``) and the pass's summary gathers theirs."""
    folder = options.work_dir / item.folder
    result_dir, summary_path = folder / item.dirname, folder / f"{item.dirname}_summary.json"
    resume = item.runner != "ais_bench" and item.kind != "throughput"
    devices = options.device_list
    remove_if_present(item.stamp)  # an interrupted redo never leaves a valid-looking stamp
    if not resume:
        shutil.rmtree(result_dir, ignore_errors=True)
    else:
        clear_other_layout(result_dir, devices)
    remove_if_present(summary_path)
    folder.mkdir(parents=True, exist_ok=True)
    loop, warmup = (options.loop, 1) if item.kind == "throughput" else (1, 1)  # warm, so the estimate is fair
    inputs = None if item.kind == "throughput" else [str(bins_dir)]
    arguments = ["--model", str(item.model), *(["--input", inputs[0]] if inputs else []),
                 "--output", str(folder), "--output_dirname", item.dirname, "--outfmt", "BIN", "--batchsize",
                 str(item.batch), "--loop", str(loop), "--warmup_count", str(warmup)]
    wall = None
    if item.runner == "ais_bench":
        printed = run_ais_bench(item, options, arguments, bins_dir if inputs else None, folder)
        if devices and printed:
            wall = ais_bench_wall_rate(printed, result_dir, devices, item.batch * loop if inputs is None else None)
    else:
        wall = run_on_cpu(item, options, arguments, state, resume)
    state.images_inferred += item.images
    from t2t_vit.provenance import now, write_json

    if devices:
        write_json(summary_path, device_summary(result_dir, devices, wall, item.runner))
    summary = read_json(summary_path)
    if summary is None:
        raise JobError(f"{item.runner} wrote no summary {summary_path}")
    item.ran = True
    write_json(item.stamp, {**item.key, "date": now()})  # the date is not part of the key: it marks reused figures
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


def run_ais_bench(item: Pass, options: JobOptions, arguments: list[str], bins_dir: Path | None,
                  folder: Path) -> str | None:
    """Run a pass through ais_bench: one process for one device or for an ais_bench that splits a device list
    itself (--divide_input); else one ais_bench per chip, each with its share of the bins and its own folder.
    Returns what a single ais_bench printed (passed through as it came), None for one per chip."""
    processes: list[subprocess.Popen] = []
    failed, printed = [], None
    try:
        commands = ais_bench_commands(item, options, arguments, bins_dir, folder)
        capture = len(commands) == 1
        for command in commands:
            print(" ".join(command), flush=True)
            pipes = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE) if capture else {}
            processes.append(subprocess.Popen(command, **pipes))
        if capture:
            printed = pass_through(processes[0])
        for command, process in zip(commands, processes):
            if process.wait() != 0:
                failed.append(command[command.index("--device") + 1] if "--device" in command else "0")
    finally:
        for process in processes:  # interrupted, or a command that would not start: no chip is left running
            if process.poll() is None:
                process.terminate()
                process.wait()
        shutil.rmtree(folder / f".{item.dirname}_inputs", ignore_errors=True)
    if failed:
        where = f" (device {', '.join(failed)})" if len(commands) > 1 else ""
        raise JobError(f"ais_bench failed on {item.model} at batch {item.batch}{where} (its messages are above)")
    return printed


def pass_through(process: subprocess.Popen) -> str:
    """Copy a process's stdout and stderr to ours as they come (progress bars included), and return both."""
    import threading

    captured: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}

    def copy(name: str) -> None:
        source = getattr(process, name)
        sink = getattr(sys, name)
        while True:
            chunk = os.read(source.fileno(), 1 << 16)
            if not chunk:
                break
            captured[name].extend(chunk)
            if hasattr(sink, "buffer"):
                sink.flush()
                sink.buffer.write(chunk)
                sink.buffer.flush()
            else:
                sink.write(chunk.decode(errors="replace"))

    threads = [threading.Thread(target=copy, args=(name,), daemon=True) for name in captured]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return "".join(text.decode(errors="replace") for text in captured.values())


def ais_bench_wall_rate(printed: str, result_dir: Path, devices: list[int], pure_samples: int | None) -> float | None:
    """The devices' images per wall-clock second together, from the ``start_time``/``end_time`` that today's
    ais_bench prints for each device (its timed runs, after warm-up). Each device's images: ``pure_samples``
    (batch x loop) in pure inference, else the outputs in its folder. None where the lines are missing."""
    from t2t_vit.runtime.multidevice import wall_rate_of_lines

    samples = {device: pure_samples if pure_samples is not None else
               sum(1 for _ in (result_dir / name).glob("*_0.bin"))
               for name, device in zip(device_folders(devices), devices)}
    return wall_rate_of_lines(printed.splitlines(), samples)


def ais_bench_commands(item: Pass, options: JobOptions, arguments: list[str], bins_dir: Path | None,
                       folder: Path) -> list[list[str]]:
    """The ais_bench command lines of a pass. A dynamic-batch .om gets the gear (--dymBatch). A device list goes
    whole to an ais_bench with --divide_input (it splits the inputs into device<N>_<i>/); an older one, which runs
    every input on every chip into one folder or splits into device<N>/, gets one command per chip instead: the
    chip's share of the bins (links in a folder beside the results) and --output_dirname device<N>_<i> in the
    pass's folder, the layout today's ais_bench writes."""
    base = [sys.executable, "-m", "ais_bench"]
    gear = ["--dymBatch", str(item.batch)] if item.model.name == DYNAMIC_OM else []
    devices = options.device_list
    if devices is None:
        one = options.devices[0] if options.devices else 0
        return [[*base, *arguments, *gear, *(["--device", str(one)] if one else [])]]
    if options.multi_device == "divide_input":
        divide = ["--divide_input", "true"] if bins_dir is not None else []
        return [[*base, *arguments, *gear, "--device", ",".join(map(str, devices)), *divide]]
    from t2t_vit.runtime.multidevice import split_inputs
    from t2t_vit.runtime.runner import list_input_files

    files = list_input_files([str(bins_dir)]) if bins_dir is not None else []  # in the order the CPU runner splits
    if bins_dir is not None and len(files) < len(devices):
        raise JobError(f"{len(files)} bins for {len(devices)} devices: give at least one image a device")
    shares = split_inputs(files, len(devices)) if files else [[]] * len(devices)
    given = dict(zip(arguments[::2], arguments[1::2]))
    rest = [value for pair in given.items() if pair[0] not in ("--model", "--input", "--output", "--output_dirname")
            for value in pair]
    commands = []
    for name, device, share in zip(device_folders(devices), devices, shares):
        inputs = []
        if share:
            share_dir = folder / f".{item.dirname}_inputs" / name
            share_dir.mkdir(parents=True, exist_ok=True)
            for path in share:
                (share_dir / path.name).symlink_to(path.resolve())
            inputs = ["--input", str(share_dir)]
        commands.append([*base, "--model", given["--model"], *inputs, "--output", str(folder / item.dirname),
                         "--output_dirname", name, *rest, *gear, "--device", str(device)])
    return commands


def run_on_cpu(item: Pass, options: JobOptions, arguments: list[str], state: JobState, resume: bool) -> float | None:
    """One pass in this process, as `T2T_ViT_infer.py <the same arguments> --backend B [--resume]` would run it;
    with several devices, one process per device as `... --device 0,1 --divide_input true` runs it (returns the
    devices' images per wall-clock second together; else None)."""
    from t2t_vit.runtime.runner import RunnerError, run_inference

    emulation = item.kind == "emulation"
    precision = ["--precision", "npu-fp16", "--keep-dtype", str(item.keep_dtype)] if emulation else []
    argv = ["T2T_ViT_infer.py", *arguments, "--backend", item.runner, *precision, *(["--resume"] if resume else [])]
    given = dict(zip(arguments[::2], arguments[1::2]))
    run = dict(model=given["--model"], outfmt="BIN", batchsize=item.batch, loop=int(given["--loop"]),
               warmup_count=int(given["--warmup_count"]), backend_name=item.runner,
               options={"job": "T2T_ViT_eval.sh", "kind": item.kind, "batch": item.batch, "threads": options.threads,
                        "devices": options.device_list},
               precision="npu-fp16" if emulation else "fp32", keep_dtype=str(item.keep_dtype) if emulation else None,
               resume=resume)
    inputs = [given["--input"]] if "--input" in given else None
    devices = options.device_list
    if devices:
        from t2t_vit.runtime.multidevice import run_devices, wall_rate

        divide = ["--divide_input", "true"] if inputs else []
        argv += ["--device", ",".join(map(str, devices)), *divide]
        try:
            runs = run_devices(devices, bool(inputs), inputs, given["--output"], given["--output_dirname"],
                               options.threads, {**run, "argv": argv, "progress": False}, start_method="spawn")
        except RunnerError as error:
            raise JobError(f"{item.kind} at batch {item.batch} on devices {','.join(map(str, devices))}: {error}") \
                from error
        wall = wall_rate(runs)
        for device_run in runs:
            images = device_run.inputs if inputs else device_run.timed_samples
            print(f"device {device_run.device}: {images} images, {device_run.throughput:.1f} "
                  f"images/s ({Path(device_run.result_dir).name if device_run.result_dir else 'no output'})")
        print(f"{item.kind} at batch {item.batch} on {len(devices)} devices: {sum(r.throughput for r in runs):.1f} "
              f"images/s summed over the devices (ais_bench's summary throughput), {wall or 0:.1f} images/s of wall "
              f"clock together")
        return wall
    result = run_inference(inputs=inputs, output=given["--output"], output_dirname=given["--output_dirname"],
                           threads=options.threads, progress=options.progress, on_progress=state.on_progress,
                           argv=argv, **run)
    runner = (read_json(result.summary_path) or {}).get("cpu_runner", {})
    computed = runner.get("resume", {}).get("computed_samples", item.images)
    print(pass_summary(item, result.compute_ms, result.throughput, computed))
    return None


def pass_summary(item: Pass, compute_ms: list[float], throughput: float, computed: int) -> str:
    """One line on what a CPU pass measured, in the job's words (ais_bench's own lines are the runner's):
    ``computed`` images were inferred by this run (the rest, if any, reused from an interrupted one)."""
    if item.kind == "throughput":
        return (f"throughput at batch {item.batch}: {throughput:.1f} images/s (pure inference: 1000 x batch / mean "
                f"time of one batch over {len(compute_ms)} timed runs)")
    seconds, padded = sum(compute_ms) / 1000, len(compute_ms) * item.batch - computed
    reused = f" ({item.images - computed} reused from the interrupted run)" if computed < item.images else ""
    line = (f"{computed} images{reused} in {len(compute_ms)} batch(es) of {item.batch}: {seconds:.1f} s of inference, "
            f"{computed / seconds if seconds else 0:.1f} images/s")
    if padded > 0:
        line += (f"; the last batch was padded with {padded} copies (as ais_bench pads; they are not scored), so the "
                 f"model itself ran at {throughput:.1f} images/s")
    return line


def score_pass(item: Pass, options: JobOptions, bins_dir: Path, labels_path: Path, state: JobState) -> dict[str, Any]:
    """The accuracy of one pass (run or reused) as the postprocess stage computes it, written to acc_bs<N>.json."""
    from t2t_vit.data.metrics import ConstantOutputError, ResultError, evaluate
    from t2t_vit.provenance import provenance, write_json

    result_dir = options.work_dir / item.folder / item.dirname
    if item.reuse_reason:
        print(f"{item.kind} at batch {item.batch} ({item.runner}): {running_why(item.reuse_reason)}")
        run_pass(item, options, bins_dir, state)
    else:
        print(f"reusing {result_dir}: same model, runner, batch and bins")
    try:
        results, _ = evaluate(result_dir, labels_path, allow_constant=options.allow_constant)
    except ConstantOutputError:
        raise
    except ResultError as error:
        if item.reuse_reason:
            raise
        print(f"the reused results are incomplete ({error}): running the pass again")
        run_pass(item, options, bins_dir, state)
        results, _ = evaluate(result_dir, labels_path, allow_constant=options.allow_constant)
    results["batch_size"] = item.batch
    results["runner"] = item.runner
    name = "acc_npu_fp16" if item.kind == "emulation" else f"acc_bs{item.batch}"
    write_json(options.work_dir / f"{name}.json", {**results, **provenance({"job": "T2T_ViT_eval.sh"})})
    print(f"Top-1 accuracy of the model is: {results['top1']:.3f}%  Top-5: {results['top5']:.3f}%  "
          f"({results['count']} images, batch {item.batch})")
    return results


def fp32_pass(accuracy: list[Pass]) -> Pass:
    """The accuracy pass the emulation is compared with: the CPU's fp32 one when there is one."""
    passes = [item for item in accuracy if item.kind == "accuracy"]
    return next((item for item in passes if item.runner != "ais_bench"), passes[0])


def emulate_npu(item: Pass, options: JobOptions, bins_dir: Path, labels_path: Path, state: JobState,
                fp32: Pass) -> dict[str, Any]:
    """The NPU's fp16 emulated on the CPU (one accuracy pass), and its comparison with the fp32 pass."""
    from t2t_vit.data.metrics import align, compare, match_results

    results = score_pass(item, options, bins_dir, labels_path, state)
    names, emulated, reference, _ = align(match_results(options.work_dir / item.folder / item.dirname, labels_path),
                                          match_results(options.work_dir / fp32.folder / fp32.dirname, labels_path),
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
    figures.update(why_kept(item, bins_dir))
    return figures


ORIGIN_IMAGES = 2  # bins the nothing-kept graph is searched on for the NaN's origin (it shows on the first)


def why_kept(item: Pass, bins_dir: Path) -> dict[str, Any]:
    """The keep set's size, and where the emulation with nothing kept (ATC without --keep_dtype) first turns
    non-finite, on the first bins (gen_cfg.py --explain gives the whole per-node report)."""
    from t2t_vit.model.export import load_onnx
    from t2t_vit.ascend.fp16_diagnosis import images_for, nan_origin, origin_text
    from t2t_vit.ascend.npu_precision import read_keep_list

    bins = sorted(bins_dir.glob("*.bin"))[:ORIGIN_IMAGES]
    origin = nan_origin(load_onnx(item.model, "the sum export"), images_for(item.model, bins))
    kept = len(read_keep_list(item.keep_dtype))
    print(f"with nothing kept (ATC without --keep_dtype): {origin_text(origin)}; {item.keep_dtype.name} keeps {kept} "
          f"nodes in fp32")
    return {"keep_dtype_nodes": kept, "nan_origin_nothing_kept": origin and {
        key: origin[key] for key in ("node", "op_type", "inputs", "image")}}


def measure_throughput(item: Pass, options: JobOptions, bins_dir: Path, state: JobState) -> dict[str, Any]:
    summary_path = options.work_dir / "perf" / f"bs{item.batch}_summary.json"
    if item.reuse_reason:
        print(f"throughput at batch {item.batch} ({item.runner}, {options.loop} runs): {running_why(item.reuse_reason)}")
        return run_pass(item, options, bins_dir, state)
    summary = read_json(summary_path)
    if summary is None:
        print(f"the reused throughput summary {summary_path} is unreadable: running again")
        return run_pass(item, options, bins_dir, state)
    print(f"reusing {summary_path}: same model, runner, batch and loop: {summary['throughput']:.2f} images/s")
    return summary


# -------------------------------------------------------------------------------------------------- job

@dataclass
class JobPaths:
    """Where the job's artefacts live in the work dir."""

    bins_dir: Path
    labels_path: Path
    sum_onnx: Path  # for the NPU: float input (AIPP normalises uint8 bins on the chip)
    cpu_onnx: Path
    emulation_onnx: Path  # the NPU emulation reads the bins too: the sum form with the bins' input dtype
    keep_dtype_cfg: Path
    om_dir: Path

    @classmethod
    def of(cls, options: JobOptions) -> JobPaths:
        from t2t_vit.model.variants import DEFAULT

        work, spec = options.work_dir, options.spec or DEFAULT
        bins = BINS_DIRS[options.dtype] + (f"_{spec.img_size}" if spec.img_size != 224 else "")
        return cls(work / bins, work / "label.npy", export_path(work, NPU_PERFORMER, "float32", spec),
                   export_path(work, CPU_PERFORMER, options.dtype, spec),
                   export_path(work, NPU_PERFORMER, options.dtype, spec),
                   work / f"{spec.name}_keep_dtype.cfg",
                   options.om_dir or work / ("om" if spec is DEFAULT else f"om_{spec.name}"))


def run_job(options: JobOptions) -> dict[str, Any]:
    """Run the main job, holding the work dir for the whole run (a second job on it stops at once, changing
    nothing); returns what eval_summary.json holds."""
    from t2t_vit.job import report as evalreport
    from t2t_vit.files import exclusive_lock

    if options.demo:
        from t2t_vit.model.variants import by_name

        options.spec = options.spec or by_name(options.model or "t2t_vit_14")
        check_demo_room(options.work_dir)
    if options.devices or options.om_dir is not None:
        check_host(options)
    discovery = None if options.demo else check_inputs(options)  # a refused input leaves no work dir behind
    if importlib.util.find_spec("ais_bench") is not None:  # a batch size the dynamic .om lacks: refused now
        check_gears(JobPaths.of(options).om_dir, options.batch_sizes)
    with exclusive_lock(options.work_dir, "--work-dir"):
        if options.demo:
            (options.work_dir / DEMO_MARKER).write_text(
                "Made by T2T_ViT_eval.sh --demo: synthetic images and a randomly initialised checkpoint; every file "
                "in this folder is the demo's (it writes nowhere else), and the accuracy means nothing.\n")
        for stale in (options.work_dir / evalreport.SUMMARY_JSON, options.work_dir / evalreport.SUMMARY_PNG):
            remove_if_present(stale)  # a failed run must not leave the last run's tables looking current
        state, digest, paths = JobState(), Digests(), JobPaths.of(options)
        if options.demo:
            state.timed("demo data (random weights: the accuracy means nothing)", lambda: prepare_demo(options))
        state.timed(f"preprocess {options.data_dir} -> {paths.bins_dir}",
                    lambda: preprocess(options, paths.bins_dir, paths.labels_path, discovery))
        forms = (f"{NPU_PERFORMER} form + keep_dtype for the NPU, {CPU_PERFORMER} form with {options.dtype} input for "
                 f"the CPU" if options.spec.performer else f"its one form, softmax, + keep_dtype, {options.dtype} input "
                                                           f"for the CPU")
        state.timed(f"export {options.spec.name} ({forms})", lambda: export_all(options, paths, digest))
        models = choose_runners(options, paths, digest)
        return run_passes(options, paths, models, state, digest)


def check_host(options: JobOptions) -> None:
    """With --om-dir or --device: T2T_ViT_doctor.py's checks first, its table printed. A blocker stops the job
    before anything is made, except on a host without CANN given only --device, which runs on the CPU, one process
    per device. The devices must be chips npu-smi lists; the installed ais_bench's multi-device behaviour is kept
    for the passes."""
    from t2t_vit.ascend import doctor

    print("== host check (T2T_ViT_doctor.py)")
    report = doctor.diagnose(None, str(options.work_dir))
    print("\n".join(doctor.table(report["checks"])))
    options.multi_device = (report.get("ais_bench") or {}).get("multi_device")
    devices = ",".join(map(str, options.devices or [0]))
    if not report["ready"]:
        blocker = report["first_blocker"]
        if not report["cann"] and options.om_dir is None:
            print(f"no CANN here: the NPU flow cannot run on this host; --device {devices} runs on the CPU, one "
                  f"process per device with its share of the cores, as ais_bench runs one per chip")
            return
        asked = " and ".join(flag for flag, given in (("--om-dir", options.om_dir is not None),
                                                      ("--device", bool(options.devices))) if given)
        raise JobError(f"the NPU flow cannot run here: {blocker['check']}: {blocker['found']}; fix: {blocker['fix']} "
                       f"(T2T_ViT_doctor.py shows every check; leave out {asked} to run on the CPU)")
    chips = [chip["device"] for chip in report["chips"]]
    missing = [device for device in options.devices or [] if device not in chips]
    if missing:
        raise JobError(f"--device {devices}: npu-smi lists no chip with logical id {', '.join(map(str, missing))} "
                       f"(the chips here: --device {','.join(map(str, chips))})")
    print(f"the NPU flow can run: --soc-version {report['soc_version']}, chips {','.join(map(str, chips))}; this run "
          f"uses --device {devices}")


def export_all(options: JobOptions, paths: JobPaths, digest: Digests) -> None:
    """The exports the job needs (each reused when made from this checkpoint) and keep_dtype.cfg (made anew)."""
    checkpoint_sha, spec = digest(options.pth_path), options.spec
    export_form(options.pth_path, checkpoint_sha, paths.sum_onnx, NPU_PERFORMER, spec=spec)
    write_keep_dtype_cfg(paths.sum_onnx, paths.keep_dtype_cfg)
    if paths.cpu_onnx != paths.sum_onnx:
        export_form(options.pth_path, checkpoint_sha, paths.cpu_onnx, CPU_PERFORMER, options.dtype, spec)
    if options.emulate_npu and paths.emulation_onnx not in (paths.sum_onnx, paths.cpu_onnx):
        export_form(options.pth_path, checkpoint_sha, paths.emulation_onnx, NPU_PERFORMER, options.dtype, spec)


def choose_runners(options: JobOptions, paths: JobPaths, digest: Digests) -> dict[int, tuple[Path, str]]:
    """Per batch size, the model and what runs it: its .om on ais_bench when one was built from this run's export,
    else the CPU export on the CPU runtime (which must then be installed)."""
    from t2t_vit.runtime.backends import choose_backend

    have_ais_bench = importlib.util.find_spec("ais_bench") is not None
    models: dict[int, tuple[Path, str]] = {}
    for batch in options.batch_sizes:
        om = (om_for_batch(paths.om_dir, batch, digest(paths.sum_onnx), digest(paths.keep_dtype_cfg), digest,
                           options.dtype, paths.sum_onnx, paths.keep_dtype_cfg, options.spec.img_size)
              if have_ais_bench else None)
        if om is None and options.backend is None:
            options.backend = choose_backend(None)
        models[batch] = (om, "ais_bench") if om is not None else (paths.cpu_onnx, options.backend)
    return models


def run_passes(options: JobOptions, paths: JobPaths, models: dict[int, tuple[Path, str]], state: JobState,
               digest: Digests) -> dict[str, Any]:
    """Plan the passes, run (or reuse) each, and gather what eval_summary.json holds."""
    from t2t_vit.data.dataset import read_labels

    bins_dir, labels_path = paths.bins_dir, paths.labels_path
    image_count = len(read_labels(labels_path))
    accuracy, throughput = plan_passes(options, models, bins_dir, labels_path, digest, image_count,
                                       (paths.emulation_onnx, paths.keep_dtype_cfg) if options.emulate_npu else None)
    state.images_to_infer = sum(item.images for item in accuracy + throughput if item.reuse_reason)
    if state.images_to_infer:
        print(f"\n{state.images_to_infer} images to infer: {sum(bool(p.reuse_reason) for p in accuracy)} accuracy "
              f"pass(es) of {image_count} images, {sum(bool(p.reuse_reason) for p in throughput)} throughput run(s)")
    scores = {item.batch: state.timed(f"accuracy at batch {item.batch} ({item.runner})",
                                      lambda item=item: score_pass(item, options, bins_dir, labels_path, state))
              for item in accuracy if item.kind == "accuracy"}
    emulation = next((item for item in accuracy if item.kind == "emulation"), None)
    npu = None
    if emulation is not None:
        npu = state.timed(f"NPU fp16 emulation at batch {emulation.batch} (onnxruntime, sum export, keep_dtype.cfg)",
                          lambda: emulate_npu(emulation, options, bins_dir, labels_path, state,
                                              fp32_pass(accuracy)))
    perf = {item.batch: state.timed(f"throughput at batch {item.batch} ({item.runner}, pure inference)",
                                    lambda item=item: measure_throughput(item, options, bins_dir, state))
            for item in throughput}
    state.stage_seconds["total"] = round(time.perf_counter() - state.started, 3)
    return build_summary(options, models, [item for item in accuracy if item.kind == "accuracy"], scores, perf,
                         state.stage_seconds, npu, throughput, digest)


def build_summary(options: JobOptions, models: dict[int, tuple[Path, str]], accuracy: list[Pass],
                  scores: dict[int, dict[str, Any]], perf: dict[int, dict[str, Any]],
                  stage_seconds: dict[str, float], npu_emulation: dict[str, Any] | None = None,
                  throughput: list[Pass] | None = None, digest: Digests | None = None) -> dict[str, Any]:
    """What eval_summary.json holds: a row per batch size, the accuracy from the pass that covers it, each figure
    marked with the date of the earlier run it was reused from (None: measured by this run)."""
    from t2t_vit.data.bins import read_manifest
    from t2t_vit.provenance import machine, now, versions

    cpu_pass = next((item.batch for item in accuracy if item.runner != "ais_bench"), None)
    accuracy_reused = {item.batch: item.reused_from for item in accuracy}
    throughput_reused = {item.batch: item.reused_from for item in throughput or []}
    rows = []
    for batch in options.batch_sizes:
        model, runner = models[batch]
        measured_at = batch if batch in scores and (options.accuracy_all or runner == "ais_bench") else cpu_pass
        accuracy_row = scores[measured_at]
        rows.append({"batch_size": batch, "top1": accuracy_row["top1"], "top5": accuracy_row["top5"],
                     "count": accuracy_row["count"], "accuracy_batch_size": measured_at,
                     "images_per_s": perf[batch]["throughput"],
                     "compute_ms_mean": perf[batch]["NPU_compute_time"]["mean"], "runner": runner,
                     "model": str(model), "accuracy_reused_from": accuracy_reused.get(measured_at),
                     "throughput_reused_from": throughput_reused.get(batch)})
        if perf[batch].get("per_device"):  # the card: images_per_s is the sum of the devices' figures
            rows[-1].update(per_device=perf[batch]["per_device"],
                            wall_images_per_s=perf[batch].get("wall_images_per_s"))
    if options.accuracy_all:
        accuracy_note = "accuracy measured at every batch size"
    elif cpu_pass is not None:
        accuracy_note = (f"CPU accuracy measured once, at batch {cpu_pass}: the CPU logits do not depend on the "
                         f"batch size (--accuracy-all measures every batch size)")
    else:
        accuracy_note = "accuracy measured at every batch size (each .om is its own compiled graph)"
    manifest = read_manifest(JobPaths.of(options).bins_dir) or {}
    return {"rows": rows, "accuracy_note": accuracy_note, "npu_emulation": npu_emulation, "backend": options.backend,
            "cpu_onnx": str(JobPaths.of(options).cpu_onnx), "bins_dtype": options.dtype,
            "model": options.spec.record() if options.spec is not None else None,
            "checkpoint": str(options.pth_path),
            "checkpoint_sha256": digest(options.pth_path) if digest is not None else None,
            "data_dir": str(options.data_dir), "data_coverage": manifest.get("coverage", ""),
            "demo": options.demo, "note": DEMO_NOTE if options.demo else "",
            "devices": options.device_list,
            "stage_seconds": stage_seconds, "date": now(), "machine": machine(), "versions": versions()}


BINS_DIRS = {"uint8": "prep_bins_uint8", "float32": "prep_bins"}


def export_path(work: Path, performer: str, input_dtype: str, spec: Any = None) -> Path:
    """Where the job keeps an export: <variant>_<form>.onnx (the transformer-token variants have one form:
    <variant>.onnx), with _uint8 before .onnx for the uint8 input."""
    from t2t_vit.model.variants import DEFAULT

    spec = spec or DEFAULT
    form = f"_{performer}" if spec.performer else ""
    return work / f"{spec.name}{form}{'_uint8' if input_dtype == 'uint8' else ''}.onnx"


def check_inputs(options: JobOptions):
    """Refuse unusable inputs before anything is written (minutes of preprocessing before a refusal help nobody):
    the checkpoint loads and fits the model, the images and labels are found, the work dir is outside the data
    folder, writable, with room for the bins. Returns the images and labels found."""
    from t2t_vit.data.dataset import discover_images, read_class_list
    from t2t_vit.data.preprocess import check_destination

    if options.pth_path is None:
        raise JobError("--pth-path is required (or --demo)")
    if options.data_dir is None:
        raise JobError("--data-dir is required (or --demo)")
    if not options.pth_path.is_file():
        raise JobError(f"checkpoint {options.pth_path} does not exist or is not a file (check --pth-path)")
    options.spec = check_checkpoint(options.pth_path, options.model)
    print(f"checkpoint {options.pth_path}: {options.spec.name} ({options.spec.title}, {options.spec.img_size}x"
          f"{options.spec.img_size} input)")
    discovery = discover_images(options.data_dir, options.label_file, read_class_list(options.class_list),
                                options.devkit)
    paths = JobPaths.of(options)
    check_destination(paths.bins_dir, paths.labels_path, discovery, options.spec.data_config(), options.dtype, None,
                      "--work-dir", "--work-dir")
    return discovery


def check_checkpoint(pth_path: Path, model: str | None = None):
    """The checkpoint is a PyTorch checkpoint of a published variant (``model`` when given) whose weights fit it
    (what the export will load); returns the variant."""
    from t2t_vit.model.checkpoint import check_state_dict, checkpoint_variant, read_checkpoint, select_state_dict
    from t2t_vit.model.network import create_model

    state_dict, _ = select_state_dict(read_checkpoint(pth_path))
    spec = checkpoint_variant(state_dict, model, pth_path)
    check_state_dict(create_model(spec.form(NPU_PERFORMER), spec), state_dict)
    return spec


# -------------------------------------------------------------------------------------------------- CLI

def _batch_sizes(text: str) -> list[int]:
    sizes = []
    for part in text.replace(",", " ").split():
        if not part.isdigit() or int(part) < 1:
            raise argparse.ArgumentTypeError(f"batch size '{part}' is not a positive integer (e.g. --batch-sizes "
                                             f"\"1 4 8\")")
        sizes.append(int(part))
    if not sizes:
        raise argparse.ArgumentTypeError("no batch size given (e.g. --batch-sizes \"1 4 8\")")
    return list(dict.fromkeys(sizes))


def _devices(text: str) -> list[int]:
    parts = [part.strip() for part in text.split(",")]
    if not parts or not all(part.isdigit() for part in parts):
        raise argparse.ArgumentTypeError(f"'{text}' is not a list of device ids (e.g. --device 0,1)")
    if len(set(parts)) != len(parts):
        raise argparse.ArgumentTypeError(f"'{text}' names a device twice")
    return [int(part) for part in parts]


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    from t2t_vit.model.variants import NAMES

    parser = cli.make_parser(__doc__)
    parser.prog = "T2T_ViT_eval.sh"
    inputs = parser.add_argument_group("inputs")
    inputs.add_argument("--pth-path", type=Path, metavar="CKPT",
                        help="the checkpoint (81.5_T2T_ViT_14.pth.tar, or any variant upstream publishes)")
    inputs.add_argument("--model", choices=NAMES, metavar="NAME",
                        help="the variant the checkpoint must be (default: the one its shapes are); with --demo, the "
                             "variant to make (default: t2t_vit_14): " + ", ".join(NAMES))
    inputs.add_argument("--demo", action="store_true",
                        help="make synthetic images and a random checkpoint and run on them, all in WORK/demo, which "
                             "it never leaves (a real run in WORK is not touched; the accuracy means nothing)")
    inputs.add_argument("--demo-images", type=_positive, default=16, metavar="N",
                        help="synthetic images for --demo (default: 16)")
    cli.add_data_arguments(parser, required=False)
    run = parser.add_argument_group("run")
    run.add_argument("--batch-sizes", type=_batch_sizes, default=list(DEFAULT_BATCH_SIZES), metavar="'1 4 8'",
                     help="batch sizes (default: '1 4 8 16 32 64')")
    run.add_argument("--work-dir", type=Path, default=Path("work"), metavar="DIR",
                     help="where every file goes (default: work)")
    run.add_argument("--om-dir", type=Path, metavar="DIR",
                     help="offline models for ais_bench: T2T_ViT_dyn.om (T2T_ViT_atc.sh --dynamic-batch, one for every "
                          "gear, run with --dymBatch N) or T2T_ViT_bs<N>.om; given, the host check runs first "
                          "(default: WORK/om for T2T-ViT-14, WORK/om_<variant> for the others)")
    run.add_argument("--device", type=_devices, metavar="0,1",
                     help="the chips every pass uses (npu-smi's logical ids; an Atlas 300I Duo has two): one process "
                          "per chip, each image scored once; on the CPU, one process per device with its share of the "
                          "cores. Throughput is then per chip and per card (their sum). Runs the host check first "
                          "(default: one device, 0)")
    run.add_argument("--accuracy-batch", type=_positive, metavar="N",
                     help="CPU: the batch size of the one accuracy pass (default: the largest of --batch-sizes)")
    run.add_argument("--accuracy-all", action="store_true",
                     help="CPU: an accuracy pass at every batch size (they agree; this takes N times as long)")
    run.add_argument("--loop", type=_positive, metavar="N",
                     help=f"timed pure-inference runs per batch size (default: {DEFAULT_LOOP}, {DEMO_LOOP} with "
                          f"--demo)")
    run.add_argument("--emulate-npu", action="store_true",
                     help="add an accuracy pass of the NPU's fp16 (force_fp16 + keep_dtype.cfg) emulated on the CPU, "
                          "and its comparison with fp32 (once: it does not depend on the batch size)")
    run.add_argument("--dtype", choices=["uint8", "float32"], default="uint8",
                     help="bins: uint8, the cropped image (150,528 bytes each), normalised by the uint8 export on "
                          "the CPU and by AIPP on the NPU; float32, the ModelZoo's normalised bins (4x the disk) "
                          "(default: uint8)")
    run.add_argument("--allow-constant", action="store_true",
                     help="score result sets whose outputs are mostly constant or one same vector (default: error: "
                          "a dead output is not an accuracy)")
    run.add_argument("--skip-bad", action="store_true",
                     help="leave undecodable images out (listed in the bins' manifest) instead of stopping")
    run.add_argument("--workers", type=int, metavar="N",
                     help="preprocess processes, 0 = in this process (default: the usable cores)")
    add_cpu_arguments(parser)
    cli.add_verbosity(parser)
    return parser


def add_cpu_arguments(parser: argparse.ArgumentParser) -> None:
    from t2t_vit.runtime.backends import BACKENDS, DEFAULT_BACKEND

    cpu = parser.add_argument_group("CPU runner")
    cpu.add_argument("--backend", choices=BACKENDS,
                     help=f"CPU runtime (default: {DEFAULT_BACKEND}; onnxruntime on aarch64 or where only it is "
                          f"installed)")
    cpu.add_argument("--threads", type=_positive, metavar="N", help="runtime threads (default: the usable cores)")
    cpu.add_argument("--no-progress", action="store_true", help="no progress bars or progress lines")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    given = [flag for flag, value in (("--pth-path", args.pth_path), ("--data-dir", args.data_dir),
                                      ("--devkit", args.devkit), ("--label-file", args.label_file),
                                      ("--class-list", args.class_list)) if value]
    if args.demo and given:
        parser.error(f"--demo makes its own checkpoint and images; leave out {', '.join(given)}")
    if not args.demo and not (args.pth_path and args.data_dir):
        parser.error("--pth-path and --data-dir are required (or --demo)")
    if args.workers is not None and args.workers < 0:
        parser.error("--workers must be 0 or more")
    if args.accuracy_batch and args.accuracy_batch not in args.batch_sizes:
        parser.error(f"--accuracy-batch {args.accuracy_batch} is not one of --batch-sizes {args.batch_sizes}")
    options = JobOptions(pth_path=args.pth_path, data_dir=args.data_dir, label_file=args.label_file,
                         devkit=args.devkit, class_list=args.class_list,
                         work_dir=args.work_dir / DEMO_ROOM if args.demo else args.work_dir,
                         batch_sizes=args.batch_sizes, backend=args.backend,
                         loop=args.loop or (DEMO_LOOP if args.demo else DEFAULT_LOOP), om_dir=args.om_dir,
                         demo=args.demo, demo_images=args.demo_images, accuracy_batch=args.accuracy_batch,
                         accuracy_all=args.accuracy_all, skip_bad=args.skip_bad, workers=args.workers,
                         threads=args.threads, progress=False if args.no_progress else None,
                         emulate_npu=args.emulate_npu, dtype=args.dtype, allow_constant=args.allow_constant,
                         model=args.model, devices=args.device)
    if args.demo:
        from t2t_vit.model.variants import by_name

        options.spec = by_name(args.model or "t2t_vit_14")

    def action() -> None:
        from t2t_vit.job import report as evalreport

        summary = run_job(options)
        evalreport.write_report(options.work_dir, summary)

    return cli.run(action, args)


if __name__ == "__main__":
    sys.exit(main())
