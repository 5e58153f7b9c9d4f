"""--lang: the review report shows each tag by its English or Japanese name; the machine tag stays
everywhere a program reads it (data-* attributes, filters' values, output files)."""

import dataclasses
import json
import os
import re

from modelfiles import trained_config
from tagestimate.review import report
from test_report import image, item_page, probabilities, read, tag_output


def build(tmp_path, lang=None, names=None):
    config = trained_config()
    if names:  # a model trained with a label map that names its tags
        config = dataclasses.replace(config, labelmap={"labels": list(config.labels), "names": names})
    output = tmp_path / "out"
    rows = [("p1", image(tmp_path / "in" / "a" / "p1.jpg"), probabilities(graphic_map=0.9, stamp=0.7)),
            ("p2", image(tmp_path / "in" / "a" / "p2.jpg"), probabilities(picture=0.8))]
    tag_output(output, "a", rows, config)
    report.write_run_info(str(output), str(tmp_path / "w.h5"), "keras-weights", "openvino", config, False)
    report.build_report(str(output), progress=False, lang=lang)
    return output


def chip_names(page):
    return re.findall(r'<span class="tag[^"]*" data-review-tag="([^"]+)"[^>]*><bdi>([^<]+)</bdi>', page)


def test_without_lang_the_report_shows_the_tags(tmp_path):
    output = build(tmp_path)
    assert chip_names(item_page(output, "a")) == [("graphic_map", "graphic_map"), ("stamp", "stamp"),
                                                  ("picture", "picture")]


def test_lang_ja_names_every_tag_in_japanese_and_keeps_the_tag_for_programs(tmp_path):
    output = build(tmp_path, "ja")
    page = item_page(output, "a")
    assert chip_names(page) == [("graphic_map", "地図"), ("stamp", "印影"), ("picture", "写真")]
    assert '<option value="graphic_map">地図</option>' in page  # the filter's value stays the tag
    index = read(os.path.join(output, "index.html"))
    assert "<tr><td>地図</td>" in index and "<tr><td>graphic_map</td>" not in index
    with open(output / "a.json", encoding="utf-8") as handle:
        assert "graphic_map" in json.load(handle)["p1"][0]["tag"]  # NDL's JSON never changes


def test_lang_en_uses_the_models_own_names_first(tmp_path):
    output = build(tmp_path, "en", names={"stamp": {"en": "ex libris", "ja": "蔵書印"}})
    assert chip_names(item_page(output, "a")) == [("graphic_map", "map"), ("stamp", "ex libris"),
                                                  ("picture", "photograph")]


def test_the_report_command_takes_lang(tmp_path, capsys):
    output = build(tmp_path)
    assert report.main([str(output), "--lang", "en", "--quiet"]) == 0
    assert ("graphic_map", "map") in chip_names(item_page(output, "a"))
    assert report.main([str(output), "--quiet"]) == 0  # and back
    assert ("graphic_map", "graphic_map") in chip_names(item_page(output, "a"))
