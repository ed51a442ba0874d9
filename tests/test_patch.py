"""token_performer.patch: the einsum-free rewrite of the upstream performer."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys

import onnx
import pytest
import torch

from conftest import REPO_ROOT
from t2t_vit.version_bridge import export_onnx_torchscript

PATCH = REPO_ROOT / "token_performer.patch"


def _hunks(text: str) -> list[list[str]]:
    hunks: list[list[str]] = []
    for line in text.splitlines():
        if line.startswith("@@"):
            hunks.append([])
        elif hunks:
            hunks[-1].append(line)
    return hunks


def test_patch_is_a_minimal_einsum_rewrite():
    text = PATCH.read_text()
    headers = [line for line in text.splitlines() if line.startswith(("--- ", "+++ "))]
    assert headers == ["--- a/models/token_performer.py", "+++ b/models/token_performer.py"]
    removed = [line[1:] for hunk in _hunks(text) for line in hunk if line.startswith("-")]
    added = [line[1:] for hunk in _hunks(text) for line in hunk if line.startswith("+")]
    assert len(removed) == len(added) == 4
    assert all("torch.einsum(" in line for line in removed)
    assert not any("einsum(" in line for line in added)
    # Each rewritten line assigns the same variable as the line it replaces.
    assert [line.split("=")[0] for line in removed] == [line.split("=")[0] for line in added]


def test_patch_applies_to_its_own_preimage(tmp_path):
    # Rebuild the upstream lines the patch expects (context + removed) and apply it with the seed's
    # command form; the real upstream file is tested below when a checkout is available.
    preimage = [line[1:] for hunk in _hunks(PATCH.read_text()) for line in hunk if line[:1] in (" ", "-")]
    target = tmp_path / "models" / "token_performer.py"
    target.parent.mkdir()
    target.write_text("\n".join(preimage) + "\n")
    subprocess.run(["patch", "-p1", "--fuzz=0", str(target.relative_to(tmp_path)), str(PATCH)],
                   cwd=tmp_path, check=True, capture_output=True)
    assert "torch.einsum(" not in target.read_text()


def _load_module(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def patched_tree(upstream_root, tmp_path):
    shutil.copytree(upstream_root / "models", tmp_path / "models")
    result = subprocess.run(["patch", "-p1", "--fuzz=0", "models/token_performer.py", str(PATCH)],
                            cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not re.search(r"offset|fuzz", result.stdout), result.stdout  # applies exactly, not loosely
    return tmp_path


@pytest.mark.parametrize("batch", [1, 3], ids=lambda b: f"batch{b}")
def test_patched_upstream_performer_is_equivalent_and_exports_without_einsum(patched_tree, upstream_root, tmp_path,
                                                                              batch):
    original = _load_module(upstream_root / "models" / "token_performer.py", "upstream_token_performer")
    patched = _load_module(patched_tree / "models" / "token_performer.py", "patched_token_performer")
    torch.manual_seed(0)
    reference = original.Token_performer(dim=147, in_dim=64).eval()
    rewritten = patched.Token_performer(dim=147, in_dim=64).eval()
    rewritten.load_state_dict(reference.state_dict())
    tokens = torch.randn(batch, 196, 147)
    with torch.no_grad():
        torch.testing.assert_close(rewritten(tokens), reference(tokens), rtol=1e-5, atol=1e-5)
    out = tmp_path / "performer.onnx"
    with torch.no_grad():
        export_onnx_torchscript(rewritten, (tokens,), str(out), opset_version=11)
    op_types = {node.op_type for node in onnx.load(str(out)).graph.node}
    assert "Einsum" not in op_types and "ReduceSum" in op_types


def test_patched_upstream_model_exports_at_opset_11_without_einsum(patched_tree, tmp_path):
    # A fresh interpreter, so the upstream `models` package does not meet the one other tests import.
    out = tmp_path / "upstream_patched.onnx"
    script = (
        "import sys, warnings, torch; warnings.simplefilter('ignore'); sys.path.insert(0, sys.argv[1])\n"
        "from models.t2t_vit import t2t_vit_14\n"
        "from t2t_vit.version_bridge import export_onnx_torchscript\n"
        "model = t2t_vit_14().eval()\n"
        "export_onnx_torchscript(model, (torch.zeros(1, 3, 224, 224),), sys.argv[2], opset_version=11,\n"
        "                        input_names=['image'], output_names=['class'], dynamic_axes={'image': {0: 'n'}})\n"
    )
    subprocess.run([sys.executable, "-c", script, str(patched_tree), str(out)], check=True, capture_output=True,
                   cwd=REPO_ROOT)
    op_types = {node.op_type for node in onnx.load(str(out)).graph.node}
    assert "Einsum" not in op_types and "ReduceSum" in op_types
    from t2t_vit.ascend.keep_dtype import keep_dtype_nodes

    subgraphs = keep_dtype_nodes(out)  # gen_cfg finds both performers of the patched upstream export too
    assert len(subgraphs) == 2 and all(subgraph.kind == "performer" for subgraph in subgraphs)
    op_of = {node.op_type for node in onnx.load(str(out)).graph.node if node.name in subgraphs[0].nodes}
    assert {"Split", "Exp", "ReduceSum", "Div"} <= op_of  # each a whole kernel (torch < 1.13 names by counter)
