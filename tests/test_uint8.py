"""uint8 bins and AIPP: the cropped image as the bin, normalised by the uint8 export, by AIPP, or by hand."""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

import T2T_ViT_infer
import T2T_ViT_preprocess
import T2T_ViT_pth2onnx
from conftest import BACKENDS, REPO_ROOT, SAMPLE_COUNT, TINY, make_val_tree
from t2t_vit.ascend.aipp import AippError, aipp_config_text, data_config_for_aipp, parse_aipp_config
from t2t_vit.config import resolve_data_config
from t2t_vit.data.bins import read_bin
from t2t_vit.model.export import export_onnx, read_metadata
from t2t_vit.files import LOCK_NAME
from t2t_vit.model.network import create_model
from t2t_vit.runtime.runner import run_inference
from t2t_vit.runtime.batching import RunnerError

FLOAT_BYTES, UINT8_BYTES = 602_112, 150_528
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def preprocess(data_dir, out_dir, gt_path, *extra) -> int:
    return T2T_ViT_preprocess.main(["--data-dir", str(data_dir), "--out-dir", str(out_dir), "--gt-path", str(gt_path),
                                    "--no-progress", "-q", *map(str, extra)])


def timm_normalise(pixels: np.ndarray) -> np.ndarray:
    """torchvision's ToTensor then Normalize (what timm's eval transform ends with) on a (1, H, W, 3) uint8 crop."""
    from torchvision.transforms import functional

    tensor = functional.to_tensor(pixels[0])  # HWC uint8 -> CHW float32 / 255
    return functional.normalize(tensor, MEAN, STD).numpy()[None]


@pytest.fixture(scope="module")
def bins(tmp_path_factory, sample_images):
    """The shipped real images preprocessed both ways."""
    root = tmp_path_factory.mktemp("bins")
    val = make_val_tree(root / "val", sample_images)
    for dtype in ("float32", "uint8"):
        assert preprocess(val, root / dtype, root / f"label_{dtype}.npy", "--dtype", dtype, "--workers", 2) == 0
    return root


@pytest.fixture(scope="module")
def exports(tmp_path_factory, tiny_weights):
    """Float and uint8 exports of the sum and matmul forms of the tiny model (the normalisation in front is the same
    for every variant)."""
    folder = tmp_path_factory.mktemp("exports")
    paths = {}
    for performer in ("sum", "matmul"):
        for dtype in ("float32", "uint8"):
            model = create_model(performer, TINY)
            model.load_state_dict(tiny_weights)
            paths[performer, dtype] = folder / f"{performer}_{dtype}.onnx"
            report = export_onnx(model, paths[performer, dtype], data_config=resolve_data_config(),
                                 verify_batch_sizes=(2,), input_dtype=dtype)
            assert report.max_abs_diff < 1e-4
    return paths


# ------------------------------------------------------------------------------------------- preprocessing

def test_uint8_bins_normalise_to_the_float32_bins_byte_for_byte(bins):
    floats, uint8s = sorted((bins / "float32").glob("*.bin")), sorted((bins / "uint8").glob("*.bin"))
    assert [path.name for path in floats] == [path.name for path in uint8s] and len(uint8s) == SAMPLE_COUNT
    for float_bin, uint8_bin in zip(floats, uint8s):
        assert uint8_bin.stat().st_size == UINT8_BYTES and float_bin.stat().st_size == FLOAT_BYTES
        pixels = read_bin(uint8_bin, (1, 224, 224, 3), "uint8")
        assert timm_normalise(pixels).astype("<f4").tobytes() == float_bin.read_bytes(), uint8_bin.name
    disk = {dtype: sum(path.stat().st_size for path in (bins / dtype).glob("*.bin")) for dtype in ("float32", "uint8")}
    assert disk["float32"] / disk["uint8"] == 4.0
    assert (bins / "label_float32.npy").read_bytes() == (bins / "label_uint8.npy").read_bytes()


def test_uint8_bin_is_timms_crop_before_normalising(bins, sample_images):
    import timm.data
    from torchvision import transforms

    steps = timm.data.create_transform(**resolve_data_config()).transforms
    # timm 0.9 ends with ToTensor, timm 1.x with its subclass MaybeToTensor
    assert isinstance(steps[-2], transforms.ToTensor) and isinstance(steps[-1], transforms.Normalize)
    for image in sample_images[:6]:
        with Image.open(image) as opened:
            cropped = opened.convert("RGB")
        for step in steps[:-2]:  # resize, centre crop: PIL in, PIL out
            cropped = step(cropped)
        expected = np.asarray(cropped, dtype=np.uint8)
        assert (bins / "uint8" / f"{image.stem}.bin").read_bytes() == expected.tobytes(), image.name


def test_the_200_shared_images_too(shared_images, tmp_path):
    val = make_val_tree(tmp_path / "val", shared_images)
    for dtype in ("float32", "uint8"):
        assert preprocess(val, tmp_path / dtype, tmp_path / f"{dtype}.npy", "--dtype", dtype, "--workers", 2) == 0
    uint8s = sorted((tmp_path / "uint8").glob("*.bin"))
    assert len(uint8s) == 200
    for uint8_bin in uint8s:
        pixels = read_bin(uint8_bin, (1, 224, 224, 3), "uint8")
        assert timm_normalise(pixels).astype("<f4").tobytes() == (tmp_path / "float32" / uint8_bin.name).read_bytes()


@pytest.mark.parametrize("size, mode", [((1, 1), "RGB"), ((3, 500), "RGB"), ((601, 223), "RGB"), ((224, 224), "L"),
                                        ((225, 1000), "RGB"), ((249, 248), "RGBA"), ((97, 131), "P")])
def test_odd_sizes_and_modes(tmp_path, size, mode):
    folder = tmp_path / "val" / "n01440764"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(sum(size))
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).convert(mode).save(
        folder / "odd.png")
    for dtype in ("float32", "uint8"):
        assert preprocess(tmp_path / "val", tmp_path / dtype, tmp_path / f"{dtype}.npy", "--dtype", dtype,
                          "--workers", 0) == 0
    pixels = read_bin(tmp_path / "uint8" / "odd.bin", (1, 224, 224, 3), "uint8")
    assert timm_normalise(pixels).astype("<f4").tobytes() == (tmp_path / "float32" / "odd.bin").read_bytes()


def test_manifest_records_dtype_and_layout_and_a_dtype_change_is_refused(bins, tmp_path):
    manifest = json.loads((bins / "uint8" / "manifest.json").read_text())
    assert manifest["bin"] == {"dtype": "uint8", "layout": "NHWC", "byte_order": "little", "order": "C",
                               "shape": [1, 224, 224, 3], "bytes": UINT8_BYTES}
    assert json.loads((bins / "float32" / "manifest.json").read_text())["bin"]["layout"] == "NCHW"
    out = tmp_path / "out"
    out.mkdir()
    for path in (bins / "uint8").iterdir():
        (out / path.name).write_bytes(path.read_bytes())
    def content():  # the lock file records who holds the out-dir (each run's own); the data must not change
        return {path.name: path.read_bytes() for path in out.iterdir() if path.name != LOCK_NAME}

    before = content()
    assert preprocess(bins / "val", out, tmp_path / "label.npy", "--dtype", "float32") == 1  # into uint8 bins
    assert content() == before
    assert not (tmp_path / "label.npy").exists()


# ------------------------------------------------------------------------------------------------- export

def test_uint8_export_interface_metadata_and_node_names(exports):
    for performer in ("sum", "matmul"):
        float_graph = onnx.load(str(exports[performer, "float32"])).graph
        uint8_graph = onnx.load(str(exports[performer, "uint8"])).graph
        image = uint8_graph.input[0]
        assert image.name == "image" and image.type.tensor_type.elem_type == onnx.TensorProto.UINT8
        dims = [dim.dim_param or dim.dim_value for dim in image.type.tensor_type.shape.dim]
        assert dims == ["batch", 224, 224, 3]
        added = [node for node in uint8_graph.node if node.name.startswith("/normalise_input/")]
        assert [node.op_type for node in added] == ["Transpose", "Cast", "Div", "Sub", "Div"]
        assert [node.name for node in uint8_graph.node if node not in added] == [node.name for node in float_graph.node]
        metadata = read_metadata(exports[performer, "uint8"])
        assert (metadata["input_dtype"], metadata["input_layout"]) == ("uint8", "NHWC")
        assert read_metadata(exports[performer, "float32"])["input_dtype"] == "float32"


def test_gen_cfg_gives_one_keep_list_for_both_exports(exports, tmp_path):
    import gen_cfg

    for dtype in ("float32", "uint8"):
        assert gen_cfg.main([str(exports["sum", dtype]), str(tmp_path / f"{dtype}.cfg"), "-q"]) == 0
    assert (tmp_path / "float32.cfg").read_text() == (tmp_path / "uint8.cfg").read_text()


def test_gen_cfg_minimize_takes_uint8_bins_for_the_float_export(bins, exports, tmp_path, capsys):
    import gen_cfg

    tables = {}
    for dtype in ("float32", "uint8"):
        assert gen_cfg.main([str(exports["sum", "float32"]), str(tmp_path / f"{dtype}.cfg"), "--minimize", "--input",
                             str(bins / dtype), "--images", "1", "-q"]) == 0
        tables[dtype] = capsys.readouterr().out
    assert tables["float32"] == tables["uint8"].replace("uint8.cfg", "float32.cfg")  # the same images, normalised
    assert (tmp_path / "float32.cfg").read_text() == (tmp_path / "uint8.cfg").read_text()
    assert gen_cfg.main([str(exports["sum", "uint8"]), str(tmp_path / "x.cfg"), "--minimize", "--input",
                         str(bins / "float32"), "-q"]) == 1
    assert "are float32 bins" in capsys.readouterr().err


def test_pth2onnx_input_dtype_uint8_is_verified_against_pytorch(tiny_checkpoint, tiny_weights, tmp_path, capsys):
    checkpoint_path, reference_weights = tiny_checkpoint, tiny_weights
    out = tmp_path / "u8.onnx"
    assert T2T_ViT_pth2onnx.main(["--pth-path", str(checkpoint_path), "--onnx-path", str(out), "--input-dtype",
                                  "uint8", "--performer", "matmul", "-q"]) == 0
    assert "input=uint8" in capsys.readouterr().out
    import onnxruntime

    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    (logits,) = onnxruntime.InferenceSession(str(out)).run(None, {"image": pixels})
    model = create_model("einsum", TINY)
    model.load_state_dict(reference_weights)  # what checkpoint_path holds
    images = torch.from_numpy(np.concatenate([timm_normalise(pixels[i:i + 1]) for i in range(2)]))
    with torch.no_grad():
        np.testing.assert_allclose(logits, model(images).numpy(), rtol=0, atol=1e-4)


# ------------------------------------------------------------------------------------------------- the CPU

def _run(model, inputs, output, dirname, batch, **options):
    return run_inference(str(model), [str(inputs)], str(output), dirname, "NPY", batch, 1, 1, progress=False,
                         **options)


def _logits(folder):
    return {path.name: np.load(path) for path in sorted(folder.glob("*.npy"))}


@pytest.mark.parametrize("backend", BACKENDS)
def test_uint8_bins_on_the_uint8_export_give_the_float_paths_logits(bins, exports, tmp_path, backend):
    _run(exports["matmul", "float32"], bins / "float32", tmp_path, "float", 4, backend_name=backend)
    _run(exports["matmul", "uint8"], bins / "uint8", tmp_path, "uint8", 4, backend_name=backend)
    floats, uint8s = _logits(tmp_path / "float"), _logits(tmp_path / "uint8")
    assert list(floats) == list(uint8s) and len(floats) == SAMPLE_COUNT
    worst = max(float(np.abs(floats[name] - uint8s[name]).max()) for name in floats)
    assert worst <= 1e-5, worst


def test_the_npu_emulation_of_the_uint8_export_rounds_the_normalised_input(bins, exports, tmp_path):
    import gen_cfg

    keep = tmp_path / "keep_dtype.cfg"
    assert gen_cfg.main([str(exports["sum", "float32"]), str(keep), "-q"]) == 0
    options = {"backend_name": "onnxruntime", "precision": "npu-fp16", "keep_dtype": str(keep)}
    _run(exports["sum", "float32"], bins / "float32", tmp_path, "float", 2, **options)
    _run(exports["sum", "uint8"], bins / "uint8", tmp_path, "uint8", 2, **options)
    floats, uint8s = _logits(tmp_path / "float"), _logits(tmp_path / "uint8")
    for name in floats:  # the float path rounds its input image to fp16: so must AIPP's output here
        np.testing.assert_array_equal(uint8s[name], floats[name])
    _run(exports["sum", "uint8"], bins / "uint8", tmp_path, "fp32", 2, backend_name="onnxruntime")
    fp32 = _logits(tmp_path / "fp32")
    assert max(float(np.abs(fp32[name] - uint8s[name]).max()) for name in fp32) > 0  # it did round


def test_the_emulated_graph_keeps_the_normalisation_in_fp32(exports):
    from t2t_vit.ascend.npu_precision import emulate_force_fp16

    graph = emulate_force_fp16(onnx.load(str(exports["sum", "uint8"]))).graph
    names = [node.name for node in graph.node]
    normalise = [name for name in names if name.startswith("/normalise_input/")]
    assert normalise[:5] == ["/normalise_input/Transpose_0", "/normalise_input/Cast_1", "/normalise_input/Div_2",
                             "/normalise_input/Sub_3", "/normalise_input/Div_4"] and len(normalise) == 5
    round_trip = [node for node in graph.node if node.input and node.input[0] == "image_normalised"]
    assert [(node.op_type, node.attribute[0].i) for node in round_trip] == [("Cast", onnx.TensorProto.FLOAT16)]
    assert all("image_normalised" not in node.input for node in graph.node if node not in round_trip)


@pytest.mark.parametrize("case", ["uint8_bins_float_model", "float_bins_uint8_model_bs1",
                                  "float_bins_uint8_model_bs4", "float_bins_without_manifest_bs4",
                                  "uint8_bins_without_manifest"])
def test_mismatched_bins_and_models_are_refused_before_any_output(bins, exports, tmp_path, case):
    dtype = "uint8" if case.startswith("uint8") else "float32"
    inputs = bins / dtype
    if "without_manifest" in case:
        inputs = tmp_path / "plain"
        inputs.mkdir()
        for path in (bins / dtype).glob("*.bin"):
            (inputs / path.name).write_bytes(path.read_bytes())
    model = exports["matmul", "float32" if dtype == "uint8" else "uint8"]
    batch = 4 if case.endswith("bs4") else 1
    output = tmp_path / "out"
    with pytest.raises(RunnerError) as raised:
        _run(model, inputs, output, "bs", batch)
    message = str(raised.value)
    advice = "--input-dtype uint8" if dtype == "uint8" else "preprocess with --dtype uint8"
    assert f"are {dtype} bins" in message and advice in message
    assert not output.exists()


def test_uint8_batch_files_without_manifest_are_not_taken_for_float(bins, exports, tmp_path):
    """Four uint8 images in one file have a float32 image's size; without a manifest the content decides."""
    plain = tmp_path / "plain"
    plain.mkdir()
    names = sorted(path.name for path in (bins / "uint8").glob("*.bin"))[:8]
    for index in range(2):
        data = b"".join((bins / "uint8" / name).read_bytes() for name in names[4 * index:4 * index + 4])
        (plain / f"batch{index}.bin").write_bytes(data)
    result = _run(exports["matmul", "uint8"], plain, tmp_path, "batches", 4)
    assert len(result.filesinfo) == 2


def test_infer_script_refuses_bins_an_om_does_not_take(bins, tmp_path, capsys):
    om = tmp_path / "T2T_ViT_bs4.om"
    om.write_bytes(b"om")
    (tmp_path / "T2T_ViT_bs4.om.json").write_text(json.dumps({"input_dtype": "uint8"}))
    status = T2T_ViT_infer.main(["--model", str(om), "--input", str(bins / "float32"), "--output", str(tmp_path / "o"),
                                 "--batchsize", "4"])
    assert status == 1 and "are float32 bins" in capsys.readouterr().err
    (tmp_path / "T2T_ViT_bs4.om.json").write_text(json.dumps({"input_dtype": "float32"}))
    status = T2T_ViT_infer.main(["--model", str(om), "--input", str(bins / "uint8"), "--output", str(tmp_path / "o"),
                                 "--batchsize", "4"])
    assert status == 1 and "T2T_ViT_atc.sh --aipp" in capsys.readouterr().err
    (tmp_path / "T2T_ViT_bs4.om.json").write_text(json.dumps({"input_dtype": "uint8", "input_shape": "3,384,384"}))
    status = T2T_ViT_infer.main(["--model", str(om), "--input", str(bins / "uint8"), "--output", str(tmp_path / "o"),
                                 "--batchsize", "4"])
    error = capsys.readouterr().err
    assert status == 1 and error.count("\n") == 1, error
    assert "are 224x224 images" in error and "takes 384x384: preprocess with T2T_ViT_preprocess.py --img-size 384" in error
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------------------------------- AIPP

def test_aipp_constants():
    fields = parse_aipp_config(aipp_config_text(resolve_data_config()))
    assert fields["aipp_mode"] == "static" and fields["input_format"] == "RGB888_U8"
    assert (fields["src_image_size_w"], fields["src_image_size_h"]) == ("224", "224") and fields["crop"] == "false"
    expected = {"min_chn_0": 123.675, "min_chn_1": 116.28, "min_chn_2": 103.53,
                "var_reci_chn_0": 0.0171247538316637, "var_reci_chn_1": 0.0175070028011204,
                "var_reci_chn_2": 0.0174291938997821, "mean_chn_0": 0, "mean_chn_1": 0, "mean_chn_2": 0}
    for name, value in expected.items():
        assert abs(float(fields[name]) - value) <= 1e-9, name
    # AIPP's formula with these constants is timm's normalisation of every pixel value.
    pixels = np.arange(256, dtype=np.float64)
    for channel in range(3):
        aipp = (pixels - 0 - float(fields[f"min_chn_{channel}"])) * float(fields[f"var_reci_chn_{channel}"])
        np.testing.assert_allclose(aipp, (pixels / 255 - MEAN[channel]) / STD[channel], rtol=0, atol=1e-12)


def test_aipp_follows_the_recorded_data_config(exports, tmp_path):
    assert data_config_for_aipp(exports["sum", "float32"])["mean"] == list(MEAN)
    with pytest.raises(AippError, match="is the uint8 export"):
        data_config_for_aipp(exports["sum", "uint8"])
    config = resolve_data_config({"input_size": (3, 256, 192)})
    fields = parse_aipp_config(aipp_config_text(config))
    assert (fields["src_image_size_w"], fields["src_image_size_h"]) == ("192", "256")


ATC = r"""#!/usr/bin/env bash
echo "$*" >> "$ATC_LOG"
for argument in "$@"; do case "$argument" in --output=*) output="${argument#--output=}";; esac; done
echo built > "${output}.om"
"""


def _atc(tmp_path, *args):
    tools = tmp_path / "tools"
    tools.mkdir(exist_ok=True)
    (tools / "atc").write_text(ATC)
    (tools / "atc").chmod(0o755)
    (tmp_path / "keep_dtype.cfg").write_text("/tokens_to_token/attention1/kernel/Split\n")
    import sys

    env = {**os.environ, "PATH": f"{tools}:/usr/bin:/bin", "ATC_LOG": str(tmp_path / "atc.log"),
           "PYTHON": sys.executable}
    return subprocess.run(["bash", str(REPO_ROOT / "T2T_ViT_atc.sh"), "--soc-version", "Ascend310P3", *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True)


def test_atc_aipp_writes_aipp_cfg_and_passes_insert_op_conf(exports, tmp_path):
    result = _atc(tmp_path, "--onnx", str(exports["sum", "float32"]), "--batch-sizes", "1 8", "--out-dir", "om",
                  "--aipp")
    assert result.returncode == 0, result.stderr
    cfg = tmp_path / "om" / "aipp.cfg"
    assert parse_aipp_config(cfg.read_text())["input_format"] == "RGB888_U8"
    calls = (tmp_path / "atc.log").read_text().splitlines()
    assert calls == [f"--framework=5 --model={exports['sum', 'float32']} --output=om/T2T_ViT_bs{bs} --input_format=NCHW "
                     f"--input_shape=image:{bs},3,224,224 --log=error --soc_version=Ascend310P3 "
                     f"--keep_dtype=keep_dtype.cfg --insert_op_conf=om/aipp.cfg" for bs in (1, 8)]
    import hashlib

    record = json.loads((tmp_path / "om" / "T2T_ViT_bs8.om.json").read_text())
    assert record["input_dtype"] == "uint8" and record["aipp"] == "om/aipp.cfg"
    assert record["aipp_sha256"] == hashlib.sha256(cfg.read_bytes()).hexdigest()


def test_atc_without_aipp_records_float32(exports, tmp_path):
    result = _atc(tmp_path, "--onnx", str(exports["sum", "float32"]), "--batch-sizes", "1")
    assert result.returncode == 0, result.stderr
    assert "insert_op_conf" not in (tmp_path / "atc.log").read_text() and not (tmp_path / "aipp.cfg").exists()
    record = json.loads((tmp_path / "T2T_ViT_bs1.om.json").read_text())
    assert record["input_dtype"] == "float32" and record["aipp"] is None


@pytest.mark.parametrize("aipp", [True, False])
def test_atc_refuses_the_uint8_export_before_writing(exports, tmp_path, aipp):
    result = _atc(tmp_path, "--onnx", str(exports["sum", "uint8"]), "--batch-sizes", "1", "--out-dir", "om",
                  *(["--aipp"] if aipp else []))
    assert result.returncode == 1 and "is the uint8 export" in result.stderr
    assert not (tmp_path / "atc.log").exists() and not list((tmp_path / "om").glob("*.om*"))
    assert not (tmp_path / "om" / "aipp.cfg").exists()
