"""What the two NDL services mean: the illustration API and the IIIF Image API.

Pure functions (id validation, IIIF URL building and parsing, record parsing, image checks)
need no network; `random_illustrations` is the one call of the API, made through
`tagestimate.httpclient.HttpClient`, which does the HTTP itself (retries, caps, deadline).
Every response is untrusted input (see shared/docs/ndl-api.md).
"""

import dataclasses
import io
import json
import math
import re
import unicodedata

from PIL import Image, JpegImagePlugin

from tagestimate.httpclient import shorten

DEFAULT_API_BASE = "https://lab.ndl.go.jp/dl/api"
DEFAULT_IIIF_BASE = "https://www.dl.ndl.go.jp/api/iiif"
DEFAULT_SIZE = ",256"
RANDOM_ENDPOINT = "illustration/randomwithfacet"
TAG_FILTER = "f-graphictags.tagname"
PID_FILTER = "f-pid"  # any f-FIELD=VALUE is an exact filter; this one keeps one book
MAX_API_BATCH = 100
DEFAULT_BATCH = 20  # records per API call unless --batch says otherwise

# Ids, pids, tags and labels all become path components: only this alphabet is safe.
ID_RULE = "[0-9A-Za-z_-]{1,64}"
ID_PATTERN = re.compile(ID_RULE)
PAGE_DIGITS = 7
MAX_PAGE = 10 ** PAGE_DIGITS - 1

# IIIF Image API 2.1 size grammar (see ndl-api.md §2).
_SIZE_PATTERN = re.compile(r"full|max|\d+,|,\d+|\d+,\d+|!\d+,\d+|pct:\d+(\.\d+)?")
_NUMBER = r"\d+(?:\.\d+)?"
_IIIF_URL_PATTERN = re.compile(
    r"(?P<base>https?://.+)/(?P<pid>[^/]+)/R(?P<page>\d{%d})"
    r"/pct:(?P<x>%s),(?P<y>%s),(?P<w>%s),(?P<h>%s)"
    r"/[^/]+/[^/]+/[^/]+\.[A-Za-z]+" % (PAGE_DIGITS, _NUMBER, _NUMBER, _NUMBER, _NUMBER)
)

# An API answer is a list of small records; anything bigger is not one.
API_MAX_BYTES = 8 * 1024 * 1024
# A crop at ,256 is a few dozen kB; refuse to decode pixel bombs whatever --max-bytes says.
MAX_IMAGE_PIXELS = 64_000_000
JPEG_START = b"\xff\xd8\xff"  # start-of-image marker and the next marker's first byte


class RecordError(ValueError):
    """An API record (or index row) that cannot be used; the message says why."""


class NotAnImage(ValueError):
    """A response body that is not a complete JPEG image."""


def valid_id(value):
    """True when `value` is a string safe to use as a file or folder name."""
    return isinstance(value, str) and ID_PATTERN.fullmatch(value) is not None


def valid_size(value):
    """True when `value` is an IIIF 2.1 size parameter (`,256`, `full`, `!200,200`, ...)."""
    return isinstance(value, str) and _SIZE_PATTERN.fullmatch(value) is not None


def format_number(value):
    """The shortest decimal that round-trips, always with a point (15 -> '15.0')."""
    return repr(float(value))


def pct_region(x, y, w, h):
    """The IIIF region `pct:x,y,w,h` for a box given in percent of the page."""
    return "pct:" + ",".join(format_number(v) for v in (x, y, w, h))


def iiif_url(base, pid, page, region, size=DEFAULT_SIZE):
    """`{base}/{pid}/R{page:07d}/{region}/{size}/0/default.jpg`, after validating pid and page."""
    if not valid_id(pid):
        raise RecordError(f"pid {pid!r} is not {ID_RULE}")
    if isinstance(page, bool) or not isinstance(page, int) or not 0 <= page <= MAX_PAGE:
        raise RecordError(f"page {page!r} is not an integer from 0 to {MAX_PAGE}")
    if not valid_size(size):
        raise RecordError(f"size {size!r} is not an IIIF size such as ,256 or full")
    return f"{base.rstrip('/')}/{pid}/R{page:0{PAGE_DIGITS}d}/{region}/{size}/0/default.jpg"


@dataclasses.dataclass(frozen=True)
class Illustration:
    """One illustration: where it is (pid, page, box in percent) and NDL's tags for it."""

    id: str
    pid: str
    page: int
    x: float
    y: float
    w: float
    h: float
    title: str = ""
    tags: tuple = ()  # ((tagname, confidence), ...) in the API's order

    @property
    def region(self):
        return pct_region(self.x, self.y, self.w, self.h)

    def has_tag(self, tag):
        return any(name == tag for name, _ in self.tags)

    def confidence(self, tag):
        """NDL's confidence for `tag`, or None when the record lacks the tag or its confidence."""
        for name, value in self.tags:
            if name == tag:
                return value
        return None

    def url(self, base, size=DEFAULT_SIZE):
        return iiif_url(base, self.pid, self.page, self.region, size)


def _number(record, key):
    value = record.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RecordError(f"field {key!r} is missing or not a number")
    return float(value)


def check_box(x, y, w, h):
    """Raise RecordError unless x, y, w, h describe a non-empty box inside 0..100 percent."""
    if not (0 <= x < 100 and 0 <= y < 100 and 0 < w <= 100 and 0 < h <= 100):
        raise RecordError(f"box pct:{x},{y},{w},{h} is not inside the page (0-100 percent)")


def clean_text(text, limit=500):
    """`text` without control or format characters (they break CSV and terminals), shortened."""
    return "".join(" " if unicodedata.category(ch)[0] == "C" else ch for ch in text[:limit]).strip()


def parse_record(record):
    """An Illustration from one API record; RecordError naming the first problem."""
    if not isinstance(record, dict):
        raise RecordError(f"record is a {type(record).__name__}, not an object")
    for key in ("id", "pid"):
        value = record.get(key)
        if value is None:
            raise RecordError(f"field {key!r} is missing")
        if not valid_id(value):
            raise RecordError(f"{key} {str(value)[:80]!r} is not {ID_RULE}")
    page = record.get("page")
    if isinstance(page, float) and page.is_integer():
        page = int(page)
    if isinstance(page, bool) or not isinstance(page, int) or not 0 <= page <= MAX_PAGE:
        raise RecordError(f"field 'page' is missing or not an integer from 0 to {MAX_PAGE}")
    box = [_number(record, key) for key in ("x", "y", "w", "h")]
    check_box(*box)
    title = record.get("title")
    title = clean_text(title) if isinstance(title, str) else ""
    tags = []
    raw_tags = record.get("graphictags") or []
    if not isinstance(raw_tags, list):
        raise RecordError("field 'graphictags' is not a list")
    for item in raw_tags:
        if not isinstance(item, dict) or not isinstance(item.get("tagname"), str):
            raise RecordError("a graphictags entry has no tagname")
        confidence = item.get("confidence")
        if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not math.isfinite(confidence):
            confidence = None
        tags.append((item["tagname"], None if confidence is None else float(confidence)))
    return Illustration(record["id"], record["pid"], page, *box, title=title, tags=tuple(tags))


def parse_api_body(body):
    """Decode an API answer into a list of raw records; RecordError if it is not a JSON list."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise RecordError(f"the API answer is not valid JSON ({error})") from None
    if not isinstance(data, list):
        raise RecordError(f"the API answer is a JSON {type(data).__name__}, not a list of records")
    return data


def parse_iiif_url(url):
    """(base, pid, page, (x, y, w, h)) from an IIIF crop URL with a `pct:` region."""
    match = _IIIF_URL_PATTERN.fullmatch(url.strip()) if isinstance(url, str) else None
    if match is None:
        raise RecordError(f"URL {str(url)[:120]!r} is not an IIIF URL {{base}}/{{pid}}/R{{page:07d}}/pct:x,y,w,h/...")
    if not valid_id(match["pid"]):
        raise RecordError(f"pid {match['pid'][:80]!r} in the URL is not {ID_RULE}")
    box = tuple(float(match[key]) for key in ("x", "y", "w", "h"))
    check_box(*box)
    return match["base"], match["pid"], int(match["page"]), box


def check_jpeg(data, max_pixels=MAX_IMAGE_PIXELS):
    """(width, height) when `data` is a complete JPEG; NotAnImage otherwise."""
    if not bytes(data[:3]) == JPEG_START:
        raise NotAnImage(f"the body is not a JPEG (it starts with {bytes(data[:16])!r})")
    try:
        # The JPEG reader itself, not Image.open: that would print Pillow's decompression-bomb
        # warning for a huge body before the cap below rejects it in one line.
        with JpegImagePlugin.JpegImageFile(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise NotAnImage(f"the image is {width}x{height} pixels, over the {max_pixels} pixel cap")
            image.verify()
        # verify() leaves the image unusable and misses truncation: decode it fully too.
        with JpegImagePlugin.JpegImageFile(io.BytesIO(data)) as image:
            image.load()
    except NotAnImage:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise NotAnImage(f"the body does not decode as an image ({shorten(error)})") from None
    return width, height


def random_illustrations(client, api_base, tag=None, size=DEFAULT_BATCH, pid=None):
    """One call of randomwithfacet (filtered by tag and/or book pid): the raw records (a list),
    or RecordError/httpclient.FetchError."""
    if not 1 <= size <= MAX_API_BATCH:
        raise ValueError(f"size {size} is outside 1..{MAX_API_BATCH}")
    params = {"size": str(size)}
    if tag is not None:
        params[TAG_FILTER] = tag
    if pid is not None:
        params[PID_FILTER] = pid
    body = client.get(f"{api_base.rstrip('/')}/{RANDOM_ENDPOINT}", params=params,
                      max_bytes=API_MAX_BYTES, accept="application/json")
    return parse_api_body(body)
