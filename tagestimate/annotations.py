"""Tags as W3C Web Annotations: one IIIF Presentation 3 AnnotationPage per item (`--format iiif`).

Each tag above its threshold becomes one Annotation (motivation `tagging`; its label a language
map and its body one TextualBody per language of labels.LANGUAGES: "map" in en, "地図" in ja; the
machine tag, graphic_map, is the last part of its id) that says which software and weights made it, when, and with what confidence. The
target is the most precise thing known about the image, in this order:
0. an image whose item's source manifest is in hand (tagestimate/viewer.py): its canvas, with the
   crop's box in canvas pixels (`xywh=x,y,w,h`), which viewers draw;
1. a crop whose row in `{input}/manifest.csv` has a box: that region (`xywh=percent:`) of its
   IIIF page (the canvas when the row names one, else NDL's page image);
2. an image fetched from a IIIF manifest (its row names a canvas): the canvas;
3. a file named like NDL's crops (`{pid}_{page}_{n}`): NDL's page image;
4. anything else: the file, under --target-base or as a file: URL.
A crop whose box is unknown targets its whole page through a SpecificResource of its own id, and
the annotation's label says so: two crops of one page never share one target silently.
The documents are built and checked with iiif-prezi3; the confidence, which no IIIF or W3C
term covers, is an extension property defined by the context `context.jsonld` published beside
the pages (`EXTENSION_CONTEXT`).
"""

import collections
import json
import logging
import os
import urllib.parse

from tagestimate import files, ndl, storage, viewer
from tagestimate.errors import UserError
from tagestimate.labels import config_names, tag_names
from tagestimate.records import RunContext, natural_key, tags_of  # noqa: F401 (RunContext: re-exported)
from tagestimate.sources import box_of as _box, file_url, ndl_page as _ndl_page, provenance, run_context  # noqa: F401

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
    names = config_names(config)
    source = viewer.resolve(item_name, [record.key for record in records], rows, context)
    viewer.remember(item_name, source)  # the companion, {item}.manifest.json, is built from it
    items, confidences, extra = [], [], []
    for record in sorted(records, key=lambda record: natural_key(record.key)):
        target = _target(item_name, record, context, rows, source, identifier)
        row = viewer.find_row(rows, item_name, record.key)
        whole_page = viewer.is_crop(row, record.key) and (row is None or _box(row) is None)
        for tag in tags[record.key]:
            label = tag_names(tag["tag"], names)
            items.append(Annotation(
                id=annotation_id(identifier, record.key, tag["tag"]),
                motivation="tagging", label=_label(label, whole_page),
                body=[TextualBody(value=name, language=language, format="text/plain", purpose="tagging")
                      for language, name in label.items()],
                target=target, generator=generator, created=context.created or None))
            confidences.append(tag["confidence"])
            extra.append(bool(tag.get("extra")))
    title = _book_title(item_name, records, rows, source)
    page = AnnotationPage(id=identifier, label={"en": [f"tags of {title}"]}, items=items)
    page.context = [_id_base(context) + CONTEXT_NAME, PRESENTATION_CONTEXT]
    document = json.loads(page.json())
    if source is not None and (source.recorded or source.document is not None):
        # Presentation 3 lets any resource be partOf any other; iiif-prezi3's schema (as W3C's model) admits only
        # an AnnotationCollection on a page, so the source manifest is added after its check.
        document = _after(document, "label", "partOf", [{"id": source.manifest_id, "type": "Manifest"}])
    document["items"] = [_with_confidence(annotation, value)
                         for annotation, value in zip(document["items"], confidences)]
    for annotation, marked in zip(document["items"], extra):
        if marked:  # prezi3's models drop unknown keys: the mark goes on after them, on each body naming the tag
            for body in annotation["body"]:
                if body.get("purpose") == "tagging":
                    body[EXTRA] = True
    return json.dumps(document, ensure_ascii=False, indent=1) + "\n"


def note_run(items, context):
    """Log, once per run, what keeps its pages from a viewer: crops whose box is unknown, ids not on http."""
    rows = provenance(context.input_dir)
    unboxed = 0
    for item in items:
        for key, _ in item.images:
            row = viewer.find_row(rows, item.name, key)
            unboxed += viewer.is_crop(row, key) and (row is None or _box(row) is None)
    if unboxed:
        log.warning("%s named like NDL's ({pid}_{page}_{n}) %s no box in a crawl's manifest.csv: their annotations "
                    "target the whole page, and say so in their label", files.count(unboxed, "crop"),
                    "has" if unboxed == 1 else "have")
    if not files.is_web_url(context.id_base):
        log.info("no --id-base: the pages' and annotated manifests' ids are %s URLs, which a viewer cannot load; "
                 "tag with --id-base URL where the output folder will be published", context.id_base.split(":")[0])


def companions(item_name, records, config, context, text):
    """[(file name, text)] written before `{item}.iiif.json`: the annotated manifest (viewer.py), if any."""
    copy_id = f"{_id_base(context)}{urllib.parse.quote(viewer.companion_name(item_name), safe='')}"
    return viewer.companion_files(item_name, text, context, copy_id)


def _book_title(item_name, records, rows, source):
    """The book's title as plain text: the crawl's `title`, else the source manifest's label, else the item."""
    for record in records:
        row = viewer.find_row(rows, item_name, record.key)
        if row and viewer.plain_text(row.get("title") or ""):
            return viewer.plain_text(row["title"])
    return (source.label if source else "") or item_name


def _label(names, whole_page):
    """The annotation's language map: the tag's name per language, and the whole-page note where it applies."""
    if whole_page:
        return {language: [name, viewer.WHOLE_PAGE_NOTE] if language == "en" else [name]
                for language, name in names.items()}
    return {language: [name] for language, name in names.items()}


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


def _after(document, anchor, key, value):
    """`document` with `key` inserted after `anchor` (key order is what a reader of the file sees)."""
    result = {}
    for name, item in document.items():
        result[name] = item
        if name == anchor:
            result[key] = value
    return result


def _with_confidence(annotation, value):
    """The annotation with the extension property after its motivation (prezi3's models drop unknown keys),
    and the confidence also as a describing body, the one place viewers show it (Mirador lists bodies)."""
    result = {}
    for key, item in annotation.items():
        result[key] = item
        if key == "motivation":
            result[CONFIDENCE] = value
    body = result.get("body")
    result["body"] = (body if isinstance(body, list) else [body]) + [{
        "type": "TextualBody", "value": f"confidence {value}", "format": "text/plain", "language": "en",
        "purpose": "describing"}]
    return result


def _generator(context):
    weights = f" with weights {context.weights_name}" if context.weights_name else ""
    return Agent(id=f"urn:sha256:{context.weights_sha256}" if context.weights_sha256 else None, type="Software",
                 name=f"{context.software} {context.version}{weights}", homepage=HOMEPAGE)


def _target(item_name, record, context, rows, source=None, page=None):
    """The most precise target known for one image (see the module's docstring)."""
    row = viewer.find_row(rows, item_name, record.key)
    box = _box(row) if row else None
    placed = source.placements.get(record.key) if source is not None and source.usable else None
    if placed:
        canvas, box = placed
        value = viewer.pixel_selector_value(box, canvas) if box else None
        selector = FragmentSelector(value=value) if value else _selector(box) if box else None
        return SpecificResource(id=_crop_id(page, record, row, box), source={"id": canvas.id, "type": "Canvas"},
                                selector=selector)
    if row and row.get("canvas"):
        source = {"id": row["canvas"], "type": "Canvas"}
        return SpecificResource(source=source, selector=_selector(box) if box else None)
    image = _ndl_page(row, record.key)
    if image is not None:
        source = {"id": image, "type": "Image", "format": "image/jpeg"}
        return SpecificResource(id=_crop_id(page, record, row, box), source=source,
                                selector=_selector(box) if box else None)
    relative = _relative(record.path, context.input_dir)
    if context.target_base and relative and not relative.startswith(".."):
        return f"{context.target_base}/{urllib.parse.quote(relative.replace(os.sep, '/'))}"
    return file_url(record.path)


def _crop_id(page, record, row, box):
    """An id of its own for a crop whose box is unknown (its target is the whole page), else None."""
    if page and box is None and viewer.is_crop(row, record.key):
        return f"{page}#{urllib.parse.quote(record.key, safe='')}"
    return None


def _relative(path, input_dir):
    return storage.relpath(path, input_dir) if input_dir else None


def _selector(box):
    return FragmentSelector(value="xywh=percent:" + ",".join(ndl.format_number(v) for v in box))
