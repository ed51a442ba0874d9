"""Every published T2T-ViT through every stage: built, exported, preprocessed for, kept in fp32 where it must be,
and evaluated end to end, each variant read from its checkpoint (random weights, built in code)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import gen_cfg
import T2T_ViT_infer
import T2T_ViT_preprocess
import T2T_ViT_pth2onnx
from conftest import REPO_ROOT, make_val_tree, reference_transform, seeded_model
from t2t_vit.model.export import export_onnx, load_onnx, read_metadata
from t2t_vit.model.network import create_model, scaled_random_state_dict
from t2t_vit.model.variants import BY_NAME, VARIANTS

pytestmark = pytest.mark.slow

# Upstream README's parameter counts (millions); the 384 model has T2T-ViT-14's plus a longer position table.
UPSTREAM_PARAMS = {"t2t_vit_7": 4.3, "t2t_vit_10": 5.9, "t2t_vit_12": 6.9, "t2t_vit_14": 21.5, "t2t_vit_19": 39.2,
                   "t2t_vit_24": 64.1, "t2t_vit_14_384": 21.7, "t2t_vit_t_14": 21.5, "t2t_vit_t_19": 39.2,
                   "t2t_vit_t_24": 64.1}
SYNSETS = (REPO_ROOT / "t2t_vit" / "data" / "imagenet_synsets.txt").read_text().split()


def random_model(name, form="einsum", seed=0):
    spec = BY_NAME[name]
    model = seeded_model(spec.form(form), spec, seed=seed)
    model.load_state_dict(scaled_random_state_dict(model, seed=seed))
    return model


def save_checkpoint(state_dict, path, layout, name):
    if layout == "bare":
        payload = state_dict
    elif layout == "module":
        payload = {"state_dict": {f"module.{key}": value for key, value in state_dict.items()}, "epoch": 3}
    else:  # the published training checkpoint's layout
        payload = {"state_dict": state_dict, "state_dict_ema": state_dict, "epoch": 309, "arch": name,
                   "args": argparse.Namespace(model=name)}
    torch.save(payload, path)
    return path


def images_at(sample_images, size, count):
    """The first ``count`` shipped images as timm's eval transform gives them at ``size``."""
    from t2t_vit.config import resolve_data_config

    config = resolve_data_config(img_size=size)
    return np.concatenate([reference_transform(path, config) for path in sample_images[:count]])


@pytest.mark.parametrize("spec", VARIANTS, ids=[spec.name for spec in VARIANTS])
def test_every_variant_builds_with_upstreams_size_and_exports(spec, tmp_path):
    model = create_model(spec.form("sum"), spec)
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == UPSTREAM_PARAMS[spec.name]
    assert model.pos_embed.shape == (1, spec.tokens, spec.embed_dim) and len(model.blocks) == spec.depth
    model.load_state_dict(scaled_random_state_dict(model))
    report = export_onnx(model, tmp_path / "out.onnx", data_config=spec.data_config(), verify_batch_sizes=(1,))
    assert report.max_abs_diff <= 1e-4  # against PyTorch, before the file was moved into place
    proto = load_onnx(tmp_path / "out.onnx")
    dims = [dim.dim_param or dim.dim_value for dim in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, spec.img_size, spec.img_size]
    metadata = read_metadata(tmp_path / "out.onnx")
    assert {key: metadata[key] for key in ("model", "tokens_type", "img_size", "performer")} == {
        "model": spec.name, "tokens_type": spec.tokens_type, "img_size": str(spec.img_size),
        "performer": "sum" if spec.performer else "softmax"}


@pytest.mark.parametrize("name", ["t2t_vit_7", "t2t_vit_14_384"])
def test_every_performer_form_of_another_variant_matches_pytorch(name, tmp_path):
    reference = random_model(name)
    for form, opset in (("sum", 11), ("matmul", 11), ("einsum", 12)):
        model = create_model(form, name)
        model.load_state_dict(reference.state_dict())
        report = export_onnx(model, tmp_path / f"{form}.onnx", opset=opset, data_config=BY_NAME[name].data_config(),
                             verify_batch_sizes=(1, 2))
        assert report.max_abs_diff <= 1e-4 and report.performer == form


ACCEPTANCE = [("t2t_vit_7", "bare"), ("t2t_vit_19", "module"), ("t2t_vit_t_14", "training"),
              ("t2t_vit_14_384", "training")]


@pytest.mark.parametrize("name, layout", ACCEPTANCE, ids=[name for name, _ in ACCEPTANCE])
def test_pth2onnx_reads_the_variant_and_gen_cfg_keeps_fp16_right(name, layout, tmp_path, capsys, sample_images):
    """No variant named: the ONNX takes (N,3,S,S) and gives the model's logits; the keep set gen_cfg writes keeps
    fp16 (force_fp16 + keep) finite with f32's top-1."""
    from t2t_vit.ascend.fp16_diagnosis import Criterion, KeepSetSearch
    from t2t_vit.ascend.npu_precision import read_keep_list
    from t2t_vit.version_bridge import onnxruntime_session

    spec, model = BY_NAME[name], random_model(name)
    checkpoint = save_checkpoint(model.state_dict(), tmp_path / "ck.pth.tar", layout, name)
    onnx_path = tmp_path / "out.onnx"
    assert T2T_ViT_pth2onnx.main(["--pth-path", str(checkpoint), "--onnx-path", str(onnx_path)]) == 0
    assert f"model={name} input=float32 {spec.img_size}x{spec.img_size}" in capsys.readouterr().out
    images = images_at(sample_images, spec.img_size, 3)
    session = onnxruntime_session(onnx_path, "the test")  # the toolkit's session (the runner's, the export's)
    (logits,) = session.run(None, {"image": images})
    exported_form = create_model(spec.form("sum"), spec)  # what pth2onnx exports and verifies against
    exported_form.load_state_dict(model.state_dict())
    with torch.no_grad():
        expected = exported_form(torch.from_numpy(images)).numpy()
    assert np.max(np.abs(logits - expected)) <= 1e-4
    assert gen_cfg.main([str(onnx_path), str(tmp_path / "keep.cfg")]) == 0
    keep = read_keep_list(tmp_path / "keep.cfg")
    nodes = {node.name for node in load_onnx(onnx_path).graph.node}
    assert keep and set(keep) <= nodes
    search = KeepSetSearch(load_onnx(onnx_path), images[:2], Criterion(tolerance=float("inf"), agreement=1.0))
    failure, stats = search.evaluate(keep)
    assert not failure and stats["nonfinite_images"] == 0 and stats["top1_agreement"] == 1.0, stats


def test_the_transformer_tokens_keep_set_is_their_own_softmax_attention(tmp_path, capsys):
    from t2t_vit.ascend.keep_dtype import find_performer_subgraphs, keep_dtype_nodes

    export_onnx(random_model("t2t_vit_t_14", "sum"), tmp_path / "t.onnx", verify_batch_sizes=(1,))
    graph = load_onnx(tmp_path / "t.onnx").graph
    assert find_performer_subgraphs(graph) == []  # q, k, v reach a LayerNorm's Div, but there are no features
    subgraphs = keep_dtype_nodes(tmp_path / "t.onnx")
    op_of = {node.name: node.op_type for node in graph.node}
    assert [subgraph.kind for subgraph in subgraphs] == ["softmax", "softmax"]
    assert [op_of[name] for subgraph in subgraphs for name in subgraph.nodes] == ["Softmax", "Softmax"]
    assert all(op_of[subgraph.split] == "MatMul" for subgraph in subgraphs)  # the scores feed each
    softmaxes = [node.name for node in graph.node if node.op_type == "Softmax"]
    assert len(softmaxes) == 2 + 14 and [s.div for s in subgraphs] == softmaxes[:2]  # not the blocks' 14
    assert gen_cfg.main([str(tmp_path / "t.onnx"), str(tmp_path / "keep.cfg")]) == 0
    assert "2 node names, the Softmax of each of the 2 tokens-to-token softmax attentions" in capsys.readouterr().out


def test_minimize_works_on_a_transformer_token_variant(tmp_path, sample_images, capsys):
    export_onnx(random_model("t2t_vit_t_14", "sum"), tmp_path / "t.onnx", verify_batch_sizes=(1,))
    bins = tmp_path / "bins"
    bins.mkdir()
    for index, image in enumerate(images_at(sample_images, 224, 3)):
        image.astype("<f4").tofile(bins / f"img{index}.bin")
    assert gen_cfg.main([str(tmp_path / "t.onnx"), str(tmp_path / "min.cfg"), "--minimize", "--input", str(bins),
                         "--images", "3"]) == 0
    out = capsys.readouterr().out
    kept = (tmp_path / "min.cfg").read_text().split()
    assert f"1-minimal: each of the {len(kept)} nodes dropped alone fails the criterion" in out
    assert "sizes: the structural proposal 2 names" in out and len(kept) <= 2


@pytest.mark.parametrize("name, other", [("t2t_vit_t_14", "t2t_vit_14"), ("t2t_vit_14_384", "t2t_vit_14")])
def test_model_confirms_the_variant_and_refuses_another_in_one_line(name, other, tmp_path, capsys):
    checkpoint = save_checkpoint(random_model(name).state_dict(), tmp_path / "ck.pth", "bare", name)
    assert T2T_ViT_pth2onnx.main(["--pth-path", str(checkpoint), "--onnx-path", str(tmp_path / "a.onnx"),
                                  "--model", other]) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"error: checkpoint {checkpoint} is {name} (") and f"not --model {other}" in error
    assert error.count("\n") == 1 and not (tmp_path / "a.onnx").exists()
    assert T2T_ViT_pth2onnx.main(["--pth-path", str(checkpoint), "--onnx-path", str(tmp_path / "b.onnx"),
                                  "--model", name]) == 0
    assert read_metadata(tmp_path / "b.onnx")["model"] == name


@pytest.mark.parametrize("dtype", ["float32", "uint8"])
def test_preprocess_at_384_equals_timm_and_384_bins_are_refused_by_a_224_model(dtype, tmp_path, sample_images,
                                                                                exported_onnx):
    from t2t_vit.config import resolve_data_config
    from t2t_vit.data.dataset import EvalTransform

    val = make_val_tree(tmp_path / "val", sample_images[:6])
    out = tmp_path / "bins"
    assert T2T_ViT_preprocess.main(["--data-dir", str(val), "--out-dir", str(out), "--gt-path",
                                    str(tmp_path / "label.npy"), "--img-size", "384", "--dtype", dtype,
                                    "--no-progress", "--workers", "0"]) == 0
    config = resolve_data_config(img_size=384)
    assert EvalTransform(config).scale_size == (426, 426)
    for image in sample_images[:6]:
        data = (out / f"{image.stem}.bin").read_bytes()
        if dtype == "float32":
            assert data == reference_transform(image, config).astype("<f4").tobytes(), image.name
        else:
            import timm.data
            from PIL import Image

            steps = timm.data.create_transform(**config).transforms[:2]  # resize 426, centre crop 384
            with Image.open(image) as opened:
                pixels = opened.convert("RGB")
                for step in steps:
                    pixels = step(pixels)
            assert data == np.asarray(pixels, dtype=np.uint8).tobytes(), image.name
    if dtype == "float32":
        code = T2T_ViT_infer.main(["--model", str(exported_onnx["matmul"]), "--input", str(out), "--output",
                                   str(tmp_path / "result"), "--output_dirname", "bs1"])
        assert code == 1 and not (tmp_path / "result").exists()


def test_384_bins_into_a_224_model_one_line(tmp_path, sample_images, exported_onnx):
    val = make_val_tree(tmp_path / "val", sample_images[:2])
    out = tmp_path / "bins"
    T2T_ViT_preprocess.main(["--data-dir", str(val), "--out-dir", str(out), "--gt-path", str(tmp_path / "l.npy"),
                             "--img-size", "384", "--no-progress", "--workers", "0"])
    result = subprocess.run([sys.executable, str(REPO_ROOT / "T2T_ViT_infer.py"), "--model",
                             str(exported_onnx["matmul"]), "--input", str(out), "--output", str(tmp_path / "result"),
                             "--output_dirname", "bs1"], capture_output=True, text=True)
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert "are 384x384 images (preprocessed with --img-size 384)" in result.stderr
    assert "takes 224x224: preprocess with T2T_ViT_preprocess.py --img-size 224" in result.stderr
    assert not (tmp_path / "result").exists()


# ------------------------------------------------------------------------------ the main job, per variant

def fitted_checkpoint(name, val, path):
    """A random-weight checkpoint of ``name`` whose head is fitted to the images in ``val`` so that a known share
    scores: of every three images, the first has its true class on top; the second a wrong class on top and its
    true class second (top-5 right); the third its true class far below (both wrong). Returns (top-1, top-5) in %."""
    from PIL import Image

    from t2t_vit.data.dataset import EvalTransform

    spec, model = BY_NAME[name], random_model(name)
    transform = EvalTransform(spec.data_config())
    images = sorted(val.glob("*/*.JPEG"))
    with torch.no_grad():
        pixels = torch.from_numpy(np.concatenate([transform(Image.open(image).convert("RGB")) for image in images]))
        features = model.forward_features(pixels).double()
    targets = torch.zeros((len(images), 1000), dtype=torch.double)
    for index, image in enumerate(images):
        label = SYNSETS.index(image.parent.name)
        wrong = (label + 1) % 1000
        targets[index, label if index % 3 == 0 else wrong] = 10
        if index % 3:
            targets[index, label] = 5 if index % 3 == 1 else -10
    mean, target_mean = features.mean(0, keepdim=True), targets.mean(0)
    weight = (targets - target_mean).T @ torch.linalg.pinv((features - mean).T)
    state = model.state_dict()
    state["head.weight"], state["head.bias"] = weight.float(), (target_mean - (weight @ mean.T)[:, 0]).float()
    save_checkpoint(state, path, "training", name)
    count = len(images)
    return 100 * len(range(0, count, 3)) / count, 100 * (len(range(0, count, 3)) + len(range(1, count, 3))) / count


def run_job(work, *args):
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run(["bash", str(REPO_ROOT / "T2T_ViT_eval.sh"), "--work-dir", str(work), "--no-progress",
                           *args], env=env, capture_output=True, text=True, timeout=1800)


@pytest.fixture(scope="module")
def family_val(tmp_path_factory, sample_images):
    return make_val_tree(tmp_path_factory.mktemp("family") / "val", sample_images[:12])


@pytest.fixture(scope="module")
def shared_work(tmp_path_factory):
    """One work dir for every variant's job, in turn: none may reuse another's exports or results."""
    return tmp_path_factory.mktemp("family_work") / "work"


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, family_val):
    """name -> (its fitted checkpoint, top-1, top-5), made once per variant."""
    made = {}

    def get(name):
        if name not in made:
            path = tmp_path_factory.mktemp("fitted") / f"{name}.pth.tar"
            made[name] = (path, *fitted_checkpoint(name, family_val, path))
        return made[name]

    return get


FAMILY = ["t2t_vit_7", "t2t_vit_t_14", "t2t_vit_14_384"]


@pytest.mark.parametrize("name", FAMILY)
def test_the_main_job_scores_each_variant_right_fp16_included(name, family_val, shared_work, fitted):
    spec = BY_NAME[name]
    checkpoint, top1, top5 = fitted(name)
    others = {path: path.stat().st_mtime_ns for path in shared_work.glob("*/*.stamp.json")} if shared_work.exists() \
        else {}
    result = run_job(shared_work, "--pth-path", str(checkpoint), "--data-dir", str(family_val),
                     "--batch-sizes", "1 4", "--emulate-npu", "--loop", "1")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((shared_work / "eval_summary.json").read_text())
    assert summary["model"] == {"model": name, "tokens_type": spec.tokens_type, "embed_dim": spec.embed_dim,
                                "depth": spec.depth, "img_size": spec.img_size}
    for row in summary["rows"]:
        assert (row["top1"], row["top5"], row["count"]) == (pytest.approx(top1), pytest.approx(top5), 12)
        assert row["accuracy_reused_from"] is None and row["throughput_reused_from"] is None  # nothing of another's
        assert os.path.basename(row["model"]).startswith(name + ("_matmul" if spec.performer else "")), row["model"]
    npu = summary["npu_emulation"]
    assert (npu["top1"], npu["top5"], npu["nonfinite"]) == (pytest.approx(top1), pytest.approx(top5), 0)
    assert npu["keep_dtype"].endswith(f"{name}_keep_dtype.cfg") and npu["top1_flips"] == 0
    assert f"model: {name}, {spec.img_size}x{spec.img_size} input" in result.stdout
    bins = shared_work / ("prep_bins_uint8" + ("_384" if spec.img_size == 384 else ""))
    manifest = json.loads((bins / "manifest.json").read_text())
    assert manifest["data_config"]["input_size"] == [3, spec.img_size, spec.img_size]
    assert json.loads((shared_work / f"result_{name}" / "bs4.stamp.json").read_text())["variant"] == name
    assert "running again" not in result.stdout  # its own files: nothing of another variant is taken or redone
    assert {path: path.stat().st_mtime_ns for path in others} == others  # and nothing of theirs is replaced


def test_going_back_to_a_variant_reuses_every_figure_and_the_family_holds_them_all(family_val, shared_work, fitted):
    """After the three variants in one work dir: t2t_vit_7 again reuses every figure of its first run, and the
    family table holds the three with their top-1 as constructed and images/s at batch 1 and 4."""
    checkpoint, top1, _ = fitted("t2t_vit_7")
    first = json.loads((shared_work / "eval_summary_t2t_vit_7.json").read_text())
    result = run_job(shared_work, "--pth-path", str(checkpoint), "--data-dir", str(family_val), "--batch-sizes", "1 4",
                     "--emulate-npu", "--loop", "1")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "running" not in result.stdout and "== the family measured in " in result.stdout
    again = json.loads((shared_work / "eval_summary.json").read_text())
    assert [row["images_per_s"] for row in again["rows"]] == [row["images_per_s"] for row in first["rows"]]
    assert all(row["accuracy_reused_from"] and row["throughput_reused_from"] for row in again["rows"])
    family = json.loads((shared_work / "family_summary.json").read_text())
    rows = {row["variant"]: row for row in family["rows"]}
    assert set(rows) == set(FAMILY)
    for name in FAMILY:
        assert rows[name]["top1"] == pytest.approx(fitted(name)[1]) and set(rows[name]["images_per_s"]) == {"1", "4"}
        assert rows[name]["fp16_flips"] == 0 and rows[name]["images"] == 12
    assert rows["t2t_vit_7"]["keep_set"] == 76 and rows["t2t_vit_t_14"]["keep_set"] == 2
    assert len(family["groups"]) == 1 and family["notes"] == []  # the same 12 images, one runner
    assert (shared_work / "family_summary.png").read_bytes()[:4] == b"\x89PNG"


def test_the_demo_takes_a_variant(tmp_path):
    result = run_job(tmp_path / "w", "--demo", "--model", "t2t_vit_7", "--demo-images", "4", "--batch-sizes", "2",
                     "--loop", "1")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    summary = json.loads((tmp_path / "w" / "demo" / "eval_summary.json").read_text())
    assert summary["model"]["model"] == "t2t_vit_7" and summary["checkpoint"].endswith("random_t2t_vit_7.pth.tar")
    assert (tmp_path / "w" / "demo" / "t2t_vit_7_matmul_uint8.onnx").is_file()


@pytest.mark.parametrize("name", ["t2t_vit_7", "t2t_vit_t_14"])
def test_explain_works_on_another_variant(name, tmp_path, sample_images, capsys):
    """--explain on a performer variant names the first performer's normaliser as the NaN's origin (nothing kept);
    on a transformer-token variant every tensor stays finite, and the report still has a row per float node."""
    from t2t_vit.ascend.keep_dtype import keep_dtype_nodes

    spec = BY_NAME[name]
    export_onnx(random_model(name, spec.form("sum")), tmp_path / "m.onnx", data_config=spec.data_config(),
                verify_batch_sizes=(1,))
    bins = tmp_path / "bins"
    bins.mkdir()
    images_at(sample_images, spec.img_size, 1)[0].astype("<f4").tofile(bins / "a.bin")
    report = tmp_path / "report.csv"
    assert gen_cfg.main([str(tmp_path / "m.onnx"), "--explain", "--input", str(bins), "--images", "1",
                         "--report", str(report)]) == 0
    out = capsys.readouterr().out
    if spec.performer:
        first_div = keep_dtype_nodes(tmp_path / "m.onnx")[0].div
        assert f"NaN origin: the first non-finite value comes from {first_div} (Div, not kept" in out
    else:
        assert "NaN origin: no non-finite value: every emulated tensor stayed finite" in out
    assert report.read_text().count("\n") > 100  # a row per float node of the whole model
