"""What tagestimate/iiif.py makes of IIIF Presentation 2.1 and 3.0 documents, pinned whole: the pages and
skipped canvases of a manifest, a collection's members, image services, canvases with sizes, plain-text
labels, the 2.1 -> 3.0 upgrade a viewer gets, slugs and error messages (written against mutation survivors)."""

import json

import pytest

from tagestimate import iiif

H = "https://example.org"


def v3_image(service_id, kind="ImageService3", **extra):
    return dict({"id": service_id + "/full/max/0/default.jpg", "type": "Image",
                 "service": [{"id": service_id, "type": kind}]}, **extra)


def v3_canvas(canvas_id, *annotations, **extra):
    return dict({"id": canvas_id, "type": "Canvas", "items": [{"type": "AnnotationPage", "items": list(annotations)}]},
                **extra)


def painting(body, motivation="painting"):
    annotation = {"type": "Annotation", "body": body}
    if motivation is not None:
        annotation["motivation"] = motivation
    return annotation


# -- parse_document: manifests -------------------------------------------------------------------------------

def test_v3_manifest_pages_and_skipped_canvases_whole():
    document = {"id": f"{H}/m3", "type": "Manifest", "label": {"ja": ["本"], "en": ["Book"]}, "items": [
        # a commenting image is not the page; a Choice paints its first item; later bodies do not replace earlier
        {"id": f"{H}/c1", "label": {"none": ["p. 1"]}, "items": ["junk", {"type": "AnnotationPage", "items": [
            "junk",
            painting(v3_image(f"{H}/comment"), motivation="commenting"),
            painting([{"type": "Choice", "items": [v3_image(f"{H}/choiceB"), v3_image(f"{H}/choiceC")]}]),
            painting({"id": f"{H}/sound", "type": "Sound"}, motivation=None)]}]},
        {"label": "no id", "items": []},
        v3_canvas(f"{H}/c3", painting({"@type": "Image", "service": {"id": f"{H}/s3", "type": "ImageService3"}})),
        v3_canvas(f"{H}/c4", painting(["junk", {"type": "Sound"}, {"type": "Image"},
                                       v3_image(f"{H}/s4", "ImageService2")])),
        v3_canvas(f"{H}/c5", painting({"id": f"{H}/x"})),
        v3_canvas(f"{H}/c6", painting({"type": "Choice", "items": []})),
        {"id": f"{H}/c7", "type": "Canvas"},
        # keys are case-sensitive: "TYPE" is not the type
        v3_canvas(f"{H}/c8", painting({"TYPE": "Image", "type": "Sound", "service": {"id": f"{H}/s8",
                                                                                    "type": "ImageService3"}})),
    ]}
    assert iiif.parse_document(document, "m3.json") == iiif.Manifest(
        f"{H}/m3", "本", 3,
        (iiif.Page(1, f"{H}/c1", "p. 1", f"{H}/choiceB", 3),
         iiif.Page(3, f"{H}/c3", "", f"{H}/s3", 3),
         iiif.Page(4, f"{H}/c4", "", f"{H}/s4", 2)),
        (iiif.Skipped(2, "", "the canvas has no http(s) id"),
         iiif.Skipped(5, f"{H}/c5", "the canvas paints a resource without a type, not an image"),
         iiif.Skipped(6, f"{H}/c6", "the canvas paints no image"),
         iiif.Skipped(7, f"{H}/c7", "the canvas paints no image"),
         iiif.Skipped(8, f"{H}/c8", "the canvas paints a Sound, not an image")))


def test_v3_manifest_later_annotation_does_not_hide_an_earlier_image():
    document = {"id": f"{H}/m", "type": "Manifest", "items": [
        v3_canvas(f"{H}/c1", painting(v3_image(f"{H}/s1")), painting({"type": "Sound"}))]}
    assert iiif.parse_document(document, "m").pages == (iiif.Page(1, f"{H}/c1", "", f"{H}/s1", 3),)


def test_v2_manifest_pages_and_skipped_canvases_whole():
    service = {"@context": "http://iiif.io/api/image/2/context.json", "profile": "http://iiif.io/api/image/2/level1.json"}
    document = {"@id": f"{H}/m2", "@type": "sc:Manifest", "label": "Old book", "sequences": [{"canvases": [
        # @type (the v2 key) wins over a stray "type"
        {"@id": f"{H}/c1", "label": "1", "images": [
            {"resource": "junk"},
            {"resource": {"@type": "dctypes:Image", "type": "Sound", "service": dict(service, **{"@id": f"{H}/i1"})}}]},
        {"@id": f"{H}/c2", "label": "2", "images": [
            {"resource": {"type": "Image", "service": dict(service, **{"@id": f"{H}/i2"})}}]},
        {"@id": f"{H}/c3", "images": [{"resource": {"@type": "Image", "service": dict(service, **{"@id": f"{H}/i3"})}}]},
        "junk",
        {"@id": f"{H}/c5", "label": "5"},
        {"@id": f"{H}/c6", "images": [{"resource": {"@type": "dctypes:Sound", "type": "Image"}}]},
    ]}]}
    assert iiif.parse_document(document, "m2.json") == iiif.Manifest(
        f"{H}/m2", "Old book", 2,
        (iiif.Page(1, f"{H}/c1", "1", f"{H}/i1", 2),
         iiif.Page(2, f"{H}/c2", "2", f"{H}/i2", 2),
         iiif.Page(3, f"{H}/c3", "", f"{H}/i3", 2)),
        (iiif.Skipped(4, "", "the canvas has no http(s) id"),
         iiif.Skipped(5, f"{H}/c5", "the canvas paints no image"),
         iiif.Skipped(6, f"{H}/c6", "the canvas paints a dctypes:Sound, not an image")))


@pytest.mark.parametrize("document, message", [
    ({"@id": f"{H}/m", "@type": "sc:Manifest"}, f"manifest {H}/m has no sequences[0].canvases list"),
    ({"@id": f"{H}/m", "@type": "sc:Manifest", "sequences": []}, f"manifest {H}/m has no sequences[0].canvases list"),
    ({"@id": f"{H}/m", "@type": "sc:Manifest", "sequences": {"canvases": []}},
     f"manifest {H}/m has no sequences[0].canvases list"),
    ({"@id": f"{H}/m", "@type": "sc:Manifest", "sequences": ["junk"]},
     f"manifest {H}/m has no sequences[0].canvases list"),
    ({"id": f"{H}/m", "type": "Manifest"}, f"manifest {H}/m has no items list of canvases"),
    ({"type": "Manifest", "id": "ftp://example.org/m"}, "m.json has no http(s) id"),
    ({"id": f"{H}/m"}, "m.json is a document without a type, not a IIIF Manifest or Collection"),
    ({"id": f"{H}/m", "type": ["Manifest"]}, "m.json is a document without a type, not a IIIF Manifest or Collection"),
    ({"@id": f"{H}/m", "@type": "sc:Canvas"}, "m.json is a sc:Canvas, not a IIIF Manifest or Collection"),
])
def test_documents_that_are_not_manifests_say_why(document, message):
    with pytest.raises(iiif.DocumentError) as caught:
        iiif.parse_document(document, "m.json")
    assert str(caught.value) == message


def test_an_id_of_2000_characters_is_read_and_one_of_2001_is_not():
    long_id = f"{H}/" + "a" * (2000 - len(H) - 1)
    assert len(long_id) == 2000
    assert iiif.parse_document({"id": long_id, "type": "Manifest", "items": []}, "m") == iiif.Manifest(long_id, "", 3)
    with pytest.raises(iiif.DocumentError, match="^m has no http"):
        iiif.parse_document({"id": long_id + "b", "type": "Manifest", "items": []}, "m")


# -- collections -----------------------------------------------------------------------------------------------

def test_collection_members_in_key_order_with_their_kinds():
    document = {"@id": f"{H}/coll", "@type": "sc:Collection",
                "manifests": [{"@id": f"{H}/m1", "@type": "sc:Manifest"}, "junk", {"@type": "sc:Manifest"}],
                "collections": [{"@id": f"{H}/sub", "@type": "sc:Collection"},
                                {"@id": f"{H}/canvas", "@type": "sc:Canvas"}],
                "members": [{"@id": f"{H}/m2", "@type": "sc:Manifest"}, {"id": f"{H}/x", "type": "Canvas"},
                            {"@id": f"{H}/sub2", "@type": "sc:Collection"}]}
    assert iiif.parse_document(document, "c") == iiif.Collection(f"{H}/coll", (
        ("Manifest", f"{H}/m2"), ("Collection", f"{H}/sub2"), ("Collection", f"{H}/sub"), ("Manifest", f"{H}/m1")))
    v3 = {"id": f"{H}/c3", "type": "Collection", "items": [
        {"id": f"{H}/a", "type": "Manifest"}, {"id": f"{H}/b", "type": "Collection"}, {"id": f"{H}/c", "type": "Range"}]}
    assert iiif.parse_document(v3, "c") == iiif.Collection(f"{H}/c3", (("Manifest", f"{H}/a"), ("Collection", f"{H}/b")))


# -- image services and URLs ----------------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    ({"@id": f"{H}/a/", "@type": "ImageService2"}, (f"{H}/a", 2)),
    ({"@id": f"{H}/a", "@type": "ImageService1"}, (f"{H}/a", 2)),
    ({"id": f"{H}/a", "type": "ImageService2"}, (f"{H}/a", 2)),
    ({"id": f"{H}/a/", "type": "ImageService3"}, (f"{H}/a", 3)),
    ({"@id": f"{H}/a/", "@type": "ImageService3"}, (f"{H}/a", 3)),
    ({"id": f"{H}/BOX/", "type": "ImageService3"}, (f"{H}/BOX", 3)),
    ({"@id": f"{H}/BOX/", "@type": "ImageService2"}, (f"{H}/BOX", 2)),
    ({"@id": f"{H}/a/", "@context": "http://iiif.io/api/image/3/context.json"}, (f"{H}/a", 3)),
    ({"@id": f"{H}/a", "@context": "http://iiif.io/api/image/2/context.json"}, (f"{H}/a", 2)),
    ({"@id": f"{H}/a", "@context": "http://iiif.io/api/image/1/context.json"}, (f"{H}/a", 2)),
    ({"@id": f"{H}/a", "profile": "http://iiif.io/api/image/2/level2.json"}, (f"{H}/a", 2)),
    ({"@id": f"{H}/a", "profile": "http://iiif.io/api/image/1/level1.json"}, (f"{H}/a", 2)),
    ({"@id": f"{H}/a", "profile": "http://library.stanford.edu/iiif/image-api/1.1/compliance.html#level1"},
     (f"{H}/a", 2)),
    ({"@id": f"{H}/a", "profile": "http://example.org/search"}, None),
    ({"@id": f"{H}/a", "@type": "SearchService1", "@context": "http://iiif.io/api/search/1/context.json"}, None),
    ({"@type": "ImageService2"}, None),
    (["junk", {"@type": "ImageService2"}, {"@id": f"{H}/b", "@type": "ImageService2"}], (f"{H}/b", 2)),
    ([{"@id": f"{H}/auth", "profile": "http://iiif.io/api/auth/1/login"},
      {"id": f"{H}/c", "type": "ImageService3"}], (f"{H}/c", 3)),
    ("https://example.org/a", None),
])
def test_image_service_of_each_kind(value, expected):
    assert iiif.image_service(value) == expected


def test_image_url_rejects_a_size_with_its_message():
    with pytest.raises(ValueError) as caught:
        iiif.image_url(f"{H}/a", 2, "big")
    assert str(caught.value) == "size 'big' is not an IIIF size such as ,256 or full"


# -- load_json ------------------------------------------------------------------------------------------------

def test_load_json_messages():
    with pytest.raises(iiif.DocumentError) as caught:
        iiif.load_json(b"[1, 2]", "list.json")
    assert str(caught.value) == "list.json is a JSON list, not a IIIF document"
    with pytest.raises(iiif.DocumentError) as caught:
        iiif.load_json(b"{", "broken.json")
    assert str(caught.value) == ("broken.json is not JSON (Expecting property name enclosed in double quotes: "
                                 "line 1 column 2 (char 1))")
    hostile = b'{"n": ' + b"7" * 5000 + b"}"  # a number past Python's digit limit: a long message, cut at 120
    with pytest.raises(ValueError) as python_says:
        json.loads(hostile)
    assert len(str(python_says.value)) > 120
    with pytest.raises(iiif.DocumentError) as caught:
        iiif.load_json(hostile, "big.json")
    assert str(caught.value) == f"big.json is not JSON ({str(python_says.value)[:120]})"


# -- labels ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("label, limit, expected", [
    ("x" * 250, None, "x" * 200),
    ({"@value": "y" * 250}, 50, "y" * 50),
    ({"en": ["z" * 250]}, 50, "z" * 50),
    (["w" * 250], 50, "w" * 50),
    ({"@language": "en", "@value": "Book"}, None, "Book"),
    ({"en": [], "ja": ["", "本"]}, None, "本"),
    ({"en": []}, None, ""),
    (None, None, ""),
    (5, None, ""),
])
def test_label_text(label, limit, expected):
    assert (iiif.label_text(label) if limit is None else iiif.label_text(label, limit)) == expected


@pytest.mark.parametrize("label, expected", [
    ({"@value": "Book", "@language": "en"}, {"en": ["Book"]}),
    ({"en": ["<b>Book</b>", 5], "ja": "本"}, {"en": ["Book"], "ja": ["本"]}),
    ({}, {"none": [""]}),
    (None, {"none": [""]}),
    ([], {"none": [""]}),
    ("A  &amp;\n b", {"none": ["A & b"]}),
    (["one", "two"], {"none": ["one", "two"]}),
    ([{"@value": "plain"}, {"@language": "en"}, {"@value": "Tale", "@language": "en"}],
     {"none": ["plain"], "en": ["", "Tale"]}),
])
def test_plain_map(label, expected):
    assert iiif.plain_map(label) == expected


# -- slug -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("manifest_id, expected", [
    ("https://example.org/books/Book7.JSON", "Book7"),
    ("https://example.org/books/ABC.jsonld", "ABC"),
    ("https://example.org/books/(abc).json", "abc"),
    ("https://example.org/books/BOX", "BOX"),
    ("local/book#1.json", "book-1"),
    ("local/book?x=1", "book-x-1"),
])
def test_slug(manifest_id, expected):
    assert iiif.slug(manifest_id) == expected


# -- canvases (the viewer's list) -----------------------------------------------------------------------------

def test_canvases_of_a_v3_manifest_with_sizes_and_services():
    a = {"id": f"{H}/cA", "type": "Canvas", "width": 300, "height": 400, "items": [
        "junk", {"type": "AnnotationPage", "items": ["junk", painting([v3_image(f"{H}/sA")])]}]}
    bad_id = {"id": 5, "type": "Canvas"}
    c = {"id": f"{H}/cC", "type": "Canvas", "width": True, "height": 10 ** 7, "items": [
        {"type": "AnnotationPage", "items": [painting({"type": "Image",
                                                       "service": {"id": f"{H}/sC/", "type": "ImageService3"}})]},
        {"type": "AnnotationPage", "items": [painting({"type": "Sound"})]}]}
    d = {"id": f"{H}/cD", "type": "Canvas", "width": 1, "height": 9999999, "items": []}
    document = {"id": f"{H}/m", "type": "Manifest", "items": ["junk", a, bad_id, c, d]}
    assert iiif.canvases(document) == [(iiif.Canvas(f"{H}/cA", 2, 300, 400), a, f"{H}/sA"),
                                       (iiif.Canvas(f"{H}/cC", 4, 0, 0), c, f"{H}/sC"),
                                       (iiif.Canvas(f"{H}/cD", 5, 1, 9999999), d, "")]


@pytest.mark.parametrize("document", [
    {"id": f"{H}/m", "type": "Manifest"},
    {"@id": f"{H}/m", "@type": "sc:Manifest"},
    {"@id": f"{H}/m", "@type": "sc:Manifest", "sequences": []},
    {"@id": f"{H}/m", "@type": "sc:Manifest", "sequences": {"canvases": []}},
])
def test_canvases_of_a_manifest_without_any(document):
    assert iiif.canvases(document) == []


# -- the 2.1 -> 3.0 upgrade -----------------------------------------------------------------------------------

COPY = "https://tags.example.org/out/book7.manifest.json"
V2_SERVICE = {"@context": "http://iiif.io/api/image/2/context.json", "@id": f"{H}/img1/",
              "profile": "http://iiif.io/api/image/2/level1.json"}
V2 = {
    "@context": "http://iiif.io/api/presentation/2/context.json",
    "@id": f"{H}/iiif/book7/manifest", "@type": "sc:Manifest",
    "label": [{"@value": "Tales <b>of</b> old", "@language": "en"}, {"@value": "昔話", "@language": "ja"}],
    "metadata": [{"label": "Author", "value": "Anon &amp; co"},
                 {"label": {"@value": "Date", "@language": "en"}, "value": [{"@value": "1850"}]}, "junk"],
    "attribution": "National Diet Library",
    "viewingDirection": "right-to-left", "viewingHint": "paged",
    "sequences": [{"canvases": [
        {"@id": f"{H}/c1", "@type": "sc:Canvas", "label": "p. 1", "width": 1000, "height": 1500, "images": [
            {"@type": "oa:Annotation", "motivation": "sc:painting", "on": f"{H}/c1",
             "resource": {"@id": f"{H}/img1/full/full/0/default.png", "@type": "dctypes:Image", "format": "image/png",
                          "width": 2000, "height": 3000, "service": V2_SERVICE}},
            {"resource": {"@id": f"{H}/plain.jpg", "@type": "dctypes:Image"}}]},
        {"@id": f"{H}/c2", "@type": "sc:Canvas", "label": [{"@value": "p. 2"}], "images": [
            {"resource": {"@id": f"{H}/a.jpg", "height": 900, "width": "640"}},
            {"resource": {"@id": f"{H}/b.jpg", "width": 640, "height": 480, "service": [
                {"@id": f"{H}/search", "profile": "http://example.org/level2"},
                {"@id": f"{H}/img2X", "@type": "ImageService2", "profile": "level1"}]}}]},
        {"@id": f"{H}/c3", "@type": "sc:Canvas", "width": 800, "images": [
            "junk", {"resource": {"@type": "dctypes:Image", "width": 10, "height": 10}}, {"resource": "junk"}]},
        "junk",
        {"@id": f"{H}/c5", "@type": "sc:Canvas", "width": True, "height": 10 ** 7, "images": [
            {"resource": {"@id": f"{H}/e.jpg", "width": 1, "height": 9999999,
                          "service": {"@id": f"{H}/img5/", "@type": "ImageService2"}}}]},
    ]}],
}


def test_upgrade_v2_whole_manifest():
    def annotation(canvas, position, n, body):
        return {"id": f"{COPY}#image-{position}-{n}", "type": "Annotation", "motivation": "painting",
                "body": body, "target": canvas}

    def page(position, *annotations):
        return [{"id": f"{COPY}#painting-{position}", "type": "AnnotationPage", "items": list(annotations)}]

    image1 = {"id": f"{H}/img1/full/full/0/default.png", "type": "Image", "format": "image/png",
              "width": 2000, "height": 3000,
              "service": [{"id": f"{H}/img1", "type": "ImageService2", "profile": "level1"}]}
    plain = {"id": f"{H}/plain.jpg", "type": "Image", "format": "image/jpeg"}
    a = {"id": f"{H}/a.jpg", "type": "Image", "format": "image/jpeg", "height": 900}
    b = {"id": f"{H}/b.jpg", "type": "Image", "format": "image/jpeg", "width": 640, "height": 480,
         "service": [{"id": f"{H}/img2X", "type": "ImageService2", "profile": "level0"}]}
    e = {"id": f"{H}/e.jpg", "type": "Image", "format": "image/jpeg", "width": 1, "height": 9999999,
         "service": [{"id": f"{H}/img5", "type": "ImageService2", "profile": "level0"}]}
    assert iiif.upgrade_v2(V2, COPY) == {
        "id": COPY, "type": "Manifest", "label": {"en": ["Tales of old"], "ja": ["昔話"]},
        "metadata": [{"label": {"none": ["Author"]}, "value": {"none": ["Anon & co"]}},
                     {"label": {"en": ["Date"]}, "value": {"none": ["1850"]}}],
        "requiredStatement": {"label": {"en": ["Attribution"]}, "value": {"none": ["National Diet Library"]}},
        "viewingDirection": "right-to-left",
        "behavior": ["paged"],
        "items": [
            {"id": f"{H}/c1", "type": "Canvas", "label": {"none": ["p. 1"]}, "width": 1000, "height": 1500,
             "items": page(1, annotation(f"{H}/c1", 1, 1, image1), annotation(f"{H}/c1", 1, 2, plain))},
            {"id": f"{H}/c2", "type": "Canvas", "label": {"none": ["p. 2"]}, "width": 640, "height": 900,
             "items": page(2, annotation(f"{H}/c2", 2, 1, a), annotation(f"{H}/c2", 2, 2, b))},
            {"id": f"{H}/c3", "type": "Canvas", "label": {"none": [""]}, "items": page(3)},
            {"id": f"{H}/c5", "type": "Canvas", "label": {"none": [""]}, "width": 1, "height": 9999999,
             "items": page(5, annotation(f"{H}/c5", 5, 1, e))},
        ]}


def test_upgrade_v2_minimal_manifest_has_only_what_it_says():
    document = {"@id": f"{H}/m", "@type": "sc:Manifest", "label": "Book", "metadata": {"label": "Pages", "value": "12"},
                "viewingDirection": "sideways", "viewingHint": "non-paged", "sequences": [{"canvases": [
                    {"@id": f"{H}/c", "images": [{"resource": {"@id": f"{H}/i.jpg"}}]}]}]}
    assert iiif.upgrade_v2(document, COPY) == {
        "id": COPY, "type": "Manifest", "label": {"none": ["Book"]},
        "metadata": [{"label": {"none": ["Pages"]}, "value": {"none": ["12"]}}],
        "items": [{"id": f"{H}/c", "type": "Canvas", "label": {"none": [""]}, "items": [
            {"id": f"{COPY}#painting-1", "type": "AnnotationPage", "items": [
                {"id": f"{COPY}#image-1-1", "type": "Annotation", "motivation": "painting",
                 "body": {"id": f"{H}/i.jpg", "type": "Image", "format": "image/jpeg"}, "target": f"{H}/c"}]}]}]}


@pytest.mark.parametrize("direction", ["left-to-right", "right-to-left", "top-to-bottom", "bottom-to-top"])
def test_upgrade_v2_keeps_each_viewing_direction(direction):
    upgraded = iiif.upgrade_v2({"@id": f"{H}/m", "viewingDirection": direction, "sequences": []}, COPY)
    assert upgraded == {"id": COPY, "type": "Manifest", "label": {"none": [""]}, "viewingDirection": direction,
                        "items": []}


@pytest.mark.parametrize("hint", ["paged", "individuals", "continuous"])
def test_upgrade_v2_turns_each_viewing_hint_into_behavior(hint):
    upgraded = iiif.upgrade_v2({"@id": f"{H}/m", "viewingHint": hint, "sequences": []}, COPY)
    assert upgraded == {"id": COPY, "type": "Manifest", "label": {"none": [""]}, "behavior": [hint], "items": []}
