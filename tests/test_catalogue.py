"""--format catalogue: one row per image and tag, with both names and where to see the crop."""

import csv
import io
import os

import numpy as np
import pytest

from modelfiles import trained_config
from tagestimate import catalogue, formats, manifest
from tagestimate.records import Record, RunContext

LABELS = ["graphic", "graphic_map", "stamp"]
CONFIG = trained_config(labels=LABELS)
BASE = "http://127.0.0.1:1/api/iiif"


def write_manifest(folder, rows):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, manifest.MANIFEST_NAME), "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=manifest.EXTENDED_FIELDS, restval="")
        writer.writeheader()
        writer.writerows(rows)


def rows_of(text):
    return list(csv.DictReader(io.StringIO(text, newline="")))


@pytest.fixture
def book(tmp_path):
    """Four images of item "book", each found a different way, each with its own confidences."""
    input_dir = tmp_path / "in"
    write_manifest(input_dir, [
        {"id": "1054192_2_0", "folder": "book", "pid": "1054192", "page": "2", "x": "10.0", "y": "20.5", "w": "35.0",
         "h": "50.25", "title": "経済学全集", "source_url": f"{BASE}/1054192/R0000002/pct:10.0,20.5,35.0,50.25/,256/0/default.jpg"},
        {"id": "0003", "folder": "book", "page": "3", "canvas": "https://h/m/canvas/3", "manifest": "https://h/m",
         "label": "A book of maps", "service": "https://h/iiif/p3"},
    ])
    probabilities = {"1054192_2_0": [0.91, 0.83, 0.1], "0003": [0.62, 0.1, 0.74], "1054192_7_1": [0.55, 0.1, 0.1],
                     "scan 1": [0.1, 0.2, 0.3]}
    records = [Record(key, str(input_dir / "book" / f"{key}.jpg"), (100, 80), np.array(values, np.float32))
               for key, values in probabilities.items()]
    return RunContext(input_dir=str(input_dir), target_base="https://example.org/img"), records


def test_one_row_per_image_and_tag_with_both_names_and_its_own_confidence(book):
    context, records = book
    rows = rows_of(catalogue.render("book", records, CONFIG, context))
    assert list(rows[0]) == list(catalogue.CATALOGUE_FIELDS)
    assert [(row["image"], row["tag"], row["name_en"], row["name_ja"], row["confidence"]) for row in rows] == [
        ("0003", "graphic", "figure or illustration", "図・イラスト", "0.62"), ("0003", "stamp", "seal stamp", "印影", "0.74"),
        ("1054192_2_0", "graphic", "figure or illustration", "図・イラスト", "0.91"),
        ("1054192_2_0", "graphic_map", "map", "地図", "0.83"),
        ("1054192_7_1", "graphic", "figure or illustration", "図・イラスト", "0.55"),
        ("scan 1", "", "", "", "")]  # untagged: listed once, no tag
    assert {row["item"] for row in rows} == {"book"}


def test_each_row_says_where_to_see_the_crop(book):
    context, records = book
    where = {row["image"]: row for row in rows_of(catalogue.render("book", records, CONFIG, context))}
    crawled = where["1054192_2_0"]
    assert crawled["iiif_image"] == f"{BASE}/1054192/R0000002/pct:10.0,20.5,35.0,50.25/full/0/default.jpg"
    assert (crawled["page"], crawled["region"], crawled["title"]) == ("2", "pct:10.0,20.5,35.0,50.25", "経済学全集")
    from_manifest = where["0003"]
    assert from_manifest["iiif_image"] == "https://h/iiif/p3/full/max/0/default.jpg"
    assert (from_manifest["canvas"], from_manifest["manifest"], from_manifest["page"], from_manifest["title"]) == (
        "https://h/m/canvas/3", "https://h/m", "3", "A book of maps")
    named = where["1054192_7_1"]  # an NDL-named file without a row: the whole page, and region says so
    assert named["iiif_image"] == "https://www.dl.ndl.go.jp/api/iiif/1054192/R0000007/full/full/0/default.jpg"
    assert (named["page"], named["region"]) == ("7", "full")
    plain = where["scan 1"]
    assert (plain["iiif_image"], plain["region"], plain["file"]) == ("", "", "https://example.org/img/book/scan%201.jpg")


def test_custom_names_come_from_the_models_label_map(book):
    context, records = book
    config = trained_config(labels=LABELS)
    import dataclasses

    config = dataclasses.replace(config, labelmap={"labels": LABELS, "names": {"stamp": {"en": "ex libris",
                                                                                         "ja": "蔵書印"}}})
    rows = rows_of(catalogue.render("book", records, config, context))
    assert [(row["name_en"], row["name_ja"]) for row in rows if row["tag"] == "stamp"] == [("ex libris", "蔵書印")]


def test_it_is_one_entry_of_the_formats_table_and_reads_back(book):
    context, records = book
    output = formats.FORMATS["catalogue"]
    assert output.file_name("book") == "book.catalogue.csv"
    assert formats.match_file("book.catalogue.csv") == ("book", "catalogue")  # not item "book.catalogue" of csv
    assert output.parse(output.render("book", records, CONFIG, context=context)) == {
        "0003": [("graphic", 0.62), ("stamp", 0.74)], "1054192_2_0": [("graphic", 0.91), ("graphic_map", 0.83)],
        "1054192_7_1": [("graphic", 0.55)], "scan 1": []}
