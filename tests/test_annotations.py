"""--format iiif: tags as W3C Web Annotations in IIIF Presentation 3 AnnotationPages."""

import csv
import json
import os
import re

import numpy as np
import pytest
from iiif_prezi3 import AnnotationPage

from tagestimate import annotations, manifest
from tagestimate import formats as results
from tagestimate.tag.inference import write_item
from tagestimate.labels import LABELS
from tagestimate.model import ModelConfig
from tests.ndl_emulator import NdlEmulator

CONFIG = ModelConfig(labels=LABELS, image_size=64, channel_order="RGB", default_threshold=0.4)
# (picture, stamp) of each image the tests name, every other label at 0.1: no two confidences
# alike, so one paired with the wrong tag or image shows.
CONFIDENCES = {"a": (0.91, 0.62), "b": (0.83, 0.74), "p 1": (0.95, 0.56), "p2": (0.87, 0.68),
               "1054192_2_0": (0.93, 0.64), "0003": (0.85, 0.76), "1054192_7_1": (0.97, 0.58), "scan 1": (0.89, 0.7),
               "1054192_10_1": (0.81, 0.72)}
ID_BASE = "https://example.org/tags"


def probabilities_of(key):
    picture, stamp = CONFIDENCES[key]
    return np.array([{"picture": picture, "stamp": stamp}.get(label, 0.1) for label in LABELS], np.float32)


def record(input_dir, item, key, probabilities=None):
    probabilities = probabilities_of(key) if probabilities is None else probabilities
    return results.Record(key, os.path.join(str(input_dir), item, key + ".jpg"), (100, 80), probabilities)


def context(input_dir, **changes):
    values = dict(input_dir=str(input_dir), weights_name="best.weights.h5", weights_sha256="ab" * 32,
                  id_base=ID_BASE, created="2026-11-25T10:00:00Z")
    values.update(changes)
    return results.RunContext(**values)


def render(records, ctx, item="book"):
    return json.loads(results.FORMATS["iiif"].render(item, records, CONFIG, context=ctx))


def write_rows(input_dir, rows):
    os.makedirs(input_dir, exist_ok=True)
    with open(os.path.join(input_dir, manifest.MANIFEST_NAME), "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=manifest.EXTENDED_FIELDS, restval="")
        writer.writeheader()
        writer.writerows(rows)


def test_page_validates_and_says_who_made_each_tag_and_how_sure(tmp_path):
    document = render([record(tmp_path, "book", "b"), record(tmp_path, "book", "a")], context(tmp_path))
    AnnotationPage(**document)  # raises when the document is not IIIF Presentation 3
    assert document["@context"] == [ID_BASE + "/context.jsonld", "http://iiif.io/api/presentation/3/context.json"]
    assert document["id"] == ID_BASE + "/book.iiif.json" and document["type"] == "AnnotationPage"
    assert [a["id"] for a in document["items"]] == [ID_BASE + "/book.iiif.json#" + suffix
                                                    for suffix in ("a/picture", "a/stamp", "b/picture", "b/stamp")]
    first = document["items"][0]
    assert first["motivation"] == "tagging" and first["confidence"] == 0.91
    assert [(a["id"].split("#")[1], a["body"][0]["value"], a["confidence"], a["body"][2]["value"])
            for a in document["items"]] == [
        ("a/picture", "photograph", 0.91, "confidence 0.91"), ("a/stamp", "seal stamp", 0.62, "confidence 0.62"),
        ("b/picture", "photograph", 0.83, "confidence 0.83"), ("b/stamp", "seal stamp", 0.74, "confidence 0.74")]
    assert annotations.page_tags(document) == {"a": [("picture", 0.91), ("stamp", 0.62)],
                                               "b": [("picture", 0.83), ("stamp", 0.74)]}
    assert first["body"] == [  # one body per language, the tag's name in each (labels.NAMES)
        {"type": "TextualBody", "value": "photograph", "format": "text/plain", "language": "en", "purpose": "tagging"},
        {"type": "TextualBody", "value": "写真", "format": "text/plain", "language": "ja", "purpose": "tagging"},
        # the confidence again, where a viewer shows it:
        {"type": "TextualBody", "value": "confidence 0.91", "format": "text/plain", "language": "en",
         "purpose": "describing"}]
    assert first["label"] == {"en": ["photograph"], "ja": ["写真"]}
    assert document["items"][1]["label"] == {"en": ["seal stamp"], "ja": ["印影"]}
    assert first["created"] == "2026-11-25T10:00:00Z"
    assert first["generator"] == {"id": "urn:sha256:" + "ab" * 32, "type": "Software",
                                  "name": "tagestimate 1.0.0 with weights best.weights.h5",
                                  "homepage": annotations.HOMEPAGE}


def test_a_label_maps_names_name_custom_tags_in_both_languages(tmp_path):
    from tagestimate.model import ModelConfig

    config = ModelConfig(labels=("ukiyoe", "stamp"), labelmap={
        "labels": ["ukiyoe", "stamp"], "tags": {"ukiyoe": ["ukiyoe"], "stamp": ["stamp"]},
        "names": {"ukiyoe": {"en": "woodblock print", "ja": "浮世絵"}, "stamp": {"ja": "蔵書印"}}})
    one = results.Record("p1", str(tmp_path / "p1.jpg"), (10, 10), [0.8, 0.7])
    document = json.loads(results.FORMATS["iiif"].render("book", [one], config, context=context(tmp_path)))
    AnnotationPage(**document)
    assert [a["label"] for a in document["items"]] == [{"en": ["woodblock print"], "ja": ["浮世絵"]},
                                                       {"en": ["seal stamp"], "ja": ["蔵書印"]}]
    assert annotations.page_tags(document) == {"p1": [("ukiyoe", 0.8), ("stamp", 0.7)]}


def test_the_context_defines_the_confidence_term(tmp_path):
    path = annotations.write_context(str(tmp_path))
    with open(path, encoding="utf-8") as handle:
        definition = json.load(handle)["@context"][annotations.CONFIDENCE]
    assert definition == {"@id": annotations.NAMESPACE + "confidence", "@type": "xsd:double"}


def test_ids_are_stable_across_runs_and_only_created_changes(tmp_path):
    records = [record(tmp_path, "本", "p 1"), record(tmp_path, "本", "p2")]
    first = render(records, context(tmp_path), item="本")
    second = render(list(reversed(records)), context(tmp_path, created="2027-01-01T00:00:00Z"), item="本")
    assert [a["id"] for a in first["items"]] == [a["id"] for a in second["items"]]
    assert first["id"] == second["id"] == ID_BASE + "/%E6%9C%AC.iiif.json"
    for annotation in first["items"] + second["items"]:
        annotation.pop("created")
    assert first == second


def test_targets_are_the_most_precise_thing_known(tmp_path):
    base = "http://127.0.0.1:1/api/iiif"
    write_rows(tmp_path, [
        {"id": "1054192_2_0", "folder": "book", "pid": "1054192", "page": "2", "x": "10.0", "y": "20.5",
         "w": "35.0", "h": "50.25",
         "source_url": f"{base}/1054192/R0000002/pct:10.0,20.5,35.0,50.25/,256/0/default.jpg"},
        {"id": "0003", "folder": "book", "page": "3", "canvas": "https://h/m/canvas/3", "manifest": "https://h/m"},
    ])
    keys = ["1054192_2_0", "0003", "1054192_7_1", "scan 1"]
    document = render([record(tmp_path, "book", key) for key in keys], context(tmp_path))
    AnnotationPage(**document)
    targets = {a["id"].split("#")[1].split("/")[0]: a["target"] for a in document["items"]}
    assert targets["1054192_2_0"] == {  # the crop's box on its page, on the server it came from
        "type": "SpecificResource",
        "source": {"id": f"{base}/1054192/R0000002/full/full/0/default.jpg", "type": "Image", "format": "image/jpeg"},
        "selector": {"type": "FragmentSelector", "conformsTo": "http://www.w3.org/TR/media-frags/",
                     "value": "xywh=percent:10.0,20.5,35.0,50.25"}}
    assert targets["0003"] == {"type": "SpecificResource", "source": {"id": "https://h/m/canvas/3", "type": "Canvas"}}
    assert targets["1054192_7_1"]["source"]["id"] == \
        "https://www.dl.ndl.go.jp/api/iiif/1054192/R0000007/full/full/0/default.jpg"  # NDL-named: its page
    assert "selector" not in targets["1054192_7_1"]
    assert targets["scan%201"] == (tmp_path / "book" / "scan 1.jpg").as_uri()
    with_base = render([record(tmp_path, "book", "scan 1")], context(tmp_path, target_base="https://img.example/in"))
    assert with_base["items"][0]["target"] == "https://img.example/in/book/scan%201.jpg"


def test_untagged_images_and_empty_items_give_valid_pages(tmp_path):
    document = render([record(tmp_path, "book", "blank", np.zeros(len(LABELS), np.float32))], context(tmp_path))
    assert document["items"] == []
    AnnotationPage(**document)
    bare = json.loads(results.render_iiif("book", [record(tmp_path, "book", "a")], CONFIG))  # no RunContext
    AnnotationPage(**bare)
    assert bare["id"] == "urn:tagestimate:book.iiif.json"


def test_ndl_json_output_is_unchanged_by_a_context(tmp_path):
    records = [record(tmp_path, "book", "1054192_10_1"), record(tmp_path, "book", "1054192_2_0")]
    os.makedirs(tmp_path / "a")
    os.makedirs(tmp_path / "b")
    plain = write_item(str(tmp_path / "a"), "book", records, CONFIG, "json")
    with_context = write_item(str(tmp_path / "b"), "book", records, CONFIG, "json", context=context(tmp_path))
    with open(plain, "rb") as one, open(with_context, "rb") as two:
        assert one.read() == two.read() == (
            b'{\n"1054192_2_0": [{"tag": "picture", "confidence": 0.93}, {"tag": "stamp", "confidence": 0.64}],\n'
            b'"1054192_10_1": [{"tag": "picture", "confidence": 0.81}, {"tag": "stamp", "confidence": 0.72}]\n}\n')
    iiif_path = write_item(str(tmp_path / "b"), "book", records, CONFIG, "iiif", context=context(tmp_path))
    assert os.path.basename(iiif_path) == "book.iiif.json"


@pytest.mark.slow
def test_readme_example_pid_crawl_then_iiif_output(tmp_path, monkeypatch):
    """`newdataclawer.py --pid 1054192 --out input && multiinference.py --format iiif` against the emulator."""
    import multiinference
    import newdataclawer
    from modelfiles import write_trained_weights
    from tests.test_iiif import FAST, book_records

    monkeypatch.chdir(tmp_path)
    logits = np.full(len(LABELS), -4.0, np.float32)
    logits[LABELS.index("picture")] = 3.0
    weights, _ = write_trained_weights(str(tmp_path / "w"), logits=logits)
    books = book_records("1054192", range(1, 5)) + book_records("2000001", range(1, 3))
    with NdlEmulator(books) as emulator:
        assert newdataclawer.main(["--pid", "1054192", "--out", "input", "--api-base", emulator.api_base,
                                   "--iiif-base", emulator.iiif_base, "--max-idle", "3", *FAST]) == 0
    argv = ["--format", "iiif", "--weights", weights, "--backend", "tensorflow", "--quiet", "--id-base", ID_BASE]
    assert multiinference.main(argv) == 0
    assert sorted(os.listdir("output")) == ["1054192.emb.npz", "1054192.iiif.json", "context.jsonld", "html",
                                            "index.html"]
    with open("output/index.html", encoding="utf-8") as handle:  # the review report reads the IIIF page
        overview = dict(re.findall(r"<tr><th>([^<]+)</th><td>([^<]*)</td></tr>", handle.read()))
    assert (overview["items"], overview["images"]) == ("1", str(sum(r["pid"] == "1054192" for r in books)))
    with open("output/1054192.iiif.json", encoding="utf-8") as handle:
        text = handle.read()
    document = json.loads(text)
    AnnotationPage(**document)
    boxes = {record["id"]: f"xywh=percent:{record['x']},{record['y']},{record['w']},{record['h']}"
             for record in books if record["pid"] == "1054192"}
    assert {a["id"].split("#")[1]: a["target"]["selector"]["value"] for a in document["items"]} == \
        {f"{key}/picture": box for key, box in boxes.items()}
    assert all(a["target"]["source"]["id"].startswith(emulator.iiif_base + "/1054192/R") for a in document["items"])
    assert multiinference.main([*argv, "--overwrite"]) == 0
    with open("output/1054192.iiif.json", encoding="utf-8") as handle:
        again = json.load(handle)
    assert [a["id"] for a in again["items"]] == [a["id"] for a in document["items"]]


def test_bases_must_be_absolute_urls(tmp_path, capsys):
    import multiinference

    (tmp_path / "in" / "item").mkdir(parents=True)
    for flag in ("--id-base", "--target-base"):
        with pytest.raises(SystemExit) as exit_:
            multiinference.main(["--inputpath", str(tmp_path / "in"), "--outputpath", str(tmp_path / "out"),
                                 "--format", "iiif", flag, "example.org/tags"])
        assert exit_.value.code == 2
        assert f"{flag} must be an absolute URL" in capsys.readouterr().err


def test_iiif_without_iiif_prezi3_is_one_sentence_naming_its_requirements_file(tmp_path, monkeypatch, capsys):
    """iiif-prezi3 is optional (requirements-iiif.txt): without it, --format iiif stops before any
    output with one line that says what to install; the other formats never need it."""
    import sys

    import h5py

    import multiinference
    import tagestimate
    from modelfiles import trained_config
    from tagestimate.model import write_config

    (tmp_path / "in" / "item").mkdir(parents=True)
    (tmp_path / "in" / "item" / "a.jpg").write_bytes(b"not read: the format is checked first")
    weights = tmp_path / "w" / "best.weights.h5"
    weights.parent.mkdir()
    with h5py.File(weights, "w") as handle:  # a Keras 3 layout to describe_weights; never loaded
        handle.create_group("layers")
    write_config(str(weights.parent), trained_config())
    monkeypatch.setitem(sys.modules, "iiif_prezi3", None)  # as if it were not installed
    monkeypatch.delitem(sys.modules, "tagestimate.annotations")  # imported again, without it
    monkeypatch.delattr(tagestimate, "annotations")
    from tagestimate.commands import tag as tag_command

    def no_weights(*args):  # the format is checked before the weights, which may mean a download
        raise AssertionError("weights resolved before iiif-prezi3 was checked")

    monkeypatch.setattr(tag_command, "resolve_weights", no_weights)
    argv = ["--inputpath", str(tmp_path / "in"), "--outputpath", str(tmp_path / "out"), "--weights", str(weights),
            "--quiet", "--format", "iiif"]
    assert multiinference.main(argv) == 1
    assert capsys.readouterr().err == "error: --format iiif needs iiif-prezi3: pip install -r requirements-iiif.txt\n"
    assert list((tmp_path / "out").iterdir()) == []  # the folder is made when the arguments are checked
    assert "tagestimate.annotations" not in sys.modules
