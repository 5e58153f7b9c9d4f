"""The review report's files and command line, pinned exactly (tagestimate/review/report.py): the
file layout under html/, the sidecar's and run.json's text, the item hook (ReportRecorder), Grad-CAM
overlays with a fake explainer (no Keras), what build_report reads from run.json and writes into the
index, finish_run's calls, and what `python -m tagestimate.review.report` does with each kind of
folder. Written against the survivors of bench/mutation.py's report target."""

import dataclasses
import datetime
import json
import logging
import os
import re
import shutil
import threading
import time
import types

import numpy as np
import pytest
from PIL import Image

from modelfiles import trained_config
from test_report import Parsed, image, item_page, probabilities, read, tag_output
from test_report_explore import embed, similar_links, unit
from tagestimate import storage
from tagestimate.errors import UserError
from tagestimate.formats import Record
from tagestimate.review import explore, report
from tagestimate.review.thumbs import THUMB_SIZE, safe_name

S = safe_name


@pytest.fixture(autouse=True)
def elsewhere(tmp_path, monkeypatch):
    """Each test runs in an empty folder of its own: a path taken relative to the working folder by
    mistake finds nothing there (and writes nothing into the checkout)."""
    folder = tmp_path / "cwd"
    os.makedirs(folder)
    monkeypatch.chdir(folder)


# ---------------------------------------------------------------- file layout

def test_the_files_of_an_item_are_named_under_html():
    out = os.path.join("o", "run")
    assert report.sidecar_path(out, "book/1") == os.path.join(out, "html", "data", S("book/1") + ".json")
    assert report.thumb_path(out, "book", "p 1") == os.path.join(out, "html", "thumbs", S("book"), S("p 1") + ".jpg")
    cam = report.cam_path(out, "book", "p 1", "graphic_map")
    assert cam == os.path.join(out, "html", "cam", S("book"), f"{S('p 1')}.{S('graphic_map')}.jpg")
    assert report.flat_marker(cam) == os.path.join(out, "html", "cam", S("book"), f"{S('p 1')}.{S('graphic_map')}.flat")


@pytest.mark.parametrize("count,suffixes", [(0, [".html"]), (1, [".html"]), (2000, [".html"]),
                                            (2001, [".html", ".p2.html"]),
                                            (4001, [".html", ".p2.html", ".p3.html"])])
def test_page_names(count, suffixes):
    assert report.page_names("item 1", count) == [S("item 1") + suffix for suffix in suffixes]


def test_a_file_no_format_reads_is_named_in_the_error():
    with pytest.raises(ValueError) as raised:
        report.item_format(os.path.join("out", "notes.txt"))
    assert str(raised.value) == "no output format reads notes.txt"


# ---------------------------------------------------------------- files written during the run

def three_labels(**thresholds):
    return trained_config(labels=("graphic_map", "stamp", "picture"), thresholds=thresholds or None)


def test_the_sidecar_is_compact_json_with_four_decimals(tmp_path, monkeypatch):
    config = three_labels(stamp=0.5)
    records = [Record("k1", str(tmp_path / "a.jpg"), (10, 10), np.asarray([0.123456, 0.9, 0.00004], np.float32)),
               Record("k/2", "rel.jpg", (10, 10), np.asarray([0.5, 0.49996, 1.0], np.float32))]
    os.makedirs(tmp_path / "work")
    monkeypatch.chdir(tmp_path / "work")  # a relative image path is kept absolute
    report.write_sidecar(str(tmp_path / "out"), "book 1", records, config)
    text = read(tmp_path / "out" / "html" / "data" / (S("book 1") + ".json"))
    assert text == ('{"item":"book 1","labels":["graphic_map","stamp","picture"],"thresholds":[0.4,0.5,0.4],'
                    f'"images":[["k1",{json.dumps(str(tmp_path / "a.jpg"))},[0.1235,0.9,0.0]],'
                    f'["k/2",{json.dumps(str(tmp_path / "work" / "rel.jpg"))},[0.5,0.5,1.0]]]}}\n')
    assert report.read_sidecar(str(tmp_path / "out"), "book 1") == (
        ["graphic_map", "stamp", "picture"], [0.4, 0.5, 0.4],
        {"k1": (str(tmp_path / "a.jpg"), [0.1235, 0.9, 0.0]), "k/2": (str(tmp_path / "work" / "rel.jpg"), [0.5, 0.5, 1.0])})


def test_a_sidecar_of_another_item_or_with_mismatched_thresholds_is_not_used(tmp_path):
    folder = tmp_path / "html" / "data"
    os.makedirs(folder)
    good = {"item": "a", "labels": ["x", "y"], "thresholds": [0.4, 0.5], "images": [["k", "/p.jpg", [0.1, 0.9]]]}
    for name, data, expected in [
            ("a", good, (["x", "y"], [0.4, 0.5], {"k": ("/p.jpg", [0.1, 0.9])})),
            ("a", {**good, "item": "b"}, None),  # a renamed file: another item's
            ("a", {**good, "thresholds": [0.4]}, None),
            ("a", {**good, "item": "b", "thresholds": [0.4]}, None)]:
        (folder / (S(name) + ".json")).write_text(json.dumps(data))
        assert report.read_sidecar(str(tmp_path), name) == expected


def test_run_info_is_indented_utf8_json_with_every_field(tmp_path, monkeypatch):
    config = dataclasses.replace(trained_config(labels=("graphic_map", "stamp"), thresholds={"stamp": 0.6}),
                                 labelmap={"labels": ["graphic_map", "stamp"],
                                           "names": {"stamp": {"en": "ex libris", "ja": "蔵書印"}}})
    monkeypatch.chdir(tmp_path)
    report.write_run_info(str(tmp_path / "out"), "w.h5", "keras-weights", "openvino", config, "yes",
                          str(tmp_path / "in"))
    text = read(tmp_path / "out" / "html" / "run.json")
    info = json.loads(text)
    date = info["date"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d", date)
    assert abs(datetime.datetime.fromisoformat(date).timestamp() - time.time()) < 60
    expected = {"weights": str(tmp_path / "w.h5"), "kind": "keras-weights", "backend": "openvino",
                "input": str(tmp_path / "in"), "labels": ["graphic_map", "stamp"], "thresholds": [0.4, 0.6],
                "explain": True, "names": {"graphic_map": {"en": "map", "ja": "地図"},
                                           "stamp": {"en": "ex libris", "ja": "蔵書印"}}, "date": date}
    assert text == json.dumps(expected, ensure_ascii=False, indent=1) + "\n"
    assert "蔵書印" in text
    report.write_run_info(str(tmp_path / "out"), "w.h5", "tf", "tensorflow", config, 0)
    info = json.loads(read(tmp_path / "out" / "html" / "run.json"))
    assert "input" not in info and info["explain"] is False and info["backend"] == "tensorflow"


def test_the_recorder_writes_the_sidecar_and_remembers_what_to_explain(tmp_path):
    config = three_labels(stamp=0.5)
    recorder = report.ReportRecorder()
    assert recorder.explain is False and recorder.explained == []
    rows = [Record("k1", "/in/a/1.jpg", (9, 9), np.asarray([0.9, 0.5, 0.41], np.float32)),
            Record("k2", "/in/a/2.jpg", (9, 9), np.asarray([0.1, 0.2, 0.3], np.float32))]
    recorder(str(tmp_path), "a", rows, config)
    assert recorder.explained == []
    assert report.read_sidecar(str(tmp_path), "a")[2]["k1"] == ("/in/a/1.jpg", [0.9, 0.5, 0.41])
    explaining = report.ReportRecorder(explain=True)
    explaining(str(tmp_path), "a", rows, config)
    explaining(str(tmp_path), "b", [Record("k3", "/in/b/3.jpg", (9, 9), np.asarray([0.2, 0.51, 0.4], np.float32))],
               config)
    # stamp at exactly its threshold 0.5 is not a tag; picture 0.41 over 0.4 is
    assert explaining.explained == [("a", "k1", "/in/a/1.jpg", [0, 2]), ("a", "k2", "/in/a/2.jpg", []),
                                    ("b", "k3", "/in/b/3.jpg", [1])]
    assert report.read_sidecar(str(tmp_path), "b")[2] == {"k3": ("/in/b/3.jpg", [0.2, 0.51, 0.4])}


def rgb(size, colour=(0, 0, 0)):
    """A decoded image as keep() gives it to on_image: an (H, W, 3) uint8 array, for a (width, height)."""
    return np.full((size[1], size[0], 3), colour, np.uint8)


def now(recorder, *image):
    """on_image, then images_done, as the engines call them: the thumbnail is written on return."""
    recorder.on_image(*image)
    recorder.images_done()
    return recorder


def thumb_of(tmp_path, key):
    path = report.thumb_path(str(tmp_path / "out"), "a", key)
    return Image.open(path).size if os.path.exists(path) else None


def test_on_image_makes_thumbnails_of_local_images_large_enough(tmp_path, monkeypatch):
    recorder = report.ReportRecorder()
    out = str(tmp_path / "out")
    source = image(tmp_path / "in" / "a.jpg", size=(400, 200))
    for key, size, reduced in [("full", (400, 200), False), ("edge", (THUMB_SIZE, 80), True),
                               ("small", (THUMB_SIZE - 1, 80), True), ("plain", (100, 50), False)]:
        recorder.on_image(out, "a", key, source, rgb(size, (10, 200, 10)), reduced)
    recorder.images_done()
    assert [thumb_of(tmp_path, key) for key in ("full", "edge", "small", "plain")] == [
        (160, 80), (160, 80), None, (100, 50)]
    monkeypatch.setattr(storage, "on_disk", lambda path: not str(path).startswith("s3://"))
    now(recorder, out, "a", "remote", "s3://bucket/a.jpg", rgb((400, 200)), False)
    assert thumb_of(tmp_path, "remote") is None


def test_on_image_redoes_a_thumbnail_older_than_its_image(tmp_path):
    """Each run has its own recorder: the second and third runs find the first run's folder."""
    out = str(tmp_path / "out")
    source = image(tmp_path / "in" / "a.jpg", size=(400, 200))
    now(report.ReportRecorder(), out, "a", "k", source, rgb((400, 200), (0, 0, 0)), False)
    target = report.thumb_path(out, "a", "k")
    os.utime(target, (1e9, 1e9))
    os.utime(source, (1e9 - 10, 1e9 - 10))
    now(report.ReportRecorder(), out, "a", "k", source, rgb((400, 200), (255, 255, 255)), False)
    assert os.stat(target).st_mtime == 1e9  # current: kept
    os.utime(source, (1e9 + 10, 1e9 + 10))
    now(report.ReportRecorder(), out, "a", "k", source, rgb((400, 200), (255, 255, 255)), False)
    assert Image.open(target).getpixel((5, 5))[0] > 200  # redone from the new decode


def test_on_image_checks_nothing_in_a_folder_its_run_made_and_makes_each_folder_once(tmp_path, monkeypatch):
    """The thumbnails of an item whose folder this run made are written without a stat: nothing there
    predates the run. An item folder an earlier run left is checked image by image."""
    out = str(tmp_path / "out")
    source = image(tmp_path / "in" / "a.jpg", size=(400, 200))
    os.makedirs(os.path.dirname(report.thumb_path(out, "old", "k")))  # an earlier run's folder
    checked, made = [], []
    from tagestimate.review import recorder

    real_is_current, real_mkdir = recorder.is_current, os.mkdir
    monkeypatch.setattr(recorder, "is_current", lambda target, *sources: checked.append(target) or
                        real_is_current(target, *sources))
    monkeypatch.setattr(os, "mkdir", lambda path, *args: made.append(path) or real_mkdir(path, *args))
    recorder = report.ReportRecorder()
    for item, key in [("new", "k1"), ("new", "k2"), ("old", "k1"), ("old", "k2"), ("new", "k3")]:
        recorder.on_image(out, item, key, source, rgb((400, 200)), False)
    recorder.images_done()
    assert checked == [report.thumb_path(out, "old", "k1"), report.thumb_path(out, "old", "k2")]
    folders = [os.path.dirname(report.thumb_path(out, item, "k")) for item in ("new", "old")]
    assert [path for path in made if path in folders] == folders  # once each
    for item, key in [("new", "k1"), ("new", "k2"), ("new", "k3"), ("old", "k1"), ("old", "k2")]:
        assert Image.open(report.thumb_path(out, item, key)).size == (160, 80)


def test_on_image_in_a_fresh_output_makes_the_folders_and_trusts_them_even_when_another_thread_won(tmp_path,
                                                                                                     monkeypatch):
    """No html/thumbs/ yet: the first image makes the folders (makedirs), and the item's next images are
    written without a stat. A decoding thread that finds the folder made by another one between its
    two attempts still writes its thumbnail."""
    from tagestimate.review import recorder

    out = str(tmp_path / "out")
    source = image(tmp_path / "in" / "a.jpg", size=(400, 200))
    checked, real_is_current, real_mkdir = [], recorder.is_current, os.mkdir
    monkeypatch.setattr(recorder, "is_current", lambda target, *sources: checked.append(target) or
                        real_is_current(target, *sources))
    made = recorder.ReportRecorder()
    for key in ("k1", "k2"):
        made.on_image(out, "a", key, source, rgb((400, 200)), False)
    made.images_done()
    assert checked == [] and all(os.path.getsize(report.thumb_path(out, "a", key)) for key in ("k1", "k2"))
    raced = os.path.dirname(report.thumb_path(out, "b", "k"))

    def other_thread_first(path, *args):  # the parent is missing for us, then the other thread makes it all
        if path == raced and not os.path.exists(os.path.dirname(path)):
            os.makedirs(path)
            raise FileNotFoundError(path)
        return real_mkdir(path, *args)

    shutil.rmtree(os.path.join(out, "html"))
    monkeypatch.setattr(os, "mkdir", other_thread_first)
    now(recorder.ReportRecorder(), out, "b", "k", source, rgb((400, 200)), False)
    assert os.path.getsize(report.thumb_path(out, "b", "k"))


def test_on_image_never_raises_and_logs_why(tmp_path, caplog):
    blocked = tmp_path / "out"
    blocked.write_text("a file where the output folder should be")
    source = image(tmp_path / "in" / "a.jpg")
    with caplog.at_level(logging.DEBUG, logger="tagestimate.review.recorder"):
        now(report.ReportRecorder(), str(blocked), "a", "k", source, rgb((300, 200)), False)
    [record] = [r for r in caplog.records if r.name == "tagestimate.review.recorder"]
    assert record.levelno == logging.DEBUG
    assert re.fullmatch(rf"thumbnail of {re.escape(source)} not made while tagging \(\[Errno \d+\] .+\)",
                        record.getMessage())


# ---------------------------------------------------------------- Grad-CAM overlays

class FakeExplainer:
    """Explainer's interface for write_explanations: .config.labels and explain(entries) yielding
    (entry, {label index: heat map}); records which (item, key) it was asked for."""

    def __init__(self, labels, maps):
        self.config = types.SimpleNamespace(labels=labels)
        self.maps, self.asked = maps, []

    def explain(self, entries):
        entries = list(entries)
        self.asked.append([(entry[0], entry[1]) for entry in entries])
        for entry in entries:
            yield entry, self.maps.get((entry[0], entry[1]), {})


GRADIENT = np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4)


@pytest.fixture
def cam_input(tmp_path):
    paths = {key: image(tmp_path / "in" / f"{key}.jpg", (40 * n, 90, 90)) for n, key in enumerate(("p1", "p2", "p3"))}
    entries = [("a", "gone", str(tmp_path / "in" / "gone.jpg"), [0]),  # deleted since tagging: no overlay
               ("a", "p1", paths["p1"], []),  # no tag: not explained
               ("a", "p2", paths["p2"], [1]),  # the explainer gives no map
               ("a", "p3", paths["p3"], [0, 1, 2])]
    maps = {("a", "gone"): {0: GRADIENT},
            ("a", "p3"): {0: np.full((4, 4), 0.5, np.float32), 1: GRADIENT,
                          2: np.array([[0.0, 1e-6], [0.0, 0.0]], np.float64)}}
    return tmp_path / "out", entries, FakeExplainer(("x", "y", "z"), maps), paths


def cams(out):
    folder = out / "html" / "cam" / S("a")
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def test_overlays_are_written_for_tagged_images_with_a_bar(cam_input, capsys):
    out, entries, explainer, _ = cam_input
    assert report.write_explanations(str(out), entries, explainer) == 3
    assert explainer.asked == [[("a", "gone"), ("a", "p2"), ("a", "p3")]]
    stem = S("p3")
    assert cams(out) == sorted([f"{stem}.{S('x')}.jpg", f"{stem}.{S('x')}.flat", f"{stem}.{S('y')}.jpg",
                                f"{stem}.{S('z')}.jpg"])
    assert os.path.getsize(report.flat_marker(report.cam_path(str(out), "a", "p3", "x"))) == 0
    assert Image.open(report.cam_path(str(out), "a", "p3", "y")).size == (120, 80)
    err = capsys.readouterr().err
    assert re.search(r"grad-cam: 100%\|[^|]*\| 3/3 \[[^\]]*img/s\]", err), err


def test_overlays_are_kept_while_newer_than_image_and_weights(cam_input, capsys):
    out, entries, explainer, paths = cam_input
    weights = out.parent / "w.h5"
    weights.write_bytes(b"w")
    os.utime(weights, (1e9, 1e9))
    for path in paths.values():
        os.utime(path, (1e9, 1e9))
    assert report.write_explanations(str(out), entries, explainer, str(weights), progress=False) == 3
    assert report.write_explanations(str(out), entries, explainer, str(weights), progress=False) == 0
    assert report.write_explanations(str(out), entries, explainer, progress=False) == 0
    assert explainer.asked[1:] == [[("a", "gone"), ("a", "p2")]] * 2  # only those without overlays
    explainer.maps["a", "p3"][0] = GRADIENT  # no longer flat: its marker goes
    os.utime(paths["p3"], (time.time() + 100,) * 2)  # the image changed
    assert report.write_explanations(str(out), entries, explainer, progress=False) == 3
    assert not os.path.exists(report.flat_marker(report.cam_path(str(out), "a", "p3", "x")))
    os.utime(paths["p3"], (1e9, 1e9))
    os.utime(weights, (time.time() + 200,) * 2)  # new weights: every overlay again
    assert report.write_explanations(str(out), entries, explainer, progress=False) == 0
    assert report.write_explanations(str(out), entries, explainer, str(weights), progress=False) == 3
    assert explainer.asked[-2:] == [[("a", "gone"), ("a", "p2")], [("a", "gone"), ("a", "p2"), ("a", "p3")]]
    assert capsys.readouterr().err == ""  # progress=False: no bar


# ---------------------------------------------------------------- reading a finished folder

def test_list_item_files_skips_hidden_errors_and_folders_and_sorts_naturally(tmp_path):
    for name in ("a10.json", "a2.json", "a2.csv", "b.csv", "c.csv", "c.iiif.json", "errors.json", ".hidden.json",
                 "notes.txt"):
        (tmp_path / name).write_text("{}")
    os.makedirs(tmp_path / "sub.json")
    assert list(report.list_item_files(str(tmp_path)).items()) == [
        ("a2", str(tmp_path / "a2.json")), ("a10", str(tmp_path / "a10.json")), ("b", str(tmp_path / "b.csv")),
        ("c", str(tmp_path / "c.csv"))]


def write_csv(folder, keys):
    from tagestimate.tag.inference import write_item

    records = [Record(key, "/in/x.jpg", (9, 9), np.asarray([0.9, 0.1, 0.1], np.float32)) for key in keys]
    write_item(str(folder), "a", records, three_labels(), "csv")
    return str(folder / "a.csv")


def test_read_tags_keeps_a_line_break_in_a_csv_key(tmp_path):
    assert report.read_tags(write_csv(tmp_path, ["p\r\n2", "q"])) == {"p\r\n2": [("graphic_map", 0.9)],
                                                                     "q": [("graphic_map", 0.9)]}


def test_a_csv_key_with_a_lone_carriage_return_is_read_back_whole(tmp_path):
    assert report.read_tags(write_csv(tmp_path, ["p\r1"])) == {"p\r1": [("graphic_map", 0.9)]}


def ascii_locale_open(real_open=open):
    """open() as under a non-UTF-8 locale (e.g. Windows cp932, here ASCII): an encoding must be named."""
    def opener(file, mode="r", *args, **kwargs):
        if "b" not in mode and kwargs.get("encoding") is None and not (args and args[1:2]):
            kwargs["encoding"] = "ascii"
        return real_open(file, mode, *args, **kwargs)
    return opener


def test_report_files_are_read_as_utf8_whatever_the_locale(tmp_path, monkeypatch):
    out = tmp_path / "out"
    rows = [("頁1", image(tmp_path / "in" / "畫" / "1.jpg"), probabilities(graphic_map=0.9))]
    tag_output(out, "畫", rows, trained_config())
    (out / "errors.json").write_text(json.dumps([{"item": "畫", "path": "壊.jpg", "reason": "empty file"}, 3],
                                                ensure_ascii=False), encoding="utf-8")
    report.write_run_info(str(out), str(tmp_path / "重み.h5"), "keras-weights", "openvino", trained_config(), False)
    sidecar = report.sidecar_path(str(out), "畫")  # JSON is UTF-8: a sidecar written unescaped reads the same
    with open(sidecar, encoding="utf-8") as handle:
        data = json.load(handle)
    with open(sidecar, "w", encoding="utf-8") as handle:
        json.dump(data, handle, ensure_ascii=False)
    monkeypatch.setattr(report, "open", ascii_locale_open(), raising=False)
    assert report.read_tags(str(out / "畫.json")) == {"頁1": [("graphic_map", 0.9)]}
    assert report.read_errors(str(out)) == [{"item": "畫", "path": "壊.jpg", "reason": "empty file"}]
    assert report.read_run_info(str(out))["weights"] == str(tmp_path / "重み.h5")
    assert report.read_sidecar(str(out), "畫")[2]["頁1"][0] == rows[0][1]


def test_run_info_that_is_not_an_object_is_ignored(tmp_path):
    os.makedirs(tmp_path / "html")
    (tmp_path / "html" / "run.json").write_text('["labels"]')
    assert report.read_run_info(str(tmp_path)) == {}


@pytest.mark.parametrize("kept,value,threshold,expected", [
    (False, 0.4005, 0.4, True),  # rounding at the threshold: within 0.001
    (True, 0.001, 0.002, True),  # exactly 0.001 from it
    (False, 0.402, 0.4, False),
    (True, 0.3, 0.4, False)])
def test_agrees_tolerates_rounding_at_the_threshold_only(kept, value, threshold, expected):
    tags = [("x", 0.9)] + ([("y", value)] if kept else [])
    assert report.agrees(tags, [0.9, value], ["x", "y"], [0.4, threshold]) is expected


# ---------------------------------------------------------------- build_report: what it reads, what the index shows

def write_outputs(out, items):
    """NDL JSON outputs written directly (no sidecar): {item: {key: [(tag, confidence)]}}."""
    os.makedirs(out, exist_ok=True)
    for name, keys in items.items():
        (out / f"{name}.json").write_text(json.dumps(
            {key: [{"tag": tag, "confidence": value} for tag, value in tags] for key, tags in keys.items()}))


def write_run_json(out, **info):
    os.makedirs(out / "html", exist_ok=True)
    (out / "html" / "run.json").write_text(json.dumps(info))


def body_thresholds(page):
    return json.loads(Parsed(page).having("body")[0]["data-thresholds"])


def tags_table(index):
    """[(label, threshold, images, items, borderline)] of the index's tags table."""
    return re.findall(r"<tr><td>([^<]+)</td><td>([^<]*)</td><td>(\d+)</td><td>(\d+)</td><td>(\d+)</td>", index)


def overview(index):
    return dict(re.findall(r"<tr><th>([^<]+)</th><td>([^<]*)</td></tr>", index))


def test_items_without_sidecar_take_labels_and_thresholds_from_run_json(tmp_path):
    out = tmp_path / "out"
    write_outputs(out, {"c": {"k1": [("graphic_map", 0.9)], "k2": []}})
    write_run_json(out, labels=["stamp", "graphic_map", "picture"], thresholds=[0.3, 0.5, 0.7])
    index = read(report.build_report(str(out), progress=False))
    assert body_thresholds(item_page(out, "c")) == {"stamp": 0.3, "graphic_map": 0.5, "picture": 0.7}
    assert tags_table(index) == [("stamp", "0.30", "0", "0", "0"), ("graphic_map", "0.50", "1", "1", "0"),
                                 ("picture", "0.70", "0", "0", "0")]
    write_run_json(out, labels=["stamp", "graphic_map"])  # no thresholds: the default 0.4
    report.build_report(str(out), progress=False)
    assert body_thresholds(item_page(out, "c")) == {"stamp": 0.4, "graphic_map": 0.4}


def test_labels_come_from_sidecars_then_extra_tags_and_totals_add_up(tmp_path):
    out = tmp_path / "out"
    config = trained_config(labels=("graphic_map", "stamp"), thresholds={"graphic_map": 0.04})
    tag_output(out, "a", [("k1", image(tmp_path / "in" / "1.jpg"), [0.14, 0.9]),  # exactly 0.1 above 0.04
                          ("k2", image(tmp_path / "in" / "2.jpg"), [0.01, 0.1])], config)
    data = json.loads(read(out / "a.json"))
    data["k1"].append({"tag": "ukiyoe", "confidence": 0.77})  # --extra-tags
    (out / "a.json").write_text(json.dumps(data))
    write_outputs(out, {"b": {"x1": [], "x2": [], "x3": [("stamp", 0.5)]}})
    index = read(report.build_report(str(out), progress=False))
    assert [row[0] for row in tags_table(index)] == ["graphic_map", "stamp", "ukiyoe"]
    assert [row[2:] for row in tags_table(index)] == [("1", "1", "2"), ("2", "2", "0"), ("1", "1", "0")]
    assert (overview(index)["items"], overview(index)["images"], overview(index)["images with no tag"]) == (
        "2", "5", "3")
    links = [attrs["href"] for attrs in Parsed(index).having("a")]
    assert f"html/{S('a')}.html" in links and f"html/{S('b')}.html" in links
    assert f"html/{explore.tag_page_names('stamp', 2, report.PAGE_SIZE)[0]}" in links
    assert 'href="../index.html"' in item_page(out, "a")


def test_an_unreadable_output_does_not_stop_the_items_after_it(tmp_path, monkeypatch):
    out = tmp_path / "out"
    write_outputs(out, {"b": {"k": [("stamp", 0.5)]}})
    (out / "a.json").write_text("{not json")
    index_path = report.build_report(str(out), progress=False)
    assert index_path == os.path.join(str(out), "index.html") and os.listdir(os.getcwd()) == []
    index = read(index_path)
    assert "cannot read a.json (" in index and overview(index)["items"] == "1"
    assert os.path.exists(out / "html" / report.page_names("b", 1)[0])


def test_the_report_and_neighbours_bars_show_unless_quiet(tmp_path, capsys):
    out = tmp_path / "out"
    write_outputs(out, {"a": {"k": [], "j": []}, "b": {"k": []}})
    base = unit(np.random.default_rng(4).normal(size=(3, 8)))
    embed(out, "a", {"k": base[0], "j": base[1]})
    embed(out, "b", {"k": base[2]})
    report.build_report(str(out), progress=False)
    assert capsys.readouterr().err == ""
    os.remove(out / "html" / explore.CACHE)  # neighbours computed again
    report.build_report(str(out))
    err = capsys.readouterr().err
    assert re.search(r"report: 100%\|[^|]*\| 2/2 \[[^\]]*item/s\]", err), err
    assert re.search(r"neighbours: 100%\|[^|]*\| 3/3 ", err), err


def test_thumbnails_are_made_by_the_thumbs_pool(tmp_path, monkeypatch):
    out = tmp_path / "out"
    keys = [f"k{n}" for n in range(9)]
    write_outputs(out, {"a": {key: [] for key in keys}})
    names, lock = set(), threading.Lock()

    def slow(source, target):
        with lock:
            names.add(threading.current_thread().name)
        time.sleep(0.05)

    monkeypatch.setattr(report, "ensure_thumbnail", slow)
    items = [types.SimpleNamespace(name="a", images=[(key, str(tmp_path / f"{key}.jpg")) for key in keys])]
    report.build_report(str(out), items, progress=False)
    assert names == {f"thumbs_{n}" for n in range(4)}
    names.clear()
    report.build_report(str(out), items, progress=False, workers=2)
    assert names == {"thumbs_0", "thumbs_1"}


def test_lang_names_tags_from_run_json_and_only_with_lang(tmp_path):
    out = tmp_path / "out"
    write_outputs(out, {"a": {"k": [("stamp", 0.9), ("graphic_map", 0.8)]}})
    write_run_json(out, labels=["stamp", "graphic_map"], thresholds=[0.4, 0.4],
                   names={"stamp": {"en": "ex libris", "ja": "蔵書印"}})
    chips = r'<span class="tag[^"]*" data-review-tag="([^"]+)"[^>]*><bdi>([^<]+)</bdi>'
    report.build_report(str(out), progress=False, lang="ja")
    assert re.findall(chips, item_page(out, "a")) == [("stamp", "蔵書印"), ("graphic_map", "地図")]
    report.build_report(str(out), progress=False)
    assert re.findall(chips, item_page(out, "a")) == [("stamp", "stamp"), ("graphic_map", "graphic_map")]
    write_run_json(out, labels=["stamp", "graphic_map"], names=["not", "a", "dict"])
    report.build_report(str(out), progress=False, lang="en")
    assert re.findall(chips, item_page(out, "a")) == [("stamp", "seal stamp"), ("graphic_map", "map")]


def test_grad_cam_chips_only_where_an_overlay_exists(run_output_with_cams):
    out = run_output_with_cams
    page = Parsed(item_page(out, "a"))
    cams = {attrs["data-review-tag"]: attrs.get("data-cam") for attrs in page.having("span")
            if "data-review-tag" in attrs}
    assert cams == {"graphic_map": f"cam/{S('a')}/{S('k1')}.{S('graphic_map')}.jpg", "stamp": None}
    assert "show Grad-CAM" in item_page(out, "a")
    assert "show Grad-CAM" not in item_page(out, "b")  # no overlay of its own


@pytest.fixture
def run_output_with_cams(tmp_path):
    out = tmp_path / "out"
    write_outputs(out, {"a": {"k1": [("graphic_map", 0.9)], "k2": [("stamp", 0.8)]}, "b": {"k": [("stamp", 0.7)]}})
    cam = report.cam_path(str(out), "a", "k1", "graphic_map")
    os.makedirs(os.path.dirname(cam))
    Image.new("RGB", (8, 8)).save(cam)
    report.build_report(str(out), progress=False)
    return out


def test_similar_links_and_the_map_follow_natural_key_order(tmp_path, monkeypatch):
    """Keys k1, k2, k10 in natural order on pages of 2: k10 is on the item's second page, and the
    similar links and tag pages that point to it say so."""
    monkeypatch.setattr(report, "PAGE_SIZE", 2)
    out = tmp_path / "out"
    config = trained_config()
    rng = np.random.default_rng(7)
    base = unit(rng.normal(size=(3, 16)))
    keys = ["k10", "k2", "k1"]
    tag_output(out, "a", [(key, image(tmp_path / "in" / f"{key}.jpg"), probabilities(stamp=0.5 + n / 10))
                          for n, key in enumerate(keys)], config)
    embed(out, "a", {key: base[n] for n, key in enumerate(keys)})
    index = read(report.build_report(str(out), progress=False))
    first, second = report.page_names("a", 3)
    links = similar_links(out, "a")
    assert sorted(links) == ["k1", "k2"]  # the first page's cards
    assert all((second, explore.anchor("k10")) in found for found in links.values())
    assert (first, explore.anchor("k1")) in similar_links_on(out, second)["k10"]
    tag_page = read(out / "html" / explore.tag_page_names("stamp", 3, 2)[1])  # k10: the least confident
    assert f'href="{second}#{explore.anchor("k10")}"' in tag_page
    assert 'href="html/map.html"' in index
    data = json.loads(re.search(r'id="mapdata">(.*?)</script>', read(out / "html" / "map.html"), re.S).group(1))
    assert "stamp" in json.dumps(data)


def similar_links_on(out, page_name):
    import html as html_module

    page = read(out / "html" / page_name)
    found = {}
    for card in re.findall(r'<figure class="card[^"]*".*?</figure>', page, re.S):
        key = html_module.unescape(re.search(r'<div class="key"><bdi>(.*?)</bdi>', card).group(1))
        found[key] = re.findall(r'<a class="sim" href="([^"#]*)#([^"]*)"', card)
    return found


# ---------------------------------------------------------------- finish_run

@pytest.fixture
def finishing(tmp_path, monkeypatch):
    """A fake bundle, and the calls finish_run makes (Explainer.from_bundle, write_explanations,
    build_report) recorded instead of run."""
    from tagestimate.review import explain

    weights = tmp_path / "w.h5"
    weights.write_bytes(b"w")
    config = trained_config(labels=("graphic_map", "stamp"))
    bundle = types.SimpleNamespace(path=str(weights), kind="keras-weights", config=config, output_config=config)
    calls = []

    def from_bundle(bundle, draft=True, batch_size=8):
        calls.append(("from_bundle", bundle, draft))
        return "explainer"

    def write_explanations(output_dir, entries, explainer, weights=None, progress=True):
        calls.append(("write_explanations", output_dir, entries, explainer, weights, progress))
        return 1

    def build_report(output_dir, items=(), progress=True, workers=4, lang=None):
        calls.append(("build_report", output_dir, items, progress, workers, lang))
        return os.path.join(output_dir, "index.html")

    monkeypatch.setattr(explain.Explainer, "from_bundle", from_bundle)
    monkeypatch.setattr(report, "write_explanations", write_explanations)
    monkeypatch.setattr(report, "build_report", build_report)
    return types.SimpleNamespace(out=str(tmp_path / "out"), bundle=bundle, calls=calls, weights=str(weights),
                                 input=str(tmp_path / "in"))


def run_json(out):
    return json.loads(read(os.path.join(out, "html", "run.json")))


def test_finish_run_without_explain(finishing):
    f = finishing
    items = ["item"]
    assert report.finish_run(f.out, items, f.bundle, "openvino") == os.path.join(f.out, "index.html")
    assert f.calls == [("build_report", f.out, items, True, 4, None)]
    info = run_json(f.out)
    assert (info["weights"], info["kind"], info["backend"], info["labels"], info["explain"]) == (
        f.weights, "keras-weights", "openvino", ["graphic_map", "stamp"], False)
    assert "input" not in info


def test_finish_run_with_explain(finishing):
    f = finishing
    entries, items = [("a", "k", "/p.jpg", [0])], ["item"]
    report.finish_run(f.out, items, f.bundle, "tensorflow", entries, progress=False, input_dir=f.input, lang="ja")
    assert f.calls == [("from_bundle", f.bundle, True),
                       ("write_explanations", f.out, entries, "explainer", f.weights, False),
                       ("build_report", f.out, items, False, 4, "ja")]
    info = run_json(f.out)
    assert (info["backend"], info["explain"], info["input"]) == ("tensorflow", True, f.input)
    f.calls.clear()
    report.finish_run(f.out, items, f.bundle, "tensorflow", entries, draft=False)
    assert f.calls[0] == ("from_bundle", f.bundle, False) and f.calls[1][-1] is True


def test_finish_run_with_nothing_to_explain_still_says_explain(finishing):
    f = finishing
    report.finish_run(f.out, [], f.bundle, "openvino", [])
    assert [call[0] for call in f.calls] == ["build_report"] and run_json(f.out)["explain"] is True


def test_finish_run_turns_a_write_error_into_a_user_error(finishing, monkeypatch):
    f = finishing

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report, "build_report", full)
    with pytest.raises(UserError) as raised:
        report.finish_run(f.out, [], f.bundle, "openvino")
    assert str(raised.value) == (f"could not write the report in {f.out} ([Errno 28] No space left on device); the "
                                 "tags are written; run python -m tagestimate.review.report on the output folder to "
                                 "retry")
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


# ---------------------------------------------------------------- the command line

@pytest.fixture
def command(monkeypatch):
    """main() with build_report, write_training_report and write_crossval_report recorded."""
    from tagestimate.review import train_report

    calls = []

    def build_report(output_dir, items=(), progress=True, workers=4, lang=None):
        calls.append(("inference", output_dir, [item.name for item in items], progress, lang))
        return os.path.join(output_dir, "index.html")

    def write_training_report(out, model=None, data=None, explain=True):
        calls.append(("training", out, model, data, explain))
        return os.path.join(out, "report.html")

    def write_crossval_report(out):
        calls.append(("folds", out))
        return os.path.join(out, "report.html")

    monkeypatch.setattr(report, "build_report", build_report)
    monkeypatch.setattr(train_report, "write_training_report", write_training_report)
    monkeypatch.setattr(train_report, "write_crossval_report", write_crossval_report)
    return calls


def test_main_rejects_a_missing_folder(tmp_path, capsys):
    missing = str(tmp_path / "nowhere")
    with pytest.raises(SystemExit) as stopped:
        report.main([missing])
    assert stopped.value.code == 2
    assert capsys.readouterr().err == f"error: {missing} is not a folder; pass an output or run folder\n"


def test_main_builds_the_inference_report_of_an_output_folder(tmp_path, command, capsys):
    out = tmp_path / "out"
    os.makedirs(out)
    assert report.main([str(out)]) == 0
    assert capsys.readouterr().out == f"report written: {out / 'index.html'}\n"
    image(tmp_path / "in" / "book" / "1.jpg")
    image(tmp_path / "in" / "map" / "1.jpg")
    assert report.main([str(out), "--quiet", "--lang", "ja", "--inputpath", str(tmp_path / "in")]) == 0
    assert report.main([str(out), "--lang", "en"]) == 0
    assert command == [("inference", str(out), [], True, None), ("inference", str(out), ["book", "map"], False, "ja"),
                       ("inference", str(out), [], True, "en")]


@pytest.mark.parametrize("files", [["history.csv"], ["report.json"], ["history.csv", "report.json"]])
def test_main_builds_the_training_report_of_a_run_folder(tmp_path, command, capsys, files):
    run = tmp_path / "run"
    os.makedirs(run)
    for name in files:
        (run / name).write_text("")
    assert report.main([str(run)]) == 0
    assert report.main([str(run), "--data", str(tmp_path / "moved"), "--no-explain", "--quiet"]) == 0
    assert command == [("training", str(run), None, None, True),
                       ("training", str(run), None, str(tmp_path / "moved"), False)]
    assert capsys.readouterr().out == f"report written: {run / 'report.html'}\n" * 2


def test_main_builds_the_overview_of_a_folds_folder(tmp_path, command, capsys):
    run = tmp_path / "cv"
    os.makedirs(run)
    (run / "cv_report.json").write_text("{}")
    (run / "history.csv").write_text("")
    assert report.main([str(run), "--quiet"]) == 0
    assert command == [("folds", str(run))]


def test_main_reports_a_user_error_with_exit_code_1(tmp_path, monkeypatch, capsys):
    def failing(*args, **kwargs):
        raise UserError("the output folder is damaged")

    monkeypatch.setattr(report, "build_report", failing)
    assert report.main([str(tmp_path), "--quiet"]) == 1
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", "error: the output folder is damaged\n")


def test_main_rejects_an_unknown_language(tmp_path, command, capsys):
    with pytest.raises(SystemExit) as stopped:
        report.main([str(tmp_path), "--lang", "fr"])
    assert stopped.value.code == 2 and "invalid choice: 'fr'" in capsys.readouterr().err and command == []


@pytest.mark.parametrize("argv,level", [([], logging.INFO), (["--quiet"], logging.WARNING)])
def test_main_logs_bare_messages_at_info_unless_quiet(tmp_path, command, monkeypatch, argv, level):
    monkeypatch.setattr(logging.root, "handlers", [])
    monkeypatch.setattr(logging.root, "level", 5)
    assert report.main([str(tmp_path), *argv]) == 0
    [handler] = logging.root.handlers
    assert logging.root.level == level and handler.formatter._fmt == "%(message)s"


def test_main_help_says_what_each_folder_and_option_is_for(capsys):
    with pytest.raises(SystemExit) as stopped:
        report.main(["--help"])
    assert stopped.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert text.startswith("usage: python -m tagestimate.review.report [-h] ")
    facts = [
        # the three kinds of folder
        "Rebuild a review report: output/index.html for a multiinference.py output folder, or report.html for a "
        "multitrain_efficientnet.py run folder (one with history.csv) or, for a --folds folder (one with "
        "cv_report.json), the folds' overview.",
        "folder an inference output folder, or a training run's --out folder",
        # which options apply to which report, and their defaults
        "--inputpath INPUTPATH inference only: the input folder, to find the images of items tagged without the "
        "report (default: none; those items are shown without thumbnails)",
        "--data DATA training only: the data folder, when it moved since training (default: the one model.json "
        "names)",
        "--no-explain training only: no Grad-CAM overlays (no TensorFlow needed)",
        "--lang {en,ja} inference only: show each tag by its English or Japanese name (default: the tag itself, "
        "e.g. graphic_map)",
        "--quiet no progress bar"]
    for fact in facts:
        assert fact in text, fact


def test_an_untagged_image_of_an_annotation_page_gets_similar_links(tmp_path):
    """An AnnotationPage lists tagged images only: the sidecar adds the untagged one, to its item page
    and to the collection the similar links are found in."""
    from tagestimate import annotations
    from tagestimate.tag.inference import write_item

    config = trained_config()
    out = tmp_path / "out"
    os.makedirs(out)
    weights = tmp_path / "w.h5"
    weights.write_bytes(b"weights")
    context = annotations.run_context(str(tmp_path / "in"), str(weights), str(out), "https://example.org/tags")
    rows = [("p1", image(tmp_path / "in" / "a" / "p1.jpg"), probabilities(graphic_map=0.9)),
            ("p2", image(tmp_path / "in" / "a" / "p2.jpg"), probabilities(stamp=0.8)),
            ("p3", image(tmp_path / "in" / "a" / "p3.jpg"), probabilities())]
    records = [Record(key, path, (10, 10), np.asarray(values, np.float32)) for key, path, values in rows]
    report.write_sidecar(str(out), "a", records, config)
    write_item(str(out), "a", records, config, "iiif", context=context)
    base = unit(np.random.default_rng(3).normal(size=(3, 16)))
    embed(out, "a", {"p1": base[0], "p2": base[1], "p3": base[2]})
    report.build_report(str(out), progress=False)
    links = similar_links(out, "a")
    assert sorted(links) == ["p1", "p2", "p3"]
    assert sorted(anchor for _, anchor in links["p3"]) == sorted([explore.anchor("p1"), explore.anchor("p2")])
    assert (report.page_names("a", 1)[0], explore.anchor("p3")) in links["p1"]
