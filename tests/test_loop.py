"""The loop end to end: crawl from the NDL emulator -> train -> tag -> a reviewer's corrections.csv ->
newdataclawer.py --from-corrections -> train again; the second report's per-folder image counts differ
exactly as the corrections say. Tiny settings (64 px, 1 epoch, random weights): minutes on a CPU."""

import csv
import json
import os

import pytest

import multiinference
import multitrain_efficientnet
import newdataclawer
from tagestimate import corrections, manifest
from tests.ndl_emulator import NdlEmulator
from tests.test_crawler import make_records

pytestmark = pytest.mark.slow

TAGS = ("stamp", "graphic_map", "picture_indoor")
BOOK = "1054192"
TRAIN = ["--weights", "none", "--image-size", "64", "--batch-size", "8", "--epochs", "1"]


def book_records(pid, pages):
    return [{"id": f"{pid}_{page}_0", "pid": pid, "page": page, "title": "本", "x": 10.0, "y": 20.0, "w": 40.0,
             "h": 50.0, "graphictags": [{"tagname": "picture_object", "confidence": 0.7}]}
            for page in range(1, pages + 1)]


def folder_counts(run):
    """{folder: images} that a training run read (train + validation), from its report.json."""
    with open(os.path.join(run, "report.json"), encoding="utf-8") as handle:
        split = json.load(handle)["split"]
    return {folder: sides["train"] + sides["val"] for folder, sides in split["per_folder"].items()}


def test_crawl_train_tag_review_apply_train(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the commands' defaults: datasetpdm/, input/, output/
    records = (make_records("stamp", 8) + make_records("graphic_map", 8, start=100)
               + make_records("picture_indoor", 8, start=200) + book_records(BOOK, 4))
    with NdlEmulator(records) as emulator:
        network = ["--api-base", emulator.api_base, "--iiif-base", emulator.iiif_base, "--delay", "0"]
        assert newdataclawer.main([*(arg for tag in TAGS for arg in ("--tag", tag)), "--per-class", "8", *network]) == 0
        assert newdataclawer.main(["--pid", BOOK, "--out", "input", *network]) == 0
    assert multitrain_efficientnet.main(["--data", "datasetpdm", "--out", "run1", *TRAIN]) == 0
    before = folder_counts("run1")
    assert before == {tag: 8 for tag in TAGS}
    assert multiinference.main(["--weights", "run1/best.weights.h5", "--backend", "tensorflow", "--quiet"]) == 0
    with open(os.path.join("output", f"{BOOK}.json"), encoding="utf-8") as handle:
        tagged = json.load(handle)
    first, second = f"{BOOK}_1_0", f"{BOOK}_2_0"
    # The reviewer confirms the model's best tag on one page, adds a tag it missed on another, and
    # takes one crawled image out of stamp/: three distinct images, as the review page exports them.
    confirmed = max(tagged[first], key=lambda tag: (tag["confidence"], tag["tag"]))["tag"]
    added = next(tag for tag in ("picture_indoor", "graphic_map") if tag != confirmed)
    rejected = sorted(os.listdir(os.path.join("datasetpdm", "stamp")))[0]
    review = [
        (f"input/{BOOK}/{first}.jpg", BOOK, confirmed, "confirm", "ayumi", "2026-12-05T03:04:05Z"),
        (f"input/{BOOK}/{second}.jpg", BOOK, added, "add", "ayumi", "2026-12-05T03:04:40Z"),
        (f"datasetpdm/stamp/{rejected}", "", "stamp", "reject", "ayumi", "2026-12-05T03:05:10Z"),
    ]
    corrections.write("corrections.csv", [corrections.Correction(*row) for row in review])
    capsys.readouterr()
    assert newdataclawer.main(["--from-corrections", "corrections.csv"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "3 rows: 3 applied, 0 already as decided, 0 not applied"
    assert os.path.isfile(os.path.join("datasetpdm", "_rejected", "stamp", rejected))
    assert multitrain_efficientnet.main(["--data", "datasetpdm", "--out", "run2", *TRAIN]) == 0
    expected = dict(before)
    for tag, change in ((confirmed, 1), (added, 1), ("stamp", -1)):
        expected[tag] = expected.get(tag, 0) + change
    assert folder_counts("run2") == expected
    with open(os.path.join("run2", "split.csv"), encoding="utf-8") as handle:
        listed = handle.read()
    assert f"{confirmed}/{first}.jpg" in listed and f"{added}/{second}.jpg" in listed
    assert rejected not in listed and "_rejected" not in listed
    with open(os.path.join("datasetpdm", "manifest.csv"), encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    reviewed = sorted((row["folder"], row["id"], row["decision"]) for row in rows
                      if manifest.source_of(row) == "reviewed")
    assert reviewed == sorted([(confirmed, first, "confirm"), (added, second, "add"),
                               ("stamp", rejected[:-4], "reject")])
