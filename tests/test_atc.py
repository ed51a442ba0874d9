"""T2T_ViT_atc.sh up to the process boundary: stand-in atc and npu-smi record what they are given."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

SCRIPT = REPO_ROOT / "T2T_ViT_atc.sh"

NPU_SMI = r"""#!/usr/bin/env bash
cat <<'T'
+-------------------------------+-----------------+------------------------------------------------------+
| NPU     Name                  | Health          | Power(W)     Temp(C)           Hugepages-Usage(page) |
| Chip    Device                | Bus-Id          | AICore(%)    Memory-Usage(MB)                        |
+===============================+=================+======================================================+
| 0       310P3                 | OK              | NA           42                0     / 0             |
| 0       0                     | 0000:3B:00.0    | 0            1423 / 21527                            |
+===============================+=================+======================================================+
T
"""

# Records its arguments, one call per line, and writes the .om under the name $ATC_NAMING asks for.
ATC = r"""#!/usr/bin/env bash
echo "$*" >> "$ATC_LOG"
for argument in "$@"; do case "$argument" in --output=*) output="${argument#--output=}";; esac; done
if [ "$ATC_NAMING" = "suffixed" ]; then touch "${output}_linux_x86_64.om"; else touch "${output}.om"; fi
"""


@pytest.fixture
def workdir(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("atc", ATC), ("npu-smi", NPU_SMI)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    write_tiny_onnx(tmp_path / "model.onnx", 224)
    (tmp_path / "keep_dtype.cfg").write_text("/tokens_to_token/attention1/kernel/Split\n")
    return tmp_path


def write_tiny_onnx(path, side):
    """A float model with T2T-ViT's interface, image (N, 3, side, side) -> class (N, 3): what ATC is given."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["image"], ["class"], axes=[2, 3], keepdims=0, name="pool")], "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, side, side])],
        [helper.make_tensor_value_info("class", TensorProto.FLOAT, ["batch", 3])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)]), str(path))


def run(workdir, *args, naming="plain", tools=("atc", "npu-smi")):
    path_dirs = [str(workdir / "bin")] if tools else []
    if tools != ("atc", "npu-smi"):
        limited = workdir / "limited"
        limited.mkdir(exist_ok=True)
        for tool in tools:
            if not (limited / tool).exists():
                (limited / tool).symlink_to(workdir / "bin" / tool)
        path_dirs = [str(limited)]
    env = {**os.environ, "PATH": ":".join(path_dirs + ["/usr/bin", "/bin"]), "ATC_LOG": str(workdir / "atc.log"),
           "ATC_NAMING": naming, "PYTHON": sys.executable}
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=workdir, env=env, capture_output=True, text=True)


def test_default_batch_sizes_and_exact_command_lines(workdir):
    result = run(workdir, "--onnx", "model.onnx")
    assert result.returncode == 0, result.stderr
    calls = (workdir / "atc.log").read_text().splitlines()
    assert calls == [f"--framework=5 --model=model.onnx --output=./T2T_ViT_bs{bs} --input_format=NCHW "
                     f"--input_shape=image:{bs},3,224,224 --log=error --soc_version=Ascend310P3 "
                     f"--keep_dtype=keep_dtype.cfg" for bs in (1, 4, 8, 16, 32, 64)]
    assert all((workdir / f"T2T_ViT_bs{bs}.om").is_file() for bs in (1, 4, 8, 16, 32, 64))


def test_the_input_shape_comes_from_the_onnx_and_an_empty_keep_set_is_left_out(workdir):
    write_tiny_onnx(workdir / "model_384.onnx", 384)  # t2t_vit_14_384's input
    (workdir / "empty.cfg").write_text("\n")  # gen_cfg.py --minimize found fp16 holds with nothing kept
    result = run(workdir, "--onnx", "model_384.onnx", "--batch-sizes", "4", "--keep-dtype", "empty.cfg")
    assert result.returncode == 0, result.stderr
    assert (workdir / "atc.log").read_text().splitlines() == [
        "--framework=5 --model=model_384.onnx --output=./T2T_ViT_bs4 --input_format=NCHW "
        "--input_shape=image:4,3,384,384 --log=error --soc_version=Ascend310P3"]
    assert "empty.cfg names no node: nothing is kept in fp32 (--keep_dtype left out)" in result.stdout
    import json

    assert json.loads((workdir / "T2T_ViT_bs4.om.json").read_text())["input_shape"] == "3,384,384"


@pytest.mark.parametrize("given, expected", [("310P3", "Ascend310P3"), ("Ascend310P3", "Ascend310P3"),
                                             ("Ascend910B", "Ascend910B")])
def test_soc_version_prefix_is_never_doubled(workdir, given, expected):
    result = run(workdir, "--onnx", "model.onnx", "--batch-sizes", "1", "--soc-version", given, tools=("atc",))
    assert result.returncode == 0, result.stderr
    assert f"--soc_version={expected} " in (workdir / "atc.log").read_text()


def test_suffixed_om_name_is_found_and_linked(workdir):
    result = run(workdir, "--onnx", "model.onnx", "--batch-sizes", "8", "--out-dir", "om", naming="suffixed")
    assert result.returncode == 0, result.stderr
    link = workdir / "om" / "T2T_ViT_bs8.om"
    assert link.is_symlink() and os.readlink(link) == "T2T_ViT_bs8_linux_x86_64.om"


@pytest.mark.parametrize("args, tools, pattern", [
    (("--onnx", "model.onnx"), ("npu-smi",), "atc not found on PATH"),
    (("--onnx", "model.onnx"), ("atc",), "no --soc-version given and npu-smi not found"),
    (("--onnx", "missing.onnx"), ("atc", "npu-smi"), "ONNX model missing.onnx does not exist"),
    (("--onnx", "model.onnx", "--keep-dtype", "none.cfg"), ("atc", "npu-smi"), "gen_cfg.py"),
    (("--onnx", "model.onnx", "--batch-sizes", "1 x"), ("atc", "npu-smi"), "batch size 'x'"),
    ((), ("atc", "npu-smi"), "--onnx is required"),
])
def test_clear_errors(workdir, args, tools, pattern):
    result = run(workdir, *args, tools=tools)
    assert result.returncode == 1 and pattern in result.stderr
    assert not (workdir / "atc.log").exists()


def test_each_om_gets_a_build_record_that_the_main_job_accepts(workdir):
    import json

    from t2t_vit.job.om import om_for_batch
    from t2t_vit.job.request import JobError
    from t2t_vit.job.stamps import Digests

    result = run(workdir, "--onnx", "model.onnx", "--batch-sizes", "1 8", "--out-dir", "om", naming="suffixed")
    assert result.returncode == 0, result.stderr
    digest = Digests()
    onnx_sha, keep_sha = digest(workdir / "model.onnx"), digest(workdir / "keep_dtype.cfg")
    for batch in (1, 8):
        record = json.loads((workdir / "om" / f"T2T_ViT_bs{batch}.om.json").read_text())
        assert record == {"onnx": "model.onnx", "onnx_sha256": onnx_sha, "keep_dtype": "keep_dtype.cfg",
                          "keep_dtype_sha256": keep_sha, "aipp": None, "aipp_sha256": None, "input_dtype": "float32",
                          "om_sha256": digest(workdir / "om" / f"T2T_ViT_bs{batch}.om"),
                          "soc_version": "Ascend310P3", "batch_size": batch, "input_shape": "3,224,224"}
        om = workdir / "om" / f"T2T_ViT_bs{batch}.om"
        assert om_for_batch(workdir / "om", batch, onnx_sha, keep_sha, digest, "float32") == om
        with pytest.raises(JobError, match="takes float32 input"):  # built without --aipp: not for uint8 bins
            om_for_batch(workdir / "om", batch, onnx_sha, keep_sha, digest, "uint8")
        with pytest.raises(JobError, match="takes 224x224 images, this run's model and bins are 384x384"):
            om_for_batch(workdir / "om", batch, onnx_sha, keep_sha, digest, "float32", img_size=384)
    write_tiny_onnx(workdir / "model.onnx", 232)  # the checkpoint changed and the ONNX was made again
    with pytest.raises(JobError, match="built from another ONNX"):
        om_for_batch(workdir / "om", 1, digest(workdir / "model.onnx"), keep_sha, digest)


# An Atlas 300I Duo: two 310P3 chips behind one NPU id and Bus-Id (FACTS 12's layout).
NPU_SMI_DUO = r"""#!/usr/bin/env bash
cat <<'T'
+--------------------------------------------------------------------------------------------------------+
| npu-smi 23.0.0                                   Version: 23.0.0                                       |
+-------------------------------+-----------------+------------------------------------------------------+
| NPU     Name                  | Health          | Power(W)     Temp(C)           Hugepages-Usage(page) |
| Chip    Device                | Bus-Id          | AICore(%)    Memory-Usage(MB)                        |
+===============================+=================+======================================================+
| 2       310P3                 | OK              | NA           45                0     / 0             |
| 0       0                     | 0000:01:00.0    | 0            1529 / 44280                            |
+-------------------------------+-----------------+------------------------------------------------------+
| 2       310P3                 | OK              | NA           43                0     / 0             |
| 1       1                     | 0000:01:00.0    | 0            1412 / 43693                            |
+===============================+=================+======================================================+
T
"""


def test_dynamic_batch_builds_one_model_for_every_gear(workdir):
    import json

    (workdir / "bin" / "npu-smi").write_text(NPU_SMI_DUO)
    result = run(workdir, "--onnx", "model.onnx", "--keep-dtype", "keep_dtype.cfg", "--batch-sizes",
                 "1 4 8 16 32 64", "--dynamic-batch", "--out-dir", "om")
    assert result.returncode == 0, result.stderr
    assert (workdir / "atc.log").read_text().splitlines() == [
        "--framework=5 --model=model.onnx --output=om/T2T_ViT_dyn --input_format=NCHW "
        "--input_shape=image:-1,3,224,224 --log=error --soc_version=Ascend310P3 --keep_dtype=keep_dtype.cfg "
        "--dynamic_batch_size=1,4,8,16,32,64"]
    record = json.loads((workdir / "om" / "T2T_ViT_dyn.om.json").read_text())
    assert record["dynamic_batch_sizes"] == [1, 4, 8, 16, 32, 64] and record["batch_size"] is None
    assert record["input_shape"] == "3,224,224" and record["soc_version"] == "Ascend310P3"
    assert not list((workdir / "om").glob("T2T_ViT_bs*"))  # one build instead of six


def test_dynamic_batch_with_aipp_takes_the_aipp_config_too(workdir):
    result = run(workdir, "--onnx", "model.onnx", "--batch-sizes", "8 1", "--dynamic-batch", "--aipp")
    assert result.returncode == 0, result.stderr
    (call,) = (workdir / "atc.log").read_text().splitlines()
    assert "--input_shape=image:-1,3,224,224" in call and call.endswith(
        "--insert_op_conf=./aipp.cfg --dynamic_batch_size=1,8")  # gears in increasing order


@pytest.mark.parametrize("sizes", ["8", "4 4"])
def test_dynamic_batch_refuses_a_single_gear_in_one_line(workdir, sizes):
    result = run(workdir, "--onnx", "model.onnx", "--batch-sizes", sizes, "--dynamic-batch")
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert "--dynamic-batch needs 2 to 100 batch sizes (ATC's --dynamic_batch_size gears), got 1" in result.stderr
    assert not (workdir / "atc.log").exists()


def test_the_build_record_has_one_reader_for_every_era(tmp_path):
    """Records written before a field existed read its default; a missing or broken record reads as none."""
    from t2t_vit.ascend.om_record import main, read_record

    om = tmp_path / "T2T_ViT_bs4.om"
    om.write_bytes(b"om")
    assert read_record(om) is None
    (tmp_path / "T2T_ViT_bs4.om.json").write_text('{"onnx": "a.onnx", "batch_size": 4, "input_shape": "3,384,384"}')
    record = read_record(om)
    assert (record.input_dtype, record.input_side, record.batch_size, record.dynamic_batch_sizes) == \
        ("float32", 384, 4, None)
    (tmp_path / "T2T_ViT_bs4.om.json").write_text("{not json")
    assert read_record(om) is None
    assert main(["--om", str(om), "--onnx", str(tmp_path / "missing.onnx"), "--keep-dtype", str(om),
                 "--soc-version", "Ascend310P3", "--input-shape", "3,224,224", "--batch-size", "4"]) == 1
    assert read_record(om) is None  # nothing written on a refusal
