"""The trainer's pure parts, no model fit (tagestimate/train/dataset.py, metrics.py, train_state.py and
training.py's checkpoints): data listing, grouped split, folder weights, F1 and threshold tuning,
the summary, and what --resume relies on (output folder checks, split.csv, state.json, weight
checkpoints)."""

import csv
import json
import logging
import os
import re
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import f1_score, precision_recall_fscore_support

from tagestimate.train import dataset
from tagestimate.train import metrics
from tagestimate.train import state as train_state
from tagestimate.train import training
from tagestimate import model as tag_model
from tagestimate.train.dataset import Samples
from tagestimate.files import printable_path
from tagestimate.images import ImageError, is_utf8_name, load_image
from tagestimate.labels import LabelMapError, default_labelmap, from_dict
from tagestimate.train.settings import PREDICTIONS, SPLIT, TrainingError


def messages(caplog):
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]


def image(path, colour=(200, 30, 30), size=(12, 10)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def read_rows(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


# ---------------------------------------------------------------- listing

@pytest.mark.parametrize("path, item", [
    ("/d/picture_indoor/1054192_10_1.jpg", "1054192"),
    ("R100000039-I000001_12_3.png", "R100000039-I000001"),
    ("R1_b_12_0.jpg", "R1_b"),          # crawler ids may hold '_'
    ("abc_def.jpg", "abc"),             # not an NDL name: up to the first '_'
    ("a_b_c_d.jpg", "a"),
    ("scan.v2.jpg", "scan.v2"),
    (os.path.join("x_9", "scan.jpg"), "scan"),  # the folder never counts
])
def test_item_id(path, item):
    assert dataset.item_id(path) == item


def test_list_samples_reads_folders_in_order_with_their_label_vectors(tmp_path, caplog):
    data = str(tmp_path)
    for name in ("picture_landmark/2_1_0.jpg", "picture_landmark/1_1_0.jpg", "stamp/3_1_0.png",
                 "stamp/sub/4_1_0.jpg", "stamp/.hidden.jpg"):
        image(os.path.join(data, name))
    os.makedirs(tmp_path / ".git")
    os.makedirs(tmp_path / "graphic")  # empty: warned, ignored
    image(os.path.join(data, "loose_1_0.jpg"))
    (tmp_path / "notes.txt").write_text("not an image")
    samples = dataset.list_samples(data, default_labelmap())
    assert samples.paths == [os.path.join(data, p) for p in ("picture_landmark/1_1_0.jpg", "picture_landmark/2_1_0.jpg",
                                                             "stamp/3_1_0.png", "stamp/sub/4_1_0.jpg")]
    assert samples.folders == ["picture_landmark", "picture_landmark", "stamp", "stamp"]
    assert samples.groups == ["1", "2", "3", "4"]
    landmark = [0, 1, 0, 0, 0, 0, 0, 0, 1, 1, 0]
    stamp = [0] * 10 + [1]
    assert samples.targets.dtype == np.float32 and samples.targets.shape == (4, 11)
    assert samples.targets.tolist() == [landmark, landmark, stamp, stamp]
    assert messages(caplog) == [
        f"1 image directly in {data} belongs to no tag folder and is ignored (e.g. loose_1_0.jpg)",
        f"folder {os.path.join(data, 'graphic')} has no images; it is ignored",
    ]


def test_list_samples_one_label_map_row_per_image(tmp_path):
    table = from_dict({"labels": ["a", "b"], "tags": {"x": ["b"], "y": ["a", "b"]}})
    image(str(tmp_path / "x" / "1_1_0.jpg"))
    image(str(tmp_path / "y" / "2_1_0.jpg"))
    samples = dataset.list_samples(str(tmp_path), table)
    assert samples.targets.tolist() == [[0, 1], [1, 1]]


def test_list_samples_errors_name_the_folder_and_the_fix(tmp_path):
    with pytest.raises(TrainingError) as error:
        dataset.list_samples(str(tmp_path / "nowhere"), default_labelmap())
    assert str(error.value) == (f"--data {tmp_path / 'nowhere'} is not a folder; pass the folder that holds one "
                                "sub-folder of images per tag (e.g. datasetpdm/picture_indoor/...)")
    os.makedirs(tmp_path / "stamp")
    with pytest.raises(TrainingError) as error:
        dataset.list_samples(str(tmp_path), default_labelmap())
    assert str(error.value) == f"{tmp_path} holds no images in its sub-folders; nothing to train on"
    os.makedirs(tmp_path / "postcards")
    os.makedirs(tmp_path / "zines")
    with pytest.raises(LabelMapError) as error:
        dataset.list_samples(str(tmp_path), default_labelmap())
    assert str(error.value) == (f"{tmp_path} has folder(s) the label map does not know: postcards, zines; rename or "
                                "remove them, or pass --labelmap with a map that has them "
                                f"(python labelmap.py --check {tmp_path} shows every folder's labels)")


def test_untagged_folder_is_left_out_unless_the_map_trains_it(tmp_path, caplog):
    image(str(tmp_path / "stamp" / "1_1_0.jpg"))
    image(str(tmp_path / "unknown" / "2_1_0.jpg"))
    assert dataset.list_samples(str(tmp_path), default_labelmap()).folders == ["stamp"]
    assert messages(caplog) == [f"{tmp_path / 'unknown'} holds images the crawler found without any tag; they are "
                                "not trained (move them into tag folders to use them)"]
    table = from_dict({"labels": ["stamp", "unknown"]})
    assert dataset.list_samples(str(tmp_path), table).folders == ["stamp", "unknown"]


def test_names_that_are_not_utf8_are_left_out_and_named(tmp_path, caplog):
    image(str(tmp_path / "stamp" / "1_1_0.jpg"))
    name = os.fsdecode(b"\x83e\x83X\x83g_1_0.jpg")
    try:
        image(os.path.join(str(tmp_path), "stamp", name))
    except (OSError, UnicodeEncodeError):
        pytest.fail("the test file system must accept names that are not UTF-8")
    samples = dataset.list_samples(str(tmp_path), default_labelmap())
    assert samples.paths == [str(tmp_path / "stamp" / "1_1_0.jpg")]
    assert messages(caplog) == [
        f"left out, its name is not valid UTF-8: {tmp_path / 'stamp'}/\\x83e\\x83X\\x83g_1_0.jpg",
        "1 image left out because its name is not UTF-8 (listed above); rename it to UTF-8 to "
        f"train on it (e.g. convmv -r -f shift_jis -t utf8 --notest {tmp_path})",
    ]


def test_shown_path_and_utf8_check():
    bad = os.fsdecode(b"a\x83.jpg")
    assert printable_path(bad) == "a\\x83.jpg"
    assert printable_path("写真.jpg") == "写真.jpg"
    assert is_utf8_name("写真.jpg") is True and is_utf8_name(bad) is False


def test_find_unreadable_names_each_bad_file_and_its_reason(tmp_path):
    good = image(str(tmp_path / "good.jpg"))
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "page.jpg"
    text.write_text("<html>")
    truncated = tmp_path / "cut.png"
    with open(image(str(tmp_path / "full.png"), size=(64, 64)), "rb") as handle:
        whole = handle.read()
    truncated.write_bytes(whole[:60])
    found = dataset.find_unreadable([good, str(empty), str(text), str(truncated)], workers=2)
    assert set(found) == {str(empty), str(text), str(truncated)}
    assert found[str(empty)] == "empty file (0 bytes)"
    assert found[str(text)] == "not an image Pillow can read (wrong extension, text or HTML?)"
    assert found[str(truncated)].startswith("corrupt image (") and found[str(truncated)].endswith(")")
    assert dataset._quick_check(good) is None
    assert dataset._quick_check(str(tmp_path / "missing.jpg")).startswith("corrupt image (FileNotFoundError: ")


def test_quick_check_treats_large_images_as_load_image_does(tmp_path, monkeypatch):
    """Over Pillow's warning limit: no DecompressionBombWarning (load_image decodes it reduced);
    over twice the limit: refused by name, as load_image refuses it."""
    path = str(tmp_path / "scan.png")
    Image.new("RGB", (40, 30), (200, 30, 30)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 1200 pixels: above the limit, below twice it
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert dataset._quick_check(path) is None
        load_image(path, 16)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 600)  # 1200 pixels: exactly twice the limit, still read
    assert dataset._quick_check(path) is None
    assert load_image(path, 16).shape == (16, 16, 3)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)
    reason = dataset._quick_check(path)
    assert reason == "too many pixels to decode safely (40 x 30, over Pillow's decompression-bomb limit of 1,000); " \
                     "scale the image down"
    with pytest.raises(ImageError) as error:
        load_image(path, 16)
    assert error.value.reason == reason


def test_samples_subset_keeps_rows_together():
    samples = Samples(["a", "b", "c"], ["x", "y", "z"], ["1", "2", "3"], np.array([[1.0], [2.0], [3.0]]))
    part = samples.subset(np.array([True, False, True]))
    assert (part.paths, part.folders, part.groups, part.targets.tolist()) == (["a", "c"], ["x", "z"], ["1", "3"],
                                                                              [[1.0], [3.0]])


# ---------------------------------------------------------------- split

def spread_samples(count=300, folders=4, items=40, seed=1):
    rng = np.random.default_rng(seed)
    names = [f"f{rng.integers(folders)}" for _ in range(count)]
    groups = [f"{rng.integers(items)}" for _ in range(count)]
    return Samples([f"{g}_{i}_0.jpg" for i, g in enumerate(groups)], names, groups, np.zeros((count, 1)))


@pytest.mark.parametrize("val_split, folds", [(0.1, 10), (0.2, 5), (0.5, 2), (0.3, 3), (0.45, 2)])
def test_split_holds_out_one_fold_of_items(val_split, folds):
    samples = spread_samples()
    val = dataset.split_samples(samples, val_split, seed=3)
    assert val.dtype == bool and val.shape == (300,)
    val_items = {g for g, v in zip(samples.groups, val) if v}
    train_items = set(samples.groups) - val_items
    assert val_items and not val_items & {g for g, v in zip(samples.groups, val) if not v}
    assert len(val_items) == pytest.approx(40 / folds, abs=1.5)  # about 1/folds of the items
    assert len(train_items) + len(val_items) == 40
    assert set(np.asarray(samples.folders)[val]) == set(samples.folders)  # stratified
    assert (dataset.split_samples(samples, val_split, seed=3) == val).all()  # seeded
    assert not (dataset.split_samples(samples, val_split, seed=4) == val).all()


@pytest.mark.parametrize("val_split", [0, -0.1, 0.51, 1.0])
def test_split_refuses_a_fraction_outside_0_to_half(val_split):
    with pytest.raises(TrainingError) as error:
        dataset.split_samples(spread_samples(), val_split, seed=0)
    assert str(error.value) == f"--val-split {val_split} must be above 0 and at most 0.5"


def test_split_needs_two_item_ids_and_says_which_one_it_found():
    samples = Samples(["1_1.jpg", "1_2.jpg"], ["a", "a"], ["1", "1"], np.zeros((2, 1)))
    with pytest.raises(TrainingError) as error:
        dataset.split_samples(samples, 0.5, seed=0)
    assert str(error.value) == (
        "all 2 readable images belong to one item id (1), but validation needs an item never seen in "
        "training; add images of at least one more item (the item id is the file name up to its first '_': "
        "1054192_10_1.jpg is item 1054192)")
    two = Samples(["1_1.jpg", "2_1.jpg"], ["a", "a"], ["1", "2"], np.zeros((2, 1)))
    assert dataset.split_samples(two, 0.5, seed=0).sum() == 1


def test_a_small_data_set_gets_fewer_folds_with_a_warning(caplog):
    samples = Samples([f"{i}_1.jpg" for i in range(4)], ["a", "a", "b", "b"], ["1", "2", "3", "4"], np.zeros((4, 1)))
    val = dataset.split_samples(samples, 0.1, seed=0)
    assert val.sum() == 2 and set(np.asarray(samples.folders)[val]) == {"a", "b"}  # 1/2, still stratified
    assert messages(caplog) == [
        "the data set is too small to hold out 1/10 of its items (--val-split 0.1): 4 images, 4 item ids, at most "
        "2 images per folder; holding out 1/2 of the items instead (2 validation images)"]
    caplog.clear()
    single = Samples([f"{i}_1.jpg" for i in range(3)], ["a", "b", "c"], ["1", "2", "3"], np.zeros((3, 1)))
    val = dataset.split_samples(single, 0.25, seed=0)
    assert 0 < val.sum() < 3
    assert messages(caplog)[0] == (
        "the data set is too small to hold out 1/4 of its items (--val-split 0.25): 3 images, 3 item ids, at most "
        f"1 image per folder; holding out 1/3 of the items instead ({val.sum()} validation image{'' if val.sum() == 1 else 's'}), "
        "not stratified by folder")


def test_split_warns_about_folders_on_one_side(caplog):
    groups = [str(i) for i in range(10)] + ["100", "100", "100"]
    folders = ["big"] * 10 + ["one_item"] * 3
    samples = Samples([f"{g}_1_0.jpg" for g in groups], folders, groups, np.zeros((13, 1)))
    val = dataset.split_samples(samples, 0.5, seed=0)
    side = "val" if val[-1] else "train"
    assert messages(caplog) == [f"folder one_item has all its images on the {side} side (too few item ids to split it)"]
    caplog.clear()
    dataset.split_samples(spread_samples(), 0.2, seed=0)
    assert messages(caplog) == []


def test_split_warns_val_side_when_a_folder_is_only_validation(caplog):
    for seed in range(20):
        groups = [str(i) for i in range(10)] + ["100"]
        samples = Samples([f"{g}_1_0.jpg" for g in groups], ["big"] * 10 + ["one"], groups, np.zeros((11, 1)))
        caplog.clear()
        if dataset.split_samples(samples, 0.5, seed=seed)[-1]:
            assert messages(caplog) == ["folder one has all its images on the val side (too few item ids to split it)"]
            return
    pytest.fail("no seed put the one-item folder on the validation side")


def test_split_file_round_trips_and_reports_changes(tmp_path, caplog):
    data = str(tmp_path / "data")
    paths = [os.path.join(data, p) for p in ("stamp/2_1_0.jpg", "graphic/1_1_0.jpg", "stamp/sub/3_1_0.jpg")]
    samples = Samples(paths, ["stamp", "graphic", "stamp"], ["2", "1", "3"], np.zeros((3, 1)))
    path = str(tmp_path / SPLIT)
    dataset.write_split(path, samples, np.array([True, False, False]), data)
    assert read_rows(path) == [["path", "folder", "item_id", "subset"], ["graphic/1_1_0.jpg", "graphic", "1", "train"],
                               ["stamp/2_1_0.jpg", "stamp", "2", "val"], ["stamp/sub/3_1_0.jpg", "stamp", "3", "train"]]
    assert open(path, "rb").read().count(b"\r\n") == 4  # csv's own line ends, not doubled
    keep, val = dataset.read_split(path, samples, data)
    assert keep.dtype == bool and keep.tolist() == [True, True, True] and val.tolist() == [True, False, False]
    assert messages(caplog) == []
    # an image added since, one removed since
    grown = Samples(paths[1:] + [os.path.join(data, "stamp/4_1_0.jpg")], ["graphic", "stamp", "stamp"],
                    ["1", "3", "4"], np.zeros((3, 1)))
    keep, val = dataset.read_split(path, grown, data)
    assert keep.tolist() == [True, True, False] and val.tolist() == [False, False, False]
    assert messages(caplog) == [
        f"1 image is not in {path} and is left out; start a new run to train on them",
        f"1 image listed in {path} is no longer in {data}",
    ]


def test_predictions_file_has_six_decimals_per_label(tmp_path):
    path = tmp_path / PREDICTIONS
    dataset.write_predictions(str(path), [str(tmp_path / "d" / "s" / "1_1_0.jpg")], ["s"],
                               np.array([[0.1234567, 1.0]]), ["a", "b"], str(tmp_path / "d"))
    assert read_rows(path) == [["path", "folder", "a", "b"], ["s/1_1_0.jpg", "s", "0.123457", "1.000000"]]


# ---------------------------------------------------------------- folder weights

def test_folder_weights_per_mode():
    folders = ["small"] * 4 + ["big"] * 16
    weights, table = dataset.folder_weights(folders, "inverse")
    assert weights.dtype == np.float32 and weights.shape == (20,)
    assert list(table) == ["big", "small"]  # sorted
    assert table == pytest.approx({"big": 0.625, "small": 2.5})  # 20 / (2 folders * n)
    assert weights.tolist() == pytest.approx([2.5] * 4 + [0.625] * 16)
    _, table = dataset.folder_weights(folders, "sqrt")
    assert table == pytest.approx({"big": 20 / 24 * 4 / 4, "small": 20 / 24 * 2})  # n^-1/2 scaled to mean 1
    weights, table = dataset.folder_weights(folders, "none")
    assert weights.tolist() == [1.0] * 20 and table == {"big": 1.0, "small": 1.0}
    with pytest.raises(KeyError):
        dataset.folder_weights(folders, "log")


# ---------------------------------------------------------------- metrics

def test_evaluate_equals_scikit_learn_at_the_default_and_given_thresholds():
    rng = np.random.default_rng(2)
    labels = ["a", "b", "c"]
    targets = rng.integers(0, 2, (60, 3)).astype(float)
    targets[:, 2] = 0  # no positives for c
    probabilities = rng.random((60, 3))
    probabilities[0] = [0.4, 0.4, 0.4]  # exactly at the threshold: not predicted
    for thresholds in (None, {"a": 0.3, "b": 0.7, "c": 0.5}):
        cut = np.array([0.4] * 3 if thresholds is None else [thresholds[x] for x in labels])
        predicted = (probabilities > cut).astype(int)
        result = metrics.evaluate(targets, probabilities, labels, thresholds)
        precision, recall, f1, support = precision_recall_fscore_support(targets, predicted, zero_division=0)
        assert result["macro_f1"] == pytest.approx(f1_score(targets[:, :2], predicted[:, :2], average="macro"))
        assert result["micro_f1"] == pytest.approx(f1_score(targets, predicted, average="micro"))
        assert result["macro_f1_labels"] == ["a", "b"]
        for j, label in enumerate(labels):
            assert result["per_class"][label] == pytest.approx(
                {"precision": precision[j], "recall": recall[j], "f1": f1[j], "support": support[j]})
        assert type(result["macro_f1"]) is float and type(result["per_class"]["a"]["support"]) is int


def test_evaluate_without_any_positive_has_no_macro_f1():
    result = metrics.evaluate(np.zeros((4, 2)), np.full((4, 2), 0.9), ["a", "b"])
    assert result["macro_f1"] is None and result["macro_f1_labels"] == [] and result["micro_f1"] == 0.0
    assert result["per_class"]["a"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_evaluate_reads_soft_targets_above_half_as_positive():
    result = metrics.evaluate(np.array([[0.6, 1], [0.5, 1], [0.0, 0]]), np.array([[0.9, 1], [0.9, 1], [0.1, 0]]),
                               ["a", "b"])
    assert result["per_class"]["a"] == {"precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3), "support": 1}

def test_evaluate_scores_the_positives_of_a_one_label_model():
    # a label map of one label is valid; scikit-learn must not score its negatives instead
    result = metrics.evaluate(np.array([[1.0], [0.0], [0.0]]), np.array([[0.9], [0.9], [0.1]]), ["a"])
    assert result["per_class"]["a"] == {"precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3), "support": 1}
    assert result["macro_f1"] == pytest.approx(2 / 3) and result["micro_f1"] == pytest.approx(2 / 3)
    assert result["macro_f1_labels"] == ["a"]



def test_threshold_grid_and_minimum_support():
    assert metrics.THRESHOLD_GRID[0] == 0.05 and metrics.THRESHOLD_GRID[-1] == 0.95
    assert len(metrics.THRESHOLD_GRID) == 91 and metrics.MIN_TUNING_SUPPORT == 10


def test_tune_thresholds_picks_the_best_f1_nearest_the_default():
    targets = np.array([[1, 1, 1]] * 12 + [[0, 0, 0]] * 12, dtype=float)
    probabilities = np.array([[0.7, 0.9, 0.30]] * 12 + [[0.6, 0.1, 0.20]] * 12)
    tuned = metrics.tune_thresholds(targets, probabilities, ["a", "b", "c"])
    # a: cuts 0.60..0.69 separate the classes; 0.60 is nearest the default 0.4
    assert tuned["a"] == {"threshold": 0.6, "f1": 1.0, "support": 12, "tuned": True}
    # b: every cut from 0.10 to 0.89 ties; the default itself wins
    assert tuned["b"] == {"threshold": 0.4, "f1": 1.0, "support": 12, "tuned": True}
    # c: cuts 0.20..0.29 separate; 0.29 is nearest the default
    assert tuned["c"] == {"threshold": 0.29, "f1": 1.0, "support": 12, "tuned": True}
    assert all(type(tuned[x]["threshold"]) is float and type(tuned[x]["f1"]) is float for x in "abc")


def test_tune_thresholds_best_f1_when_no_cut_is_perfect():
    targets = np.array([[1]] * 10 + [[0]] * 10, dtype=float)
    probabilities = np.array([[0.8]] * 9 + [[0.3]] + [[0.5]] * 2 + [[0.1]] * 8)
    tuned = metrics.tune_thresholds(targets, probabilities, ["a"])
    # above 0.5: 9 of 10 found, no false positive -> F1 18/19 (a cut below 0.3 costs two false positives)
    assert tuned["a"] == {"threshold": 0.5, "f1": pytest.approx(18 / 19), "support": 10, "tuned": True}


def test_tune_thresholds_keeps_the_default_below_the_minimum_support():
    targets = np.array([[1, 0]] * 2 + [[0, 0]] * 2, dtype=float)
    probabilities = np.array([[0.7, 0.9]] * 2 + [[0.6, 0.9]] * 2)
    few = metrics.tune_thresholds(targets, probabilities, ["a", "b"])
    assert few["a"] == {"threshold": 0.4, "f1": pytest.approx(2 / 3), "support": 2, "tuned": False}
    assert type(few["a"]["f1"]) is float
    assert few["b"] == {"threshold": 0.4, "f1": None, "support": 0, "tuned": False}
    assert metrics.tune_thresholds(targets, probabilities, ["a", "b"], min_support=2)["a"]["tuned"] is True
    assert metrics.tune_thresholds(targets, probabilities, ["a", "b"], min_support=3)["a"]["tuned"] is False
    zero = metrics.tune_thresholds(targets, probabilities, ["a", "b"], min_support=0)["b"]
    assert zero == {"threshold": 0.4, "f1": 0.0, "support": 0, "tuned": True}  # nothing to find: F1 0, not 1
    empty = metrics.tune_thresholds(np.zeros((0, 1)), np.zeros((0, 1)), ["a"])
    assert empty["a"] == {"threshold": 0.4, "f1": None, "support": 0, "tuned": False}


# ---------------------------------------------------------------- the summary

def make_report():
    train = Samples(["1_1_0.jpg", "1_2_0.jpg", "2_1_0.jpg"], ["stamp", "stamp", "graphic"], ["1", "1", "2"],
                    np.zeros((3, 2)))
    val = Samples(["3_1_0.jpg"], ["stamp"], ["3"], np.zeros((1, 2)))
    split = metrics.split_summary(train, val, 0.25, 7)
    return {
        "labels": ["graphic", "stamp"], "default_threshold": 0.4, "macro_f1": 0.5, "micro_f1": 0.25,
        "macro_f1_labels": ["stamp"], "tuned": {"macro_f1": 0.75, "micro_f1": 0.8125},
        "per_class": {"graphic": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0},
                      "stamp": {"precision": 0.5, "recall": 1.0, "f1": 0.6667, "support": 12}},
        "thresholds": {"graphic": {"threshold": 0.4, "f1": None, "support": 0, "tuned": False},
                       "stamp": {"threshold": 0.35, "f1": 0.75, "support": 12, "tuned": True}},
        "split": split, "evaluated_images": 1, "best_epoch": 3, "epochs_done": 5, "skipped_images": [],
        "out": "/runs/a",
    }


def test_split_summary_counts_images_items_and_folders():
    assert make_report()["split"] == {
        "train_images": 3, "val_images": 1, "train_items": 2, "val_items": 1,
        "per_folder": {"graphic": {"train": 1, "val": 0}, "stamp": {"train": 2, "val": 1}},
        "val_split": 0.25, "seed": 7, "file": "split.csv",
    }


def test_format_summary_is_the_documented_table():
    report = make_report()
    assert metrics.format_summary(report).splitlines() == [
        "label                support   prec recall     F1     thr F1@thr",
        "graphic                    0      -      -      -    0.40*     -",
        "stamp                     12  0.500  1.000  0.667    0.35  0.750",
        "validation: 1 image from 1 item never seen in training (best epoch 3 of 5)",
        "at threshold 0.4: macro-F1 0.500 over 1 label with examples, micro-F1 0.250",
        "at tuned thresholds: macro-F1 0.750, micro-F1 0.812 (optimistic: tuned on this same validation "
        "split; * = too few positives, default kept)",
        "files in /runs/a: best.weights.h5 + model.json (for inference), last.weights.h5 + state.json "
        "(--resume), history.csv, report.json, split.csv, val_predictions.csv",
    ]
    report.update(macro_f1=None, tuned={"macro_f1": None, "micro_f1": 0.0},
                  skipped_images=[{"path": "x.jpg", "reason": "empty file (0 bytes)"}] * 2)
    lines = metrics.format_summary(report).splitlines()
    assert lines[4].startswith("at threshold 0.4: macro-F1 n/a over")
    assert lines[5].startswith("at tuned thresholds: macro-F1 n/a, micro-F1 0.000 ")
    assert lines[6] == "skipped 2 unreadable images, listed in report.json"


# ---------------------------------------------------------------- what --resume relies on

def test_run_file_names():
    assert train_state.RUN_FILES == ("model.json", "best.weights.h5", "last.weights.h5", "history.csv",
                                  "report.json", "split.csv", "state.json", "val_predictions.csv")


def test_a_new_run_creates_the_folder_and_refuses_to_replace_a_run(tmp_path):
    out = str(tmp_path / "a" / "run")
    train_state.prepare_output(out, resume=False, overwrite=False)
    assert os.path.isdir(out)
    (tmp_path / "a" / "run" / "notes.txt").write_text("mine")
    train_state.prepare_output(out, resume=False, overwrite=False)  # other files are no run
    for name in ("history.csv", "best.weights.h5"):
        (tmp_path / "a" / "run" / name).write_text("x")
    with pytest.raises(TrainingError) as error:
        train_state.prepare_output(out, resume=False, overwrite=False)
    assert str(error.value) == (f"{out} already holds a training run (best.weights.h5, history.csv); pass --resume "
                                "to continue it, --overwrite to replace it, or choose another --out")
    train_state.prepare_output(out, resume=False, overwrite=True)
    assert sorted(os.listdir(out)) == ["best.weights.h5", "history.csv", "notes.txt"]  # nothing deleted yet


def test_resume_needs_a_whole_run_and_not_overwrite(tmp_path):
    out = str(tmp_path)
    with pytest.raises(TrainingError) as error:
        train_state.prepare_output(out, resume=True, overwrite=True)
    assert str(error.value) == "--resume and --overwrite contradict each other; pass one of them"
    (tmp_path / "state.json").write_text("{}")
    with pytest.raises(TrainingError) as error:
        train_state.prepare_output(out, resume=True, overwrite=False)
    assert str(error.value) == (f"--resume: {out} holds no run to continue (last.weights.h5, model.json, split.csv "
                                "missing); drop --resume to start a new run")
    for name in ("last.weights.h5", "model.json", "split.csv"):
        (tmp_path / name).write_text("x")
    assert train_state.prepare_output(out, resume=True, overwrite=False) is None
    with pytest.raises(TrainingError, match="holds no run to continue"):
        train_state.prepare_output(str(tmp_path / "missing"), resume=True, overwrite=False)
    assert not os.path.exists(tmp_path / "missing")


def test_clear_run_removes_only_the_run_files(tmp_path):
    for name in (*train_state.RUN_FILES, "notes.txt"):
        (tmp_path / name).write_text("x")
    train_state.clear_run(str(tmp_path))
    assert os.listdir(tmp_path) == ["notes.txt"]
    train_state.clear_run(str(tmp_path))  # nothing to remove is fine


def test_read_json_reads_utf8(tmp_path):
    (tmp_path / "state.json").write_bytes(json.dumps({"data": "写真"}, ensure_ascii=False).encode("utf-8"))
    assert train_state.read_json(str(tmp_path / "state.json")) == {"data": "写真"}


@pytest.fixture
def tiny_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=0.003), loss="mse")
    return model


def test_save_weights_atomic_replaces_the_file_and_leaves_no_temporary(tmp_path, tiny_model):
    tiny_model.fit(np.ones((4, 2)), np.ones((4, 1)), epochs=1, verbose=0)  # Adam now has state
    best, last = str(tmp_path / "best.weights.h5"), str(tmp_path / "last.weights.h5")
    tag_model.save_weights_atomic(tiny_model, best)
    tag_model.save_weights_atomic(tiny_model, last, optimizer=True)
    assert sorted(os.listdir(tmp_path)) == ["best.weights.h5", "last.weights.h5"]
    # best holds the weights alone, last the optimizer too (what --resume restores)
    assert os.path.getsize(last) > os.path.getsize(best) + 1000
    again = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    again.compile(optimizer=keras.optimizers.Adam(learning_rate=0.003), loss="mse")
    training.load_weights_quietly(again, best)
    assert np.allclose(again.get_weights()[0], tiny_model.get_weights()[0])
    assert training.restore_optimizer(again, last) == 1  # one step was taken
    fresh = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    fresh.compile(optimizer=keras.optimizers.Adam(learning_rate=0.003), loss="mse")
    assert training.restore_optimizer(fresh, best) is None  # no optimizer state in best


def test_save_weights_atomic_keeps_the_old_file_when_saving_fails(tmp_path, tiny_model, monkeypatch):
    path = tmp_path / "best.weights.h5"
    path.write_bytes(b"old weights")
    seen = []

    def broken(name):
        seen.append(os.path.basename(name))
        with open(name, "wb") as handle:
            handle.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(tiny_model, "save_weights", broken)
    with pytest.raises(OSError, match="disk full"):
        tag_model.save_weights_atomic(tiny_model, str(path), optimizer=True)
    assert path.read_bytes() == b"old weights"
    assert os.listdir(tmp_path) == ["best.weights.h5"]
    assert seen == [".best.tmp.weights.h5"]  # hidden, beside it, a name Keras accepts


def test_save_best_saves_only_finite_improvements(tmp_path, tiny_model, monkeypatch):
    saved = []
    monkeypatch.setattr(training, "save_weights_atomic", lambda model, path: saved.append((model, path)))
    callback = training._SaveBest(str(tmp_path / "best.weights.h5"), best=0.5, best_epoch=2)
    callback.set_model(tiny_model)
    for loss in (0.6, 0.5, float("nan"), float("inf"), None):
        callback.on_epoch_end(3, {"val_loss": loss} if loss is not None else {"loss": 1.0})
    callback.on_epoch_end(3, None)
    assert saved == [] and (callback.best, callback.best_epoch) == (0.5, 2)
    callback.on_epoch_end(4, {"val_loss": np.float32(0.25)})
    assert saved == [(tiny_model, str(tmp_path / "best.weights.h5"))]
    assert (callback.best, callback.best_epoch) == (0.25, 5) and type(callback.best) is float
    first = training._SaveBest(str(tmp_path / "b.weights.h5"))
    first.set_model(tiny_model)
    first.on_epoch_end(0, {"val_loss": 9.0})  # no best yet: any finite loss is saved
    assert (first.best, first.best_epoch) == (9.0, 1) and len(saved) == 2


def test_save_state_writes_what_resume_reads(tmp_path, tiny_model):
    checkpoint = training._SaveBest(str(tmp_path / "best.weights.h5"), best=0.25, best_epoch=3)
    extra = {"pretrained": True, "seed": 5, "val_split": 0.2}
    callback = training._SaveState(str(tmp_path), checkpoint, "finetune", extra)
    tiny_model.fit(np.ones((4, 2)), np.ones((4, 1)), epochs=1, verbose=0)  # Adam now has state
    callback.set_model(tiny_model)
    callback.on_epoch_end(3, {"val_loss": 0.5})
    state = train_state.read_json(str(tmp_path / "state.json"))
    assert state == {"pretrained": True, "seed": 5, "val_split": 0.2, "best_epoch": 3, "epochs_done": 4,
                     "phase": "finetune", "finished": False, "best_val_loss": 0.25,
                     "learning_rate": pytest.approx(0.003)}
    assert sorted(os.listdir(tmp_path)) == ["last.weights.h5", "state.json"]
    assert training.restore_optimizer(tiny_model, str(tmp_path / "last.weights.h5")) == 1  # with the optimizer
    assert train_state.read_state(str(tmp_path))["epochs_done"] == 4  # what --resume accepts
    checkpoint.best, checkpoint.best_epoch = None, None
    callback.on_epoch_end(4, None)
    state = train_state.read_json(str(tmp_path / "state.json"))
    assert state["best_val_loss"] is None and state["best_epoch"] is None and state["epochs_done"] == 5


# ---------------------------------------------------------------- state.json and model.json as --resume reads them

FIX = "restore the file from a backup, or start a new run with --overwrite or another --out"
GOOD_STATE = {"epochs_done": 3, "phase": "finetune", "pretrained": False, "seed": 7, "val_split": 0.25,
              "learning_rate": 1e-4, "best_val_loss": 0.5, "best_epoch": 2}


def write_state(folder, state, raw=None):
    path = os.path.join(folder, "state.json")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(raw if raw is not None else json.dumps(state))
    return path


def test_read_state_accepts_a_good_file_and_nulls_where_allowed(tmp_path):
    write_state(tmp_path, GOOD_STATE)
    assert train_state.read_state(str(tmp_path)) == GOOD_STATE
    for changes in ({"best_val_loss": None, "best_epoch": None}, {"phase": "warmup", "epochs_done": 0},
                    {"val_split": 0.5, "learning_rate": 1, "best_val_loss": 3, "best_epoch": 1},
                    {"finished": True, "settings": {}}, {"finished": False, "settings": None},
                    {"settings": {"data": "/d", "epochs": 40, "batch_size": 8, "lr": 0.001, "warmup_epochs": 0,
                                  "warmup_lr": 1, "patience": 2, "balance": "inverse", "augment": False,
                                  "mixed_precision": True, "distribute": "mirrored", "unknown_flag": [1]}}):
        write_state(tmp_path, dict(GOOD_STATE, **changes))
        assert train_state.read_state(str(tmp_path)) == dict(GOOD_STATE, **changes)


@pytest.mark.parametrize("field, value, expected", [
    ("epochs_done", -1, "a whole number of epochs"), ("epochs_done", 2.0, "a whole number of epochs"),
    ("epochs_done", True, "a whole number of epochs"), ("epochs_done", "3", "a whole number of epochs"),
    ("phase", "train", "warmup or finetune"), ("phase", None, "warmup or finetune"),
    ("pretrained", 1, "true or false"), ("pretrained", None, "true or false"),
    ("seed", 7.5, "a whole number"), ("seed", False, "a whole number"), ("seed", None, "a whole number"),
    ("val_split", 0, "a number above 0 and at most 0.5"), ("val_split", 0.51, "a number above 0 and at most 0.5"),
    ("val_split", True, "a number above 0 and at most 0.5"), ("val_split", "0.1", "a number above 0 and at most 0.5"),
    ("learning_rate", 0, "a positive number"), ("learning_rate", -1e-4, "a positive number"),
    ("learning_rate", True, "a positive number"), ("learning_rate", None, "a positive number"),
    ("best_val_loss", "0.5", "a number or null"), ("best_val_loss", True, "a number or null"),
    ("best_epoch", 0, "an epoch number or null"), ("best_epoch", 1.0, "an epoch number or null"),
    ("best_epoch", True, "an epoch number or null"),
    ("finished", "no", "true or false"), ("finished", None, "true or false"),
    ("settings", [], "an object of the run's flags"),
])
def test_read_state_names_the_bad_field(tmp_path, field, value, expected):
    path = write_state(tmp_path, dict(GOOD_STATE, **{field: value}))
    with pytest.raises(TrainingError) as error:
        train_state.read_state(str(tmp_path))
    assert str(error.value) == f"--resume: {path} has no valid '{field}' ({expected}); {FIX}"


@pytest.mark.parametrize("field", list(GOOD_STATE))
def test_read_state_names_a_missing_field(tmp_path, field):
    write_state(tmp_path, {k: v for k, v in GOOD_STATE.items() if k != field})
    with pytest.raises(TrainingError, match=f"has no valid '{field}'"):
        train_state.read_state(str(tmp_path))


@pytest.mark.parametrize("name, value, flag", [
    ("data", "", "--data"), ("data", 3, "--data"), ("epochs", 3.0, "--epochs"), ("epochs", True, "--epochs"),
    ("batch_size", "8", "--batch-size"), ("lr", "fast", "--lr"), ("lr", False, "--lr"),
    ("warmup_lr", None, "--warmup-lr"), ("patience", 2.5, "--patience"), ("balance", "log", "--balance"),
    ("augment", 1, "--augment"), ("mixed_precision", "yes", "--mixed-precision"),
    ("distribute", "tpu", "--distribute"), ("warmup_epochs", None, "--warmup-epochs"),
])
def test_read_state_checks_each_stored_flag(tmp_path, name, value, flag):
    path = write_state(tmp_path, dict(GOOD_STATE, settings={name: value}))
    with pytest.raises(TrainingError) as error:
        train_state.read_state(str(tmp_path))
    assert str(error.value) == f"--resume: {path} has no valid 'settings.{name}' (like {flag}'s values); {FIX}"


@pytest.mark.parametrize("raw, reason", [
    ("[1, 2]", "does not hold a JSON object"),
    ("{torn", "cannot read"),
    (None, "is missing"),
])
def test_read_state_unreadable_files_are_one_sentence(tmp_path, raw, reason):
    path = os.path.join(tmp_path, "state.json")
    if raw is not None:
        write_state(tmp_path, None, raw=raw)
    with pytest.raises(TrainingError) as error:
        train_state.read_state(str(tmp_path))
    message = str(error.value)
    assert message.startswith(f"--resume: {path} {reason}" if reason != "cannot read"
                              else f"--resume: cannot read {path} (") and message.endswith(f"; {FIX}")
    assert "Traceback" not in message


def test_read_state_of_bytes_that_are_not_utf8(tmp_path):
    path = tmp_path / "state.json"
    path.write_bytes(b'{"phase": "\xff"}')
    with pytest.raises(TrainingError, match=f"^--resume: cannot read {re.escape(str(path))} \\("):
        train_state.read_state(str(tmp_path))
    os.remove(path)
    os.mkdir(path)  # a folder where the file should be: an OSError, still one sentence
    with pytest.raises(TrainingError, match="^--resume: cannot read"):
        train_state.read_state(str(tmp_path))


GOOD_CONFIG = {"labels": ["a", "b"], "channel_order": "RGB", "image_size": 64, "dropout": 0.2,
               "labelmap": {"labels": ["a", "b"]}, "training": {"initial_weights": "none"}}


@pytest.mark.parametrize("changes, field, expected", [
    ({"labelmap": None}, "labelmap", "the label map the run trained with"),
    ({"labelmap": ["a"]}, "labelmap", "the label map the run trained with"),
    ({"dropout": "0.2"}, "dropout", "a number in [0, 1)"),
    ({"dropout": 1}, "dropout", "a number in [0, 1)"),
    ({"dropout": -0.1}, "dropout", "a number in [0, 1)"),
    ({"dropout": None}, "dropout", "a number in [0, 1)"),
    ({"training": None}, "training.initial_weights", "a description of the starting weights"),
    ({"training": {}}, "training.initial_weights", "a description of the starting weights"),
    ({"training": {"initial_weights": 3}}, "training.initial_weights", "a description of the starting weights"),
])
def test_read_config_names_what_resume_needs(tmp_path, changes, field, expected):
    path = tmp_path / "model.json"
    path.write_text(json.dumps(GOOD_CONFIG))
    assert train_state.read_config(str(tmp_path)).labels == ("a", "b")
    assert train_state.read_config(str(tmp_path)).dropout == 0.2
    path.write_text(json.dumps(dict(GOOD_CONFIG, dropout=0)))
    assert train_state.read_config(str(tmp_path)).dropout == 0
    path.write_text(json.dumps(dict(GOOD_CONFIG, **changes)))
    with pytest.raises(TrainingError) as error:
        train_state.read_config(str(tmp_path))
    assert str(error.value) == f"--resume: {path} has no valid '{field}' ({expected}); {FIX}"


def test_read_config_passes_on_the_models_own_check(tmp_path):
    with pytest.raises(TrainingError) as error:
        train_state.read_config(str(tmp_path))
    assert str(error.value).startswith(f"--resume: {tmp_path / 'model.json'} is missing")
    assert str(error.value).endswith(f"; {FIX}")


def test_resumed_settings_take_stored_flags_not_given_again():
    from tagestimate.train.settings import TrainSettings

    settings = TrainSettings(out="run", epochs=50, lr=0.5, resume=True)
    state = {"settings": {"data": "/stored", "epochs": 40, "lr": 0.01, "balance": "none", "seed": 1}}
    resumed = train_state.resumed_settings(settings, state, explicit=["epochs", "out", "resume"])
    assert (resumed.data, resumed.epochs, resumed.lr, resumed.balance) == ("/stored", 50, 0.01, "none")
    assert resumed.seed == settings.seed  # not a resumable flag
    assert train_state.resumed_settings(settings, state, explicit=None) == settings  # all given
    assert train_state.resumed_settings(settings, {}, explicit=[]) == settings  # nothing stored
    assert train_state.resumed_settings(settings, {"settings": None}, explicit=[]) == settings


def test_stored_settings_are_the_resumable_flags_with_an_absolute_data_path(tmp_path, monkeypatch):
    from tagestimate.train.settings import RESUMABLE, TrainSettings

    monkeypatch.chdir(tmp_path)
    stored = train_state.stored_settings(TrainSettings(data="d", epochs=3, balance="none"))
    assert list(stored) == list(RESUMABLE)
    assert stored["data"] == str(tmp_path / "d") and stored["epochs"] == 3 and stored["balance"] == "none"
    assert train_state.STATE_VERSION == 2 and train_state.PHASES == ("warmup", "finetune")


# ---------------------------------------------------------------- corners the mutation run found

def test_undecodable_names_of_every_folder_are_reported(tmp_path, caplog):
    for folder in ("graphic", "stamp"):
        image(str(tmp_path / folder / "1_1_0.jpg"))
        image(os.path.join(str(tmp_path), folder, os.fsdecode(b"\x83_1_0.jpg")))
    dataset.list_samples(str(tmp_path), default_labelmap())
    assert messages(caplog)[-1].startswith("2 images left out because their names are not UTF-8")


def test_split_of_no_images_is_a_sentence_not_an_index_error():
    with pytest.raises(TrainingError, match=r"^all 0 readable images belong to one item id \(-\), "):
        dataset.split_samples(Samples([], [], [], np.zeros((0, 1))), 0.2, seed=0)


def test_never_more_folds_than_items():
    # one folder, 3 items of 2 pages: 6 images per folder would allow 6 folds, 3 items allow 3
    groups = ["1", "1", "2", "2", "3", "3"]
    samples = Samples([f"{g}_{i}_0.jpg" for i, g in enumerate(groups)], ["a"] * 6, groups, np.zeros((6, 1)))
    val = dataset.split_samples(samples, 0.1, seed=0)
    assert val.sum() == 2 and len({g for g, v in zip(groups, val) if v}) == 1


def test_a_split_with_an_empty_side_is_never_used(monkeypatch):
    class Degenerate:
        def __init__(self, **kwargs):
            pass

        def split(self, x, y, groups):
            everything = np.arange(len(x))
            yield np.array([], dtype=int), everything  # all validation
            yield everything, np.array([], dtype=int)  # all training

    monkeypatch.setattr(dataset, "StratifiedGroupKFold", Degenerate)
    with pytest.raises(TrainingError) as error:
        dataset.split_samples(spread_samples(), 0.2, seed=0)
    assert str(error.value) == ("could not split 300 images of 40 items into training and validation; "
                                "add images of more items")


def test_split_warns_train_side_when_a_folder_is_only_training(caplog):
    for seed in range(20):
        groups = [str(i) for i in range(10)] + ["100"]
        samples = Samples([f"{g}_1_0.jpg" for g in groups], ["big"] * 10 + ["one"], groups, np.zeros((11, 1)))
        caplog.clear()
        if not dataset.split_samples(samples, 0.5, seed=seed)[-1]:
            assert messages(caplog) == ["folder one has all its images on the train side (too few item ids to split it)"]
            return
    pytest.fail("no seed put the one-item folder on the training side")


def test_metrics_raise_no_warnings_for_labels_without_examples(recwarn):
    targets = np.array([[1, 0], [0, 0], [1, 0]] * 4, dtype=float)
    probabilities = np.array([[0.1, 0.1]] * 12)  # nothing predicted: precision 0/0
    result = metrics.evaluate(targets, probabilities, ["a", "b"])
    metrics.tune_thresholds(targets, probabilities, ["a", "b"])
    metrics.tune_thresholds(targets[:3], probabilities[:3], ["a", "b"])
    assert [str(w.message) for w in recwarn] == []
    assert result["per_class"]["a"]["precision"] == 0.0 and result["macro_f1"] == 0.0


def test_micro_f1_is_zero_when_nothing_is_true_or_predicted(recwarn):
    assert metrics.evaluate(np.zeros((3, 2)), np.zeros((3, 2)), ["a", "b"])["micro_f1"] == 0.0
    assert [str(w.message) for w in recwarn] == []  # and says so without a scikit-learn warning


def test_a_label_with_one_example_is_scored():
    result = metrics.evaluate(np.array([[1, 1], [0, 1]], dtype=float), np.array([[0.9, 0.9], [0.1, 0.9]]), ["a", "b"])
    assert result["macro_f1_labels"] == ["a", "b"]


def test_tuning_counts_half_targets_as_negative_and_the_default_cut_as_strict():
    targets = np.array([[0.5]] * 3 + [[1.0]] * 2, dtype=float)
    probabilities = np.array([[0.4]] * 3 + [[0.4]] * 2)
    few = metrics.tune_thresholds(targets, probabilities, ["a"])
    assert few["a"]["support"] == 2 and few["a"]["f1"] == 0.0  # 0.4 is not above the 0.4 default


def test_the_image_check_shows_a_progress_bar_for_large_data_sets_only(monkeypatch):
    bars = []

    def fake_tqdm(iterable, **options):
        bars.append(options)
        return iterable

    monkeypatch.setattr(dataset, "tqdm", fake_tqdm)
    monkeypatch.setattr(dataset, "_quick_check", lambda path: "bad" if path == "p7" else None)
    assert dataset.find_unreadable([f"p{i}" for i in range(2000)]) == {"p7": "bad"}
    assert dataset.find_unreadable([f"p{i}" for i in range(1999)]) == {"p7": "bad"}
    assert bars == [{"total": 2000, "desc": "checking images", "unit": "img", "disable": False, "leave": False},
                    {"total": 1999, "desc": "checking images", "unit": "img", "disable": True, "leave": False}]


def test_split_file_of_no_images_gives_boolean_masks(tmp_path):
    path = str(tmp_path / SPLIT)
    dataset.write_split(path, Samples([], [], [], np.zeros((0, 1))), np.zeros(0, dtype=bool), str(tmp_path))
    keep, val = dataset.read_split(path, Samples([], [], [], np.zeros((0, 1))), str(tmp_path))
    assert keep.dtype == bool and val.dtype == bool and keep.shape == val.shape == (0,)


def test_split_file_keeps_names_with_line_breaks(tmp_path):
    data = str(tmp_path / "data")
    paths = [os.path.join(data, "stamp", "a\rb_1_0.jpg"), os.path.join(data, "stamp", "c\nd_1_0.jpg")]
    samples = Samples(paths, ["stamp", "stamp"], ["a", "c"], np.zeros((2, 1)))
    path = str(tmp_path / SPLIT)
    dataset.write_split(path, samples, np.array([True, False]), data)
    keep, val = dataset.read_split(path, samples, data)
    assert keep.tolist() == [True, True] and val.tolist() == [True, False]


SPLIT_UNDER_ASCII_LOCALE = """
import sys, numpy as np
from tagestimate.train import dataset
samples = dataset.Samples(["d/\\u5199\\u771f/1_1_0.jpg"], ["s"], ["1"], np.zeros((1, 1)))
keep, val = dataset.read_split(sys.argv[1], samples, "d")
print(keep.tolist(), val.tolist())
"""


@pytest.mark.slow  # a Python in a subprocess
def test_split_file_is_read_as_utf8_whatever_the_locale(tmp_path):
    path = tmp_path / SPLIT
    path.write_bytes("path,folder,item_id,subset\r\n写真/1_1_0.jpg,s,1,val\r\n".encode("utf-8"))
    samples = Samples(["d/写真/1_1_0.jpg"], ["s"], ["1"], np.zeros((1, 1)))
    assert [m.tolist() for m in dataset.read_split(str(path), samples, "d")] == [[True], [True]]
    env = dict(os.environ, LC_ALL="C", LANG="C", PYTHONUTF8="0", PYTHONCOERCECLOCALE="0")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "-c", SPLIT_UNDER_ASCII_LOCALE, str(path)], cwd=root, env=env,
                            capture_output=True, text=True, encoding="utf-8", errors="replace")
    assert result.stdout.strip().splitlines()[-1:] == ["[True] [True]"], result.stderr[-2000:]


def test_trim_history_drops_rows_of_epochs_not_finished(tmp_path):
    # history.csv is logged before state.json, so an interruption between the two leaves a row
    # of an epoch the run will do again; --resume drops it (and nothing else)
    path = tmp_path / "history.csv"
    header = ["epoch", "loss", "note"]
    rows = [header, ["0", "0.9", "é"], ["1", "0.8", ""], [], ["2", "0.7", ""], ["3", "0.6", ""], ["x", "1", ""]]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(rows)
    train_state.trim_history(str(path), 2)
    assert path.read_bytes() == "epoch,loss,note\r\n0,0.9,é\r\n1,0.8,\r\n".encode("utf-8")
    assert sorted(os.listdir(tmp_path)) == ["history.csv"]  # written atomically, nothing left over


def test_trim_history_leaves_a_complete_or_missing_file_alone(tmp_path):
    path = tmp_path / "history.csv"
    train_state.trim_history(str(path), 3)
    assert not path.exists()  # nothing to trim is no reason to create one
    path.write_text("epoch,loss\n0,0.9\n1,0.8\n", encoding="utf-8")
    before = os.stat(path)
    train_state.trim_history(str(path), 2)
    after = os.stat(path)
    assert path.read_text(encoding="utf-8") == "epoch,loss\n0,0.9\n1,0.8\n"
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # not rewritten
    train_state.trim_history(str(path), 0)
    assert path.read_bytes() == b"epoch,loss\r\n"  # the header always stays
