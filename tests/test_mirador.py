"""A real viewer: Mirador (npm's published bundle) in headless Chromium loads `{item}.manifest.json` from a
loopback server, with the NDL-like v2 source manifest upgraded, a level-0 static image service, and shows
each canvas's tags with their confidences in its annotation panel.

The bundle: $MIRADOR_BUNDLE, else .ci-cache/mirador/4.0.0/dist/mirador.min.js (.ci/run fetches it with
`npm pack mirador@4.0.0`); without it the test skips and says how to get it. A screenshot is kept in
$TAGESTIMATE_ARTIFACTS (else pytest's tmp folder).
"""

import http.server
import json
import os
import re
import threading
import time

import numpy as np
import pytest

from conftest import ROOT
from tagestimate.labels import LABELS
from tagestimate.records import Record, RunContext
from tagestimate.tag.inference import write_item
from tests.ndl_emulator import jpeg_bytes, synthetic_page
from tests.test_annotations import CONFIG, write_rows
from tests.test_report_browser import artifacts, browser, console_errors  # noqa: F401 - fixtures

pytestmark = pytest.mark.slow

BUNDLE = os.environ.get("MIRADOR_BUNDLE") or os.path.join(ROOT, ".ci-cache", "mirador", "4.0.0", "dist",
                                                          "mirador.min.js")
PID = "1054192"
SIZE = (600, 800)
# crop -> (page, box in percent, picture, stamp): every confidence distinct, so a tag shown beside another's
# confidence, or on the other canvas, shows.
CROPS = {f"{PID}_1_0": (1, ("10.0", "20.0", "50.0", "30.0"), 0.91, 0.62),
         f"{PID}_2_0": (2, ("5.0", "5.0", "40.0", "40.0"), 0.83, 0.74)}


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        files = self.server.files
        path = self.path.split("?")[0]
        self.server.asked.append(path)
        match = re.fullmatch(rf"/iiif/{PID}/(R\d{{7}})/[^/]+/[^/]+/0/default\.jpg", path)
        if match:  # a level-0 service: the one size it has, whatever region and size are asked
            path = f"/iiif/{PID}/{match[1]}/image"
        body, kind = files.get(path, (None, None))
        if body is None:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Access-Control-Allow-Origin", "*")  # what a library's server sends for viewers elsewhere
        self.end_headers()
        self.wfile.write(body)


def source_manifest(base):
    """NDL's shape: Presentation 2.1, one canvas per page, an Image API 2 service per page image."""
    canvases = []
    for page in (1, 2):
        service = f"{base}/iiif/{PID}/R{page:07d}"
        canvases.append({"@id": f"{base}/iiif/{PID}/canvas/{page}", "@type": "sc:Canvas", "label": f"{page}",
                         "width": SIZE[0], "height": SIZE[1], "images": [{
                             "@type": "oa:Annotation", "motivation": "sc:painting",
                             "on": f"{base}/iiif/{PID}/canvas/{page}",
                             "resource": {"@id": service + "/full/full/0/default.jpg", "@type": "dctypes:Image",
                                          "format": "image/jpeg", "width": SIZE[0], "height": SIZE[1],
                                          "service": {"@context": "http://iiif.io/api/image/2/context.json",
                                                      "@id": service,
                                                      "profile": "http://iiif.io/api/image/2/level0.json"}}}]})
    return {"@context": "http://iiif.io/api/presentation/2/context.json", "@id": f"{base}/iiif/{PID}/manifest.json",
            "@type": "sc:Manifest", "label": "源氏物語", "viewingDirection": "right-to-left",
            "sequences": [{"@type": "sc:Sequence", "canvases": canvases}]}


def info_json(service):
    return {"@context": "http://iiif.io/api/image/2/context.json", "@id": service,
            "protocol": "http://iiif.io/api/image",
            "width": SIZE[0], "height": SIZE[1], "profile": ["http://iiif.io/api/image/2/level0.json"],
            "sizes": [{"width": SIZE[0], "height": SIZE[1]}]}


def tag_book(tmp_path, base):
    """What `newdataclawer.py --pid` then `multiinference.py --format iiif --id-base {base}/tags` leave."""
    inputs, output = tmp_path / "input", tmp_path / "output"
    write_rows(inputs, [{"id": key, "folder": PID, "pid": PID, "page": str(page), "x": x, "y": y, "w": w, "h": h,
                         "title": "源氏物語",
                         "source_url": f"{base}/iiif/{PID}/R{page:07d}/pct:{x},{y},{w},{h}/,256/0/default.jpg"}
                        for key, (page, (x, y, w, h), _, _) in CROPS.items()])
    records = []
    for key, (_, _, picture, stamp) in CROPS.items():
        values = np.array([{"picture": picture, "stamp": stamp}.get(label, 0.1) for label in LABELS], np.float32)
        records.append(Record(key, str(inputs / PID / (key + ".jpg")), (100, 80), values))
    output.mkdir()
    context = RunContext(input_dir=str(inputs), weights_name="w.h5", weights_sha256="ab" * 32,
                         id_base=f"{base}/tags", created="2026-12-05T00:00:00Z", fetch_manifests=True)
    write_item(str(output), PID, records, CONFIG, "iiif", context=context)
    return output


def mirador_page(manifest_url):
    config = {"id": "viewer", "windows": [{"manifestId": manifest_url, "canvasIndex": 0}],
              "window": {"sideBarOpen": True, "defaultSideBarPanel": "annotations", "panels": {"annotations": True},
                         "highlightAllAnnotations": True},
              "workspaceControlPanel": {"enabled": False}}
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>Mirador</title></head><body>'
            f'<div id="viewer" style="position:absolute;inset:0"></div><script src="/mirador.min.js"></script>'
            f'<script>window.mirador = Mirador.viewer({json.dumps(config)});</script></body></html>').encode()


@pytest.fixture
def server():
    httpd = Server(("127.0.0.1", 0), Handler)
    httpd.files, httpd.asked = {}, []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def wait_for(predicate, seconds=60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    return predicate()


def panel_text(browser):  # noqa: F811
    """What the page shows as text: the annotation panel is the only place tags appear."""
    from selenium.webdriver.common.by import By

    return browser.find_element(By.TAG_NAME, "body").text


def test_mirador_shows_each_canvas_with_its_tags_and_confidences(tmp_path, server, browser, artifacts):  # noqa: F811
    if not os.path.isfile(BUNDLE):
        if os.environ.get("MIRADOR_BUNDLE"):
            pytest.fail(f"$MIRADOR_BUNDLE names {BUNDLE}, which does not exist")
        pytest.skip(f"Mirador's bundle {BUNDLE} is absent: .ci/run fetches it (npm pack mirador@4.0.0, then "
                    f"unpack package/dist/mirador.min.js there), or set $MIRADOR_BUNDLE")
    base = f"http://127.0.0.1:{server.server_address[1]}"
    files = server.files
    files[f"/iiif/{PID}/manifest.json"] = (json.dumps(source_manifest(base)).encode(), "application/ld+json")
    for page in (1, 2):
        service = f"{base}/iiif/{PID}/R{page:07d}"
        files[f"/iiif/{PID}/R{page:07d}/info.json"] = (json.dumps(info_json(service)).encode(), "application/json")
        files[f"/iiif/{PID}/R{page:07d}/image"] = (jpeg_bytes(synthetic_page(PID, page, SIZE)), "image/jpeg")
    output = tag_book(tmp_path, base)
    assert sorted(os.listdir(output)) == [f"{PID}.iiif.json", f"{PID}.manifest.json"]
    for name in os.listdir(output):  # the output folder, published at --id-base
        files[f"/tags/{name}"] = ((output / name).read_bytes(), "application/ld+json")
    with open(BUNDLE, "rb") as handle:
        files["/mirador.min.js"] = (handle.read(), "text/javascript")
    files["/mirador.html"] = (mirador_page(f"{base}/tags/{PID}.manifest.json"), "text/html; charset=utf-8")

    browser.get(f"{base}/mirador.html")
    shown = wait_for(lambda: "confidence 0.91" in panel_text(browser) and panel_text(browser))
    image_asked = wait_for(lambda: [p for p in server.asked if p.startswith(f"/iiif/{PID}/R0000001/full/")])
    time.sleep(1.5)  # the tiles fade in
    browser.save_screenshot(os.path.join(artifacts, "mirador.png"))
    assert shown, f"Mirador's annotation panel never listed the tags; it showed: {panel_text(browser)!r}"
    # canvas 1's two tags, each named in English and Japanese beside its own confidence, and nothing of canvas 2
    for expected in ("photograph\n写真\nconfidence 0.91", "seal stamp\n印影\nconfidence 0.62"):
        assert expected in shown, shown
    assert "confidence 0.83" not in shown and "confidence 0.74" not in shown
    assert f"/iiif/{PID}/R0000001/info.json" in server.asked and image_asked  # the canvas's image loaded
    assert f"/tags/{PID}.manifest.json" in server.asked
    # every file it asked for was there (Mirador's own React deprecation notices are not ours to judge)
    errors = [e for e in console_errors(browser) if e["source"] == "network" and "favicon" not in e["message"]]
    assert not errors, errors
    # the next canvas: its own tags and confidences, none of the first's
    browser.execute_script("const store = window.mirador.store;"
                           "const windowId = Object.keys(store.getState().windows)[0];"
                           "store.dispatch(Mirador.setCanvas(windowId, arguments[0]));", f"{base}/iiif/{PID}/canvas/2")
    shown = wait_for(lambda: "confidence 0.83" in panel_text(browser) and panel_text(browser))
    time.sleep(1.5)
    browser.save_screenshot(os.path.join(artifacts, "mirador-canvas-2.png"))
    assert shown and "confidence 0.74" in shown and "confidence 0.91" not in shown and "confidence 0.62" not in shown
    assert [p for p in server.asked if p.startswith(f"/iiif/{PID}/R0000002/full/")]
