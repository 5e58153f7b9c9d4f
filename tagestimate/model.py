"""The one model definition, its weight files and the `model.json` that travels with them.

The model takes (size, size, 3) pixels in 0-255, in the channel order its config names,
and rescales inside itself: every backbone in BACKBONES is built with its keras.applications
preprocessing layers (EfficientNet: Rescaling(1/255) and a Normalization layer), so
`images.load_image` stays the one preprocessing function. Trainer and inference both call
`build_model`.
"""

import dataclasses
import json
from collections.abc import Mapping
import numbers
import os
import types

import h5py
import numpy as np

from tagestimate.labels import NDL_LABELS
from tagestimate.images import CHANNEL_ORDERS
from tagestimate import quiet_tensorflow
from tagestimate.files import write_atomic
from tagestimate.errors import UserError


def _keras():
    # Imported on first use: reading configs and weight files needs no TensorFlow, and a
    # cached fast-backend model lets inference start without it.
    quiet_tensorflow()
    import keras

    return keras

BACKBONE = "EfficientNetB0"  # NDL's; model.json without a "backbone" means this one
CONFIG_NAME = "model.json"
CONFIG_VERSION = 1
DEFAULT_THRESHOLD = 0.4
PIXEL_RANGE = (0, 255)  # the model rescales inside itself
RESIZE = "bilinear"
LEGACY = "legacy-hdf5"  # NDL's Keras 2 save_weights layout, loaded by layer name
KERAS = "keras-weights"  # this project's Keras 3 .weights.h5, needs model.json beside it

HEAD_LAYERS = ("dense", "dense_1", "dense_2")


class WeightsError(UserError, ValueError):
    """A weight file or model config that cannot be used; the message says what to do."""


# ---------------------------------------------------------------- backbones

@dataclasses.dataclass(frozen=True)
class Backbone:
    """A keras.applications backbone: its --backbone name, its class name (model.json's
    "backbone"), its native image size, and what it does inside itself with 0-255 pixels."""

    flag: str
    keras_name: str
    native_size: int
    preprocessing: str
    options: tuple = ()  # extra keyword arguments of the keras.applications constructor

    def build(self, image_size, weights=None):
        keras = _keras()
        return getattr(keras.applications, self.keras_name)(
            include_top=False, weights=weights, input_shape=(image_size, image_size, 3), **dict(self.options))


_IMAGENET_STD = "x / 255, then (x - ImageNet mean) / ImageNet std"
BACKBONES = {backbone.flag: backbone for backbone in (
    # EfficientNet (v1) normalises with weights of its own (identity until ImageNet's are loaded).
    Backbone("efficientnetb0", "EfficientNetB0", 224, _IMAGENET_STD),
    Backbone("efficientnetb3", "EfficientNetB3", 300, _IMAGENET_STD),
    Backbone("efficientnetv2b0", "EfficientNetV2B0", 224, _IMAGENET_STD, (("include_preprocessing", True),)),
    Backbone("efficientnetv2s", "EfficientNetV2S", 384, "x / 128 - 1", (("include_preprocessing", True),)),
    Backbone("convnext_tiny", "ConvNeXtTiny", 224, "(x - 255 * ImageNet mean) / (255 * ImageNet std)",
             (("include_preprocessing", True),)),
)}
DEFAULT_BACKBONE = "efficientnetb0"


def backbone_spec(name):
    """The Backbone for a --backbone name or a model.json class name; WeightsError otherwise."""
    for backbone in BACKBONES.values():
        if name in (backbone.flag, backbone.keras_name):
            return backbone
    raise WeightsError(f"unknown backbone {name!r}; this project builds {', '.join(BACKBONES)}")


# ---------------------------------------------------------------- ModelConfig (model.json)

# model.json's keys in the order they are written; optional ones are left out when None.
_KEYS = ("version", "backbone", "labels", "image_size", "channel_order", "pixel_range", "resize",
         "dropout", "thresholds", "default_threshold", "labelmap", "training", "source")
_OPTIONAL = ("dropout", "labelmap", "training", "source")


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _invalid(source, field, expected):
    return WeightsError(f"{source} has no valid '{field}' ({expected})")


def _check(data, source):
    """Raise WeightsError naming `source` and the first bad field of a model.json object."""
    if not isinstance(data, dict):
        raise WeightsError(f"{source} does not hold a JSON object; it is not a model.json")
    labels = data.get("labels")
    if not isinstance(labels, (list, tuple)) or not labels:
        raise WeightsError(f"{source} has no 'labels' list")
    if not all(isinstance(label, str) and label for label in labels) or len(set(labels)) != len(labels):
        raise _invalid(source, "labels", "a list of distinct label names")
    if data.get("channel_order") not in CHANNEL_ORDERS:
        raise WeightsError(f"{source}: 'channel_order' must be RGB or BGR")
    if not _is_int(data.get("image_size")) or data["image_size"] < 32:
        raise WeightsError(f"{source}: 'image_size' must be an integer of at least 32")
    if list(data.get("pixel_range", PIXEL_RANGE)) != list(PIXEL_RANGE) or data.get("resize", RESIZE) != RESIZE:
        raise WeightsError(f"{source}: only pixel_range [0, 255] and resize 'bilinear' are supported "
                           "(the model rescales inside itself)")
    if data.get("backbone", BACKBONE) not in [b.keras_name for b in BACKBONES.values()]:
        raise _invalid(source, "backbone", f"one of {', '.join(b.keras_name for b in BACKBONES.values())}")
    if not _is_int(data.get("version", CONFIG_VERSION)):
        raise _invalid(source, "version", "a whole number")
    thresholds = data.get("thresholds")
    if thresholds is not None and (not isinstance(thresholds, Mapping) or set(thresholds) - set(labels)
                                   or not all(_is_number(v) for v in thresholds.values())):
        raise WeightsError(f"{source}: 'thresholds' must map the model's labels to numbers")
    if not _is_number(data.get("default_threshold", DEFAULT_THRESHOLD)):
        raise _invalid(source, "default_threshold", "a number")
    dropout = data.get("dropout")
    if dropout is not None and (not _is_number(dropout) or not 0 <= dropout < 1):
        raise _invalid(source, "dropout", "a number in [0, 1)")
    if not isinstance(data.get("labelmap", {}), (Mapping, type(None))):
        raise _invalid(source, "labelmap", "the label map the run trained with")
    if not isinstance(data.get("training", {}), (Mapping, type(None))):
        raise _invalid(source, "training", "an object describing how the model was trained")
    if not isinstance(data.get("source", ""), (str, type(None))):
        raise _invalid(source, "source", "a text saying where the weights come from")


def _frozen(mapping):
    return None if mapping is None else types.MappingProxyType(dict(mapping))


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """What a weight file means and how to feed it: the content of model.json.

    labels: output order. image_size: square input in pixels. channel_order: "RGB" or "BGR".
    pixel_range/resize: fixed (0, 255) and "bilinear" (the model rescales inside itself).
    dropout: the head's dropout, None where not recorded (NDL's file: none).
    thresholds: {label: threshold} tuned by the trainer, or None; default_threshold for the rest.
    labelmap: the label map (JSON form) a run trained with; training: how (free-form); both
    None for NDL's file. source: where the weights come from (NDL's file only).
    The constructor checks every field (WeightsError naming it); mappings become read-only.
    """

    labels: tuple
    image_size: int = 224
    channel_order: str = "RGB"
    pixel_range: tuple = PIXEL_RANGE
    resize: str = RESIZE
    backbone: str = BACKBONE
    dropout: float = None
    thresholds: types.MappingProxyType = None
    default_threshold: float = DEFAULT_THRESHOLD
    labelmap: types.MappingProxyType = None
    training: types.MappingProxyType = None
    source: str = None
    version: int = CONFIG_VERSION

    def __post_init__(self):
        _check({field.name: getattr(self, field.name) for field in dataclasses.fields(self)}, "model config")
        set_field = object.__setattr__  # frozen: normalise once, here
        set_field(self, "labels", tuple(self.labels))
        set_field(self, "pixel_range", tuple(self.pixel_range))
        for name in ("thresholds", "labelmap", "training"):
            set_field(self, name, _frozen(getattr(self, name)))

    @classmethod
    def from_dict(cls, data, source="model config"):
        """From model.json's object; WeightsError naming `source` and the bad field."""
        _check(data, source)
        return cls(**{key: data[key] for key in _KEYS if key in data})

    @classmethod
    def from_json(cls, text, source="model config"):
        """From model.json's text; WeightsError naming `source` for bad JSON or a bad field."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise WeightsError(f"cannot read {source}: {error}") from None
        return cls.from_dict(data, source)

    def to_dict(self):
        """model.json's object (JSON types; optional fields left out when None)."""
        values = {
            "version": self.version, "backbone": self.backbone, "labels": list(self.labels),
            "image_size": self.image_size, "channel_order": self.channel_order,
            "pixel_range": list(self.pixel_range), "resize": self.resize, "dropout": self.dropout,
            "thresholds": None if self.thresholds is None else dict(self.thresholds),
            "default_threshold": self.default_threshold,
            "labelmap": None if self.labelmap is None else _plain(self.labelmap),
            "training": None if self.training is None else _plain(self.training),
            "source": self.source,
        }
        return {key: value for key, value in values.items() if not (key in _OPTIONAL and value is None)}

    def to_json(self):
        """model.json's text, as write_config writes it."""
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False, sort_keys=True) + "\n"

    def cutoffs(self, override=None):
        """Per-label thresholds in label order: `override` for all, else the tuned ones, else the default."""
        if override is not None:
            return [float(override)] * len(self.labels)
        tuned = self.thresholds or {}
        return [float(tuned.get(label, self.default_threshold)) for label in self.labels]


def _plain(value):
    """Read-only mappings back to plain dicts, recursively (for JSON)."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def legacy_config(labels=NDL_LABELS):
    """NDL's published file: its 11 labels (NDL_LABELS), BGR, 224 px bilinear, /255 (in-model)."""
    return ModelConfig(labels=labels, image_size=224, channel_order="BGR",
                       source="NDL published weights (legacy HDF5 layout)")


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


def write_config(folder, config):
    """Write `folder`/model.json atomically from a ModelConfig."""
    return write_atomic(os.path.join(folder, CONFIG_NAME), config.to_json())


def read_config(folder):
    """The ModelConfig in `folder`/model.json; WeightsError naming the file and what is wrong."""
    path = os.path.join(folder, CONFIG_NAME)
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise WeightsError(f"{path} is missing; weights written by multitrain_efficientnet.py need "
                           "the model.json written beside them") from None
    except (OSError, UnicodeDecodeError) as error:
        raise WeightsError(f"cannot read {path}: {error}") from None
    return ModelConfig.from_json(text, source=path)


def describe_weights(path):
    """(ModelConfig, kind) for a weight file, from its structure and model.json; builds nothing."""
    kind = detect_weights_kind(path)
    if kind == KERAS:
        return read_config(os.path.dirname(os.path.abspath(path))), kind
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
    model = build_model(len(config.labels), config.image_size, config.dropout or 0.0, config.backbone)
    if kind == LEGACY:
        load_legacy_weights(model, path, require_all=True)
        return model, config, kind
    try:
        model.load_weights(path)
    except Exception as error:  # Keras raises ValueError/KeyError for mismatched files
        raise WeightsError(f"{path} does not fit the model described by its model.json "
                           f"({config.backbone}, {len(config.labels)} labels, {config.image_size} px): "
                           f"{error}") from None
    return model, config, kind


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
