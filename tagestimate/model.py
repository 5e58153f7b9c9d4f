"""The one model definition, its weight files and the `model.json` that travels with them.

The model takes (size, size, 3) pixels in 0-255, in the channel order its config names,
and rescales inside itself (keras.applications' EfficientNet starts with Rescaling(1/255)
and a Normalization layer). Trainer and inference both call `build_model`.
"""

import json
import os

import h5py
import numpy as np

from labelmap import LABELS
from tagestimate.images import CHANNEL_ORDERS
from tagestimate import quiet_tensorflow
from tagestimate.files import write_json
from tagestimate.errors import UserError


def _keras():
    # Imported on first use: reading configs and weight files needs no TensorFlow, and a
    # cached fast-backend model lets inference start without it.
    quiet_tensorflow()
    import keras

    return keras

BACKBONE = "EfficientNetB0"
CONFIG_NAME = "model.json"
CONFIG_VERSION = 1
DEFAULT_THRESHOLD = 0.4
LEGACY = "legacy-hdf5"  # NDL's Keras 2 save_weights layout, loaded by layer name
KERAS = "keras-weights"  # this project's Keras 3 .weights.h5, needs model.json beside it

HEAD_LAYERS = ("dense", "dense_1", "dense_2")


class WeightsError(UserError, ValueError):
    """A weight file or model config that cannot be used; the message says what to do."""


def legacy_config(labels=LABELS):
    """Conventions of NDL's published file: BGR, 224 px bilinear, /255 (done in-model)."""
    return {
        "version": CONFIG_VERSION,
        "backbone": BACKBONE,
        "labels": list(labels),
        "image_size": 224,
        "channel_order": "BGR",
        "pixel_range": [0, 255],
        "resize": "bilinear",
        "thresholds": None,
        "default_threshold": DEFAULT_THRESHOLD,
        "source": "NDL published weights (legacy HDF5 layout)",
    }


def build_model(num_labels, image_size=224, dropout=0.0):
    """EfficientNetB0 (no top) -> GAP -> Dense(512) -> Dense(512, relu) -> Dense(n, sigmoid).

    Always built with weights=None so that the graph is identical whatever the weights'
    origin; ImageNet or saved weights are loaded afterwards. Layer names match NDL's file.
    """
    keras = _keras()
    backbone = keras.applications.EfficientNetB0(
        include_top=False, weights=None, input_shape=(image_size, image_size, 3)
    )
    x = keras.layers.GlobalAveragePooling2D(name="global_average_pooling2d")(backbone.output)
    if dropout:
        x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    x = keras.layers.Dense(512, name="dense")(x)
    x = keras.layers.Dense(512, activation="relu", name="dense_1")(x)
    # float32 output keeps sigmoid and loss stable under mixed precision.
    outputs = keras.layers.Dense(num_labels, activation="sigmoid", dtype="float32", name="dense_2")(x)
    return keras.Model(backbone.input, outputs, name="tagestimate_efficientnetb0")


def backbone_layers(model):
    """The model's layers that belong to EfficientNetB0 (everything before the head)."""
    head = {"global_average_pooling2d", "head_dropout", *HEAD_LAYERS}
    return [layer for layer in model.layers if layer.name not in head]


def detect_weights_kind(path):
    """LEGACY or KERAS, read from the file's structure (never its name)."""
    if not os.path.isfile(path):
        raise WeightsError(f"weight file {path} does not exist")
    try:
        with h5py.File(path, "r") as handle:
            # Keras 2 save_weights puts layer_names at the root; Keras 2 model.save under model_weights.
            full_model = "model_weights" in handle and "layer_names" in handle["model_weights"].attrs
            if "layer_names" in handle.attrs or full_model:
                return LEGACY
            if "layers" in handle or "vars" in handle:
                return KERAS
    except OSError:
        raise WeightsError(f"{path} is not an HDF5 weight file; pass NDL's weights_ndllabelimage.hdf5 "
                           "or a best.weights.h5 written by multitrain_efficientnet.py") from None
    raise WeightsError(f"{path} is HDF5 but holds no Keras weights (neither NDL's legacy layout "
                       "nor a Keras 3 .weights.h5)")


def _decode(name):
    return name.decode("utf8") if isinstance(name, bytes) else str(name)


def read_legacy_weights(path):
    """{layer name: [arrays in saved order]} from a Keras 2 legacy HDF5 weight file."""
    with h5py.File(path, "r") as handle:
        group_root = handle["model_weights"] if "model_weights" in handle else handle
        result = {}
        for layer_name in (_decode(n) for n in group_root.attrs["layer_names"]):
            group = group_root[layer_name]
            names = [_decode(n) for n in group.attrs.get("weight_names", [])]
            if names:
                result[layer_name] = [np.asarray(group[n]) for n in names]
        return result


def load_legacy_weights(model, path, require_all=True, include_head=True):
    """Load a legacy HDF5 file into `model` by layer name; returns the names loaded.

    With require_all, every weighted layer of the model (but the input normalisation)
    must be in the file with the same shapes: a partial load would tag silently wrong.
    include_head=False loads the backbone only (e.g. NDL's file into a model with other labels).
    """
    stored = read_legacy_weights(path)
    normalization = input_normalization(model)
    loaded, missing = [], []
    for layer in model.layers:
        if layer is normalization or not layer.weights or (not include_head and layer.name in HEAD_LAYERS):
            continue
        if layer.name not in stored:
            missing.append(layer.name)
            continue
        arrays = stored[layer.name]
        expected = [tuple(w.shape) for w in layer.weights]
        if [a.shape for a in arrays] != expected:
            raise WeightsError(
                f"{path}: layer {layer.name!r} holds shapes {[a.shape for a in arrays]}, the model "
                f"needs {expected}; the file is for another architecture or number of labels"
            )
        layer.set_weights(arrays)
        loaded.append(layer.name)
    if require_all and missing:
        raise WeightsError(f"{path} lacks {len(missing)} layer(s) of the tag model "
                           f"(e.g. {', '.join(missing[:3])}); it is not an EfficientNetB0 tag model file")
    if not loaded:
        raise WeightsError(f"{path} has no layer in common with EfficientNetB0; wrong file")
    # NDL's old backbone had no input normalisation (identity when built with weights=None);
    # Keras' ImageNet notop files have one, saved under its auto-generated name.
    if "normalization" in stored:
        _set_imagenet_normalization(normalization, stored["normalization"])
        loaded.append(normalization.name)
    return loaded


def input_normalization(model):
    """keras.applications' Normalization layer (its name varies: normalization_N)."""
    return next(layer for layer in model.layers if type(layer).__name__ == "Normalization")


def _set_imagenet_normalization(layer, values):
    # Keras' ImageNet EfficientNet files store the std as the Normalization "variance";
    # keras.applications compensates with an extra Rescaling layer that a weights=None
    # build lacks. Squaring the variance here gives the same (x - mean) / std.
    mean, variance, count = values
    layer.set_weights([mean, np.square(variance), count])


def legacy_output_count(path):
    """Number of outputs of a legacy file's last Dense layer (dense_2), or None.

    Reads only that layer's shapes: describe_weights runs before every load.
    """
    with h5py.File(path, "r") as handle:
        group_root = handle["model_weights"] if "model_weights" in handle else handle
        if "dense_2" not in group_root:
            return None
        group = group_root["dense_2"]
        names = [_decode(n) for n in group.attrs.get("weight_names", [])]
        return int(group[names[-1]].shape[0]) if names else None


def load_imagenet_weights(model, image_size):
    """Copy Keras' ImageNet EfficientNetB0 (no top) weights into the backbone of `model`.

    Downloads once into the Keras cache (~/.keras/models). Offline: WeightsError.
    """
    keras = _keras()
    try:
        reference = keras.applications.EfficientNetB0(
            include_top=False, weights="imagenet", input_shape=(image_size, image_size, 3)
        )
    except Exception as error:  # urllib/HTTP/OS errors all mean "could not get the file"
        raise WeightsError(
            "could not download the ImageNet EfficientNetB0 weights (offline?); "
            "use --weights none to train from scratch or --weights PATH with a local weight file "
            f"({type(error).__name__})"
        ) from None
    target = input_normalization(model)
    for layer in backbone_layers(model):
        if layer.weights and layer is not target:
            layer.set_weights(reference.get_layer(layer.name).get_weights())
    _set_imagenet_normalization(target, input_normalization(reference).get_weights())


def write_config(folder, config):
    """Write model.json atomically."""
    return write_json(os.path.join(folder, CONFIG_NAME), config)


def read_config(folder):
    """Read and check a model.json; WeightsError naming what is wrong."""
    path = os.path.join(folder, CONFIG_NAME)
    try:
        with open(path, encoding="utf-8") as handle:
            config = json.load(handle)
    except FileNotFoundError:
        raise WeightsError(f"{path} is missing; weights written by multitrain_efficientnet.py need "
                           "the model.json written beside them") from None
    except (OSError, json.JSONDecodeError) as error:
        raise WeightsError(f"cannot read {path}: {error}") from None
    labels = config.get("labels")
    if not isinstance(labels, list) or not labels:
        raise WeightsError(f"{path} has no 'labels' list")
    if config.get("channel_order") not in CHANNEL_ORDERS:
        raise WeightsError(f"{path}: 'channel_order' must be RGB or BGR")
    if not isinstance(config.get("image_size"), int) or config["image_size"] < 32:
        raise WeightsError(f"{path}: 'image_size' must be an integer of at least 32")
    if config.get("pixel_range", [0, 255]) != [0, 255] or config.get("resize", "bilinear") != "bilinear":
        raise WeightsError(f"{path}: only pixel_range [0, 255] and resize 'bilinear' are supported "
                           "(the model rescales inside itself)")
    thresholds = config.get("thresholds")
    if thresholds is not None and (not isinstance(thresholds, dict) or set(thresholds) - set(labels)):
        raise WeightsError(f"{path}: 'thresholds' must map the model's labels to numbers")
    config.setdefault("default_threshold", DEFAULT_THRESHOLD)
    return config


def describe_weights(path):
    """(config, kind) for a weight file, from its structure and model.json; builds nothing."""
    kind = detect_weights_kind(path)
    if kind == KERAS:
        return read_config(os.path.dirname(os.path.abspath(path))), kind
    count = legacy_output_count(path)
    if count is None:
        raise WeightsError(f"{path} has no 'dense_2' output layer; it is not a tag model file "
                           "(a backbone-only file can start training, not tag images)")
    if count != len(LABELS):
        raise WeightsError(f"{path} has {count} outputs, NDL's tag model has {len(LABELS)}; "
                           "for a model trained here, use its best.weights.h5 with model.json")
    return legacy_config(), kind


def open_model(path):
    """Build the model for a weight file and load it; returns (model, config, kind)."""
    config, kind = describe_weights(path)
    model = build_model(len(config["labels"]), config["image_size"], config.get("dropout", 0.0))
    if kind == LEGACY:
        load_legacy_weights(model, path, require_all=True)
        return model, config, kind
    try:
        model.load_weights(path)
    except Exception as error:  # Keras raises ValueError/KeyError for mismatched files
        raise WeightsError(f"{path} does not fit the model described by its model.json "
                           f"({len(config['labels'])} labels, {config['image_size']} px): {error}") from None
    return model, config, kind
