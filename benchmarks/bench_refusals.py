#!/usr/bin/env python3
"""How fast a user's mistake is answered: each refusal's wall time against ``python -c "import torch"``.

    python3 benchmarks/bench_refusals.py               # 5 rounds, the shipped images
    python3 benchmarks/bench_refusals.py --rounds 9

Every case runs the real script in a fresh process, as a user types it (the main job through
T2T_ViT_eval.sh), in a scratch folder with a real checkpoint (random weights, the published layout) and real
images; the rounds interleave the cases and the torch import (this machine is shared and drifts). Printed per
case: the median wall time, its ratio to the median ``import torch`` of the same run (the target is at most
0.5, and under 1 s), the exit code and the one line of the answer. Only the checks that need the model (a
checkpoint's tensors) come after torch, by design.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SHIPPED = REPO / "tests" / "data" / "imagenet-sample"


def scratch(root: Path) -> None:
    """The user's folder: val/<synset>/<image>, an empty folder, a flat folder, a text file, a checkpoint."""
    import torch

    from t2t_vit.model.network import create_model

    images = sorted(SHIPPED.glob("*.JPEG"))[:4]
    for image in images:
        target = root / "val" / image.name.split("_")[0]
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(image, target / image.name)
    (root / "empty").mkdir()
    (root / "flat").mkdir()
    shutil.copy(images[0], root / "flat" / images[0].name)
    (root / "notes.txt").write_text("checkpoint: ask Li for the 81.5 one\n")
    torch.manual_seed(0)
    torch.save({"state_dict_ema": create_model("sum", "t2t_vit_7").state_dict(), "epoch": 1}, root / "ck.pth.tar")


def cases() -> dict[str, list[str]]:
    eval_sh = ["bash", str(REPO / "T2T_ViT_eval.sh")]
    python = [sys.executable]
    return {
        "eval: misspelled --data-dir": [*eval_sh, "--pth-path", "ck.pth.tar", "--data-dir", "vall"],
        "eval: empty folder": [*eval_sh, "--pth-path", "ck.pth.tar", "--data-dir", "empty"],
        "eval: missing --label-file": [*eval_sh, "--pth-path", "ck.pth.tar", "--data-dir", "flat", "--label-file",
                                       "val_label.txt"],
        "eval: busy work dir": [*eval_sh, "--pth-path", "ck.pth.tar", "--data-dir", "val", "--work-dir", "busy"],
        "eval: --work-dir /proc/nope": [*eval_sh, "--pth-path", "ck.pth.tar", "--data-dir", "val", "--work-dir",
                                        "/proc/nope"],
        "preprocess: --gt-path on /proc": [*python, str(REPO / "T2T_ViT_preprocess.py"), "--data-dir", "val",
                                           "--out-dir", "bins", "--gt-path", "/proc/nope/label.npy"],
        "pth2onnx: missing checkpoint": [*python, str(REPO / "T2T_ViT_pth2onnx.py"), "--pth-path", "81.5.pth.tar",
                                         "--onnx-path", "a.onnx"],
        "gen_cfg: checkpoint as ONNX": [*python, str(REPO / "gen_cfg.py"), "ck.pth.tar", "keep.cfg"],
        "infer: checkpoint as model": [*python, str(REPO / "T2T_ViT_infer.py"), "--model", "ck.pth.tar", "--input",
                                       "val", "--output", "out"],
        "infer: missing .om": [*python, str(REPO / "T2T_ViT_infer.py"), "--model", "om/T2T_ViT_bs8.om", "--output",
                               "out"],
        "postprocess: --results-file on /proc": [*python, str(REPO / "T2T_ViT_postprocess.py"), "--result-dir", "val",
                                                 "--gt-path", "label.npy", "--results-file", "/proc/nope/a.json"],
        "eval: a text file as the checkpoint": [*eval_sh, "--pth-path", "notes.txt", "--data-dir", "val"],
    }


def timed(command: list[str], cwd: Path) -> tuple[float, int, str]:
    env = {**os.environ, "PYTHON": sys.executable}
    started = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    return seconds, result.returncode, (result.stderr.strip().splitlines() or [""])[-1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds (default: 5)")
    args = parser.parse_args()
    from t2t_vit.files import exclusive_lock
    from t2t_vit.provenance import machine

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        scratch(root)
        commands = {"import torch": [sys.executable, "-c", "import torch"], **cases()}
        seconds: dict[str, list[float]] = {name: [] for name in commands}
        answers = {}
        with exclusive_lock(root / "busy", "--work-dir"):
            for round_index in range(args.rounds):
                for name, command in commands.items():
                    took, code, line = timed(command, root)
                    seconds[name].append(took)
                    answers[name] = (code, line)
                print(f"round {round_index + 1}/{args.rounds} done", file=sys.stderr)
    torch_s = statistics.median(seconds["import torch"])
    info = machine()
    print(f"{info['cpu']}, {info['cores']} cores; median of {args.rounds} rounds; python -c 'import torch': "
          f"{torch_s:.2f} s\n")
    print("| case | seconds | / import torch | exit | answer |\n|---|---|---|---|---|")
    for name in cases():
        median = statistics.median(seconds[name])
        code, line = answers[name]
        print(f"| {name} | {median:.2f} | {median / torch_s:.2f} | {code} | {line[:110]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
