"""Suspect labels from real training runs on data where the answer is known: three colours, two
images misfiled, a manifest.csv with reviewed images. The backbone is swapped for a tiny
colour model (mean colour -> sigmoid) so that a few epochs on 64 px images learn the colours;
everything else (folds, tf.data, loss weights, out-of-fold probabilities, CSV, report) is the trainer's."""

import csv
import os

import numpy as np
import pytest
from PIL import Image

import multitrain_efficientnet
from tagestimate import model as tag_model
from tagestimate.train import training

COLOURS = {"graphic_map": (220, 30, 30), "stamp": (30, 30, 220), "picture_indoor": (30, 200, 40)}
MISFILED = {("stamp", 5): "graphic_map", ("graphic_map", 7): "stamp"}  # (true colour, item) -> folder filed in
REVIEWED = {("stamp", "2001_1_0"), ("picture_indoor", "3002_1_0")}
FAST = ["--weights", "none", "--image-size", "64", "--batch-size", "8", "--lr", "0.05", "--epochs", "12",
        "--patience", "12", "--no-augment", "--balance", "none"]


def make_data(root):
    rng = np.random.default_rng(0)
    rows = []
    for k, (colour_of, colour) in enumerate(COLOURS.items()):
        for item in range(10):
            folder = MISFILED.get((colour_of, item), colour_of)
            os.makedirs(os.path.join(root, folder), exist_ok=True)
            pixels = np.clip(np.array(colour)[None, None] + rng.normal(0, 20, (40, 40, 3)), 0, 255).astype(np.uint8)
            image_id = f"{1000 * (k + 1) + item}_1_0"
            Image.fromarray(pixels).save(os.path.join(root, folder, image_id + ".jpg"))
            reviewed = (folder, image_id) in REVIEWED
            rows.append({"id": image_id, "folder": folder, "confidence": "" if reviewed else f"0.{k}{item}",
                         "source": "reviewed" if reviewed else "", "reviewer": "dana" if reviewed else ""})
    with open(os.path.join(root, "manifest.csv"), "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "folder", "confidence", "source", "reviewer"])
        writer.writeheader()
        writer.writerows(rows)
    return root


def tiny_model(num_labels, image_size=224, dropout=0.0, backbone=None):
    import keras

    inputs = keras.Input((image_size, image_size, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(num_labels, activation="sigmoid")(x))


@pytest.fixture
def recorded(monkeypatch):
    """The tiny model, and every (paths, sample weights) the trainer hands the tf.data pipeline."""
    monkeypatch.setattr(tag_model, "build_model", tiny_model)
    calls, real = [], training.make_dataset

    def spy(paths, *args, **kwargs):
        weights = args[4] if len(args) > 4 else kwargs.get("weights")
        made = real(paths, *args, **kwargs)
        if weights is not None:
            calls.append((list(paths), np.asarray(weights).copy(), made))
        return made

    monkeypatch.setattr(training, "make_dataset", spy)
    return calls


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def yielded_weights(dataset):
    """The sample weights the pipeline yields, in its (shuffled) order, with the targets beside them."""
    return np.concatenate([w.numpy() for _, _, w in dataset])


@pytest.mark.slow
def test_misfiled_images_top_the_out_of_fold_suspects_and_reviewed_ones_weigh_more(tmp_path, recorded):
    data, out = make_data(str(tmp_path / "data")), str(tmp_path / "cv")
    assert multitrain_efficientnet.main(["--data", data, "--out", out, "--folds", "2", "--reviewed-weight", "3",
                                         *FAST]) == 0
    rows = read_csv(os.path.join(out, "label_issues.csv"))
    misfiled = {os.path.join(data, "graphic_map", "2005_1_0.jpg"), os.path.join(data, "stamp", "1007_1_0.jpg")}
    assert {row["path"] for row in rows[:2]} == misfiled, rows[:4]
    assert {row["scope"] for row in rows} == {"out-of-fold"}
    first = {row["path"]: row for row in rows}[os.path.join(data, "graphic_map", "2005_1_0.jpg")]
    assert "stamp" in first["suspected_missing"] and "graphic_map" in first["suspected_wrong"]
    assert (first["source"], first["api_confidence"]) == ("crawled", "0.15")
    # the reviewed images weigh 3 in the loss, through the tf.data pipeline, the others 1
    for paths, weights, dataset in recorded:
        names = [os.path.relpath(p, data).replace(os.sep, "/") for p in paths]
        expected = [3.0 if tuple(n[:-4].split("/")) in REVIEWED else 1.0 for n in names]
        assert weights.tolist() == expected
        assert sorted(yielded_weights(dataset).tolist()) == sorted(expected)
    assert any(3.0 in w for _, w, _ in recorded)
    page = open(os.path.join(out, "report.html"), encoding="utf-8").read()
    assert page.count('class="review-card suspect"') == len(rows)
    assert f'data-review-image="{os.path.join(data, "graphic_map", "2005_1_0.jpg")}"' in page
    assert "<td>stamp</td><td>1</td>" in page and "weighs 3.0 in the loss" in page


@pytest.mark.slow
def test_a_plain_run_checks_its_validation_split_and_says_so(tmp_path, recorded):
    data, out = make_data(str(tmp_path / "data")), str(tmp_path / "run")
    assert multitrain_efficientnet.main(["--data", data, "--out", out, "--val-split", "0.5", "--seed", "8", *FAST]) == 0
    rows = read_csv(os.path.join(out, "label_issues.csv"))
    split = read_csv(os.path.join(out, "split.csv"))
    val = {os.path.join(data, r["path"]) for r in split if r["subset"] == "val"}
    assert rows and {row["scope"] for row in rows} == {"validation split"} and {r["path"] for r in rows} <= val
    # --seed 8 puts both misfiled images on the validation side
    misfiled_in_val = val & {os.path.join(data, "graphic_map", "2005_1_0.jpg"), os.path.join(data, "stamp", "1007_1_0.jpg")}
    assert len(misfiled_in_val) == 2 and {r["path"] for r in rows[:2]} == misfiled_in_val
    page = open(os.path.join(out, "report.html"), encoding="utf-8").read()
    assert f"validation split only: {len(val)} of 30 images checked" in page
    # --reviewed-weight left at 1: nobody weighs more
    assert all(set(w.tolist()) == {1.0} for _, w, _ in recorded)
