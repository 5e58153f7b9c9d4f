"""The inference review report (tagestimate/review/report.py) and the training report's pieces: fast
tests on the files and HTML written, without a model (outputs and sidecars written directly)."""

import html
import json
import os
import re
import shutil

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
    return re.findall(r'<figure class="card"', page)


def read(path):
    return open(path, encoding="utf-8").read()


def item_page(output, name):
    return read(os.path.join(output, "html", report.page_names(name, 1)[0]))


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
    assert len(cards(page)) == 1 and "graphic 0.700" in page and "not shown as borderline" in page
    assert os.listdir(output / "html" / "thumbs" / safe_name("c"))


def test_sidecar_of_a_replaced_output_is_not_trusted(run_output):
    output, config = run_output
    (output / "a.json").write_text('{\n"p0": [{"tag": "stamp", "confidence": 0.99}]\n}\n')
    report.build_report(str(output), progress=False)
    page = item_page(output, "a")
    assert len(cards(page)) == 1 and "stamp 0.990" in page and "graphic_map" not in re.search(
        r'data-p="[^"]*"', page).group(0)


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
    assert sorted(os.listdir(tmp_path / "plain")) == ["a.json", "b.json"]
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
