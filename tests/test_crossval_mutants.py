"""--folds without fitting a model: the fold orchestration (settings, split files, messages),
cv.json / folds.csv / oof_predictions.csv / cv_report.json as whole documents, the console
summary, mean ± std, the final model's reuse, and the Ctrl-C line.

The one call that trains (tagestimate.train.training.train / train_all) is replaced by a fake
that records its settings and writes what a finished fold writes (val_predictions.csv,
report.json, state.json; model.json + best.weights.h5 for the final model)."""

import csv
import dataclasses
import io
import json
import logging
import os
import sys
import types
import zlib

import numpy as np
import pytest
from PIL import Image

import tagestimate
from tagestimate import model as tag_model
from tagestimate.labels import default_labelmap, load_labelmap
from tagestimate.train import crossval, dataset, label_issues, metrics, provenance
from tagestimate.train import state as train_state
from tagestimate.train.settings import TrainingError, TrainSettings

FOLDERS = {"graphic_map": (200, 40, 40), "picture_indoor": (40, 190, 60), "stamp": (40, 40, 210),
           "picture_landmark": (210, 200, 40)}
ITEMS, PAGES = 3, 2
EMPTY = ("stamp/9999_1_0.jpg", "graphic_map/9998_1_0.jpg")  # 0 bytes: the pre-scan skips them
MANIFEST = ("folder,id,source,confidence\r\n"
            "graphic_map,1000_1_0,reviewed,\r\n"
            "graphic_map,1001_2_0,,0.9\r\n"
            "picture_indoor,2000_1_0,crawled,0.8\r\n"
            "stamp,3002_2_0,,\r\n")
LABELS = list(default_labelmap().labels)


def make_data(root):
    os.makedirs(root)
    for k, (folder, colour) in enumerate(FOLDERS.items()):
        os.makedirs(os.path.join(root, folder))
        for item in range(ITEMS):
            for page in range(PAGES):
                name = f"{1000 * (k + 1) + item}_{page + 1}_0.jpg"
                Image.new("RGB", (8, 8), colour).save(os.path.join(root, folder, name))
    for name in EMPTY:
        open(os.path.join(root, name), "wb").close()
    with open(os.path.join(root, "manifest.csv"), "w", newline="", encoding="utf-8") as handle:
        handle.write(MANIFEST)
    return root


def probability(relative, j):
    """A fold model's made-up score of label j for an image: fixed per image and label."""
    return (zlib.crc32(f"{relative}|{j}".encode()) % 1000) / 1000


def readable_samples(data, labels_map=None):
    samples = dataset.list_samples(data, labels_map or default_labelmap())
    return samples.subset([os.path.relpath(p, data) not in EMPTY for p in samples.paths])


def relative(path, data):
    return os.path.relpath(path, data).replace(os.sep, "/")


def fold_report(number, val_targets, labels=tuple(LABELS)):
    support = val_targets.sum(axis=0)
    return {"per_class": {label: {"precision": round(0.2 + 0.1 * number + 0.01 * j, 4),
                                  "recall": round(0.3 + 0.1 * number + 0.005 * j, 4),
                                  "f1": round(0.25 + 0.1 * number + 0.002 * j, 4), "support": int(support[j])}
                          for j, label in enumerate(labels)},
            "macro_f1": 0.4 + 0.1 * number, "micro_f1": 0.45 + 0.05 * number,
            "tuned": {"macro_f1": 0.5 + 0.02 * number}, "best_epoch": {1: 1, 2: 4, 3: 2}[number],
            "epochs_done": 5 + number, "evaluated_images": len(val_targets)}


class FakeTraining:
    """training.train / training.train_all: records what it is given, writes what a run writes."""

    def __init__(self, data, labels_map=None):
        self.data, self.calls, self.final_calls, self.tuned = data, [], [], []
        self.labels_map = labels_map or default_labelmap()
        self.labels = list(self.labels_map.labels)
        truth = readable_samples(data, self.labels_map)
        self.truth = {relative(p, data): (f, t) for p, f, t in zip(truth.paths, truth.folders, truth.targets)}

    def train(self, settings, explicit=None, write_report=None):
        split_bytes = None
        if settings.split is not None:
            with open(settings.split, "rb") as handle:
                split_bytes = handle.read()
            os.makedirs(settings.out, exist_ok=True)
            with open(os.path.join(settings.out, "split.csv"), "wb") as handle:
                handle.write(split_bytes)
        self.calls.append({"settings": settings, "explicit": explicit, "write_report": write_report,
                           "split": split_bytes})
        with open(os.path.join(settings.out, "split.csv"), newline="", encoding="utf-8") as handle:
            val = [row["path"] for row in csv.DictReader(handle) if row["subset"] == "val"]
        number = int(os.path.basename(settings.out)[4:])
        text = io.StringIO(newline="")
        writer = csv.writer(text)
        writer.writerow(["path", "folder", *self.labels])
        for path in val:
            scores = [f"{probability(path, j):.3f}" for j in range(len(self.labels))]
            writer.writerow([path, self.truth[path][0], *scores])
        # a stray row of an image the cross-validation does not hold: left out of the OOF file
        writer.writerow(["stamp/0000_1_0.jpg", "stamp", *("0.5" for _ in self.labels)])
        with open(os.path.join(settings.out, "val_predictions.csv"), "w", newline="", encoding="utf-8") as handle:
            handle.write(text.getvalue())
        report = fold_report(number, np.array([self.truth[p][1] for p in val]), self.labels)
        for name, content in (("report.json", report), ("state.json", {"finished": True, "epochs_done": 5 + number})):
            with open(os.path.join(settings.out, name), "w", encoding="utf-8") as handle:
                json.dump(content, handle)
        return report

    def train_all(self, spec, samples, thresholds, extra):
        self.final_calls.append({"spec": spec, "samples": samples, "thresholds": thresholds, "extra": extra})
        out = spec.settings.out
        tag_model.write_config(out, tag_model.ModelConfig(labels=tuple(self.labels), thresholds=thresholds,
                                                          training={"epochs_done": spec.settings.epochs}))
        open(os.path.join(out, "best.weights.h5"), "wb").close()


def tuned_thresholds(targets, probabilities, labels):
    """Stands in for metrics.tune_thresholds (tested in test_split_metrics; scikit-learn's F1 over its whole grid
    takes seconds): a distinct threshold per label."""
    return {label: {"threshold": round(0.3 + 0.05 * j, 2), "f1": 0.5, "support": int(np.sum(targets[:, j])),
                    "tuned": True} for j, label in enumerate(labels)}


def install(monkeypatch, training):
    def tune(targets, probabilities, labels):
        training.tuned.append((targets.tolist(), probabilities.tolist(), labels))
        return tuned_thresholds(targets, probabilities, labels)

    monkeypatch.setattr(crossval, "tune_thresholds", tune)
    module = types.SimpleNamespace(train=training.train, train_all=training.train_all)
    monkeypatch.setitem(sys.modules, "tagestimate.train.training", module)
    monkeypatch.setattr(tagestimate.train, "training", module, raising=False)
    return training


@pytest.fixture
def fake(monkeypatch, tmp_path):
    return install(monkeypatch, FakeTraining(make_data(str(tmp_path / "data"))))


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def messages():
    """What tagestimate.train.crossval logs (its own lines, exactly)."""
    records = _Records()
    logger = logging.getLogger(crossval.__name__)
    level = logger.level
    logger.addHandler(records)
    logger.setLevel(logging.INFO)
    yield records.messages
    logger.removeHandler(records)
    logger.setLevel(level)


def rounded(value):
    if isinstance(value, float):
        return round(value, 9)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v) for v in value]
    return value


def as_json(value):
    return json.loads(json.dumps(value))


def read_bytes(path):
    with open(path, "rb") as handle:
        return handle.read()


# ---------------------------------------------------------------- data in, data out

def test_mean_std_of_folds():
    assert crossval._mean_std([0.25, None, 0.75]) == {"mean": 0.5, "std": float(np.std([0.25, 0.75], ddof=1)), "n": 2}
    assert crossval._mean_std([0.625]) == {"mean": 0.625, "std": 0.0, "n": 1}
    assert crossval._mean_std([None, None]) is None
    assert crossval._mean_std([]) is None


def test_aggregate_is_the_whole_cv_report_statistics():
    def report(precision, recall, f1, support, macro, micro, tuned, best, done, images):
        return {"per_class": {"a": {"precision": precision, "recall": recall, "f1": f1, "support": support},
                              "b": {"precision": 0.5, "recall": 0.25, "f1": 0.125, "support": 0}},
                "macro_f1": macro, "micro_f1": micro, "tuned": {"macro_f1": tuned}, "best_epoch": best,
                "epochs_done": done, "evaluated_images": images}

    reports = [report(0.5, 0.75, 0.625, 1, 0.25, 0.375, 0.5, 1, 3, 10),
               report(0.25, 0.5, 0.375, 3, 0.75, 0.625, 0.25, 1, 4, 12),
               report(0.125, 0.25, 0.5, 0, 0.5, 0.5, 0.75, 2, 6, 11)]
    std = lambda *values: round(float(np.std(values, ddof=1)), 9)  # noqa: E731
    assert rounded(crossval.aggregate(reports, ["a", "b"])) == {
        # the fold without examples of "a" is left out of its means (a fold with one example is not)
        "per_class": {"a": {"precision": {"mean": 0.375, "std": std(0.5, 0.25), "n": 2},
                            "recall": {"mean": 0.625, "std": std(0.75, 0.5), "n": 2},
                            "f1": {"mean": 0.5, "std": std(0.625, 0.375), "n": 2}, "support": 4},
                      "b": {"precision": None, "recall": None, "f1": None, "support": 0}},
        "macro_f1": {"mean": 0.5, "std": std(0.25, 0.75, 0.5), "n": 3},
        "micro_f1": {"mean": 0.5, "std": std(0.375, 0.625, 0.5), "n": 3},
        "tuned_macro_f1": {"mean": 0.5, "std": std(0.5, 0.25, 0.75), "n": 3},
        "median_best_epoch": 1,
        "folds": [{"fold": 1, "best_epoch": 1, "epochs_done": 3, "val_images": 10, "macro_f1": 0.25, "micro_f1": 0.375},
                  {"fold": 2, "best_epoch": 1, "epochs_done": 4, "val_images": 12, "macro_f1": 0.75, "micro_f1": 0.625},
                  {"fold": 3, "best_epoch": 2, "epochs_done": 6, "val_images": 11, "macro_f1": 0.5, "micro_f1": 0.5}],
    }
    # the median best epoch rounds up, and is at least 1
    assert crossval.aggregate(reports[1:], ["a"])["median_best_epoch"] == 2
    assert crossval.aggregate([dict(reports[0], best_epoch=0)], ["a"])["median_best_epoch"] == 1


def summary_report(final):
    return {
        "labels": ["graphic_map", "stamp"],
        "per_class": {"graphic_map": {"precision": {"mean": 0.81234, "std": 0.0456, "n": 3},
                                      "recall": {"mean": 0.7, "std": 0.1, "n": 3},
                                      "f1": {"mean": 0.75555, "std": 0.02, "n": 3}, "support": 42},
                      "stamp": {"precision": None, "recall": {"mean": 0.5, "std": 0.0, "n": 1}, "f1": None,
                                "support": 3}},
        "thresholds": {"graphic_map": {"threshold": 0.35}, "stamp": {"threshold": 0.4}},
        "out_of_fold": {"images": 45, "macro_f1": 0.71234},
        "out_of_fold_tuned": {"macro_f1": 0.73456},
        "folds_count": 3, "macro_f1": {"mean": 0.6, "std": 0.05, "n": 3},
        "micro_f1": {"mean": 0.65, "std": 0.04, "n": 3},
        "default_threshold": 0.4, "median_best_epoch": 4, "out": "/runs/cv 3", "final": final,
    }


def test_format_summary_is_the_whole_console_summary():
    final = {"weights": "best.weights.h5", "config": "model.json", "epochs": 4, "images": 45}
    assert crossval.format_summary(summary_report(final)) == "\n".join([
        "label                support     precision        recall            F1   OOF thr",
        "graphic_map               42 0.812 ± 0.046 0.700 ± 0.100 0.756 ± 0.020      0.35",
        "stamp                      3             - 0.500 ± 0.000             -      0.40",
        "3 folds, grouped by item id: macro-F1 0.600 ± 0.050, micro-F1 0.650 ± 0.040 at threshold 0.4 "
        "(mean ± std over folds)",
        "out-of-fold (45 images): macro-F1 0.712, at the thresholds tuned on them 0.735; median best epoch 4",
        "final model (4 epochs on all 45 images): /runs/cv 3/best.weights.h5 + model.json with the out-of-fold "
        "thresholds",
        "files in /runs/cv 3: cv_report.json, oof_predictions.csv, folds.csv, fold1..3/",
    ])


def test_format_summary_without_scores_or_final_model():
    report = dict(summary_report(None), folds_count=2, macro_f1=None, micro_f1=None, median_best_epoch=1,
                  out_of_fold={"images": 1, "macro_f1": None}, out_of_fold_tuned={"macro_f1": None})
    assert crossval.format_summary(report).splitlines()[3:] == [
        "2 folds, grouped by item id: macro-F1             -, micro-F1             - at threshold 0.4 "
        "(mean ± std over folds)",
        "out-of-fold (1 image): macro-F1 n/a, at the thresholds tuned on them n/a; median best epoch 1",
        "files in /runs/cv 3: cv_report.json, oof_predictions.csv, folds.csv, fold1..2/",
    ]
    final = {"weights": "best.weights.h5", "config": "model.json", "epochs": 1, "images": 1}
    assert crossval.format_summary(dict(report, final=final)).splitlines()[5] == (
        "final model (1 epoch on all 1 image): /runs/cv 3/best.weights.h5 + model.json with the out-of-fold thresholds")


def test_write_oof_bytes(tmp_path):
    path = str(tmp_path / "oof.csv")
    crossval.write_oof(path, ["a/1_1_0.jpg", "b/2,x.jpg"], ["a", "b"], [2, 1],
                       np.array([[0.1234567, 1.0], [0.0, 0.5]]), ["la", "lb"])
    assert read_bytes(path) == (b"path,folder,fold,la,lb\r\n"
                                b"a/1_1_0.jpg,a,2,0.123457,1.000000\r\n"
                                b'"b/2,x.jpg",b,1,0.000000,0.500000\r\n')


def test_out_of_fold_gathers_every_fold_in_path_order(tmp_path):
    data, out = str(tmp_path / "data"), str(tmp_path / "cv")
    paths = [os.path.join(data, "x", "c.jpg"), os.path.join(data, "y", "a.jpg"), os.path.join(data, "x", "b.jpg"),
             os.path.join(data, "y", "d.jpg")]
    samples = dataset.Samples(paths, ["x", "y", "x", "y"], ["c", "a", "b", "d"],
                              np.array([[1, 0, 0], [0, 1, 0], [1, 0, 1], [0, 1, 1]]))
    fold_rows = {1: [("y/d.jpg", [0.1, 0.2, 0.3]), ("x/b.jpg", [0.4, 0.5, 0.6])],
                 2: [("x/c.jpg", [0.7, 0.8, 0.9]), ("zz/gone.jpg", [0.0, 0.0, 0.0])],
                 3: [("y/a.jpg", [0.15, 0.25, 0.35])]}
    for number, rows in fold_rows.items():
        os.makedirs(crossval.fold_dir(out, number))
        with open(os.path.join(crossval.fold_dir(out, number), "val_predictions.csv"), "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "folder", "p", "q", "r"])
            writer.writerows([[path, path.split("/")[0], *values] for path, values in rows])
    got = crossval.out_of_fold(out, 3, samples, data)
    assert got[0] == ["x/b.jpg", "x/c.jpg", "y/a.jpg", "y/d.jpg"]
    assert got[1] == ["x", "x", "y", "y"]
    assert got[2] == [1, 2, 3, 1]
    assert got[3].tolist() == [[1, 0, 1], [1, 0, 0], [0, 1, 0], [0, 1, 1]]
    assert got[4].tolist() == [[0.4, 0.5, 0.6], [0.7, 0.8, 0.9], [0.15, 0.25, 0.35], [0.1, 0.2, 0.3]]
    assert got[5] == ["p", "q", "r"]
    # one image, one label: still a 1 x 1 matrix
    one = dataset.Samples([paths[0]], ["x"], ["c"], np.array([[1]]))
    for number in (1, 2):
        with open(os.path.join(crossval.fold_dir(out, number), "val_predictions.csv"), "w", newline="") as handle:
            handle.write("path,folder,p\r\n" + ("x/c.jpg,x,0.25\r\n" if number == 2 else ""))
    got = crossval.out_of_fold(out, 2, one, data)
    assert (got[0], got[2], got[3].tolist(), got[4].tolist()) == (["x/c.jpg"], [2], [[1]], [[0.25]])


def write_final(out, epochs, thresholds, images):
    tag_model.write_config(out, tag_model.ModelConfig(labels=("a", "b"), thresholds=thresholds,
                                                      training={"epochs_done": epochs}))
    open(os.path.join(out, "best.weights.h5"), "wb").close()
    final = {"weights": "best.weights.h5", "config": "model.json", "epochs": epochs, "images": images}
    with open(os.path.join(out, crossval.CV_REPORT), "w") as handle:
        json.dump({"final": final}, handle)
    return final


@pytest.mark.parametrize("epochs, images, words", [(1, 1, "1 epoch on 1 image"), (3, 20, "3 epochs on 20 images")])
def test_final_done_says_the_final_model_is_kept(tmp_path, messages, epochs, images, words):
    thresholds = {"a": 0.3, "b": 0.6}
    final = write_final(str(tmp_path), epochs, thresholds, images)
    assert crossval.final_done(str(tmp_path), epochs, thresholds, images) == final
    assert messages == [f"final model: already trained for these folds ({words}), kept"]


def test_final_done_without_a_readable_model(tmp_path, messages):
    out, thresholds = str(tmp_path), {"a": 0.3, "b": 0.6}
    write_final(out, 2, thresholds, 5)
    with open(os.path.join(out, "model.json"), "w") as handle:
        handle.write("{not json")
    assert crossval.final_done(out, 2, thresholds, 5) is None
    write_final(out, 2, thresholds, 5)
    with open(os.path.join(out, crossval.CV_REPORT), "w") as handle:
        json.dump([1, 2], handle)  # not an object
    assert crossval.final_done(out, 2, thresholds, 5) is None
    with open(os.path.join(out, crossval.CV_REPORT), "w") as handle:
        json.dump({"final": None}, handle)
    assert crossval.final_done(out, 2, thresholds, 5) is None
    tag_model.write_config(out, tag_model.ModelConfig(labels=("a", "b"), thresholds=thresholds))
    write_final(out, 2, thresholds, 5)
    tag_model.write_config(out, tag_model.ModelConfig(labels=("a", "b"), thresholds=thresholds))  # no training entry
    assert crossval.final_done(out, 2, thresholds, 5) is None
    write_final(out, 2, thresholds, 5)
    tag_model.write_config(out, tag_model.ModelConfig(labels=("a", "b"), training={"epochs_done": 2}))
    assert crossval.final_done(out, 2, thresholds, 5) is None  # no thresholds in model.json
    write_final(out, 2, thresholds, 5)
    tag_model.write_config(out, tag_model.ModelConfig(labels=("a", "b"), thresholds=thresholds,
                                                      training={"epochs_done": 3}))
    assert crossval.final_done(out, 2, thresholds, 5) is None  # the cv report says 2, the model was trained 3
    assert messages == []


def test_interrupted_message_lines(tmp_path):
    out = str(tmp_path / "my cv")
    settings = TrainSettings(out=out, folds=3)
    before = ("interrupted before the folds were assigned, so there is nothing to resume; run the same command again")
    assert crossval.interrupted_message(settings) == before
    os.makedirs(out)
    assert crossval.interrupted_message(settings) == before  # an empty --out
    with open(os.path.join(out, "folds.csv.tmp"), "w") as handle:
        handle.write("x")
    assert crossval.interrupted_message(settings) == before + " with --overwrite"
    with open(os.path.join(out, crossval.CV_SETTINGS), "w") as handle:
        json.dump({"folds": 3}, handle)
    command = f"python multitrain_efficientnet.py --out '{out}' --folds 3 --resume"
    kept = "folds finished and are kept; continue with: " + command
    assert crossval.interrupted_message(settings) == f"interrupted; 0 of 3 {kept}"
    # folds 1 and 3 finished, 2 stopped before its first epoch (no state.json); fold0 and fold4 are not folds
    for name, state in (("fold0", {"finished": True}), ("fold1", {"finished": True}), ("fold2", None),
                        ("fold3", {"finished": True}), ("fold4", {"finished": True})):
        os.makedirs(os.path.join(out, name))
        if state is not None:
            with open(os.path.join(out, name, "state.json"), "w") as handle:
                json.dump(state, handle)
    assert crossval.interrupted_message(settings) == f"interrupted; 2 of 3 {kept}"
    settings = TrainSettings(out=out, folds=4)
    assert crossval.interrupted_message(settings).startswith("interrupted; 3 of 4 folds finished")


# ---------------------------------------------------------------- the run's steps

def test_samples_skips_unreadable_images_with_a_warning(tmp_path, messages):
    data = make_data(str(tmp_path / "data"))
    samples, skipped = crossval._samples(TrainSettings(data=data), default_labelmap())
    full = [os.path.join(data, name) for name in sorted(EMPTY)]
    assert skipped == {path: "empty file (0 bytes)" for path in full}
    assert messages == [f"skipping unreadable image {path}: empty file (0 bytes)" for path in full]
    expected = readable_samples(data)
    assert (samples.paths, samples.folders, samples.groups) == (expected.paths, expected.folders, expected.groups)
    assert np.array_equal(samples.targets, expected.targets) and len(samples.paths) == 24


def test_prepare_a_new_cross_validation(tmp_path):
    out = str(tmp_path / "cv")
    settings = TrainSettings(out=out, folds=3)
    assert crossval._prepare(settings, None) is settings
    # a folder fold0 or fold4 is not one of 3 folds; a missing --out is fine
    os.makedirs(os.path.join(out, "fold0"))
    os.makedirs(os.path.join(out, "fold4"))
    assert crossval._prepare(settings, None) is settings
    with pytest.raises(TrainingError, match="--epochs 0 is too small"):
        crossval._prepare(dataclasses.replace(settings, epochs=0), None)


@pytest.mark.parametrize("files, folders, named", [
    (("folds.csv", "cv_report.json"), (), "folds.csv, cv_report.json"),
    (("cv.json",), ("fold2",), "cv.json"),
    ((), ("fold1",), "fold folders"),
    ((), ("fold3",), "fold folders"),
])
def test_prepare_refuses_to_replace_a_cross_validation(tmp_path, files, folders, named):
    out = str(tmp_path / "cv")
    os.makedirs(out)
    for name in files:
        open(os.path.join(out, name), "w").close()
    for name in folders:
        os.makedirs(os.path.join(out, name))
    with pytest.raises(TrainingError) as error:
        crossval._prepare(TrainSettings(out=out, folds=3), None)
    assert str(error.value) == (f"{out} already holds a cross-validation ({named}); pass --resume to continue it, "
                                "--overwrite to replace it, or choose another --out")


def test_prepare_overwrite_removes_the_cross_validation_only(tmp_path):
    out = str(tmp_path / "cv")
    os.makedirs(out)
    for name in ("fold1", "fold2", "fold12", "fold_x", "foldA", "keep", "12"):
        os.makedirs(os.path.join(out, name))
        open(os.path.join(out, name, "x.txt"), "w").close()
    for name in ("folds.csv", "cv.json", "cv_report.json", "oof_predictions.csv", "label_issues.csv", "model.json",
                 "best.weights.h5", "state.json", "notes.txt", "fold3", "foldnotes.txt"):
        open(os.path.join(out, name), "w").close()
    settings = TrainSettings(out=out, folds=2, overwrite=True)
    assert crossval._prepare(settings, None) is settings
    assert sorted(os.listdir(out)) == ["12", "fold3", "foldA", "fold_x", "foldnotes.txt", "keep", "notes.txt"]
    # only fold folders and cv.json left by an interrupted start
    os.makedirs(os.path.join(out, "fold2"))
    open(os.path.join(out, "cv.json"), "w").close()
    assert crossval._prepare(settings, None) is settings
    assert sorted(os.listdir(out)) == ["12", "fold3", "foldA", "fold_x", "foldnotes.txt", "keep", "notes.txt"]


def test_prepare_resume_takes_the_stored_settings_not_given(tmp_path):
    out = str(tmp_path / "cv")
    os.makedirs(out)
    settings = TrainSettings(out=out, folds=3, resume=True, epochs=9)
    with pytest.raises(TrainingError) as error:
        crossval._prepare(settings, {"out", "folds", "resume", "epochs"})
    assert str(error.value) == (f"--resume: {out} holds no cross-validation (cv.json missing); drop --resume "
                                "to start one")
    stored = {"data": "/d", "epochs": 4, "seed": 5, "folds": 3, "final": True, "no_such_flag": 1}
    with open(os.path.join(out, "cv.json"), "w") as handle:
        json.dump(stored, handle)
    os.makedirs(os.path.join(out, "fold1"))  # a cross-validation under way: no "already holds"
    assert crossval._prepare(settings, {"out", "folds", "resume", "epochs"}) == dataclasses.replace(
        settings, data="/d", seed=5, final=True)
    # without the flags given, every one is taken as given
    assert crossval._prepare(settings, None) == dataclasses.replace(settings)
    with pytest.raises(TrainingError) as error:
        crossval._prepare(dataclasses.replace(settings, folds=4), {"out", "folds", "resume"})
    assert str(error.value) == (f"{out} holds a 3-fold cross-validation; --folds 4 cannot continue it "
                                "(start a new one with --overwrite)")
    # --folds not given: the stored count
    assert crossval._prepare(dataclasses.replace(settings, folds=5), {"out", "resume"}).folds == 3


def split_text(samples, folds_of, data, number):
    rows = ["path,folder,item_id,subset"]
    rows += [f"{relative(p, data)},{f},{g},{'val' if k == number else 'train'}"
             for p, f, g, k in zip(samples.paths, samples.folders, samples.groups, folds_of)]
    return ("\r\n".join(rows) + "\r\n").encode()


def test_run_fold_trains_a_new_fold_on_its_split(tmp_path, fake, messages):
    data, out = fake.data, str(tmp_path / "cv")
    samples = readable_samples(data)
    folds_of = np.array([1, 2, 3] * 8)
    settings = TrainSettings(data=data, out=out, folds=3, final=True, overwrite=True, split="x.csv", weights="none")
    writer = object()
    os.makedirs(os.path.join(out, "fold2"))  # empty: nothing to overwrite
    for number in (1, 2):
        report = crossval._run_fold(settings, {"out"}, number, samples, folds_of, data, writer)
        assert report == fold_report(number, samples.targets[folds_of == number])
    split_path = os.path.join(out, ".fold{}.split.csv")
    assert [call["settings"] for call in fake.calls] == [
        dataclasses.replace(settings, out=os.path.join(out, f"fold{k}"), folds=0, final=False, overwrite=False,
                            resume=False, split=split_path.format(k)) for k in (1, 2)]
    assert [call["split"] for call in fake.calls] == [split_text(samples, folds_of, data, k) for k in (1, 2)]
    assert [call["explicit"] for call in fake.calls] == [None, None]
    assert all(call["write_report"] is writer for call in fake.calls)
    assert sorted(os.listdir(out)) == ["fold1", "fold2"]  # the split files are gone
    assert messages == [f"fold 1 of 3: training into {out}/fold1", f"fold 2 of 3: training into {out}/fold2"]


def test_run_fold_keeps_a_finished_fold_and_continues_a_stopped_one(tmp_path, fake, messages):
    data, out = fake.data, str(tmp_path / "cv")
    samples = readable_samples(data)
    folds_of = np.array([1, 2] * 12)
    settings = TrainSettings(data=data, out=out, folds=2, final=True, weights="none")
    for number in (1, 2):
        crossval._run_fold(settings, None, number, samples, folds_of, data)
    # a continued fold is its own run: neither --overwrite nor another split reaches it
    settings = dataclasses.replace(settings, overwrite=True, split="other.csv")
    with open(os.path.join(out, "fold2", "state.json"), "w") as handle:
        json.dump({"finished": False}, handle)
    fake.calls.clear()
    writer, explicit = object(), {"out", "folds"}
    assert crossval._run_fold(settings, explicit, 1, samples, folds_of, data, writer) == \
        fold_report(1, samples.targets[folds_of == 1])
    assert crossval._run_fold(settings, explicit, 2, samples, folds_of, data, writer) == \
        fold_report(2, samples.targets[folds_of == 2])
    (call,) = fake.calls
    assert call["settings"] == dataclasses.replace(settings, out=os.path.join(out, "fold2"), folds=0, final=False,
                                                   overwrite=False, split=None, resume=True)
    assert call["explicit"] is explicit and call["write_report"] is writer and call["split"] is None
    assert messages[2:] == ["fold 1 of 2: finished earlier, kept", "fold 2 of 2: continuing"]


@pytest.mark.parametrize("images, epochs, words", [(1, 1, "all 1 image, 1 epoch"), (2, 3, "all 2 images, 3 epochs")])
def test_train_final_trains_on_every_image(tmp_path, fake, messages, images, epochs, words):
    out = str(tmp_path / "cv")
    os.makedirs(out)
    samples = readable_samples(fake.data).subset(np.arange(24) < images)
    settings = TrainSettings(data=fake.data, out=out, folds=3, final=True, resume=True, split="s.csv", weights="none",
                             epochs=30, seed=4)
    thresholds = {label: 0.3 for label in LABELS}
    assert crossval.train_final(settings, samples, epochs, thresholds) == {
        "weights": "best.weights.h5", "config": "model.json", "epochs": epochs, "images": images}
    (call,) = fake.final_calls
    assert call["spec"].settings == dataclasses.replace(settings, epochs=epochs, folds=0, final=False, resume=False,
                                                        split=None)
    assert (call["spec"].seed, call["spec"].pretrained, call["spec"].labels) == (4, False, LABELS)
    assert call["samples"] is samples and call["thresholds"] is thresholds
    assert call["extra"] == {"cross_validation": "cv_report.json", "folds": 3}
    assert messages == [f"final model: {words} (the folds' median best epoch)"]


# ---------------------------------------------------------------- the whole cross-validation

def expected_report(fake, settings, folds_of, final):
    data, out, samples = settings.data, settings.out, readable_samples(settings.data, fake.labels_map)
    reports = [fold_report(k, samples.targets[folds_of == k], fake.labels) for k in (1, 2, 3)]
    order = sorted(range(len(samples.paths)), key=lambda i: relative(samples.paths[i], data))
    paths = [relative(samples.paths[i], data) for i in order]
    folders = [samples.folders[i] for i in order]
    targets = samples.targets[order]
    probabilities = np.array([[float(f"{probability(p, j):.3f}") for j in range(len(fake.labels))] for p in paths])
    assert fake.tuned[-1] == (targets.tolist(), probabilities.tolist(), fake.labels)
    thresholds = tuned_thresholds(targets, probabilities, fake.labels)
    chosen = {label: thresholds[label]["threshold"] for label in fake.labels}
    full = [os.path.join(data, p) for p in paths]
    rows = label_issues.issue_rows([os.path.abspath(p) for p in full], folders, targets, probabilities, fake.labels,
                                   {os.path.abspath(p): o for p, o in provenance.lookup(full, data).items()},
                                   label_issues.OUT_OF_FOLD)
    origins = provenance.lookup(samples.paths, data)
    labels = fake.labels
    report = dict(crossval.aggregate(reports, labels), labels=labels, folds_count=3, seed=settings.seed,
                  default_threshold=0.4, out_of_fold=dict(metrics.evaluate(targets, probabilities, labels), images=24),
                  thresholds=thresholds, out_of_fold_tuned=metrics.evaluate(targets, probabilities, labels, chosen),
                  out=os.path.abspath(out), final=final,
                  label_issues=label_issues.summary(rows, 24, 24, label_issues.OUT_OF_FOLD),
                  data=os.path.abspath(data),
                  provenance=provenance.summary(samples.folders, samples.paths, origins, settings.reviewed_weight))
    oof = "path,folder,fold," + ",".join(fake.labels) + "\r\n" + "".join(
        f"{p},{f},{folds_of[i]}," + ",".join(f"{v:.6f}" for v in probabilities[n]) + "\r\n"
        for n, (i, p, f) in enumerate(zip(order, paths, folders)))
    return as_json(report), oof.encode(), chosen, rows


def test_cross_validate_writes_every_file_and_keeps_them_on_resume(tmp_path, fake, messages):
    data, out = fake.data, str(tmp_path / "cv")
    os.makedirs(out)  # an empty --out is fine
    settings = TrainSettings(data=data, out=out, folds=3, final=True, weights="none", seed=11, epochs=9,
                             reviewed_weight=2.5, batch_size=8)
    writer = object()
    report = crossval.cross_validate(settings, None, writer)
    samples = readable_samples(data)
    folds_of = dataset.assign_folds(samples, 3, 11)
    final = {"weights": "best.weights.h5", "config": "model.json", "epochs": 2, "images": 24}
    expected, oof, chosen, rows = expected_report(fake, settings, folds_of, final)
    assert as_json(report) == expected
    with open(os.path.join(out, "cv_report.json"), encoding="utf-8") as handle:
        assert json.load(handle) == expected
    assert expected["provenance"]["by_folder"]["graphic_map"] == {"reviewed": 1, "crawled": 1, "rebuilt": 0,
                                                                   "unknown": 4}
    assert read_bytes(os.path.join(out, "oof_predictions.csv")) == oof
    assert label_issues.read_issues(os.path.join(out, "label_issues.csv")) == \
        label_issues.read_issues(_written_issues(tmp_path, rows))
    with open(os.path.join(out, "cv.json"), encoding="utf-8") as handle:
        assert json.load(handle) == as_json(dict({name: getattr(settings, name) for name in
                                                  (*train_state.RESUMABLE, *crossval._CV_FIXED)},
                                                 data=os.path.abspath(data)))
    stored = dataset.read_folds(os.path.join(out, "folds.csv"), samples, data)
    assert stored[0].all() and stored[1].tolist() == folds_of.tolist()
    # each fold trained on its own split, the report writer passed on
    assert [call["settings"] for call in fake.calls] == [
        dataclasses.replace(settings, out=os.path.join(out, f"fold{k}"), folds=0, final=False, overwrite=False,
                            resume=False, split=os.path.join(out, f".fold{k}.split.csv")) for k in (1, 2, 3)]
    assert [call["split"] for call in fake.calls] == [split_text(samples, folds_of, data, k) for k in (1, 2, 3)]
    assert all(call["write_report"] is writer for call in fake.calls)
    # the final model: all images, the folds' median best epoch, the out-of-fold thresholds
    (final_call,) = fake.final_calls
    assert final_call["spec"].settings == dataclasses.replace(settings, epochs=2, folds=0, final=False)
    assert final_call["samples"].paths == samples.paths and final_call["thresholds"] == chosen
    assert messages == [*(f"skipping unreadable image {os.path.join(data, name)}: empty file (0 bytes)"
                          for name in sorted(EMPTY)),
                        *(f"fold {k} of 3: training into {out}/fold{k}" for k in (1, 2, 3)),
                        "final model: all 24 images, 2 epochs (the folds' median best epoch)"]
    # --resume alone: the stored flags, the finished folds and the final model are kept
    messages.clear()
    fake.calls.clear()
    fake.final_calls.clear()
    resumed = TrainSettings(out=out, folds=3, resume=True)
    assert as_json(crossval.cross_validate(resumed, {"out", "folds", "resume"})) == expected
    assert fake.calls == [] and fake.final_calls == []
    assert messages[2:] == [*(f"fold {k} of 3: finished earlier, kept" for k in (1, 2, 3)),
                            "final model: already trained for these folds (2 epochs on 24 images), kept"]
    # a fold stopped during training is continued with the flags given; a final model that no
    # longer matches is trained again
    with open(os.path.join(out, "fold2", "state.json"), "w") as handle:
        json.dump({"finished": False}, handle)
    os.remove(os.path.join(out, "best.weights.h5"))
    explicit = {"out", "folds", "resume", "epochs"}
    resumed = TrainSettings(out=out, folds=3, resume=True, epochs=12)
    assert as_json(crossval.cross_validate(resumed, explicit, writer)) == expected
    (call,) = fake.calls
    assert call["settings"] == dataclasses.replace(settings, out=os.path.join(out, "fold2"), folds=0, final=False,
                                                   resume=True, epochs=12)
    assert call["explicit"] is explicit and call["write_report"] is writer
    (final_call,) = fake.final_calls
    assert final_call["spec"].settings == dataclasses.replace(settings, epochs=2, folds=0, final=False)


def _written_issues(tmp_path, rows):
    folder = tmp_path / "expected_issues"
    folder.mkdir()
    label_issues.write_issues(str(folder / "label_issues.csv"), rows)
    return str(folder / "label_issues.csv")


def test_cross_validate_resume_leaves_out_images_not_in_folds_csv(tmp_path, fake, messages):
    data, out = fake.data, str(tmp_path / "cv")
    settings = TrainSettings(data=data, out=out, folds=3, weights="none", seed=11)
    first = crossval.cross_validate(settings)
    assert first["final"] is None and fake.final_calls == []
    # an image added after the folds were assigned is not in any fold
    Image.new("RGB", (8, 8), (1, 2, 3)).save(os.path.join(data, "stamp", "3999_1_0.jpg"))
    again = crossval.cross_validate(TrainSettings(out=out, folds=3, resume=True), {"out", "folds", "resume"})
    assert as_json(again) == as_json(first)
    assert len(fake.calls) == 3


def test_cross_validate_with_a_label_map_and_relative_folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data, out, labelmap = make_data("data"), "cv", "labels.json"
    with open(labelmap, "w", encoding="utf-8") as handle:
        json.dump({"labels": ["stamp", "picture", "graphic_map"],
                   "tags": {"stamp": ["stamp"], "picture_indoor": ["picture"], "picture_landmark": ["picture"],
                            "graphic_map": ["graphic_map"]}}, handle)
    fake = install(monkeypatch, FakeTraining(data, load_labelmap(labelmap)))
    settings = TrainSettings(data=data, out=out, folds=3, weights="none", seed=11, labelmap=labelmap)
    report = crossval.cross_validate(settings)
    folds_of = dataset.assign_folds(readable_samples(data, fake.labels_map), 3, 11)
    expected, oof, _, _ = expected_report(fake, settings, folds_of, None)
    assert as_json(report) == expected and expected["labels"] == ["stamp", "picture", "graphic_map"]
    assert read_bytes(os.path.join(out, "oof_predictions.csv")) == oof
    with open(os.path.join(out, "cv.json"), encoding="utf-8") as handle:
        assert json.load(handle)["data"] == str(tmp_path / "data")  # --resume may run from another folder
