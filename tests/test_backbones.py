"""Every backbone trains one epoch (64 px, weights none, batch 4) and its weights tag images the
same through TensorFlow and OpenVINO (the model.json's backbone is what both build)."""

import os

import numpy as np
import pytest

import multitrain_efficientnet
from test_training import make_folders
from tagestimate import backends
from tagestimate import model as tag_model
from tagestimate.images import load_image
from tagestimate.train_settings import BACKBONE_CHOICES


def test_every_flag_choice_is_a_known_backbone_and_old_configs_mean_efficientnetb0():
    assert set(BACKBONE_CHOICES) == set(tag_model.BACKBONES)
    assert tag_model.ModelConfig(labels=("a",)).backbone == "EfficientNetB0"
    with pytest.raises(tag_model.WeightsError, match="backbone"):
        tag_model.ModelConfig(labels=("a",), backbone="ResNet50")


@pytest.mark.slow
@pytest.mark.parametrize("backbone", BACKBONE_CHOICES)
def test_backbone_trains_and_tags_alike_on_both_backends(tmp_path, monkeypatch, backbone):
    monkeypatch.setenv("TAGESTIMATE_CACHE", str(tmp_path / "cache"))
    data, out = make_folders(str(tmp_path / "data"), corrupt=False), str(tmp_path / "out")
    for root, _, names in os.walk(data):  # one page per item: 16 images, 2 training steps (CI runs all five)
        for name in names:
            if not name.endswith("_1_0.jpg"):
                os.remove(os.path.join(root, name))
    assert multitrain_efficientnet.main([
        "--data", data, "--out", out, "--backbone", backbone, "--weights", "none", "--image-size", "64",
        "--batch-size", "4", "--epochs", "1", "--val-split", "0.5", "--no-augment"]) == 0
    config = tag_model.read_config(out)
    assert config.backbone == tag_model.BACKBONES[backbone].keras_name and config.image_size == 64
    images = sorted(os.path.join(root, name) for root, _, names in os.walk(data) for name in names)[:6]
    batch = np.stack([load_image(path, 64, config.channel_order) for path in images]).astype(np.float32)
    weights = os.path.join(out, "best.weights.h5")
    tensorflow = backends.make_runner("tensorflow", weights, config).predict(batch)
    openvino = backends.make_runner("openvino", weights, config).predict(batch)
    assert tensorflow.shape == (6, len(config.labels))
    assert np.abs(tensorflow - openvino).max() < 1e-3
