"""Scoring by name with ties, missing / extra / NaN / wrong-size results, ModelZoo labels, comparisons."""

from __future__ import annotations

import json

import numpy as np
import pytest

import T2T_ViT_postprocess
from t2t_vit.data import metrics
from t2t_vit.data.dataset import write_labels


def reference_topk(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Independent reference: rank by sorting, counting the other classes at or above the true one."""
    correct = 0
    for row, label in zip(logits, labels):
        if not np.all(np.isfinite(row)):
            continue
        ordered = np.sort(row)
        at_or_above = len(row) - np.searchsorted(ordered, row[label], side="left") - 1  # less the true class
        correct += at_or_above < k
    return 100.0 * correct / len(labels)


def write_results(folder, names, logits, fmt="bin"):
    folder.mkdir(parents=True, exist_ok=True)
    order = np.random.default_rng(1).permutation(len(names))  # created in shuffled order
    for index in order:
        path = folder / f"{names[index]}_0.{fmt}"
        if fmt == "bin":
            logits[index].astype("<f4").tofile(path)
        elif fmt == "npy":
            np.save(path, logits[index][None].astype(np.float32))  # ais_bench saves (1, 1000)
        else:  # ais_bench's TXT: '%f' values separated by spaces, one line per row
            path.write_text(" ".join(f"{value:f}" for value in logits[index]) + " \n")


def tied_logits(count: int, seed: int = 0) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Integer-valued logits in a small range, so ties with the true class are everywhere."""
    rng = np.random.default_rng(seed)
    logits = rng.integers(0, 6, (count, 1000)).astype(np.float32)
    labels = rng.integers(0, 1000, count)
    logits[: count // 3, :] = 0  # every class tied: each of these is wrong under the rule (a dead output)
    winners = np.arange(count // 3, count // 2)
    logits[winners, labels[winners]] = 10  # clear winners
    tied = np.arange(count // 2, 2 * count // 3)
    logits[tied, labels[tied]] = 10
    logits[tied, (labels[tied] + 1) % 1000] = 10  # tied with one other class at the top: top-5, not top-1
    names = [f"ILSVRC2012_val_{index:08d}" for index in rng.permutation(count)]
    return names, logits, labels


def run(*args) -> int:
    return T2T_ViT_postprocess.main([*map(str, args), "-q"])


@pytest.mark.parametrize("fmt", ["bin", "npy", "txt"])
def test_top1_top5_equal_the_reference_including_ties(tmp_path, fmt, capsys):
    names, logits, labels = tied_logits(300)
    write_results(tmp_path / "res", names, logits, fmt)
    write_labels(tmp_path / "label.npy", names, labels)
    out = tmp_path / "acc.json"
    assert run("--result-dir", tmp_path / "res", "--gt-path", tmp_path / "label.npy", "--results-file", out) == 0
    report = json.loads(out.read_text())
    assert report["top1"] == reference_topk(logits, labels, 1) and report["top5"] == reference_topk(logits, labels, 5)
    assert report["count"] == 300 and report["missing_results"] == 0
    assert 0 < report["top1"] < 100
    printed = capsys.readouterr().out
    assert f"Top-1 accuracy of the model is: {report['top1']:.3f}%" in printed
    assert f"Top-5 accuracy of the model is: {report['top5']:.3f}%" in printed and "over 300 images" in printed


def test_all_zero_results_score_nothing_and_are_named(tmp_path, capsys):
    names = [f"ILSVRC2012_val_{index:08d}" for index in range(1, 31)]
    labels = np.arange(30) * 7
    write_results(tmp_path / "res", names, np.zeros((30, 1000), np.float32))
    write_labels(tmp_path / "label.npy", names, labels)
    assert run("--result-dir", tmp_path / "res", "--gt-path", tmp_path / "label.npy") == 1
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and error.startswith("error: ")
    assert "30 of 30 results have constant logits" in error and "--allow-constant" in error
    out = tmp_path / "acc.json"
    assert run("--result-dir", tmp_path / "res", "--gt-path", tmp_path / "label.npy", "--allow-constant",
               "--results-file", out) == 0
    report = json.loads(out.read_text())
    assert report["top1"] == 0.0 and report["top5"] == 0.0 and report["constant"] == 30
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "30 of 30 results have constant logits" in warnings[0] and names[0] in warnings[0]
    assert "Top-1 accuracy of the model is: 0.000%" in captured.out


def test_a_tie_with_the_true_class_counts_against_it():
    logits = np.zeros((3, 1000), np.float32)
    logits[0, [7, 3]] = 5.0  # the true class 7 tied with class 3 at the top: top-1 wrong, top-5 right
    logits[1, 7] = 5.0  # alone at the top
    logits[2, [7, 1, 2, 3, 4, 5]] = 5.0  # tied with five others: not even top-5
    scores = metrics.score(["a", "b", "c"], logits, np.array([7, 7, 7]))
    assert (scores.correct_top1, scores.correct_top5) == (1, 2)


def test_one_vector_for_every_image_is_refused_and_a_few_repeats_are_named(tmp_path, capsys):
    rng = np.random.default_rng(2)
    names = [f"img{index:02d}" for index in range(30)]
    labels = rng.integers(0, 1000, 30)
    same = np.tile(rng.standard_normal(1000).astype(np.float32), (30, 1))  # a dead output that is not zeros
    write_results(tmp_path / "same", names, same)
    write_labels(tmp_path / "label.npy", names, labels)
    assert run("--result-dir", tmp_path / "same", "--gt-path", tmp_path / "label.npy") == 1
    assert "30 are identical to another image's result (the largest set of equal results: 30)" in capsys.readouterr().err
    live = rng.standard_normal((30, 1000)).astype(np.float32)
    live[5] = live[4]  # two images with the same bytes (a duplicate in the data) give the same logits
    write_results(tmp_path / "live", names, live)
    assert run("--result-dir", tmp_path / "live", "--gt-path", tmp_path / "label.npy") == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert warnings == [f"warning: {tmp_path / 'live'}: 2 are identical to another image's result: img04, img05"]


def test_random_logits_match_reference(tmp_path):
    rng = np.random.default_rng(5)
    logits = rng.standard_normal((200, 1000)).astype(np.float32)
    labels = rng.integers(0, 1000, 200)
    logits[np.arange(0, 200, 3), labels[::3]] += 3.0
    names = [f"n{index}" for index in range(200)]
    scores = metrics.score(names, logits, labels)
    assert scores.top1 == reference_topk(logits, labels, 1) and scores.top5 == reference_topk(logits, labels, 5)


def _setup(tmp_path, count=10):
    names, logits, labels = tied_logits(count, seed=3)
    write_results(tmp_path / "res", names, logits)
    write_labels(tmp_path / "label.npy", names, labels)
    return names, logits, labels


def test_missing_and_extra_results_fail_unless_allowed(tmp_path, capsys):
    names, logits, labels = _setup(tmp_path)
    (tmp_path / "res" / f"{names[2]}_0.bin").unlink()
    logits[0].astype("<f4").tofile(tmp_path / "res" / "stray_0.bin")
    assert run("--result-dir", tmp_path / "res", "--gt-path", tmp_path / "label.npy") == 1
    error = capsys.readouterr().err
    assert f"1 labels have no result ({names[2]})" in error and "1 results have no label (stray)" in error
    assert "--allow-missing" in error
    out = tmp_path / "acc.json"
    assert run("--result-dir", tmp_path / "res", "--gt-path", tmp_path / "label.npy", "--allow-missing",
               "--results-file", out) == 0
    report = json.loads(out.read_text())
    assert report["count"] == 9 and report["missing_results"] == 1 and report["unlabelled_results"] == 1
    keep = [index for index in range(10) if index != 2]
    assert report["top1"] == reference_topk(logits[keep], labels[keep], 1)


def test_nan_and_inf_are_reported_and_wrong(tmp_path, capsys):
    names, logits, labels = _setup(tmp_path)
    for index, bad in ((0, np.nan), (1, np.inf)):
        row = np.full(1000, -1.0, dtype=np.float32)
        row[labels[index]] = bad if index == 1 else 5.0  # +inf on the true class would otherwise be "correct"
        if index == 0:
            row[7] = np.nan
        row.astype("<f4").tofile(tmp_path / "res" / f"{names[index]}_0.bin")
        logits[index] = row
    out = tmp_path / "acc.json"
    assert run("--result-dir", tmp_path / "res", "--gt-path", tmp_path / "label.npy", "--results-file", out) == 0
    report = json.loads(out.read_text())
    assert report["nonfinite"] == 2 and set(report["nonfinite_names"]) == {names[0], names[1]}
    assert report["top1"] == reference_topk(logits, labels, 1)
    assert "2 samples have NaN or infinite logits" in capsys.readouterr().err


@pytest.mark.parametrize("fmt, content, pattern", [
    ("bin", np.zeros(999, dtype="<f4").tobytes(), "has 3996 bytes, expected 4000"),
    ("bin", np.zeros(1000, dtype="<f8").tobytes(), "has 8000 bytes, expected 4000"),
    ("txt", b"1.0 2.0\n", "holds 2 values"),
    ("npy", None, "holds 10 values"),
])
def test_wrong_size_result_is_an_error_naming_it(tmp_path, capsys, fmt, content, pattern):
    names, _, _ = _setup(tmp_path)
    target = tmp_path / "res" / f"{names[4]}_0.{fmt}"
    (tmp_path / "res" / f"{names[4]}_0.bin").unlink()
    if content is None:
        np.save(target, np.zeros(10, dtype=np.float32))
    else:
        target.write_bytes(content)
    assert run("--result-dir", tmp_path / "res", "--gt-path", tmp_path / "label.npy") == 1
    error = capsys.readouterr().err
    assert str(target) in error and pattern in error


def test_modelzoo_integer_labels_are_matched_by_batch_number(tmp_path):
    rng = np.random.default_rng(9)
    batches, batch = 5, 4
    labels = rng.integers(0, 1000, (batches, batch))
    logits = rng.standard_normal((batches * batch, 1000)).astype(np.float32)
    boosted = np.arange(0, batches * batch, 2)  # every other sample gets its true class far ahead
    logits[boosted, labels.reshape(-1)[boosted]] += 9
    (tmp_path / "res").mkdir()
    for index in rng.permutation(batches):
        logits[index * batch:(index + 1) * batch].astype("<f4").tofile(tmp_path / "res" / f"{index:05d}_0.bin")
    np.save(tmp_path / "gt.npy", labels)
    matched = metrics.match_results(tmp_path / "res", tmp_path / "gt.npy")
    assert matched.label_mode == "modelzoo" and matched.names[:5] == ["0[0]", "0[1]", "0[2]", "0[3]", "1[0]"]
    scores = metrics.score(matched.names, matched.logits, matched.labels)
    assert scores.top1 == reference_topk(logits, labels.reshape(-1), 1) == 50.0
    np.save(tmp_path / "gt1.npy", labels[:, 0])  # 1-D, batch 1: msame's naming too
    (tmp_path / "res1").mkdir()
    for index in range(batches):
        logits[index].astype("<f4").tofile(tmp_path / "res1" / f"{index:05d}_output_0.bin")
    matched = metrics.match_results(tmp_path / "res1", tmp_path / "gt1.npy")
    assert matched.names == ["0", "1", "2", "3", "4"] and matched.labels.tolist() == labels[:, 0].tolist()


def test_compare_equals_a_reference_computation(tmp_path, capsys):
    rng = np.random.default_rng(2)
    names = [f"img_{index}" for index in rng.permutation(40)]
    logits = rng.standard_normal((40, 1000)).astype(np.float32)
    labels = rng.integers(0, 1000, 40)
    logits[np.arange(40), labels] += 3.5
    write_results(tmp_path / "res", names, logits)
    write_labels(tmp_path / "label.npy", names, labels)
    other = logits + rng.normal(0, 0.4, logits.shape).astype(np.float32)  # an fp16-like perturbation
    write_results(tmp_path / "other", names, other)
    out = tmp_path / "acc.json"
    assert run("--result-dir", tmp_path / "res", "--gt-path", tmp_path / "label.npy", "--compare-dir",
               tmp_path / "other", "--results-file", out) == 0
    comparison = json.loads(out.read_text())["compare"]
    order = sorted(range(40), key=lambda index: names[index])  # the report lists samples by name
    a, b = logits[order].astype(np.float64), other[order].astype(np.float64)
    assert comparison["max_abs_diff"] == pytest.approx(np.abs(a - b).max(), rel=1e-12)
    assert comparison["mean_abs_diff"] == pytest.approx(np.abs(a - b).mean(), rel=1e-9)
    cosines = [x @ y / np.linalg.norm(x) / np.linalg.norm(y) for x, y in zip(a, b)]
    assert comparison["mean_cosine_similarity"] == pytest.approx(np.mean(cosines), rel=1e-12)
    changed = [names[index] for index in order if np.argmax(logits[index]) != np.argmax(other[index])]
    assert comparison["top1_changed"] == changed and len(changed) > 0
    assert comparison["top1_agreement"] == 100.0 * (40 - len(changed)) / 40
    assert comparison["other_top1"] == reference_topk(other, labels, 1)
    assert "top-1 agreement" in capsys.readouterr().out


def test_compare_with_a_different_set_fails_unless_allowed(tmp_path, capsys):
    names, logits, _ = _setup(tmp_path)
    write_results(tmp_path / "other", names[:8], logits[:8])
    assert run("--result-dir", tmp_path / "res", "--gt-path", tmp_path / "label.npy", "--compare-dir",
               tmp_path / "other") == 1
    assert "the two result sets differ" in capsys.readouterr().err


def test_per_class(tmp_path):
    names, logits, labels = _setup(tmp_path, count=30)
    out = tmp_path / "acc.json"
    assert run("--result-dir", tmp_path / "res", "--gt-path", tmp_path / "label.npy", "--per-class",
               "--results-file", out) == 0
    table = json.loads(out.read_text())["per_class"]
    for label in set(labels.tolist()):
        mask = labels == label
        assert table[str(label)]["count"] == int(mask.sum())
        assert table[str(label)]["top1"] == reference_topk(logits[mask], labels[mask], 1)
    assert table[str(labels[0])]["class"].startswith("n")


@pytest.mark.parametrize("case, pattern", [
    ("no_dir", "does not exist"), ("empty_dir", "no result files"), ("no_labels", "cannot read --gt-path"),
    ("text_labels", "is a text file, not the label.npy that the preprocess stage writes: give a text label file"),
    ("binary_labels", "is not a numpy .npy file"),
    ("float_labels", "neither a (name, label) table nor an integer label array"),
])
def test_unusable_inputs(tmp_path, capsys, case, pattern):
    _setup(tmp_path)
    result_dir, gt = tmp_path / "res", tmp_path / "label.npy"
    if case == "no_dir":
        result_dir = tmp_path / "nowhere"
    elif case == "empty_dir":
        result_dir = tmp_path / "empty"
        result_dir.mkdir()
    elif case == "no_labels":
        gt = tmp_path / "absent.npy"
    elif case == "text_labels":  # the ModelZoo's val_label.txt given as --gt-path
        gt = tmp_path / "val_label.txt"
        gt.write_text("ILSVRC2012_val_00000001.JPEG 65\nILSVRC2012_val_00000002.JPEG 970\n")
    elif case == "binary_labels":
        gt.write_bytes(bytes(range(256)))
    else:
        np.save(gt, np.zeros(3))
    assert run("--result-dir", result_dir, "--gt-path", gt) == 1
    error = capsys.readouterr().err
    assert pattern in error and error.count("\n") == 1 and "allow_pickle" not in error


# ------------------------------------------------------------------------------------- ais_bench's device folders

def _device_case(tmp_path, count=40, seed=5):
    rng = np.random.default_rng(seed)
    names = [f"ILSVRC2012_val_{index:08d}" for index in range(1, count + 1)]
    labels = rng.integers(0, 1000, count)
    logits = rng.standard_normal((count, 1000)).astype(np.float32)
    right = rng.random(count) < 0.6  # about 60 % top-1 by construction
    logits[right, labels[right]] = 10
    gt = tmp_path / "label.npy"
    write_labels(gt, names, labels)
    return names, labels, logits, gt


@pytest.mark.parametrize("folders", [("device0", "device1"), ("device0_0", "device1_1")])
def test_device_folders_that_split_the_images_are_scored_once_as_one_set(tmp_path, folders, capsys):
    names, labels, logits, gt = _device_case(tmp_path)
    whole = tmp_path / "whole"
    write_results(whole, names, logits)
    split = tmp_path / "split"
    cut = 21  # ais_bench gives the first len % jobs devices one file more
    write_results(split / folders[0], names[:cut], logits[:cut])
    write_results(split / folders[1], names[cut:], logits[cut:])
    assert run("--result-dir", whole, "--gt-path", gt, "--results-file", tmp_path / "whole.json") == 0
    assert run("--result-dir", split, "--gt-path", gt, "--results-file", tmp_path / "split.json") == 0
    one, both = (json.loads((tmp_path / f"{name}.json").read_text()) for name in ("whole", "split"))
    assert both["count"] == len(names) and both["top1"] == one["top1"] == reference_topk(logits, labels, 1)
    assert both["layout"] == "split" and both["device_counts"] == {folders[0]: cut, folders[1]: len(names) - cut}
    assert f"2 device folders splitting the images, scored as one set: {folders[0]} 21, {folders[1]} 19" in \
        capsys.readouterr().out


def test_device_folders_that_each_hold_every_image_are_scored_per_device(tmp_path, capsys):
    names, labels, logits, gt = _device_case(tmp_path)
    other = logits.copy()
    flipped = int(np.argmax(logits[0]))
    other[0, flipped] = -20  # device 1's top-1 differs on one image
    write_results(tmp_path / "copies" / "device0_0", names, logits)
    write_results(tmp_path / "copies" / "device1_1", names, other)
    assert run("--result-dir", tmp_path / "copies", "--gt-path", gt, "--results-file", tmp_path / "acc.json") == 0
    result = json.loads((tmp_path / "acc.json").read_text())
    assert result["layout"] == "copies" and result["count"] == len(names)  # each image scored once per device
    first, second = result["per_device"]
    assert first["device_folder"] == "device0_0" and first["top1"] == reference_topk(logits, labels, 1)
    assert second["device_folder"] == "device1_1" and second["top1"] == reference_topk(other, labels, 1)
    assert second["top1_agreement"] == pytest.approx(100 * (len(names) - 1) / len(names))
    assert second["max_abs_diff"] == pytest.approx(abs(logits[0, flipped] + 20))
    out = capsys.readouterr().out
    assert "2 device folders each holding every image (ais_bench without --divide_input)" in out
    assert f"Top-1 accuracy of the model is: {first['top1']:.3f}%" in out


def test_device_folders_that_overlap_in_part_are_refused_in_one_line(tmp_path, capsys):
    names, _, logits, gt = _device_case(tmp_path)
    write_results(tmp_path / "mixed" / "device0", names[:25], logits[:25])
    write_results(tmp_path / "mixed" / "device1", names[20:], logits[20:])  # 5 images in both
    assert run("--result-dir", tmp_path / "mixed", "--gt-path", gt, "--results-file", tmp_path / "acc.json") == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "overlap in part: device0 and device1 share 5 images" in error, error
    assert not (tmp_path / "acc.json").exists()
