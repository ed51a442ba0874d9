"""Why each keep_dtype node is there: a per-node diagnosis of the NPU's fp16 on the CPU.

:func:`explain` runs the fp32 graph and its force_fp16 + keep_dtype emulation (:mod:`t2t_vit.ascend.npu_precision`)
on the same images and compares every node's output, one image at a time (an image's tensor is what one
NPU dump holds). Per node, in graph order:

- the fp32 range: max |x|, the fp16 headroom 65504 / max |x|, and among the non-zero values the share fp16
  flushes to zero (|x| < 2^-24) and the share it makes subnormal (2^-24 <= |x| < 2^-14);
- the emulated output against fp32 (accumulated error: every rounding before it), with the columns and
  definitions of the Ascend compare tools' result CSV (msprobe / msit offline compare), our own
  ``NonFinite`` (count of non-finite values) and ``OverFlow`` (YES when the emulated output holds a value
  fp16 cannot: non-finite, or beyond 65504 in fp32);
- the node's own error: its fp32 output rounded to fp16 against that output (what the node adds when its
  inputs are exact), so a row says whether the node causes the error or inherits it.

Each metric is computed per image and the row keeps the worst image (the lowest cosine similarity and fp16
headroom, the largest of the others; StandardDeviation is the first image's); ``NonFinite`` adds up over
images. The definitions (``my`` = emulated,
``golden`` = fp32, both as float64, eps = float32's machine epsilon):

- CosineSimilarity = my . golden / (|my| |golden|) (NaN when either norm is at most eps);
- MaxAbsoluteError = max |my - golden|; MeanAbsoluteError = mean |my - golden|;
  RootMeanSquareError = sqrt(mean (my - golden)^2);
- relative error r_i = |my_i / golden_i - 1| where |golden_i| > eps, else 0: AccumulatedRelativeError =
  sum r_i, MaxRelativeError = max r_i, MeanRelativeError = mean r_i;
- RelativeEuclideanDistance = sqrt(sum (my - golden)^2) / sqrt(sum golden^2) (0 when |golden| <= eps);
- KullbackLeiblerDivergence: each tensor scaled to [0, 1] by its min and max, floored at eps, divided by
  its sum, then sum P log(P / Q), P from my, Q from golden;
- StandardDeviation = "(mean;std),(mean;std)" of my, then golden, each to 3 decimals.

:func:`nan_origin` names the first node, in graph order, whose emulated output is non-finite while all its
inputs are finite, and says which input fp16 flushed or overflowed. :func:`minimize_nodes` takes a keep set
down to single nodes and proves the result 1-minimal.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from t2t_vit import ToolkitError

log = logging.getLogger(__name__)

FP16_MAX = 65504.0
FLUSH_BELOW = 2.0 ** -24  # |x| below this: fp16 flushes a non-zero value to zero (or to its smallest subnormal)
NORMAL_BELOW = 2.0 ** -14  # |x| below this: fp16 holds the value as a subnormal
EPSILON = float(np.finfo(np.float32).eps)
COMPARE_COLUMNS = ("OverFlow", "CosineSimilarity", "MaxAbsoluteError", "AccumulatedRelativeError",
                   "RelativeEuclideanDistance", "KullbackLeiblerDivergence", "StandardDeviation", "MeanAbsoluteError",
                   "RootMeanSquareError", "MaxRelativeError", "MeanRelativeError", "NonFinite")
REPORT_COLUMNS = ("Index", "NodeName", "OpType", "Shape", "Kept", "MaxAbsFp32", "Fp16Headroom", "FlushToZeroShare",
                  "SubnormalShare", *COMPARE_COLUMNS, "OwnMaxAbsoluteError", "OwnRelativeEuclideanDistance",
                  "OwnNonFinite", "Cause")
_LOWER_IS_WORSE = {"CosineSimilarity", "Fp16Headroom"}


class DiagnosisError(ToolkitError):
    """The diagnosis cannot run on this model, these images or this keep set."""


# ------------------------------------------------------------------------------------------------ metrics

def compare(my: np.ndarray, golden: np.ndarray) -> dict[str, Any]:
    """The compare tools' metrics of one tensor against its golden (fp32) value (see the module docstring)."""
    my, golden = np.asarray(my, np.float64).ravel(), np.asarray(golden, np.float64).ravel()
    diff = my - golden
    with np.errstate(all="ignore"):
        norms = np.linalg.norm(my), np.linalg.norm(golden)
        cosine = float(my @ golden / (norms[0] * norms[1])) if min(norms) > EPSILON else float("nan")
        relative = np.where(np.abs(golden) > EPSILON, np.abs(my / np.where(golden == 0, 1, golden) - 1), 0.0)
        red = float(np.sqrt(np.sum(diff ** 2)) / norms[1]) if norms[1] > EPSILON else 0.0
        nonfinite = int(np.size(my) - np.count_nonzero(np.isfinite(my)))
        return {"OverFlow": "YES" if nonfinite or np.any(np.abs(golden) > FP16_MAX) else "NO",
                "CosineSimilarity": cosine, "MaxAbsoluteError": float(np.max(np.abs(diff))) if diff.size else 0.0,
                "AccumulatedRelativeError": float(np.sum(relative)), "RelativeEuclideanDistance": red,
                "KullbackLeiblerDivergence": kl_divergence(my, golden),
                "StandardDeviation": f"({np.mean(my):.3f};{np.std(my):.3f}),"
                                     f"({np.mean(golden):.3f};{np.std(golden):.3f})",
                "MeanAbsoluteError": float(np.mean(np.abs(diff))) if diff.size else 0.0,
                "RootMeanSquareError": float(np.sqrt(np.mean(diff ** 2))) if diff.size else 0.0,
                "MaxRelativeError": float(np.max(relative)) if relative.size else 0.0,
                "MeanRelativeError": float(np.mean(relative)) if relative.size else 0.0, "NonFinite": nonfinite}


def kl_divergence(my: np.ndarray, golden: np.ndarray) -> float:
    """sum P log(P / Q) of the two tensors scaled to [0, 1] (floored at eps) and normalised to sum 1."""
    def distribution(values: np.ndarray) -> np.ndarray:
        low, high = np.min(values), np.max(values)
        scaled = (values - low) / (high - low) if high != low else values
        scaled = np.maximum(scaled, EPSILON)
        return scaled / np.sum(scaled)

    if my.size == 0 or not (np.isfinite(my).all() and np.isfinite(golden).all()):
        return float("nan")
    p, q = distribution(my), distribution(golden)
    return float(np.sum(p * np.log(p / q)))


def fp32_range(golden: np.ndarray) -> dict[str, float]:
    """max |x|, the fp16 headroom, and the shares of the non-zero values fp16 flushes or makes subnormal."""
    magnitude = np.abs(np.asarray(golden, np.float64)).ravel()
    nonzero = magnitude[magnitude > 0]
    peak = float(magnitude.max()) if magnitude.size else 0.0
    return {"MaxAbsFp32": peak, "Fp16Headroom": FP16_MAX / peak if peak else float("inf"),
            "FlushToZeroShare": float(np.mean(nonzero < FLUSH_BELOW)) if nonzero.size else 0.0,
            "SubnormalShare": float(np.mean((nonzero >= FLUSH_BELOW) & (nonzero < NORMAL_BELOW)))
            if nonzero.size else 0.0}


def worst(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One row from per-image rows: the worst value of each metric (NaN counts as worst), non-finite counts added."""
    merged = dict(rows[0])
    for row in rows[1:]:
        for key, value in row.items():
            if key == "NonFinite" or key == "OwnNonFinite":
                merged[key] += value
            elif key == "OverFlow":
                merged[key] = "YES" if "YES" in (merged[key], value) else "NO"
            elif isinstance(value, float):
                old = merged[key]
                if np.isnan(value) or (not np.isnan(old) and ((value < old) if key in _LOWER_IS_WORSE
                                                              else (value > old))):
                    merged[key] = value
    return merged


# ------------------------------------------------------------------------------------------ node outputs

@dataclass
class GraphView:
    """The nodes of a graph that output floats, in graph order, with the names their outputs and inputs have in
    the fp32 graph and in its emulation."""

    model: Any
    emulated: Any
    nodes: list  # the fp32 graph's nodes that output at least one float tensor
    outputs: dict[str, list[str]]  # node name -> its float output names
    emulated_inputs: dict[str, list[str]]  # node name -> its inputs' names in the emulated graph
    kept: set[str]
    float_names: set[str]  # the float tensors of both graphs
    initializers: dict[str, np.ndarray] = field(default_factory=dict)


def graph_view(model, entries: Sequence[str]) -> GraphView:
    """The fp32 graph and its force_fp16 + keep_dtype(``entries``) emulation, matched node by node."""
    import onnx
    from onnx import TensorProto, numpy_helper

    from t2t_vit.ascend.npu_precision import emulate_force_fp16, kept_nodes

    emulated = emulate_force_fp16(model, entries)
    inferred = onnx.shape_inference.infer_shapes(model).graph
    types = {value.name: value.type.tensor_type.elem_type
             for value in [*inferred.value_info, *inferred.input, *inferred.output]}
    outputs = {node.name: [name for name in node.output if name and types.get(name) == TensorProto.FLOAT]
               for node in model.graph.node}
    nodes = [node for node in model.graph.node if outputs[node.name]]
    by_name = {node.name: node for node in emulated.graph.node}
    initializers = {init.name: numpy_helper.to_array(init) for graph in (model.graph, emulated.graph)
                    for init in graph.initializer if init.data_type == TensorProto.FLOAT}
    float_names = {name for name, elem_type in types.items() if elem_type == TensorProto.FLOAT}
    float_names |= {name for node in emulated.graph.node for name in node.output if name.endswith("_fp16")}
    return GraphView(model, emulated, nodes, outputs,
                     {node.name: list(by_name[node.name].input) for node in nodes if node.name in by_name},
                     kept_nodes(model.graph, entries), float_names, initializers)


def probe_sessions(view: GraphView, threads: int | None = None) -> tuple[Callable, Callable]:
    """Two runners, image batch -> {tensor name: value}: the fp32 graph's node outputs, and the emulation's node
    outputs and the inputs its nodes read."""
    from t2t_vit.ascend.npu_precision import with_float_outputs
    from t2t_vit.version_bridge import onnxruntime_session

    fp32_names = [name for node in view.nodes for name in view.outputs[node.name]]
    emulated_names = fp32_names + [name for inputs in view.emulated_inputs.values() for name in inputs
                                   if name in view.float_names]
    sessions = [onnxruntime_session(with_float_outputs(model, names), "the fp16 diagnosis", threads)
                for model, names in ((view.model, fp32_names), (view.emulated, emulated_names))]
    input_name = view.model.graph.input[0].name

    def runner(session) -> Callable:
        names = [output.name for output in session.get_outputs()]
        return lambda images: {**view.initializers, **dict(zip(names, session.run(None, {input_name: images})))}

    return runner(sessions[0]), runner(sessions[1])


def _flat(values: dict[str, np.ndarray], names: Sequence[str]) -> np.ndarray:
    return np.concatenate([np.asarray(values[name], np.float64).ravel() for name in names])


# ------------------------------------------------------------------------------------------------ explain

@dataclass
class Explanation:
    """What :func:`explain` found: a row per node (:data:`REPORT_COLUMNS`), and where the first NaN comes from."""

    rows: list[dict[str, Any]]
    origin: dict[str, Any] | None  # None when every emulated value stayed finite
    images: int
    kept: int


def explain(model, images: np.ndarray, entries: Sequence[str] = (), threads: int | None = None,
            on_image: Callable[[int, int], None] | None = None) -> Explanation:
    """Compare every node's emulated output with fp32 on ``images`` (one at a time); see the module docstring."""
    view = graph_view(model, entries)
    run_fp32, run_emulated = probe_sessions(view, threads)
    per_node: dict[str, list[dict[str, Any]]] = {node.name: [] for node in view.nodes}
    shapes: dict[str, str] = {}
    origin = None
    for index in range(len(images)):
        golden, emulated = run_fp32(images[index:index + 1]), run_emulated(images[index:index + 1])
        for node in view.nodes:
            names = view.outputs[node.name]
            shapes.setdefault(node.name, ";".join(str(list(np.shape(golden[name]))) for name in names))
            per_node[node.name].append(node_row(_flat(emulated, names), _flat(golden, names)))
        found = find_origin(view, emulated, golden)
        if found is not None and (origin is None or found["position"] < origin["position"]):
            origin = {**found, "image": index}
        if on_image is not None:
            on_image(index + 1, len(images))
    rows = []
    for position, node in enumerate(view.nodes):
        row = {"Index": position, "NodeName": node.name, "OpType": node.op_type, "Shape": shapes[node.name],
               "Kept": "yes" if node.name in view.kept else "no", **worst(per_node[node.name])}
        row["Cause"] = cause(row, origin is not None and origin["node"] == node.name)
        rows.append({column: row[column] for column in REPORT_COLUMNS})
    return Explanation(rows, origin, len(images), len(view.kept))


def node_row(my: np.ndarray, golden: np.ndarray) -> dict[str, Any]:
    """One image's figures for one node: fp32 range, accumulated error, own error."""
    own = golden.astype(np.float16).astype(np.float64) if golden.size else golden
    with np.errstate(all="ignore"):
        own_diff = own - golden
        golden_norm = np.linalg.norm(golden)
        own_red = float(np.sqrt(np.nansum(own_diff ** 2)) / golden_norm) if golden_norm > EPSILON else 0.0
        own_max = float(np.max(np.abs(own_diff))) if own_diff.size else 0.0
    return {**fp32_range(golden), **compare(my, golden), "OwnMaxAbsoluteError": own_max,
            "OwnRelativeEuclideanDistance": own_red, "OwnNonFinite": int(own.size - np.count_nonzero(np.isfinite(own)))}


def cause(row: dict[str, Any], is_origin: bool) -> str:
    """Whether a node makes its error or inherits it: ``NaN origin``; ``kept`` (fp32); ``overflows`` or
    ``underflows`` (fp16 cannot hold some of its fp32 output: beyond 65504, or non-zero below 2^-24); ``causes``
    (its own rounding is at least half the accumulated error); ``inherits``; ``exact`` (no error at all)."""
    if is_origin:
        return "NaN origin"
    if row["Kept"] == "yes":
        return "kept"
    if row["OwnNonFinite"]:
        return "overflows"
    if row["FlushToZeroShare"] > 0:
        return "underflows"
    accumulated = row["RelativeEuclideanDistance"]
    if row["OwnRelativeEuclideanDistance"] >= 0.5 * accumulated > 0:
        return "causes"
    return "inherits" if accumulated > 0 or np.isnan(accumulated) or row["NonFinite"] else "exact"


def find_origin(view: GraphView, emulated: dict[str, np.ndarray], golden: dict[str, np.ndarray]) -> dict | None:
    """The first node, in graph order, whose emulated output is non-finite while every input it reads is finite."""
    for position, node in enumerate(view.nodes):
        outputs = [emulated[name] for name in view.outputs[node.name]]
        if all(np.isfinite(value).all() for value in outputs):
            continue
        inputs = view.emulated_inputs.get(node.name, [])
        if not all(np.isfinite(emulated[name]).all() for name in inputs
                   if name in emulated and np.issubdtype(np.asarray(emulated[name]).dtype, np.floating)):
            continue
        culprits = [describe_input(index, original, emulated.get(name), golden.get(original))
                    for index, (name, original) in enumerate(zip(inputs, node.input))]
        return {"node": node.name, "op_type": node.op_type, "position": position,
                "kept": node.name in view.kept, "inputs": [text for text in culprits if text]}
    return None


def describe_input(index: int, name: str, emulated, golden) -> str:
    """How fp16 changed one input: non-zero values it flushed to 0, finite values it overflowed ('' for neither)."""
    if emulated is None or golden is None or not np.issubdtype(np.asarray(golden).dtype, np.floating):
        return ""
    emulated, golden = np.asarray(emulated, np.float64).ravel(), np.asarray(golden, np.float64).ravel()
    nonzero = golden != 0
    flushed = int(np.count_nonzero(nonzero & (emulated == 0)))
    overflowed = int(np.count_nonzero(np.isfinite(golden) & ~np.isfinite(emulated)))
    peak = float(np.max(np.abs(golden))) if golden.size else 0.0
    parts = []
    if flushed:
        parts.append(f"{flushed} of its {int(np.count_nonzero(nonzero))} non-zero values flushed to 0")
    if overflowed:
        parts.append(f"{overflowed} values overflowed to infinity")
    return f"input {index} ({name}, fp32 max |x| {peak:.3g}): {' and '.join(parts)}" if parts else ""


def origin_text(origin: dict[str, Any] | None) -> str:
    """The NaN's origin in one line."""
    if origin is None:
        return "no non-finite value: every emulated tensor stayed finite"
    where = "kept in fp32" if origin["kept"] else "not kept: computed in fp16"
    reads = "; ".join(origin["inputs"]) or "no input flushed or overflowed: its own fp16 arithmetic overflowed"
    return f"the first non-finite value comes from {origin['node']} ({origin['op_type']}, {where}): {reads}"


# ------------------------------------------------------------------------------------- the 1-minimal set

@dataclass
class Criterion:
    """When a keep set is good enough: no non-finite logit, top-1 agreement with fp32 of at least ``agreement``,
    and a max |logit difference| to fp32 of at most ``tolerance``."""

    tolerance: float
    agreement: float = 1.0

    def check(self, logits: np.ndarray, reference: np.ndarray) -> tuple[str, dict[str, Any]]:
        """'' when the logits pass, else the criteria they fail; and their figures."""
        finite = np.isfinite(logits).all(axis=1)
        agreement = float(np.mean(finite & (logits.argmax(axis=1) == reference.argmax(axis=1))))
        diff = float(np.max(np.abs(logits - reference))) if finite.all() else float("inf")
        stats = {"nonfinite_images": int((~finite).sum()), "top1_agreement": agreement, "max_abs_diff": diff}
        failures = []
        if not finite.all():
            failures.append(f"{stats['nonfinite_images']} of {len(finite)} images non-finite")
        if agreement < self.agreement:
            failures.append(f"top-1 agreement {100 * agreement:.1f} % < {100 * self.agreement:.1f} %")
        if finite.all() and diff > self.tolerance:
            failures.append(f"max |diff| {diff:.4g} > {self.tolerance:g}")
        return "; ".join(failures), stats


class KeepSetSearch:
    """Evaluates keep sets on fixed images: one emulation session per candidate set, all images through it."""

    def __init__(self, model, images: np.ndarray, criterion: Criterion, threads: int | None = None,
                 on_candidate: Callable[[str], None] | None = None) -> None:
        self.model, self.images, self.criterion, self.threads = model, images, criterion, threads
        self.on_candidate = on_candidate or (lambda line: None)
        self.evaluations = 0
        self.reference = self.logits(model)

    def logits(self, model) -> np.ndarray:
        from t2t_vit.version_bridge import onnxruntime_session

        session = onnxruntime_session(model, "the keep set search", self.threads)
        name = model.graph.input[0].name
        return np.concatenate([session.run(None, {name: self.images[start:start + 8]})[0]
                               for start in range(0, len(self.images), 8)])

    def evaluate(self, names: Sequence[str], note: str = "") -> tuple[str, dict[str, Any]]:
        from t2t_vit.ascend.npu_precision import emulate_force_fp16

        self.evaluations += 1
        failure, stats = self.criterion.check(self.logits(emulate_force_fp16(self.model, list(names))), self.reference)
        self.on_candidate(f"candidate {self.evaluations}: {len(names)} names{note}: "
                          f"{'fails: ' + failure if failure else 'passes'} (max |diff| {stats['max_abs_diff']:.4g}, "
                          f"top-1 agreement {100 * stats['top1_agreement']:.1f} %)")
        return failure, stats


def minimize_nodes(search: KeepSetSearch, start: Sequence[str]) -> tuple[list[str], list[dict[str, Any]]]:
    """The smallest keep set reached from ``start`` by dropping halves, then single nodes, while it passes.

    Returns the set (graph order kept) and its proof of 1-minimality: for each of its nodes, the figures with
    that node dropped alone and the criterion that then fails.
    """
    failure, _ = search.evaluate(start, " (the starting set)")
    if failure:
        raise DiagnosisError(f"the starting keep set ({len(start)} names) already fails: {failure}; raise "
                             f"--tolerance or lower --agreement")
    current = list(start)
    chunk = len(current) // 2
    while chunk >= 2:
        for begin in range(0, len(current), chunk):
            candidate = current[:begin] + current[begin + chunk:]
            if not search.evaluate(candidate, f" (dropping {len(current) - len(candidate)})")[0]:
                current = candidate
                break
        else:
            chunk //= 2
    while True:  # one node at a time, until a whole sweep drops none: that sweep is the proof
        proof = []
        for name in current:
            candidate = [other for other in current if other != name]
            failure, stats = search.evaluate(candidate, f" (dropping {name})")
            if not failure:
                current = candidate
                break
            proof.append({"dropped": name, "fails": failure, **stats})
        else:
            return current, proof


def minimize_groups(search: KeepSetSearch, subgraphs) -> tuple[list[str], list[dict[str, Any]]]:
    """The smallest union of the performers' structural groups (:func:`t2t_vit.ascend.npu_precision.performer_groups`)
    that passes, tried from the smallest up; the full set when none does. Returns it and a row per set tried."""
    import itertools

    from t2t_vit.ascend.npu_precision import keep_groups

    groups = keep_groups(search.model.graph, subgraphs)
    order = [name for subgraph in subgraphs for name in subgraph.nodes]
    combos = sorted((combo for size in range(len(groups) + 1) for combo in itertools.combinations(groups, size)),
                    key=lambda combo: sum(len(groups[group]) for group in combo))
    rows = []
    for combo in combos:
        names = [name for name in order if any(name in groups[group] for group in combo)]
        label = " + ".join(combo) or "(nothing kept)"
        failure, stats = search.evaluate(names, f" (groups: {label})")
        rows.append({"groups": label, "names": len(names), **stats, "passes": not failure})
        if not failure:
            return names, rows
    return order, rows


# ------------------------------------------------------------------------------------------------ inputs

def images_for(onnx_path, bins: Sequence) -> np.ndarray:
    """The bins as the model's input: float32 bins as they are; uint8 bins (their manifest says so) as they are for
    the uint8 export, or normalised as timm does for the float export."""
    from t2t_vit.data.dataset import normalise
    from t2t_vit.data.bins import read_bin
    from t2t_vit.model.export import input_dtype_of, load_onnx
    from t2t_vit.data.bins import bins_dtype
    from t2t_vit.data.bins import bins_dtype_advice, manifest_beside

    manifest = manifest_beside(bins) or {}
    found_dtype = bins_dtype(manifest)
    proto = load_onnx(onnx_path)
    model_dtype = input_dtype_of(proto)
    dims = [dim.dim_value for dim in proto.graph.input[0].type.tensor_type.shape.dim[1:]]
    if found_dtype == "float32" and model_dtype == "uint8":
        raise ToolkitError(bins_dtype_advice(found_dtype, model_dtype, bins[0].parent, onnx_path))
    if found_dtype == "uint8":
        channels, height, width = manifest["data_config"]["input_size"]
        pixels = np.concatenate([read_bin(path, (1, height, width, channels), "uint8") for path in bins])
        if model_dtype == "uint8":
            return pixels
        config = manifest["data_config"]
        return normalise(pixels, config["mean"], config["std"])
    try:
        return np.stack([np.fromfile(path, dtype="<f4").reshape(dims) for path in bins])
    except ValueError:
        raise ToolkitError(f"the bins in {bins[0].parent} are not float32 images of shape {dims}: preprocess them "
                           f"with T2T_ViT_preprocess.py") from None


def nan_origin(model, images: np.ndarray, entries: Sequence[str] = (), threads: int | None = None) -> dict | None:
    """Where the emulation with ``entries`` kept first turns non-finite, on the first image where it does (None when
    it stays finite on all): the cheap part of :func:`explain`."""
    view = graph_view(model, entries)
    run_fp32, run_emulated = probe_sessions(view, threads)
    for index in range(len(images)):
        found = find_origin(view, run_emulated(images[index:index + 1]), run_fp32(images[index:index + 1]))
        if found is not None:
            return {**found, "image": index}
    return None
