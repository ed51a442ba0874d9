"""Checks on the runner's inputs against the model, before the first output is written: bins of the dtype and
image size the model (an ONNX, or an .om by its build record) takes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from t2t_vit.runtime.batching import RunnerError, list_input_files


def _looks_like_float_images(path: Path) -> bool:
    """Whether a .bin holds normalised float32 pixels (finite, small, rarely near 0), which uint8 pixels read as
    float32 almost never are (their high bytes make huge, tiny or non-finite values)."""
    values = np.fromfile(path, dtype="<f4")
    if values.size == 0 or not np.isfinite(values).all():
        return False
    magnitude = np.abs(values)
    return bool(magnitude.max() <= 100 and (magnitude >= 1e-4).mean() >= 0.9)


def model_input_size(proto) -> int | None:
    """The image side an ONNX model takes: its recorded data config's, else its input's static shape (NCHW float,
    NHWC uint8); None when neither says."""
    import json

    from t2t_vit.model.export import input_dtype_of, metadata_of

    metadata = metadata_of(proto)
    if "data_config" in metadata:
        return int(json.loads(metadata["data_config"])["input_size"][-1])
    dims = [dim.dim_value for dim in proto.graph.input[0].type.tensor_type.shape.dim] if proto.graph.input else []
    if len(dims) != 4:
        return None
    side = dims[1] if input_dtype_of(proto) == "uint8" else dims[3]
    return side or None


def input_size_advice(folder, bins_size: int, model_path, model_size: int, model_name: str | None = None) -> str:
    """One line for bins of one image size given to a model of another."""
    return (f"the bins in {folder} are {bins_size}x{bins_size} images (preprocessed with --img-size {bins_size}); "
            f"{model_path}{f' ({model_name})' if model_name else ''} takes {model_size}x{model_size}: preprocess "
            f"with T2T_ViT_preprocess.py --img-size {model_size}")


def check_inputs_match(model_path: str, files: Sequence[Path]) -> None:
    """Refuse, before anything is written, an ONNX model whose input dtype or data config the inputs do not fit.

    The bins' manifest says their dtype and data config; without one, a float32 .bin given to a uint8 model
    (one float32 image has exactly the bytes of four uint8 images) is recognised by its content, and a .npy
    by its header.
    """
    if not str(model_path).endswith(".onnx"):
        return
    from t2t_vit.model.export import input_dtype_of, load_onnx, metadata_of
    from t2t_vit.data.bins import bins_dtype, bins_dtype_advice, manifest_beside

    proto = load_onnx(model_path, "--model")  # also refuses a file that is not ONNX
    metadata = metadata_of(proto)
    if not files or len(proto.graph.input) != 1:
        return
    model_dtype = input_dtype_of(proto)
    if model_dtype is None:
        return
    tensor_type = proto.graph.input[0].type.tensor_type
    manifest = manifest_beside(files)
    folder = files[0].parent
    if manifest is not None:
        if bins_dtype(manifest) != model_dtype:
            raise RunnerError(bins_dtype_advice(bins_dtype(manifest), model_dtype, folder, model_path))
        bins_size = (manifest.get("data_config") or {}).get("input_size")
        model_size = model_input_size(proto)
        if bins_size and model_size and int(bins_size[-1]) != model_size:
            raise RunnerError(input_size_advice(folder, int(bins_size[-1]), model_path, model_size,
                                                metadata.get("model")))
        bins_hash, model_hash = manifest.get("data_config_hash"), metadata.get("data_config_hash")
        if model_hash and bins_hash and model_hash != bins_hash:
            raise RunnerError(f"the inputs in {folder} were made with data config {manifest.get('data_config')}, "
                              f"the model was exported for another one (hash {model_hash} != {bins_hash}); "
                              f"preprocess again with the model's config")
        return
    first = files[0]
    if first.suffix.lower() == ".npy":
        try:
            found = np.load(first, mmap_mode="r", allow_pickle=False).dtype
        except (OSError, ValueError) as error:
            raise RunnerError(f"input {first} is not a readable .npy file ({error})") from None
        if found != np.dtype(model_dtype):
            raise RunnerError(f"input {first} holds {found}, {model_path} takes {model_dtype}")
        return
    dims = [dim.dim_value for dim in tensor_type.shape.dim[1:]]
    if not dims or not all(dims):
        return
    elements = int(np.prod(dims))  # of one sample: its bytes as uint8, a quarter of its bytes as float32
    size = first.stat().st_size
    if model_dtype == "float32" and size == elements:
        raise RunnerError(bins_dtype_advice("uint8", model_dtype, folder, model_path))
    if model_dtype == "uint8" and size == 4 * elements and _looks_like_float_images(first):
        raise RunnerError(bins_dtype_advice("float32", model_dtype, folder, model_path)
                          + f" ({first} holds normalised float32 values)")


def check_om_inputs(om_path: str, inputs: Sequence[str] | None, dym_batch: int = 0) -> None:
    """Refuse, before ais_bench starts, what the .om's build record (``T2T_ViT_atc.sh``) says it does not take: a
    dynamic-batch .om (its ``dynamic_batch_sizes``) run without ``--dymBatch`` or with a batch that is not one of
    its gears; bins of a dtype it does not take (an .om built with --aipp takes uint8 bins; without, float32), or
    images of another size than the one it was built for (the record's ``input_shape``, ``3,S,S``). Without a
    record nothing is checked."""
    from t2t_vit.ascend.om_record import read_record

    record = read_record(om_path)
    if record is None:
        return
    gears = record.dynamic_batch_sizes
    if gears:
        listed = ",".join(map(str, gears))
        if not dym_batch:
            raise RunnerError(f"{om_path} is a dynamic-batch model (gears {listed}): give --dymBatch N, N one of them")
        if dym_batch not in gears:
            raise RunnerError(f"--dymBatch {dym_batch} is not a gear of {om_path} (built for {listed}): give one of "
                              f"them, or rebuild with T2T_ViT_atc.sh --dynamic-batch --batch-sizes including "
                              f"{dym_batch}")
    if not inputs:
        return
    from t2t_vit.data.bins import bins_dtype, bins_dtype_advice, manifest_beside

    files = list_input_files(inputs)
    manifest = manifest_beside(files)
    if manifest is None:
        return
    om_dtype = record.input_dtype
    if bins_dtype(manifest) != om_dtype:
        raise RunnerError(bins_dtype_advice(bins_dtype(manifest), om_dtype, files[0].parent, om_path))
    bins_size = (manifest.get("data_config") or {}).get("input_size")
    om_size = record.input_side
    if bins_size and om_size and int(bins_size[-1]) != om_size:
        raise RunnerError(input_size_advice(files[0].parent, int(bins_size[-1]), om_path, om_size))
