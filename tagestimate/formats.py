"""The output formats: each one entry of FORMATS that names, writes and reads back an item's file.

A format turns an item's records (full probabilities, tagestimate.records) into the text of
`{item}.{extension}` (inference.write_item writes it atomically; a rerun skips an item whose
file exists) and parses that text back into tags (how the review report reads an output
folder). Adding a format is one entry in FORMATS.
"""

import collections
import csv
import dataclasses
import io
import json
from typing import Callable, Optional
from tagestimate.files import CsvWriter

# Re-exported: the formats' callers and tests have always found these here.
from tagestimate.records import (  # noqa: F401
    SOFTWARE, SOFTWARE_VERSION, ExtraScore, Record, RunContext, has_extra, natural_key, tags_above, tags_of,
    thresholds_for, with_threshold)


@dataclasses.dataclass(frozen=True)
class OutputFormat:
    """One --format: how it names an item's file, writes it, and reads it back."""

    extension: str  # after the item's name and a dot: "iiif.json" names "{item}.iiif.json"
    render: Callable  # render(item_name, records, config, context=None) -> the file's text
    description: str  # what --help says
    parse: Optional[Callable] = None  # parse(text) -> {key: [(tag, confidence)]}, ValueError if malformed;
    #                                   None: a write-only format, which the report does not show
    lists_untagged: bool = True  # False: images without a tag are not in the file (the reader adds them)
    companions: Optional[Callable] = None  # companions(item_name, records, config, context, text) -> [(file
    #                                        name, text)]: more files of the item, written before its own file;
    #                                        text None: the file is removed (an older run's would not match)

    def file_name(self, item_name):
        return f"{item_name}.{self.extension}"

    def item_name(self, file_name):
        """The item whose file `file_name` would be, or None."""
        suffix = "." + self.extension
        if file_name.endswith(suffix) and len(file_name) > len(suffix):
            return file_name[:-len(suffix)]
        return None


def item_json(tags_by_key):
    """NDL's format, one image per line: {"key": [{"tag": ..., "confidence": ...}], ...}; an extra tag
    (--extra-tags) is an entry {"tag": ..., "confidence": ..., "extra": true} after the model's."""
    if not tags_by_key:
        return "{}\n"
    lines = [
        f"{json.dumps(key, ensure_ascii=False)}: {json.dumps(tags_by_key[key], ensure_ascii=False)}"
        for key in sorted(tags_by_key, key=natural_key)
    ]
    return "{\n" + ",\n".join(lines) + "\n}\n"


def item_csv(tags_by_key, extra_column=False):
    """Long CSV: one row per (image, tag); an image with no tag gets one row with an empty tag.
    extra_column (a run with --extra-tags): a fourth column `extra`, 1 on the extra tags' rows."""
    buffer = io.StringIO()
    writer = CsvWriter(buffer)
    writer.writerow(["image", "tag", "confidence"] + (["extra"] if extra_column else []))
    for key in sorted(tags_by_key, key=natural_key):
        tags = tags_by_key[key] or [{"tag": "", "confidence": ""}]
        for tag in tags:
            row = [key, tag["tag"], tag["confidence"]]
            writer.writerow(row + ([1 if tag.get("extra") else ""] if extra_column else []))
    return buffer.getvalue()


def render_json(item_name, records, config, context=None):
    return item_json(tags_of(records, config))


def render_csv(item_name, records, config, context=None):
    return item_csv(tags_of(records, config), extra_column=has_extra(records))


def render_iiif(item_name, records, config, context=None):
    from tagestimate import annotations  # lazy: only --format iiif loads iiif-prezi3

    return annotations.render_page(item_name, records, config, context or RunContext())


def parse_json(text):
    """{key: [(tag, confidence)]} of NDL's JSON."""
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    tags = {}
    for key, values in data.items():
        if not isinstance(values, list):
            raise ValueError(f"the value of {key!r} is not a list")
        tags[key] = [(str(value["tag"]), float(value["confidence"])) for value in values]
    return tags


def parse_csv(text):
    """{key: [(tag, confidence)]} of the long CSV; a row with an empty tag is an untagged image."""
    tags = collections.defaultdict(list)
    for row in csv.DictReader(io.StringIO(text, newline="")):
        key = row.get("image")
        if key is None:
            raise ValueError("no 'image' column")
        tags[key]
        if row.get("tag"):
            tags[key].append((row["tag"], float(row["confidence"])))
    return dict(tags)


def render_catalogue(item_name, records, config, context=None):
    from tagestimate import catalogue

    return catalogue.render(item_name, records, config, context)


def parse_catalogue(text):
    from tagestimate import catalogue

    return catalogue.parse(text)


def iiif_companions(item_name, records, config, context, text):
    from tagestimate import annotations  # lazy, as in render_iiif

    return annotations.companions(item_name, records, config, context or RunContext(), text)


def parse_iiif(text):
    from tagestimate import annotations  # lazy, as in render_iiif

    return annotations.page_tags(json.loads(text))


# Companion files' endings: never an item's output, though "a.manifest.json" looks like item "a.manifest" of json.
COMPANION_SUFFIXES = (".manifest.json",)

# --format name -> OutputFormat, in the order a reader prefers them when an item has several files.
FORMATS = {
    "json": OutputFormat("json", render_json, "NDL's format", parse_json),
    "csv": OutputFormat("csv", render_csv, "rows of image,tag,confidence", parse_csv),
    "iiif": OutputFormat("iiif.json", render_iiif,
                         "a IIIF Presentation 3 AnnotationPage of W3C Web Annotations, one per tag (motivation "
                         "tagging), targeting the crop, canvas, page or file (see --id-base, --target-base)",
                         parse_iiif, lists_untagged=False, companions=iiif_companions),
    "catalogue": OutputFormat("catalogue.csv", render_catalogue,
                              "a cataloguer's CSV, one row per image and tag: title, page, the tag in English and "
                              "Japanese, confidence, IIIF image URL of the crop, canvas and manifest",
                              parse_catalogue),
}


def match_file(file_name):
    """(item name, format name) of a file a readable format wrote, or None.

    The longest extension wins: "a.iiif.json" is item "a" of iiif, not item "a.iiif" of json.
    """
    if file_name.endswith(COMPANION_SUFFIXES):
        return None
    found = [(len(output.extension), output.item_name(file_name), name)
             for name, output in FORMATS.items() if output.parse is not None and output.item_name(file_name)]
    if not found:
        return None
    _, item_name, name = max(found, key=lambda entry: entry[0])  # a tie: the first in FORMATS
    return item_name, name
