"""Grad-CAM (tagestimate/review/explain.py): the feature map found by shape, heat maps in [0, 1] at
the feature map's size, highest where the signal is, overlays written as JPEG files."""

import os

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow  # builds Keras models


def signal_model():
    """Conv (sums the channels, fixed) -> ReLU -> global average -> sigmoid: output 0 grows with
    bright pixels wherever they are, so Grad-CAM must point at the bright patch."""
    import keras

    inputs = keras.Input((64, 64, 3))
    x = keras.layers.Conv2D(1, 8, strides=8, use_bias=False, activation="relu", name="features",
                            kernel_initializer=keras.initializers.Constant(1.0 / 192))(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(2, activation="sigmoid", kernel_initializer=keras.initializers.Constant(1.0),
                                 name="out")(x)
    return keras.Model(inputs, outputs)


def test_heat_map_is_highest_where_the_signal_is():
    from tagestimate.review.explain import gradcam_model, heatmaps, last_conv_layer

    model = signal_model()
    assert last_conv_layer(model).name == "features"
    pixels = np.zeros((2, 64, 64, 3), np.float32)
    pixels[0, 40:56, 8:24] = 255  # bottom left
    pixels[1, 0:16, 48:64] = 255  # top right
    maps = heatmaps(gradcam_model(model), pixels, [[0], [0, 1]])
    assert set(maps[0]) == {0} and set(maps[1]) == {0, 1}
    for heat, (row, column) in ((maps[0][0], (5, 1)), (maps[1][1], (0, 6))):
        assert heat.shape == (8, 8) and heat.dtype == np.float32
        assert heat.min() >= 0 and heat.max() == pytest.approx(1.0)
        assert np.unravel_index(np.argmax(heat), heat.shape) == (row, column)
        assert heat.sum() < 5  # concentrated on the patch, not spread


def test_efficientnet_tag_model_gives_maps_and_overlays(tmp_path):
    """The project's 64-px EfficientNetB0 (weights=None): the last 4-D layer is the backbone's
    top activation, maps are 2 x 2 in [0, 1], and write_explanations writes one JPEG overlay per
    kept tag, the size of the thumbnail."""
    from modelfiles import write_trained_weights
    from tagestimate.review import report
    from tagestimate.review.explain import Explainer, last_conv_layer
    from tagestimate.review.thumbs import make_thumbnail

    weights, model = write_trained_weights(str(tmp_path / "w"), image_size=64)
    assert last_conv_layer(model).name == "top_activation"
    rng = np.random.default_rng(0)
    source = tmp_path / "in" / "page.png"
    os.makedirs(source.parent)
    Image.fromarray(rng.integers(0, 255, (90, 130, 3), dtype=np.uint8)).save(source)
    explainer = Explainer.from_weights(weights)
    [(entry, maps)] = list(explainer.explain([("item", "page", str(source), [0, 3])]))
    assert set(maps) == {0, 3}
    for heat in maps.values():
        assert heat.shape == (2, 2) and 0 <= heat.min() and heat.max() <= 1
    written = report.write_explanations(str(tmp_path / "out"), [("item", "page", str(source), [0, 3])],
                                        explainer, weights, progress=False)
    assert written == 2
    labels = explainer.config.labels
    for label in (labels[0], labels[3]):
        with Image.open(report.cam_path(str(tmp_path / "out"), "item", "page", label)) as cam:
            assert cam.format == "JPEG" and cam.size == make_thumbnail(str(source)).size
    # Current overlays are kept on the next run.
    assert report.write_explanations(str(tmp_path / "out"), [("item", "page", str(source), [0, 3])],
                                     explainer, weights, progress=False) == 0
