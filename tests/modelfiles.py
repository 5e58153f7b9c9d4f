"""Small weight files for tests: this project's layout with model.json, and NDL's legacy layout."""

import os

import h5py
import numpy as np

from tagestimate.labels import LABELS
from tagestimate.model import ModelConfig, build_model, write_config


def trained_config(labels=LABELS, image_size=64, thresholds=None):
    """The ModelConfig of a model trained here (RGB, no dropout, thresholds or the default 0.4)."""
    return ModelConfig(labels=labels, image_size=image_size, channel_order="RGB", dropout=0.0,
                       thresholds=thresholds, default_threshold=0.4)


def set_head_bias(model, logits):
    """Make the model output sigmoid(logits) whatever the image: zero last kernel, set bias."""
    kernel, _ = model.get_layer("dense_2").get_weights()
    model.get_layer("dense_2").set_weights([np.zeros_like(kernel), np.asarray(logits, np.float32)])


def write_trained_weights(folder, logits=None, image_size=64, thresholds=None, seed=0):
    """best.weights.h5 + model.json in `folder`; constant outputs when logits are given."""
    import keras

    keras.utils.set_random_seed(seed)
    os.makedirs(folder, exist_ok=True)
    model = build_model(len(LABELS), image_size)
    if logits is not None:
        set_head_bias(model, logits)
    path = os.path.join(folder, "best.weights.h5")
    model.save_weights(path)
    write_config(folder, trained_config(image_size=image_size, thresholds=thresholds))
    return path, model


def write_legacy_weights(path, model, skip=("normalization",)):
    """Write `model` in Keras 2's save_weights HDF5 layout, as NDL's file is (':0' names)."""
    names = [layer.name for layer in model.layers]
    with h5py.File(path, "w") as handle:
        handle.attrs["layer_names"] = np.array([n.encode() for n in names if n not in skip])
        handle.attrs["backend"] = b"tensorflow"
        handle.attrs["keras_version"] = b"2.6.0"
        for layer in model.layers:
            if layer.name in skip:
                continue
            group = handle.create_group(layer.name)
            weight_names = []
            for variable, value in zip(layer.weights, layer.get_weights()):
                name = f"{layer.name}/{variable.name}:0"
                weight_names.append(name.encode())
                group.create_dataset(name, data=value)
            group.attrs["weight_names"] = np.array(weight_names)
    return path
