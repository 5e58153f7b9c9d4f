"""--folds: grouped folds, per-fold runs, cv_report.json from the folds' reports, --final."""

import json
import os
import sys
import types

import numpy as np
import pytest

import multitrain_efficientnet
from test_training import make_folders, read_csv
import tagestimate
from tagestimate.train import crossval
from tagestimate.train import dataset
from tagestimate.train import metrics
from tagestimate import model as tag_model
from tagestimate.labels import default_labelmap
from tagestimate.train.settings import TrainSettings

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

    result = crossval.aggregate([report(0.5, 2, 1), report(0.6, 3, 4), report(1.0, 0, 2)], ["a"])
    # the fold without examples of "a" is not averaged for it, but counts for macro-F1
    assert result["per_class"]["a"]["f1"] == {"mean": pytest.approx(0.55), "std": pytest.approx(0.0707107),
                                              "n": 2}
    assert result["per_class"]["a"]["support"] == 5
    assert result["macro_f1"] == {"mean": pytest.approx(0.7), "std": pytest.approx(0.2645751), "n": 3}
    assert result["median_best_epoch"] == 2


def test_a_fold_stopped_before_its_first_epoch_is_started_again(tmp_path, monkeypatch):
    """A fold folder without state.json (Ctrl-C before its first epoch ended) is trained afresh over
    what it holds, with the fold's own split; a --resume must not stop at "already holds a run"."""
    data, out = make_folders(str(tmp_path / "data"), corrupt=False), tmp_path / "cv"
    (out / "fold2").mkdir(parents=True)
    (out / "fold2" / "model.json").write_text("{}")
    samples = dataset.list_samples(data, default_labelmap())
    folds_of = dataset.assign_folds(samples, 2, seed=1)
    calls = []

    def train(settings, explicit=None, write_report=None):
        calls.append((settings, read_csv(settings.split), write_report))
        return {"fold": 2}

    fake = types.SimpleNamespace(train=train)
    monkeypatch.setitem(sys.modules, "tagestimate.train.training", fake)
    monkeypatch.setattr(tagestimate.train, "training", fake, raising=False)
    settings = TrainSettings(data=data, out=str(out), folds=2, resume=True)
    writer = object()  # the report writer the train command passes in reaches the fold's training
    assert crossval._run_fold(settings, None, 2, samples, folds_of, data, writer) == {"fold": 2}
    (fold_settings, split, passed_writer), = calls
    assert passed_writer is writer
    assert fold_settings.out == str(out / "fold2") and fold_settings.overwrite and not fold_settings.resume
    assert sum(row["subset"] == "val" for row in split) == sum(folds_of == 2) > 0


def test_resume_keeps_finished_folds_and_continues_a_stopped_one(tmp_path, monkeypatch):
    data, out = make_folders(str(tmp_path / "data"), corrupt=False), tmp_path / "cv"
    samples = dataset.list_samples(data, default_labelmap())
    folds_of = dataset.assign_folds(samples, 2, seed=1)
    for number, finished in ((1, True), (2, False)):
        (out / f"fold{number}").mkdir(parents=True)
        (out / f"fold{number}" / "state.json").write_text(json.dumps({"finished": finished}))
    (out / "fold1" / "report.json").write_text(json.dumps({"fold": 1}))
    calls = []
    fake = types.SimpleNamespace(
        train=lambda settings, explicit=None, write_report=None: calls.append(settings) or {"fold": 2})
    monkeypatch.setitem(sys.modules, "tagestimate.train.training", fake)
    monkeypatch.setattr(tagestimate.train, "training", fake, raising=False)
    settings = TrainSettings(data=data, out=str(out), folds=2, resume=True)
    assert [crossval._run_fold(settings, {"out"}, k, samples, folds_of, data) for k in (1, 2)] == [{"fold": 1},
                                                                                                  {"fold": 2}]
    (continued,) = calls
    assert continued.out == str(out / "fold2") and continued.resume and not continued.overwrite


def test_final_model_is_kept_only_when_it_matches_the_folds(tmp_path):
    out, thresholds = str(tmp_path), {"a": 0.3, "b": 0.6}
    tag_model.write_config(out, tag_model.ModelConfig(labels=("a", "b"), thresholds=thresholds,
                                                      training={"epochs_done": 3}))
    final = {"weights": "best.weights.h5", "config": "model.json", "epochs": 3, "images": 20}
    with open(os.path.join(out, crossval.CV_REPORT), "w") as handle:
        json.dump({"final": final}, handle)
    assert crossval.final_done(out, 3, thresholds, 20) is None  # no weights yet
    open(os.path.join(out, "best.weights.h5"), "wb").close()
    assert crossval.final_done(out, 3, thresholds, 20) == final
    assert crossval.final_done(out, 4, thresholds, 20) is None
    assert crossval.final_done(out, 3, {"a": 0.3, "b": 0.5}, 20) is None
    assert crossval.final_done(out, 3, thresholds, 21) is None
    os.remove(os.path.join(out, crossval.CV_REPORT))
    assert crossval.final_done(out, 3, thresholds, 20) is None


def test_ctrl_c_names_the_command_that_continues_the_folds(tmp_path):
    out = str(tmp_path / "my cv")
    settings = TrainSettings(out=out, folds=3)
    assert "nothing to resume" in crossval.interrupted_message(settings)
    os.makedirs(os.path.join(out, "fold1"))
    with open(os.path.join(out, crossval.CV_SETTINGS), "w") as handle:
        json.dump({"folds": 3}, handle)
    with open(os.path.join(out, "fold1", "state.json"), "w") as handle:
        json.dump({"finished": True}, handle)
    message = crossval.interrupted_message(settings)
    assert "1 of 3 folds finished" in message
    assert message.endswith(f"python multitrain_efficientnet.py --out '{out}' --folds 3 --resume")


@pytest.mark.slow
def test_two_folds_write_runs_a_report_matching_them_and_a_final_model(tmp_path, capsys, monkeypatch):
    from tagestimate.train import training

    data, out = make_folders(str(tmp_path / "data"), corrupt=False), str(tmp_path / "cv")
    # Ctrl-C in fold 2 after its last epoch: exit 130 and the command that continues that fold
    real_results, results_calls = training._write_results, []

    def interrupted_in_fold2(*args, **kwargs):
        results_calls.append(1)
        if len(results_calls) == 2:
            raise KeyboardInterrupt
        return real_results(*args, **kwargs)

    monkeypatch.setattr(training, "_write_results", interrupted_in_fold2)
    assert multitrain_efficientnet.main(["--data", data, "--out", out, "--folds", "2", "--final", *FAST]) == 130
    command = capsys.readouterr().err.split("continue with: ")[1].split()
    assert command[:2] == ["python", "multitrain_efficientnet.py"]
    fold2 = os.path.join(out, "fold2")
    assert read_json(os.path.join(fold2, "state.json"))["finished"] is False
    stopped = os.path.getmtime(os.path.join(fold2, "last.weights.h5"))
    monkeypatch.setattr(training, "_write_results", real_results)
    assert multitrain_efficientnet.main(command[2:]) == 0
    # fold 2 was continued (only its report was left), not trained again
    assert os.path.getmtime(os.path.join(fold2, "last.weights.h5")) == stopped
    assert len(read_csv(os.path.join(fold2, "history.csv"))) == 1
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
    # each fold's review report, written by the hook the train command passes through cross_validate
    assert all(os.path.isfile(os.path.join(out, f"fold{k}", "report.html")) for k in (1, 2))
    # report.html: the folds' overview (mean ± std), linking each fold's page, which names its fold
    overview = open(os.path.join(out, "report.html"), encoding="utf-8").read()
    assert 'href="fold1/report.html"' in overview and 'href="fold2/report.html"' in overview and " ± " in overview
    assert "Fold 2 of 2 of the cross-validation" in open(os.path.join(fold2, "report.html"), encoding="utf-8").read()
    # every image is predicted once, by the fold that held its item out
    oof = read_csv(os.path.join(out, crossval.OOF_PREDICTIONS))
    folds_csv = {row["path"]: row["fold"] for row in read_csv(os.path.join(out, crossval.FOLDS_FILE))}
    assert len(oof) == len(folds_csv) == 32 and all(folds_csv[row["path"]] == row["fold"] for row in oof)
    splits = [read_csv(os.path.join(out, f"fold{k}", "split.csv")) for k in (1, 2)]
    for k, split in enumerate(splits, 1):
        assert {r["path"] for r in split if r["subset"] == "val"} == {p for p, f in folds_csv.items() if f == str(k)}
    # the thresholds are tuned on the out-of-fold predictions
    truth = dataset.list_samples(data, default_labelmap())
    targets = {os.path.relpath(p, data): t for p, t in zip(truth.paths, truth.targets)}
    oof_targets = np.array([targets[row["path"]] for row in oof])
    oof_probabilities = np.array([[float(row[label]) for label in report["labels"]] for row in oof])
    assert report["thresholds"] == json.loads(json.dumps(
        metrics.tune_thresholds(oof_targets, oof_probabilities, report["labels"])))
    # --final: the deliverable, with the thresholds tuned out of fold
    config = read_json(os.path.join(out, "model.json"))
    assert os.path.isfile(os.path.join(out, "best.weights.h5"))
    assert config["thresholds"] == {label: t["threshold"] for label, t in report["thresholds"].items()}
    assert config["training"]["epochs_done"] == report["median_best_epoch"]
    # a rerun with --resume skips the finished folds and the final model that matches them
    before = [os.path.getmtime(os.path.join(out, *where, "best.weights.h5")) for where in (("fold1",), ())]
    assert multitrain_efficientnet.main(["--out", out, "--folds", "2", "--resume"]) == 0
    assert [os.path.getmtime(os.path.join(out, *where, "best.weights.h5")) for where in (("fold1",), ())] == before
    assert read_json(os.path.join(out, crossval.CV_REPORT))["final"] == report["final"]
    # without --resume or --overwrite, the cross-validation is not replaced
    assert multitrain_efficientnet.main(["--data", data, "--out", out, "--folds", "2", *FAST]) == 1
