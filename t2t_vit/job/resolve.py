"""Resolve a request once: the variant, the paths, the devices, the images; every refusal before anything is made.

:func:`resolve` turns a :class:`JobRequest` into a :class:`ResolvedJob` that the later steps read and never
change: the checkpoint's variant (or the demo's), where every artefact lives in the work dir, how the installed
ais_bench runs a device list (the host check), and the images and labels found.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from t2t_vit.job.om import check_gears, have_ais_bench
from t2t_vit.job.request import NPU_PERFORMER, CPU_PERFORMER, DEMO_MARKER, VARIANT_SUMMARY, JobError, JobRequest

BINS_DIRS = {"uint8": "prep_bins_uint8", "float32": "prep_bins"}


def export_path(work: Path, performer: str, input_dtype: str, spec: Any = None) -> Path:
    """Where the job keeps an export: <variant>_<form>.onnx (the transformer-token variants have one form:
    <variant>.onnx), with _uint8 before .onnx for the uint8 input."""
    from t2t_vit.model.variants import DEFAULT

    spec = spec or DEFAULT
    form = f"_{performer}" if spec.performer else ""
    return work / f"{spec.name}{form}{'_uint8' if input_dtype == 'uint8' else ''}.onnx"


@dataclass(frozen=True)
class JobPaths:
    """Where the job's artefacts live in the work dir. Everything made from one variant carries its name, so
    variants share a work dir without replacing each other's files: the exports, the keep set, the results
    (``result_<variant>/``), the throughput runs (``perf_<variant>/``), the accuracy files and the variant's summary.
    The bins and labels depend only on the data config and are shared by the variants of one input size."""

    bins_dir: Path
    labels_path: Path
    sum_onnx: Path  # for the NPU: float input (AIPP normalises uint8 bins on the chip)
    cpu_onnx: Path
    emulation_onnx: Path  # the NPU emulation reads the bins too: the sum form with the bins' input dtype
    keep_dtype_cfg: Path
    om_dir: Path
    results: Path  # accuracy passes: <results>/bs<N>/, <results>/npu_fp16_bs<N>/, their stamps and summaries
    perf: Path  # throughput runs: <perf>/bs<N>_summary.json and their stamps
    variant_summary: Path  # eval_summary_<variant>.json: the variant's last summary, kept beside the others'
    variant: str  # the name every one of its files carries

    @classmethod
    def of(cls, work: Path, spec: Any, dtype: str, om_dir: Path | None) -> JobPaths:
        from t2t_vit.model.variants import DEFAULT

        spec = spec or DEFAULT
        bins = BINS_DIRS[dtype] + (f"_{spec.img_size}" if spec.img_size != DEFAULT.img_size else "")
        return cls(work / bins, work / "label.npy", export_path(work, NPU_PERFORMER, "float32", spec),
                   export_path(work, CPU_PERFORMER, dtype, spec), export_path(work, NPU_PERFORMER, dtype, spec),
                   work / f"{spec.name}_keep_dtype.cfg",
                   om_dir or work / ("om" if spec is DEFAULT else f"om_{spec.name}"),
                   work / f"result_{spec.name}", work / f"perf_{spec.name}", work / VARIANT_SUMMARY.format(spec.name),
                   spec.name)

    def accuracy_json(self, kind: str, batch: int) -> Path:
        """acc_<variant>_bs<N>.json, or acc_<variant>_npu_fp16.json for the NPU emulation."""
        suffix = "npu_fp16" if kind == "emulation" else f"bs{batch}"
        return self.variant_summary.parent / f"acc_{self.variant}_{suffix}.json"

    def folder_of(self, kind: str) -> Path:
        """Where a pass of ``kind`` writes: throughput runs under perf, accuracy passes under results."""
        return self.perf if kind == "throughput" else self.results


@dataclass(frozen=True)
class ResolvedJob:
    """The main job as it will run: the request, and the facts resolved from it once."""

    request: JobRequest
    spec: Any  # t2t_vit.model.variants.VariantSpec
    pth_path: Path  # the checkpoint (the demo's: made by its first step, at this path)
    data_dir: Path
    paths: JobPaths
    multi_device: str | None = None  # how the installed ais_bench runs a device list (t2t_vit.ascend.doctor)
    discovery: Any = None  # the images and labels found (t2t_vit.data.dataset.Discovery); None for the demo

    @property
    def work_dir(self) -> Path:
        return self.request.work_dir

    @property
    def batch_sizes(self) -> list[int]:
        return self.request.batch_sizes

    @property
    def dtype(self) -> str:
        return self.request.dtype

    @property
    def device_list(self) -> list[int] | None:
        return self.request.device_list


def resolve(request: JobRequest) -> ResolvedJob:
    """Check everything that can be checked before a file is written, in the order a user fixes it: the demo's
    folder, the host (with --device or --om-dir), the checkpoint and the images, the work dir, the .om's gears."""
    from t2t_vit.config import MODEL_NAME
    from t2t_vit.job.demo import demo_paths
    from t2t_vit.model.variants import by_name

    if request.demo:
        spec = by_name(request.model or MODEL_NAME)
        check_demo_room(request.work_dir)
    multi_device = check_host(request) if request.devices or request.om_dir is not None else None
    if request.demo:
        (pth_path, data_dir), discovery = demo_paths(request.work_dir, spec.name), None
        paths = JobPaths.of(request.work_dir, spec, request.dtype, request.om_dir)
    else:
        pth_path, data_dir = request.pth_path, request.data_dir
        spec, discovery, paths = check_inputs(request)  # a refused input leaves no work dir behind
    if have_ais_bench():  # a batch size the dynamic .om lacks: refused now
        check_gears(paths.om_dir, request.batch_sizes)
    return ResolvedJob(request, spec, pth_path, data_dir, paths, multi_device, discovery)


def check_demo_room(room: Path) -> None:
    """The demo's own work dir (WORK/demo) is refused when it holds files that a demo did not make (no marker)."""
    from t2t_vit.files import LOCK_NAME

    made_by_others = room.is_dir() and any(entry.name != LOCK_NAME for entry in room.iterdir())
    if made_by_others and not (room / DEMO_MARKER).is_file():
        raise JobError(f"{room} holds files that the demo did not make (no {DEMO_MARKER}); the demo writes only there: "
                       f"move them, or give the demo another --work-dir")
    if room.exists() and not room.is_dir():
        raise JobError(f"{room} is a file; the demo needs that path for its folder: give another --work-dir")


def check_host(request: JobRequest) -> str | None:
    """With --om-dir or --device: T2T_ViT_doctor.py's checks first, its table printed. A blocker stops the job
    before anything is made, except on a host without CANN given only --device, which runs on the CPU, one process
    per device. The devices must be chips npu-smi lists. Returns how the installed ais_bench runs a device list."""
    from t2t_vit.ascend import doctor
    from t2t_vit.progress import plural

    data_dir = None if request.demo or request.data_dir is None else str(request.data_dir)
    report = doctor.diagnose(data_dir, str(request.work_dir))
    multi_device = (report.get("ais_bench") or {}).get("multi_device")
    devices = ",".join(map(str, request.devices or [0]))
    if not report["ready"] and not report["cann"] and request.om_dir is None:
        needs = [check for check in report["checks"] if check["status"] == "blocker"]
        print(f"== host check (T2T_ViT_doctor.py): this run is on the CPU (no CANN here): --device {devices} runs one "
              f"process per device with its share of the cores, as ais_bench runs one per chip. What an NPU run on "
              f"this host would still need ({plural(len(needs), 'item')}), and the disk:")
        print("\n".join(doctor.table(needs + [check for check in report["checks"] if check["check"] == "disk"])))
        return multi_device
    print("== host check (T2T_ViT_doctor.py)")
    print("\n".join(doctor.table(report["checks"])))
    if not report["ready"]:
        blocker = report["first_blocker"]
        asked = " and ".join(flag for flag, given in (("--om-dir", request.om_dir is not None),
                                                      ("--device", bool(request.devices))) if given)
        raise JobError(f"the NPU flow cannot run here: {blocker['check']}: {blocker['found']}; fix: {blocker['fix']} "
                       f"(T2T_ViT_doctor.py shows every check; leave out {asked} to run on the CPU)")
    chips = [chip["device"] for chip in report["chips"]]
    missing = [device for device in request.devices or [] if device not in chips]
    if missing:
        raise JobError(f"--device {devices}: npu-smi lists no chip with logical id {', '.join(map(str, missing))} "
                       f"(the chips here: --device {','.join(map(str, chips))})")
    print(f"the NPU flow can run: --soc-version {report['soc_version']}, chips {','.join(map(str, chips))}; this run "
          f"uses --device {devices}")
    return multi_device


def check_inputs(request: JobRequest) -> tuple[Any, Any, JobPaths]:
    """Refuse unusable inputs before anything is written (minutes of preprocessing before a refusal help nobody),
    the checks that need no model first, before torch is imported (a mistyped path answers in a fraction of a
    second): the checkpoint file exists, the images and labels are found, the work dir is outside the data folder,
    writable, with room for the bins, and no other job holds it; then the checkpoint loads and fits the model.
    Returns the variant, the images and labels found, and the paths."""
    from t2t_vit.data.dataset import discover_images, read_class_list
    from t2t_vit.files import check_checkpoint_file, check_not_held
    from t2t_vit.model.variants import DEFAULT, by_name

    if request.pth_path is None:
        raise JobError("--pth-path is required (or --demo)")
    if request.data_dir is None:
        raise JobError("--data-dir is required (or --demo)")
    if not request.pth_path.is_file():
        raise JobError(f"checkpoint {request.pth_path} does not exist or is not a file (check --pth-path)")
    check_checkpoint_file(request.pth_path, "--pth-path")
    discovery = discover_images(request.data_dir, request.label_file, read_class_list(request.class_list),
                                request.devkit)
    expected = by_name(request.model) if request.model else DEFAULT  # the input size, before the checkpoint says it
    check_work_dir(request, expected, discovery)
    check_not_held(request.work_dir, "--work-dir")
    spec = check_checkpoint(request.pth_path, request.model)
    print(f"checkpoint {request.pth_path}: {spec.name} ({spec.title}, {spec.img_size}x{spec.img_size} input)")
    if spec.img_size != expected.img_size:  # other bins: their folder and size
        check_work_dir(request, spec, discovery)
    return spec, discovery, JobPaths.of(request.work_dir, spec, request.dtype, request.om_dir)


def check_work_dir(request: JobRequest, spec: Any, discovery: Any) -> None:
    """The work dir can take the bins of ``spec``'s input size: outside the data folder, writable, with room."""
    from t2t_vit.data.preprocess import check_destination
    from t2t_vit.files import check_output_folder

    check_output_folder(request.work_dir, "--work-dir")
    paths = JobPaths.of(request.work_dir, spec, request.dtype, request.om_dir)
    check_destination(paths.bins_dir, paths.labels_path, discovery, spec.data_config(), request.dtype, None,
                      "--work-dir", "--work-dir")


def check_checkpoint(pth_path: Path, model: str | None = None):
    """The checkpoint is a PyTorch checkpoint of a published variant (``model`` when given) whose weights fit it
    (what the export will load); returns the variant."""
    from t2t_vit.model.checkpoint import check_state_dict, checkpoint_variant, read_checkpoint, select_state_dict
    from t2t_vit.model.network import create_model

    state_dict, _ = select_state_dict(read_checkpoint(pth_path))
    spec = checkpoint_variant(state_dict, model, pth_path)
    check_state_dict(create_model(spec.form(NPU_PERFORMER), spec), state_dict)
    return spec
