"""Every backbone trains (one step in-process; the trainer's whole path on a non-default one) and
its weights tag images the same through TensorFlow and OpenVINO (both build what model.json says).
CI runs all of them, so each stays small: 64 px, weights none, four images."""

import os

import numpy as np
import pytest

import multitrain_efficientnet
from test_training import make_folders
from tagestimate.tag import backends
from tagestimate.tag.settings import ModelBundle
from tagestimate import model as tag_model
from tagestimate.images import load_image
from tagestimate.train.settings import BACKBONE_CHOICES


def test_every_flag_choice_is_a_known_backbone_and_old_configs_mean_efficientnetb0():
    assert set(BACKBONE_CHOICES) == set(tag_model.BACKBONES)
    assert tag_model.ModelConfig(labels=("a",)).backbone == "EfficientNetB0"
    with pytest.raises(tag_model.WeightsError, match="backbone"):
        tag_model.ModelConfig(labels=("a",), backbone="ResNet50")


# efficientnetb0 trains through the trainer in test_training.py and convnext_tiny below.
STEP_ONLY = [name for name in BACKBONE_CHOICES if name not in ("efficientnetb0", "convnext_tiny")]


@pytest.mark.slow
@pytest.mark.parametrize("backbone", STEP_ONLY)
def test_backbone_trains_a_step_and_tags_alike_on_both_backends(tmp_path, monkeypatch, backbone):
    """Each backbone: built as the trainer builds it, one training step (the trainer's compile),
    saved with its model.json; both backends build what model.json says and agree."""
    import dataclasses

    import keras

    from modelfiles import trained_config
    from tagestimate.train.training import compile_model

    monkeypatch.setenv("TAGESTIMATE_CACHE", str(tmp_path / "cache"))
    keras.utils.set_random_seed(0)
    model = tag_model.build_model(len(trained_config().labels), 64, backbone=backbone)
    compile_model(model, 1e-3)
    model.jit_compile = False  # XLA's compile of a training step costs more than the step here
    pixels = np.random.default_rng(0).uniform(0, 255, (4, 64, 64, 3)).astype(np.float32)
    targets = (np.arange(4 * model.output_shape[-1]).reshape(4, -1) % 3 == 0).astype(np.float32)
    before = [weight.copy() for weight in model.get_weights()[-2:]]
    model.fit(pixels, targets, batch_size=4, epochs=1, verbose=0)
    assert any(np.abs(a - b).max() > 0 for a, b in zip(before, model.get_weights()[-2:]))  # it trained
    out = str(tmp_path / "out")
    os.makedirs(out)
    weights = os.path.join(out, "best.weights.h5")
    model.save_weights(weights)
    spec = tag_model.BACKBONES[backbone]
    tag_model.write_config(out, dataclasses.replace(trained_config(image_size=64), backbone=spec.keras_name))
    config = tag_model.read_config(out)
    assert config.backbone == spec.keras_name
    tensorflow = backends.make_runner("tensorflow", ModelBundle.load(weights)).predict(pixels)
    openvino = backends.make_runner("openvino", ModelBundle.load(weights)).predict(pixels)
    assert np.abs(tensorflow - model.predict(pixels, verbose=0)).max() < 1e-4  # the backbone of model.json
    assert np.abs(tensorflow - openvino).max() < 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["convnext_tiny"])  # the trainer's own path, on a non-default backbone
def test_trainer_trains_a_backbone_whose_weights_tag_alike_on_both_backends(tmp_path, monkeypatch, backbone):
    monkeypatch.setenv("TAGESTIMATE_CACHE", str(tmp_path / "cache"))
    data, out = make_folders(str(tmp_path / "data"), corrupt=False), str(tmp_path / "out")
    for root, _, names in os.walk(data):  # one page per item: 16 images, 2 training steps
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
    tensorflow = backends.make_runner("tensorflow", ModelBundle.load(weights)).predict(batch)
    openvino = backends.make_runner("openvino", ModelBundle.load(weights)).predict(batch)
    assert tensorflow.shape == (6, len(config.labels))
    assert np.abs(tensorflow - openvino).max() < 1e-3
