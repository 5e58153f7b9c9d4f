"""The inference review report (tagestimate/review/report.py) and the training report's pieces: fast
tests on the files and HTML written, without a model (outputs and sidecars written directly)."""

import html
import json
import os
import re
import shutil
import urllib.parse
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from modelfiles import trained_config
from tagestimate.review import report
from tagestimate.tag.inference import Item, write_item
from tagestimate.formats import Record
from tagestimate.review.thumbs import safe_name

HOSTILE_ITEM = "<b onmouseover=alert('item')>&\"x"  # a folder name: no slash
HOSTILE_KEY = "\"><img src=x onerror=alert(1)>/p 2"


def image(path, color=(200, 30, 30), size=(120, 80)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return str(path)


def tag_output(output, name, rows, config, sidecar=True):
    """Write an item's NDL output (and its report sidecar) as a run would; rows: (key, path, probabilities)."""
    records = [Record(key, path, (10, 10), np.asarray(values, np.float32)) for key, path, values in rows]
    os.makedirs(output, exist_ok=True)
    if sidecar:
        report.write_sidecar(str(output), name, records, config)
    write_item(str(output), name, records, config)


def probabilities(**values):
    """An 11-label vector: 0.05 everywhere but the named labels."""
    from tagestimate.labels import LABELS

    return [values.get(label, 0.05) for label in LABELS]


@pytest.fixture
def run_output(tmp_path):
    """Two items (one with a hostile name and key), errors.json, run.json: (output, config)."""
    config = trained_config()
    output = tmp_path / "out"
    a = [(f"p{n}", image(tmp_path / "in" / "a" / f"p{n}.jpg", (20 * n, 90, 90)), probabilities(graphic_map=0.9))
         for n in range(3)]
    a.append(("p3", image(tmp_path / "in" / "a" / "p3.jpg"), probabilities(picture=0.45)))  # borderline, kept
    a.append(("p4", image(tmp_path / "in" / "a" / "p4.jpg"), probabilities()))  # no tag
    tag_output(output, "a", a, config)
    b = [(HOSTILE_KEY, image(tmp_path / "in" / "b" / "x.png"), probabilities(stamp=0.8, picture=0.35))]
    tag_output(output, HOSTILE_ITEM, b, config)
    (output / "errors.json").write_text(json.dumps([{"item": "a", "path": "in/a/<bad>.jpg", "reason": "empty file"}]))
    report.write_run_info(str(output), str(tmp_path / "w.h5"), "keras-weights", "openvino", config, False)
    return output, config


def cards(page):
    return re.findall(r'<figure class="card[ "]', page)  # "card review-card" where the image path is known


def read(path):
    return open(path, encoding="utf-8").read()


def item_page(output, name):
    return read(os.path.join(output, "html", report.page_names(name, 1)[0]))


def test_tags_an_output_names_without_run_json_come_in_a_fixed_order(tmp_path):
    """A --no-report output has no run.json to list the labels: the tags its items carry become the
    report's columns and filter options in natural order, item by item, the same in every build (a
    set's order changed with each process's string hashing)."""
    import subprocess
    import sys

    config = trained_config()
    output = tmp_path / "out"
    tag_output(output, "b", [("k", "", probabilities(stamp=0.9, graphic_map=0.8))], config, sidecar=False)
    tag_output(output, "a", [("k1", "", probabilities(picture_outdoor=0.9)), ("k2", "", probabilities(graphic=0.7))],
               config, sidecar=False)
    pages = []
    for seed in ("1", "2"):
        subprocess.run([sys.executable, "-m", "tagestimate.review.report", str(output), "--quiet"], check=True,
                       env={**os.environ, "PYTHONHASHSEED": seed}, cwd=os.path.dirname(os.path.dirname(__file__)))
        pages.append(read(output / "index.html"))
    assert pages[0] == pages[1]
    header = re.search(r'<table id="items"><tr>(.*?)</tr>', pages[0]).group(1)
    assert re.findall(r'<th class="label">(.*?)</th>', header) == [
        "graphic", "picture_<wbr>outdoor", "graphic_<wbr>map", "stamp"]


def test_report_has_overview_one_card_per_image_and_thumbnails(run_output):
    output, _ = run_output
    index = read(report.build_report(str(output), progress=False))
    overview = dict(re.findall(r"<tr><th>([^<]+)</th><td>([^<]*)</td></tr>", index))
    assert (overview["items"], overview["images"], overview["images with no tag"]) == ("2", "6", "1")
    assert overview["files skipped"].startswith("1")
    assert "&lt;bad&gt;.jpg" in index and "empty file" in index
    assert re.search(r"<td>graphic_map</td><td>0.40</td><td>3</td><td>1</td>", index)
    # Borderline (within 0.1 of 0.4): p3's picture 0.45 and b's picture 0.35.
    assert re.search(r"<td>picture</td><td>0.40</td><td>1</td><td>1</td><td>2</td>", index)
    page = item_page(output, "a")
    assert len(cards(page)) == 5
    thumbs = os.listdir(output / "html" / "thumbs" / safe_name("a"))
    assert len(thumbs) == 5 and all(Image.open(output / "html" / "thumbs" / safe_name("a") / t).size[0] <= 160
                                    for t in thumbs)
    assert 'src="thumbs/' in page and "<script>" in page and "http" not in page  # offline: no CDN


def test_the_pages_are_written_whole_without_fsync_and_the_sidecar_with_it(run_output, monkeypatch):
    """The report's pages are made again from the outputs at will: like the thumbnails, they skip the
    fsync (whole or absent all the same: no temporary file is left). The sidecar holds what only the
    run knew (every label's probability): it is still fsynced."""
    output, config = run_output
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda descriptor: synced.append(os.readlink(f"/proc/self/fd/{descriptor}"))
                        or real_fsync(descriptor))
    report.build_report(str(output), progress=False)
    assert synced == []
    pages = [name for name in os.listdir(output / "html") if name.endswith(".html")]
    assert len(pages) >= 5 and all(read(output / "html" / name).rstrip().endswith("</html>") for name in pages)
    assert not [name for root, _, names in os.walk(output) for name in names if name.startswith(".")]
    report.write_sidecar(str(output), "c", [Record("k", "", (10, 10), np.asarray(probabilities(), np.float32))],
                         config)
    [temporary] = synced  # the sidecar's, fsynced before its rename
    assert os.path.basename(temporary).startswith("." + os.path.basename(report.sidecar_path(str(output), "c")) + ".")


def test_hostile_names_are_escaped_and_files_safely_named(run_output):
    output, _ = run_output
    index = read(report.build_report(str(output), progress=False))
    page = item_page(output, HOSTILE_ITEM)
    for text in (index, page):
        assert "<b onmouseover" not in text and "<img src=x" not in text
    assert "&lt;b onmouseover=alert(&#39;item&#39;)&gt;&amp;&#34;x" in index
    assert "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;/p 2" in page
    for root, folders, files in os.walk(output / "html"):
        for name in folders + files:
            assert re.fullmatch(r"[A-Za-z0-9._-]+", name), name


def test_sidecar_gives_every_probability_and_the_json_stays_ndl(run_output):
    output, config = run_output
    report.build_report(str(output), progress=False)
    page = item_page(output, "a")
    first = re.search(r'data-p="([^"]*)"', page).group(1)
    values = json.loads(html.unescape(first))
    assert len(values) == len(config.labels) and values["graphic_map"] == 0.9 and values["stamp"] == 0.05
    assert json.loads(read(output / "a.json"))["p0"] == [{"tag": "graphic_map", "confidence": 0.9}]


def test_resumed_run_shows_items_of_earlier_runs(run_output, tmp_path):
    """An item tagged with --no-report (no sidecar) still gets its cards and thumbnails from the
    input listing, and the index counts every item in the folder."""
    output, config = run_output
    path = image(tmp_path / "in" / "c" / "only.jpg")
    tag_output(output, "c", [("only", path, probabilities(graphic=0.7))], config, sidecar=False)
    index = read(report.build_report(str(output), [Item("c", [("only", path)])], progress=False))
    assert re.search(r'<tr><th>items</th><td>3</td>', index)
    page = item_page(output, "c")
    assert len(cards(page)) == 1 and "<bdi>graphic</bdi> 0.700" in page and "not shown as borderline" in page
    assert os.listdir(output / "html" / "thumbs" / safe_name("c"))


def test_sidecar_of_a_replaced_output_is_not_trusted(run_output):
    output, config = run_output
    (output / "a.json").write_text('{\n"p0": [{"tag": "stamp", "confidence": 0.99}]\n}\n')
    report.build_report(str(output), progress=False)
    page = item_page(output, "a")
    assert len(cards(page)) == 1 and "<bdi>stamp</bdi> 0.990" in page and "graphic_map" not in re.search(
        r'data-p="[^"]*"', page).group(0)


def test_an_extra_tag_in_the_output_keeps_the_probabilities(run_output):
    """--extra-tags adds a tag the sidecar (the model's labels) does not hold: the card still gets
    every label's probability, and the extra tag shows as a chip."""
    output, config = run_output
    data = json.loads(read(output / "a.json"))
    data["p1"].append({"tag": "ukiyoe", "confidence": 0.77})
    (output / "a.json").write_text(json.dumps(data))
    report.build_report(str(output), progress=False)
    page = item_page(output, "a")
    card = re.search(r'<figure[^>]*id="[^"]*p1[^"]*"[^>]*>', page).group(0)
    values = json.loads(html.unescape(re.search(r'data-p="([^"]*)"', card).group(1)))
    assert len(values) == len(config.labels) and values["graphic_map"] == 0.9 and "ukiyoe" not in values
    assert "<bdi>ukiyoe</bdi> 0.770" in page


def test_big_items_are_paginated(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "PAGE_SIZE", 4)
    output = tmp_path / "out"
    tag_output(output, "big", [(f"k{n}", str(tmp_path / "gone.jpg"), probabilities()) for n in range(10)],
               trained_config())
    report.build_report(str(output), progress=False)
    names = report.page_names("big", 10)
    assert len(names) == 3
    counts = [len(cards(read(output / "html" / name))) for name in names]
    assert counts == [4, 4, 2]
    assert f'href="{names[2]}"' in read(output / "html" / names[0])


def test_thumbnails_are_kept_while_current_and_redone_when_the_image_changes(run_output, tmp_path):
    output, _ = run_output
    report.build_report(str(output), progress=False)
    thumb = report.thumb_path(str(output), "a", "p0")
    os.utime(thumb, (1e9 + 100, 1e9 + 100))
    os.utime(tmp_path / "in" / "a" / "p0.jpg", (1e9, 1e9))
    report.build_report(str(output), progress=False)
    assert os.stat(thumb).st_mtime == 1e9 + 100  # current: not rewritten
    os.utime(tmp_path / "in" / "a" / "p0.jpg", (1e9 + 200, 1e9 + 200))
    report.build_report(str(output), progress=False)
    assert os.stat(thumb).st_mtime > 1e9 + 200


def test_unreadable_item_file_is_listed_not_fatal(run_output):
    output, _ = run_output
    (output / "broken.json").write_text("{not json")
    index = read(report.build_report(str(output), progress=False))
    assert "Output files not shown" in index and "broken" in index
    assert re.search(r'<tr><th>items</th><td>2</td>', index)


def test_safe_name_is_distinct_and_plain():
    names = [safe_name(text) for text in ("a/b", "a_b", "A_b", "../..", "", "頁 1", "x" * 500)]
    assert len(set(names)) == len(names)
    assert all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name) and len(name) < 60 for name in names)


# ---------------------------------------------------------------- training report pieces

def test_worst_cases_and_label_matrix():
    from tagestimate.review.train_report import confusion, worst_cases

    truth = np.array([[1, 1], [1, 0], [0, 0], [0, 1], [0, 0]], dtype=bool)
    scores = np.array([[0.9, 0.2], [0.1, 0.8], [0.7, 0.1], [0.3, 0.95], [0.8, 0.1]])
    false_positive, false_negative = worst_cases(truth, scores, 0, 0.4)
    assert list(false_positive) == [4, 2] and list(false_negative) == [1]
    assert list(worst_cases(truth, scores, 0, 0.4, count=1)[0]) == [4]
    false_positive, false_negative = worst_cases(truth, scores, 1, 0.4)
    assert list(false_positive) == [1] and list(false_negative) == [0]
    matrix = confusion(truth[:4], scores[:4] > 0.4)
    np.testing.assert_allclose(matrix, [[0.5, 0.5], [0.5, 0.5]])
    np.testing.assert_allclose(confusion(truth[:, :1], scores[:, :1] > 0.4), [[0.5]])


@pytest.mark.slow
def test_training_report_from_run_files_lists_what_it_cannot_show(tmp_path):
    """report.html from the trainer's files (no model, no TensorFlow): every section, and a
    damaged history.csv leaves only its own section out, with a note."""
    from modelfiles import trained_config
    from tagestimate.train.dataset import write_predictions
    from tagestimate.labels import LABELS, default_map_dict
    from tagestimate.model import write_config
    from tagestimate.review.train_report import write_training_report

    run, data = tmp_path / "run", tmp_path / "data"
    os.makedirs(run)
    config = trained_config()
    write_config(str(run), config.__class__(**{**config.__dict__, "labelmap": default_map_dict()}))
    folders = ["graphic_map", "stamp", "picture_landmark", "graphic_map"]
    paths = [image(data / folder / f"{n}_1_0.jpg") for n, folder in enumerate(folders)]
    scores = np.full((4, len(LABELS)), 0.1)
    scores[1, LABELS.index("graphic_map")] = 0.95  # a stamp taken for a map: the worst false positive
    write_predictions(str(run / "val_predictions.csv"), paths, folders, scores, LABELS, str(data))
    (run / "split.csv").write_text("path,folder,item_id,subset\na.jpg,stamp,1,train\nb.jpg,stamp,2,val\n")
    (run / "history.csv").write_text("epoch,loss,val_loss\n0,0.7,0.8\n1,0.5,oops\n")
    per_class = {label: {"precision": 0.5, "recall": 0.25, "f1": 0.333, "support": 2} for label in LABELS}
    (run / "report.json").write_text(json.dumps({"labels": list(LABELS), "per_class": per_class, "macro_f1": 0.3,
                                                 "thresholds": {l: {"threshold": 0.4, "f1": 0.3, "tuned": False}
                                                                for l in LABELS}}))
    page = read(write_training_report(str(run), explain=False))
    assert all(f'id="{name}"' in page for name in ("summary", "labels", "pr", "confusion", "split"))
    assert 'id="history"' not in page and "history.csv" in page  # listed under "Not shown"
    assert len(re.findall(r"<tr><td>", page.split('id="labels"')[1].split("</table>")[0])) == len(LABELS)
    worst = page.split("<h3>graphic_map</h3>")[1].split("<h3>")[0]
    assert "false positives" in worst and "1_1_0.jpg (stamp)" in worst and "0.950" in worst
    assert "false negatives" in worst and "0_1_0.jpg (graphic_map)" in worst
    for name in ("pr_curves.png", "confusion.png"):
        assert Image.open(run / "report_files" / name).size[0] > 300


@pytest.mark.slow
def test_run_writes_the_report_and_json_identical_to_no_report(tmp_path):
    """multiinference: the report is on by default, --no-report writes none of it, the NDL JSON
    is byte-identical either way, and a resumed run's report covers every item."""
    import multiinference
    from modelfiles import write_trained_weights

    weights, _ = write_trained_weights(str(tmp_path / "w"), logits=[2.0, -2.0] + [0.0] * 9, image_size=64)
    for item in ("a", "b"):
        for n in range(3):
            image(tmp_path / "in" / item / f"{item}_{n}_0.jpg", (40 * n, 90, 200))
    common = ["--inputpath", str(tmp_path / "in"), "--weights", weights, "--backend", "tensorflow", "--quiet"]
    assert multiinference.main([*common, "--outputpath", str(tmp_path / "plain"), "--no-report"]) == 0
    # no report files (the vectors, yes)
    assert sorted(os.listdir(tmp_path / "plain")) == ["a.emb.npz", "a.json", "b.emb.npz", "b.json"]
    shutil.rmtree(tmp_path / "in" / "b")  # b is done already: the resumed run tags only a
    os.makedirs(tmp_path / "out")
    shutil.copy(tmp_path / "plain" / "b.json", tmp_path / "out")
    assert multiinference.main([*common, "--outputpath", str(tmp_path / "out")]) == 0
    assert read(tmp_path / "out" / "a.json") == read(tmp_path / "plain" / "a.json")
    index = read(tmp_path / "out" / "index.html")
    assert re.search(r"<tr><th>items</th><td>2</td>", index) and re.search(r"<tr><th>images</th><td>6</td>", index)
    assert re.search(r"<td>graphic</td><td>0.40</td><td>6</td><td>2</td>", index)


def test_explain_needs_the_report():
    import multiinference

    with pytest.raises(SystemExit) as stopped:
        multiinference.main(["--explain", "--no-report"])
    assert stopped.value.code == 2


def test_paths_that_are_not_utf8_work(tmp_path):
    """An input or output folder whose name is not UTF-8 (e.g. Shift_JIS bytes): the sidecar
    keeps the path's bytes, the thumbnail is made, links carry the bytes %-escaped."""
    source = image(os.path.join(str(tmp_path), os.fsdecode(b"scans\x83e"), "book", "ok.jpg"))
    output = os.path.join(str(tmp_path), os.fsdecode(b"tags\xff"))
    tag_output(output, "book", [("ok", source, probabilities(stamp=0.9))], trained_config())
    index = read(report.build_report(output, progress=False))
    assert "tags\\xff" in index
    page = item_page(output, "book")
    assert len(cards(page)) == 1 and "scans%83e/book/ok.jpg" in page
    assert os.path.exists(report.thumb_path(output, "book", "ok"))


def test_iiif_output_is_read_as_its_item_with_untagged_images(tmp_path):
    """--format iiif writes {item}.iiif.json and context.jsonld: one item "a" in the report, its
    untagged image included (the AnnotationPage has no annotation for it; the sidecar does)."""
    from tagestimate import annotations

    config = trained_config()
    output = tmp_path / "out"
    weights = tmp_path / "w.h5"
    weights.write_bytes(b"weights")
    context = annotations.run_context(str(tmp_path / "in"), str(weights), str(output), "https://example.org/tags")
    rows = [("p 1", image(tmp_path / "in" / "a" / "p 1.jpg"), probabilities(graphic_map=0.9, stamp=0.7)),
            ("p/2", image(tmp_path / "in" / "a" / "p" / "2.jpg"), probabilities())]
    records = [Record(key, path, (10, 10), np.asarray(values, np.float32)) for key, path, values in rows]
    os.makedirs(output)
    report.write_sidecar(str(output), "a", records, config)
    write_item(str(output), "a", records, config, "iiif", context=context)
    annotations.write_context(str(output))
    assert report.list_item_files(str(output)) == {"a": str(output / "a.iiif.json")}
    index = read(report.build_report(str(output), progress=False))
    overview = dict(re.findall(r"<tr><th>([^<]+)</th><td>([^<]*)</td></tr>", index))
    assert (overview["items"], overview["images"], overview["images with no tag"]) == ("1", "2", "1")
    assert report.read_tags(str(output / "a.iiif.json")) == {"p 1": [("graphic_map", 0.9), ("stamp", 0.7)]}
    assert "cannot read" not in index


# ---------------------------------------------------------------- templates: escaping, links, what a curator sees

# Labels from a hostile model.json and output file, each with its own confidence (a wrong pairing shows).
HOSTILE_LABELS = {"<script>alert(1)</script>": 0.91, "q\"uo'te": 0.82, "a&b c": 0.73, "\u05e9\u05dc\u05d5\u05dd": 0.64,
                  "x=1&y z": 0.35}  # the last: borderline below 0.4, so not a tag
PAGE_ELEMENTS = {"html", "head", "meta", "title", "style", "body", "p", "a", "h1", "h2", "h3", "table", "tr", "th",
                 "td", "div", "span", "select", "option", "label", "input", "figure", "figcaption", "img", "nav",
                 "b", "ul", "li", "script", "wbr", "bdi"}
PAGE_ATTRIBUTES = {"lang", "charset", "name", "content", "class", "id", "href", "src", "alt", "loading", "value",
                   "type", "min", "max", "step", "style", "title", "data-t", "data-p", "data-tag", "data-cam",
                   "data-flat", "data-thresholds", "data-border",
                   "data-review-image", "data-review-item", "data-review-tag", "data-review-suggest"}  # review.js


class Parsed(HTMLParser):
    """Every element, its attributes (unescaped) and the page's text, as a browser's parser sees them."""

    def __init__(self, text):
        super().__init__(convert_charrefs=True)
        self.elements, self.text = [], []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def having(self, tag, **attributes):
        return [attrs for name, attrs in self.elements if name == tag and all(
            attrs.get(key.replace("_", "-")) == value for key, value in attributes.items())]


def test_href_keeps_the_bytes_of_names_that_are_not_utf8():
    from tagestimate.review import pages

    assert pages.href(os.fsdecode(b"scans\x83e") + "/p 1#.jpg") == "scans%83e/p%201%23.jpg"
    # the training report's links use the same helper (its own one failed on such names)
    case = {"name": "x", "score": 0.5, "thumb": os.path.join("report_files", os.fsdecode(b"\xff.jpg")), "cam": None}
    page = pages.training_page(folder="run", fold=None, summary=[], label_rows=[], notes=[], history=None, split=None,
                               predictions={"pr": "p.png", "confusion": "c.png", "data": "d", "cams": False,
                                            "worst": [("stamp", [("false positives", [case])])]})
    assert '<img class="plain" src="report_files/%FF.jpg" alt="x">' in page


def test_hostile_labels_and_keys_show_as_text_everywhere(tmp_path):
    """Labels from model.json and tags/keys from the output file appear only as text and attribute
    values: no injected element or attribute, the select, data-* JSON and links give them back intact."""
    labels = list(HOSTILE_LABELS)
    config = trained_config(labels=tuple(labels))
    output = tmp_path / "out"
    key = "k'\"<i onclick=alert(2)>&"
    tag_output(output, "h", [(key, image(tmp_path / "in" / "h" / "k.jpg"), list(HOSTILE_LABELS.values()))], config)
    report.write_run_info(str(output), str(tmp_path / "w.h5"), "keras-weights", "openvino", config, False)
    index = Parsed(read(report.build_report(str(output), progress=False)))
    page = Parsed(item_page(output, "h"))
    for parsed in (index, page):
        assert {tag for tag, _ in parsed.elements} <= PAGE_ELEMENTS
        assert {name for _, attrs in parsed.elements for name in attrs} <= PAGE_ATTRIBUTES
    assert [tag for tag, _ in index.elements].count("script") == 0
    assert [tag for tag, _ in page.elements].count("script") == 4  # item.js, explore.js, review.js, the labels (JSON)
    tagged = labels[:4]
    # index: each label as a header and in its cell's link (percent-encoded, '&' and '=' too)
    assert [text for text in index.text if text in labels] == labels * 2  # the tags table, the items header
    links = [attrs["href"] for attrs in index.having("a") if "#tag=" in attrs["href"]]
    assert [urllib.parse.unquote(link.split("#tag=")[1]) for link in links] == ["-none-", *tagged]
    assert all("&" not in link.split("#tag=")[1] for link in links)
    # item page: options, data-* JSON, chips with their own confidences, the key
    assert [attrs["value"] for attrs in page.having("option")][1:-4] == labels
    [card] = page.having("figure", **{"class": "card review-card"})
    assert json.loads(card["data-t"]) == tagged
    assert json.loads(card["data-p"]) == HOSTILE_LABELS
    text = "".join(page.text)
    for label in tagged:
        assert f"{label} {HOSTILE_LABELS[label]:.3f}" in text
    assert "x=1&y z 0.350 \u25be" in text  # borderline below the threshold
    assert "<bdi>\u05e9\u05dc\u05d5\u05dd</bdi> 0.640" in item_page(output, "h")  # RTL text isolated
    assert key in text and page.having("img")[0]["alt"] == key
    assert json.loads(page.having("body")[0]["data-thresholds"]) == {label: 0.4 for label in labels}


def test_every_field_of_a_card_is_printed_as_text_and_given_back_intact():
    """cards.py prints the cards without a template: each field, hostile, comes back from a browser's
    parse as it went in (attributes, text, links percent-encoded), with no element, attribute or text
    of its own; a card with no tag says so; a neighbour without a thumbnail shows its key."""
    import types

    from markupsafe import escape

    from tagestimate.review import cards

    def hostile(name):
        return f"{name}<i onclick=alert(1)>\"'&amp; \u05e9"

    def parsed_text(page):
        return [text for text in page.text if text.strip()]

    chips = [types.SimpleNamespace(tag=hostile("cam"), confidence=0.8768, cam=hostile("cam/o") + ".jpg", flat=True,
                                   near=True, threshold=0.8),
             types.SimpleNamespace(tag=hostile("cam2"), confidence=0.7, cam="cam/p.jpg", flat=False, near=False,
                                   threshold=0.4),
             types.SimpleNamespace(tag=hostile("near"), confidence=0.4321, cam=None, flat=False, near=True,
                                   threshold=0.41)]
    below = [types.SimpleNamespace(tag=hostile("below"), value=0.3456, threshold=0.39),
             types.SimpleNamespace(tag="low", value=0.35, threshold=0.4)]
    similar = [types.SimpleNamespace(href="a-1.html", anchor="c-k-2", thumb=None, item=hostile("other item"),
                                     key=hostile("other key"), score=0.9123),
               types.SimpleNamespace(href="b-2.html", anchor="c-j-3", thumb="thumbs/b/j.jpg", item="b", key=hostile("j"),
                                     score=0.5)]
    card = types.SimpleNamespace(key=hostile("key"), thumb=hostile("thumbs/t") + ".jpg", source=hostile("../in/s"),
                                 image=hostile("/in/s"), anchor="c-key-1", chips=chips, below=below,
                                 tags=[chip.tag for chip in chips], probabilities={hostile("p"): 0.5}, similar=similar)
    page = Parsed(cards.item_card(card, escape(hostile("item")), escape("0.1")))
    assert {tag for tag, _ in page.elements} <= PAGE_ELEMENTS | {"details", "summary"}  # details: similar images
    assert {name for _, attrs in page.elements for name in attrs} <= PAGE_ATTRIBUTES
    [figure] = page.having("figure")
    assert (figure["data-review-image"], figure["data-review-item"]) == (card.image, hostile("item"))
    assert json.loads(figure["data-t"]) == card.tags and json.loads(figure["data-p"]) == card.probabilities
    assert urllib.parse.unquote(page.having("a")[0]["href"]) == card.source
    assert page.having("img")[0]["alt"] == card.key and urllib.parse.unquote(page.having("img")[0]["src"]) == card.thumb
    [cam] = page.having("span", data_flat="1")
    assert (cam["data-tag"], urllib.parse.unquote(cam["data-cam"]), cam["class"]) == (chips[0].tag, chips[0].cam,
                                                                                     "tag cam near")
    [plain_cam] = page.having("span", data_cam="cam/p.jpg")
    assert plain_cam["class"] == "tag cam" and "data-flat" not in plain_cam
    [near] = page.having("span", **{"class": "tag near"})
    assert (near["data-review-tag"], near["title"]) == (chips[2].tag, "borderline: within 0.1 of the threshold 0.41")
    assert [attrs["data-review-suggest"] for attrs in page.having("span", **{"class": "tag below"})] == [below[0].tag,
                                                                                                        "low"]
    links = page.having("a", **{"class": "sim"})
    assert [link["title"] for link in links] == [f"{similar[0].item} / {similar[0].key}: similarity 0.912",
                                                 f"b / {similar[1].key}: similarity 0.500"]
    assert [(attrs["src"], attrs["alt"]) for attrs in page.having("img")][1:] == [("thumbs/b/j.jpg", similar[1].key)]
    assert parsed_text(page) == [card.key, chips[0].tag, " 0.877", chips[1].tag, " 0.700", chips[2].tag, " 0.432",
                                 below[0].tag, " 0.346 \u25be", "low", " 0.350 \u25be", "similar (2)", similar[0].key]
    bare = types.SimpleNamespace(**{**vars(card), "chips": [], "below": [], "similar": [], "image": None,
                                    "source": None, "thumb": None})
    shown = cards.item_card(bare, escape("i"), escape("0.1"))
    page = Parsed(shown)
    assert page.having("figure")[0]["class"] == "card"
    assert {name for _, attrs in page.elements for name in attrs} == {"class", "id", "data-t", "data-p"}
    assert parsed_text(page) == ["no preview", card.key, "no tag"]
    assert "<details" not in shown and "<a " not in shown
    assert cards.gallery([card, bare], cards.item_card, escape("i"), escape("0.1")) == (
        cards.item_card(card, escape("i"), escape("0.1")) + shown)
    for thumb in (None, hostile("thumbs/x") + ".jpg"):
        body = cards.tag_card_body(hostile("item"), hostile("key"), thumb, hostile("page") + ".html", "c-key-1")
        page = Parsed(cards.tag_card(0.98765, body, escape(hostile("label"))))
        assert {tag for tag, _ in page.elements} <= PAGE_ELEMENTS
        assert page.having("figure")[0]["data-c"] == "0.9877"
        assert urllib.parse.unquote(page.having("a")[0]["href"]) == hostile("page") + ".html#c-key-1"
        assert parsed_text(page) == (["no preview"] if thumb is None else []) + [
            hostile("key"), hostile("item"), hostile("label"), " 0.988"]
        if thumb:
            [img] = page.having("img")
            assert (urllib.parse.unquote(img["src"]), img["alt"]) == (thumb, hostile("key"))


def test_a_card_escapes_each_special_character_alone_and_leaves_plain_text_as_it_is():
    """cards.e: each of & < > " ' is escaped even when it is the only one; text with none of them is
    given back as the very same string (the fast path: no escape call, no new object)."""
    from markupsafe import escape

    from tagestimate.review import cards

    for special in "&<>\"'":
        assert str(cards.e(f"a{special}b")) == str(escape(f"a{special}b")) != f"a{special}b"
    plain = "1054192_11_0.jpg thumbs/a-1/b.jpg"
    assert cards.e(plain) is plain
    assert cards.e(0.5) == "0.5"


def test_borderline_labels_and_the_legend(run_output):
    """The orange border is explained; a label just below its threshold (not a tag, not on the
    card's tags) is shown dashed, a tag just above it outlined."""
    output, _ = run_output
    report.build_report(str(output), progress=False)
    page = Parsed(item_page(output, HOSTILE_ITEM).split('class="gallery"')[1])
    legend = "".join(Parsed(item_page(output, HOSTILE_ITEM).split('id="legend"')[1].split("</div>")[0]).text)
    assert "orange border" in legend and "below the threshold" in legend
    below = [attrs for attrs in page.having("span") if attrs.get("class") == "tag below"]
    assert len(below) == 1 and "below the threshold 0.40" in below[0]["title"]
    assert "picture 0.350 \u25be" in "".join(page.text)
    a = item_page(output, "a")
    assert ('<span class="tag near" data-review-tag="picture" title="borderline: within 0.1 of the threshold 0.40">'
            '<bdi>picture</bdi> 0.450</span>') in a
    assert '<span class="tag" data-review-tag="graphic_map"><bdi>graphic_map</bdi> 0.900</span>' in a
    assert "tag below" not in a.split('class="gallery"')[1]  # no label of item a is just below its threshold


def test_index_shows_the_input_folder(run_output, tmp_path):
    output, config = run_output
    report.write_run_info(str(output), str(tmp_path / "w.h5"), "keras-weights", "openvino", config, False,
                          str(tmp_path / "in"))
    index = read(report.build_report(str(output), progress=False))
    overview = dict(re.findall(r"<tr><th>([^<]+)</th><td>([^<]*)</td></tr>", index))
    assert overview["input folder"] == str(tmp_path / "in")


def test_grad_cam_cards_say_which_tag_and_when_the_map_is_flat(run_output):
    """write_explanations marks an overlay whose heat map is flat; its chip carries the tag's name
    and data-flat, which item.js shows under the image."""
    output, config = run_output

    class Explainer:
        def __init__(self):
            self.config = config

        def explain(self, entries):
            for entry in entries:
                yield entry, {j: np.zeros((4, 4), np.float32) if j == 1 else np.eye(4, dtype=np.float32)
                              for j in entry[3]}

    picture, stamp = config.labels.index("picture"), config.labels.index("stamp")
    entries = [("a", "p3", str(output.parent / "in" / "a" / "p3.jpg"), [1]),
               (HOSTILE_ITEM, HOSTILE_KEY, str(output.parent / "in" / "b" / "x.png"), [stamp])]
    assert picture == 1 and report.write_explanations(str(output), entries, Explainer(), progress=False) == 2
    assert os.path.exists(report.flat_marker(report.cam_path(str(output), "a", "p3", "picture")))
    assert not os.path.exists(report.flat_marker(report.cam_path(str(output), HOSTILE_ITEM, HOSTILE_KEY, "stamp")))
    report.build_report(str(output), progress=False)
    [flat] = Parsed(item_page(output, "a")).having("span", data_tag="picture")
    assert flat["class"] == "tag cam near" and flat["data-flat"] == "1" and "/cam/" in "/" + flat["data-cam"]
    [shaped] = Parsed(item_page(output, HOSTILE_ITEM)).having("span", data_tag="stamp")
    assert "data-flat" not in shaped
    script = item_page(output, "a")
    assert "'Grad-CAM of '+t.dataset.tag" in script and "flat map" in script
    assert "show Grad-CAM (each image's first tag; the card says which)" in script
    assert "Grad-CAM colours" in script


# ---------------------------------------------------------------- training report: how, support 0, folds

def training_run(folder, per_class, labels=("graphic", "stamp")):
    """A run folder with model.json (convnext, asl, 96 px, imagenet) and report.json only: no plots."""
    from tagestimate.model import write_config

    os.makedirs(folder, exist_ok=True)
    config = trained_config(labels=tuple(labels), image_size=96)
    write_config(str(folder), config.__class__(**{**config.__dict__, "backbone": "ConvNeXtTiny", "training": {
        "loss": "asl (gamma_neg 4, gamma_pos 0, clip 0.05)", "initial_weights": "imagenet"}}))
    (folder / "report.json").write_text(json.dumps({
        "labels": list(labels), "per_class": per_class, "macro_f1": 0.5,
        "thresholds": {label: {"threshold": 0.4, "f1": None if not per_class[label]["support"] else 0.5,
                               "tuned": False} for label in labels}}))


def test_training_report_states_how_it_was_trained_and_dashes_unscored_labels(tmp_path):
    from tagestimate.review.train_report import write_training_report

    run = tmp_path / "run"
    training_run(run, {"graphic": {"precision": 0.625, "recall": 0.5, "f1": 0.556, "support": 4},
                       "stamp": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}})
    page = read(write_training_report(str(run), explain=False))
    summary = dict(re.findall(r"<tr><th>([^<]+)</th><td>([^<]*)</td></tr>", page))
    assert (summary["backbone"], summary["image size"], summary["starting weights"]) == \
        ("ConvNeXtTiny", "96 px", "imagenet")
    assert summary["loss"] == "asl (gamma_neg 4, gamma_pos 0, clip 0.05)"
    assert "<tr><td>graphic</td><td>4</td><td>0.625</td><td>0.500</td><td>0.556</td>" in page
    assert "<tr><td>stamp</td><td>0</td><td>-</td><td>-</td><td>-</td><td>0.40 *</td><td>-</td></tr>" in page
    assert 'id="fold"' not in page


def test_fold_pages_say_which_fold_and_the_overview_links_them(tmp_path):
    from tagestimate.review import train_report
    from tagestimate.train import crossval

    run = tmp_path / "cv"
    os.makedirs(run)
    (run / "cv.json").write_text(json.dumps({"folds": 2}))
    reports = []
    for number, (precision, support) in enumerate(((0.5, 3), (0.75, 1)), 1):
        per_class = {"graphic": {"precision": precision, "recall": 0.5, "f1": 0.5, "support": support},
                     "stamp": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}}
        training_run(run / f"fold{number}", per_class)
        reports.append({"per_class": per_class, "macro_f1": 0.4 + number / 10, "micro_f1": 0.5, "best_epoch": number,
                        "epochs_done": 3, "evaluated_images": 5 * number, "tuned": {"macro_f1": 0.6}})
    fold2 = read(train_report.write_training_report(str(run / "fold2"), explain=False))
    assert "Fold 2 of 2 of the cross-validation in" in fold2 and 'href="../report.html"' in fold2
    report_json = dict(crossval.aggregate(reports, ["graphic", "stamp"]), labels=["graphic", "stamp"], folds_count=2,
                       default_threshold=0.4, out_of_fold={"macro_f1": 0.55, "images": 15},
                       thresholds={"graphic": {"threshold": 0.35}, "stamp": {"threshold": 0.4}}, final=None)
    (run / "cv_report.json").write_text(json.dumps(report_json))
    assert report.main([str(run), "--quiet"]) == 0  # the command line writes the overview too
    overview = read(run / "report.html")
    assert "<tr><td>graphic</td><td>4</td><td>0.625 ± 0.177</td><td>0.500 ± 0.000</td>" in overview
    assert "<tr><td>stamp</td><td>0</td><td>-</td><td>-</td><td>-</td><td>0.40</td></tr>" in overview
    links = [attrs["href"] for attrs in Parsed(overview).having("a", **{"class": "fold"})]
    assert links == ["fold2/report.html"]  # fold 1's page is not written yet
    assert re.search(r"fold 1</td><td>5</td><td>1</td><td>3</td><td>0.500</td>", overview)


# ---------------------------------------------------------------- thumbnails made while tagging

class PixelRunner:
    """No model: each label's probability is a fraction of a weighted pixel sum, so any change to the
    pixels the model is given (e.g. a thumbnail made from them in place) changes the outputs."""

    def predict(self, batch):
        sums = np.asarray(batch, np.float64).reshape(len(batch), -1).sum(axis=1)
        return np.mod(np.outer(sums, np.linspace(0.013, 0.031, 11)), 1.0).astype(np.float32)


def page_like(path, size):
    """A JPEG with detail at every scale (gradients, noise, edges): shrinking it differently shows."""
    rng = np.random.default_rng(len(str(path)))
    width, height = size
    x, y = np.meshgrid(np.linspace(0, 1, width), np.linspace(0, 1, height))
    pixels = np.stack([200 * x + 30, 180 * y + 40, 120 + 100 * np.sin(20 * x * y)], axis=-1)
    pixels += rng.normal(0, 12, pixels.shape)
    pixels[height // 3:height // 2, width // 4:3 * width // 4] = (20, 20, 30)  # a dark block: hard edges
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)
    return str(path)


def thumbnail_input(folder):
    """Two items: images decoded at full size for a 224 px model and for a thumbnail (one a PNG), an
    EXIF-rotated JPEG, scans that libjpeg decodes reduced (for the model at 1/4 and 1/2, for a
    thumbnail at 1/4 and 1/4), a bad file."""
    page_like(folder / "a" / "p1.jpg", (300, 200))
    page_like(folder / "a" / "p2.png", (250, 400))
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated: the thumbnail must be upright
    Image.new("RGB", (100, 60), (30, 30, 200)).save(folder / "a" / "p3.jpg", exif=exif)
    page_like(folder / "a" / "scan.jpg", (1400, 1000))
    page_like(folder / "b" / "page.jpg", (700, 900))
    (folder / "b" / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return folder


@pytest.fixture
def decodes(monkeypatch):
    """{path: pixel decodes}: every Pillow load() that decodes pixels (not a header read), by file."""
    from collections import Counter

    from PIL import ImageFile

    counts, original = Counter(), ImageFile.ImageFile.load

    def counting(self):
        if self.tile:  # pixels still to decode: this call decodes them
            counts[self.filename] += 1
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", counting)
    return counts


def tag_with(source, output, report_on, image_size=224, **settings):
    """Tagger.run on `source` as the command runs it, decoding for a model of `image_size` px (224: the
    default backbone's): with the report's recorder as item hook, or none."""
    from tagestimate.tag.inference import find_items
    from tagestimate.tag.local import Tagger
    from tagestimate.tag.settings import InferenceSettings

    items, problems = find_items(str(source))
    recorder = report.ReportRecorder() if report_on else None
    Tagger(PixelRunner(), trained_config(image_size=image_size),
           InferenceSettings(output_dir=str(output), progress=False, workers=2, batch_size=2, **settings),
           on_item=recorder).run(items, problems)
    return items


def thumbnails(output):
    folder = os.path.join(output, "html", "thumbs")
    return {os.path.relpath(os.path.join(root, name), folder): open(os.path.join(root, name), "rb").read()
            for root, _, names in os.walk(folder) for name in names}


def good_images(folder):
    return sorted(str(path) for path in folder.rglob("*") if path.is_file() and path.name != "bad.jpg")


def once_per_image(decodes, source):
    """Each image decoded once, PNG included (its size as shown comes from the same decode: reading
    its EXIF orientation again would make Pillow decode a PNG a second time)."""
    return {path: decodes[path] for path in good_images(source)} == {path: 1 for path in good_images(source)}


def test_the_tagging_pass_makes_the_thumbnails_from_its_one_decode(tmp_path, decodes):
    """With the report, each image is decoded once: its thumbnail is made from tagging's decode and the
    report's build decodes nothing; the outputs are the bytes of a run without the report."""
    source = thumbnail_input(tmp_path / "in")
    items = tag_with(source, tmp_path / "out", report_on=True)
    made = thumbnails(tmp_path / "out")
    assert sorted(made) == sorted(os.path.relpath(report.thumb_path("", item, key), os.path.join("html", "thumbs"))
                                  for item, key in [("a", "p1"), ("a", "p2"), ("a", "p3"), ("a", "scan"),
                                                    ("b", "page")])
    assert once_per_image(decodes, source), dict(decodes)
    decodes.clear()
    report.build_report(str(tmp_path / "out"), items, progress=False)
    assert not decodes and thumbnails(tmp_path / "out") == made  # current: neither decoded nor rewritten
    tag_with(source, tmp_path / "plain", report_on=False)
    for name in ("a.json", "b.json", "errors.json"):
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "plain" / name).read_bytes()


def test_the_thumbnails_are_written_in_the_backlog_thread_and_all_there_when_the_run_returns(tmp_path, monkeypatch):
    """Off the decoding threads: in the backlog's (review/backlog.py), and what it has not started when
    the last image is decoded in the run's own thread. Slowed here, so that a run returning before its
    backlog is done would leave thumbnails missing."""
    import threading
    import time

    from tagestimate.review import recorder

    source = thumbnail_input(tmp_path / "in")
    real, threads = recorder.write_jpeg, []

    def slow(*args, **kwargs):
        time.sleep(0.2)
        threads.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(recorder, "write_jpeg", slow)
    tag_with(source, tmp_path / "out", report_on=True)
    assert len(thumbnails(tmp_path / "out")) == 5 and len(threads) == 5
    assert "backlog" in threads and set(threads) <= {"backlog", "MainThread"}, threads  # no decoding thread


def test_a_thumbnail_has_the_size_pillow_s_thumbnail_gives():
    """thumbs.fitted rounds each side as Image.thumbnail does (sizes the report-only path had before
    and that the pages' layout was made for), over every shape from a sliver to a square."""
    from tagestimate.review.thumbs import THUMB_SIZE, fitted

    sizes = [(w, h) for w in (1, 7, 99, 159, 160, 161, 243, 256, 300, 458, 1000, 4999) for h in (1, 3, 80, 160, 161, 255,
                                                                                                     641, 3001)]
    sizes += [(192, 99), (182, 29), (141, 192), (204, 256)]  # where rounding the other side's size would differ
    for width, height in sizes:
        expected = Image.new("L", (width, height))
        expected.thumbnail((THUMB_SIZE, THUMB_SIZE))
        assert fitted(width, height) == expected.size, (width, height)


def halftone(width, height):
    """Black and white stripes one pixel apart, turned a little: the fine print a shrink aliases into moire."""
    x, y = np.meshgrid(np.arange(width), np.arange(height))
    stripes = ((x + y // 7) % 2 * 255).astype(np.uint8)
    return np.repeat(stripes[..., None], 3, axis=2)


@pytest.mark.parametrize("size", [(256, 256), (300, 200), (458, 255), (509, 256), (255, 700), (3000, 41)])
def test_a_thumbnail_shrinks_fine_stripes_to_grey_and_leaves_its_pixels_alone(size):
    """Stripes one pixel apart, shrunk, should be flat mid grey (the halftone screen of a printed photo
    becomes its tone). shrink() stays nearer grey than a plain bilinear resize (moire: whole stripes
    picked) and than Pillow's box filter, the thumbnails' filter before; the input array is never
    changed, and one that already fits is given back."""
    import cv2

    from tagestimate.review.thumbs import fitted, shrink

    def off_grey(pixels):
        return np.abs(pixels.astype(float) - 127.5).mean()

    pixels = halftone(*size)
    before = pixels.copy()
    small = shrink(pixels)
    np.testing.assert_array_equal(pixels, before)
    target = fitted(*size)
    assert small.shape == (target[1], target[0], 3) and small.dtype == np.uint8
    plain = cv2.resize(pixels, target, interpolation=cv2.INTER_LINEAR)
    box = np.asarray(Image.fromarray(pixels).resize(target, Image.Resampling.BOX))
    assert off_grey(small) < 20 and off_grey(small) * 3 < off_grey(plain), (off_grey(small), off_grey(plain))
    assert off_grey(small) <= off_grey(box), (off_grey(small), off_grey(box))
    fits = halftone(160, 90)
    assert shrink(fits) is fits


def test_a_run_without_the_report_makes_no_thumbnail_and_decodes_once(tmp_path, decodes, monkeypatch):
    from tagestimate.review import thumbs

    monkeypatch.setattr(thumbs, "shrink", lambda *args: pytest.fail("a thumbnail made without the report"))
    source = thumbnail_input(tmp_path / "in")
    tag_with(source, tmp_path / "out", report_on=False)
    assert not os.path.exists(tmp_path / "out" / "html")
    assert once_per_image(decodes, source), dict(decodes)


def pixels(data):
    return np.asarray(Image.open(__import__("io").BytesIO(data)).convert("RGB"), np.float32)


def test_thumbnails_made_while_tagging_match_the_report_only_path(tmp_path):
    """The report-only path (python -m tagestimate.review.report OUT --inputpath IN after --no-report)
    makes the same thumbnails: the same bytes where both decode at full size (small images, PNG),
    the same size and picture where libjpeg decodes reduced at another scale for the model (scans)."""
    source = thumbnail_input(tmp_path / "in")
    tag_with(source, tmp_path / "out", report_on=True)
    tag_with(source, tmp_path / "plain", report_on=False)
    assert report.main([str(tmp_path / "plain"), "--inputpath", str(source), "--quiet"]) == 0
    during, after = thumbnails(tmp_path / "out"), thumbnails(tmp_path / "plain")
    assert sorted(during) == sorted(after) and len(during) == 5
    for item, key in (("a", "p1"), ("a", "p2"), ("a", "p3")):
        name = os.path.relpath(report.thumb_path("", item, key), os.path.join("html", "thumbs"))
        assert during[name] == after[name]
    assert Image.open(__import__("io").BytesIO(during[next(n for n in during if "p3" in n)])).size == (60, 100)
    for item, key in (("a", "scan"), ("b", "page")):
        name = os.path.relpath(report.thumb_path("", item, key), os.path.join("html", "thumbs"))
        ours, theirs = pixels(during[name]), pixels(after[name])
        assert ours.shape == theirs.shape and max(ours.shape[:2]) == 160
        assert np.abs(ours - theirs).mean() < 3.0, np.abs(ours - theirs).mean()  # of 255: the same picture


def test_a_model_smaller_than_a_thumbnail_leaves_reduced_scans_to_the_report(tmp_path, decodes):
    """A 64 px model: libjpeg decodes the 300 x 200 and 700 x 900 JPEGs at 1/2 and 1/8 (150 x 100,
    88 x 113), too small for a thumbnail; the report's build decodes those again (as the report-only
    path does: the same bytes), and only those. The 1400 x 1000 scan, decoded at 175 x 125, still gets
    its thumbnail in the tagging pass."""
    source = thumbnail_input(tmp_path / "in")
    items = tag_with(source, tmp_path / "out", report_on=True, image_size=64)
    small = [os.path.relpath(report.thumb_path("", item, key), os.path.join("html", "thumbs"))
             for item, key in (("a", "p1"), ("b", "page"))]
    assert len(thumbnails(tmp_path / "out")) == 3 and not set(small) & set(thumbnails(tmp_path / "out"))
    decodes.clear()
    report.build_report(str(tmp_path / "out"), items, progress=False)
    assert sorted(decodes) == [str(source / "a" / "p1.jpg"), str(source / "b" / "page.jpg")]
    tag_with(source, tmp_path / "plain", report_on=False, image_size=64)
    assert report.main([str(tmp_path / "plain"), "--inputpath", str(source), "--quiet"]) == 0
    for name in small:
        assert thumbnails(tmp_path / "out")[name] == thumbnails(tmp_path / "plain")[name]
    assert Image.open(tmp_path / "out" / "html" / "thumbs" / small[1]).size == (124, 160)


def test_an_image_over_pillow_s_pixel_limit_gets_its_thumbnail_from_the_reduced_decode(tmp_path, monkeypatch):
    """An image over Pillow's decompression-bomb warning limit is decoded box-reduced (images.py); its
    thumbnail is made from that decode, the bytes the report-only path makes (both reduce it by 2)."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 150_000)  # 500 x 460 = 230,000: reduced, not refused
    from tagestimate.review import thumbs

    source = tmp_path / "in"
    page_like(source / "a" / "huge.png", (500, 460))
    items = tag_with(source, tmp_path / "out", report_on=True)
    made = thumbnails(tmp_path / "out")
    assert len(made) == 1
    monkeypatch.setattr(thumbs, "make_thumbnail", lambda *args: pytest.fail("the report decoded it again"))
    report.build_report(str(tmp_path / "out"), items, progress=False)
    monkeypatch.undo()
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 150_000)
    tag_with(source, tmp_path / "plain", report_on=False)
    assert report.main([str(tmp_path / "plain"), "--inputpath", str(source), "--quiet"]) == 0
    assert thumbnails(tmp_path / "plain") == made
    assert Image.open(__import__("io").BytesIO(next(iter(made.values())))).size == (160, 147)
