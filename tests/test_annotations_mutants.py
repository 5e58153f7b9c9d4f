"""--format iiif, pinned where the mutation run found nothing checking it: whole targets per input kind
(canvas rows, boxes on unsized canvases, crops whose box is unknown), labels per language, extraTag marks,
key order and the exact text of a page, ids of names with "/", the context file, page_tags' reading and
refusals, and note_run's log lines (counts, singular and plural, which images count, ids not on http)."""

import json
import logging
import os

import numpy as np
import pytest

from tagestimate import annotations, storage, viewer
from tagestimate import formats as results
from tagestimate.labels import LABELS
from tagestimate.records import ExtraScore, RunContext
from tagestimate.tag.inference import Item
from tests.test_annotations import CONFIG, context, write_rows

ID_BASE = "https://example.org/tags"
PAGE = ID_BASE + "/book.iiif.json"
NDL = "https://www.dl.ndl.go.jp/api/iiif"
MANIFEST = f"{NDL}/1054192/manifest.json"  # the one a file named 1054192_{page}_{n} is inferred to come from
PERCENT = {"type": "FragmentSelector", "conformsTo": "http://www.w3.org/TR/media-frags/",
           "value": "xywh=percent:10.0,20.5,35.0,50.25"}
BOX = {"x": "10.0", "y": "20.5", "w": "35.0", "h": "50.25"}
NOTE = viewer.WHOLE_PAGE_NOTE
PHOTOGRAPH = {"en": ["photograph"], "ja": ["写真"]}


def picture(input_dir, item, key, confidence=0.9, extra=()):
    """A record whose only tag is picture (every other label at 0.1)."""
    probabilities = np.array([confidence if label == "picture" else 0.1 for label in LABELS], np.float32)
    return results.Record(key, os.path.join(str(input_dir), item, key + ".jpg"), (100, 80), probabilities,
                          None, tuple(extra))


def render(item, records, ctx):
    return json.loads(annotations.render_page(item, records, CONFIG, ctx))


def targets_and_labels(page):
    return {a["id"].rpartition("#")[2]: (a["target"], a["label"]) for a in page["items"]}


def ndl_image(page):
    return {"id": f"{NDL}/1054192/R{page:07d}/full/full/0/default.jpg", "type": "Image", "format": "image/jpeg"}


def canvas(n, sized=True):
    """A v3 canvas of NDL's book 1054192, page n, painted by NDL's Image API 2 service for that page."""
    identifier, service = f"https://example.org/iiif/1054192/canvas/{n}", f"{NDL}/1054192/R{n:07d}"
    return {"id": identifier, "type": "Canvas", **({"width": 600, "height": 800} if sized else {}),
            "items": [{"id": identifier + "/page", "type": "AnnotationPage", "items": [{
                "id": identifier + "/page/image", "type": "Annotation", "motivation": "painting", "target": identifier,
                "body": {"id": service + "/full/full/0/default.jpg", "type": "Image", "format": "image/jpeg",
                         "service": [{"id": service, "type": "ImageService2", "profile": "level1"}]}}]}]}


def test_targets_on_the_source_manifests_canvases_for_each_kind_of_row(tmp_path):
    """With the manifest in hand: a canvas row without a box targets its whole canvas (no id of its own: it
    is a page, not a crop, whatever its file is called); a crop's box on a canvas of unknown size stays in
    percent; a crop without a row targets its canvas through an id of its own and says so; a plain file
    keeps its file target."""
    inputs = tmp_path / "input"
    write_rows(inputs, [{"id": "1054192_2_0", "folder": "book", "canvas": canvas(2)["id"], "manifest": MANIFEST},
                        {"id": "1054192_3_0", "folder": "book", "pid": "1054192", "page": "3", **BOX}])
    document = {"@context": viewer.PRESENTATION_3, "id": MANIFEST, "type": "Manifest", "label": {"en": ["Tales"]},
                "items": [canvas(2), canvas(3, sized=False), canvas(5)]}
    (inputs / "book.manifest.json").write_text(json.dumps(document), encoding="utf-8")
    keys = ["cover", "1054192_5_0", "1054192_3_0", "1054192_2_0"]
    page = render("book", [picture(inputs, "book", key) for key in keys], context(inputs))
    assert list(page) == ["@context", "id", "type", "label", "partOf", "items"]  # partOf right after the label
    assert page["label"] == {"en": ["tags of Tales"]} and page["partOf"] == [{"id": MANIFEST, "type": "Manifest"}]
    on = {n: {"id": canvas(n)["id"], "type": "Canvas"} for n in (2, 3, 5)}
    assert targets_and_labels(page) == {
        "1054192_2_0/picture": ({"type": "SpecificResource", "source": on[2]}, PHOTOGRAPH),
        "1054192_3_0/picture": ({"type": "SpecificResource", "source": on[3], "selector": PERCENT}, PHOTOGRAPH),
        "1054192_5_0/picture": ({"id": PAGE + "#1054192_5_0", "type": "SpecificResource", "source": on[5]},
                                {"en": ["photograph", NOTE], "ja": ["写真"]}),
        "cover/picture": ((inputs / "book" / "cover.jpg").as_uri(), PHOTOGRAPH)}


def test_targets_without_the_manifest_and_which_crops_say_their_box_is_unknown(tmp_path):
    """No manifest in hand (not saved, not fetched): a canvas row's box on its canvas; a crawled crop's box
    on NDL's page image; a row with a pid but no box, or a crop without a row (in a sub-folder), targets
    the whole page through an id of its own (its key percent-encoded, "/" included), the note in English
    only."""
    write_rows(tmp_path, [
        {"id": "0004", "folder": "book", "page": "4", "canvas": "https://h/m/canvas/4", "manifest": "https://h/m",
         **BOX},
        {"id": "1054192_2_0", "folder": "book", "pid": "1054192", "page": "2", **BOX},
        {"id": "scan", "folder": "book", "pid": "1054192", "page": "3"}])
    keys = ["scan", "sub dir/1054192_3_0", "1054192_2_0"]
    page = render("book", [picture(tmp_path, "book", key) for key in keys], context(tmp_path))
    whole = {"en": ["photograph", NOTE], "ja": ["写真"]}
    assert targets_and_labels(page) == {
        "1054192_2_0/picture": ({"type": "SpecificResource", "source": ndl_image(2), "selector": PERCENT},
                                PHOTOGRAPH),
        "scan/picture": ({"id": PAGE + "#scan", "type": "SpecificResource", "source": ndl_image(3)}, whole),
        "sub%20dir%2F1054192_3_0/picture": (
            {"id": PAGE + "#sub%20dir%2F1054192_3_0", "type": "SpecificResource", "source": ndl_image(3)}, whole)}
    assert [a["id"] for a in page["items"]] == [  # natural order, keys encoded whole
        PAGE + "#1054192_2_0/picture", PAGE + "#scan/picture", PAGE + "#sub%20dir%2F1054192_3_0/picture"]
    assert annotations.page_tags(page) == {"1054192_2_0": [("picture", 0.9)], "scan": [("picture", 0.9)],
                                           "sub dir/1054192_3_0": [("picture", 0.9)]}
    assert "partOf" not in page and page["label"] == {"en": ["tags of book"]}  # inferred and never fetched
    canvas_row = render("book", [picture(tmp_path, "book", "0004")], context(tmp_path))
    assert canvas_row["items"][0]["target"] == {
        "type": "SpecificResource", "source": {"id": "https://h/m/canvas/4", "type": "Canvas"}, "selector": PERCENT}
    assert canvas_row["partOf"] == [{"id": "https://h/m", "type": "Manifest"}]  # recorded by the crawl


def test_file_targets_under_the_target_base_only_for_files_inside_the_input(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    inputs, elsewhere = tmp_path / "in", tmp_path / "elsewhere"
    base = "https://img.example/in"
    inside, outside = picture(inputs, "book", "scan 1"), picture(elsewhere, "book", "scan 2")
    page = render("book", [inside, outside], context(inputs, target_base=base))
    assert [a["target"] for a in page["items"]] == [base + "/book/scan%201.jpg",
                                                    (elsewhere / "book" / "scan 2.jpg").as_uri()]
    assert page["label"] == {"en": ["tags of book"]}  # no rows, no manifest: the item's name
    # no input folder known: every file is its file: URL, even under the working folder
    page = render("book", [picture("in", "book", "scan 1")], context("", target_base=base))
    assert page["items"][0]["target"] == (inputs / "book" / "scan 1.jpg").as_uri()


def test_a_page_without_a_run_context_names_only_the_software():
    page = render("book", [picture("/data", "book", "p10"), picture("/data", "book", "p2")], RunContext())
    assert page["id"] == "urn:tagestimate:book.iiif.json"
    assert page["@context"] == ["urn:tagestimate:context.jsonld", annotations.PRESENTATION_CONTEXT]
    assert [a["id"] for a in page["items"]] == ["urn:tagestimate:book.iiif.json#p2/picture",
                                                "urn:tagestimate:book.iiif.json#p10/picture"]  # natural order
    first = page["items"][0]
    assert list(first) == ["id", "type", "label", "generator", "motivation", "confidence", "body", "target"]
    assert first["generator"] == {"type": "Software", "name": "tagestimate 1.0.0", "homepage": annotations.HOMEPAGE}


def test_the_pages_text_key_order_and_extra_tags_marks(tmp_path):
    extra = [ExtraScore("kamon", 0.8, 0.5), ExtraScore("ukiyoe", 0.3, 0.5)]  # ukiyoe below its threshold
    records = [picture(tmp_path, "本", "p2", 0.95, extra), picture(tmp_path, "本", "p10", 0.85)]
    text = annotations.render_page("本", records, CONFIG, context(tmp_path))
    page = json.loads(text)
    assert text == json.dumps(page, ensure_ascii=False, indent=1) + "\n"
    assert text.startswith('{\n "@context": [\n  "https://example.org/tags/context.jsonld",\n') and "写真" in text
    assert page["id"] == ID_BASE + "/%E6%9C%AC.iiif.json"
    by_id = {a["id"].rpartition("#")[2]: a for a in page["items"]}
    assert list(by_id) == ["p2/picture", "p2/kamon", "p10/picture"]
    assert list(by_id["p2/kamon"]) == ["id", "type", "label", "created", "generator", "motivation", "confidence",
                                       "body", "target"]
    assert by_id["p2/kamon"]["confidence"] == 0.8 and by_id["p2/kamon"]["label"] == {"en": ["kamon"],
                                                                                    "ja": ["kamon"]}
    described = {"type": "TextualBody", "format": "text/plain", "language": "en", "purpose": "describing"}
    assert by_id["p2/kamon"]["body"] == [  # the extension mark on the bodies naming a learned tag only
        {"type": "TextualBody", "value": "kamon", "format": "text/plain", "language": "en", "purpose": "tagging",
         "extraTag": True},
        {"type": "TextualBody", "value": "kamon", "format": "text/plain", "language": "ja", "purpose": "tagging",
         "extraTag": True},
        {**described, "value": "confidence 0.8"}]
    assert by_id["p2/picture"]["body"] == [
        {"type": "TextualBody", "value": "photograph", "format": "text/plain", "language": "en", "purpose": "tagging"},
        {"type": "TextualBody", "value": "写真", "format": "text/plain", "language": "ja", "purpose": "tagging"},
        {**described, "value": "confidence 0.95"}]
    assert annotations.page_tags(page) == {"p2": [("picture", 0.95), ("kamon", 0.8)], "p10": [("picture", 0.85)]}


def test_names_with_a_slash_are_encoded_whole_in_every_id(tmp_path):
    page = render("vol/1", [picture(tmp_path, "vol/1", "a/b")], context(tmp_path))
    assert page["id"] == ID_BASE + "/vol%2F1.iiif.json"
    assert page["items"][0]["id"] == ID_BASE + "/vol%2F1.iiif.json#a%2Fb/picture"
    assert annotations.annotation_id("P", "x/y z", "a/b") == "P#x%2Fy%20z/a%2Fb"
    document = {"id": "https://example.org/iiif/m", "type": "Manifest", "label": {"en": ["m"]}, "items": []}
    viewer.remember("vol/1", viewer.Source("https://example.org/iiif/m", True, document, 3))
    [(name, text)] = annotations.companions("vol/1", [], CONFIG, context(tmp_path),
                                            json.dumps({"id": page["id"], "items": []}))
    assert name == "vol/1.manifest.json" and json.loads(text)["id"] == ID_BASE + "/vol%2F1.manifest.json"


def test_page_tags_reads_ids_whatever_the_id_base_holds():
    """The key is what lies between the last "#" and the last "/" (a tag has neither)."""
    page = {"type": "AnnotationPage", "items": [
        {"id": "https://example.org/tags#v2/book.iiif.json#a%2Fb/picture", "confidence": 0.5},
        {"id": "https://example.org/tags#v2/book.iiif.json#a/b/stamp", "confidence": "0.25"}]}  # "/" unencoded
    assert annotations.page_tags(page) == {"a/b": [("picture", 0.5), ("stamp", 0.25)]}
    ctx = RunContext(id_base="https://example.org/tags#v2")
    written = render("book", [picture("/data", "book", "a")], ctx)
    assert annotations.page_tags(written) == {"a": [("picture", 0.9)]}


@pytest.mark.parametrize("document", [
    [], "AnnotationPage", {"type": "Manifest", "items": []}, {"type": "AnnotationPage", "items": {}},
    {"type": "AnnotationPage"}, {"items": []}])
def test_page_tags_refuses_what_is_not_an_annotation_page(document):
    with pytest.raises(ValueError) as error:
        annotations.page_tags(document)
    assert str(error.value) == "not an AnnotationPage"


CONTEXT_TEXT = """{
  "@context": {
    "xsd": "http://www.w3.org/2001/XMLSchema#",
    "confidence": {
      "@id": "https://github.com/ndl-lab/tagestimatemodel/ns#confidence",
      "@type": "xsd:double"
    },
    "extraTag": {
      "@id": "https://github.com/ndl-lab/tagestimatemodel/ns#extraTag",
      "@type": "xsd:boolean"
    }
  }
}
"""


def test_the_context_file_is_written_once_and_a_stale_one_replaced(tmp_path, monkeypatch):
    written = []
    real = storage.write_atomic
    monkeypatch.setattr(storage, "write_atomic", lambda path, data: (written.append(path), real(path, data))[1])
    path = annotations.write_context(str(tmp_path))
    assert path == str(tmp_path / "context.jsonld") and (tmp_path / "context.jsonld").read_text("utf-8") == CONTEXT_TEXT
    assert annotations.write_context(str(tmp_path)) == path and written == [path]  # the same text: not rewritten
    (tmp_path / "context.jsonld").write_text('{"@context": {}}\n', encoding="utf-8")
    assert annotations.write_context(str(tmp_path)) == path and written == [path, path]
    assert (tmp_path / "context.jsonld").read_text("utf-8") == CONTEXT_TEXT


CROP_LINE = ("{} named like NDL's ({{pid}}_{{page}}_{{n}}) {} no box in a crawl's manifest.csv: their annotations "
             "target the whole page, and say so in their label")
ID_LINE = ("no --id-base: the pages' and annotated manifests' ids are {} URLs, which a viewer cannot load; "
           "tag with --id-base URL where the output folder will be published")


@pytest.mark.parametrize("items, id_base, expected", [
    # a row with a pid and no box: a crop whose box is unknown
    ([Item("book", [("scan", "")])], ID_BASE, [("WARNING", CROP_LINE.format("1 crop", "has"))]),
    # boxed, a canvas row (a page, not a crop), a plain file: none counts; the crop without a row does
    ([Item("book", [("scan", ""), ("1054192_2_0", ""), ("1054192_4_0", ""), ("cover", "")]),
      Item("other", [("1054192_9_9", "")])], "http://example.org/tags",
     [("WARNING", CROP_LINE.format("2 crops", "have"))]),
    ([Item("book", [("1054192_2_0", ""), ("1054192_4_0", ""), ("cover", "")])], ID_BASE, []),
    ([Item("book", [("1054192_2_0", "")])], "file:///srv/out", [("INFO", ID_LINE.format("file"))]),
    ([], "s3://bucket/out", [("INFO", ID_LINE.format("s3"))]),
])
def test_note_run_logs_crops_whose_box_is_unknown_and_ids_not_on_http(tmp_path, caplog, items, id_base, expected):
    write_rows(tmp_path, [
        {"id": "scan", "folder": "book", "pid": "1054192", "page": "3"},
        {"id": "1054192_2_0", "folder": "book", "pid": "1054192", "page": "2", **BOX},
        {"id": "1054192_4_0", "folder": "book", "page": "4", "canvas": "https://h/m/canvas/4",
         "manifest": "https://h/m"}])
    with caplog.at_level(logging.INFO, logger="tagestimate.annotations"):
        annotations.note_run(items, context(tmp_path, id_base=id_base))
    assert [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "tagestimate.annotations"] == expected


def test_an_upper_case_http_scheme_is_a_url_a_viewer_loads(tmp_path, caplog):
    """--id-base HTTPS://... is accepted (URL schemes ignore case) and is not said to be unloadable."""
    with caplog.at_level(logging.INFO, logger="tagestimate.annotations"):
        annotations.note_run([], context(tmp_path, id_base="HTTPS://example.org/tags"))
    assert [r.getMessage() for r in caplog.records if r.name == "tagestimate.annotations"] == []
