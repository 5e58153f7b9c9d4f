"""--folds: grouped folds, per-fold runs, cv_report.json from the folds' reports, --final."""

import json
import os

import numpy as np
import pytest

import multitrain_efficientnet
from test_training import make_folders, read_csv
from tagestimate import crossval, dataset
from tagestimate.labels import default_labelmap

FAST = ["--weights", "none", "--image-size", "64", "--batch-size", "4", "--lr", "1e-3", "--epochs", "1"]


def read_json(path):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def test_folds_are_grouped_by_item_and_cover_every_image(tmp_path):
    samples = dataset.list_samples(make_folders(str(tmp_path / "data"), corrupt=False), default_labelmap())
    folds = dataset.assign_folds(samples, 3, seed=1)
    assert set(folds) == {1, 2, 3}
    for item in set(samples.groups):
        assert len({f for f, g in zip(folds, samples.groups) if g == item}) == 1
    assert np.array_equal(folds, dataset.assign_folds(samples, 3, seed=1))


def test_aggregate_is_the_mean_and_std_of_the_folds():
    def report(f1, support, best):
        return {"per_class": {"a": {"precision": f1, "recall": 1.0, "f1": f1, "support": support}},
                "macro_f1": f1, "micro_f1": f1, "tuned": {"macro_f1": f1}, "best_epoch": best,
                "epochs_done": 3, "evaluated_images": 4}

    result = crossval.aggregate([report(0.5, 2, 1), report(0.7, 3, 3), report(0.9, 0, 2)], ["a"])
    # the fold without examples of "a" is not averaged for it, but counts for macro-F1
    assert result["per_class"]["a"]["f1"] == {"mean": pytest.approx(0.6), "std": pytest.approx(0.1414214),
                                              "n": 2}
    assert result["per_class"]["a"]["support"] == 5
    assert result["macro_f1"]["mean"] == pytest.approx(0.7) and result["median_best_epoch"] == 2


@pytest.mark.slow
def test_two_folds_write_runs_a_report_matching_them_and_a_final_model(tmp_path, capsys):
    data, out = make_folders(str(tmp_path / "data"), corrupt=False), str(tmp_path / "cv")
    assert multitrain_efficientnet.main(["--data", data, "--out", out, "--folds", "2", "--final", *FAST]) == 0
    summary = capsys.readouterr().out
    report = read_json(os.path.join(out, crossval.CV_REPORT))
    folds = [read_json(os.path.join(out, f"fold{k}", "report.json")) for k in (1, 2)]
    for label in report["labels"]:
        scored = [f["per_class"][label]["f1"] for f in folds if f["per_class"][label]["support"]]
        if scored:
            assert report["per_class"][label]["f1"]["mean"] == pytest.approx(np.mean(scored))
            assert report["per_class"][label]["f1"]["std"] == pytest.approx(np.std(scored, ddof=1))
    assert report["macro_f1"]["mean"] == pytest.approx(np.mean([f["macro_f1"] for f in folds]))
    assert report["micro_f1"]["mean"] == pytest.approx(np.mean([f["micro_f1"] for f in folds]))
    assert "±" in summary and "picture_indoor" in summary
    # every image is predicted once, by the fold that held its item out
    oof = read_csv(os.path.join(out, crossval.OOF_PREDICTIONS))
    folds_csv = {row["path"]: row["fold"] for row in read_csv(os.path.join(out, crossval.FOLDS_FILE))}
    assert len(oof) == len(folds_csv) == 32 and all(folds_csv[row["path"]] == row["fold"] for row in oof)
    splits = [read_csv(os.path.join(out, f"fold{k}", "split.csv")) for k in (1, 2)]
    for k, split in enumerate(splits, 1):
        assert {r["path"] for r in split if r["subset"] == "val"} == {p for p, f in folds_csv.items() if f == str(k)}
    # --final: the deliverable, with the thresholds tuned out of fold
    config = read_json(os.path.join(out, "model.json"))
    assert os.path.isfile(os.path.join(out, "best.weights.h5"))
    assert config["thresholds"] == {label: t["threshold"] for label, t in report["thresholds"].items()}
    assert config["training"]["epochs_done"] == report["median_best_epoch"]
    # a rerun with --resume skips the finished folds
    before = os.path.getmtime(os.path.join(out, "fold1", "best.weights.h5"))
    assert multitrain_efficientnet.main(["--out", out, "--folds", "2", "--resume"]) == 0
    assert os.path.getmtime(os.path.join(out, "fold1", "best.weights.h5")) == before
    # without --resume or --overwrite, the cross-validation is not replaced
    assert multitrain_efficientnet.main(["--data", data, "--out", out, "--folds", "2", *FAST]) == 1
