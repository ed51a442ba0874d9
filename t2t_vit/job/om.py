"""The .om files the NPU runs: which one serves a batch size, and whether it was built from this run's export.

``WORK/om/T2T_ViT_bs<N>.om`` (or one dynamic-batch ``T2T_ViT_dyn.om`` for every gear), each with the build
record ``T2T_ViT_atc.sh`` writes beside it (:mod:`t2t_vit.ascend.om_record`). A batch size without a usable
.om runs on the CPU.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from t2t_vit.job.request import JobError
from t2t_vit.job.stamps import Digests

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


def have_ais_bench() -> bool:
    return importlib.util.find_spec("ais_bench") is not None


def choose_runners(job, digest: Digests) -> dict[int, tuple[Path, str]]:
    """Per batch size, the model and what runs it: its .om on ais_bench when one was built from this run's export,
    else the CPU export on the CPU runtime (the one asked for, else the default, which must then be installed)."""
    from t2t_vit.runtime.backends import choose_backend

    paths, installed = job.paths, have_ais_bench()
    models: dict[int, tuple[Path, str]] = {}
    backend = job.request.backend
    for batch in job.batch_sizes:
        om = (om_for_batch(paths.om_dir, batch, digest(paths.sum_onnx), digest(paths.keep_dtype_cfg), digest,
                           job.dtype, paths.sum_onnx, paths.keep_dtype_cfg, job.spec.img_size)
              if installed else None)
        if om is None and backend is None:
            backend = choose_backend(None)
        models[batch] = (om, "ais_bench") if om is not None else (paths.cpu_onnx, backend)
    return models


def cpu_backend(job, models: dict[int, tuple[Path, str]]) -> str | None:
    """The CPU runtime the run used (the one asked for when every batch size ran on the NPU)."""
    return next((runner for _, runner in models.values() if runner != "ais_bench"), job.request.backend)
