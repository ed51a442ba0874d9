#!/usr/bin/env python3
"""Postprocess speed: scoring 50,000 result files against a plain per-file loop, in one run.

    python3 benchmarks/bench_postprocess.py --count 50000

Writes ``count`` synthetic results (``<name>_0.bin``, 1000 float32 each) and a label file into a
temporary folder, then alternates rounds of (a) this toolkit's scoring (``match_results`` + ``score``)
(b) a plain loop that reads each file with numpy and ranks its logits one sample at a time, and (c) the
ModelZoo script's shape, a torch tensor and loss per sample. All must give the same top-1 / top-5; the
median seconds and the ratios are printed. Reading 50,000 files dominates every path.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from t2t_vit.data import metrics  # noqa: E402
from t2t_vit.data.dataset import write_labels  # noqa: E402


def plain_loop(result_dir: Path, gt_path: Path) -> tuple[float, float]:
    table = np.load(gt_path, allow_pickle=False)
    top1 = top5 = 0
    for name, label in zip(table["name"].tolist(), table["label"].tolist()):
        logits = np.fromfile(result_dir / f"{name}_0.bin", dtype=np.float32)
        above = int(np.sum(logits > logits[label]))
        top1 += above < 1
        top5 += above < 5
    return 100.0 * top1 / len(table), 100.0 * top5 / len(table)


def torch_per_sample_loop(result_dir: Path, gt_path: Path) -> tuple[float, float]:
    """The ModelZoo script's shape: a tensor, a loss and a top-k per sample (its loss was unused, as here)."""
    import torch

    table = np.load(gt_path, allow_pickle=False)
    top1 = top5 = 0
    loss_fn = torch.nn.CrossEntropyLoss()
    for name, label in zip(table["name"].tolist(), table["label"].tolist()):
        output = torch.from_numpy(np.fromfile(result_dir / f"{name}_0.bin", dtype=np.float32)).reshape(1, 1000)
        target = torch.tensor([label])
        loss_fn(output, target)
        above = int((output > output[0, label]).sum())
        top1 += above < 1
        top5 += above < 5
    return 100.0 * top1 / len(table), 100.0 * top5 / len(table)


def toolkit(result_dir: Path, gt_path: Path) -> tuple[float, float]:
    matched = metrics.match_results(result_dir, gt_path)
    scores = metrics.score(matched.names, matched.logits, matched.labels)
    return scores.top1, scores.top5


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=50_000, metavar="N", help="result files (default: 50000)")
    parser.add_argument("--rounds", type=int, default=3, metavar="N", help="alternating rounds (default: 3)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as scratch:
        result_dir, gt_path = Path(scratch) / "result", Path(scratch) / "label.npy"
        result_dir.mkdir()
        names = [f"ILSVRC2012_val_{index + 1:08d}" for index in range(args.count)]
        labels = rng.integers(0, 1000, args.count)
        for start in range(0, args.count, 1000):
            block = rng.standard_normal((min(1000, args.count - start), 1000)).astype("<f4")
            block[np.arange(len(block)), labels[start:start + len(block)]] += 2.5
            for offset, row in enumerate(block):
                row.tofile(result_dir / f"{names[start + offset]}_0.bin")
        write_labels(gt_path, names, labels)
        paths = {"toolkit": toolkit, "plain_loop": plain_loop, "torch_per_sample_loop": torch_per_sample_loop}
        seconds: dict[str, list[float]] = {path: [] for path in paths}
        answers = {}
        for round_index in range(args.rounds):
            order = list(paths) if round_index % 2 == 0 else list(reversed(paths))
            for path in order:
                started = time.perf_counter()
                answers[path] = paths[path](result_dir, gt_path)
                seconds[path].append(time.perf_counter() - started)
    medians = {path: statistics.median(values) for path, values in seconds.items()}
    ratio = medians["plain_loop"] / medians["toolkit"]
    torch_ratio = medians["torch_per_sample_loop"] / medians["toolkit"]
    same = len(set(answers.values())) == 1
    print(f"{args.count} result files, {args.rounds} alternating rounds (median seconds)")
    print("| path | seconds | files/s |\n|---|---|---|")
    for path, median in medians.items():
        print(f"| {path} | {median:.2f} | {args.count / median:.0f} |")
    print(f"speed-up over the plain numpy loop: {ratio:.1f}x, over the torch per-sample loop: {torch_ratio:.1f}x; "
          f"same top-1/top-5: {same} {answers['toolkit']}")
    if args.json:
        from t2t_vit.provenance import provenance, write_json

        write_json(args.json, {"benchmark": "postprocess", "files": args.count, "seconds": medians,
                               "rounds": seconds, "speedup": ratio, "speedup_over_torch_loop": torch_ratio, "same_answer": same, **provenance(vars(args))})
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
