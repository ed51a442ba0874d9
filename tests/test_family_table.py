"""The family table from the summaries the main job keeps per variant: rows, groups of comparable rows, the
frontier, the choice under a floor, and T2T_ViT_family.py merging work dirs (no inference: synthetic summaries)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import T2T_ViT_family
from t2t_vit.job.family import build_family, choose, frontier

LABELS = "a" * 64


def summary(name, top1, speeds, *, labels=LABELS, images=40, runner="openvino", npu=None, date="2026-12-06T06:00"):
    """What eval_summary_<variant>.json holds, as far as the family table reads it."""
    rows = [{"batch_size": batch, "top1": top1, "top5": top1 + 10, "count": images, "images_per_s": speed,
             "runner": runner, "accuracy_reused_from": None, "throughput_reused_from": None}
            for batch, speed in speeds.items()]
    return {"rows": rows, "model": {"model": name, "img_size": 224}, "checkpoint": f"/ck/{name}.pth.tar",
            "checkpoint_sha256": "f" * 64, "npu_emulation": npu, "date": date, "demo": False,
            "variant": {"title": name.upper(), "params_m": 4.3, "gflops": 1.1},
            "data": {"images": images, "labels_sha256": labels, "img_size": 224}}


def work_dir(root: Path, *summaries) -> Path:
    root.mkdir(parents=True)
    for item in summaries:
        (root / f"eval_summary_{item['model']['model']}.json").write_text(json.dumps(item))
    return root


def test_rows_groups_and_the_frontier(tmp_path):
    work = work_dir(tmp_path / "w", summary("t2t_vit_7", 71.7, {1: 76.0, 4: 78.6}),
                    summary("t2t_vit_14", 81.5, {1: 20.3, 4: 20.1}, npu={"top1": 81.4, "top1_flips": 1,
                                                                          "keep_dtype_nodes": 76}),
                    summary("t2t_vit_12", 70.0, {1: 50.0, 4: 52.0}))  # slower and less accurate than t2t_vit_7
    family = build_family([work])
    rows = {row["variant"]: row for row in family["rows"]}
    assert rows["t2t_vit_7"]["best_batch"] == 4 and rows["t2t_vit_7"]["best_images_per_s"] == 78.6
    assert (rows["t2t_vit_14"]["fp16_top1"], rows["t2t_vit_14"]["fp16_flips"], rows["t2t_vit_14"]["keep_set"]) == \
        (81.4, 1, 76)
    assert len(family["groups"]) == 1 and family["notes"] == []
    assert family["groups"][0]["frontier"] == ["t2t_vit_14", "t2t_vit_7"]  # by speed; t2t_vit_12 is beaten
    assert [rows[name]["on_frontier"] for name in ("t2t_vit_7", "t2t_vit_12", "t2t_vit_14")] == [True, False, True]


def test_other_images_and_another_runner_are_apart_and_said(tmp_path):
    work = work_dir(tmp_path / "w", summary("t2t_vit_7", 71.7, {4: 78.6}), summary("t2t_vit_14", 81.5, {4: 20.1}),
                    summary("t2t_vit_t_14", 81.7, {4: 16.0}, labels="b" * 64, images=12))
    npu = work_dir(tmp_path / "npu", summary("t2t_vit_14", 81.4, {4: 900.0}, runner="ais_bench"))
    family = build_family([work, npu])
    groups = family["groups"]
    assert [(group["runner"], group["data"]["images"], group["variants"]) for group in groups] == [
        ("openvino", 40, ["t2t_vit_7", "t2t_vit_14"]), ("openvino", 12, ["t2t_vit_t_14"]),
        ("ais_bench", 40, ["t2t_vit_14"])]
    assert family["notes"] == ["these rows were measured on 2 sets of images and 2 runners (ais_bench, openvino): "
                               "each group is compared within itself only, the first holding the most variants; the "
                               "others are marked 'apart'"]
    # the NPU's 900 images/s never puts the CPU's t2t_vit_14 off the frontier: each group has its own
    assert groups[0]["frontier"] == ["t2t_vit_14", "t2t_vit_7"] and groups[2]["frontier"] == ["t2t_vit_14"]
    apart = [(row["variant"], row["runner"]) for row in family["rows"] if row["apart"]]
    assert sorted(apart) == [("t2t_vit_14", "ais_bench"), ("t2t_vit_t_14", "openvino")]  # marked, never compared


def rows_of(**speed_and_top1):
    return [{"variant": name, "top1": top1, "best_images_per_s": speed, "best_batch": 8}
            for name, (speed, top1) in speed_and_top1.items()]


def test_the_choice_under_a_floor_says_why_or_that_none_meets_it():
    rows = rows_of(t2t_vit_7=(78.6, 71.7), t2t_vit_10=(60.5, 75.2), t2t_vit_14=(20.2, 81.5))
    assert choose(rows, None, 50)["variant"] == "t2t_vit_10"
    assert choose(rows, None, 50)["why"] == ("t2t_vit_10: the most accurate of the 2 that meet >= 50 images/s (top-1 "
                                             "75.20 %, 60.5 images/s at batch 8)")
    assert choose(rows, 75, None)["variant"] == "t2t_vit_10"  # the fastest of those accurate enough
    assert choose(rows, 80, 10)["variant"] == "t2t_vit_14"
    none = choose(rows, 82, None)
    assert none["variant"] is None and none["why"] == ("none of the 3 meets top-1 >= 82 %: the most accurate is "
                                                       "t2t_vit_14 (81.50 %), the fastest t2t_vit_7 (78.6 images/s)")
    assert [row["variant"] for row in frontier(rows)] == ["t2t_vit_14", "t2t_vit_10", "t2t_vit_7"]


def test_the_script_merges_work_dirs_writes_json_and_plot(tmp_path, capsys):
    cpu = work_dir(tmp_path / "cpu", summary("t2t_vit_7", 71.7, {1: 76.0, 4: 78.6}),
                   summary("t2t_vit_14", 81.5, {1: 20.3, 4: 20.1}))
    other = work_dir(tmp_path / "other", summary("t2t_vit_10", 75.2, {1: 58.7, 4: 60.5}))
    assert T2T_ViT_family.main(["--work-dir", str(cpu), str(other), "--min-images-per-s", "50",
                                "--out-dir", str(tmp_path / "report")]) == 0
    out = capsys.readouterr().out
    assert "| t2t_vit_10 (T2T_VIT_10) | t2t_vit_10.pth.tar | 75.20 | 85.20 | - | - | 4.30 | 1.10 | 58.7 | 60.5 | " \
           "60.5 at bs4 | yes |" in out
    assert "choice: t2t_vit_10: the most accurate of the 2 that meet >= 50 images/s" in out
    family = json.loads((tmp_path / "report" / "family_summary.json").read_text())
    assert sorted(row["variant"] for row in family["rows"]) == ["t2t_vit_10", "t2t_vit_14", "t2t_vit_7"]
    assert family["work_dirs"] == [str(cpu), str(other)] and family["groups"][0]["choice"]["variant"] == "t2t_vit_10"
    pytest.importorskip("matplotlib")
    assert (tmp_path / "report" / "family_summary.png").read_bytes()[:4] == b"\x89PNG"


def test_a_work_dir_without_summaries_is_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert T2T_ViT_family.main(["--work-dir", str(tmp_path / "empty")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds no variant's summary (eval_summary_*.json): run the main job there" in err
    assert T2T_ViT_family.main(["--work-dir", str(tmp_path / "none")]) == 1
    assert "--work-dir " + str(tmp_path / "none") + " does not exist" in capsys.readouterr().err
    assert not (tmp_path / "empty" / "family_summary.json").exists()


def test_a_duo_row_shows_the_card_and_each_chip(tmp_path):
    """ais_bench on both chips of a Duo: the card's images/s (their sum) with each chip's in brackets."""
    from t2t_vit.job.family_report import markdown

    duo = summary("t2t_vit_14", 81.4, {8: 1800.0}, runner="ais_bench")
    duo["rows"][0]["per_device"] = [{"device": 0, "images_per_s": 905.0}, {"device": 1, "images_per_s": 895.0}]
    family = build_family([work_dir(tmp_path / "npu", duo)])
    assert family["rows"][0]["per_device"] == {8: duo["rows"][0]["per_device"]}
    assert "| 1800.0 (905.0 + 895.0) | 1800.0 at bs8 | yes |" in markdown(family)


def test_the_plots_top1_axis_stays_between_0_and_100_and_is_never_flat():
    from t2t_vit.job.family_report import top1_limits

    assert top1_limits([0.0, 0.0]) == (0.0, 1.0)  # random weights: not an axis of -0.04 to 0.04
    assert top1_limits([100.0]) == (99.0, 100.0)
    assert top1_limits([71.7, 81.5]) == pytest.approx((70.7, 82.5))
    assert top1_limits([10.0, 90.0]) == pytest.approx((2.0, 98.0))
