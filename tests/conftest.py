"""Shared fixtures: models with well-scaled random weights and checkpoints built in code."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The test-only variants (t2t_vit_test, t2t_vit_t_test: one block, 64 wide) exist for this process and the scripts it
# starts: set before the first import of the package, which reads it once.
os.environ["T2T_VIT_TEST_VARIANTS"] = "1"

import torch  # noqa: E402

from t2t_vit.model.network import create_model, scaled_random_state_dict  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
UPSTREAM_ENV = "T2T_VIT_UPSTREAM"


OPTIONAL_PACKAGES = ("scipy", "matplotlib", "openvino")  # not in the host line: a minimal Ascend host may lack them


WORKERS = 2  # the machines this is run on have 2 cores; -n N (N > 0) or -n 0 (serially) overrides it


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config):
    """Run on WORKERS processes where pytest-xdist is installed and no -n was given: most of the suite's time is one
    core's (imports, scripts started as processes), so two workers take about 0.6 of the time on 2 cores. Each test
    file stays on one worker (--dist loadfile), so module fixtures are made once. Without pytest-xdist the suite runs
    serially, as it is."""
    if (config.pluginmanager.hasplugin("xdist") and config.getoption("numprocesses", None) is None
            and not hasattr(config, "workerinput") and not config.getoption("collectonly")):
        config.option.numprocesses = WORKERS
        if config.getoption("dist") == "no":
            config.option.dist = "loadfile"


def pytest_configure(config):
    config.addinivalue_line("markers", "needs(package): the test needs an optional package (one of "
                                       f"{', '.join(OPTIONAL_PACKAGES)}); skipped, naming it, where it is absent")


def pytest_runtest_setup(item):
    from t2t_vit.version_bridge import installed

    for marker in item.iter_markers("needs"):
        for package in marker.args:
            if not installed(package):
                pytest.skip(f"{package} is not installed: it is optional on a host (pip install {package}); the "
                            f"rest of the suite runs without it")


# the CPU runtimes to parametrize over: OpenVINO only where it is installed (it is optional on a host)
BACKENDS = ["onnxruntime", pytest.param("openvino", marks=pytest.mark.needs("openvino"))]


@pytest.fixture(autouse=True)
def work_in_tmp_path(tmp_path, monkeypatch):
    """Every test runs in its own temporary folder: a relative output path never lands in the repository."""
    monkeypatch.chdir(tmp_path)


def seeded_model(*args, seed: int = 0, **kwargs):
    """``create_model(*args, **kwargs)`` with the performers' fixed random projections ``w`` drawn from ``seed``.

    They are drawn when the model is built (as upstream does) and ``scaled_random_state_dict`` keeps them, so a model
    built without a seed is another model in every run: T2T-ViT-14's fp16 emulation flipped a near tie in one run of
    six that way. The global generator is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return create_model(*args, **kwargs)


@pytest.fixture(scope="session")
def reference_weights() -> dict[str, torch.Tensor]:
    return scaled_random_state_dict(seeded_model("einsum"), seed=0)


@pytest.fixture(scope="session")
def reference_model(reference_weights):
    model = create_model("einsum")
    model.load_state_dict(reference_weights)
    return model


def save_published_layout(path: Path, weights: dict[str, torch.Tensor], name: str) -> Path:
    """``weights`` saved as a checkpoint in the published layout (EMA and plain weights equal, args as a Namespace)."""
    import argparse

    torch.save({"state_dict": weights, "state_dict_ema": weights, "epoch": 309, "arch": name,
                "args": argparse.Namespace(model=name)}, path)
    return path


def export_every_form(folder: Path, weights: dict[str, torch.Tensor], name: str, prefix: str) -> dict[str, Path]:
    """The exports of variant ``name`` with ``weights`` (sum and matmul, opset 11; einsum, opset 12), verified at
    batch 1, as ``folder/<prefix>_<form>.onnx``."""
    from t2t_vit.model.export import export_onnx
    from t2t_vit.model.variants import BY_NAME

    paths = {}
    for performer, opset in (("sum", 11), ("matmul", 11), ("einsum", 12)):
        model = create_model(performer, name)
        model.load_state_dict(weights)
        paths[performer] = folder / f"{prefix}_{performer}.onnx"
        export_onnx(model, paths[performer], opset=opset, data_config=BY_NAME[name].data_config(),
                    verify_batch_sizes=(1,))
    return paths


@pytest.fixture(scope="session")
def checkpoint_path(tmp_path_factory, reference_weights) -> Path:
    """T2T-ViT-14's checkpoint in the published layout."""
    return save_published_layout(tmp_path_factory.mktemp("checkpoint") / "t2t_vit_14.pth.tar", reference_weights,
                                 "t2t_vit_14")


# The fast tier's model: the test-only performer variant (one block, 64 wide), built from the same code as the
# published ones. Where a check is about the model's size (T2T-ViT-14's shapes, every variant against PyTorch and
# upstream), it runs in the slow tier on the published variants instead.
TINY = "t2t_vit_test"


@pytest.fixture(scope="session")
def tiny_weights() -> dict[str, torch.Tensor]:
    return scaled_random_state_dict(seeded_model("einsum", TINY), seed=0)


@pytest.fixture(scope="session")
def tiny_model(tiny_weights):
    model = create_model("einsum", TINY)
    model.load_state_dict(tiny_weights)
    return model


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_weights) -> Path:
    """The tiny model's checkpoint in the published layout."""
    return save_published_layout(tmp_path_factory.mktemp("tiny_checkpoint") / f"{TINY}.pth.tar", tiny_weights, TINY)


@pytest.fixture(scope="session")
def tiny_exports(tmp_path_factory, tiny_weights):
    """The tiny model's exports of every form."""
    return export_every_form(tmp_path_factory.mktemp("tiny_exports"), tiny_weights, TINY, TINY)


@pytest.fixture(scope="session")
def tiny_split_exports(tmp_path_factory, tiny_model) -> dict[str, Path]:
    """The tiny model's einsum export (opset 12) with its soft splits as convolutions and as unfolds."""
    from t2t_vit.model.export import export_onnx

    folder = tmp_path_factory.mktemp("tiny_split_exports")
    paths = {form: folder / f"{form}.onnx" for form in ("conv", "unfold")}
    for form, path in paths.items():
        export_onnx(tiny_model, path, opset=12, verify_batch_sizes=(2,), splits=form)
    return paths


@pytest.fixture(params=[pytest.param("tiny_exports", id=TINY),
                        pytest.param("exported_onnx", id="t2t_vit_14", marks=pytest.mark.slow)])
def exports_by_size(request):
    """The exports of the tiny model (fast tier) and of T2T-ViT-14 (slow tier), for the checks that hold for both:
    the tokens-to-token module, where the performers are, is the same in both."""
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="session")
def upstream_root() -> Path:
    """An upstream T2T-ViT checkout at commit 0f63dc9, from $T2T_VIT_UPSTREAM (CI has none)."""
    root = os.environ.get(UPSTREAM_ENV)
    if not root:
        pytest.skip(f"set {UPSTREAM_ENV} to an upstream T2T-ViT checkout to run this test")
    root = Path(root)
    if not (root / "models" / "token_performer.py").is_file():
        pytest.fail(f"{UPSTREAM_ENV}={root} has no models/token_performer.py")
    return root


SAMPLE_DIR = REPO_ROOT / "tests" / "data" / "imagenet-sample"  # shipped: tiny, large, grayscale, odd names
SAMPLE_COUNT = 26
SHARED_DIR = REPO_ROOT.parent / "shared" / "data" / "imagenet-sample"  # beside a developer's clone only


@pytest.fixture(scope="session")
def sample_images() -> list[Path]:
    """The 26 real ImageNet JPEGs shipped in tests/data (one per class, named <synset>_<words>.JPEG)."""
    images = sorted(SAMPLE_DIR.glob("*.JPEG"))
    assert len(images) == SAMPLE_COUNT, f"expected the {SAMPLE_COUNT} shipped images in {SAMPLE_DIR}"
    return images


@pytest.fixture(scope="session")
def shared_images() -> list[Path]:
    """The 200 real ImageNet JPEGs of ../shared, for the checks that want more than the shipped ones."""
    images = sorted(SHARED_DIR.glob("*.JPEG"))
    if len(images) != 200:
        pytest.skip(f"the 200 shared images are not beside this clone ({SHARED_DIR}); the shipped "
                    f"{SAMPLE_COUNT} cover the same cases")
    return images


def make_val_tree(root: Path, images) -> Path:
    """Lay images out as ImageNet val: root/<synset>/<file>, the synset taken from the file name prefix."""
    for image in images:
        folder = root / image.name.split("_", 1)[0]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / image.name).symlink_to(image)
    return root


def reference_transform(path, data_config=None):
    """timm's eval transform of the image at ``path``: the bar the preprocess stage must meet exactly."""
    import timm.data
    from PIL import Image

    from t2t_vit.config import resolve_data_config

    transform = timm.data.create_transform(**(data_config or resolve_data_config()))
    with Image.open(path) as image:
        return transform(image.convert("RGB")).numpy()[None]


@pytest.fixture(scope="session")
def exported_onnx(tmp_path_factory, reference_weights):
    """The T2T-ViT-14 exports of every form of the reference weights."""
    return export_every_form(tmp_path_factory.mktemp("exports"), reference_weights, "t2t_vit_14", "t2t_vit")


# A stand-in for `python3 -m ais_bench` on an Ascend host: it checks the command line with ais_bench's
# spellings, writes 1000 logits per input (the input's first 1000 bytes: they differ by image, as a live
# model's do)
# and the summary, and records what it was asked.
AIS_BENCH = '''
import argparse, json, os, sys
import numpy as np
p = argparse.ArgumentParser()
for name in ("--model", "--input", "--output", "--output_dirname", "--outfmt"):
    p.add_argument(name)
for name in ("--batchsize", "--loop", "--warmup_count"):
    p.add_argument(name, type=int)
args = p.parse_args()
with open(os.environ["AIS_BENCH_LOG"], "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
folder = os.path.join(args.output, args.output_dirname)
os.makedirs(folder, exist_ok=True)
if args.input:
    for name in sorted(os.listdir(args.input)):
        if name.endswith(".bin"):
            # logits that differ by image, as a live model's do: the input's first 1000 bytes
            pixels = np.fromfile(os.path.join(args.input, name), np.uint8)[:1000].astype(np.float32)
            pixels.tofile(os.path.join(folder, name.split(".")[0] + "_0.bin"))
stats = {"min": 5.0, "max": 5.0, "mean": 5.0, "median": 5.0, "percentile(99%)": 5.0, "count": args.loop}
json.dump({"filesinfo": {}, "args": sys.argv, "NPU_compute_time": stats, "H2D_latency": stats, "D2H_latency": stats,
           "throughput": 1000.0 * args.batchsize / 5.0, "npu_compute_time_list": [5.0] * args.loop, "pid": 1},
          open(folder + "_summary.json", "w"))
'''
