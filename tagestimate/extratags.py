"""Extra tags: linear classifiers on the embeddings (learned from a few examples by `learn-tag`).

A tag file is JSON:
    {"format": "tagestimate-extra-tag", "version": 1, "name": "ukiyoe", "layer": "dense",
     "weights_sha256": "...", "coef": [dim floats], "intercept": float, "threshold": float,
     "positives": n, "negatives": n}
Its confidence for an image is sigmoid(coef . vector + intercept) on the L2-normalised float16
vector of embeddings.py; the image gets the tag when that is above `threshold`. A tag learned
from one model's vectors means nothing for another's: `check_model` refuses the mismatch.
"""

import dataclasses
import json
import re

import numpy as np

from tagestimate.errors import UserError
from tagestimate.files import write_atomic

FORMAT = "tagestimate-extra-tag"
FORMAT_VERSION = 1
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # safe as a tag, a file name and a CSV cell
MAX_BYTES = 1 << 20


class ExtraTagError(UserError, ValueError):
    """An extra-tag file that cannot be used; the message names it and says what to do."""


@dataclasses.dataclass(frozen=True)
class ExtraTag:
    name: str
    coef: np.ndarray  # (dim,) float64
    intercept: float
    threshold: float = 0.5
    layer: str = "dense"
    weights_sha256: str = ""
    positives: int = 0
    negatives: int = 0

    def confidences(self, vectors):
        """sigmoid(vectors @ coef + intercept), one per row of `vectors` (n, dim)."""
        logits = np.asarray(vectors, dtype=np.float64) @ self.coef + self.intercept
        return 1.0 / (1.0 + np.exp(-np.clip(logits, -60, 60)))

    def to_dict(self):
        return {"format": FORMAT, "version": FORMAT_VERSION, "name": self.name, "layer": self.layer,
                "weights_sha256": self.weights_sha256, "coef": [float(value) for value in self.coef],
                "intercept": float(self.intercept), "threshold": float(self.threshold),
                "positives": int(self.positives), "negatives": int(self.negatives)}

    def check_model(self, layer, weights_sha256, source="the extra tag"):
        """ExtraTagError unless the tag was learned from this model's `layer` vectors."""
        if self.layer != layer or (self.weights_sha256 and weights_sha256 and self.weights_sha256 != weights_sha256):
            raise ExtraTagError(
                f"{source} ({self.name}) was learned from the vectors of layer {self.layer!r} of weights "
                f"{self.weights_sha256[:12] or '?'}…, not layer {layer!r} of {weights_sha256[:12] or '?'}…; "
                "learn it again on this model's output with learn-tag")


def check_name(name):
    if not isinstance(name, str) or not NAME.match(name):
        raise ExtraTagError(f"tag name {name!r} is not usable; use 1-64 letters, digits, '_', '.' or '-', "
                            "starting with a letter or digit")
    return name


def save(path, tag):
    write_atomic(path, json.dumps(tag.to_dict(), indent=1, sort_keys=True) + "\n")
    return path


def load(path):
    """The ExtraTag in file `path`; ExtraTagError naming it if it is missing or not one."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except OSError as error:
        raise ExtraTagError(f"cannot read extra-tag file {path} ({error.strerror}); check the path") from None
    try:
        if len(data) > MAX_BYTES:
            raise ValueError(f"over {MAX_BYTES:,} bytes")
        return from_dict(json.loads(data))
    except (ValueError, TypeError, KeyError) as error:
        raise ExtraTagError(f"{path} is not an extra-tag file written by learn-tag ({error}); "
                            "write it again with learn-tag --save") from None


def from_dict(data):
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"no \"format\": \"{FORMAT}\"")
    if data.get("version") != FORMAT_VERSION:
        raise ValueError(f"version {data.get('version')!r}, expected {FORMAT_VERSION}")
    coef = np.asarray(data["coef"], dtype=np.float64)
    if coef.ndim != 1 or not len(coef) or not np.all(np.isfinite(coef)):
        raise ValueError("coef is not a list of finite numbers")
    numbers = [float(data["intercept"]), float(data.get("threshold", 0.5))]
    if not all(np.isfinite(numbers)):
        raise ValueError("intercept or threshold is not a finite number")
    return ExtraTag(check_name(data["name"]), coef, numbers[0], numbers[1], str(data.get("layer", "dense")),
                    str(data.get("weights_sha256", "")), int(data.get("positives", 0)), int(data.get("negatives", 0)))
