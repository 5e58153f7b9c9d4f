"""Output formats and thresholds (tagestimate/formats.py): pure functions, exact expected text."""

import csv
import io
import json

import numpy as np
import pytest

from tagestimate.model import ModelConfig
from tagestimate.formats import (FORMATS, Record, item_csv, item_json, natural_key, parse_csv, parse_json,
                                 render_csv, render_json, tags_above, tags_of, thresholds_for, with_threshold)


def test_natural_key_puts_page_2_before_page_10():
    names = ["1054192_10_0", "1054192_2_1", "1054192_2_0", "999_1_0", "1054192_1_0"]
    assert sorted(names, key=natural_key) == ["999_1_0", "1054192_1_0", "1054192_2_0", "1054192_2_1", "1054192_10_0"]
    assert sorted(["a10b", "b1", "a9c", "a10a"], key=natural_key) == ["a9c", "a10a", "a10b", "b1"]
    # names that differ only in leading zeros still get one order, whatever the listing order
    assert sorted(["p1", "p01"], key=natural_key) == sorted(["p01", "p1"], key=natural_key)


def test_natural_key_sorts_any_unicode_name_without_error():
    # '①' and '²' are str.isdigit() but not int(); full-width digits are decimal and may sort as numbers.
    names = ["p①.jpg", "p²_3.jpg", "p１０.jpg", "p２.jpg", "写真_2.jpg", "写真_10.jpg", "p3.jpg"]
    ordered = sorted(names, key=natural_key)
    assert sorted(ordered) == sorted(names)
    assert ordered.index("写真_2.jpg") < ordered.index("写真_10.jpg")


def test_thresholds_override_model_json_then_default():
    config = ModelConfig(labels=["a", "b", "c"], thresholds={"a": 0.7, "b": 0.2}, default_threshold=0.3)
    assert thresholds_for(config) == [0.7, 0.2, 0.3]
    assert thresholds_for(config, override="0.55") == [0.55, 0.55, 0.55]
    assert thresholds_for(config, override=0) == [0.0, 0.0, 0.0]  # 0 is a threshold, not "no override"
    assert thresholds_for(ModelConfig(labels=["a", "b"])) == [0.4, 0.4]
    assert thresholds_for(ModelConfig(labels=["a"], thresholds=None, default_threshold=0.6)) == [0.6]
    assert all(type(t) is float for t in thresholds_for(ModelConfig(labels=["a"], thresholds={"a": 1})))
    # --threshold as the writers see it: one threshold for every label, the rest of the config kept
    flat = with_threshold(config, 0.55)
    assert thresholds_for(flat) == [0.55, 0.55, 0.55] and flat.labels == config.labels
    assert thresholds_for(with_threshold(config, 0)) == [0.0, 0.0, 0.0]
    assert with_threshold(config, None) is config


def test_tags_above_is_strict_rounds_and_keeps_label_order():
    labels = ["graphic", "picture", "stamp"]
    result = tags_above([0.5, 0.81234, 0.4], labels, [0.5, 0.8, 0.3])
    assert result == [{"tag": "picture", "confidence": 0.812}, {"tag": "stamp", "confidence": 0.4}]
    assert type(result[0]["confidence"]) is float
    assert tags_above([0.1, 0.2, 0.3], labels, [0.5, 0.5, 0.5]) == []


TAGS = {
    "1054192_10_0": [{"tag": "picture", "confidence": 0.9}],
    "1054192_2_0": [],
    "写真_1": [{"tag": "stamp", "confidence": 0.5}, {"tag": "graphic", "confidence": 0.45}],
}


def test_item_json_is_ndl_format_one_image_per_line_in_page_order():
    text = item_json(TAGS)
    assert text == (
        '{\n'
        '"1054192_2_0": [],\n'
        '"1054192_10_0": [{"tag": "picture", "confidence": 0.9}],\n'
        '"写真_1": [{"tag": "stamp", "confidence": 0.5}, {"tag": "graphic", "confidence": 0.45}]\n'
        '}\n'
    )
    assert json.loads(text) == TAGS
    assert item_json({}) == "{}\n" and json.loads(item_json({})) == {}
    # a label map's own labels may be Japanese: written as text, not \uXXXX escapes
    assert item_json({"a": [{"tag": "挿絵", "confidence": 0.5}]}) == '{\n"a": [{"tag": "挿絵", "confidence": 0.5}]\n}\n'


def test_item_csv_has_one_row_per_tag_and_an_empty_row_for_untagged_images():
    text = item_csv(TAGS)
    assert text == (
        "image,tag,confidence\n"
        "1054192_2_0,,\n"
        "1054192_10_0,picture,0.9\n"
        "写真_1,stamp,0.5\n"
        "写真_1,graphic,0.45\n"
    )
    assert item_csv({}) == "image,tag,confidence\n"
    rows = list(csv.reader(io.StringIO(item_csv({'a,"b"': [{"tag": "x", "confidence": 1.0}]}))))
    assert rows[1] == ['a,"b"', "x", "1.0"]  # names with commas and quotes survive


def test_the_documented_formats_exist():
    assert set(FORMATS) == {"json", "csv", "iiif", "catalogue"}  # --format's choices, as docs/formats.md documents them
    assert FORMATS["json"].render is render_json and FORMATS["csv"].render is render_csv
    assert FORMATS["json"].parse is parse_json and FORMATS["csv"].parse is parse_csv  # read back by the report
    assert [FORMATS[name].extension for name in ("json", "csv", "iiif", "catalogue")] == [
        "json", "csv", "iiif.json", "catalogue.csv"]


RECORDS = [
    Record("1054192_10_0", "/in/1054192/1054192_10_0.jpg", (300, 200), np.array([0.9, 0.4, 0.41], np.float32)),
    Record("1054192_2_0", "/in/1054192/1054192_2_0.png", (50, 60), np.array([0.1, 0.2, 0.3], np.float32)),
]
CONFIG = ModelConfig(labels=["picture", "graphic", "stamp"], thresholds={"stamp": 0.405})


def test_writers_threshold_the_full_probabilities_with_the_config():
    assert tags_of(RECORDS, CONFIG) == {"1054192_10_0": [{"tag": "picture", "confidence": 0.9},
                                                         {"tag": "stamp", "confidence": 0.41}],
                                        "1054192_2_0": []}  # 0.4 is not above the default 0.4
    assert render_json("1054192", RECORDS, CONFIG) == item_json(tags_of(RECORDS, CONFIG))
    assert render_csv("1054192", RECORDS, with_threshold(CONFIG, 0.25)) == (
        "image,tag,confidence\n"
        "1054192_2_0,stamp,0.3\n"
        "1054192_10_0,picture,0.9\n"
        "1054192_10_0,graphic,0.4\n"
        "1054192_10_0,stamp,0.41\n"
    )


def test_the_csv_of_a_run_with_extra_tags_is_exact_and_reads_back():
    """--extra-tags: a fourth column `extra`, 1 on the extra tags' rows; an untagged image keeps its
    empty row; parse_csv reads the model's and the extra tags back alike."""
    tags = {"p10": [{"tag": "stamp", "confidence": 0.71}, {"tag": "ukiyoe", "confidence": 0.64, "extra": True}],
            "p2": [], "p1": [{"tag": "graphic_map", "confidence": 0.93}]}
    text = item_csv(tags, extra_column=True)
    assert text == ("image,tag,confidence,extra\n"
                    "p1,graphic_map,0.93,\n"
                    "p2,,,\n"
                    "p10,stamp,0.71,\n"
                    "p10,ukiyoe,0.64,1\n")
    assert parse_csv(text) == {"p1": [("graphic_map", 0.93)], "p2": [], "p10": [("stamp", 0.71), ("ukiyoe", 0.64)]}


@pytest.mark.parametrize("text, message", [
    ("[1, 2]", "not a JSON object"),
    ('{"k1": {"tag": "x"}}', "the value of 'k1' is not a list"),
])
def test_parse_json_names_what_is_wrong(text, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        parse_json(text)


def test_parse_json_reads_tags_as_text_and_confidences_as_numbers():
    assert parse_json('{"b": [{"tag": 7, "confidence": "0.25"}], "a": []}') == {"b": [("7", 0.25)], "a": []}
