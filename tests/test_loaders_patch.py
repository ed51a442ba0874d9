"""loaders.patch: timm 0.3.4's prefetching loader on a host without CUDA.

timm 0.3.4 is fetched with ``pip download`` (the test is skipped, saying so, when that fails). It
predates torch 1.9, so the child interpreter that imports it gets what it needs of ``torch._six`` (the names
torch 1.9 dropped; the whole module, which torch 2 removed); nothing else of the old timm is changed.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile

import numpy as np
import pytest

from conftest import REPO_ROOT

PATCH = REPO_ROOT / "loaders.patch"

CHILD = r"""
import collections.abc, sys, types
import numpy as np, torch
try:
    import torch._six as six  # torch 1.x has the module, without the names torch 1.9 dropped
except ImportError:
    six = sys.modules["torch._six"] = types.SimpleNamespace()
for name, value in (("container_abcs", collections.abc), ("string_classes", (str, bytes)), ("int_classes", int),
                    ("inf", float("inf"))):
    if not hasattr(six, name):
        setattr(six, name, value)
from PIL import Image
from timm.data import create_loader

paths = sys.argv[2:]

class Files(torch.utils.data.Dataset):
    transform = None
    def __len__(self):
        return len(paths)
    def __getitem__(self, index):
        return self.transform(Image.open(paths[index]).convert("RGB")), index

loader = create_loader(Files(), (3, 224, 224), batch_size=2, use_prefetcher=True, interpolation="bicubic",
                       crop_pct=0.9, num_workers=0)
batches = [(images.numpy(), targets.numpy(), str(images.device)) for images, targets in loader]
raw = [images.numpy() for images, _ in loader.loader]  # the uint8 batches before the prefetcher
np.savez(sys.argv[1], images=np.concatenate([b[0] for b in batches]), targets=np.concatenate([b[1] for b in batches]),
         raw=np.concatenate(raw), sizes=np.array([len(b[1]) for b in batches]),
         devices=np.array([b[2] for b in batches]))
"""


@pytest.fixture(scope="module")
def old_timm(tmp_path_factory):
    cache = tmp_path_factory.mktemp("timm034")
    result = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(cache),
                             "timm==0.3.4"], capture_output=True, text=True, timeout=600)
    wheels = sorted(cache.glob("timm-0.3.4-*.whl"))
    if result.returncode != 0 or not wheels:
        pytest.skip(f"timm 0.3.4 could not be fetched with pip download: {result.stderr.strip()[-300:]}")
    return wheels[0]


def _site(old_timm, root, patched: bool):
    with zipfile.ZipFile(old_timm) as wheel:
        wheel.extractall(root)
    if patched:  # the seed's command, run inside timm/data
        result = subprocess.run(["patch", "-p1", "--fuzz=0", "loader.py", str(PATCH)], cwd=root / "timm" / "data",
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "offset" not in result.stdout and "fuzz" not in result.stdout, result.stdout
    return root


def _run_child(site, out, paths):
    import os

    env = {**os.environ, "PYTHONPATH": str(site), "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run([sys.executable, "-c", CHILD, str(out), *map(str, paths)], env=env, capture_output=True,
                          text=True, timeout=300)


def test_patched_loader_yields_normalised_batches_on_the_cpu(old_timm, tmp_path, sample_images):
    from t2t_vit.config import resolve_data_config
    from t2t_vit.data.dataset import EvalTransform, open_rgb

    site = _site(old_timm, tmp_path / "site", patched=True)
    paths = sample_images[:5]
    result = _run_child(site, tmp_path / "out.npz", paths)
    assert result.returncode == 0, result.stderr[-2000:]
    out = np.load(tmp_path / "out.npz")
    assert out["sizes"].tolist() == [2, 2, 1]  # the last short batch is kept
    assert set(out["devices"].tolist()) == {"cpu"} and out["targets"].tolist() == [0, 1, 2, 3, 4]
    mean = np.array([0.485, 0.456, 0.406], dtype=np.float32).reshape(1, 3, 1, 1) * 255
    std = np.array([0.229, 0.224, 0.225], dtype=np.float32).reshape(1, 3, 1, 1) * 255
    np.testing.assert_allclose(out["images"], (out["raw"].astype(np.float32) - mean) / std, rtol=0, atol=1e-6)
    # Same pixels as this toolkit's preprocessing; (x - 255m) / 255s vs (x / 255 - m) / s differ by rounding only.
    ours = np.concatenate([EvalTransform(resolve_data_config())(open_rgb(path)) for path in paths])
    np.testing.assert_allclose(out["images"], ours, rtol=0, atol=1e-5)


def test_unpatched_loader_needs_cuda(old_timm, tmp_path, sample_images):
    site = _site(old_timm, tmp_path / "site", patched=False)
    result = _run_child(site, tmp_path / "out.npz", sample_images[:2])
    assert result.returncode != 0
    assert "NVIDIA" in result.stderr or "CUDA" in result.stderr
