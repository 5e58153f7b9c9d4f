"""Turning model outputs into NDL's JSON (or CSV) and writing files atomically."""

import csv
import io
import json
import re


DIGITS = re.compile(r"(\d+)")  # runs of decimal digits (Nd) in any script; int() reads them all


def natural_key(text):
    """Sort key that puts page 2 before page 10 ("1054192_2_0" < "1054192_10_0"), for any name.

    Splitting on digit runs alternates text and number, so two keys compare text with text
    and number with number, never one with the other. Characters that are digit-like but not
    decimal (①, ², Ⅻ) stay text. The name itself breaks ties ("p01" and "p1"), so the
    order is total and never depends on the listing order.
    """
    parts = DIGITS.split(text)
    parts[1::2] = [int(run) for run in parts[1::2]]
    return parts, text


def thresholds_for(config, override=None):
    """Per-label thresholds: --threshold for all labels if given, else model.json's, else 0.4."""
    labels = config["labels"]
    if override is not None:
        return [float(override)] * len(labels)
    tuned = config.get("thresholds") or {}
    default = float(config.get("default_threshold", 0.4))
    return [float(tuned.get(label, default)) for label in labels]


def tags_above(probabilities, labels, thresholds):
    """[{"tag", "confidence"}] for outputs strictly above their threshold, in label order."""
    return [
        {"tag": label, "confidence": round(float(value), 3)}
        for label, value, threshold in zip(labels, probabilities, thresholds)
        if value > threshold
    ]


def item_json(tags_by_key):
    """NDL's format, one image per line: {"key": [{"tag": ..., "confidence": ...}], ...}."""
    if not tags_by_key:
        return "{}\n"
    lines = [
        f"{json.dumps(key, ensure_ascii=False)}: {json.dumps(tags_by_key[key], ensure_ascii=False)}"
        for key in sorted(tags_by_key, key=natural_key)
    ]
    return "{\n" + ",\n".join(lines) + "\n}\n"


def item_csv(tags_by_key):
    """Long CSV: one row per (image, tag); an image with no tag gets one row with an empty tag."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["image", "tag", "confidence"])
    for key in sorted(tags_by_key, key=natural_key):
        tags = tags_by_key[key] or [{"tag": "", "confidence": ""}]
        for tag in tags:
            writer.writerow([key, tag["tag"], tag["confidence"]])
    return buffer.getvalue()


FORMATS = {"json": item_json, "csv": item_csv}
