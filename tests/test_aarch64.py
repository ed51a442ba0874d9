"""Every stage gives x86's results on an Arm (aarch64) host: the aarch64 subset (``pytest -m aarch64``).

CI runs these in an arm64 Debian 12 root under qemu-user (``.ci/aarch64-root``), after the README's set-up
command, and on x86 with the rest of the suite, against the same records made on x86
(``tests/data/arch_reference.npz``; ``python tests/test_aarch64.py --record`` writes them anew). Emulated numerics
are 100-350x slower, so two images (an ordinary one and a grayscale one) read from the official tar with the
devkit, exports verified at batch 1, and batch 2. Beside T2T-ViT-14, one other performer variant (``t2t_vit_7``)
and one transformer-token variant (``t2t_vit_t_14``): their export, keep set and fp16 emulation on the float32 bins.

The smoke subset (``pytest -m smoke``, what CI runs on aarch64 in a few minutes) takes every stage once on the two
test-only variants of one block (``t2t_vit_test``, performer; ``t2t_vit_t_test``, transformer tokens): the bins from
the tar, the export, the keep set, the runner in f32 and in the fp16 emulation, and the main job with postprocess.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script (--record) too

from conftest import REPO_ROOT, SAMPLE_DIR  # noqa: E402
from imagenet_layouts import make_layouts  # noqa: E402

pytestmark = [pytest.mark.aarch64, pytest.mark.slow, pytest.mark.needs("scipy")]  # the devkit of the official pair

RECORDS = REPO_ROOT / "tests" / "data" / "arch_reference.npz"
IMAGES = ("n01773549_barn_spider", "n02815834_beaker")  # an ordinary image and a grayscale one, clear top-1s
FORMS = {"sum": ("sum", "float32"), "matmul": ("matmul", "float32"), "matmul_uint8": ("matmul", "uint8")}
LOGIT_TOLERANCE = 1e-4  # x86 and Arm kernels sum in other orders; measured about 1.4e-6
EMULATION_TOLERANCE = 2e-2  # fp16 rounding amplifies those differences; the top-1 must not change


VARIANTS = ("t2t_vit_7", "t2t_vit_t_14")  # the other variants the subset runs
SMALL = ("t2t_vit_test", "t2t_vit_t_test")  # the smoke subset's: one block, 64 wide (test-only, see conftest)


def fixed_checkpoint(path: Path, name: str = "t2t_vit_14") -> Path:
    """Fixed weights in the published checkpoint layout, the same bits on every architecture and torch version:
    drawn with numpy's legacy generator (conftest's scaled scheme: unit-scale projections, norms near 1), the
    performers' projections ``w`` included; only the sinusoid position table is the model's own."""
    import argparse

    import torch

    from t2t_vit.model.network import create_model
    from t2t_vit.model.variants import BY_NAME

    spec = BY_NAME[name]
    rng = np.random.RandomState(0)
    weights = {}
    for key, value in create_model(spec.form("einsum"), spec).state_dict().items():
        noise = rng.standard_normal(tuple(value.shape)).astype(np.float32)
        if key == "pos_embed":
            weights[key] = value.clone()
        elif key.endswith(".w"):  # (m, emb): rows of norm about sqrt(m), as the orthogonal init gives
            weights[key] = torch.from_numpy(noise * np.float32(np.sqrt(value.shape[0] / value.shape[1])))
        elif value.dim() >= 2:
            weights[key] = torch.from_numpy(noise / np.float32(np.sqrt(value.shape[-1])))
        elif key.endswith("weight"):
            weights[key] = torch.from_numpy(1 + np.float32(0.1) * noise)
        else:
            weights[key] = torch.from_numpy(np.float32(0.1) * noise)
    torch.save({"state_dict_ema": weights, "args": argparse.Namespace(model=name)}, path)
    return path


class Built(dict):
    """The paths of :func:`build`; an export is made the first time its form is asked for (each costs about a
    minute emulated), as the main job makes it: verified against PyTorch, at batch 1 only."""

    def __missing__(self, form: str) -> Path:
        from t2t_vit.model import export
        from t2t_vit.job.artefacts import export_form
        from t2t_vit.job.resolve import export_path
        from t2t_vit.job.stamps import Digests

        performer, dtype = FORMS[form]
        path = export_path(self["work"], performer, dtype)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(export, "VERIFY_BATCH_SIZES", (1,))
            export_form(self["checkpoint"], Digests()(self["checkpoint"]), path, performer, dtype)
        self[form] = path
        return path


def build(root: Path) -> Built:
    """The official pair of the two images, a checkpoint, a work dir for the main job's exports, and both kinds of
    bins from the tar."""
    import T2T_ViT_preprocess

    paths = Built(root=root, work=root / "work", checkpoint=fixed_checkpoint(root / "ck.pth.tar"))
    layouts = make_layouts(root / "imagenet", [SAMPLE_DIR / f"{name}.JPEG" for name in IMAGES], absent=0)
    paths["tar"], paths["devkit"] = layouts.root / "ILSVRC2012_img_val.tar", layouts.root / "ILSVRC2012_devkit_t12.tar.gz"
    paths["work"].mkdir()
    for dtype in ("uint8", "float32"):
        paths[f"bins_{dtype}"], paths["labels"] = root / f"bins_{dtype}", root / "label.npy"
        assert T2T_ViT_preprocess.main(["--data-dir", str(paths["tar"]), "--devkit", str(paths["devkit"]), "--out-dir",
                                        str(paths[f"bins_{dtype}"]), "--gt-path", str(paths["labels"]), "--dtype",
                                        dtype, "--workers", "0", "--no-progress", "-q"]) == 0
    paths["stems"] = {layouts.name(position): stem for stem, position in layouts.positions.items()}
    return paths


def infer(paths: Built, form: str, out: Path, *extra: str) -> np.ndarray:
    """The CPU runner's logits (onnxruntime) for the two bins, in IMAGES' order."""
    import T2T_ViT_infer

    bins = paths["bins_uint8" if FORMS.get(form, ("", "float32"))[1] == "uint8" else "bins_float32"]
    assert T2T_ViT_infer.main(["--model", str(paths[form]), "--input", str(bins), "--output", str(out),
                               "--output_dirname", form, "--batchsize", "2", "--backend", "onnxruntime",
                               "--no-progress", "-q", *extra]) == 0
    by_stem = {paths["stems"][path.name[:-len("_0.bin")]]: np.fromfile(path, dtype=np.float32)
               for path in (out / form).glob("*_0.bin")}
    return np.stack([by_stem[stem] for stem in IMAGES])


def keep_names(paths: Built, out: Path) -> list[str]:
    import gen_cfg

    assert gen_cfg.main([str(paths["sum"]), str(out / "keep_dtype.cfg"), "-q"]) == 0
    return (out / "keep_dtype.cfg").read_text().split()


def op_types(onnx_path: Path, names: list[str]) -> list[str]:
    import onnx

    by_name = {node.name: node.op_type for node in onnx.load(str(onnx_path)).graph.node}
    return [by_name[name] for name in names]


def variant_export(paths: Built, name: str) -> Path:
    """The main job's float32 export of another variant (its sum form; the transformer-token ones have one form)
    from fixed weights, verified at batch 1."""
    from t2t_vit.model import export
    from t2t_vit.job.artefacts import export_form
    from t2t_vit.job.resolve import export_path
    from t2t_vit.job.stamps import Digests
    from t2t_vit.model.variants import BY_NAME

    if name not in paths:
        spec = BY_NAME[name]
        checkpoint = fixed_checkpoint(paths["root"] / f"{name}.pth.tar", name)
        path = export_path(paths["work"], "sum", "float32", spec)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(export, "VERIFY_BATCH_SIZES", (1,))
            export_form(checkpoint, Digests()(checkpoint), path, "sum", "float32", spec)
        paths[name] = path
    return paths[name]


def variant_figures(paths: Built, name: str, out: Path) -> dict[str, np.ndarray]:
    """Another variant's f32 logits, its keep set (names and ops) and its fp16 emulation's logits under it."""
    import gen_cfg

    onnx_path = variant_export(paths, name)
    cfg = out / f"{name}_keep_dtype.cfg"
    out.mkdir(parents=True, exist_ok=True)
    assert gen_cfg.main([str(onnx_path), str(cfg), "-q"]) == 0
    names = cfg.read_text().split()
    paths[f"{name}_form"] = onnx_path
    logits = infer(paths, f"{name}_form", out / "f32")
    emulated = infer(paths, f"{name}_form", out / "fp16", "--precision", "npu-fp16", "--keep-dtype", str(cfg))
    return {f"{name}": logits, f"{name}_npu_fp16": emulated, f"{name}_keep_dtype": np.array(names, dtype=str),
            f"{name}_keep_dtype_ops": np.array(op_types(onnx_path, names), dtype=str)}


def measure(root: Path) -> dict[str, np.ndarray]:
    """What the records hold: every form's logits, the NPU emulation's, and the keep_dtype names; for the other
    variants, the same of their one export."""
    paths = build(root)
    figures = {form: infer(paths, form, root / "results") for form in FORMS}
    names = keep_names(paths, root)
    figures["npu_fp16"] = infer(paths, "sum", root / "emulated", "--precision", "npu-fp16", "--keep-dtype",
                                str(root / "keep_dtype.cfg"))
    figures["keep_dtype"] = np.array(names)
    figures["keep_dtype_ops"] = np.array(op_types(paths["sum"], names))
    for name in VARIANTS + SMALL:
        figures.update(variant_figures(paths, name, root / name))
    return figures


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build(tmp_path_factory.mktemp("arch"))


@pytest.fixture(scope="module")
def records():
    with np.load(RECORDS, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


@pytest.mark.smoke
def test_bins_read_from_the_tar_are_x86s_bytes(built):
    recorded = json.loads((REPO_ROOT / "tests" / "data" / "bin_sha256.json").read_text())
    for dtype in ("uint8", "float32"):
        made = {f"{built['stems'][path.stem]}.bin": hashlib.sha256(path.read_bytes()).hexdigest()
                for path in built[f"bins_{dtype}"].glob("*.bin")}
        assert made == {f"{stem}.bin": recorded[dtype][f"{stem}.bin"] for stem in IMAGES}, dtype


@pytest.mark.parametrize("form", list(FORMS))
def test_every_export_gives_x86s_logits_on_the_runner(built, records, form, tmp_path):
    logits = infer(built, form, tmp_path)
    np.testing.assert_allclose(logits, records[form], rtol=0, atol=LOGIT_TOLERANCE)
    assert (np.argmax(logits, axis=1) == np.argmax(records[form], axis=1)).all()


def test_openvino_runs_in_f32_and_gives_x86s_logits(built, records, tmp_path):
    """OpenVINO, optional on aarch64 (CI installs it there): its Arm plugin would pick f16 on CPUs that have it;
    the runner pins f32 and refuses any other precision."""
    pytest.importorskip("openvino", reason="OpenVINO is optional on aarch64 (pip install openvino); CI installs it")
    from t2t_vit.runtime.backends import load_backend

    backend = load_backend("openvino", built["matmul"], threads=2, batch_size=2)
    assert str(backend.compiled.get_property("INFERENCE_PRECISION_HINT")) in ("f32", "<Type: 'float32'>")
    logits = infer(built, "matmul", tmp_path, "--backend", "openvino")
    np.testing.assert_allclose(logits, records["matmul"], rtol=0, atol=LOGIT_TOLERANCE)
    assert (np.argmax(logits, axis=1) == np.argmax(records["matmul"], axis=1)).all()


def test_gen_cfg_keeps_x86s_nodes(built, records, tmp_path):
    """The same names (the ops of the same subgraphs under torch < 1.13, which names nodes by a counter)."""
    names = keep_names(built, tmp_path)
    assert len(names) == len(records["keep_dtype"]) == 76
    assert op_types(built["sum"], names) == records["keep_dtype_ops"].tolist()
    if names[0].startswith("/"):  # scope names, as the records' exporter gives
        assert names == records["keep_dtype"].tolist()


def test_the_npu_emulation_gives_x86s_logits(built, records, tmp_path):
    keep_names(built, tmp_path)
    logits = infer(built, "sum", tmp_path / "emulated", "--precision", "npu-fp16", "--keep-dtype",
                   str(tmp_path / "keep_dtype.cfg"))
    assert np.isfinite(logits).all()
    np.testing.assert_allclose(logits, records["npu_fp16"], rtol=0, atol=EMULATION_TOLERANCE)
    assert (np.argmax(logits, axis=1) == np.argmax(records["npu_fp16"], axis=1)).all()


@pytest.mark.parametrize("name", [*VARIANTS, *(pytest.param(name, marks=pytest.mark.smoke) for name in SMALL)])
def test_another_variant_gives_x86s_logits_keep_set_and_fp16(built, records, name, tmp_path):
    """t2t_vit_7 (performer, 256 wide) and t2t_vit_t_14 (softmax tokens-to-token): the export's logits, gen_cfg's
    keep set (the same ops; the same names where the exporter names by scope) and the fp16 emulation under it."""
    figures = variant_figures(built, name, tmp_path)
    np.testing.assert_allclose(figures[name], records[name], rtol=0, atol=LOGIT_TOLERANCE)
    assert (np.argmax(figures[name], axis=1) == np.argmax(records[name], axis=1)).all()
    names = figures[f"{name}_keep_dtype"].tolist()
    assert figures[f"{name}_keep_dtype_ops"].tolist() == records[f"{name}_keep_dtype_ops"].tolist()
    if names and names[0].startswith("/"):
        assert names == records[f"{name}_keep_dtype"].tolist()
    emulated = figures[f"{name}_npu_fp16"]
    assert np.isfinite(emulated).all()
    np.testing.assert_allclose(emulated, records[f"{name}_npu_fp16"], rtol=0, atol=EMULATION_TOLERANCE)
    assert (np.argmax(emulated, axis=1) == np.argmax(records[f"{name}_npu_fp16"], axis=1)).all()


def test_the_main_job_and_postprocess_on_the_official_pair(built, records, tmp_path):
    """The main job on the tar + devkit (the exports above reused, as a re-run would): its scores are the
    postprocess stage's on x86's logits."""
    from t2t_vit.data.dataset import read_labels

    for form in ("sum", "matmul_uint8"):  # the job's own exports (uint8 bins), made by the tests above
        assert built[form].is_file()
    env = {**os.environ, "PYTHON": sys.executable}
    result = subprocess.run(["bash", str(REPO_ROOT / "T2T_ViT_eval.sh"), "--work-dir", str(built["work"]),
                             "--pth-path", str(built["checkpoint"]), "--data-dir", str(built["tar"]), "--devkit",
                             str(built["devkit"]), "--batch-sizes", "2", "--loop", "1", "--no-progress"],
                            env=env, capture_output=True, text=True, timeout=3600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.count("reusing") >= 2  # the sum and matmul_uint8 exports
    row = json.loads((built["work"] / "eval_summary.json").read_text())["rows"][0]
    labels = read_labels(built["work"] / "label.npy")
    truth = {built["stems"][name]: int(label) for name, label in zip(labels["name"].tolist(), labels["label"].tolist())}
    expected = np.mean([np.argmax(records["matmul_uint8"][i]) == truth[stem] for i, stem in enumerate(IMAGES)])
    assert row["count"] == 2 and row["top1"] == pytest.approx(100 * expected)
    import T2T_ViT_postprocess

    assert T2T_ViT_postprocess.main(["--result-dir", str(built["work"] / "result_t2t_vit_14" / "bs2"), "--gt-path",
                                     str(built["work"] / "label.npy"), "--results-file", str(tmp_path / "acc.json"),
                                     "-q"]) == 0
    assert json.loads((tmp_path / "acc.json").read_text())["top1"] == row["top1"]


@pytest.mark.smoke
def test_the_main_job_and_postprocess_on_a_small_variant(built, records, tmp_path):
    """The main job on the tar + devkit with the small performer variant (its own exports: uint8 bins, batch 2):
    the logits of the smoke subset's export on x86, the same top-1 as postprocess on its result files."""
    from t2t_vit.data.dataset import read_labels

    name = SMALL[0]
    work = tmp_path / "work"
    checkpoint = fixed_checkpoint(tmp_path / f"{name}.pth.tar", name)
    env = {**os.environ, "PYTHON": sys.executable}
    result = subprocess.run(["bash", str(REPO_ROOT / "T2T_ViT_eval.sh"), "--work-dir", str(work), "--pth-path",
                             str(checkpoint), "--data-dir", str(built["tar"]), "--devkit", str(built["devkit"]),
                             "--batch-sizes", "2", "--loop", "1", "--no-progress"],
                            env=env, capture_output=True, text=True, timeout=3600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    row = json.loads((work / "eval_summary.json").read_text())["rows"][0]
    labels = read_labels(work / "label.npy")
    names = labels["name"].tolist()
    logits = {built["stems"][stem]: np.fromfile(work / f"result_{name}" / "bs2" / f"{stem}_0.bin", np.float32) for stem in names}
    np.testing.assert_allclose(np.stack([logits[stem] for stem in IMAGES]), records[name], rtol=0, atol=LOGIT_TOLERANCE)
    import T2T_ViT_postprocess

    assert T2T_ViT_postprocess.main(["--result-dir", str(work / f"result_{name}" / "bs2"), "--gt-path", str(work / "label.npy"),
                                     "--results-file", str(tmp_path / "acc.json"), "-q"]) == 0
    assert row["count"] == 2 and json.loads((tmp_path / "acc.json").read_text())["top1"] == row["top1"]


@pytest.mark.smoke
def test_the_default_runtime_says_what_it_runs(caplog, monkeypatch):
    import logging
    import platform

    from t2t_vit.runtime.backends import ARM_NOTE, choose_backend, on_arm

    caplog.set_level(logging.INFO)
    if not on_arm():
        monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    assert choose_backend(None) == "onnxruntime" and ARM_NOTE in caplog.text
    assert choose_backend(None, "npu-fp16") == "onnxruntime"


@pytest.mark.smoke
@pytest.mark.parametrize("error, expected", [
    ("/lib64/libc.so.6: version `GLIBC_2.28' not found (required by /venv/torch/lib/libtorch_cpu.so)",
     r"error: a package's binary \(/venv/torch/lib/libtorch_cpu\.so\) needs glibc 2\.28, and this host has .*"
     r"pip install -r requirements-host\.txt"),
    ("/venv/onnxruntime/capi/onnxruntime_pybind11_state.so: wrong ELF class: ELFCLASS32",
     r"error: a package's binary does not load on this \S+ host .*wrong ELF class.*--force-reinstall"),
], ids=["glibc", "elf"])
def test_an_architecture_limit_is_one_line_not_a_traceback(error, expected, capsys):
    import argparse
    import re

    from t2t_vit import cli

    def action():
        raise ImportError(error)

    assert cli.run(action, argparse.Namespace()) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.match(expected, err), err
    with pytest.raises(ImportError):  # any other import error is a bug: its traceback stays
        cli.run(lambda: exec("import no_such_module_here"), argparse.Namespace())


if __name__ == "__main__":
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(description="write tests/data/arch_reference.npz (on x86)")
    parser.add_argument("--record", action="store_true", required=True)
    parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        measured = measure(Path(scratch))
    np.savez(RECORDS, **measured)
    print(f"wrote {RECORDS}: {', '.join(f'{key} {value.shape}' for key, value in measured.items())}")
