"""--format iiif for a viewer: partOf and the book's title on the page, canvas targets, `{item}.manifest.json`
(an annotated Presentation 3 copy of the source manifest), crops told apart, and the bad inputs."""

import json
import logging
import os

import numpy as np
import pytest
from iiif_prezi3 import AnnotationPage, Manifest

from tagestimate import annotations, formats, storage, viewer
from tagestimate.labels import LABELS
from tagestimate.tag.inference import Item, write_item
from tests.ndl_emulator import NdlEmulator, v2_manifest, v3_manifest
from tests.test_annotations import CONFIG, context, record, write_rows

ID_BASE = "https://example.org/tags"
# (picture, stamp) per image: no two alike, so a confidence paired with the wrong image or tag shows.
CONFIDENCES = {"0001": (0.91, 0.62), "0002": (0.83, 0.74), "1054192_3_0": (0.95, 0.56), "1054192_3_1": (0.87, 0.68),
               "1054192_5_0": (0.93, 0.64), "1054192_7_0": (0.81, 0.72)}


def tagged(input_dir, item, key):
    picture, stamp = CONFIDENCES[key]
    probabilities = np.array([{"picture": picture, "stamp": stamp}.get(label, 0.1) for label in LABELS], np.float32)
    return record(input_dir, item, key, probabilities)


def validate_page(page):
    """iiif-prezi3's check of a page: its schema admits only an AnnotationCollection as a page's partOf, where
    Presentation 3 lets it name the manifest (annotations.render_page adds it after prezi3's check)."""
    AnnotationPage(**{key: value for key, value in page.items() if key != "partOf"})


def run_context(input_dir, **changes):
    return context(input_dir, **{"fetch_manifests": True, **changes})


def write(output, item, records, ctx):
    """write_item's files, read back: {name: parsed JSON}, and the order they were written in."""
    os.makedirs(output, exist_ok=True)
    write_item(str(output), item, records, CONFIG, "iiif", context=ctx)
    return {name: json.loads((output / name).read_text(encoding="utf-8")) for name in sorted(os.listdir(output))}


def v3_crawl(tmp_path, emulator, title="Book book3"):
    """What `--iiif-manifest` leaves: book3/0001.jpg, 0002.jpg, their rows, and book3.manifest.json."""
    document = v3_manifest(emulator, "book3.json", 3)
    inputs = tmp_path / "input"
    write_rows(inputs, [{"id": f"000{n}", "folder": "book3", "page": str(n), "title": title,
                         "manifest": document["id"], "canvas": f"{document['id']}/canvas/{n}"} for n in (1, 2)])
    (inputs / "book3.manifest.json").write_text(json.dumps(document), encoding="utf-8")
    return inputs, document


def ndl_crawl(tmp_path, emulator, boxes):
    """What `--pid 1054192` leaves: crops with their rows (box, pid, page, source_url), no manifest copy."""
    inputs = tmp_path / "input"
    rows = []
    for key, (x, y, w, h) in boxes.items():
        page = key.split("_")[1]
        rows.append({"id": key, "folder": "1054192", "pid": "1054192", "page": page, "x": x, "y": y, "w": w, "h": h,
                     "title": "<i>源氏</i>物語 &amp; 注釈",
                     "source_url": f"{emulator.iiif_base}/1054192/R{int(page):07d}/pct:{x},{y},{w},{h}"
                                   "/,256/0/default.jpg"})
    write_rows(inputs, rows)
    return inputs


def test_a_crawled_v3_manifest_gives_a_viewer_ready_page_and_an_annotated_copy(tmp_path):
    with NdlEmulator() as emulator:
        inputs, source = v3_crawl(tmp_path, emulator)
        records = [tagged(inputs, "book3", "0002"), tagged(inputs, "book3", "0001")]
        written = write(tmp_path / "out", "book3", records, run_context(inputs))
        asked = emulator.count("docs")
    assert asked == 0  # the crawl's copy, not the server
    assert sorted(written) == ["book3.iiif.json", "book3.manifest.json"]
    page, copy = written["book3.iiif.json"], written["book3.manifest.json"]
    validate_page(page)
    Manifest(**copy)  # raises unless it is Presentation 3
    assert page["partOf"] == [{"id": source["id"], "type": "Manifest"}]
    assert page["label"] == {"en": ["tags of Book book3"]}
    one, two = ({"id": f"{source['id']}/canvas/{n}", "type": "Canvas"} for n in (1, 2))
    assert [(a["target"]["source"], a["confidence"]) for a in page["items"]] == [
        (one, 0.91), (one, 0.62), (two, 0.83), (two, 0.74)]
    assert copy["id"] == ID_BASE + "/book3.manifest.json"
    assert copy["@context"] == page["@context"]  # the confidence term, then Presentation 3 last
    assert copy["seeAlso"][-1]["id"] == source["id"]
    assert [canvas["id"] for canvas in copy["items"]] == [canvas["id"] for canvas in source["items"]]
    assert copy["items"][0]["items"] == source["items"][0]["items"]  # the painting annotations as they were
    # each tagged canvas embeds its own annotations, the page's, same ids; the untagged third canvas none
    embedded = {canvas["id"]: [a for p in canvas.get("annotations", []) for a in p["items"]]
                for canvas in copy["items"]}
    by_canvas = {}
    for annotation in page["items"]:
        by_canvas.setdefault(annotation["target"]["source"]["id"], []).append(annotation)
    assert embedded == {**by_canvas, f"{source['id']}/canvas/3": []}
    assert [(a["body"][0]["value"], a["body"][-1]["value"]) for a in embedded[f"{source['id']}/canvas/2"]] == [
        ("photograph", "confidence 0.83"), ("seal stamp", "confidence 0.74")]


def test_the_copy_is_written_before_the_page_that_marks_the_item_done(tmp_path, monkeypatch):
    order = []
    real = storage.write_atomic
    monkeypatch.setattr(storage, "write_atomic", lambda path, data: (order.append(os.path.basename(path)),
                                                                      real(path, data))[1])
    with NdlEmulator() as emulator:
        inputs, _ = v3_crawl(tmp_path, emulator)
        write(tmp_path / "out", "book3", [tagged(inputs, "book3", "0001")], run_context(inputs))
    assert order == ["book3.manifest.json", "book3.iiif.json"]


def test_an_ndl_book_is_fetched_once_upgraded_from_v2_and_its_crops_target_canvas_pixels(tmp_path):
    boxes = {"1054192_3_0": ("10.0", "20.5", "35.0", "50.25"), "1054192_5_0": ("0.0", "50.0", "100.0", "50.0")}
    with NdlEmulator() as emulator:
        inputs = ndl_crawl(tmp_path, emulator, boxes)
        source = v2_manifest(emulator, "1054192/manifest.json", "1054192", [1, 3, 5])
        source["viewingDirection"] = "right-to-left"
        emulator.documents["1054192/manifest.json"] = source
        records = [tagged(inputs, "1054192", key) for key in boxes]
        written = write(tmp_path / "out", "1054192", records, run_context(inputs))
        fetched = [path for service, path in emulator.requests if path.endswith("manifest.json")]
    assert fetched == ["/api/iiif/1054192/manifest.json"]  # once per item, where NDL serves it
    page, copy = written["1054192.iiif.json"], written["1054192.manifest.json"]
    Manifest(**copy)
    # the manifest's own id (the emulator's differs from the URL it answers at, as NDL's www. host's may)
    assert page["partOf"] == [{"id": source["@id"], "type": "Manifest"}]
    assert source["@id"] != f"{emulator.iiif_base}/1054192/manifest.json"
    assert copy["seeAlso"][-1]["id"] == source["@id"]
    assert page["label"] == {"en": ["tags of 源氏物語 & 注釈"]}  # the crawl's title, markup stripped
    targets = {a["id"].split("#")[1]: a["target"] for a in page["items"]}
    canvas = source["@id"] + "/canvas/"
    assert targets["1054192_3_0/picture"] == {  # 10.0,20.5,35.0,50.25 percent of a 600 x 800 canvas
        "type": "SpecificResource", "source": {"id": canvas + "3", "type": "Canvas"},
        "selector": {"type": "FragmentSelector", "conformsTo": "http://www.w3.org/TR/media-frags/",
                     "value": "xywh=60,164,210,402"}}
    assert targets["1054192_5_0/stamp"]["selector"]["value"] == "xywh=0,400,600,400"
    assert copy["label"] == {"ja": ["本 1054192"]} and copy["viewingDirection"] == "right-to-left"
    assert [c["id"] for c in copy["items"]] == [canvas + "1", canvas + "3", canvas + "5"]
    painted = copy["items"][1]["items"][0]["items"][0]
    assert painted["target"] == canvas + "3" and painted["body"]["service"] == [
        {"id": f"{emulator.iiif_base}/1054192/R0000003", "type": "ImageService2", "profile": "level1"}]
    assert (copy["items"][1]["width"], copy["items"][1]["height"]) == (600, 800)
    assert [len(c.get("annotations", [])) for c in copy["items"]] == [0, 1, 1]


@pytest.mark.parametrize("fault", ["404", "timeout"])
def test_a_source_manifest_that_vanished_is_one_sentence_and_no_copy(tmp_path, fault, caplog, monkeypatch):
    """The page is still written, with its plain targets; no copy, and an older run's copy is removed."""
    monkeypatch.setattr(viewer, "FETCH_TIMEOUT", 0.5)
    boxes = {"1054192_3_0": ("10.0", "20.5", "35.0", "50.25")}
    with NdlEmulator() as emulator:
        inputs = ndl_crawl(tmp_path, emulator, boxes)
        if fault == "404":
            emulator.fail("status", service="iiif", status=404, match="manifest.json")
        else:
            emulator.documents["1054192/manifest.json"] = v2_manifest(emulator, "1054192/manifest.json", "1054192", [3])
            emulator.fail("stall", service="iiif", times=2, seconds=3, match="manifest.json")
        (tmp_path / "out").mkdir()
        (tmp_path / "out" / "1054192.manifest.json").write_text("{}")  # an older run's
        with caplog.at_level(logging.WARNING, logger="tagestimate.viewer"):
            written = write(tmp_path / "out", "1054192", [tagged(inputs, "1054192", "1054192_3_0")],
                            run_context(inputs))
    assert sorted(written) == ["1054192.iiif.json"]
    page = written["1054192.iiif.json"]
    assert page["items"][0]["target"]["source"]["type"] == "Image"  # NDL's page image, percent box, as before
    assert "partOf" not in page  # the manifest's URL was inferred from the pid and never answered
    [message] = [r.getMessage() for r in caplog.records if r.name == "tagestimate.viewer"]
    reason = "HTTP 404" if fault == "404" else "no answer within 0.5 s"
    assert message.startswith(f"1054192: the source manifest {emulator.iiif_base}/1054192/manifest.json could not "
                              f"be fetched ({reason}")
    assert message.endswith(
        "no 1054192.manifest.json this time (its tags are in 1054192.iiif.json, with plain targets)")


@pytest.mark.parametrize("scheme,adopted", [("HTTPS://", True), ("Http://", True), ("javascript:", False)])
def test_a_fetched_manifest_s_own_id_is_adopted_when_it_is_a_web_url_in_any_case(tmp_path, scheme, adopted):
    """Schemes ignore case, so HTTPS://... is the manifest's id too; anything else is not a link to keep."""
    boxes = {"1054192_3_0": ("10.0", "20.5", "35.0", "50.25")}
    with NdlEmulator() as emulator:
        inputs = ndl_crawl(tmp_path, emulator, boxes)
        source = v2_manifest(emulator, "1054192/manifest.json", "1054192", [3])
        own = scheme + "www.dl.ndl.go.jp/api/iiif/1054192/manifest.json"
        source["@id"] = own
        emulator.documents["1054192/manifest.json"] = source
        written = write(tmp_path / "out", "1054192", [tagged(inputs, "1054192", "1054192_3_0")], run_context(inputs))
    expected = own if adopted else f"{emulator.iiif_base}/1054192/manifest.json"
    assert written["1054192.iiif.json"]["partOf"] == [{"id": expected, "type": "Manifest"}]


def test_a_host_that_never_answered_is_skipped_for_the_rest_of_its_run_only(tmp_path, caplog):
    """A refused host is not asked again in the run that met it (its other items do not wait again), but
    the next run in the same process asks: the host may be back, or its port another server's now."""
    boxes = {"1054192_3_0": ("10.0", "20.5", "35.0", "50.25")}
    with NdlEmulator() as gone:
        inputs, port = ndl_crawl(tmp_path, gone, boxes), gone.port
    records = [tagged(inputs, "1054192", "1054192_3_0")]
    first_run = run_context(inputs)
    with caplog.at_level(logging.WARNING, logger="tagestimate.viewer"):
        refused = write(tmp_path / "refused", "1054192", records, first_run)
        with NdlEmulator(port=port) as back:
            back.documents["1054192/manifest.json"] = v2_manifest(back, "1054192/manifest.json", "1054192", [3])
            same_run = write(tmp_path / "same", "1054192", records, first_run)
            asked_by_the_same_run = list(back.requests)
            next_run = write(tmp_path / "next", "1054192", records, run_context(inputs))
            asked_by_the_next_run = [path for _, path in back.requests]
    assert sorted(refused) == sorted(same_run) == ["1054192.iiif.json"]
    assert asked_by_the_same_run == []
    assert asked_by_the_next_run == ["/api/iiif/1054192/manifest.json"]
    assert sorted(next_run) == ["1054192.iiif.json", "1054192.manifest.json"]
    reasons = [r.getMessage().split("(", 1)[1].split(")")[0] for r in caplog.records if r.name == "tagestimate.viewer"]
    assert len(reasons) == 2 and "refused" in reasons[0].lower()
    assert reasons[1] == f"127.0.0.1:{port} did not answer earlier in this run"


def test_a_manifest_changed_since_the_crawl_is_one_sentence_and_no_copy(tmp_path, caplog):
    with NdlEmulator() as emulator:
        inputs, source = v3_crawl(tmp_path, emulator)
        source["items"] = source["items"][:1]  # canvas 2, which a row names, is gone
        (inputs / "book3.manifest.json").write_text(json.dumps(source), encoding="utf-8")
        with caplog.at_level(logging.WARNING, logger="tagestimate.viewer"):
            records = [tagged(inputs, "book3", "0001"), tagged(inputs, "book3", "0002")]
            written = write(tmp_path / "out", "book3", records, run_context(inputs))
    assert sorted(written) == ["book3.iiif.json"]
    page = written["book3.iiif.json"]
    assert page["partOf"] == [{"id": source["id"], "type": "Manifest"}]  # the crawl recorded it
    assert [a["target"]["source"]["id"] for a in page["items"]][-1] == source["id"] + "/canvas/2"  # the row's canvas
    [message] = [r.getMessage() for r in caplog.records]
    assert message.startswith(f"book3: the source manifest {source['id']} no longer has the canvas "
                              f"{source['id']}/canvas/2 of 0002: it changed since the crawl; crawl the item again")


def test_markup_in_a_manifest_label_is_stripped_from_the_page_and_the_copy(tmp_path):
    with NdlEmulator() as emulator:
        inputs, source = v3_crawl(tmp_path, emulator, title="")
        source["label"] = {"en": ['<a href="javascript:x()">Tales</a> &lt;script&gt;alert(1)&lt;/script&gt; of old']}
        source["items"][0]["label"] = {"en": ["<img src=x onerror=alert(1)>page 1"]}
        (inputs / "book3.manifest.json").write_text(json.dumps(source), encoding="utf-8")
        written = write(tmp_path / "out", "book3", [tagged(inputs, "book3", "0001")], run_context(inputs))
    assert written["book3.iiif.json"]["label"] == {"en": ["tags of Tales alert(1) of old"]}
    assert written["book3.manifest.json"]["label"] == {"en": ["Tales alert(1) of old"]}
    assert written["book3.manifest.json"]["items"][0]["label"] == {"en": ["page 1"]}
    assert viewer.plain_text("a < b & c") == "a < b & c"  # not markup: kept


@pytest.mark.parametrize("depth", [900, 5000])
def test_a_hostile_manifest_nested_deep_gives_the_page_and_a_warning_not_a_crash(tmp_path, depth, caplog):
    with NdlEmulator() as emulator:
        inputs, source = v3_crawl(tmp_path, emulator, title="")
        text = json.dumps(source).replace('"label": {"en": ["Book book3.json"]}',
                                          '"label": ' + "[" * depth + '"deep"' + "]" * depth, 1)
        (inputs / "book3.manifest.json").write_text(text, encoding="utf-8")
        with caplog.at_level(logging.WARNING, logger="tagestimate.viewer"):
            written = write(tmp_path / "out", "book3", [tagged(inputs, "book3", "0001")], run_context(inputs))
    page = written["book3.iiif.json"]
    assert page["items"] and page["label"] in ({"en": ["tags of deep"]}, {"en": ["tags of book3"]})
    if "book3.manifest.json" not in written:  # where Python's JSON or copy gave up: said in one line
        [message] = [r.getMessage() for r in caplog.records if r.name == "tagestimate.viewer"]
        assert "book3: the source manifest" in message and "no book3.manifest.json" in message


def test_crops_without_manifest_csv_find_their_boxes_in_the_crawl_above_or_say_whole_page(tmp_path, caplog):
    crawl = tmp_path / "datasetpdm"
    write_rows(crawl, [{"id": "1054192_3_0", "folder": "picture", "pid": "1054192", "page": "3", "x": "10.0",
                        "y": "20.5", "w": "35.0", "h": "50.25"},
                       {"id": "1054192_3_1", "folder": "picture", "pid": "1054192", "page": "3", "x": "50.0",
                        "y": "5.0", "w": "20.0", "h": "10.0"}])
    # the input is one folder of the crawl: manifest.csv is the folder above
    page = json.loads(formats.render_iiif("picture", [tagged(crawl / "picture", "picture", "1054192_3_0")], CONFIG,
                                          context(crawl / "picture")))
    assert page["items"][0]["target"]["selector"]["value"] == "xywh=percent:10.0,20.5,35.0,50.25"
    # a crop moved to a folder of another name: its id, unique in the crawl, still finds its row
    page = json.loads(formats.render_iiif("mine", [tagged(crawl, "mine", "1054192_3_1")], CONFIG, context(crawl)))
    assert page["items"][0]["target"]["selector"]["value"] == "xywh=percent:50.0,5.0,20.0,10.0"
    # no crawl at all: two crops of page 3 target the whole page, each with its own id, and say so
    alone = tmp_path / "alone"
    keys = ["1054192_3_0", "1054192_3_1"]
    page = json.loads(formats.render_iiif("book", [tagged(alone, "book", key) for key in keys], CONFIG,
                                          context(alone)))
    validate_page(page)
    targets = {a["id"].split("#")[1]: a["target"] for a in page["items"]}
    first, second = targets["1054192_3_0/picture"], targets["1054192_3_1/picture"]
    assert first != second and first["source"] == second["source"] and "selector" not in first
    assert (first["id"], second["id"]) == (ID_BASE + "/book.iiif.json#1054192_3_0",
                                           ID_BASE + "/book.iiif.json#1054192_3_1")
    assert {a["label"]["en"][-1] for a in page["items"]} == {viewer.WHOLE_PAGE_NOTE}  # after the tag's name
    with caplog.at_level(logging.INFO, logger="tagestimate.annotations"):
        annotations.note_run([Item("book", [(key, "") for key in keys]), Item("other", [("scan", "")])],
                             context(alone))
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        "2 crops named like NDL's ({pid}_{page}_{n}) have no box in a crawl's manifest.csv: their annotations "
        "target the whole page, and say so in their label"]


def test_an_item_of_several_books_gets_no_part_of_and_no_copy(tmp_path):
    records = [tagged(tmp_path, "mixed", "1054192_3_0"), record(tmp_path, "mixed", "2000001_2_0",
                                                                  np.full(len(LABELS), 0.9, np.float32))]
    written = write(tmp_path / "out", "mixed", records, context(tmp_path))
    assert sorted(written) == ["mixed.iiif.json"] and "partOf" not in written["mixed.iiif.json"]


def test_companion_files_are_never_read_as_items():
    assert formats.match_file("1054192.manifest.json") is None
    assert formats.match_file("1054192.iiif.json") == ("1054192", "iiif")


def test_a_non_http_id_base_is_refused_in_one_sentence_before_any_file(tmp_path, capsys):
    import multiinference

    (tmp_path / "in" / "item").mkdir(parents=True)
    with pytest.raises(SystemExit) as stop:
        multiinference.main(["--inputpath", str(tmp_path / "in"), "--outputpath", str(tmp_path / "out"),
                             "--format", "iiif", "--id-base", "ftp://example.org/tags"])
    assert stop.value.code == 2
    assert capsys.readouterr().err.endswith(
        "error: --id-base must be an absolute URL such as https://example.org/tags; 'ftp://example.org/tags' "
        "is a ftp: URL; use http or https\n")
    assert not (tmp_path / "out").exists() or not any(name.endswith(".json") for name in os.listdir(tmp_path / "out"))


@pytest.mark.slow
def test_crawl_then_tag_builds_the_copy_from_the_crawls_saved_manifest(tmp_path, monkeypatch):
    """`newdataclawer.py --iiif-manifest URL` then `multiinference.py --format iiif --id-base ...`: the copy
    comes from what the crawl saved (the server is not asked again) and every tag sits on its canvas."""
    import multiinference
    import newdataclawer
    from modelfiles import write_trained_weights
    from tests.test_iiif import FAST

    monkeypatch.chdir(tmp_path)
    logits = np.full(len(LABELS), -4.0, np.float32)
    logits[LABELS.index("picture")] = 3.0
    weights, _ = write_trained_weights(str(tmp_path / "w"), logits=logits)
    with NdlEmulator() as emulator:
        emulator.documents["book3.json"] = v3_manifest(emulator, "book3.json", 2)
        assert newdataclawer.main(["--iiif-manifest", emulator.doc_url("book3.json"), "--out", "input",
                                   "--api-base", emulator.api_base, "--iiif-base", emulator.iiif_base, *FAST]) == 0
        asked = emulator.count("docs")
        assert multiinference.main(["--format", "iiif", "--weights", weights, "--backend", "tensorflow", "--quiet",
                                    "--no-report", "--id-base", ID_BASE]) == 0
        assert emulator.count("docs") == asked == 1  # read once, by the crawl
    assert sorted(os.listdir("output")) == ["book3.emb.npz", "book3.iiif.json", "book3.manifest.json",
                                             "context.jsonld"]
    with open("output/book3.manifest.json", encoding="utf-8") as handle:
        copy = json.load(handle)
    Manifest(**copy)
    canvases = [canvas["id"] for canvas in copy["items"]]
    assert [[a["id"] for page in canvas["annotations"] for a in page["items"]] for canvas in copy["items"]] == [
        [f"{ID_BASE}/book3.iiif.json#0001/picture"], [f"{ID_BASE}/book3.iiif.json#0002/picture"]]
    with open("output/book3.iiif.json", encoding="utf-8") as handle:
        page = json.load(handle)
    assert [a["target"]["source"]["id"] for a in page["items"]] == canvases

