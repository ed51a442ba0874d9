"""ONNX export of a T2T-ViT and its verification against PyTorch.

The exported file has input ``image`` float32 (N, 3, S, S), S the variant's input size, and output ``class``
float32 (N, 1000), N dynamic, and carries its provenance (the variant: ``model``, ``tokens_type``, ``embed_dim``,
``depth``, ``img_size``; the attention form, data config, checkpoint, versions) as ONNX metadata properties under
``t2t_vit.*``. It is written atomically: the file appears under its final
name only after the checker passed and onnxruntime reproduced PyTorch within the tolerance.

The uint8 export (``input_dtype="uint8"``) takes ``image`` as uint8 (N, H, W, 3), the bins of
``T2T_ViT_preprocess.py --dtype uint8``, and normalises inside, in timm's order: five nodes named
``/normalise_input/...`` (Transpose to NCHW, Cast to float32, Div 255, Sub mean, Div std) feed the
float graph, whose nodes keep their names, so one keep_dtype.cfg fits both exports.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from t2t_vit import ToolkitError, __version__
from t2t_vit.config import DEFAULT_IMG_SIZE, data_config_hash
from t2t_vit.data.bins import BIN_DTYPES, BIN_LAYOUTS
from t2t_vit.files import atomic_output
from t2t_vit.model.variants import DEFAULT_SPLITS, SPLIT_FORMS
from t2t_vit.version_bridge import export_onnx_torchscript, installed, onnxruntime_session

if TYPE_CHECKING:  # torch is imported where it is used: read_metadata() serves the runner without it
    import torch

    from t2t_vit.model.network import T2TViT

log = logging.getLogger(__name__)

INPUT_NAME = "image"
OUTPUT_NAME = "class"
DEFAULT_OPSET = 11
MIN_OPSET = 11  # nn.Unfold (Im2Col) exports from opset 11 on
MAX_OPSET = 18  # the newest ATC (CANN 7.0) accepts up to 18
EINSUM_MIN_OPSET = 12
# PyTorch and onnxruntime sum in different orders; on the published weights (logits up to ~20) fp32
# reordering moves logits by a few 1e-6. 1e-4 leaves room for that and still catches any real error.
DEFAULT_TOLERANCE = 1e-4
VERIFY_BATCH_SIZES = (1, 3)
METADATA_PREFIX = "t2t_vit."
INPUT_DTYPES, INPUT_LAYOUTS = BIN_DTYPES, BIN_LAYOUTS  # an export takes what the bins of that dtype hold
NORMALISE_PREFIX = "/normalise_input/"  # the uint8 export's own nodes (the NPU emulation treats them as AIPP)
NORMALISED_NAME = "image_normalised"  # their output, the float graph's input
NOT_VERIFIED = "onnxruntime is not installed (pip install onnxruntime to verify exports)"


class ExportError(ToolkitError):
    """The export failed or produced a file that does not reproduce the PyTorch model."""


class ModelFileError(ToolkitError):
    """A file given as an ONNX model is missing or is not one."""


@dataclass
class ExportReport:
    """What an export produced, as a flat record for printing and JSON."""

    onnx_path: str
    performer: str
    opset: int
    max_abs_diff: float | None  # None: not verified (onnxruntime is not installed)
    tolerance: float
    verified_batch_sizes: list[int]
    file_bytes: int
    metadata: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def verification(self) -> str:
        """How the file was checked against PyTorch, in one phrase."""
        if self.max_abs_diff is None:
            return f"not verified against PyTorch: {NOT_VERIFIED}"
        return (f"max |diff| to PyTorch {self.max_abs_diff:.3g} (tolerance {self.tolerance:g}, "
                f"batches {self.verified_batch_sizes})")


def check_input_dtype(input_dtype: str) -> None:
    if input_dtype not in INPUT_DTYPES:
        raise ExportError(f"--input-dtype {input_dtype} is not one of {', '.join(INPUT_DTYPES)}")


def input_dtype_of(proto) -> str | None:
    """The dtype of a loaded ONNX model's first input as the bins name it (float32, uint8), or None for another."""
    from onnx import TensorProto

    if not proto.graph.input:
        return None
    elem_type = proto.graph.input[0].type.tensor_type.elem_type
    return {TensorProto.FLOAT: "float32", TensorProto.UINT8: "uint8"}.get(elem_type)


def check_opset(opset: int, performer: str) -> None:
    """Refuse opsets the exporter or ATC cannot take, and Einsum below opset 12."""
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ExportError(f"opset {opset} is out of range: use {MIN_OPSET}..{MAX_OPSET} "
                          f"(ATC in CANN 5.0/6.0 accepts up to 13; {DEFAULT_OPSET} is the safe default)")
    if performer == "einsum" and opset < EINSUM_MIN_OPSET:
        raise ExportError(f"the einsum performer needs ONNX Einsum, which exists from opset {EINSUM_MIN_OPSET}; "
                          f"use --opset {EINSUM_MIN_OPSET} or --performer sum / matmul (no Einsum)")


def export_onnx(model: T2TViT, onnx_path: str | os.PathLike, opset: int = DEFAULT_OPSET,
                tolerance: float = DEFAULT_TOLERANCE, verify_batch_sizes: Sequence[int] | None = None,
                data_config: dict[str, Any] | None = None, extra_metadata: dict[str, str] | None = None,
                seed: int = 0, input_dtype: str = "float32", splits: str = DEFAULT_SPLITS) -> ExportReport:
    """Export ``model`` to ``onnx_path``, check and verify it, then move it into place.

    Args:
        model: the model in eval mode, weights loaded.
        onnx_path: the final file; it is only created once everything passed.
        opset: ONNX opset for the TorchScript exporter.
        tolerance: largest max-abs difference allowed between onnxruntime and PyTorch logits.
        verify_batch_sizes: random batches of these sizes are run through both (default: :data:`VERIFY_BATCH_SIZES`,
            read at the call: the aarch64 tests, emulated, verify at batch 1 only).
        data_config: the preprocessing config, recorded in the file's metadata.
        extra_metadata: more ``t2t_vit.*`` metadata (checkpoint path, weights used).
        seed: seed of the random verification batches.
        input_dtype: ``float32`` (normalised NCHW input) or ``uint8`` (the cropped NHWC image, normalised inside).
        splits: how the tokens-to-token module's soft splits are written: ``conv`` (one-hot grouped convolutions,
            the last split and ``project`` as one convolution) or ``unfold`` (the exporter's Gather-built im2col,
            as exports were before; kept for benchmarks). Verification is always against the unfolding model.
    """
    performer = model.performer
    verify_batch_sizes = VERIFY_BATCH_SIZES if verify_batch_sizes is None else verify_batch_sizes
    check_opset(opset, performer)
    check_input_dtype(input_dtype)
    onnx_path = _check_output(Path(onnx_path), splits)
    data_config = dict(data_config) if data_config is not None else None
    if input_dtype == "uint8" and data_config is None:
        raise ExportError("the uint8 export normalises inside: it needs the data config (mean, std, input size)")
    img_size = getattr(model, "img_size", DEFAULT_IMG_SIZE)
    input_size = tuple((data_config or {}).get("input_size", (3, img_size, img_size)))
    if tuple(input_size[1:]) != (img_size, img_size):
        raise ExportError(f"the data config's input size {input_size[1]}x{input_size[2]} is not the model's "
                          f"{img_size}x{img_size}")
    metadata = _metadata(performer, opset, data_config,
                         {**_variant_record(model), "input_dtype": input_dtype, "input_layout": INPUT_LAYOUTS[input_dtype],
                          "soft_splits": splits, "params": str(sum(p.numel() for p in model.parameters())),
                          **(extra_metadata or {})})

    model = model.eval()
    with atomic_output(onnx_path) as temp_path:
        _export(model, temp_path, opset, input_size, splits)
        _finish(temp_path, metadata, performer, data_config if input_dtype == "uint8" else None)
        max_abs_diff = None
        if installed("onnxruntime"):  # optional on an Ascend host: the checker and interface checks still ran
            max_abs_diff = verify_onnx(temp_path, model, verify_batch_sizes, input_size, seed,
                                       data_config if input_dtype == "uint8" else None)
            log.info("onnxruntime vs PyTorch, batches %s: max abs diff %.3g (tolerance %.3g)",
                     list(verify_batch_sizes), max_abs_diff, tolerance)
            if not max_abs_diff <= tolerance:
                raise ExportError(f"onnxruntime output differs from PyTorch by {max_abs_diff:.3g}, above the "
                                  f"tolerance {tolerance:.3g}: the export is wrong, nothing was written")
        else:
            log.warning("%s: not verified against PyTorch: %s", onnx_path, NOT_VERIFIED)
    return ExportReport(onnx_path=str(onnx_path), performer=performer, opset=opset, max_abs_diff=max_abs_diff,
                        tolerance=tolerance,
                        verified_batch_sizes=list(verify_batch_sizes) if max_abs_diff is not None else [],
                        file_bytes=onnx_path.stat().st_size, metadata=metadata)


def _check_output(onnx_path: Path, splits: str) -> Path:
    if splits not in SPLIT_FORMS:
        raise ExportError(f"soft splits must be one of {SPLIT_FORMS}, got {splits!r}")
    if onnx_path.is_dir():
        raise ExportError(f"--onnx-path {onnx_path} is a directory; give a file name such as {onnx_path}/t2t_vit.onnx")
    return onnx_path


def export_checkpoint(pth_path: str | os.PathLike, onnx_path: str | os.PathLike, performer: str,
                      weights: str = "auto", opset: int = DEFAULT_OPSET, tolerance: float = DEFAULT_TOLERANCE,
                      data_config: dict[str, Any] | None = None,
                      input_dtype: str = "float32", model_name: str | None = None) -> tuple[ExportReport, str | None]:
    """Load a checkpoint into the variant its shapes are (``model_name`` confirms it) and export it; the file's
    metadata records the variant and the checkpoint's SHA-256. A transformer-token variant is exported in its one
    form, softmax, whatever ``performer`` asks.

    Returns the report and the weights key used (None for a bare state dict).
    """
    from t2t_vit.files import check_checkpoint_file, check_output_file, sha256_file

    check_opset(opset, performer)  # before the slow part (torch)
    check_input_dtype(input_dtype)
    check_checkpoint_file(pth_path, "--pth-path")
    check_output_file(_check_output(Path(onnx_path), DEFAULT_SPLITS), "--onnx-path")
    from t2t_vit.model.checkpoint import load_model

    model, spec, info = load_model(pth_path, performer, weights, model_name)
    report = export_onnx(model, onnx_path, opset=opset, tolerance=tolerance,
                         data_config=data_config or spec.data_config(),
                         extra_metadata={"checkpoint": str(pth_path), "checkpoint_sha256": sha256_file(pth_path),
                                         "weights": info.weights_key or "bare"},
                         input_dtype=input_dtype)
    return report, info.weights_key


def _variant_record(model) -> dict[str, Any]:
    from t2t_vit.model.variants import BY_NAME

    spec = BY_NAME.get(getattr(model, "variant_name", ""))
    return spec.record() if spec is not None else {}


def _metadata(performer: str, opset: int, data_config: dict[str, Any] | None,
              extra: dict[str, str] | None) -> dict[str, str]:
    import onnx
    import torch

    metadata = {
        "performer": performer,
        "opset": str(opset),
        "toolkit_version": __version__,
        "torch_version": torch.__version__,
        "onnx_version": onnx.__version__,
    }
    if data_config is not None:
        metadata["data_config"] = json.dumps(data_config)
        metadata["data_config_hash"] = data_config_hash(data_config)
    metadata.update(extra or {})
    return {METADATA_PREFIX + key: str(value) for key, value in metadata.items()}


def _export(model: T2TViT, path: Path, opset: int, input_size: tuple[int, ...], splits: str) -> None:
    import torch

    from t2t_vit.model.network import export_splits

    dummy = torch.zeros((1, *input_size), dtype=torch.float32)
    try:
        with torch.no_grad(), warnings.catch_warnings(), export_splits(model, splits):
            # The TorchScript exporter is chosen on purpose: its opset-11 graphs are what ATC accepts.
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            export_onnx_torchscript(
                model, (dummy,), str(path), opset_version=opset, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                do_constant_folding=True)
    except Exception as error:  # noqa: BLE001 - the exporter raises many kinds; all mean the same to a user
        raise ExportError(f"torch.onnx.export failed at opset {opset}: {type(error).__name__}: {error}") from error


def _finish(path: Path, metadata: dict[str, str], performer: str,
            normalise_config: dict[str, Any] | None = None) -> None:
    """Record the metadata, put the normalisation in front for the uint8 export (``normalise_config``), run the ONNX
    checker, and check the interface the Ascend flow relies on."""
    import onnx

    proto = onnx.load(str(path))
    if normalise_config is not None:
        add_uint8_input(proto, normalise_config)
    del proto.metadata_props[:]
    for key, value in sorted(metadata.items()):
        proto.metadata_props.add(key=key, value=value)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as error:
        raise ExportError(f"the exported graph fails onnx.checker: {error}") from error
    graph = proto.graph
    if [value.name for value in graph.input] != [INPUT_NAME] or [value.name for value in graph.output] != [OUTPUT_NAME]:
        raise ExportError(f"exported interface is {[v.name for v in graph.input]} -> {[v.name for v in graph.output]}, "
                          f"expected ['{INPUT_NAME}'] -> ['{OUTPUT_NAME}']")
    einsum_nodes = [node.name for node in graph.node if node.op_type == "Einsum"]
    if performer != "einsum" and einsum_nodes:
        raise ExportError(f"the {performer} export contains Einsum nodes {einsum_nodes[:3]}")
    onnx.save(proto, str(path))


def add_uint8_input(proto, data_config: dict[str, Any]) -> None:
    """Make ``proto`` (a float32-input export, changed in place) take uint8 (N, H, W, 3) images and normalise them
    as timm's eval transform does after the crop: to NCHW, to float32, / 255, - mean, / std (all in float32)."""
    from onnx import TensorProto, helper, numpy_helper

    graph = proto.graph
    (old_input,) = graph.input
    if old_input.type.tensor_type.elem_type != TensorProto.FLOAT:
        raise ExportError(f"{old_input.name} is not a float32 input: the graph already takes another dtype")
    _, height, width = (int(v) for v in data_config["input_size"])
    batch = old_input.type.tensor_type.shape.dim[0]
    batch_dim = batch.dim_param or batch.dim_value or "batch"
    for node in graph.node:
        for index, name in enumerate(node.input):
            if name == old_input.name:
                node.input[index] = NORMALISED_NAME
    constants = {"255": np.array(255, dtype=np.float32),
                 "mean": np.asarray(data_config["mean"], dtype=np.float32).reshape(1, 3, 1, 1),
                 "std": np.asarray(data_config["std"], dtype=np.float32).reshape(1, 3, 1, 1)}
    graph.initializer.extend(numpy_helper.from_array(value, f"{NORMALISE_PREFIX}{key}")
                             for key, value in constants.items())
    steps = [("Transpose", [], {"perm": [0, 3, 1, 2]}), ("Cast", [], {"to": TensorProto.FLOAT}),
             ("Div", [f"{NORMALISE_PREFIX}255"], {}), ("Sub", [f"{NORMALISE_PREFIX}mean"], {}),
             ("Div", [f"{NORMALISE_PREFIX}std"], {})]
    nodes, source = [], INPUT_NAME
    for position, (op_type, operands, attributes) in enumerate(steps):
        target = NORMALISED_NAME if position == len(steps) - 1 else f"{NORMALISE_PREFIX}{op_type}_{position}_output"
        nodes.append(helper.make_node(op_type, [source, *operands], [target],
                                      name=f"{NORMALISE_PREFIX}{op_type}_{position}", **attributes))
        source = target
    new_nodes = nodes + list(graph.node)
    del graph.node[:]
    graph.node.extend(new_nodes)
    del graph.input[:]
    graph.input.append(helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, [batch_dim, height, width, 3]))


def verify_onnx(onnx_path: str | os.PathLike, model: torch.nn.Module, batch_sizes: Sequence[int],
                input_size: tuple[int, ...] = (3, DEFAULT_IMG_SIZE, DEFAULT_IMG_SIZE), seed: int = 0,
                uint8_config: dict[str, Any] | None = None) -> float:
    """Largest |onnxruntime - PyTorch| over random batches of each size in ``batch_sizes``.

    With ``uint8_config`` (the uint8 export): random uint8 images (N, H, W, 3) go to the ONNX file, and the same
    images normalised in PyTorch as timm does (ToTensor's /255, then Normalize) go to the model.
    """
    import torch

    session = onnxruntime_session(onnx_path, "verifying an export")
    generator = torch.Generator().manual_seed(seed)
    worst = 0.0
    for batch_size in batch_sizes:
        if uint8_config is None:
            images = feed = torch.randn((batch_size, *input_size), generator=generator)
        else:
            _, height, width = input_size
            feed = torch.randint(0, 256, (batch_size, height, width, 3), generator=generator, dtype=torch.uint8)
            mean = torch.tensor(uint8_config["mean"], dtype=torch.float32).view(1, 3, 1, 1)
            std = torch.tensor(uint8_config["std"], dtype=torch.float32).view(1, 3, 1, 1)
            images = (feed.permute(0, 3, 1, 2).float().div(255) - mean) / std
        with torch.no_grad():
            expected = model(images).numpy()
        (actual,) = session.run([OUTPUT_NAME], {INPUT_NAME: feed.numpy()})
        if actual.shape != expected.shape:
            raise ExportError(f"onnxruntime gave shape {actual.shape} for batch {batch_size}, expected {expected.shape}")
        worst = max(worst, float(np.max(np.abs(actual - expected))))
    return worst


def load_onnx(onnx_path: str | os.PathLike, what: str = "model"):
    """Parse an ONNX file (without external data), turning every failure into one line that names the file."""
    import onnx

    try:
        return onnx.load(str(onnx_path), load_external_data=False)
    except FileNotFoundError:
        raise ModelFileError(f"{what} {onnx_path} does not exist") from None
    except IsADirectoryError:
        raise ModelFileError(f"{what} {onnx_path} is a directory, not an ONNX file") from None
    except Exception as error:  # noqa: BLE001 - protobuf raises DecodeError, RuntimeError, ... on other bytes
        detail = (str(error).strip().splitlines() or [""])[0][:200]
        raise ModelFileError(f"{what} {onnx_path} is not an ONNX model, or is truncated "
                             f"({type(error).__name__}{': ' + detail if detail else ''})") from None


def read_metadata(onnx_path: str | os.PathLike) -> dict[str, str]:
    """The ``t2t_vit.*`` metadata of an exported file, prefix removed (empty for other ONNX files)."""
    return metadata_of(load_onnx(onnx_path))


def metadata_of(proto) -> dict[str, str]:
    """The ``t2t_vit.*`` metadata of a loaded ONNX model, prefix removed."""
    return {prop.key[len(METADATA_PREFIX):]: prop.value for prop in proto.metadata_props
            if prop.key.startswith(METADATA_PREFIX)}
