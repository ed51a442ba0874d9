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
        from t2t_vit import metrics
        from t2t_vit.provenance import provenance, write_json

        results, matched = metrics.evaluate(args.result_dir, args.gt_path, args.allow_missing, args.per_class,
                                            missing_hint="; pass --allow-missing to score the {matched} matched "
                                                         "samples", allow_constant=args.allow_constant)
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


if __name__ == "__main__":
    sys.exit(main())
