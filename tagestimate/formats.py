"""What a tagging run produces: per-image records, thresholds, and the output formats' text.

A record holds the full probability vector of one image; thresholding happens here, when
a format turns an item's records into the text of its output file (inference.write_item
writes that text atomically). Adding a format is one entry in FORMATS.
"""

import collections
import csv
import dataclasses
import io
import json
import re


DIGITS = re.compile(r"(\d+)")  # runs of decimal digits (Nd) in any script; int() reads them all

# One tagged image: key (path in its item without extension), path (as found), size ((width,
# height) of the source as shown, after EXIF orientation), probabilities (one per label).
Record = collections.namedtuple("Record", "key path size probabilities")

# An output format: the file extension, render(item_name, records, config, context=None) -> the
# file's text, and the description --help gives.
OutputFormat = collections.namedtuple("OutputFormat", "extension render description")

SOFTWARE = "tagestimate"
SOFTWARE_VERSION = "1.0.0"


@dataclasses.dataclass(frozen=True)
class RunContext:
    """What a format may need beyond an item's records: where the images and weights came from,
    where the output will be published. Only the iiif format reads it (json and csv ignore it)."""

    input_dir: str = ""         # the folder the items were found in (its manifest.csv gives provenance)
    weights_name: str = ""      # the weight file's name
    weights_sha256: str = ""
    id_base: str = ""           # URL the output files will be published under ('' : the output folder's file: URL)
    target_base: str = ""       # URL the input folder's images are published under ('' : their file: URLs)
    software: str = SOFTWARE
    version: str = SOFTWARE_VERSION
    created: str = ""           # ISO 8601 time of the run, UTC


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
    """Per-label thresholds of a ModelConfig: `override` (--threshold) for all labels if given,
    else model.json's tuned ones, else its default_threshold (0.4, model.DEFAULT_THRESHOLD)."""
    return config.cutoffs(override)


def with_threshold(config, threshold):
    """`config` with one threshold for every label (--threshold), or `config` itself for None."""
    if threshold is None:
        return config
    return dataclasses.replace(config, thresholds=None, default_threshold=float(threshold))


def tags_above(probabilities, labels, thresholds):
    """[{"tag", "confidence"}] for outputs strictly above their threshold, in label order."""
    return [
        {"tag": label, "confidence": round(float(value), 3)}
        for label, value, threshold in zip(labels, probabilities, thresholds)
        if value > threshold
    ]


def tags_of(records, config):
    """{key: tags above the config's thresholds} for an item's records."""
    thresholds = config.cutoffs()
    return {record.key: tags_above(record.probabilities, config.labels, thresholds) for record in records}


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


def render_json(item_name, records, config, context=None):
    return item_json(tags_of(records, config))


def render_csv(item_name, records, config, context=None):
    return item_csv(tags_of(records, config))


def render_iiif(item_name, records, config, context=None):
    from tagestimate import annotations  # it imports this module

    return annotations.render_page(item_name, records, config, context or RunContext())


# --format name -> OutputFormat. A new format is a render function and one entry here.
FORMATS = {
    "json": OutputFormat("json", render_json, "NDL's format"),
    "csv": OutputFormat("csv", render_csv, "rows of image,tag,confidence"),
    "iiif": OutputFormat("iiif.json", render_iiif,
                         "a IIIF Presentation 3 AnnotationPage of W3C Web Annotations, one per tag (motivation "
                         "tagging), targeting the crop, canvas, page or file (see --id-base, --target-base)"),
}
