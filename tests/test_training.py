"""Trainer tests on CPU: tiny synthetic folders, 64 px, --weights none, 1-3 epochs."""

import csv
import dataclasses
import json
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile

import h5py
import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import f1_score

import multitrain_efficientnet
from conftest import ROOT, SHARED_DATA
from tagestimate.train import dataset
from tagestimate.train import metrics
from tagestimate.train import pipeline
from tagestimate.train import state as train_state
from tagestimate.train import training
from tagestimate import model as tag_model
from tagestimate.errors import EXIT_ERROR, EXIT_INTERRUPTED
from tagestimate.files import write_json
from tagestimate.images import load_image
from tagestimate.labels import LABELS, LabelMapError, default_labelmap, from_dict
from tagestimate.train.settings import (BEST_WEIGHTS, HISTORY, LAST_WEIGHTS, PREDICTIONS, REPORT, SPLIT, STATE,
                                        TrainingError, TrainSettings, interrupted_message)

# Four folders (12 of the 11 outputs stay without examples: support 0 must not crash).
COLOURS = {"graphic_map": (200, 40, 40), "picture_indoor": (40, 190, 60),
           "stamp": (40, 40, 210), "picture_landmark": (210, 200, 40)}
ITEMS_PER_FOLDER, PAGES_PER_ITEM = 4, 2
BAD_TEXT = "stamp/9999_1_0.jpg"          # not an image at all: the pre-scan finds it
BAD_TRUNCATED = "graphic_map/9998_1_0.jpg"  # half a JPEG: only a full decode finds it
FAST = ["--weights", "none", "--image-size", "64", "--batch-size", "8", "--val-split", "0.25",
        "--lr", "1e-3", "--patience", "3"]


def make_folders(root, corrupt=True):
    """Synthetic NDL-style folders: {pid}_{frame}_0.jpg, one colour per folder plus noise."""
    rng = np.random.default_rng(0)
    for k, (folder, colour) in enumerate(COLOURS.items()):
        os.makedirs(os.path.join(root, folder), exist_ok=True)
        for item in range(ITEMS_PER_FOLDER):
            for page in range(PAGES_PER_ITEM):
                noise = rng.normal(0, 30, (48 + 8 * page, 40, 3))
                pixels = np.clip(np.array(colour)[None, None, :] + noise, 0, 255).astype(np.uint8)
                name = f"{1000 * (k + 1) + item}_{page + 1}_0.jpg"
                Image.fromarray(pixels).save(os.path.join(root, folder, name))
    if corrupt:
        with open(os.path.join(root, BAD_TEXT), "w") as handle:
            handle.write("<html>not an image</html>")
        with open(os.path.join(root, "graphic_map", "1000_1_0.jpg"), "rb") as handle:
            whole = handle.read()
        with open(os.path.join(root, BAD_TRUNCATED), "wb") as handle:
            handle.write(whole[: len(whole) // 2])
    return root


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def read_json(path):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def error_of(argv, capsys):
    """The trainer's error message for `argv`: exit status 1, "error: ..." to the end of stderr."""
    capsys.readouterr()
    assert multitrain_efficientnet.main(argv) == EXIT_ERROR
    err = capsys.readouterr().err
    assert err.count("error: ") == 1, err
    return err[err.index("error: "):].rstrip("\n")


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One 2-epoch training run shared by the tests that inspect its outputs."""
    root = tmp_path_factory.mktemp("trainer")
    data, out = make_folders(str(root / "data")), str(root / "out")
    records = _Records()
    logger = logging.getLogger("tagestimate")
    level = logger.level
    logger.addHandler(records)
    logger.setLevel(logging.INFO)  # the information lines too (pytest leaves the root at WARNING)
    try:
        code = multitrain_efficientnet.main(["--data", data, "--out", out, "--epochs", "2", *FAST])
    finally:
        logger.removeHandler(records)
        logger.setLevel(level)
    assert code == 0
    return {"data": data, "out": out, "log": "\n".join(records.messages)}


# ---------------------------------------------------------------- pure parts

def test_item_id_is_the_pid_before_the_first_underscore():
    assert dataset.item_id("/x/picture_indoor/1054192_10_1.jpg") == "1054192"
    assert dataset.item_id("scan.png") == "scan"
    assert dataset.item_id("R1_b_12_0.jpg") == "R1_b"  # crawler ids may hold '_'
    assert dataset.item_id("abc_def.jpg") == "abc"


def test_split_never_puts_one_item_on_both_sides():
    rng = np.random.default_rng(1)
    folders = [f"f{rng.integers(4)}" for _ in range(300)]
    groups = [f"{rng.integers(40)}" for _ in range(300)]  # items spread over several folders
    samples = dataset.Samples([f"{g}_{i}.jpg" for i, g in enumerate(groups)], folders, groups,
                               np.zeros((300, 1), np.float32))
    val = dataset.split_samples(samples, 0.2, seed=3)
    val_items = {g for g, v in zip(groups, val) if v}
    train_items = {g for g, v in zip(groups, val) if not v}
    assert val_items and train_items and not val_items & train_items
    assert set(np.asarray(folders)[val]) == set(folders)  # stratified: every folder validates
    assert (dataset.split_samples(samples, 0.2, seed=3) == val).all()  # seeded


def test_split_works_on_any_data_with_two_items_or_more(caplog):
    """Any size and folder distribution: a grouped split with both sides, or (one item) a sentence."""
    rng = np.random.default_rng(5)
    for _ in range(300):
        count, folder_count = int(rng.integers(1, 50)), int(rng.integers(1, 10))
        folders = [f"f{rng.integers(folder_count)}" for _ in range(count)]
        groups = [f"{rng.integers(1, count + 1)}" for _ in range(count)]
        samples = dataset.Samples([f"{g}_{i}_0.jpg" for i, g in enumerate(groups)], folders, groups,
                                   np.zeros((count, 1), np.float32))
        val_split = float(rng.choice([0.01, 0.1, 0.25, 0.5]))
        if len(set(groups)) < 2:
            with pytest.raises(TrainingError, match="one item id") as error:
                dataset.split_samples(samples, val_split, seed=0)
            assert "--val-split" not in str(error.value) and "\n" not in str(error.value)
            continue
        val = dataset.split_samples(samples, val_split, seed=int(rng.integers(100)))
        val_items = {g for g, v in zip(groups, val) if v}
        assert val.any() and not val.all() and not val_items & {g for g, v in zip(groups, val) if not v}


def test_small_data_holds_out_fewer_folds_and_says_so(caplog):
    folders = [f"f{k}" for k in range(9) for _ in range(4)]  # 36 images in 9 folders, as a first try
    groups = [str(1000 + i) for i in range(36)]
    samples = dataset.Samples([f"{g}_1_0.jpg" for g in groups], folders, groups, np.zeros((36, 1), np.float32))
    val = dataset.split_samples(samples, 0.1, seed=777)
    assert val.sum() == 9  # 1/4 of the items: at most 4 images per folder allow 4 folds, not 10
    assert "too small to hold out 1/10" in caplog.text and "1/4 of the items instead (9 validation" in caplog.text
    one = dataset.Samples(["1_1_0.jpg"], ["f"], ["1"], np.zeros((1, 1), np.float32))
    with pytest.raises(TrainingError, match="one item id .*add images of at least one more item"):
        dataset.split_samples(one, 0.5, seed=0)  # not "raise --val-split": 0.5 is its maximum


def test_folder_weights_even_out_folder_sizes():
    folders = ["big"] * 16 + ["small"] * 4
    weights, table = dataset.folder_weights(folders, "inverse")
    assert weights.mean() == pytest.approx(1.0)
    assert table["big"] * 16 == pytest.approx(table["small"] * 4)  # each folder weighs the same
    _, table = dataset.folder_weights(folders, "sqrt")
    assert table["small"] / table["big"] == pytest.approx(2.0)
    weights, _ = dataset.folder_weights(folders, "none")
    assert (weights == 1).all()


def test_evaluate_equals_scikit_learn_and_survives_absent_labels():
    rng = np.random.default_rng(2)
    labels = ["a", "b", "c"]
    targets = rng.integers(0, 2, (50, 3)).astype(float)
    targets[:, 2] = 0  # no positives for c
    probabilities = rng.random((50, 3))
    result = metrics.evaluate(targets, probabilities, labels)
    predicted = (probabilities > 0.4).astype(int)
    assert result["macro_f1"] == pytest.approx(f1_score(targets[:, :2], predicted[:, :2], average="macro"))
    assert result["micro_f1"] == pytest.approx(f1_score(targets, predicted, average="micro"))
    assert result["per_class"]["c"]["support"] == 0
    assert result["macro_f1_labels"] == ["a", "b"]


def test_tune_thresholds_finds_the_gap_and_keeps_default_when_support_is_small():
    targets = np.array([[1, 1]] * 12 + [[0, 0]] * 12, dtype=float)
    probabilities = np.array([[0.7, 0.9]] * 12 + [[0.6, 0.1]] * 12)
    tuned = metrics.tune_thresholds(targets, probabilities, ["a", "b"])
    assert 0.6 <= tuned["a"]["threshold"] < 0.7 and tuned["a"]["f1"] == 1.0 and tuned["a"]["tuned"]
    assert tuned["b"]["threshold"] == pytest.approx(0.4)  # every cut in (0.1, 0.9) ties: nearest default
    few = metrics.tune_thresholds(targets[10:14], probabilities[10:14], ["a", "b"])
    assert few["a"] == {"threshold": 0.4, "f1": pytest.approx(2 / 3), "support": 2, "tuned": False}
    none = metrics.tune_thresholds(np.zeros((3, 1)), np.full((3, 1), 0.9), ["a"])
    assert none["a"]["support"] == 0 and none["a"]["f1"] is None


def test_csv_files_are_replaced_whole_or_not_at_all(tmp_path):
    path = tmp_path / PREDICTIONS
    path.write_text("old\n")
    images = [str(tmp_path / "f" / "1_1_0.jpg"), str(tmp_path / "f" / "2_1_0.jpg")]
    with pytest.raises(ValueError):  # the second row cannot be formatted
        dataset.write_predictions(str(path), images, ["f", "f"], [[0.25], ["bad"]], ["a"], str(tmp_path))
    assert path.read_text() == "old\n" and os.listdir(tmp_path) == [PREDICTIONS]
    dataset.write_predictions(str(path), images, ["f", "f"], np.array([[0.25], [0.5]]), ["a"], str(tmp_path))
    assert read_csv(path) == [{"path": "f/1_1_0.jpg", "folder": "f", "a": "0.250000"},
                              {"path": "f/2_1_0.jpg", "folder": "f", "a": "0.500000"}]
    samples = dataset.Samples(images, ["f", "f"], ["1", "2"], np.zeros((2, 1), np.float32))
    dataset.write_split(str(tmp_path / SPLIT), samples, np.array([False, True]), str(tmp_path))
    assert [row["subset"] for row in read_csv(tmp_path / SPLIT)] == ["train", "val"]
    assert sorted(os.listdir(tmp_path)) == sorted([PREDICTIONS, SPLIT])  # no temporaries


def test_unknown_folder_is_a_clear_error(tmp_path):
    make_folders(str(tmp_path), corrupt=False)
    os.makedirs(tmp_path / "postcards")
    with pytest.raises(LabelMapError, match="postcards.*--labelmap"):
        dataset.list_samples(str(tmp_path), default_labelmap())


def test_crawlers_untagged_folder_is_left_out_not_an_error(tmp_path, caplog):
    make_folders(str(tmp_path), corrupt=False)
    before = dataset.list_samples(str(tmp_path), default_labelmap())
    os.makedirs(tmp_path / "unknown")
    Image.new("RGB", (40, 40)).save(tmp_path / "unknown" / "9_1_0.jpg")
    after = dataset.list_samples(str(tmp_path), default_labelmap())
    assert after.paths == before.paths and "unknown" not in after.folders
    assert "without any tag" in caplog.text


def test_file_names_that_are_not_utf8_are_left_out_by_name(tmp_path, caplog):
    make_folders(str(tmp_path), corrupt=False)
    before = dataset.list_samples(str(tmp_path), default_labelmap())
    name = os.fsdecode(b"\x83e\x83X\x83g.jpg")  # "テスト.jpg" in Shift_JIS, as Linux hands it over
    try:
        shutil.copy(before.paths[0], os.path.join(tmp_path, "stamp", name))
    except (OSError, UnicodeEncodeError):
        pytest.skip("this file system refuses names that are not UTF-8")
    caplog.set_level(logging.WARNING, logger="tagestimate")
    after = dataset.list_samples(str(tmp_path), default_labelmap())
    assert after.paths == before.paths
    assert "stamp/\\x83e\\x83X\\x83g.jpg" in caplog.text.replace(os.sep, "/") and "not UTF-8" in caplog.text
    stream = pipeline.make_dataset(after.paths, 32, "RGB", batch_size=64)  # tf.constant takes them all
    assert sum(int(images.shape[0]) for images, _ in stream) == len(before.paths)


def test_pipeline_is_load_image_and_skips_unreadable_files(tmp_path):
    root = make_folders(str(tmp_path))
    paths = [os.path.join(root, BAD_TRUNCATED), os.path.join(root, "stamp", "3000_1_0.jpg"),
             os.path.join(root, BAD_TEXT), os.path.join(root, "graphic_map", "1001_2_0.jpg")]
    skipped = {}
    batches = list(pipeline.make_dataset(paths, 64, "BGR", batch_size=8, skipped=skipped))
    images, rows = batches[0][0].numpy(), batches[0][1].numpy()
    assert sorted(rows) == [1, 3]
    for image, row in zip(images, rows):
        assert np.array_equal(image, load_image(paths[row], 64, "BGR").astype(np.float32))
    assert set(skipped) == {paths[0], paths[2]}


def test_augmenter_keeps_shape_and_range():
    rng = np.random.default_rng(3)
    batch = rng.integers(0, 256, (4, 64, 64, 3)).astype(np.float32)
    out = pipeline.augment_batch(pipeline.build_augmenter(seed=1), batch, "BGR").numpy()
    assert out.shape == batch.shape and out.min() >= 0 and out.max() <= 255
    assert not np.allclose(out, batch)


@pytest.mark.parametrize("seed", [1, 777])
def test_augmentation_layers_decide_independently(seed):
    """Grayscale and flip pick their own images (layers sharing a seed picked the same ones)."""
    import keras

    augmenter = pipeline.build_augmenter(seed=seed)
    by_type = {type(layer).__name__: layer for layer in augmenter.layers}
    count, width = 64, 16
    rng = np.random.default_rng(4)
    # Distinct, colourful, left-right asymmetric images: grayscale and flips are both visible.
    ramp = np.linspace(0, 1, width)[None, None, :, None]
    batch = (rng.uniform(60, 255, (count, 1, 1, 3)) * ramp + rng.uniform(0, 40, (count, 8, width, 3)))
    batch = batch.astype(np.float32)
    gray = keras.ops.convert_to_numpy(by_type["RandomGrayscale"](batch, training=True))
    flipped = keras.ops.convert_to_numpy(by_type["RandomFlip"](batch, training=True))
    made_gray = np.array([np.allclose(g[..., 0], g[..., 1]) and np.allclose(g[..., 0], g[..., 2]) for g in gray])
    was_flipped = np.array([np.allclose(f, b[:, ::-1]) for f, b in zip(flipped, batch)])
    assert all(made_gray | np.array([np.allclose(g, b) for g, b in zip(gray, batch)]))
    assert all(was_flipped | np.array([np.allclose(f, b) for f, b in zip(flipped, batch)]))
    assert 16 <= made_gray.sum() <= 48 and 16 <= was_flipped.sum() <= 48
    # Independent coins agree on about half of 64 images (32 +- 4); one shared draw agreed on all.
    assert 16 <= (made_gray == was_flipped).sum() <= 48
    # No two random layers (gamma included) start from the same stream of numbers.
    first = [keras.ops.convert_to_numpy(keras.random.uniform((count,), seed=layer.generator))
             for layer in augmenter.layers]
    assert len({row.tobytes() for row in first}) == len(augmenter.layers)


def test_best_weights_are_saved_whole_on_improvement_only(tmp_path, monkeypatch):
    import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    path = str(tmp_path / BEST_WEIGHTS)
    saver = training._SaveBest(path, best=2.0)
    saver.set_model(model)
    saver.on_epoch_end(0, {"val_loss": 3.0})  # not below the resumed run's best
    saver.on_epoch_end(1, {"val_loss": float("nan")})
    assert not os.path.exists(path)
    saver.on_epoch_end(2, {"val_loss": 1.5})
    assert saver.best == 1.5 and os.path.isfile(path)
    with open(path, "rb") as handle:
        saved = handle.read()

    def killed_mid_save(filepath, *args, **kwargs):
        with open(filepath, "wb") as handle:
            handle.write(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(model, "save_weights", killed_mid_save)
    with pytest.raises(KeyboardInterrupt):
        saver.on_epoch_end(3, {"val_loss": 1.0})
    with open(path, "rb") as handle:
        assert handle.read() == saved
    assert os.listdir(tmp_path) == [BEST_WEIGHTS] and saver.best == 1.5


# docs/training.md's flag table is the contract: literal values, not TrainSettings read back.
DOCUMENTED_DEFAULTS = {
    "data": "datasetpdm", "out": "weights_pdm_multi", "epochs": 30, "batch_size": 32, "lr": 1e-4,
    "warmup_epochs": 1, "warmup_lr": 1e-3, "image_size": None, "weights": "imagenet", "val_split": 0.1,
    "seed": 777, "labelmap": None, "resume": False, "overwrite": False, "mixed_precision": False,
    "distribute": "auto", "patience": 5, "balance": "sqrt", "augment": True, "dropout": 0.2, "verbose": False,
    "backbone": None, "loss": "bce", "asl_gamma_neg": 4.0, "asl_gamma_pos": 0.0, "asl_clip": 0.05,
    "focal_gamma": 2.0, "folds": 0, "final": False, "reviewed_weight": 1.0,
}


def test_data_and_metrics_modules_load_no_tensorflow():
    """Listing, split and scores are usable (and checkable) without TensorFlow."""
    code = ("import sys, tagestimate.train.dataset, tagestimate.train.metrics, tagestimate.train.state\n"
            "print(sorted({'tensorflow', 'keras'} & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.stdout.split() == ["[]"], result.stderr


def test_a_run_resolves_into_one_frozen_spec(tmp_path):
    settings = TrainSettings(data=str(tmp_path / "data"), out=str(tmp_path / "out"), weights="none",
                                      image_size=64, seed=5)
    spec = train_state.resolve_run(settings)
    assert (spec.image_size, spec.channel_order, spec.seed, spec.pretrained) == (64, "RGB", 5, False)
    assert spec.start.kind == "none" and spec.initial_weights == "random initialisation"
    assert spec.labels == list(LABELS) and spec.state == {} and spec.run_seed == 5 and not spec.resume
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.seed = 6
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.epochs = 3
    assert os.listdir(tmp_path / "out") == []  # resolving writes no file


@pytest.mark.slow
def test_resume_resolves_from_the_run_not_the_flags(run, tmp_path):
    out = str(tmp_path / "out")
    shutil.copytree(run["out"], out)
    given = TrainSettings(out=out, resume=True, epochs=3, image_size=224, seed=1, dropout=0.5)
    spec = train_state.resolve_run(given, explicit={"out", "resume", "epochs", "image_size", "seed", "dropout"})
    state = read_json(os.path.join(out, STATE))
    assert spec.settings.data == os.path.abspath(run["data"]) and spec.settings.epochs == 3
    assert spec.settings.batch_size == 8  # stored in state.json, not the default 32
    assert (spec.image_size, spec.channel_order, spec.dropout) == (64, "RGB", 0.2)  # model.json's
    assert (spec.seed, spec.val_split, spec.pretrained) == (777, 0.25, False)  # state.json's
    assert spec.state == state and spec.run_seed == 777 + 2 and spec.start is None
    assert spec.initial_weights == "random initialisation" and not spec.evaluate_only


def test_ctrl_c_after_the_last_epoch_says_only_the_report_is_left(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    write_json(str(out / STATE), {"epochs_done": 2, "best_epoch": 2, "settings": {"epochs": 2}})
    assert interrupted_message(TrainSettings(out=str(out), epochs=5)) == (
        "interrupted after the last epoch (2 of 2), before report.json and the tuned thresholds were written "
        f"(best.weights.h5 holds epoch 2); finish with: python multitrain_efficientnet.py --out {out} --resume")


def test_parser_defaults_are_the_documented_ones_and_every_flag_is_explained():
    parser = multitrain_efficientnet.build_parser()
    assert vars(parser.parse_args([])) == DOCUMENTED_DEFAULTS
    assert all(action.help for action in parser._actions)
    text = " ".join(parser.format_help().split())
    assert "(default: None)" not in text and "(default: 30)" in text  # None is worded, not shown


def test_help_does_not_load_tensorflow():
    """--help must answer at once: nothing that loads TensorFlow runs before the flags are parsed."""
    code = ("import sys, contextlib, io, multitrain_efficientnet as m\n"
            "with contextlib.redirect_stdout(io.StringIO()) as text, contextlib.suppress(SystemExit):\n"
            "    m.main(['--help'])\n"
            "print('--resume' in text.getvalue(), sorted({'tensorflow', 'keras'} & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.stdout.split() == ["True", "[]"], result.stderr


def test_tensorflow_start_up_noise_is_filtered_and_other_output_kept(capfd):
    from tagestimate import tfenv

    with tfenv.native_stderr_filtered():
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
                    b"I0000 00:00:1795609452.504456    4235 port.cc:153] oneDNN custom operations are on.\n"
                    b"a real problem\n"
                    b"E0000 00:00:1795609826.371266    8656 cuda_platform.cc:52] failed call to cuInit: x\n")
    assert capfd.readouterr().err == "a real problem\n"


@pytest.mark.slow
def test_importing_the_trainer_prints_no_tensorflow_start_up_lines():
    environment = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run([sys.executable, "-c", "import tagestimate.train.training"], cwd=ROOT, env=environment,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for noise in ("oneDNN", "cudart_stub", "absl::InitializeLog", "cuInit"):
        assert noise not in result.stderr


def test_best_epoch_is_recorded_not_matched_by_loss(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    checkpoint = training._SaveBest(str(tmp_path / BEST_WEIGHTS), best=2.0, best_epoch=1)
    saver = training._SaveState(str(tmp_path), checkpoint, "finetune", {})
    for callback in (checkpoint, saver):
        callback.set_model(model)
    for callback in (checkpoint, saver):  # a resumed epoch whose loss equals the best, not below it
        callback.on_epoch_end(1, {"val_loss": 2.0})
    assert read_json(tmp_path / STATE)["best_epoch"] == 1
    for callback in (checkpoint, saver):
        callback.on_epoch_end(2, {"val_loss": 1.0})
    assert read_json(tmp_path / STATE)["best_epoch"] == 3


# ---------------------------------------------------------------- a training run

@pytest.mark.slow
def test_run_writes_everything_and_the_loss_falls(run):
    for name in train_state.RUN_FILES:
        assert os.path.isfile(os.path.join(run["out"], name)), name
    history = read_csv(os.path.join(run["out"], HISTORY))
    assert len(history) == 2
    assert float(history[1]["loss"]) < float(history[0]["loss"])
    assert {"val_loss", "macro_f1", "micro_f1", "val_macro_f1", "learning_rate"} <= set(history[0])
    state = read_json(os.path.join(run["out"], STATE))
    assert state["epochs_done"] == 2
    # why the first epoch is slow, said once (issue 19.12)
    assert run["log"].count("the first epoch includes building and compiling the model") == 1


@pytest.mark.slow
def test_the_train_command_writes_the_review_report(run):
    """report.html at the end of a run: the command passes the review floor's writer into training
    (tagestimate/train/ does not import tagestimate/review/)."""
    with open(os.path.join(run["out"], "report.html"), encoding="utf-8") as handle:
        assert "Per label" in handle.read()


def test_training_without_a_report_writer_writes_no_report_and_imports_no_review(tmp_path, monkeypatch):
    """training.train(write_report=None) skips report.html; the hook is the only way in."""
    import ast

    source = open(training.__file__, encoding="utf-8").read()
    imported = {node.module for node in ast.walk(ast.parse(source)) if isinstance(node, ast.ImportFrom)}
    assert not [name for name in imported if name and name.startswith("tagestimate.review")]
    from tagestimate.commands import train as command

    calls = []
    monkeypatch.setattr(command, "write_review_report", lambda out, model: calls.append((out, model)))
    monkeypatch.setattr(training, "train", lambda settings, explicit=None, write_report=None:
                        write_report(settings.out, "the model") or {"stub": True})
    monkeypatch.setattr(metrics, "format_summary", lambda report: f"summary {report}")
    assert multitrain_efficientnet.main(["--out", str(tmp_path / "o"), "--weights", "none"]) == 0
    assert calls == [(str(tmp_path / "o"), "the model")]


@pytest.mark.slow
@pytest.mark.parametrize("flags, loss_class, config, recorded", [
    (["--loss", "asl", "--asl-gamma-neg", "3", "--asl-gamma-pos", "1", "--asl-clip", "0.07"], "AsymmetricLoss",
     {"gamma_neg": 3.0, "gamma_pos": 1.0, "clip": 0.07}, "asl (gamma_neg 3, gamma_pos 1, clip 0.07)"),
    (["--loss", "focal", "--focal-gamma", "1.5"], "FocalLoss", {"gamma": 1.5}, "focal (gamma 1.5)"),
])
def test_the_loss_flag_reaches_the_compiled_model(tmp_path, monkeypatch, flags, loss_class, config, recorded):
    """--loss and its parameters are what the model is compiled with (not always binary cross-entropy)."""
    import keras

    compiled = []
    original = keras.Model.compile

    def compile_and_record(self, *args, **kwargs):
        compiled.append(kwargs.get("loss"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "compile", compile_and_record)
    data, out = make_folders(str(tmp_path / "data"), corrupt=False), str(tmp_path / "out")
    assert multitrain_efficientnet.main(["--data", data, "--out", out, "--epochs", "1", *FAST, *flags]) == 0
    assert compiled and all(type(loss).__name__ == loss_class for loss in compiled), compiled
    assert all({key: loss.get_config()[key] for key in config} == pytest.approx(config) for loss in compiled)
    assert read_json(os.path.join(out, tag_model.CONFIG_NAME))["training"]["loss"] == recorded
    assert np.isfinite(float(read_csv(os.path.join(out, HISTORY))[0]["loss"]))


def optimizer_step(path):
    """Adam's step count saved in a .weights.h5 (the optimizer's first variable), or None."""
    with h5py.File(path, "r") as handle:
        return int(handle["optimizer/vars/0"][()]) if "optimizer" in handle else None


@pytest.mark.slow
def test_best_weights_hold_weights_only_and_last_weights_the_optimizer_too(run):
    best, last = (os.path.join(run["out"], name) for name in (BEST_WEIGHTS, LAST_WEIGHTS))
    model, _, _ = tag_model.open_model(best)
    weights_bytes = 4 * model.count_params()  # float32
    assert optimizer_step(best) is None and os.path.getsize(best) < 1.05 * weights_bytes  # NDL's ~20 MB
    assert optimizer_step(last) > 0 and os.path.getsize(last) > 2 * weights_bytes  # + Adam's two moments


@pytest.mark.slow
def test_model_json_says_what_inference_needs(run):
    config = read_json(os.path.join(run["out"], tag_model.CONFIG_NAME))  # the file as written
    assert tag_model.read_config(run["out"]).to_dict() == config  # and as inference reads it
    assert config["labels"] == list(LABELS) and config["image_size"] == 64
    assert config["channel_order"] == "RGB" and config["pixel_range"] == [0, 255]
    assert config["backbone"] == "EfficientNetB0" and config["resize"] == "bilinear"
    assert set(config["thresholds"]) == set(LABELS) and config["default_threshold"] == 0.4
    assert from_dict(config["labelmap"]).labels_for("picture_landmark") == (
        "picture", "picture_outdoor", "picture_landmark")


@pytest.mark.slow
def test_corrupt_images_are_skipped_by_name(run):
    report = read_json(os.path.join(run["out"], REPORT))
    skipped = {os.path.relpath(entry["path"], run["data"]) for entry in report["skipped_images"]}
    assert skipped == {BAD_TEXT, BAD_TRUNCATED}
    for bad in (BAD_TEXT, BAD_TRUNCATED):
        assert os.path.join(run["data"], bad) in run["log"]
    assert BAD_TEXT not in {row["path"] for row in read_csv(os.path.join(run["out"], SPLIT))}


@pytest.mark.slow
def test_split_file_keeps_items_on_one_side(run):
    rows = read_csv(os.path.join(run["out"], SPLIT))
    sides = {}
    for row in rows:
        sides.setdefault(row["item_id"], set()).add(row["subset"])
        assert row["item_id"] == row["path"].split("/")[1].split("_")[0]
    assert all(len(side) == 1 for side in sides.values())
    assert {row["folder"] for row in rows if row["subset"] == "val"} == set(COLOURS)


@pytest.mark.slow
def test_reopened_model_predicts_the_same_and_report_equals_scikit_learn(run):
    model, config, kind = tag_model.open_model(os.path.join(run["out"], BEST_WEIGHTS))
    assert kind == tag_model.KERAS
    rows = read_csv(os.path.join(run["out"], PREDICTIONS))
    paths = [os.path.join(run["data"], row["path"]) for row in rows]
    pixels = np.stack([load_image(p, config.image_size, config.channel_order) for p in paths])
    again = model.predict(pixels.astype(np.float32), verbose=0)
    stored = np.array([[float(row[label]) for label in LABELS] for row in rows])
    np.testing.assert_allclose(again, stored, atol=1e-4)
    labels_map = default_labelmap()
    truth = np.array([labels_map.vector(row["folder"]) for row in rows])
    predicted = (stored > 0.4).astype(int)
    present = [j for j in range(len(LABELS)) if truth[:, j].any()]
    report = read_json(os.path.join(run["out"], REPORT))
    assert report["macro_f1"] == pytest.approx(
        f1_score(truth, predicted, labels=present, average="macro", zero_division=0), abs=1e-6)
    assert report["micro_f1"] == pytest.approx(f1_score(truth, predicted, average="micro", zero_division=0),
                                               abs=1e-6)
    assert report["per_class"]["picture_person"]["support"] == 0
    assert report["evaluated_images"] == len(rows) == report["split"]["val_images"] - 1  # truncated file


@pytest.mark.slow
def test_resume_continues_from_the_last_epoch(run, tmp_path):
    out = str(tmp_path / "out")
    shutil.copytree(run["out"], out)
    assert multitrain_efficientnet.main(["--data", run["data"], "--out", out, "--epochs", "3",
                                         "--resume", *FAST]) == 0
    history = read_csv(os.path.join(out, HISTORY))
    assert [row["epoch"] for row in history] == ["0", "1", "2"]
    assert read_json(os.path.join(out, STATE))["epochs_done"] == 3
    # Adam went on counting from the 2 epochs' steps (a fresh Adam would hold 1 epoch's).
    steps = optimizer_step(os.path.join(run["out"], LAST_WEIGHTS))
    assert optimizer_step(os.path.join(out, LAST_WEIGHTS)) == steps // 2 * 3
    assert set(tag_model.read_config(out).thresholds) == set(LABELS)
    with open(os.path.join(run["out"], SPLIT)) as before, open(os.path.join(out, SPLIT)) as after:
        assert before.read() == after.read()


@pytest.mark.slow
def test_resume_killed_while_saving_best_weights_keeps_the_run_usable(run, tmp_path, monkeypatch):
    out = str(tmp_path / "out")
    shutil.copytree(run["out"], out)
    state = read_json(os.path.join(out, STATE))
    state["best_val_loss"] = 1e9  # so that the next epoch saves best weights
    write_json(os.path.join(out, STATE), state)
    before = {}
    for name in (BEST_WEIGHTS, tag_model.CONFIG_NAME):  # model.json keeps its thresholds
        with open(os.path.join(out, name), "rb") as handle:
            before[name] = handle.read()

    def killed_mid_save(model, filepath, *args, **kwargs):  # best.weights.h5 is saved without optimizer
        assert "best" in os.path.basename(filepath)
        with open(filepath, "wb") as handle:
            handle.write(b"half a file")
        raise KeyboardInterrupt

    from keras.src.saving import saving_lib

    monkeypatch.setattr(saving_lib, "save_weights_only", killed_mid_save)
    assert multitrain_efficientnet.main(["--data", run["data"], "--out", out, "--epochs", "3", "--resume",
                                         *FAST]) == EXIT_INTERRUPTED
    for name, content in before.items():
        with open(os.path.join(out, name), "rb") as handle:
            assert handle.read() == content, name
    assert not [name for name in os.listdir(out) if "tmp" in name]


@pytest.fixture
def sigint_raises_keyboard_interrupt():
    """Ctrl-C as in a terminal, even when pytest was started with SIGINT ignored (`cmd &`)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.slow
def test_ctrl_c_exits_130_and_the_printed_command_continues_to_the_original_epochs(
        tmp_path, monkeypatch, capsys, sigint_raises_keyboard_interrupt):
    """A first run on a small folder with default flags; Ctrl-C after epoch 1 of 2; then the
    printed command, exactly, finishes the run (data folder and epochs come from the run)."""
    data, out = str(tmp_path / "data"), str(tmp_path / "out")
    for k, folder in enumerate(["graphic_map", "graphic_graph", "graphic", "picture_indoor", "picture_outdoor",
                                "picture_landmark", "picture_object", "stamp", "picture"]):
        os.makedirs(os.path.join(data, folder))
        for item in range(4):  # 36 images in 9 folders: scikit-learn cannot make the default 10 folds
            colour = np.random.default_rng(10 * k + item).integers(0, 256, (1, 1, 3))
            Image.fromarray(np.broadcast_to(colour, (48, 40, 3)).astype(np.uint8)).save(
                os.path.join(data, folder, f"{1000 * (k + 1) + item}_1_0.jpg"))
    original = training._SaveState.on_epoch_end

    def ctrl_c_after_first_epoch(self, epoch, logs=None):
        original(self, epoch, logs)
        if epoch == 0:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(training._SaveState, "on_epoch_end", ctrl_c_after_first_epoch)
    code = multitrain_efficientnet.main(["--data", data, "--out", out, "--weights", "none", "--image-size", "64",
                                         "--epochs", "2"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 130
    assert "interrupted after epoch 1 of 2" in lines[-1] and "continue with: python multitrain_efficientnet.py" in lines[-1]
    monkeypatch.setattr(training._SaveState, "on_epoch_end", original)
    command = shlex.split(lines[-1].split("continue with: ", 1)[1])
    assert multitrain_efficientnet.main(command[2:]) == 0
    assert [row["epoch"] for row in read_csv(os.path.join(out, HISTORY))] == ["0", "1"]
    state = read_json(os.path.join(out, STATE))
    assert state["epochs_done"] == 2 and state["finished"] and state["settings"]["data"] == os.path.abspath(data)
    assert sum(row["subset"] == "val" for row in read_csv(os.path.join(out, SPLIT))) == 9  # 1/4


@pytest.mark.slow
@pytest.mark.parametrize("name, change, field", [
    (STATE, lambda state: state.pop("epochs_done"), "epochs_done"),
    (STATE, lambda state: state.update(phase="cooldown"), "phase"),
    (STATE, lambda state: state.update(best_epoch="2"), "best_epoch"),
    (STATE, lambda state: state["settings"].update(batch_size="32"), "settings.batch_size"),
    (tag_model.CONFIG_NAME, lambda config: config.pop("labelmap"), "labelmap"),
    (tag_model.CONFIG_NAME, lambda config: config.pop("dropout"), "dropout"),
    (tag_model.CONFIG_NAME, lambda config: config["training"].pop("initial_weights"), "training.initial_weights"),
    (tag_model.CONFIG_NAME, lambda config: config.pop("labels"), "labels"),
])
def test_resume_from_a_damaged_run_names_the_file_and_field(run, tmp_path, capsys, name, change, field):
    out = tmp_path / "out"
    shutil.copytree(run["out"], out)
    content = read_json(out / name)
    change(content)
    write_json(str(out / name), content)
    message = error_of(["--out", str(out), "--resume", "--epochs", "3"], capsys)
    assert str(out / name) in message and f"'{field}'" in message and "\n" not in message


@pytest.mark.slow
def test_resume_from_unreadable_or_older_state(run, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(run["out"], out)
    (out / STATE).write_text("{not json")
    assert f"cannot read {out / STATE}" in error_of(["--out", str(out), "--resume"], capsys)
    older = read_json(os.path.join(run["out"], STATE))
    for field in ("settings", "finished", "version"):  # what the first version did not write
        older.pop(field)
    write_json(str(out / STATE), older)
    assert train_state.read_state(str(out))["epochs_done"] == 2


@pytest.mark.slow
def test_refuses_to_replace_a_run_without_a_flag(run, tmp_path, capsys):
    assert re.search("--resume.*--overwrite", error_of(["--data", run["data"], "--out", run["out"], *FAST], capsys))
    assert "no run to continue" in error_of(["--data", run["data"], "--out", str(tmp_path), "--resume", *FAST],
                                            capsys)


@pytest.mark.slow
def test_imagenet_offline_is_one_clear_sentence(tmp_path, monkeypatch, capsys):
    import keras

    original = keras.applications.EfficientNetB0

    def offline(*args, weights=None, **kwargs):
        if weights == "imagenet":
            raise Exception("URL fetch failure: [Errno -2] Name or service not known")
        return original(*args, weights=weights, **kwargs)

    monkeypatch.setattr(keras.applications, "EfficientNetB0", offline)
    data, out = make_folders(str(tmp_path / "data"), corrupt=False), tmp_path / "out"
    message = error_of(["--data", data, "--out", str(out), "--weights", "imagenet", "--image-size", "64",
                        "--val-split", "0.25"], capsys)
    assert "--weights none" in message and "\n" not in message
    assert not out.exists() or not any(out.iterdir())  # a failed start writes nothing


REPLICA = os.path.join(SHARED_DATA, "legacy-weights", "replica_ndllabelimage.hdf5")


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isfile(REPLICA), reason="shared/data/legacy-weights replica absent")
def test_ndl_legacy_file_starts_a_bgr_model_with_its_head():
    model = tag_model.build_model(len(LABELS), 64)
    order, description = training.init_weights(model, REPLICA, 64, LABELS)
    assert order == "BGR" and "head" in description
    stored = tag_model.read_legacy_weights(REPLICA)
    np.testing.assert_array_equal(model.get_layer("dense_2").get_weights()[0], stored["dense_2"][0])
    other = tag_model.build_model(2, 64)
    order, description = training.init_weights(other, REPLICA, 64, ["a", "b"])
    assert order == "BGR" and "head" not in description
    np.testing.assert_array_equal(other.get_layer("stem_conv").get_weights()[0], stored["stem_conv"][0])


@pytest.mark.slow
def test_continue_from_a_tag_model_with_warmup_mixed_precision_and_mirrored(run, tmp_path, monkeypatch):
    previous = tmp_path / "previous"
    shutil.copytree(run["out"], previous)
    config = tag_model.read_config(str(previous))
    # A continued model keeps its predecessor's channel order.
    tag_model.write_config(str(previous), dataclasses.replace(config, channel_order="BGR"))
    out = str(tmp_path / "out")
    built = []

    def build_model(*args, **kwargs):
        built.append(original(*args, **kwargs))
        return built[-1]

    original = tag_model.build_model
    monkeypatch.setattr(tag_model, "build_model", build_model)
    records, logger = _Records(), logging.getLogger("tagestimate")
    level = logger.level
    logger.addHandler(records)
    logger.setLevel(logging.INFO)  # the information lines too
    try:
        assert multitrain_efficientnet.main([
            "--data", run["data"], "--out", out, *FAST, "--weights", str(previous / BEST_WEIGHTS),
            "--epochs", "2", "--warmup-epochs", "1", "--mixed-precision", "--distribute", "mirrored"]) == 0
    finally:
        logger.removeHandler(records)
        logger.setLevel(level)
    # Two phases, each compiled: why the first epoch is slow is still said once, before the first (issue 19.12).
    phases = [m.split(":")[0] for m in records.messages if m.startswith(("warmup:", "finetune:", "the first epoch"))]
    assert phases == ["warmup", "the first epoch includes building and compiling the model (graph tracing, XLA) and "
                      "warming up the input pipeline, so it takes longer than the next ones", "finetune"]
    trained = built[0]  # the model that was fit (the next one read the starting weights)
    # The policy was active when the trained model was built: its layers compute in 16 bits.
    assert trained.get_layer("dense").compute_dtype == ("float16" if training.tf.config.list_logical_devices("GPU")
                                                          else "bfloat16")
    assert trained.get_layer("dense").kernel.dtype == "float32"
    assert trained.get_layer("dense_2").compute_dtype == "float32"
    # Its variables were created under MirroredStrategy.scope(), and fit ran under that strategy.
    assert isinstance(trained.distribute_strategy, training.tf.distribute.MirroredStrategy)
    assert isinstance(trained.get_layer("dense").kernel.value, training.tf.distribute.DistributedValues)
    assert training.keras.mixed_precision.global_policy().name == "float32"  # restored
    assert tag_model.read_config(out).channel_order == "BGR"
    assert len(read_csv(os.path.join(out, HISTORY))) == 2
    model, _, _ = tag_model.open_model(os.path.join(out, BEST_WEIGHTS))
    assert model.output_shape == (None, len(LABELS))


def _trained_on(seed, batch, channel_order="BGR"):
    """The pixels an AugmentingModel (augmenter seeded `seed`) trains on in one step over `batch`."""
    import keras

    class Spy(keras.layers.Layer):  # records the pixels the model is trained on
        def build(self, shape):
            self.seen = self.add_weight(shape=batch.shape, initializer="zeros", trainable=False)

        def call(self, images, training=False):
            if training:
                self.seen.assign(images)
            return images

    keras.utils.set_random_seed(seed)  # as a run does before it builds anything
    inputs = keras.Input(batch.shape[1:])
    spy = Spy()
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.GlobalAveragePooling2D()(spy(inputs))))
    trainer = pipeline.AugmentingModel(model, pipeline.build_augmenter(seed=seed), channel_order)
    trainer.compile(optimizer="sgd", loss="mse", jit_compile=False)
    trainer.fit(batch, np.zeros((len(batch), 1), np.float32), batch_size=len(batch), epochs=1, verbose=0)
    assert len(trainer.weights) == len(model.weights)  # the augmenter's seed state is not saved
    with tempfile.TemporaryDirectory() as folder:  # and its weight file has the tag model's layout
        names = []
        for saved, name in ((trainer, "trainer"), (model, "model")):
            saved.save_weights(os.path.join(folder, f"{name}.weights.h5"))
            with h5py.File(os.path.join(folder, f"{name}.weights.h5")) as handle:
                names.append([])
                handle.visit(names[-1].append)
        assert [name for name in names[0] if not name.startswith("optimizer")] == names[1]
    assert np.allclose(model.predict_on_batch(batch), trainer.predict_on_batch(batch))  # inference: none
    return keras.ops.convert_to_numpy(spy.seen)


def _grayscale_and_flipped(images, originals):
    """Which images were made grayscale (equal channels) and flipped (the left-to-right ramp reversed)."""
    gray = np.array([np.allclose(im[..., 0], im[..., 1], atol=0.5) and np.allclose(im[..., 0], im[..., 2], atol=0.5)
                     for im in images])
    slope = images[:, :, 12:].mean(axis=(1, 2, 3)) - images[:, :, :4].mean(axis=(1, 2, 3))
    assert originals[:, :, 12:].mean() > originals[:, :, :4].mean() + 50  # the ramp rises to the right
    return gray, slope < 0


@pytest.mark.slow
def test_augmentation_in_the_training_step_draws_like_the_tf_data_pipeline_and_is_not_saved():
    """AugmentingModel augments inside the training step with the same layers, seeds and BGR handling
    as augment_batch in tf.data did: seeded runs repeat exactly, and grayscale and flips hit about
    half of the images each, independently, on both paths."""
    import keras
    import tensorflow as tf

    rng = np.random.default_rng(6)
    ramp = np.linspace(0, 1, 16)[None, None, :, None]
    batch = (rng.uniform(120, 255, (64, 1, 1, 3)) * ramp + rng.uniform(0, 30, (64, 16, 16, 3))).astype(np.float32)
    on_device = _trained_on(5, batch)
    assert np.array_equal(on_device, _trained_on(5, batch))  # deterministic for a seed
    assert not np.allclose(on_device, _trained_on(6, batch))
    # a BGR model's pixels get the colour operations in RGB order, as an RGB model's do
    assert np.allclose(on_device, _trained_on(5, batch[..., ::-1].copy(), "RGB")[..., ::-1], atol=1e-3)
    keras.utils.set_random_seed(5)
    augmenter = pipeline.build_augmenter(seed=5)
    in_tf_data = next(iter(tf.data.Dataset.from_tensors(batch).map(
        lambda images: pipeline.augment_batch(augmenter, images, "BGR")))).numpy()
    for path, images in (("in the step", on_device), ("in tf.data", in_tf_data)):
        gray, flipped = _grayscale_and_flipped(images, batch)
        assert 16 <= gray.sum() <= 48 and 16 <= flipped.sum() <= 48, (path, gray.sum(), flipped.sum())
        assert 16 <= (gray == flipped).sum() <= 48
        assert not np.allclose(images, batch, atol=1)
