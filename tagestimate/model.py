"""The one model definition and its weight files; what they mean (model.json) is in `modelconfig`.

The model takes (size, size, 3) pixels in 0-255, in the channel order its config names,
and rescales inside itself: every backbone in BACKBONES is built with its keras.applications
preprocessing layers (EfficientNet: Rescaling(1/255) and a Normalization layer), so
`images.load_image` stays the one preprocessing function. Trainer and inference both call
`build_model`.
"""

import os
import re
import warnings

import h5py
import numpy as np

from tagestimate import quiet_tensorflow
from tagestimate.files import plural
from tagestimate.labels import NDL_LABELS
# Re-exported: model.json's names have always been importable from here.
from tagestimate.modelconfig import (BACKBONE, BACKBONES, CONFIG_NAME, CONFIG_VERSION, DEFAULT_BACKBONE,  # noqa: F401
                                     DEFAULT_LAYER, DEFAULT_THRESHOLD, PIXEL_RANGE, RESIZE, Backbone, ModelConfig, WeightsError,
                                     backbone_spec, config_path, legacy_config, read_config, write_config)

LEGACY = "legacy-hdf5"  # NDL's Keras 2 save_weights layout, loaded by layer name
KERAS = "keras-weights"  # this project's Keras 3 .weights.h5, needs model.json beside it

HEAD_LAYERS = ("dense", "dense_1", "dense_2")


def _keras():
    # Imported on first use: reading configs and weight files needs no TensorFlow, and a
    # cached fast-backend model lets inference start without it.
    quiet_tensorflow()
    import keras

    return keras


def build_model(num_labels, image_size=224, dropout=0.0, backbone=BACKBONE):
    """Backbone (no top; EfficientNetB0 by default) -> GAP -> Dense(512) -> Dense(512, relu)
    -> Dense(n, sigmoid): NDL's head on any of BACKBONES (a flag or class name).

    Always built with weights=None so that the graph is identical whatever the weights'
    origin; ImageNet or saved weights are loaded afterwards. Layer names match NDL's file.
    """
    keras = _keras()
    spec = backbone_spec(backbone)
    backbone = spec.build(image_size)
    x = keras.layers.GlobalAveragePooling2D(name="global_average_pooling2d")(backbone.output)
    if dropout:
        x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    x = keras.layers.Dense(512, name="dense")(x)
    x = keras.layers.Dense(512, activation="relu", name="dense_1")(x)
    # float32 output keeps sigmoid and loss stable under mixed precision.
    outputs = keras.layers.Dense(num_labels, activation="sigmoid", dtype="float32", name="dense_2")(x)
    return keras.Model(backbone.input, outputs, name=f"tagestimate_{spec.flag}")


def embedding_model(model, config, path=None):
    """`model` with two outputs: its probabilities and the output of config's embedding layer
    (model.json's `embedding_layer`, default `dense`); WeightsError naming model.json otherwise."""
    keras = _keras()
    layer = config.embedding
    try:
        vectors = model.get_layer(layer).output
    except ValueError:
        where = config_path(path) if path and config.embedding_layer else "model.json"
        raise WeightsError(f"{where} names embedding_layer {layer!r}, which the model has no layer of; "
                           f"name one of its layers there, e.g. {DEFAULT_LAYER!r} (NDL's head)") from None
    if len(vectors.shape) != 2:
        raise WeightsError(f"model.json's embedding_layer {layer!r} gives outputs of shape {tuple(vectors.shape)}, "
                           f"not one vector per image; name a layer after the pooling, e.g. {DEFAULT_LAYER!r}")
    return keras.Model(model.input, [model.output, vectors], name=model.name + "_embedding")


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
        raise WeightsError(f"{path} lacks {len(missing)} {plural(len(missing), 'layer')} of the tag model "
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
    """keras.applications' input Normalization layer (its name varies: normalization_N), or
    None for a backbone without one (EfficientNetV2S rescales only)."""
    return next((layer for layer in model.layers if type(layer).__name__ == "Normalization"), None)


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


def load_imagenet_weights(model, image_size, backbone=BACKBONE):
    """Copy Keras' ImageNet weights of `backbone` (no top) into the backbone of `model`.

    Downloads once into the Keras cache (~/.keras/models). Offline: WeightsError.
    """
    spec = backbone_spec(backbone)
    try:
        reference = spec.build(image_size, weights="imagenet")
    except Exception as error:  # urllib/HTTP/OS errors all mean "could not get the file"
        raise WeightsError(
            f"could not download the ImageNet {spec.keras_name} weights (offline?); "
            "use --weights none to train from scratch or --weights PATH with a local weight file "
            f"({type(error).__name__})"
        ) from None
    target = input_normalization(model)
    ours = [layer for layer in backbone_layers(model) if layer.weights and layer is not target]
    theirs = [layer for layer in reference.layers if layer.weights and layer is not input_normalization(reference)]
    # Same architecture, same order; names of unnamed layers differ between builds.
    for layer, source in zip(ours, theirs, strict=True):
        layer.set_weights(source.get_weights())
    if spec.keras_name.startswith("EfficientNetB"):  # the v1 variance quirk (see below)
        _set_imagenet_normalization(target, input_normalization(reference).get_weights())


def describe_weights(path):
    """(ModelConfig, kind) for a weight file, from its structure and model.json; builds nothing."""
    kind = detect_weights_kind(path)
    if kind == KERAS:
        return read_config(os.path.dirname(config_path(path))), kind
    count = legacy_output_count(path)
    if count is None:
        raise WeightsError(f"{path} has no 'dense_2' output layer; it is not a tag model file "
                           "(a backbone-only file can start training, not tag images)")
    if count != len(NDL_LABELS):
        raise WeightsError(f"{path} has {count} outputs, NDL's tag model has {len(NDL_LABELS)}; "
                           "for a model trained here, use its best.weights.h5 with model.json")
    return legacy_config(), kind


def open_model(path):
    """Build the model for a weight file and load it; returns (model, ModelConfig, kind)."""
    config, kind = describe_weights(path)
    return load_model(path, config, kind), config, kind


def load_model(path, config, kind):
    """The model of an already described weight file (describe_weights' config and kind), loaded."""
    model = build_model(len(config.labels), config.image_size, config.dropout or 0.0, config.backbone)
    if kind == LEGACY:
        load_legacy_weights(model, path, require_all=True)
        return model
    try:
        with warnings.catch_warnings():  # Keras warns once per layer it skips: the error below says it all
            warnings.simplefilter("ignore")
            model.load_weights(path)
    except Exception as error:  # Keras raises ValueError/KeyError for mismatched files
        raise WeightsError(f"{path} does not fit the model described by its model.json "
                           f"({config.backbone}, {len(config.labels)} labels, {config.image_size} px): "
                           f"{_load_failure(error)}; use the model.json written with these weights") from None
    return model


def _load_failure(error):
    """Keras' load error in a few words (its message lists every variable and layer it could not load)."""
    text = str(error)
    shapes = re.search(r"variable\.shape=(\([^)]*\)), Received: value\.shape=(\([^)]*\))", text)
    where = re.search(r"Target variable: <Variable path=([^,\s]+)", text)
    count = re.search(r"A total of (\d+) objects could not be loaded", text)
    example = f"{where.group(1) if where else 'a variable'} holds {shapes.group(2)}, the model needs " \
              f"{shapes.group(1)}" if shapes else ""
    if count and int(count.group(1)) > 1:
        return f"{count.group(1)} layers could not be loaded" + (f", e.g. {example}" if example else "")
    if example:
        return example
    return (text.strip().splitlines() or [type(error).__name__])[0][:200]


# ---------------------------------------------------------------- saving and copying weights
# (moved here from tagestimate/train/training.py by the trainer split, issue 9)

def save_weights_atomic(model, path, optimizer=False):
    """Save the model's weights (and, with optimizer=True, Adam's step count and moments) to a
    hidden temporary name beside `path`, then rename: a run killed mid-save leaves the previous
    file whole. (Keras wants names ending in .weights.h5.)"""
    _keras()
    from keras.src.saving import saving_lib  # weights without the optimizer

    folder, name = os.path.split(path)
    temporary = os.path.join(folder, "." + name.replace(".weights.h5", "") + ".tmp.weights.h5")
    try:
        if optimizer or getattr(model, "optimizer", None) is None:
            model.save_weights(temporary)
        else:
            # Keras' save_weights includes the compiled optimizer (twice the weights' size for
            # Adam); the deliverable holds the weights alone.
            saving_lib.save_weights_only(model, temporary, objects_to_skip=[model.optimizer])
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def copy_weights(source, target, include_head=True):
    """Copy a tag model's weights into another built by build_model, layer by layer (same
    names); include_head=False leaves the target's head (HEAD_LAYERS) as it is."""
    # Same architecture, same layer order; unnamed layers (normalization_N) are named per build.
    if len(source.layers) != len(target.layers):
        raise WeightsError(f"cannot copy weights from {source.name} into {target.name}: other backbones")
    for layer, origin in zip(target.layers, source.layers):
        if layer.weights and (include_head or layer.name not in HEAD_LAYERS):
            layer.set_weights(origin.get_weights())
