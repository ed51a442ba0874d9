#!/usr/bin/env python3
"""Stage 5: result files + label file -> top-1 / top-5 accuracy, and the comparison of two result sets.

    python3 T2T_ViT_postprocess.py --result-dir result/bs1 --gt-path label.npy --results-file acc_bs1.json

Each result <name>_0.bin|npy|txt (what ais_bench and T2T_ViT_infer.py write) is matched to its label
by name, never by listing order. A sample is top-k correct when fewer than k classes have a strictly
greater logit than its true class (ties count in its favour); NaN or infinite logits count as wrong
and are reported. A label without a result, or a result without a label, is an error unless
--allow-missing. The label file is the preprocess stage's (name, label) table; the ModelZoo's plain
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
    scoring.add_argument("--per-class", action="store_true", help="per-class accuracy in the JSON")
    scoring.add_argument("--compare-dir", metavar="DIR", help="a second result set of the same images to compare with")
    cli.add_verbosity(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def action() -> None:
        import logging

        from t2t_vit import metrics
        from t2t_vit.data import read_class_list
        from t2t_vit.provenance import provenance, write_json

        log = logging.getLogger("T2T_ViT_postprocess")
        matched = metrics.match_results(args.result_dir, args.gt_path)
        problem = metrics.describe_missing(matched)
        if problem and not args.allow_missing:
            raise metrics.ResultError(f"{problem}; pass --allow-missing to score the {len(matched.names)} matched "
                                      f"samples")
        if not matched.names:
            raise metrics.ResultError("no result matches a label: check --result-dir and --gt-path")
        if problem:
            log.warning("%s; scoring the %d matched samples", problem, len(matched.names))
        scores = metrics.score(matched.names, matched.logits, matched.labels)
        if scores.nonfinite:
            log.warning("%d samples have NaN or infinite logits, counted as wrong: %s", len(scores.nonfinite),
                        ", ".join(scores.nonfinite[:5]))
        print(f"Top-1 accuracy of the model is: {scores.top1:.3f}%")
        print(f"Top-5 accuracy of the model is: {scores.top5:.3f}%")
        print(f"over {scores.count} images ({scores.correct_top1} top-1 and {scores.correct_top5} top-5 correct; "
              f"{len(matched.missing_results)} missing results, {len(matched.unlabelled_results)} unlabelled "
              f"results, {len(scores.nonfinite)} non-finite)")
        results = {"top1": scores.top1, "top5": scores.top5, "count": scores.count,
                   "correct_top1": scores.correct_top1, "correct_top5": scores.correct_top5,
                   "nonfinite": len(scores.nonfinite), "nonfinite_names": scores.nonfinite,
                   "missing_results": len(matched.missing_results),
                   "unlabelled_results": len(matched.unlabelled_results),
                   "label_mode": matched.label_mode, "result_dir": args.result_dir, "gt_path": args.gt_path,
                   "tie_rule": "top-k correct when fewer than k classes have a strictly greater logit"}
        if args.per_class:
            class_names = read_class_list() if matched.logits.shape[1] == 1000 else None
            results["per_class"] = metrics.per_class(matched.logits, matched.labels, class_names)
        if args.compare_dir:
            other = metrics.match_results(args.compare_dir, args.gt_path)
            names, mine, theirs, labels = metrics.align(matched, other, args.allow_missing)
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
