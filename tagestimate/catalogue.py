"""`--format catalogue`: one CSV row per image and tag, for a cataloguer's spreadsheet or database.

Columns (CATALOGUE_FIELDS): the item and image, the book's title and page, the tag with its
English and Japanese names (labels.NAMES), its confidence, and where to see it: the IIIF image
URL of the crop (its region when the crawl recorded a box, else the whole page, which `region`
then says: "full"), the canvas and the manifest. They come from the same sources as the iiif
format's targets (sources.py): the crawl's manifest.csv, else an NDL-named file's page. An image
with no tag gets one row with an empty tag, so that every image is listed.
"""

import collections
import csv
import io
import os
import urllib.parse

from tagestimate import ndl, sources, storage
from tagestimate.files import csv_dict_writer
from tagestimate.labels import LANGUAGES, config_names, tag_names
from tagestimate.records import RunContext, natural_key, tags_of

CATALOGUE_FIELDS = ("item", "image", "title", "page", "tag", *(f"name_{language}" for language in LANGUAGES),
                    "confidence", "region", "iiif_image", "canvas", "manifest", "file")


def render(item_name, records, config, context=None):
    """The catalogue CSV of one item's records, thresholded by `config`."""
    context = context or RunContext()
    rows = sources.provenance(context.input_dir)
    names = config_names(config)
    tags = tags_of(records, config)
    buffer = io.StringIO()
    writer = csv_dict_writer(buffer, CATALOGUE_FIELDS)
    writer.writeheader()
    for record in sorted(records, key=lambda record: natural_key(record.key)):
        where = locate(item_name, record, context, rows.get((item_name, record.key)))
        for tag in tags[record.key] or [None]:
            row = {"item": item_name, "image": record.key, **where}
            if tag is not None:
                row.update(tag=tag["tag"], confidence=tag["confidence"],
                           **{f"name_{language}": name for language, name in tag_names(tag["tag"], names).items()})
            writer.writerow(row)
    return buffer.getvalue()


def locate(item_name, record, context, row):
    """The title, page, region, IIIF image URL, canvas, manifest and file of one image."""
    box = sources.box_of(row) if row else None
    region = ndl.pct_region(*box) if box else "full"
    found = {"title": (row or {}).get("label") or (row or {}).get("title", ""), "page": "", "region": region,
             "iiif_image": "", "canvas": (row or {}).get("canvas", ""), "manifest": (row or {}).get("manifest", ""),
             "file": _file(record.path, context)}
    if row and row.get("page", "").isdigit():
        found["page"] = row["page"]
    if row and row.get("service"):
        found["iiif_image"] = f"{row['service'].rstrip('/')}/{region}/max/0/default.jpg"
        return found
    page = sources.ndl_page(row, record.key)
    if page is not None:  # NDL's page image, cut to the box where known
        found["iiif_image"] = page.replace("/full/full/0/default.jpg", f"/{region}/full/0/default.jpg")
        found["page"] = found["page"] or str(int(page.split("/R")[-1].split("/")[0]))
    else:
        found["region"] = ""
    return found


def _file(path, context):
    """The image file under --target-base when it lies in the input folder, else its own URL."""
    relative = storage.relpath(path, context.input_dir) if context.input_dir else None
    if context.target_base and relative and not relative.startswith(".."):
        return f"{context.target_base}/{urllib.parse.quote(relative.replace(os.sep, '/'))}"
    return storage.url(path)


def parse(text):
    """{key: [(tag, confidence)]} of a catalogue CSV (how the review report reads it)."""
    tags = collections.defaultdict(list)
    for row in csv.DictReader(io.StringIO(text, newline="")):
        key = row.get("image")
        if key is None or "tag" not in row:
            raise ValueError("no 'image' or 'tag' column")
        tags[key]
        if row["tag"]:
            tags[key].append((row["tag"], float(row["confidence"])))
    return dict(tags)
