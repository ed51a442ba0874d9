"""The artefacts the passes run on: the demo's data, the bins, the exports and keep_dtype.cfg, each reused when
it was made from the same inputs (decided by content, never by file times)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from t2t_vit import ToolkitError
from t2t_vit.job.request import CPU_PERFORMER, JOB_NAME, NPU_PERFORMER
from t2t_vit.job.stamps import Digests
from t2t_vit.model.variants import form_phrase


def prepare_demo(job) -> None:
    """The demo's synthetic images and random checkpoint, at the paths the resolved job names."""
    from t2t_vit.job.demo import make_demo

    make_demo(job.work_dir, job.request.demo_images, job.spec.name)
    print(f"demo data: {job.data_dir} ({job.request.demo_images} synthetic images), checkpoint {job.pth_path} "
          f"({job.spec.name}, random weights: the accuracy means nothing)")


def preprocess(job) -> None:
    """Bins for the data dir, reusing only bins made from the same images with the same data config and dtype."""
    from t2t_vit.config import data_config_hash
    from t2t_vit.data.preprocess import run_preprocess
    from t2t_vit.data.bins import MANIFEST_NAME, bins_dtype, read_manifest

    request, bins_dir, labels_path = job.request, job.paths.bins_dir, job.paths.labels_path
    data_config = job.spec.data_config()
    reason = ""
    try:
        manifest = read_manifest(bins_dir)
    except ToolkitError as error:
        manifest, reason = None, f"its manifest is unusable ({error})"
    if manifest is not None:
        if manifest.get("source_root") != str(job.data_dir.resolve()):
            reason = f"they were made from {manifest.get('source_root')}"
        elif manifest.get("data_config_hash") != data_config_hash(data_config):
            reason = f"they were made with another data config ({manifest.get('data_config')})"
        elif bins_dtype(manifest) != job.dtype:
            reason = f"they are {bins_dtype(manifest)} bins, not {job.dtype}"
    if reason:
        print(f"removing the bins in {bins_dir}: {reason}")
        for path in bins_dir.iterdir():
            if path.name == MANIFEST_NAME or path.name.endswith((".bin", ".partial")):
                path.unlink()
    report = run_preprocess(job.data_dir, bins_dir, labels_path, data_config, label_file=request.label_file,
                            class_list=request.class_list, devkit=request.devkit, workers=request.workers,
                            skip_bad=request.skip_bad, progress=request.progress, remove_extra_bins=True,
                            run_args={"job": JOB_NAME, "data_dir": str(job.data_dir), "model": job.spec.name},
                            dtype=job.dtype, discovery=job.discovery)
    print(f"{report.summary()}; {job.dtype} bins")


def export_form(pth_path: Path, checkpoint_sha: str, onnx_path: Path, performer: str,
                input_dtype: str = "float32", spec: Any = None) -> None:
    """Export ``performer`` unless ``onnx_path`` records this checkpoint, variant, form, input dtype, data config
    and soft splits as convolutions (an export from before them is made again)."""
    from t2t_vit.config import data_config_hash
    from t2t_vit.model.export import DEFAULT_OPSET, export_checkpoint, read_metadata
    from t2t_vit.model.variants import DEFAULT, DEFAULT_SPLITS

    spec = spec or DEFAULT
    performer = spec.form(performer)
    expected = {"checkpoint_sha256": checkpoint_sha, "model": spec.name, "performer": performer,
                "opset": str(DEFAULT_OPSET), "data_config_hash": data_config_hash(spec.data_config()),
                "input_dtype": input_dtype, "soft_splits": DEFAULT_SPLITS}
    if onnx_path.is_file():
        try:
            metadata = read_metadata(onnx_path)
        except ToolkitError as error:
            reason = str(error)
        else:
            metadata.setdefault("input_dtype", "float32")  # exports from before the uint8 input took float32
            metadata.setdefault("model", DEFAULT.name)  # and from before the variants, T2T-ViT-14
            metadata.setdefault("soft_splits", "unfold")  # and from before the splits were convolutions
            changed = [name for name in expected if metadata.get(name) != expected[name]]
            reason = ("it was made from another checkpoint (or by a version that did not record one)"
                      if "checkpoint_sha256" in changed else f"its {', '.join(changed)} differ" if changed else "")
        if not reason:
            print(f"reusing {onnx_path}: made from this checkpoint (sha256 {checkpoint_sha[:12]}...)")
            return
        print(f"exporting {onnx_path} again: {reason}")
    report, weights_key = export_checkpoint(pth_path, onnx_path, performer, input_dtype=input_dtype,
                                            model_name=spec.name)
    print(f"wrote {onnx_path}: {spec.name}, {form_phrase(report.performer)}, input {input_dtype}, weights "
          f"{weights_key or 'bare state dict'}, "
          f"{report.verification}")


def write_keep_dtype_cfg(sum_onnx: Path, cfg_path: Path) -> None:
    """keep_dtype.cfg from the sum export, made anew every run (it takes about a second)."""
    from t2t_vit.ascend.keep_dtype import describe, keep_dtype_nodes, write_keep_dtype

    subgraphs = keep_dtype_nodes(sum_onnx)
    write_keep_dtype(cfg_path, subgraphs)
    print(f"wrote {cfg_path}: {describe(subgraphs)}")


def export_all(job, digest: Digests) -> None:
    """The exports the job needs (each reused when made from this checkpoint) and keep_dtype.cfg (made anew)."""
    paths, spec, pth_path = job.paths, job.spec, job.pth_path
    checkpoint_sha = digest(pth_path)
    export_form(pth_path, checkpoint_sha, paths.sum_onnx, NPU_PERFORMER, spec=spec)
    write_keep_dtype_cfg(paths.sum_onnx, paths.keep_dtype_cfg)
    if paths.cpu_onnx != paths.sum_onnx:
        export_form(pth_path, checkpoint_sha, paths.cpu_onnx, CPU_PERFORMER, job.dtype, spec)
    if job.request.emulate_npu and paths.emulation_onnx not in (paths.sum_onnx, paths.cpu_onnx):
        export_form(pth_path, checkpoint_sha, paths.emulation_onnx, NPU_PERFORMER, job.dtype, spec)


