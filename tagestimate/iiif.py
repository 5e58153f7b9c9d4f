"""What a IIIF Presentation document means: its canvases' images, a collection's manifests.

Pure functions, no network: `parse_document` reads Presentation API 2.1
(`sequences[].canvases[].images[].resource.service`) and 3.0
(`items[].items[].items[].body.service`); `image_url` asks an Image API 2 or 3 service for a
whole page at a size; `slug` turns a manifest's id into a safe folder name. Documents come
from anywhere, so nothing in them is trusted: a canvas without a usable image is reported as
skipped with the reason, never raised. For a viewer (tagestimate/viewer.py): `canvases` with their
sizes, labels as plain text (`plain_text`, `plain_map`: markup stripped), and `upgrade_v2`, a 2.1
manifest as 3.0.
"""

import dataclasses
import hashlib
import html
import json
import re
import urllib.parse

from tagestimate import ndl

MAX_BYTES = 32 * 1024 * 1024  # a manifest of thousands of canvases is a few MB; anything bigger is not one
MAX_DEPTH = 4  # collections nested deeper than this are not followed (a loop or a hostile document)
ACCEPT = "application/ld+json, application/json;q=0.9"
SLUG_LENGTH = 48
# Path segments that name the kind of document rather than the book.
_GENERIC = {"manifest", "manifests", "iiif", "api", "presentation", "collection", "collections", "v2", "v3",
            "2", "3", "2.1", "3.0", "json", "index", "info"}
_V3_IMAGE_SIZE = {"full": "max"}  # Image API 3 dropped `full` as a size
_TAG = re.compile(r"<[/!?A-Za-z][^<>]*(>|$)")  # what an HTML renderer would take for markup


class DocumentError(ValueError):
    """A document that is neither a manifest nor a collection; the message says why."""


@dataclasses.dataclass(frozen=True)
class Page:
    """One canvas and the image service that paints it."""

    number: int         # 1-based position of the canvas in the manifest
    canvas: str         # the canvas id
    label: str
    service: str        # the Image API service id (no trailing slash)
    version: int        # 2 or 3: which Image API syntax the service speaks


@dataclasses.dataclass(frozen=True)
class Skipped:
    number: int
    canvas: str
    reason: str


@dataclasses.dataclass(frozen=True)
class Manifest:
    id: str
    label: str
    version: int                    # Presentation API 2 or 3
    pages: tuple = ()               # Page, in canvas order
    skipped: tuple = ()             # Skipped canvases


@dataclasses.dataclass(frozen=True)
class Collection:
    id: str
    members: tuple = ()  # ids of the manifests and collections it lists, in order ("Manifest"/"Collection", id)


def load_json(data, where):
    """The JSON object in `data` (bytes); DocumentError naming `where` otherwise."""
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as error:
        raise DocumentError(f"{where} is not JSON ({str(error)[:120]})") from None
    if not isinstance(document, dict):
        raise DocumentError(f"{where} is a JSON {type(document).__name__}, not a IIIF document")
    return document


def parse_document(document, where):
    """A Manifest or a Collection from a Presentation 2.1 or 3.0 document; DocumentError otherwise."""
    kind = _text(document.get("type")) or _text(document.get("@type"))
    identifier = _uri(document.get("id")) or _uri(document.get("@id"))
    if identifier is None:
        raise DocumentError(f"{where} has no http(s) id")
    if kind in ("Collection", "sc:Collection"):
        return Collection(identifier, tuple(_members(document)))
    if kind == "Manifest":
        return _manifest_v3(document, identifier)
    if kind == "sc:Manifest":
        return _manifest_v2(document, identifier)
    raise DocumentError(f"{where} is a {kind or 'document without a type'}, not a IIIF Manifest or Collection")


def _members(document):
    """(kind, id) of what a collection lists: v3 `items`, v2 `manifests`, `collections`, `members`."""
    entries = []
    for key in ("items", "members", "collections", "manifests"):
        value = document.get(key)
        if isinstance(value, list):
            entries += [entry for entry in value if isinstance(entry, dict)]
    for entry in entries:
        kind = _text(entry.get("type")) or _text(entry.get("@type"))
        identifier = _uri(entry.get("id")) or _uri(entry.get("@id"))
        if identifier and kind in ("Manifest", "sc:Manifest"):
            yield "Manifest", identifier
        elif identifier and kind in ("Collection", "sc:Collection"):
            yield "Collection", identifier


def _manifest_v2(document, identifier):
    pages, skipped = [], []
    sequences = document.get("sequences")
    canvases = sequences[0].get("canvases") if isinstance(sequences, list) and sequences \
        and isinstance(sequences[0], dict) else None
    if not isinstance(canvases, list):
        raise DocumentError(f"manifest {identifier} has no sequences[0].canvases list")
    for number, canvas in enumerate(canvases, start=1):
        images = canvas.get("images") if isinstance(canvas, dict) else None
        resources = [image.get("resource") for image in images if isinstance(image, dict)] \
            if isinstance(images, list) else []
        _add_page(pages, skipped, number, canvas, resources, "@type", ("dctypes:Image", "Image"))
    return Manifest(identifier, label_text(document.get("label")), 2, tuple(pages), tuple(skipped))


def _manifest_v3(document, identifier):
    pages, skipped = [], []
    canvases = document.get("items")
    if not isinstance(canvases, list):
        raise DocumentError(f"manifest {identifier} has no items list of canvases")
    for number, canvas in enumerate(canvases, start=1):
        bodies = []
        for page in (canvas.get("items") if isinstance(canvas, dict) else None) or []:
            for annotation in (page.get("items") if isinstance(page, dict) else None) or []:
                if isinstance(annotation, dict) and annotation.get("motivation") in ("painting", None):
                    body = annotation.get("body")
                    bodies += body if isinstance(body, list) else [body]
        _add_page(pages, skipped, number, canvas, bodies, "type", ("Image",))
    return Manifest(identifier, label_text(document.get("label")), 3, tuple(pages), tuple(skipped))


def _add_page(pages, skipped, number, canvas, resources, type_key, image_types):
    """Append the canvas's first image with a usable service to `pages`, or a reason to `skipped`."""
    canvas_id = (_uri(canvas.get("id")) or _uri(canvas.get("@id"))) if isinstance(canvas, dict) else None
    if canvas_id is None:
        skipped.append(Skipped(number, "", "the canvas has no http(s) id"))
        return
    reason = "the canvas paints no image"
    for resource in resources:
        if isinstance(resource, dict) and resource.get("type") == "Choice":
            resource = next(iter(resource.get("items") or []), None)
        if not isinstance(resource, dict):
            continue
        kind = _text(resource.get(type_key)) or _text(resource.get("type")) or _text(resource.get("@type"))
        if kind not in image_types:
            reason = f"the canvas paints a {kind or 'resource without a type'}, not an image"
            continue
        service = image_service(resource.get("service"))
        if service is None:
            reason = "the canvas's image has no IIIF Image API service"
            continue
        pages.append(Page(number, canvas_id, label_text(canvas.get("label")), *service))
        return
    skipped.append(Skipped(number, canvas_id, reason))


def image_service(value):
    """(service id, Image API version 2 or 3) of the first image service in `value`, or None."""
    for service in value if isinstance(value, list) else [value]:
        if not isinstance(service, dict):
            continue
        identifier = _uri(service.get("id")) or _uri(service.get("@id"))
        kind = _text(service.get("type")) or _text(service.get("@type")) or ""
        context = json.dumps(service.get("@context", ""))
        profile = json.dumps(service.get("profile", ""))
        if identifier is None:
            continue
        if kind == "ImageService3" or "/image/3/" in context:
            return identifier.rstrip("/"), 3
        if kind in ("ImageService2", "ImageService1") or "/image/2/" in context or "/image/1/" in context \
                or "/image/2/" in profile or "/image/1/" in profile or "library.stanford.edu/iiif/image" in profile:
            return identifier.rstrip("/"), 2
    return None


def image_url(service, version, size):
    """The whole image at `size` (an Image API 2.1 size such as ,256) from a version 2 or 3 service."""
    if not ndl.valid_size(size):
        raise ValueError(f"size {size!r} is not an IIIF size such as ,256 or full")
    if version == 3:
        size = _V3_IMAGE_SIZE.get(size, size)
    return f"{service}/full/{size}/0/default.jpg"


def label_text(label, limit=200):
    """Plain text of a v2 or v3 label (a string, a language map, a list of @value objects), or ''."""
    if isinstance(label, str):
        return ndl.clean_text(label, limit)
    if isinstance(label, dict):
        if "@value" in label:
            return label_text(label["@value"], limit)
        for values in label.values():
            text = label_text(values, limit)
            if text:
                return text
    if isinstance(label, list):
        for value in label:
            text = label_text(value, limit)
            if text:
                return text
    return ""


def slug(manifest_id):
    """A folder name ([0-9A-Za-z_-]{1,64}) from a manifest id: its last telling path segment.

    https://dl.ndl.go.jp/api/iiif/1054192/manifest.json -> 1054192. Characters outside the
    safe alphabet become '-'; an id with nothing telling gets 'manifest-' and a hash.
    """
    path = urllib.parse.urlsplit(manifest_id).path if "://" in manifest_id else manifest_id
    segments = [urllib.parse.unquote(part) for part in re.split(r"[/\\]", path) if part]
    for segment in reversed(segments):
        stem = re.sub(r"\.json(ld)?$", "", segment, flags=re.IGNORECASE)
        if stem.lower() in _GENERIC:
            continue
        name = re.sub(r"[^0-9A-Za-z_-]+", "-", stem).strip("-")[:SLUG_LENGTH]
        if name:
            return name
    return "manifest-" + short_hash(manifest_id)


def short_hash(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:10]


def _uri(value):
    if isinstance(value, str) and re.fullmatch(r"https?://[^\s]+", value.strip()) and len(value) <= 2000:
        return value.strip()
    return None


def _text(value):
    return value if isinstance(value, str) else None


# -- for a viewer: canvases with their sizes, plain-text labels, a 2.1 manifest as 3.0 (viewer.py) ----------

@dataclasses.dataclass(frozen=True)
class Canvas:
    id: str
    position: int  # 1-based
    width: int  # 0: unknown
    height: int


def plain_text(text):
    """`text` as plain text: entities decoded, then anything an HTML renderer would take for a tag
    removed (Universal Viewer renders some labels as HTML; JSON keeps them as text either way)."""
    return re.sub(r"\s+", " ", _TAG.sub("", html.unescape(str(text)))).strip()


def document_id(document):
    value = document.get("id") or document.get("@id")
    return value if isinstance(value, str) else None


def canvases(document):
    """[(Canvas, raw canvas dict, image service id or '')] of a v2 or v3 manifest, in order."""
    if document.get("type") == "Manifest":
        raw = document.get("items")
    else:
        sequences = document.get("sequences")
        raw = sequences[0].get("canvases") if isinstance(sequences, list) and sequences \
            and isinstance(sequences[0], dict) else None
    found = []
    for position, canvas in enumerate(raw if isinstance(raw, list) else [], start=1):
        if not isinstance(canvas, dict):
            continue
        identifier = document_id(canvas)
        if identifier:
            found.append((Canvas(identifier, position, _size(canvas.get("width")), _size(canvas.get("height"))),
                          canvas, _service_of(canvas)))
    return found


def _size(value):
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 10 ** 7 else 0


def _service_of(canvas):
    resources = []
    for image in canvas.get("images") or []:  # v2
        if isinstance(image, dict):
            resources.append(image.get("resource"))
    for page in canvas.get("items") or []:  # v3
        for annotation in (page.get("items") if isinstance(page, dict) else None) or []:
            if isinstance(annotation, dict):
                body = annotation.get("body")
                resources += body if isinstance(body, list) else [body]
    for resource in resources:
        if isinstance(resource, dict):
            service = image_service(resource.get("service"))
            if service:
                return service[0]
    return ""


def as_list(value):
    return list(value) if isinstance(value, list) else [value] if value else []


def plain_map(label):
    """A label as a language map of plain text (markup stripped), from a v2 or v3 label."""
    if isinstance(label, dict) and "@value" not in label:
        return {str(lang): [plain_text(v) for v in as_list(values) if isinstance(v, str)]
                for lang, values in label.items()} or {"none": [""]}
    found = {}
    for value in as_list(label):
        if isinstance(value, dict):
            found.setdefault(str(value.get("@language") or "none"), []).append(plain_text(value.get("@value", "")))
        elif isinstance(value, str):
            found.setdefault("none", []).append(plain_text(value))
    return found or {"none": [""]}


def upgrade_v2(document, copy_id):
    """A Presentation 3 manifest from a 2.1 one: label, metadata, attribution, direction, canvases and images."""
    result = {"id": copy_id, "type": "Manifest", "label": plain_map(document.get("label"))}
    metadata = [{"label": plain_map(entry.get("label")), "value": plain_map(entry.get("value"))}
                for entry in as_list(document.get("metadata")) if isinstance(entry, dict)]
    if metadata:
        result["metadata"] = metadata
    if document.get("attribution"):
        result["requiredStatement"] = {"label": {"en": ["Attribution"]},
                                       "value": plain_map(document["attribution"])}
    if document.get("viewingDirection") in ("left-to-right", "right-to-left", "top-to-bottom", "bottom-to-top"):
        result["viewingDirection"] = document["viewingDirection"]
    if document.get("viewingHint") in ("paged", "individuals", "continuous"):
        result["behavior"] = [document["viewingHint"]]
    result["items"] = [_upgrade_canvas(canvas, raw, copy_id) for canvas, raw, _ in canvases(document)]
    return result


def _upgrade_canvas(canvas, raw, copy_id):
    bodies = [_upgrade_image(image.get("resource")) for image in raw.get("images") or [] if isinstance(image, dict)]
    bodies = [body for body in bodies if body]
    result = {"id": canvas.id, "type": "Canvas", "label": plain_map(raw.get("label"))}
    width, height = canvas.width or _first(bodies, "width"), canvas.height or _first(bodies, "height")
    if width and height:
        result["width"], result["height"] = width, height
    result["items"] = [{"id": f"{copy_id}#painting-{canvas.position}", "type": "AnnotationPage", "items": [
        {"id": f"{copy_id}#image-{canvas.position}-{n}", "type": "Annotation", "motivation": "painting",
         "body": body, "target": canvas.id} for n, body in enumerate(bodies, start=1)]}]
    return result


def _first(bodies, key):
    return next((body[key] for body in bodies if body.get(key)), 0)


def _upgrade_image(resource):
    if not isinstance(resource, dict) or not isinstance(resource.get("@id"), str):
        return None
    body = {"id": resource["@id"], "type": "Image", "format": resource.get("format") or "image/jpeg"}
    for key in ("width", "height"):
        if _size(resource.get(key)):
            body[key] = resource[key]
    service = image_service(resource.get("service"))
    if service:
        profile = json.dumps(resource["service"]) if not isinstance(resource["service"], list) else ""
        level = re.search(r"level([012])", profile)
        body["service"] = [{"id": service[0], "type": f"ImageService{service[1]}",
                            "profile": f"level{level[1] if level else 0}"}]
    return body
