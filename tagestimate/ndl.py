"""Client pieces for the two NDL services: the illustration API and the IIIF Image API.

Pure functions (id validation, IIIF URL building and parsing, record parsing, Retry-After
parsing, image checks) are kept apart from `HttpClient`, the one place that talks HTTP, so
they can be tested without a network. Every response is untrusted input
(see shared/docs/ndl-api.md).
"""

import dataclasses
import email.utils
import io
import json
import logging
import math
import re
import socket
import threading
import time
import unicodedata

import requests
import requests.adapters
from PIL import Image, JpegImagePlugin

log = logging.getLogger(__name__)

DEFAULT_API_BASE = "https://lab.ndl.go.jp/dl/api"
DEFAULT_IIIF_BASE = "https://www.dl.ndl.go.jp/api/iiif"
DEFAULT_SIZE = ",256"
RANDOM_ENDPOINT = "illustration/randomwithfacet"
TAG_FILTER = "f-graphictags.tagname"
MAX_API_BATCH = 100

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
_CHUNK = 64 * 1024


class RecordError(ValueError):
    """An API record (or index row) that cannot be used; the message says why."""


class NotAnImage(ValueError):
    """A response body that is not a complete JPEG image."""


class FetchError(Exception):
    """A request that failed for good (after retries, or a status not worth retrying)."""


class Unreachable(FetchError):
    """Every attempt failed to connect: the server is down or the base URL is wrong."""


class TooLarge(FetchError):
    """A body over the byte cap; it was not read further."""


class Interrupted(Exception):
    """The caller asked the client to stop (Ctrl-C) while a request was under way."""


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


def retry_after_seconds(value, now=None):
    """Seconds asked for by a Retry-After header (delta-seconds or HTTP date), or None."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


def backoff_seconds(attempt, base, cap):
    """Exponential back-off before retry number `attempt` (0-based), at most `cap`."""
    return min(cap, base * (2 ** attempt))


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
        raise NotAnImage(f"the body does not decode as an image ({_short(error)})") from None
    return width, height


class HttpClient:
    """GETs with capped streaming and exponential back-off that honours Retry-After.

    Retries connection errors, timeouts, 429 and 5xx; a Retry-After pauses every thread
    using this client, since the server asked the client, not one request, to wait.
    A body must be complete within twice the timeout of the request's start (`_Deadline`).
    """

    def __init__(self, *, timeout=30.0, retries=5, backoff=1.0, max_wait=60.0, pool_size=10,
                 stop_event=None, user_agent="tagestimate-crawler"):
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_wait = max_wait
        self.stop_event = stop_event or threading.Event()
        self.session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=2, pool_maxsize=pool_size, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["User-Agent"] = user_agent
        self._lock = threading.Lock()
        self._resume_at = 0.0  # time.monotonic() before which nobody sends

    def close(self):
        self.session.close()

    def _wait(self, seconds):
        if self.stop_event.wait(max(0.0, seconds)):
            raise Interrupted()

    def get(self, url, *, params=None, max_bytes, accept="*/*"):
        """The body of a 200 answer to GET url; FetchError (or a subclass) when it cannot be had."""
        connect_failures = 0
        for attempt in range(self.retries + 1):
            with self._lock:
                pause = self._resume_at - time.monotonic()
            self._wait(pause)
            try:
                return self._attempt(url, params, max_bytes, accept)
            except _Retry as error:
                reason = str(error)
                connect_failures += error.connect
                if attempt == self.retries:
                    break
                if error.retry_after is not None:
                    delay = min(self.max_wait, error.retry_after)
                    with self._lock:
                        self._resume_at = max(self._resume_at, time.monotonic() + delay)
                else:
                    delay = backoff_seconds(attempt, self.backoff, self.max_wait)
            log.warning("%s: %s; retry %d of %d in %.1f s", _short(url), reason, attempt + 1, self.retries, delay)
            self._wait(delay)
        error_class = Unreachable if connect_failures == self.retries + 1 else FetchError
        raise error_class(f"{reason}; gave up after {self.retries + 1} attempts")

    def _attempt(self, url, params, max_bytes, accept):
        started = time.monotonic()
        try:
            response = self.session.get(url, params=params, stream=True, timeout=self.timeout,
                                        headers={"Accept": accept, "Accept-Encoding": "identity"})
        except requests.ConnectionError as error:  # ConnectTimeout included
            raise _Retry(f"connection failed: {_cause(error)}", connect=True) from None
        except requests.Timeout:
            raise _Retry(f"no answer within {self.timeout:g} s") from None
        with response:
            if response.status_code == 429 or 500 <= response.status_code <= 599:
                raise _Retry(f"HTTP {response.status_code}",
                             retry_after=retry_after_seconds(response.headers.get("Retry-After")))
            if response.status_code != 200:
                raise FetchError(f"HTTP {response.status_code}")
            length = response.headers.get("Content-Length", "")
            if length.isdigit() and int(length) > max_bytes:
                raise TooLarge(f"the body is {int(length)} bytes, over the {max_bytes} byte cap")
            # A server trickling bytes never trips the per-read timeout, and one read of a chunk
            # can last for ever: a timer stops the reads at the deadline, wherever they are.
            too_slow = f"the body took over {2 * self.timeout:g} s"
            deadline = _Deadline(response.raw, started + 2 * self.timeout)
            chunks, total = [], 0
            try:
                for chunk in response.iter_content(_CHUNK):
                    total += len(chunk)
                    if total > max_bytes:
                        raise TooLarge(f"the body is over the {max_bytes} byte cap")
                    if self.stop_event.is_set():
                        raise Interrupted()
                    if deadline.passed():
                        raise _Retry(too_slow)
                    chunks.append(chunk)
            except (requests.ConnectionError, requests.Timeout,
                    requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError) as error:
                raise _Retry(too_slow if deadline.fired else f"the body was cut off or stalled: {_cause(error)}") \
                    from None
            finally:
                deadline.cancel()
            if deadline.fired:  # the cut may look like the end of a body sent without a length
                raise _Retry(too_slow)
            return b"".join(chunks)


class _Deadline:
    """Shuts the reading side of `raw` (a urllib3 response) at `deadline` (time.monotonic()).

    The shutdown wakes a read blocked in another thread, which then sees the body end or
    break off; `fired` says the deadline did it. After `cancel()` returns nothing more
    happens, so a connection that was not cut can go back to the pool.
    """

    def __init__(self, raw, deadline):
        self.deadline = deadline
        self.fired = False
        self._raw = raw
        self._done = False
        self._lock = threading.Lock()
        self._timer = threading.Timer(max(0.0, deadline - time.monotonic()), self._fire)
        self._timer.daemon = True
        self._timer.start()

    def passed(self):
        return self.fired or time.monotonic() > self.deadline

    def _fire(self):
        with self._lock:
            if self._done:
                return
            self.fired = True
            _shutdown_reads(self._raw)

    def cancel(self):
        with self._lock:
            self._done = True
        self._timer.cancel()


def _shutdown_reads(raw):
    """Make reads of `raw` return at once, from any thread (the connection is then closed)."""
    try:
        raw.shutdown()  # urllib3 >= 2.3
        return
    except (AttributeError, NotImplementedError):
        pass  # an older urllib3: shut the socket under http.client's response ourselves
    except (ValueError, RuntimeError, OSError):
        return  # already closed or back in the pool: the body is over
    if getattr(raw, "connection", None) is None:
        return
    stream = getattr(getattr(raw, "_fp", None), "fp", None)  # http.client's socket file, None once read
    sock = getattr(getattr(stream, "raw", None), "_sock", None)
    if isinstance(sock, socket.socket):
        try:
            socket.socket.shutdown(sock, socket.SHUT_RD)
        except OSError:
            pass


class _Retry(Exception):
    """An attempt worth repeating; `connect` when no connection could be made at all."""

    def __init__(self, message, retry_after=None, connect=False):
        super().__init__(message)
        self.retry_after = retry_after
        self.connect = connect


def _short(error):
    text = str(error)
    return text if len(text) <= 160 else text[:157] + "..."


def _cause(error):
    """The innermost reason of a requests/urllib3 error, without their object reprs."""
    reason = error
    for _ in range(10):
        inner = getattr(reason, "reason", None)
        if not isinstance(inner, BaseException):
            inner = reason.args[0] if reason.args and isinstance(reason.args[0], BaseException) else None
        if inner is None:
            break
        reason = inner
    text = re.sub(r"<[^<>]*>: |\b\w*Connection(Pool)?\(host=[^)]*\): ", "", str(reason))
    return _short(text or type(reason).__name__)


def random_illustrations(client, api_base, tag=None, size=20):
    """One call of randomwithfacet: the raw records (a list), or RecordError/FetchError."""
    if not 1 <= size <= MAX_API_BATCH:
        raise ValueError(f"size {size} is outside 1..{MAX_API_BATCH}")
    params = {"size": str(size)}
    if tag is not None:
        params[TAG_FILTER] = tag
    body = client.get(f"{api_base.rstrip('/')}/{RANDOM_ENDPOINT}", params=params,
                      max_bytes=API_MAX_BYTES, accept="application/json")
    return parse_api_body(body)
