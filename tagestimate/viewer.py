"""What a IIIF viewer needs of `--format iiif`: the item's source manifest, canvas targets, and
`{item}.manifest.json`, an annotated Presentation 3 copy of that manifest.

An item's source is known when its images name one manifest: a `--iiif-manifest` crawl's rows
(`manifest` column; the crawl saved the document as `{input}/{item}.manifest.json`), or NDL
crops (a `--pid` crawl's rows, or files named `{pid}_{page}_{n}`: NDL's manifest
`{iiif base}/{pid}/manifest.json`, fetched at tagging time, once per item). With the document
in hand every tagged image must map to one of its canvases (by canvas id, or by the page's
image service `.../{pid}/R{page:07d}`); if any does not (the manifest changed since the crawl),
or the document cannot be had, the item keeps its plain targets and gets no copy, with one
warning. All or nothing: a copy never lists some canvases' tags and silently misses others.

The copy embeds, on each tagged canvas, an AnnotationPage holding that canvas's annotations
(the same annotations, same ids, as `{item}.iiif.json`): Mirador lists every annotation of a
page a canvas references, whatever its target, so a book-wide page referenced from each
canvas would show the whole book's tags beside every page. A v2 source is upgraded to v3.
"""

import copy
import dataclasses
import json
import logging
import re
import threading
import urllib.parse

from tagestimate import files, httpclient, iiif, ndl, storage
from tagestimate.sources import box_of, parent_folder

log = logging.getLogger(__name__)

COMPANION_EXTENSION = "manifest.json"  # `{item}.manifest.json`: in the output beside `{item}.iiif.json`; in a
#                                        crawl's folder beside manifest.csv, the manifest the folder `item` came from
PRESENTATION_3 = "http://iiif.io/api/presentation/3/context.json"
FETCH_TIMEOUT = 15.0  # seconds; the whole body within twice that (httpclient)
FETCH_RETRIES = 1
WHOLE_PAGE_NOTE = "the crop's box is unknown: this tag targets the whole page the crop was cut from"
_SERVICE_PAGE = re.compile(r"/(?P<pid>[0-9A-Za-z_-]{1,64})/R(?P<page>\d{7})/?$")
plain_text = iiif.plain_text  # labels as plain text: markup stripped (annotations.py takes it from here)
_unreachable = (None, set())  # (run_id, hosts that never answered in that run): not asked again in it
_pending = threading.local()  # the Source render_page resolved, for the companion of the same item


@dataclasses.dataclass
class Source:
    """The manifest an item's images come from; `placements` {key: (Canvas, box or None)} when usable."""

    manifest_id: str
    recorded: bool  # named by the crawl's rows (not inferred from NDL's file names)
    document: dict = None
    version: int = 0
    placements: dict = dataclasses.field(default_factory=dict)
    problem: str = ""  # why there is no usable document: one sentence for the log

    @property
    def usable(self):
        return self.document is not None and not self.problem

    @property
    def label(self):
        try:
            return iiif.plain_text(iiif.label_text(self.document.get("label"))) if self.document else ""
        except RecursionError:  # a label of lists in lists: none
            return ""


def find_row(rows, item_name, key):
    """The crawl's row of an image: by (folder, id), else by id alone when the id is an NDL crop's
    (unique in a crawl) and its row agrees with the name's pid and page (a crop moved to another folder)."""
    row = rows.get((item_name, key))
    if row is not None or not rows:
        return row
    match = files.NDL_NAME.fullmatch(key.rsplit("/", 1)[-1])
    if match is None:
        return None
    found = _rows_by_id(rows).get(match.group(0), [])
    if len(found) == 1 and found[0].get("pid") == match["pid"] and found[0].get("page") == str(int(match["page"])):
        return found[0]
    return None


def _rows_by_id(rows):
    """{id: [rows]} of a provenance dict, kept for the last dict asked about (one per run)."""
    held = getattr(_pending, "index", None)
    if held is None or held[0] is not rows:
        index = {}
        for (_, image_id), row in rows.items():
            index.setdefault(image_id, []).append(row)
        held = _pending.index = (rows, index)
    return held[1]


def is_crop(row, key):
    """Whether the image is a crop of a page (NDL's), as opposed to a whole page or a plain file."""
    if row and row.get("canvas"):
        return False
    return bool(row and row.get("pid")) or files.NDL_NAME.fullmatch(key.rsplit("/", 1)[-1]) is not None


def _ndl_origin(row, key):
    """(iiif base, pid, page) of an NDL crop, from its row or its file name; None otherwise."""
    if row and row.get("pid") and row.get("page", "").isdigit():
        try:
            base = ndl.parse_iiif_url(row.get("source_url", ""))[0]
        except ndl.RecordError:
            base = ndl.DEFAULT_IIIF_BASE
        return base, row["pid"], int(row["page"])
    match = files.NDL_NAME.fullmatch(key.rsplit("/", 1)[-1])
    return (ndl.DEFAULT_IIIF_BASE, match["pid"], int(match["page"])) if match else None


def ndl_manifest_url(base, pid):
    return f"{base.rstrip('/')}/{pid}/manifest.json"


def resolve(item_name, keys, rows, context):
    """The item's Source, or None when its images name no manifest or several (a folder of many books)."""
    named = {}
    for key in keys:
        row = find_row(rows, item_name, key)
        if row and row.get("manifest"):
            named.setdefault(row["manifest"], True)
        elif (origin := _ndl_origin(row, key)) is not None:
            named.setdefault(ndl_manifest_url(origin[0], origin[1]), False)  # inferred, not recorded
    if len(named) != 1:
        if len(named) > 1:
            log.info("%s: its images come from %d manifests; no partOf and no %s (a viewer shows one book)",
                     files.printable_path(item_name), len(named), companion_name(item_name))
        return None
    manifest_id, recorded = next(iter(named.items()))
    source = Source(manifest_id, recorded)
    _load(source, item_name, context)
    if source.document is not None:
        _place(source, item_name, keys, rows)
    return source


def _load(source, item_name, context):
    """The crawl's saved copy, else the document fetched (when the run fetches); a problem otherwise."""
    for path in _copy_paths(item_name, context.input_dir):
        try:
            document = iiif.load_json(storage.read_bytes(path, limit=iiif.MAX_BYTES), files.printable_path(path))
        except (OSError, iiif.DocumentError, RecursionError):  # nested past Python's limit: not a manifest
            continue
        if iiif.document_id(document) == source.manifest_id:
            return _accept(source, document)
    if not getattr(context, "fetch_manifests", False):
        source.problem = f"the source manifest {source.manifest_id} was neither saved by the crawl nor fetched"
        return
    try:
        data = fetch(source.manifest_id, getattr(context, "run_id", None))
        document = iiif.load_json(data, source.manifest_id)
        identifier = iiif.document_id(document)
        if files.is_web_url(identifier):
            source.manifest_id = identifier  # its own id, not the URL it was asked at (www.dl.ndl.go.jp, a redirect)
    except RecursionError:
        source.problem = f"the source manifest {source.manifest_id} is nested too deeply to be a manifest"
        return
    except (httpclient.FetchError, httpclient.Interrupted, iiif.DocumentError) as error:
        source.problem = (f"the source manifest {source.manifest_id} could not be fetched ({error}); "
                          f"tag the item again with --overwrite once it answers")
        return
    _accept(source, document)


def _accept(source, document):
    kind = document.get("type") or document.get("@type")
    if kind not in ("Manifest", "sc:Manifest"):
        source.problem = f"the source manifest {source.manifest_id} is a {kind or 'document without a type'}, " \
                         "not a IIIF Manifest"
        return
    source.document, source.version = document, 3 if kind == "Manifest" else 2


def copy_name(folder):
    """The crawl's copy of the manifest a folder came from: `{folder}.manifest.json` beside manifest.csv."""
    return f"{folder}.{COMPANION_EXTENSION}"


def _copy_paths(item_name, input_dir):
    if not input_dir:
        return []
    paths = [storage.join(input_dir, copy_name(item_name))]
    parent = parent_folder(input_dir)
    if parent and storage.basename(input_dir) == item_name:  # loose images: the input is one folder of a crawl
        paths.append(storage.join(parent, copy_name(item_name)))
    return paths


def fetch(url, run_id=None):
    """The manifest at `url` (capped, timed out, one retry); a host that never answered is not asked again
    in the same run (run_id). The next run asks again: the host may be back, or its port another server's."""
    host = urllib.parse.urlsplit(url).netloc
    unreachable = _unreachable_in(run_id)
    if host in unreachable:
        raise httpclient.Unreachable(f"{host} did not answer earlier in this run")
    client = httpclient.HttpClient(timeout=FETCH_TIMEOUT, retries=FETCH_RETRIES, backoff=0.5, max_wait=5.0,
                                   user_agent="tagestimate")
    try:
        return client.get(url, max_bytes=iiif.MAX_BYTES, accept=iiif.ACCEPT)
    except httpclient.Unreachable:
        unreachable.add(host)
        raise
    finally:
        client.close()


def _unreachable_in(run_id):
    """The set of hosts that never answered in run `run_id`; a new run starts with none (one run's kept)."""
    global _unreachable
    held = _unreachable
    if held[0] != run_id:
        held = _unreachable = (run_id, set())
    return held[1]


def _place(source, item_name, keys, rows):
    """Each image's canvas (and box); the first image that has none makes the whole document unusable."""
    by_id, by_page = {}, {}
    for canvas, _, service in iiif.canvases(source.document):
        by_id[canvas.id] = canvas
        match = _SERVICE_PAGE.search(service)
        if match:
            by_page.setdefault((match["pid"], int(match["page"])), canvas)
    for key in keys:
        row = find_row(rows, item_name, key)
        if row and row.get("canvas"):
            canvas = by_id.get(row["canvas"])
            missing = f"no longer has the canvas {row['canvas']} of {key}"
        elif (origin := _ndl_origin(row, key)) is not None:
            canvas = by_page.get(origin[1:])
            missing = f"has no canvas for page {origin[2]} of {origin[1]} ({key})"
        else:
            continue  # a plain file beside the book's images keeps its own target
        if canvas is None:
            source.problem = (f"the source manifest {source.manifest_id} {missing}: it changed since the crawl; "
                              f"crawl the item again")
            source.placements = {}
            return
        source.placements[key] = (canvas, box_of(row) if row else None)


def pixel_selector_value(box, canvas):
    """`xywh=x,y,w,h` in canvas pixels for a box in percent; None when the canvas has no size."""
    if not (canvas.width and canvas.height):
        return None
    x, y, w, h = box
    return "xywh=" + ",".join(str(round(v)) for v in (x * canvas.width / 100, y * canvas.height / 100,
                                                       w * canvas.width / 100, h * canvas.height / 100))


def remember(item_name, source):
    _pending.value = (item_name, source)


def take(item_name):
    """The Source render_page resolved for this item in this thread (then forgotten), else None."""
    name, source = getattr(_pending, "value", (None, None))
    _pending.value = (None, None)
    return source if name == item_name else None


def companion_name(item_name):
    return f"{item_name}.{COMPANION_EXTENSION}"


def companion_files(item_name, page_text, context, copy_id):
    """[(file name, text)] of the item's annotated manifest; [(file name, None)] when there is none to
    write (an older run's is removed: it would not match the new page), with the reason logged once."""
    source = take(item_name)
    if source is None:  # no source manifest: never had a copy
        return []
    if not source.usable:
        log.warning("%s: %s; no %s this time (its tags are in %s.iiif.json, with plain targets)",
                    files.printable_path(item_name), source.problem, companion_name(item_name),
                    files.printable_path(item_name))
        return [(companion_name(item_name), None)]
    try:
        document = annotated_copy(source, json.loads(page_text), copy_id)
        return [(companion_name(item_name), json.dumps(document, ensure_ascii=False, indent=1) + "\n")]
    except RecursionError:  # a source nested too deeply to copy (JSON parsers stop near 1,000 levels too)
        log.warning("%s: the source manifest %s is nested too deeply to copy; no %s this time",
                    files.printable_path(item_name), source.manifest_id, companion_name(item_name))
        return [(companion_name(item_name), None)]


def annotated_copy(source, page, copy_id):
    """The source manifest as Presentation 3 under `copy_id`, each tagged canvas embedding its annotations."""
    document = _copy_v3(source.document) if source.version == 3 else iiif.upgrade_v2(source.document, copy_id)
    document["id"] = copy_id
    contexts = page.get("@context") or [PRESENTATION_3]
    document = {"@context": contexts, **{k: v for k, v in document.items() if k != "@context"}}
    document["seeAlso"] = iiif.as_list(document.get("seeAlso")) + [{
        "id": source.manifest_id, "type": "Dataset", "format": "application/ld+json",
        "profile": f"http://iiif.io/api/presentation/{source.version}/context.json",
        "label": {"en": ["the manifest these canvases come from"]}}]
    grouped = {}
    for annotation in page.get("items", []):
        target = annotation.get("target")
        if isinstance(target, dict) and isinstance(target.get("source"), dict) \
                and target["source"].get("type") == "Canvas":
            grouped.setdefault(target["source"]["id"], []).append(annotation)
    for position, canvas in enumerate(document.get("items", []), start=1):
        if isinstance(canvas, dict) and canvas.get("id") in grouped:
            canvas["annotations"] = iiif.as_list(canvas.get("annotations")) + [{
                "id": f"{page['id']}#canvas-{position}", "type": "AnnotationPage",
                "items": grouped[canvas["id"]]}]
    return document


def _copy_v3(document):
    result = copy.deepcopy(document)
    result["label"] = iiif.plain_map(result.get("label"))
    for canvas in result.get("items") or []:
        if isinstance(canvas, dict) and "label" in canvas:
            canvas["label"] = iiif.plain_map(canvas["label"])
    return result

