"""model.json: what a weight file means and how to feed it (ModelConfig), and the backbones it may name.

Reading a config needs neither TensorFlow nor HDF5. `tagestimate.model` (the network and its
weight files) re-exports these names: `from tagestimate.model import ModelConfig` keeps working.
"""

import dataclasses
import json
import numbers
import os
import types
from collections.abc import Mapping

from tagestimate import quiet_tensorflow
from tagestimate.embeddings import DEFAULT_LAYER
from tagestimate.errors import UserError
from tagestimate.files import write_atomic
from tagestimate.images import CHANNEL_ORDERS
from tagestimate.labels import NDL_LABELS

BACKBONE = "EfficientNetB0"  # NDL's; model.json without a "backbone" means this one
CONFIG_NAME = "model.json"
CONFIG_VERSION = 1
DEFAULT_THRESHOLD = 0.4
PIXEL_RANGE = (0, 255)  # the model rescales inside itself
RESIZE = "bilinear"


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
        quiet_tensorflow()  # the one quiet import; keras then finds TensorFlow loaded
        import keras

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
         "dropout", "thresholds", "default_threshold", "labelmap", "training", "source", "embedding_layer")
_OPTIONAL = ("dropout", "labelmap", "training", "source", "embedding_layer")


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
    layer = data.get("embedding_layer")
    if layer is not None and (not isinstance(layer, str) or not layer):
        raise _invalid(source, "embedding_layer", "the name of the layer whose output is an image's embedding")


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
    embedding_layer: the layer whose output is an image's embedding (None: `dense`, NDL's head
    Dense(512) before dense_1; read it through `embedding`).
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
    embedding_layer: str = None

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
            "source": self.source, "embedding_layer": self.embedding_layer,
        }
        return {key: value for key, value in values.items() if not (key in _OPTIONAL and value is None)}

    def to_json(self):
        """model.json's text, as write_config writes it."""
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False, sort_keys=True) + "\n"

    @property
    def embedding(self):
        """The name of the layer whose output is an image's embedding (model.json's, else `dense`)."""
        return self.embedding_layer or DEFAULT_LAYER

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


def config_path(weights_path):
    """model.json beside a weight file: where the trainer writes it and where inference reads it."""
    return os.path.join(os.path.dirname(os.path.abspath(weights_path)), CONFIG_NAME)


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

