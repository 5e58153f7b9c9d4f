"""Tags as W3C Web Annotations: one IIIF Presentation 3 AnnotationPage per item (`--format iiif`).

Each tag above its threshold becomes one Annotation (motivation `tagging`, a TextualBody with
the tag) that says which software and weights made it, when, and with what confidence. The
target is the most precise thing known about the image, in this order:
1. a crop whose row in `{input}/manifest.csv` has a box: that region (`xywh=percent:`) of its
   IIIF page (the canvas when the row names one, else NDL's page image);
2. an image fetched from a IIIF manifest (its row names a canvas): the canvas;
3. a file named like NDL's crops (`{pid}_{page}_{n}`): NDL's page image;
4. anything else: the file, under --target-base or as a file: URL.
The documents are built and checked with iiif-prezi3; the confidence, which no IIIF or W3C
term covers, is an extension property defined by the context `context.jsonld` published beside
the pages (`EXTENSION_CONTEXT`).
"""

import collections
import csv
import functools
import io
import json
import logging
import os
import urllib.parse

from tagestimate import files, ndl, storage
from tagestimate.errors import UserError
from tagestimate.manifest import MANIFEST_NAME
from tagestimate.records import RunContext, natural_key, tags_of

try:  # optional (requirements-iiif.txt): iiif-prezi3 caps Pillow, so requirements.txt leaves it out
    from iiif_prezi3 import Agent, Annotation, AnnotationPage, FragmentSelector, SpecificResource, TextualBody
except ImportError:
    raise UserError("--format iiif needs iiif-prezi3: pip install -r requirements-iiif.txt") from None

log = logging.getLogger(__name__)

PRESENTATION_CONTEXT = "http://iiif.io/api/presentation/3/context.json"
CONTEXT_NAME = "context.jsonld"  # the extension context beside the pages; .jsonld: never an item's name.json
HOMEPAGE = "https://github.com/ndl-lab/tagestimatemodel"
NAMESPACE = HOMEPAGE + "/ns#"  # the IRI of the extension's terms; fixed, wherever the pages are published
CONFIDENCE = "confidence"
EXTRA = "extraTag"  # true on the body of a tag from --extra-tags (a learned tag, not the model's own)
EXTENSION_CONTEXT = {"@context": {
    "xsd": "http://www.w3.org/2001/XMLSchema#",
    CONFIDENCE: {"@id": NAMESPACE + CONFIDENCE, "@type": "xsd:double"},
    EXTRA: {"@id": NAMESPACE + EXTRA, "@type": "xsd:boolean"},
}}
FALLBACK_ID_BASE = "urn:tagestimate:"  # ids of pages rendered without a RunContext.id_base
LANGUAGE = "en"  # the tags are NDL's English label names


def file_url(path):
    """The absolute file: URL of a local path; a URI (s3://...) as it is."""
    return storage.url(path)


def run_context(input_dir, weights_path, output_dir, id_base=None, target_base=None, created=None,
                weights_sha256=None):
    """The RunContext of a tagging run; bases default to file: URLs. weights_sha256: the file's hash as the
    run took it (its model bundle), else hashed here."""
    import datetime

    created = created or datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return RunContext(input_dir=storage.root(input_dir),
                      weights_name=os.path.basename(weights_path),
                      weights_sha256=weights_sha256 or files.sha256_file(weights_path),
                      id_base=(id_base or file_url(output_dir)).rstrip("/"),
                      target_base=(target_base or "").rstrip("/"), created=created)


def write_context(output_dir):
    """Write the extension context (`context.jsonld`) the pages refer to, unless it is there already."""
    path = storage.join(output_dir, CONTEXT_NAME)
    text = json.dumps(EXTENSION_CONTEXT, indent=2) + "\n"
    try:
        if storage.read_bytes(path) == text.encode("utf-8"):
            return path
    except OSError:
        pass
    storage.write_atomic(path, text)
    return path


def page_id(item_name, context):
    return f"{_id_base(context)}{urllib.parse.quote(item_name, safe='')}.iiif.json"


def _id_base(context):
    return context.id_base + "/" if context.id_base else FALLBACK_ID_BASE


def render_page(item_name, records, config, context):
    """The text of `{item}.iiif.json`: an AnnotationPage with one Annotation per tag above threshold."""
    identifier = page_id(item_name, context)
    rows = provenance(context.input_dir)
    tags = tags_of(records, config)
    generator = _generator(context)
    items, confidences, extra = [], [], []
    for record in sorted(records, key=lambda record: natural_key(record.key)):
        target = _target(item_name, record, context, rows)
        for tag in tags[record.key]:
            items.append(Annotation(
                id=annotation_id(identifier, record.key, tag["tag"]),
                motivation="tagging",
                body=TextualBody(value=tag["tag"], language=LANGUAGE, format="text/plain", purpose="tagging"),
                target=target, generator=generator, created=context.created or None))
            confidences.append(tag["confidence"])
            extra.append(bool(tag.get("extra")))
    page = AnnotationPage(id=identifier, label={"en": [f"tags of {item_name}"]}, items=items)
    page.context = [_id_base(context) + CONTEXT_NAME, PRESENTATION_CONTEXT]
    document = json.loads(page.json())
    document["items"] = [_with_confidence(annotation, value)
                         for annotation, value in zip(document["items"], confidences)]
    for annotation, marked in zip(document["items"], extra):
        if marked:  # prezi3's models drop unknown keys: the mark goes on after them
            annotation["body"][EXTRA] = True
    return json.dumps(document, ensure_ascii=False, indent=1) + "\n"


def annotation_id(page, key, tag):
    """The id of one tag's annotation, "{page}#{key}/{tag}": both percent-encoded, "/" included, so
    the last "/" splits them (page_tags reads them back)."""
    return f"{page}#{urllib.parse.quote(key, safe='')}/{urllib.parse.quote(tag, safe='')}"


def page_tags(document):
    """{key: [(tag, confidence)]} of an AnnotationPage render_page wrote, read from its annotation ids
    (annotation_id); images without a tag have no annotation, so they are not in it."""
    if not isinstance(document, dict) or document.get("type") != "AnnotationPage" \
            or not isinstance(document.get("items"), list):
        raise ValueError("not an AnnotationPage")
    tags = collections.defaultdict(list)
    for annotation in document["items"]:
        fragment = str(annotation["id"]).rpartition("#")[2]
        key, _, tag = fragment.rpartition("/")
        tags[urllib.parse.unquote(key)].append((urllib.parse.unquote(tag), float(annotation[CONFIDENCE])))
    return dict(tags)


def _with_confidence(annotation, value):
    """The annotation with the extension property after its motivation (prezi3's models drop unknown keys)."""
    result = {}
    for key, item in annotation.items():
        result[key] = item
        if key == "motivation":
            result[CONFIDENCE] = value
    return result


def _generator(context):
    weights = f" with weights {context.weights_name}" if context.weights_name else ""
    return Agent(id=f"urn:sha256:{context.weights_sha256}" if context.weights_sha256 else None, type="Software",
                 name=f"{context.software} {context.version}{weights}", homepage=HOMEPAGE)


def _target(item_name, record, context, rows):
    """The most precise target known for one image (see the module's docstring)."""
    row = rows.get((item_name, record.key))
    box = _box(row) if row else None
    if row and row.get("canvas"):
        source = {"id": row["canvas"], "type": "Canvas"}
        return SpecificResource(source=source, selector=_selector(box) if box else None)
    page = _ndl_page(row, record.key)
    if page is not None:
        source = {"id": page, "type": "Image", "format": "image/jpeg"}
        return SpecificResource(source=source, selector=_selector(box) if box else None)
    relative = _relative(record.path, context.input_dir)
    if context.target_base and relative and not relative.startswith(".."):
        return f"{context.target_base}/{urllib.parse.quote(relative.replace(os.sep, '/'))}"
    return file_url(record.path)


def _relative(path, input_dir):
    return storage.relpath(path, input_dir) if input_dir else None


def _selector(box):
    return FragmentSelector(value="xywh=percent:" + ",".join(ndl.format_number(v) for v in box))


def _box(row):
    try:
        box = tuple(float(row[key]) for key in ("x", "y", "w", "h"))
        ndl.check_box(*box)
        return box
    except (KeyError, TypeError, ValueError):  # ndl.RecordError is a ValueError
        return None


def _ndl_page(row, key):
    """NDL's whole-page image URL for a crawled row (its pid and page) or an NDL-named file, else None."""
    base = ndl.DEFAULT_IIIF_BASE
    if row and row.get("pid") and row.get("page", "").isdigit():
        pid, page = row["pid"], int(row["page"])
        try:
            base = ndl.parse_iiif_url(row.get("source_url", ""))[0]
        except ndl.RecordError:
            pass  # an adopted file's row has no URL: NDL's own server
    else:
        match = files.NDL_NAME.fullmatch(key.rsplit("/", 1)[-1])
        if match is None:
            return None
        pid, page = match["pid"], int(match["page"])
    try:
        return ndl.iiif_url(base, pid, page, "full", "full")
    except ndl.RecordError:
        return None


def provenance(input_dir):
    """{(folder, id): row} of `{input_dir}/manifest.csv` (the crawler's), or {} when there is none."""
    if not input_dir:
        return {}
    path = storage.join(input_dir, MANIFEST_NAME)
    version = storage.version(path)
    return {} if version is None else _read_rows(path, *version)


@functools.lru_cache(maxsize=4)
def _read_rows(path, mtime_ns, size):
    """Cached per file version: every item of a run looks its images up in the same file."""
    try:
        text = storage.read_bytes(path).decode("utf-8")
        return {(row.get("folder"), row.get("id")): row for row in csv.DictReader(io.StringIO(text, newline=""))
                if row.get("folder") and row.get("id")}
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        log.warning("%s not read (%s): targets fall back to pages and files", files.printable_path(path), error)
        return {}
