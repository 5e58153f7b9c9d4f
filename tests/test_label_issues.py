"""Suspect labels (tagestimate/train/label_issues.py), the data set's provenance (train/provenance.py),
--reviewed-weight, and their place in the training report (review/train_suspects.py). Fast: no
training here (test_label_issues_training.py trains)."""

import csv
import json
import os
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

import multitrain_efficientnet
from tagestimate.review import train_report, train_suspects
from tagestimate.train import label_issues, provenance
from tagestimate.train.settings import TrainingError, TrainSettings
from tagestimate.train.state import check_settings

HOSTILE_LABEL = "<script>alert('l')</script>&\""
HOSTILE_FOLDER = "f\"><img src=x onerror=alert(1)>"


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


# ---------------------------------------------------------------- ranking

def test_flipped_rows_rank_first_and_carry_their_labels():
    # 3 labels; folders give one each. Rows 4 and 7 are misfiled: the model is sure of another label.
    given = np.eye(3)[[0, 1, 2, 0, 1, 2, 0, 1, 2, 0]]
    p = np.where(given > 0, 0.9, 0.05)
    p[4] = [0.97, 0.02, 0.02]   # folder says label 1; the model says 0, surely
    p[7] = [0.03, 0.04, 0.85]   # folder says label 1; the model says 2, less surely
    p[2] = [0.10, 0.10, 0.60]   # right, but unsure: not suspect
    order, scores, missing, wrong = label_issues.find_issues(given, p)
    assert list(order) == [4, 7]
    assert scores[4] > scores[7] > scores[2]
    assert missing[4].tolist() == [True, False, False] and wrong[4].tolist() == [False, True, False]
    assert missing[7].tolist() == [False, False, True] and wrong[7].tolist() == [False, True, False]


def test_a_model_that_knows_nothing_suspects_nothing():
    given = np.eye(3)[[0, 1, 2, 0, 1, 2]]
    order, _, _, _ = label_issues.find_issues(given, np.full(given.shape, 0.6))
    assert list(order) == []
    assert list(label_issues.find_issues(np.zeros((0, 3)), np.zeros((0, 3)))[0]) == []


def test_quality_is_cleanlabs_exponential_moving_average():
    # sorted from best to worst: 0.9, 0.5, 0.2 -> 0.9; 0.8*0.5 + 0.2*0.9 = 0.58; 0.8*0.2 + 0.2*0.58 = 0.276
    assert label_issues.quality(np.array([[0.5, 0.2, 0.9]]))[0] == pytest.approx(0.276)


def test_label_cells_are_json_and_survive_any_label():
    labels = [HOSTILE_LABEL, "a;b=c", "x"]
    given = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 1, 0]])
    p = np.array([[0.02, 0.97, 0.1], [0.9, 0.1, 0.1], [0.1, 0.9, 0.1], [0.1, 0.9, 0.1]])
    origins = {f"/d/{i}.jpg": provenance.NOT_LISTED for i in range(4)}
    rows = label_issues.issue_rows(list(origins), ["f"] * 4, given, p, labels, origins, label_issues.OUT_OF_FOLD)
    assert len(rows) == 1 and rows[0]["path"] == "/d/0.jpg"
    assert label_issues.parse_labels(rows[0]["suspected_missing"]) == [("a;b=c", 0.97)]
    assert label_issues.parse_labels(rows[0]["suspected_wrong"]) == [(HOSTILE_LABEL, 0.02)]
    assert label_issues.parse_labels("not json") == [] and label_issues.parse_labels("") == []


# ---------------------------------------------------------------- provenance

MANIFEST = [  # id, folder, confidence, source, reviewer: each image a distinct pairing
    ("11_1_0", "stamp", "0.77", "reviewed", "alice"),
    ("12_1_0", "stamp", "0.91", "", ""),
    ("13_1_0", "graphic_map", "", "", ""),
    ("14_1_0", "graphic_map", "0.66", "crawled", ""),
    ("15_1_0", "stamp", "", "reviewed", "bob"),
]


def write_manifest(data, rows=MANIFEST, columns=("id", "pid", "folder", "confidence", "source", "reviewer", "decision")):
    os.makedirs(data, exist_ok=True)
    with open(os.path.join(data, "manifest.csv"), "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for image_id, folder, confidence, source, reviewer in rows:
            writer.writerow({"id": image_id, "pid": image_id.split("_")[0], "folder": folder, "confidence": confidence,
                             "source": source, "reviewer": reviewer, "decision": "confirm" if reviewer else ""})


def test_each_image_gets_its_own_source_confidence_and_reviewer(tmp_path):
    data = str(tmp_path)
    write_manifest(data)
    paths = [os.path.join(data, folder, f"{image_id}.jpg") for image_id, folder, *_ in MANIFEST]
    paths.append(os.path.join(data, "stamp", "99_1_0.jpg"))  # in no manifest row
    found = provenance.lookup(paths, data)
    assert [tuple(found[p]) for p in paths] == [
        ("reviewed", "0.77", "alice"), ("crawled", "0.91", ""), ("rebuilt", "", ""), ("crawled", "0.66", ""),
        ("reviewed", "", "bob"), ("unknown", "", "")]
    # the same image in another folder is another row: not this one's provenance
    assert provenance.lookup([os.path.join(data, "graphic_map", "11_1_0.jpg")], data)[
        os.path.join(data, "graphic_map", "11_1_0.jpg")].source == "unknown"


def test_a_manifest_without_the_new_columns_or_without_a_file_is_read_tolerantly(tmp_path):
    old = str(tmp_path / "old")
    write_manifest(old, columns=("id", "folder", "confidence"))
    found = provenance.lookup([os.path.join(old, "stamp", "11_1_0.jpg"), os.path.join(old, "graphic_map", "13_1_0.jpg")],
                              old)
    assert [o.source for o in found.values()] == ["crawled", "rebuilt"]  # no source column: inferred
    assert provenance.read_manifest(str(tmp_path / "none")) == {}


def test_the_csv_pairs_each_suspect_with_its_manifest_row(tmp_path):
    data, out = str(tmp_path / "data"), str(tmp_path / "out")
    write_manifest(data)
    os.makedirs(out)
    paths = [os.path.join(data, folder, f"{image_id}.jpg") for image_id, folder, *_ in MANIFEST]
    folders = [folder for _, folder, *_ in MANIFEST]
    labels = ["stamp", "graphic_map"]
    given = np.array([[1, 0] if f == "stamp" else [0, 1] for f in folders])
    # every image misfiled, each to a distinct degree, so the order is known: 12, 11, 14, 13, 15
    sure = {"11_1_0": 0.90, "12_1_0": 0.95, "13_1_0": 0.80, "14_1_0": 0.85, "15_1_0": 0.75}
    p = np.array([[1 - sure[i], sure[i]] if f == "stamp" else [sure[i], 1 - sure[i]]
                  for (i, f, *_) in MANIFEST])
    # plus right ones, so that the class means sit where a trained model puts them
    paths += [os.path.join(data, "stamp", f"2{k}_1_0.jpg") for k in range(6)]
    folders += ["stamp"] * 6
    given = np.vstack([given, [[1, 0]] * 6])
    p = np.vstack([p, [[0.97, 0.03]] * 6])
    summary = label_issues.write_for_run(out, paths, folders, given, p, labels, provenance.lookup(paths, data),
                                         label_issues.VALIDATION, 40)
    rows = read_csv(os.path.join(out, "label_issues.csv"))
    assert list(rows[0]) == list(label_issues.COLUMNS)
    assert [(os.path.basename(r["path"]), r["source"], r["api_confidence"], r["reviewer"]) for r in rows] == [
        ("12_1_0.jpg", "crawled", "0.91", ""), ("11_1_0.jpg", "reviewed", "0.77", "alice"),
        ("14_1_0.jpg", "crawled", "0.66", ""), ("13_1_0.jpg", "rebuilt", "", ""), ("15_1_0.jpg", "reviewed", "", "bob")]
    assert all(os.path.isabs(r["path"]) for r in rows) and {r["scope"] for r in rows} == {"validation split"}
    assert json.loads(rows[0]["suspected_missing"]) == {"graphic_map": 0.95}
    assert json.loads(rows[0]["suspected_wrong"]) == {"stamp": 0.05}
    assert summary == {"file": "label_issues.csv", "scope": "validation split", "checked": 11, "images": 40,
                       "suspects": 5, "method": summary["method"]}


def test_reviewed_images_weigh_the_reviewed_weight_on_top_of_the_folder_weight(tmp_path):
    data = str(tmp_path)
    write_manifest(data)
    paths = [os.path.join(data, folder, f"{image_id}.jpg") for image_id, folder, *_ in MANIFEST]
    origins = provenance.lookup(paths, data)
    base = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    assert provenance.reviewed_weights(base, paths, origins, 2.5).tolist() == [2.5, 2.0, 3.0, 4.0, 12.5]
    assert provenance.reviewed_weights(base, paths, origins, 1.0).tolist() == base.tolist()
    counts = provenance.summary(["stamp", "stamp", "graphic_map", "graphic_map", "stamp"], paths, origins, 2.5)
    assert counts["by_folder"]["stamp"] == {"reviewed": 2, "crawled": 1, "rebuilt": 0, "unknown": 0}
    assert counts["by_folder"]["graphic_map"] == {"reviewed": 0, "crawled": 1, "rebuilt": 1, "unknown": 0}


@pytest.mark.parametrize("weight", [0.0, -1.0, float("nan"), float("inf")])
def test_reviewed_weight_must_be_above_zero(weight, capsys):
    with pytest.raises(TrainingError, match=r"--reviewed-weight .* must be a number above 0"):
        check_settings(TrainSettings(weights="none", reviewed_weight=weight))
    assert multitrain_efficientnet.main(["--weights", "none", "--reviewed-weight", str(weight)]) == 1
    assert "error: --reviewed-weight" in capsys.readouterr().err
    check_settings(TrainSettings(weights="none", reviewed_weight=0.25))  # any positive value is fine


def test_help_explains_reviewed_weight():
    text = " ".join(multitrain_efficientnet.build_parser().format_help().split())
    assert "--reviewed-weight W" in text and "(default: 1.0)" in text.split("--reviewed-weight W")[-1][:400]


# ---------------------------------------------------------------- the report

class Cards(HTMLParser):
    """The review markup of a page: cards with their tags, and the labels' JSON."""

    def __init__(self):
        super().__init__()
        self.cards, self.labels_json, self._in_labels, self.scripts = [], [], False, 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "review-card" in (attrs.get("class") or "").split():
            self.cards.append({"image": attrs.get("data-review-image"), "item": attrs.get("data-review-item"),
                               "tags": []})
        if "data-review-tag" in attrs:
            self.cards[-1]["tags"].append(attrs["data-review-tag"])
        if tag == "script" and attrs.get("id") == "review-labels":
            self._in_labels = True
            assert attrs.get("type") == "application/json"
        elif tag == "script":
            self.scripts += 1

    def handle_data(self, data):
        if self._in_labels:
            self.labels_json.append(data)

    def handle_endtag(self, tag):
        self._in_labels = False


def fake_run(tmp_path, rows, labels, scope="validation split"):
    """A run folder with report.json, label_issues.csv and images; returns (out, image paths)."""
    out, data = tmp_path / "out", tmp_path / "data"
    out.mkdir()
    made = []
    for k, (folder, missing, wrong) in enumerate(rows):
        path = data / folder / f"{k}_1_0.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (50, 40), (40 * k % 255, 90, 200)).save(path)
        made.append({"path": str(path), "folder": folder, "suspected_missing": json.dumps(missing),
                     "suspected_wrong": json.dumps(wrong), "score": f"{0.9 - k / 100:.4f}",
                     "source": ["reviewed", "crawled", "rebuilt", "unknown"][k % 4],
                     "api_confidence": f"0.{50 + k}" if k % 4 == 1 else "", "reviewer": "carol" if k % 4 == 0 else "",
                     "scope": scope})
    label_issues.write_issues(str(out / "label_issues.csv"), made)
    report = {"labels": labels, "per_class": {}, "label_issues": label_issues.summary(made, 7, 30, scope),
              "provenance": {"reviewed_weight": 2.0, "by_folder": {"stamp": {"reviewed": 3, "crawled": 1, "rebuilt": 0,
                                                                               "unknown": 0}}}}
    (out / "report.json").write_text(json.dumps(report), encoding="utf-8")
    return str(out), [m["path"] for m in made]


def parse(path):
    parser = Cards()
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    parser.feed(text)
    return parser, text


def test_report_shows_each_suspect_as_a_review_card_with_hostile_names_escaped(tmp_path):
    labels = ["stamp", HOSTILE_LABEL, "graphic"]
    labelmap = {"labels": labels, "tags": {"stamp": ["stamp"], HOSTILE_FOLDER: [HOSTILE_LABEL, "graphic"]}}
    out, paths = fake_run(tmp_path, [(HOSTILE_FOLDER, {"stamp": 0.93}, {HOSTILE_LABEL: 0.04}),
                                     ("stamp", {"graphic": 0.71}, {})], labels)
    monkey_config(out, labelmap)
    page, text = parse(train_report.write_training_report(out, explain=False))
    assert [c["image"] for c in page.cards] == paths and all(os.path.isabs(p) for p in paths)
    assert [c["item"] for c in page.cards] == ["", ""]
    # the folder's labels (both of the hostile folder's) and the suspected ones, each a review tag
    assert page.cards[0]["tags"] == [HOSTILE_LABEL, "graphic", "stamp"]
    assert page.cards[1]["tags"] == ["stamp", "graphic"]
    assert json.loads("".join(page.labels_json)) == labels and text.count('<script type="application/json" id="review-labels">') == 1
    assert "<script>alert" not in text and "<img src=x" not in text  # escaped everywhere
    assert "validation split only: 7 of 30 images checked" in text
    assert "carol" in text and "API 0.51" in text and "0.93" in text
    # the thumbnails exist where the cards point
    srcs = [s for s in text.split('src="')[1:]]
    thumbs = [s.split('"')[0] for s in srcs if s.startswith("report_files/suspects/")]
    assert len(thumbs) == 2 and all(os.path.isfile(os.path.join(out, t)) for t in thumbs)
    # per folder, how many images were reviewed, and the weight they had
    assert '<td>stamp</td><td>3</td><td>1</td>' in text and "weighs 2.0 in the loss" in text


def monkey_config(out, labelmap):
    from tagestimate import model as tag_model

    tag_model.write_config(out, tag_model.ModelConfig(labels=labelmap["labels"], image_size=64, labelmap=labelmap))


def test_out_of_fold_suspects_are_not_marked_partial_and_long_lists_are_paginated(tmp_path, monkeypatch):
    monkeypatch.setattr(train_suspects, "PAGE_SIZE", 2)
    out, paths = fake_run(tmp_path, [("stamp", {"graphic": 0.9 - k / 10}, {"stamp": 0.1}) for k in range(5)],
                          ["stamp", "graphic"], scope="out-of-fold")
    page, text = parse(train_report.write_training_report(out, explain=False))
    assert "Partial" not in text and "validation split only" not in text
    assert [c["image"] for c in page.cards] == paths[:2] and 'href="report_files/suspects-2.html"' in text
    second, second_text = parse(os.path.join(out, "report_files", "suspects-2.html"))
    third, _ = parse(os.path.join(out, "report_files", "suspects-3.html"))
    assert [c["image"] for c in second.cards + third.cards] == paths[2:]
    assert 'href="../report.html"' in second_text and 'href="suspects-3.html"' in second_text
    thumb = second_text.split('<img src="')[1].split('"')[0]
    assert os.path.isfile(os.path.join(out, "report_files", thumb))
    # every page of the report shares one review key, so one export holds every decision
    key = f'data-review-report="{os.path.abspath(out)}"'
    assert key in text and key in second_text


def test_review_js_is_inlined_when_the_helper_ships_it(tmp_path, monkeypatch):
    out, _ = fake_run(tmp_path, [("stamp", {"graphic": 0.9}, {})], ["stamp", "graphic"])
    monkeypatch.setattr(train_suspects, "review_scripts", lambda: ("training.css",))  # any static file
    _, text = parse(train_report.write_training_report(out, explain=False))
    assert "<script>/* The training report" in text
    monkeypatch.setattr(train_suspects, "review_scripts", lambda: ())
    page, text = parse(train_report.write_training_report(out, explain=False))
    assert page.scripts == 0 and len(page.cards) == 1


def test_below_one_half_the_model_is_confident_of_nothing():
    # label 1 is learnt weakly (its positives average 0.3): 0.4 on an image without it is no claim
    given = np.array([[1, 1], [1, 1], [1, 0], [1, 0]])
    p = np.array([[0.9, 0.3], [0.9, 0.3], [0.9, 0.4], [0.9, 0.05]])
    assert list(label_issues.find_issues(given, p)[0]) == []
    # and a folder label at 0.5 is not disputed, even where the negatives' 1 - p averages 0.4
    given = np.array([[1, 1], [1, 1], [1, 1], [1, 0], [1, 0]])
    p = np.array([[0.9, 0.5], [0.9, 0.95], [0.9, 0.95], [0.9, 0.6], [0.9, 0.6]])
    assert list(label_issues.find_issues(given, p)[0]) == []
