#!/usr/bin/env python3
"""Stage 5: result files + label file -> top-1 / top-5 accuracy, and the comparison of two result sets.

    python3 T2T_ViT_postprocess.py --result-dir result/bs1 --gt-path label.npy --results-file acc_bs1.json

Each result <name>_0.bin|npy|txt (what ais_bench and T2T_ViT_infer.py write) is matched to its label
by name, never by listing order. A sample is top-k correct when fewer than k other classes score at
least as high as its true class: a tie counts against it, so all-equal logits score 0 %, never 100 %.
NaN or infinite logits count as wrong and are reported. Results whose logits are all equal (constant),
or identical to another image's, are counted and named in one warning; when most results are constant
or one same vector (a dead output) the set is refused unless --allow-constant. A label without a
result, or a result without a label, is an error unless --allow-missing. The label file is the preprocess stage's (name, label) table; the ModelZoo's plain
integer array (one row per batch file) is matched by the number that starts each result name.

A --result-dir of ais_bench's per-device folders (``device<N>/`` or ``device<N>_<i>/``, from --device 0,1) is
read as ais_bench laid it out: folders that split the images are scored as one set; folders that each hold
every image (ais_bench without --divide_input) are scored per device, with each device's agreement with the
first; folders that overlap in part are refused.

--compare-dir scores a second result set of the same images (NPU vs CPU, fp16 vs fp32) and reports
max / mean |difference|, mean cosine similarity, top-1 agreement and the images whose top-1 changed.
"""

from __future__ import annotations

import sys

from t2t_vit import cli


def build_parser():
    parser = cli.make_parser(__doc__)
    files = parser.add_argument_group("files")
    files.add_argument("--result-dir", required=True, metavar="DIR", help="folder of <name>_0.bin|npy|txt results")
    files.add_argument("--gt-path", required=True, metavar="LABELS.npy", help="label file from the preprocess stage")
    files.add_argument("--results-file", metavar="FILE.json", help="also write the figures as JSON")
    scoring = parser.add_argument_group("scoring")
    scoring.add_argument("--allow-missing", action="store_true",
                         help="score the matched samples when labels or results are missing (default: error)")
    scoring.add_argument("--allow-constant", action="store_true",
                         help="score a set whose results are mostly constant or one same vector (default: error)")
    scoring.add_argument("--per-class", action="store_true", help="per-class accuracy in the JSON")
    scoring.add_argument("--compare-dir", metavar="DIR", help="a second result set of the same images to compare with")
    cli.add_verbosity(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def action() -> None:
        from t2t_vit.files import check_output_file

        if args.results_file:
            check_output_file(args.results_file, "--results-file")
        from t2t_vit.data import metrics
        from t2t_vit.provenance import provenance, write_json

        def evaluate(result_dir):
            return metrics.evaluate(result_dir, args.gt_path, args.allow_missing, args.per_class,
                                    missing_hint="; pass --allow-missing to score the {matched} matched samples",
                                    allow_constant=args.allow_constant)

        layout = None if metrics.has_results(args.result_dir) else metrics.device_layout(args.result_dir)
        if layout is not None and layout.kind == "copies":
            results, matched = score_copies(layout, args.result_dir, evaluate)
        else:
            results, matched = evaluate(args.result_dir)
        if layout is not None and layout.kind == "split":
            counts = {folder: len(found) for folder, found in layout.folders.items()}
            print(f"{len(counts)} device folders splitting the images, scored as one set: "
                  f"{', '.join(f'{folder} {count}' for folder, count in counts.items())}")
            results.update({"layout": "split", "device_counts": counts})
        print(f"Top-1 accuracy of the model is: {results['top1']:.3f}%")
        print(f"Top-5 accuracy of the model is: {results['top5']:.3f}%")
        print(f"over {results['count']} images ({results['correct_top1']} top-1 and {results['correct_top5']} top-5 "
              f"correct; {results['missing_results']} missing results, {results['unlabelled_results']} unlabelled "
              f"results, {results['nonfinite']} non-finite, {results['constant']} constant, {results['repeated']} "
              f"identical to another's)")
        if args.compare_dir:
            other = metrics.match_results(args.compare_dir, args.gt_path)
            names, mine, theirs, labels = metrics.align(matched, other, args.allow_missing)
            metrics.check_degenerate(names, theirs, args.allow_constant, args.compare_dir)
            comparison = metrics.compare(names, mine, theirs)
            other_scores = metrics.score(names, theirs, labels)
            comparison.update({"compare_dir": args.compare_dir, "other_top1": other_scores.top1,
                               "other_top5": other_scores.top5})
            changed = comparison["top1_changed"]
            print(f"compared with {args.compare_dir}: top-1 {other_scores.top1:.3f}%, top-5 {other_scores.top5:.3f}%; "
                  f"top-1 agreement {comparison['top1_agreement']:.3f}% ({len(changed)} changed"
                  f"{': ' + ', '.join(changed[:20]) if changed else ''}{', ...' if len(changed) > 20 else ''}); "
                  f"max |diff| {comparison['max_abs_diff']:.4g}, mean |diff| {comparison['mean_abs_diff']:.4g}, "
                  f"mean cosine similarity {comparison['mean_cosine_similarity']:.6f}")
            results["compare"] = comparison
        if args.results_file:
            write_json(args.results_file, {**results, **provenance(vars(args))})

    return cli.run(action, args)


def score_copies(layout, result_dir, evaluate):
    """Device folders that each hold every image: each scored, its agreement with the first printed as a table.
    Returns the first device's figures (with ``layout`` and ``per_device``) and matched set."""
    from t2t_vit.data import metrics

    results, matched, rows = metrics.evaluate_copies(layout, result_dir, evaluate)
    reference = rows[0]["device_folder"]
    print(f"{len(rows)} device folders each holding every image (ais_bench without --divide_input), scored per device:")
    print(f"| device folder | top-1 (%) | top-5 (%) | images | top-1 agreement with {reference} (%) | max abs diff |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        same = row.get("top1_agreement")
        print(f"| {row['device_folder']} | {row['top1']:.3f} | {row['top5']:.3f} | {row['count']} | "
              f"{'-' if same is None else f'{same:.3f}'} | "
              f"{'-' if same is None else format(row['max_abs_diff'], '.4g')} |")
    print(f"the figures below are {reference}'s")
    return results, matched


if __name__ == "__main__":
    sys.exit(cli.entry(main))
