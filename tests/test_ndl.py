"""Pure functions of tagestimate.ndl: no network, no TensorFlow."""

import io

import pytest
from PIL import Image

from tagestimate import ndl

DOC_EXAMPLE = "https://www.dl.ndl.go.jp/api/iiif/1017141/R0000454/pct:15.0,20.1,28.5,66.7/,256/0/default.jpg"
INDEX_URL = "https://www.dl.ndl.go.jp/api/iiif/1017141/R0000454/pct:15.0,20.1,28.5,66.7/full/0/default.jpg"


def _record(**changes):
    record = {
        "id": "1017141_454_0", "pid": "1017141", "title": "経済学全集", "page": 454,
        "x": 15.0, "y": 20.1, "w": 28.5, "h": 66.7,
        "graphictags": [{"tagname": "graphic", "confidence": 0.97}, {"tagname": "graphic_graph", "confidence": 0.91}],
    }
    record.update(changes)
    return {key: value for key, value in record.items() if value is not ...}


def _jpeg(size=(40, 30)):
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 100, 50)).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.mark.parametrize("value", ["1017141_454_0", "a", "A-b_9", "x" * 64])
def test_valid_ids(value):
    assert ndl.valid_id(value)


@pytest.mark.parametrize("value", ["", "..", "../etc/passwd", "a/b", "a\\b", "a.b", "x" * 65, "a\0b", "abc\n",
                                   "ａｂｃ", "a b", 123, None])
def test_hostile_ids_are_rejected(value):
    assert not ndl.valid_id(value)


def test_iiif_url_matches_the_documented_example():
    record = ndl.parse_record(_record())
    assert record.url("https://www.dl.ndl.go.jp/api/iiif") == DOC_EXAMPLE
    assert record.url("https://www.dl.ndl.go.jp/api/iiif/", size=",256") == DOC_EXAMPLE


@pytest.mark.parametrize("page, identifier", [(0, "R0000000"), (7, "R0000007"), (454, "R0000454"),
                                              (9999999, "R9999999")])
def test_iiif_page_is_padded_to_seven_digits(page, identifier):
    url = ndl.iiif_url("http://h/iiif", "123", page, "pct:1.0,2.0,3.0,4.0", "full")
    assert url == f"http://h/iiif/123/{identifier}/pct:1.0,2.0,3.0,4.0/full/0/default.jpg"


def test_pct_region_always_has_a_decimal_point():
    assert ndl.pct_region(15, 20.1, 28.5, 100) == "pct:15.0,20.1,28.5,100.0"


@pytest.mark.parametrize("pid, page, size", [("../x", 1, ",256"), ("1", -1, ",256"), ("1", 10 ** 7, ",256"),
                                             ("1", True, ",256"), ("1", 1, "256"), ("1", 1, ",256/../x")])
def test_iiif_url_refuses_bad_parts(pid, page, size):
    with pytest.raises(ndl.RecordError):
        ndl.iiif_url("http://h/iiif", pid, page, "full", size)


@pytest.mark.parametrize("size", ["full", "max", ",256", "256,", "200,300", "!200,200", "pct:50", "pct:12.5"])
def test_valid_sizes(size):
    assert ndl.valid_size(size)


def test_parse_record_reads_fields_and_ignores_extras():
    record = ndl.parse_record(_record(extra={"a": 1}, score=3))
    assert (record.id, record.pid, record.page, record.title) == ("1017141_454_0", "1017141", 454, "経済学全集")
    assert (record.x, record.y, record.w, record.h) == (15.0, 20.1, 28.5, 66.7)
    assert record.confidence("graphic_graph") == 0.91
    assert record.confidence("stamp") is None and not record.has_tag("stamp")


def test_parse_record_accepts_missing_title_and_tags():
    record = ndl.parse_record(_record(title=..., graphictags=...))
    assert record.title == "" and record.tags == ()


def test_parse_record_strips_control_characters_from_titles():
    assert ndl.parse_record(_record(title="a\nb\x00c\u3000d")).title == "a b c\u3000d"


@pytest.mark.parametrize("changes", [
    {"id": ...}, {"pid": ...}, {"page": ...}, {"x": ...}, {"h": None},
    {"id": "../../etc/passwd"}, {"id": "a/b"}, {"pid": ".."}, {"id": "x" * 65}, {"id": 5},
    {"page": "454"}, {"page": True}, {"page": 4.5}, {"x": "15"}, {"x": float("nan")},
    {"x": -1.0}, {"w": 0}, {"h": 150.0}, {"graphictags": "graphic"}, {"graphictags": [{"confidence": 1}]},
])
def test_parse_record_rejects_bad_records(changes):
    with pytest.raises(ndl.RecordError):
        ndl.parse_record(_record(**changes))


@pytest.mark.parametrize("raw", [[], None, "x", 5])
def test_parse_record_rejects_non_objects(raw):
    with pytest.raises(ndl.RecordError):
        ndl.parse_record(raw)


def test_parse_api_body():
    assert ndl.parse_api_body(b'[{"id": "a"}]') == [{"id": "a"}]
    for body in (b'[{"id": ', b'{"error": "x"}', b"<html></html>", b"\xff\xfe"):
        with pytest.raises(ndl.RecordError):
            ndl.parse_api_body(body)


def test_parse_iiif_url_of_the_index_and_rebuild_with_another_base_and_size():
    base, pid, page, box = ndl.parse_iiif_url(INDEX_URL)
    assert (base, pid, page, box) == ("https://www.dl.ndl.go.jp/api/iiif", "1017141", 454, (15.0, 20.1, 28.5, 66.7))
    assert ndl.iiif_url(base, pid, page, ndl.pct_region(*box), ",256") == DOC_EXAMPLE
    assert ndl.iiif_url("http://127.0.0.1:1/m", pid, page, ndl.pct_region(*box), "full") == \
        "http://127.0.0.1:1/m/1017141/R0000454/pct:15.0,20.1,28.5,66.7/full/0/default.jpg"


@pytest.mark.parametrize("url", [
    "https://x/iiif/1017141/R454/pct:1,2,3,4/full/0/default.jpg",  # page not 7 digits
    "https://x/iiif/../R0000454/pct:1,2,3,4/full/0/default.jpg",
    "https://x/iiif/1017141/R0000454/full/full/0/default.jpg",
    "https://x/iiif/1017141/R0000454/pct:90,2,30,4/full/0/default.jpg".replace("90", "120"),
    "ftp://x/iiif/1017141/R0000454/pct:1,2,3,4/full/0/default.jpg",
    "", None,
])
def test_parse_iiif_url_rejects_other_urls(url):
    with pytest.raises(ndl.RecordError):
        ndl.parse_iiif_url(url)


def test_check_jpeg_accepts_a_jpeg():
    assert ndl.check_jpeg(_jpeg((40, 30))) == (40, 30)


def test_check_jpeg_rejects_truncated_html_png_and_pixel_bombs():
    data = _jpeg((300, 200))
    png = io.BytesIO()
    Image.new("RGB", (8, 8)).save(png, "PNG")
    for body in (data[: len(data) // 2], b"<!DOCTYPE html><html></html>", b"", png.getvalue()):
        with pytest.raises(ndl.NotAnImage):
            ndl.check_jpeg(body)
    with pytest.raises(ndl.NotAnImage):
        ndl.check_jpeg(data, max_pixels=300 * 200 - 1)


def _with_declared_size(jpeg, width, height):
    """`jpeg` with its frame header claiming width x height (nothing else changed)."""
    start = jpeg.index(b"\xff\xc0")  # SOF0: marker, length (2), precision (1), height (2), width (2)
    return jpeg[:start + 5] + height.to_bytes(2, "big") + width.to_bytes(2, "big") + jpeg[start + 9:]


@pytest.mark.filterwarnings("error::PIL.Image.DecompressionBombWarning")
def test_check_jpeg_refuses_a_huge_body_in_one_sentence_without_pillows_warning():
    huge = _with_declared_size(_jpeg((40, 30)), 10000, 10000)  # 100 megapixels: Pillow would warn
    with pytest.raises(ndl.NotAnImage, match=r"^the image is 10000x10000 pixels, over the 64000000 pixel cap$"):
        ndl.check_jpeg(huge)
    with pytest.raises(ndl.NotAnImage, match=r"^the body is not a JPEG \(it starts with b'\\x89PNG"):
        png = io.BytesIO()
        Image.new("RGB", (8, 8)).save(png, "PNG")
        ndl.check_jpeg(png.getvalue())

