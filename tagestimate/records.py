"""What a tagging run produces per image, and the tags a threshold keeps: shared by every output format.

A record holds the full probability vector of one image; thresholding happens when a format
turns an item's records into its output file (tags_of), so every format keeps the same tags.
"""

import collections
import dataclasses
import re
import uuid

DIGITS = re.compile(r"(\d+)")  # runs of decimal digits (Nd) in any script; int() reads them all

# One tagged image: key (path in its item without extension), path (as found), size ((width,
# height) of the source as shown, after EXIF orientation), probabilities (one per label),
# embedding (the raw float32 vector of the model's embedding layer, None when the run made none),
# extra (ExtraScore per --extra-tags file, in the files' order; () without them).
Record = collections.namedtuple("Record", "key path size probabilities embedding extra", defaults=(None, ()))

# One extra tag's (extratags.py) confidence for an image, and the threshold it is kept above.
ExtraScore = collections.namedtuple("ExtraScore", "tag confidence threshold")

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
    fetch_manifests: bool = False  # fetch an item's source manifest when the crawl saved none (viewer.py)
    # Which run this is, for what a run remembers in a long-lived process (viewer.py: hosts that never
    # answered); copies sent to Ray workers keep it. Not part of equality: it names, it does not describe.
    run_id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex, compare=False)


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
    """{key: tags above the config's thresholds} for an item's records, then the record's extra tags
    above their own thresholds, marked {"tag", "confidence", "extra": True} (none without --extra-tags)."""
    thresholds = config.cutoffs()
    return {record.key: tags_above(record.probabilities, config.labels, thresholds) + extra_tags_above(record.extra)
            for record in records}


def extra_tags_above(scores):
    """[{"tag", "confidence", "extra": True}] of the ExtraScores strictly above their threshold, in order."""
    return [{"tag": score.tag, "confidence": round(float(score.confidence), 3), "extra": True}
            for score in scores if score.confidence > score.threshold]


def has_extra(records):
    """Whether the run computed extra tags for these records (then the csv has its `extra` column)."""
    return any(record.extra for record in records)
