"""ModelConfig: model.json as one checked, frozen object (no TensorFlow needed)."""

import dataclasses
import json
import os
import re
import subprocess
import sys

import h5py
import numpy as np
import pytest

from tagestimate import files
from tagestimate.labels import LABELS, NDL_LABELS
from tagestimate.model import (ModelConfig, WeightsError, describe_weights, legacy_config, read_config,
                               write_config)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# What the trainer wrote before ModelConfig existed (keys and values as in a real run's model.json).
TRAINED = {
    "version": 1, "backbone": "EfficientNetB0", "labels": ["graphic", "stamp"], "image_size": 64,
    "channel_order": "RGB", "pixel_range": [0, 255], "resize": "bilinear", "dropout": 0.2,
    "thresholds": {"graphic": 0.35, "stamp": 0.5}, "default_threshold": 0.4,
    "labelmap": {"labels": ["graphic", "stamp"], "tags": {"graphic": ["graphic"], "stamp": ["stamp"]},
                 "aliases": {}},
    "training": {"data": "/data/pdm", "initial_weights": "imagenet", "seed": 1, "val_split": 0.2,
                 "balance": "sqrt", "augment": True, "split_file": "split.csv", "epochs_done": 3,
                 "best_epoch": 2, "date": "2024-05-01T10:00:00+09:00"},
}
# What legacy_config() returned as a dict for NDL's file.
NDL_DICT = {
    "version": 1, "backbone": "EfficientNetB0", "labels": list(NDL_LABELS), "image_size": 224,
    "channel_order": "BGR", "pixel_range": [0, 255], "resize": "bilinear", "thresholds": None,
    "default_threshold": 0.4, "source": "NDL published weights (legacy HDF5 layout)",
}


def test_old_model_json_round_trips_unchanged(tmp_path):
    config = ModelConfig.from_dict(json.loads(json.dumps(TRAINED)), source="model.json")
    assert config.labels == ("graphic", "stamp") and config.image_size == 64 and config.dropout == 0.2
    assert config.training["initial_weights"] == "imagenet" and config.labelmap["tags"]["stamp"] == ["stamp"]
    assert config.to_dict() == TRAINED
    assert ModelConfig.from_json(config.to_json()) == config
    # write_config writes the very bytes the old write_json(dict) wrote: files stay comparable
    write_config(str(tmp_path), config)
    files.write_json(str(tmp_path / "old.json"), TRAINED)
    assert (tmp_path / "model.json").read_bytes() == (tmp_path / "old.json").read_bytes()
    assert read_config(str(tmp_path)) == config


def test_minimal_older_model_json_loads_with_defaults(tmp_path):
    (tmp_path / "model.json").write_text(json.dumps({"labels": ["a", "b"], "channel_order": "BGR",
                                                     "image_size": 32}), encoding="utf-8")
    config = read_config(str(tmp_path))
    assert (config.pixel_range, config.resize, config.backbone, config.version) == ((0, 255), "bilinear",
                                                                                  "EfficientNetB0", 1)
    assert config.dropout is None and config.thresholds is None and config.default_threshold == 0.4
    assert config.labelmap is None and config.training is None and config.source is None
    # optional fields that were absent stay absent; thresholds is always written
    assert set(config.to_dict()) == {"version", "backbone", "labels", "image_size", "channel_order",
                                     "pixel_range", "resize", "thresholds", "default_threshold"}


def test_embedding_layer_is_optional_and_defaults_to_ndls_dense(tmp_path):
    assert ModelConfig.from_dict(TRAINED).embedding == "dense" == legacy_config().embedding
    assert "embedding_layer" not in ModelConfig.from_dict(TRAINED).to_dict()  # older files round-trip unchanged
    config = ModelConfig.from_dict({**TRAINED, "embedding_layer": "dense_1"})
    assert config.embedding == "dense_1" and config.to_dict()["embedding_layer"] == "dense_1"
    write_config(str(tmp_path), config)
    assert read_config(str(tmp_path)) == config
    for bad in ("", 3, ["dense"]):
        with pytest.raises(WeightsError, match=r"model.json has no valid 'embedding_layer' \(the name of the layer"):
            ModelConfig.from_dict({**TRAINED, "embedding_layer": bad}, source="model.json")


def test_the_trainer_writes_the_embedding_layer():
    import types

    from tagestimate.labels import default_labelmap
    from tagestimate.train import training

    settings = types.SimpleNamespace(data="/data", balance="sqrt", augment=True, loss="bce")
    spec = types.SimpleNamespace(settings=settings, labels=("a", "b"), image_size=64, channel_order="RGB",
                                 dropout=0.0, backbone="EfficientNetB0", labels_map=default_labelmap(),
                                 initial_weights="none", seed=1, val_split=0.2)
    assert training.model_config(spec).to_dict()["embedding_layer"] == "dense"


def test_ndl_legacy_config_is_ndls_eleven_labels_in_bgr():
    config = legacy_config()
    assert config.labels == NDL_LABELS == (
        "graphic", "picture", "graphic_graph", "graphic_map", "graphic_illustcolor", "picture_indoor",
        "picture_object", "picture_person", "picture_outdoor", "picture_landmark", "stamp")
    assert config.to_dict() == NDL_DICT
    assert config.cutoffs() == [0.4] * 11


def _legacy_head_file(path, outputs):
    """A file with NDL's legacy layout holding only dense_2 (what describe_weights reads)."""
    with h5py.File(path, "w") as handle:
        handle.attrs["layer_names"] = np.array([b"dense_2"])
        group = handle.create_group("dense_2")
        group.attrs["weight_names"] = np.array([b"dense_2/kernel:0", b"dense_2/bias:0"])
        group.create_dataset("dense_2/kernel:0", data=np.zeros((4, outputs), np.float32))
        group.create_dataset("dense_2/bias:0", data=np.zeros(outputs, np.float32))
    return str(path)


def test_ndl_file_is_described_by_ndl_labels(tmp_path):
    config, kind = describe_weights(_legacy_head_file(tmp_path / "ndl.hdf5", 11))
    assert config == legacy_config() and kind == "legacy-hdf5"
    with pytest.raises(WeightsError, match="has 12 outputs, NDL's tag model has 11"):
        describe_weights(_legacy_head_file(tmp_path / "other.hdf5", 12))


def test_a_label_added_to_the_default_map_does_not_change_how_ndls_file_loads(tmp_path):
    # A newcomer appends a label to tagestimate/labels.py's LABELS: NDL's file still means NDL_LABELS.
    path = _legacy_head_file(tmp_path / "ndl.hdf5", 11)
    code = ("import tagestimate.labels as labels; labels.LABELS = labels.LABELS + ('picture_map',); "
            "from tagestimate.model import describe_weights; import sys; "
            "config, kind = describe_weights(sys.argv[1]); print(len(config.labels), kind)")
    result = subprocess.run([sys.executable, "-c", code, path], cwd=ROOT, capture_output=True, text=True)
    assert result.stdout == "11 legacy-hdf5\n", result.stderr
    assert LABELS[:11] == NDL_LABELS  # the default map starts with NDL's order


@pytest.mark.parametrize("changes, field", [
    ({"labels": None, "thresholds": None}, "labels"),
    ({"labels": [], "thresholds": None}, "labels"),
    ({"labels": "graphic", "thresholds": None}, "labels"),
    ({"labels": ["a", "a"], "thresholds": None}, "labels"),
    ({"labels": ["a", 3], "thresholds": None}, "labels"),
    ({"labels": ["a", ""], "thresholds": None}, "labels"),
    ({"channel_order": "GBR"}, "channel_order"),
    ({"channel_order": None}, "channel_order"),
    ({"image_size": 16}, "image_size"),
    ({"image_size": "64"}, "image_size"),
    ({"image_size": 64.0}, "image_size"),
    ({"image_size": None}, "image_size"),
    ({"pixel_range": [0, 1]}, "pixel_range"),
    ({"resize": "nearest"}, "resize"),
    ({"backbone": "ResNet50"}, "backbone"),
    ({"version": "1"}, "version"),
    ({"thresholds": {"zzz": 0.5}}, "thresholds"),
    ({"thresholds": {"graphic": "0.5"}}, "thresholds"),
    ({"thresholds": [0.5, 0.5]}, "thresholds"),
    ({"default_threshold": "0.4"}, "default_threshold"),
    ({"default_threshold": None}, "default_threshold"),
    ({"dropout": 1}, "dropout"),
    ({"dropout": -0.1}, "dropout"),
    ({"dropout": "0.2"}, "dropout"),
    ({"dropout": True}, "dropout"),
    ({"labelmap": ["graphic"]}, "labelmap"),
    ({"training": "imagenet"}, "training"),
    ({"source": 3}, "source"),
])
def test_every_bad_field_is_one_sentence_naming_the_file_and_field(tmp_path, changes, field):
    path = tmp_path / "model.json"
    path.write_text(json.dumps(dict(TRAINED, **changes)), encoding="utf-8")
    with pytest.raises(WeightsError) as error:
        read_config(str(tmp_path))
    message = str(error.value)
    assert message.startswith(str(path)) and re.search(rf"\b{field}\b", message) and "\n" not in message
    with pytest.raises(WeightsError, match=rf"^model config.*\b{field}\b"):  # the constructor checks too
        ModelConfig(**dict(ModelConfig.from_dict(TRAINED).__dict__, **changes))


@pytest.mark.parametrize("content, expected", [
    (None, "is missing; weights written by multitrain_efficientnet.py need the model.json"),
    (b"{not json", "cannot read"),
    (b"\xff\xfe{}", "cannot read"),
    (b"[1, 2]", "does not hold a JSON object"),
])
def test_unreadable_model_json_is_one_sentence(tmp_path, content, expected):
    if content is not None:
        (tmp_path / "model.json").write_bytes(content)
    with pytest.raises(WeightsError) as error:
        read_config(str(tmp_path))
    assert str(error.value).startswith(f"{tmp_path / 'model.json'}") or str(error.value).startswith("cannot read ")
    assert str(tmp_path / "model.json") in str(error.value) and expected in str(error.value)
    assert "\n" not in str(error.value)


def test_config_is_frozen_and_its_mappings_read_only():
    config = ModelConfig.from_dict(TRAINED)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.image_size = 128
    with pytest.raises(TypeError):
        config.thresholds["graphic"] = 0.9
    with pytest.raises(TypeError):
        config.training["seed"] = 2
    changed = dataclasses.replace(config, thresholds={"graphic": 0.9})
    assert changed.thresholds["graphic"] == 0.9 and config.thresholds["graphic"] == 0.35
    assert TRAINED["thresholds"]["graphic"] == 0.35  # the source dict is copied, not shared


def test_cutoffs_override_then_tuned_then_default():
    config = ModelConfig.from_dict(dict(TRAINED, thresholds={"stamp": 0.7}, default_threshold=0.3))
    assert config.cutoffs() == [0.3, 0.7]
    assert config.cutoffs(0.55) == [0.55, 0.55]
    assert dataclasses.replace(config, thresholds=None).cutoffs() == [0.3, 0.3]


def test_model_json_beside_the_weights_is_named_in_one_place(tmp_path):
    from tagestimate import model, modelconfig

    assert model.config_path(str(tmp_path / "run" / "best.weights.h5")) == str(tmp_path / "run" / "model.json")
    assert model.ModelConfig is modelconfig.ModelConfig and model.WeightsError is modelconfig.WeightsError
    (tmp_path / "run").mkdir()
    write_config(str(tmp_path / "run"), ModelConfig(labels=("a", "b"), image_size=32))
    with h5py.File(tmp_path / "run" / "best.weights.h5", "w") as handle:  # a Keras 3 layout: read_config's
        handle.create_group("layers")
    config, kind = describe_weights(str(tmp_path / "run" / "best.weights.h5"))
    assert kind == "keras-weights" and config.labels == ("a", "b") and config.image_size == 32


KERAS_SHAPE_ERROR = (
    "A total of 1 objects could not be loaded. Example error message for object <Dense name=dense_2, built=True>:\n\n"
    "The shape of the target variable and the shape of the target value in `variable.assign(value)` must match. "
    "variable.shape=(512, 3), Received: value.shape=(512, 11). Target variable: <Variable path=dense_2/kernel, "
    "shape=(512, 3), dtype=float32, value=[[-0.08 -0.0005]\n [ 0.10  0.07]]>\n\nList of objects that could not "
    "be loaded:\n[<Dense name=dense_2, built=True>]")


def test_a_keras_load_error_becomes_a_few_words():
    from tagestimate.model import _load_failure

    assert _load_failure(ValueError(KERAS_SHAPE_ERROR)) == "dense_2/kernel holds (512, 11), the model needs (512, 3)"
    many = KERAS_SHAPE_ERROR.replace("A total of 1 objects", "A total of 141 objects")
    assert _load_failure(ValueError(many)) == ("141 layers could not be loaded, e.g. dense_2/kernel holds (512, 11), "
                                               "the model needs (512, 3)")
    assert _load_failure(RuntimeError("first line\nsecond line")) == "first line"
    assert _load_failure(ValueError("")) == "ValueError"


def test_the_model_bundle_describes_and_hashes_once_and_folds_the_threshold_once(tmp_path, monkeypatch):
    from tagestimate.tag import settings

    (tmp_path / "run").mkdir()
    write_config(str(tmp_path / "run"), ModelConfig(labels=("a", "b"), image_size=32, thresholds={"a": 0.7}))
    weights = tmp_path / "run" / "best.weights.h5"
    with h5py.File(weights, "w") as handle:
        handle.create_group("layers")
    hashed = []
    monkeypatch.setattr(settings, "sha256_file", lambda path: hashed.append(path) or "cd" * 32)
    bundle = settings.ModelBundle.load(str(weights), threshold=0.25)
    assert hashed == [str(weights)] and bundle.sha256 == "cd" * 32 and bundle.kind == "keras-weights"
    assert bundle.config.thresholds == {"a": 0.7} and bundle.thresholds == [0.25, 0.25]  # --threshold for all
    assert settings.ModelBundle.load(str(weights)).thresholds == [0.7, 0.4]  # model.json's, else the default
    moved = bundle.at("/elsewhere/best.weights.h5")
    assert moved.path == "/elsewhere/best.weights.h5" and moved.config == bundle.config and moved.sha256 == bundle.sha256
