"""A loopback emulator of the NDL Lab illustration API and the NDL IIIF Image API.

It answers `/dl/api/illustration/randomwithfacet` from a list of records (random draws with
repeats, honouring `size`, the tag filter and `f-pid`) and `/api/iiif/{pid}/R{page:07d}/{region}/
{size}/0/default.jpg` by cropping a page image with Pillow, rejecting any URL that does not
follow the grammar in shared/docs/ndl-api.md. IIIF Presentation documents put in `documents`
are served under `/iiif/docs/`, and `/iiif3/{name}/...` is an Image API 3 service (no `full`
size) of synthetic pages; `v2_manifest` and `v3_manifest` build documents that use both
services. Any path under `/loop/` redirects (302) to itself for ever. `fail()` queues misbehaviour.

    with NdlEmulator(records) as emulator:
        emulator.fail("status", service="iiif", status=503, retry_after="1")
        ... crawl with --api-base emulator.api_base --iiif-base emulator.iiif_base ...
"""

import collections
import hashlib
import http.server
import io
import json
import random
import re
import socket
import struct
import threading
import urllib.parse

from PIL import Image, ImageDraw

API_PATH = "/dl/api/illustration/randomwithfacet"
IIIF_PREFIX = "/api/iiif/"
TAG_FILTER = "f-graphictags.tagname"
PID_FILTER = "f-pid"
DOCS_PREFIX = "/iiif/docs/"
IIIF3_PREFIX = "/iiif3/"
LOOP_PREFIX = "/loop/"
_IIIF3_PATH = re.compile(r"(?P<name>[0-9A-Za-z_-]{1,64})/(?P<region>[^/]+)/(?P<size>[^/]+)/0/default\.jpg")
_NUMBER = r"\d+(?:\.\d+)?"
_IIIF_PATH = re.compile(
    r"(?P<pid>[0-9A-Za-z_-]{1,64})/R(?P<page>\d{7})/(?P<region>[^/]+)/(?P<size>[^/]+)"
    r"/(?P<rotation>0)/(?P<quality>default)\.(?P<format>jpg)"
)
_PCT_REGION = re.compile(r"pct:(%s),(%s),(%s),(%s)" % ((_NUMBER,) * 4))
_PIXEL_REGION = re.compile(r"(\d+),(\d+),(\d+),(\d+)")
FAULTS = ("status", "stall", "cut", "trickle", "truncated_jpeg", "html200", "invalid_json", "non_list", "oversize",
          "reset", "bad_chunked", "redirect")
ERROR_PAGE = b"<!DOCTYPE html><html><body><h1>Service Unavailable</h1></body></html>"


def synthetic_page(pid, page, size=(600, 800)):
    """A deterministic page-like RGB image for (pid, page): paper, text lines and a figure."""
    seed = int.from_bytes(hashlib.sha256(f"{pid}/{page}".encode()).digest()[:8], "big")
    rng = random.Random(seed)
    width, height = size
    image = Image.new("RGB", size, (236, 228, 210))
    draw = ImageDraw.Draw(image)
    for row in range(40, height - 40, 18):
        draw.line((40, row, width - 40 - rng.randrange(120), row), fill=(60, 60, 60), width=3)
    for _ in range(6):
        x0, y0 = rng.randrange(width // 2), rng.randrange(height // 2)
        colour = tuple(rng.randrange(256) for _ in range(3))
        draw.rectangle((x0, y0, x0 + rng.randrange(40, width // 2), y0 + rng.randrange(40, height // 2)), fill=colour)
    return image


def jpeg_bytes(image, quality=85):
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def crop(page_image, region, size):
    """Apply an IIIF region and size to a page; ValueError on anything outside the grammar."""
    width, height = page_image.size
    if region == "full":
        box = (0, 0, width, height)
    elif (match := _PCT_REGION.fullmatch(region)):
        x, y, w, h = (float(v) for v in match.groups())
        box = (round(x * width / 100), round(y * height / 100),
               round((x + w) * width / 100), round((y + h) * height / 100))
    elif (match := _PIXEL_REGION.fullmatch(region)):
        x, y, w, h = (int(v) for v in match.groups())
        box = (x, y, x + w, y + h)
    else:
        raise ValueError(f"bad region {region}")
    box = (max(0, box[0]), max(0, box[1]), min(width, box[2]), min(height, box[3]))
    if box[2] <= box[0] or box[3] <= box[1]:
        raise ValueError(f"empty region {region}")
    image = page_image.crop(box)
    w, h = image.size
    if size in ("full", "max"):
        target = (w, h)
    elif (match := re.fullmatch(r"(\d+),", size)):
        target = (int(match[1]), max(1, round(h * int(match[1]) / w)))
    elif (match := re.fullmatch(r",(\d+)", size)):
        target = (max(1, round(w * int(match[1]) / h)), int(match[1]))
    elif (match := re.fullmatch(r"(\d+),(\d+)", size)):
        target = (int(match[1]), int(match[2]))
    elif (match := re.fullmatch(r"!(\d+),(\d+)", size)):
        scale = min(int(match[1]) / w, int(match[2]) / h)
        target = (max(1, round(w * scale)), max(1, round(h * scale)))
    elif (match := re.fullmatch(r"pct:(%s)" % _NUMBER, size)):
        scale = float(match[1]) / 100
        target = (max(1, round(w * scale)), max(1, round(h * scale)))
    else:
        raise ValueError(f"bad size {size}")
    if not (0 < target[0] <= 4000 and 0 < target[1] <= 4000):
        raise ValueError(f"size {size} out of range")
    return image.resize(target, Image.BILINEAR)


class NdlEmulator:
    """Both services on 127.0.0.1, in a thread; `requests` logs (service, path) of every request."""

    def __init__(self, records=(), *, pages=None, latency=0.0, filter_tags=True, seed=0, on_request=None, port=0):
        self.port = port  # 0: a free one; a stopped emulator's port starts another at the same address
        self.records = list(records)
        self.on_request = on_request  # called with (service, path) as each request arrives
        self.pages = pages  # {(pid, page): PIL image}; None: synthetic pages for any pid/page
        self.latency = latency
        self.filter_tags = filter_tags
        self.random = random.Random(seed)
        self.requests = []
        self.documents = {}  # name -> a JSON-able object or bytes, served at /iiif/docs/{name}
        self.oversize_sent = []  # bytes actually written for each oversize answer
        self._faults = collections.deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._page_cache = {}
        self._server = None
        self._thread = None

    # -- lifecycle -------------------------------------------------------------------
    def start(self):
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), _Handler)
        self.port = self._server.server_address[1]
        self._server.daemon_threads = True
        self._server.emulator = self
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def root(self):
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def api_base(self):
        return self.root + "/dl/api"

    @property
    def iiif_base(self):
        return self.root + "/api/iiif"

    def doc_url(self, name):
        return self.root + DOCS_PREFIX + name

    def count(self, service):
        with self._lock:
            return sum(1 for name, _ in self.requests if name == service)

    # -- misbehaviour ----------------------------------------------------------------
    def fail(self, kind, *, service="iiif", times=1, match=None, **params):
        """Make the next `times` matching requests misbehave as `kind` (see FAULTS).

        Parameters: status (int) and retry_after (str) for "status"; seconds for "stall";
        interval (seconds between bytes), count (bytes sent one by one before the rest at
        once; default all) and content_length (bool, default True) for "trickle";
        size (bytes) and content_length (bool) for "oversize"; location (the Location header) and
        body (bytes of zeros after it, default none) for "redirect"; match, a substring of the path.
        "reset" drops the connection (TCP RST) without an answer; "bad_chunked" starts a chunked
        body with a chunk length that is not hexadecimal.
        """
        if kind not in FAULTS:
            raise ValueError(f"unknown fault {kind!r}; one of {FAULTS}")
        with self._lock:
            for _ in range(times):
                self._faults.append((service, match, kind, params))

    def _take_fault(self, service, path):
        with self._lock:
            for index, (name, match, kind, params) in enumerate(self._faults):
                if name == service and (match is None or match in path):
                    del self._faults[index]
                    return kind, params
        return None, None

    def pending_faults(self):
        with self._lock:
            return len(self._faults)

    # -- content ---------------------------------------------------------------------
    def draw(self, size, tags, pids=()):
        pool = self.records
        if pids:
            pool = [r for r in pool if isinstance(r, dict) and r.get("pid") in pids]
        if self.filter_tags and tags:
            pool = [r for r in pool if isinstance(r, dict)
                    and all(any(isinstance(t, dict) and t.get("tagname") == tag for t in r.get("graphictags") or [])
                            for tag in tags)]
        with self._lock:
            return [self.random.choice(pool) for _ in range(size)] if pool else []

    def page_image(self, pid, page):
        key = (pid, page)
        if self.pages is not None:
            return self.pages.get(key)
        with self._lock:
            if key not in self._page_cache:
                self._page_cache[key] = synthetic_page(pid, page)
            return self._page_cache[key]


class _Handler(http.server.BaseHTTPRequestHandler):
    server_version = "NdlEmulator/1"

    def log_message(self, format, *args):  # keep test output quiet
        pass

    def do_GET(self):
        emulator = self.server.emulator
        parsed = urllib.parse.urlsplit(self.path)
        service = ("api" if parsed.path == API_PATH else "iiif" if parsed.path.startswith(IIIF_PREFIX)
                   else "docs" if parsed.path.startswith(DOCS_PREFIX)
                   else "iiif3" if parsed.path.startswith(IIIF3_PREFIX)
                   else "loop" if parsed.path.startswith(LOOP_PREFIX) else "other")
        with emulator._lock:
            emulator.requests.append((service, self.path))
        if emulator.on_request is not None:
            emulator.on_request(service, self.path)
        if emulator.latency and emulator._stopping.wait(emulator.latency):
            return
        kind, params = emulator._take_fault(service, self.path)
        try:
            if kind is not None:
                self._misbehave(kind, params)
            elif service == "api":
                self._api(parsed)
            elif service == "iiif":
                self._iiif(parsed.path[len(IIIF_PREFIX):])
            elif service == "docs":
                self._document(parsed.path[len(DOCS_PREFIX):])
            elif service == "iiif3":
                self._iiif3(parsed.path[len(IIIF3_PREFIX):])
            elif service == "loop":
                self._send(302, b"", "text/html", [("Location", self.path)])
            else:
                self._send(404, ERROR_PAGE, "text/html")
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _send(self, status, body, content_type, headers=()):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _api(self, parsed):
        query = urllib.parse.parse_qs(parsed.query)
        try:
            size = int(query.get("size", ["0"])[0]) or 20
        except ValueError:
            return self._send(400, b'{"error": "bad size"}', "application/json")
        records = self.server.emulator.draw(min(size, 100), query.get(TAG_FILTER, []), query.get(PID_FILTER, []))
        self._send(200, json.dumps(records, ensure_ascii=False).encode("utf-8"), "application/json")

    def _iiif(self, rest):
        if rest in self.server.emulator.documents:  # e.g. "{pid}/manifest.json", where NDL serves a book's manifest
            return self._document(rest)
        match = _IIIF_PATH.fullmatch(rest)
        if match is None:
            return self._send(400, b"<html><body>Bad IIIF request</body></html>", "text/html")
        page_image = self.server.emulator.page_image(match["pid"], int(match["page"]))
        if page_image is None:
            return self._send(404, b"<html><body>Not found</body></html>", "text/html")
        try:
            image = crop(page_image, match["region"], match["size"])
        except ValueError as error:
            return self._send(400, f"<html><body>{error}</body></html>".encode(), "text/html")
        self._send(200, jpeg_bytes(image), "image/jpeg")

    def _document(self, name):
        document = self.server.emulator.documents.get(name)
        if document is None:
            return self._send(404, ERROR_PAGE, "text/html")
        body = document if isinstance(document, bytes) else json.dumps(document, ensure_ascii=False).encode()
        self._send(200, body, "application/ld+json")

    def _iiif3(self, rest):
        """Image API 3: `max` instead of `full` as a size, which it refuses (400)."""
        match = _IIIF3_PATH.fullmatch(rest)
        if match is None or match["size"] == "full":
            return self._send(400, b"<html><body>Bad IIIF 3 request</body></html>", "text/html")
        try:
            image = crop(synthetic_page(match["name"], 3), match["region"], match["size"])
        except ValueError as error:
            return self._send(400, f"<html><body>{error}</body></html>".encode(), "text/html")
        self._send(200, jpeg_bytes(image), "image/jpeg")

    def _misbehave(self, kind, params):
        emulator = self.server.emulator
        if kind == "status":
            headers = [("Retry-After", params["retry_after"])] if "retry_after" in params else []
            self._send(params.get("status", 503), ERROR_PAGE, "text/html", headers)
        elif kind == "stall":
            emulator._stopping.wait(params.get("seconds", 5.0))
            self._send(503, ERROR_PAGE, "text/html")
        elif kind == "cut":
            body = jpeg_bytes(synthetic_page("cut", 1))
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
        elif kind == "trickle":
            self._trickle(params.get("interval", 0.5), params.get("count"), params.get("content_length", True))
        elif kind == "truncated_jpeg":
            body = jpeg_bytes(synthetic_page("truncated", 1))
            self._send(200, body[: len(body) // 2], "image/jpeg")
        elif kind == "html200":
            self._send(200, ERROR_PAGE, "text/html")
        elif kind == "invalid_json":
            self._send(200, b'[{"id": "1017141_454_0", "pid": ', "application/json")
        elif kind == "non_list":
            self._send(200, b'{"error": "index unavailable"}', "application/json")
        elif kind == "oversize":
            self._oversize(params.get("size", 64 * 1024 * 1024), params.get("content_length", False))
        elif kind == "redirect":
            self._redirect(params["location"], params.get("body", 0))
        elif kind == "reset":
            # linger 0: close() sends RST, not FIN, so the client sees "connection reset by peer"
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
        elif kind == "bad_chunked":
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"zz\r\n" + jpeg_bytes(synthetic_page("chunked", 1))[:64] + b"\r\n")
            self.close_connection = True

    def _trickle(self, interval, count, content_length):
        """A complete JPEG, one byte every `interval` seconds: each read succeeds, the body never ends."""
        body = jpeg_bytes(synthetic_page("trickle", 1))
        count = len(body) if count is None else min(count, len(body))
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        if content_length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.flush()
        for index in range(count):
            if self.server.emulator._stopping.wait(interval):
                break
            self.wfile.write(body[index:index + 1])
            self.wfile.flush()
        else:
            self.wfile.write(body[count:])
        self.close_connection = True

    def _redirect(self, location, body):
        """A 302 to `location`, whose body is `body` zero bytes (recorded in oversize_sent when any)."""
        if not body:
            return self._send(302, b"", "text/html", [("Location", location)])
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", str(body))
        self.end_headers()
        sent, chunk = 0, b"\0" * (256 * 1024)
        try:
            while sent < body and not self.server.emulator._stopping.is_set():
                self.wfile.write(chunk[: body - sent])
                sent += min(len(chunk), body - sent)
        finally:
            with self.server.emulator._lock:
                self.server.emulator.oversize_sent.append(sent)
            self.close_connection = True

    def _oversize(self, size, content_length):
        head = jpeg_bytes(synthetic_page("big", 1))
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        if content_length:
            self.send_header("Content-Length", str(size))
        self.end_headers()
        sent, chunk = 0, head + b"\0" * (256 * 1024 - len(head))
        try:
            while sent < size and not self.server.emulator._stopping.is_set():
                piece = chunk[: size - sent]
                self.wfile.write(piece)
                sent += len(piece)
                chunk = b"\0" * len(chunk)
        finally:
            with self.server.emulator._lock:
                self.server.emulator.oversize_sent.append(sent)
            self.close_connection = True


def v2_manifest(emulator, name, pid, pages, extra_canvases=()):
    """A Presentation 2.1 manifest whose canvases are pages of `pid` on the NDL-like v2 service."""
    manifest_id = emulator.doc_url(name)
    canvases = []
    for page in pages:
        service = f"{emulator.iiif_base}/{pid}/R{page:07d}"
        canvases.append({
            "@id": f"{manifest_id}/canvas/{page}", "@type": "sc:Canvas", "label": f"p. {page}",
            "width": 600, "height": 800,
            "images": [{"@type": "oa:Annotation", "motivation": "sc:painting", "on": f"{manifest_id}/canvas/{page}",
                        "resource": {"@id": service + "/full/full/0/default.jpg", "@type": "dctypes:Image",
                                     "service": {"@context": "http://iiif.io/api/image/2/context.json",
                                                 "@id": service,
                                                 "profile": "http://iiif.io/api/image/2/level1.json"}}}],
        })
    return {"@context": "http://iiif.io/api/presentation/2/context.json", "@id": manifest_id, "@type": "sc:Manifest",
            "label": [{"@value": f"本 {pid}", "@language": "ja"}],
            "sequences": [{"@type": "sc:Sequence", "canvases": canvases + list(extra_canvases)}]}


def v3_manifest(emulator, name, count, extra_canvases=()):
    """A Presentation 3.0 manifest of `count` canvases painted by the emulator's Image API 3 service."""
    manifest_id = emulator.doc_url(name)
    canvases = []
    for n in range(1, count + 1):
        canvas_id = f"{manifest_id}/canvas/{n}"
        service = f"{emulator.root}/iiif3/{re.sub(r'[^0-9A-Za-z_-]', '-', name)}-{n}"
        canvases.append({
            "id": canvas_id, "type": "Canvas", "label": {"en": [f"page {n}"]}, "width": 600, "height": 800,
            "items": [{"id": canvas_id + "/page", "type": "AnnotationPage", "items": [{
                "id": canvas_id + "/page/image", "type": "Annotation", "motivation": "painting", "target": canvas_id,
                "body": {"id": service + "/full/max/0/default.jpg", "type": "Image", "format": "image/jpeg",
                         "service": [{"id": service, "type": "ImageService3", "profile": "level1"}]}}]}],
        })
    return {"@context": "http://iiif.io/api/presentation/3/context.json", "id": manifest_id, "type": "Manifest",
            "label": {"en": [f"Book {name}"]}, "items": canvases + list(extra_canvases)}
