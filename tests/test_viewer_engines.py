"""`{item}.manifest.json` from both engines and into s3://: the Ray workers write the same annotated copy
as the local engine (the item's write path is shared), from the crawl's saved manifest, with no network."""

import json
import os

import pytest
from PIL import Image

from tagestimate import storage
from tests.test_annotations import write_rows
from tests.test_ray_engine import files_in, local_ray, run, weights  # noqa: F401 - fixtures
from test_storage import download, make_bucket, s3_server  # noqa: F401 - a fixture

pytestmark = pytest.mark.slow
MANIFEST = "https://example.org/iiif/book3/manifest.json"
ID_BASE = "https://example.org/tags"


def crawled_book(folder):
    """What `newdataclawer.py --iiif-manifest` leaves for a 3-canvas book: 2 pages fetched, their rows, the copy."""
    canvases = []
    for n in (1, 2, 3):
        canvas = f"{MANIFEST}/canvas/{n}"
        service = f"https://example.org/iiif/image/book3-{n}"
        canvases.append({"id": canvas, "type": "Canvas", "label": {"en": [f"p. {n}"]}, "width": 1000, "height": 1500,
                         "items": [{"id": canvas + "/page", "type": "AnnotationPage", "items": [{
                             "id": canvas + "/image", "type": "Annotation", "motivation": "painting", "target": canvas,
                             "body": {"id": service + "/full/max/0/default.jpg", "type": "Image",
                                      "service": [{"id": service, "type": "ImageService3", "profile": "level1"}]}}]}]})
    document = {"@context": "http://iiif.io/api/presentation/3/context.json", "id": MANIFEST, "type": "Manifest",
                "label": {"en": ["Book three"]}, "items": canvases}
    for n in (1, 2):
        os.makedirs(os.path.join(folder, "book3"), exist_ok=True)
        Image.new("RGB", (60, 90), (40 * n, 90, 200)).save(os.path.join(folder, "book3", f"000{n}.jpg"))
    write_rows(folder, [{"id": f"000{n}", "folder": "book3", "page": str(n), "title": "Book three",
                         "manifest": MANIFEST, "canvas": f"{MANIFEST}/canvas/{n}"} for n in (1, 2)])
    with open(os.path.join(folder, "book3.manifest.json"), "w", encoding="utf-8") as handle:
        json.dump(document, handle)
    return folder


def without_time(text):
    document = json.loads(text)
    for canvas in document.get("items", []):
        for page in canvas.get("annotations", []):
            for annotation in page["items"]:
                annotation.pop("created")
    return document


def test_both_engines_write_the_same_annotated_copy_on_disk_and_in_s3(tmp_path, weights, local_ray):  # noqa: F811
    source = crawled_book(str(tmp_path / "input"))
    flags = ["--format", "iiif", "--id-base", ID_BASE, "--no-report"]
    assert run(source, tmp_path / "local", weights, *flags, engine="local") == 0
    bucket = make_bucket("viewer")
    assert run(source, bucket + "/tags", weights, *flags) == 0  # Ray, into the bucket
    local, remote = files_in(tmp_path / "local"), download(bucket + "/tags")
    assert sorted(local) == sorted(remote) == ["book3.emb.npz", "book3.iiif.json", "book3.manifest.json",
                                               "context.jsonld"]
    copy = without_time(remote["book3.manifest.json"])
    assert copy == without_time(local["book3.manifest.json"])
    assert copy["id"] == ID_BASE + "/book3.manifest.json"
    tagged = {canvas["id"]: [a["id"] for page in canvas.get("annotations", []) for a in page["items"]]
              for canvas in copy["items"]}
    assert tagged == {f"{MANIFEST}/canvas/1": [f"{ID_BASE}/book3.iiif.json#0001/graphic"],
                      f"{MANIFEST}/canvas/2": [f"{ID_BASE}/book3.iiif.json#0002/graphic"],
                      f"{MANIFEST}/canvas/3": []}
    page = json.loads(remote["book3.iiif.json"])
    assert page["partOf"] == [{"id": MANIFEST, "type": "Manifest"}] and page["label"] == {"en": ["tags of Book three"]}
    assert storage.exists(bucket + "/tags/book3.manifest.json")
