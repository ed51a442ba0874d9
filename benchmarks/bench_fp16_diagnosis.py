#!/usr/bin/env python3
"""How long the fp16 diagnosis takes: gen_cfg.py --explain and --minimize on 8 and 26 images, in one run.

    python3 benchmarks/bench_fp16_diagnosis.py --json bench_fp16_diagnosis.json

The `sum` export of the tests' scaled random weights (their performer features underflow fp16, as the upstream
initialisation with the tokens-to-token kqv weights scaled by 4 does), and float32 bins of the shipped images.
Printed per image count: the seconds of --explain (nothing kept) and of --minimize, the NaN origin, and the sizes
of the keep sets (the ModelZoo rule, the group-level set, the 1-minimal set). Goals on 2 cores: --explain on 8
images under 5 minutes, --minimize on 8 images under 20 minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

SHIPPED = REPO_ROOT / "tests" / "data" / "imagenet-sample"


def prepare(scratch: Path, images: int) -> tuple[Path, Path]:
    from t2t_vit.config import resolve_data_config
    from t2t_vit.data.dataset import EvalTransform, open_rgb
    from t2t_vit.model.export import export_onnx
    from t2t_vit.model.network import create_model, scaled_random_state_dict

    import torch

    torch.manual_seed(0)  # the performers' fixed projections w are drawn when the model is built, and kept
    model = create_model("sum")
    model.load_state_dict(scaled_random_state_dict(model, seed=0))
    onnx_path = scratch / "sum.onnx"
    export_onnx(model, onnx_path, data_config=resolve_data_config(), verify_batch_sizes=(1,))
    bins = scratch / "bins"
    bins.mkdir()
    transform = EvalTransform(resolve_data_config())
    for path in sorted(SHIPPED.glob("*.JPEG"))[:images]:
        transform(open_rgb(path)).astype("<f4").tofile(bins / f"{path.stem}.bin")
    return onnx_path, bins


def timed(argv: list[str]) -> tuple[float, str]:
    import gen_cfg

    out = io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(out):
        code = gen_cfg.main(argv)
    if code != 0:
        raise SystemExit(f"gen_cfg.py {' '.join(argv)} failed")
    return time.perf_counter() - started, out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0])
    parser.add_argument("--images", type=int, nargs="+", default=[8, 26], metavar="N",
                        help="image counts to time (default: 8 26)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="bench_fp16_"))
    onnx_path, bins = prepare(scratch, max(args.images))
    figures = []
    for count in args.images:
        explain_s, explained = timed([str(onnx_path), "--explain", "--input", str(bins), "--images", str(count),
                                      "--report", str(scratch / f"report_{count}.csv"), "-q"])
        minimize_s, minimized = timed([str(onnx_path), str(scratch / f"min_{count}.cfg"), "--minimize", "--input",
                                       str(bins), "--images", str(count), "-q"])
        sizes = re.search(r"the structural proposal (\d+) names, the group-level set (\d+), node by node (\d+) \((\d+) sets",
                          minimized)
        if sizes is None:
            raise SystemExit(f"gen_cfg.py --minimize printed no sizes line; its output was:\n{minimized}")
        origin = re.search(r"NaN origin: (.*)", explained).group(1)
        row = {"images": count, "explain_s": round(explain_s, 1), "minimize_s": round(minimize_s, 1),
               "modelzoo_names": int(sizes.group(1)), "group_level_names": int(sizes.group(2)),
               "minimal_names": int(sizes.group(3)), "sets_tried": int(sizes.group(4)), "nan_origin": origin}
        figures.append(row)
        print(f"{count} images: --explain {explain_s:.0f} s (goal at 8: < 300 s), --minimize {minimize_s:.0f} s (goal "
              f"at 8: < 1200 s, {row['sets_tried']} sets tried); keep sets: ModelZoo {row['modelzoo_names']}, "
              f"group-level {row['group_level_names']}, 1-minimal {row['minimal_names']}", flush=True)
        print(f"  NaN origin with nothing kept: {origin}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
