"""What is known about an image beyond its vector: its file, its thumbnail, its IIIF target.

An item's output holds keys, not paths, so the index takes each image's file, best first, from
1. the report's data file of the item (OUTPUT/html/data/{item}.json: the path tagging read);
2. the input folder (--input, else the one OUTPUT/html/run.json names), listed as tagging lists it;
else it is left empty. The IIIF target (written "{id}#xywh=percent:x,y,w,h" for a region) comes from
1. the item's `--format iiif` output ({item}.iiif.json: the target of the image's annotations);
2. the input folder's manifest.csv (the crawler's): the row's canvas, else NDL's page image;
3. a file named like NDL's crops ({pid}_{page}_{n}): NDL's page image;
else it is left empty. Everything here is best effort: a file that cannot be read adds nothing.
"""

import csv
import io
import json
import logging
import urllib.parse

from tagestimate import files, ndl, storage
from tagestimate.files import safe_name  # noqa: F401 (the report's file names, found again here)
from tagestimate.manifest import MANIFEST_NAME

PAGES = "html"  # the review report's folder in OUTPUT (tagestimate/review/report.py: PAGES, DATA, ...)
DATA = "data"
THUMBS = "thumbs"
RUN_INFO = "run.json"
IIIF_EXTENSION = "iiif.json"
MAX_BYTES = 256 << 20
log = logging.getLogger(__name__)


def read_json(path):
    """A JSON file's value, None when it is missing or unreadable."""
    try:
        return json.loads(storage.read_bytes(path, MAX_BYTES))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    except Exception as error:  # noqa: BLE001 - a store's error (StorageError): nothing known, say why
        log.debug("%s not read (%s)", files.printable_path(path), error)
        return None


def run_info(output_dir):
    """OUTPUT/html/run.json (the report's record of the latest run: weights, input), or {}."""
    info = read_json(storage.join(storage.join(output_dir, PAGES), RUN_INFO))
    return info if isinstance(info, dict) else {}


def thumbnail(output_dir, item_name, key):
    """The report's thumbnail of an image (OUTPUT/html/thumbs/{item}/{key}.jpg) when it exists, else None."""
    path = storage.join(storage.join(storage.join(output_dir, PAGES), THUMBS), safe_name(item_name))
    path = storage.join(path, safe_name(key) + ".jpg")
    return path if storage.version(path) is not None else None


class Context:
    """Looks up paths and targets for the items of one output folder; reads each source once."""

    def __init__(self, output_dir, input_dir=None):
        self.output_dir = output_dir
        self.input_dir = input_dir or run_info(output_dir).get("input") or None
        self._inputs = None
        self._rows = None

    def describe(self, item_name, keys):
        """([path or ""], [IIIF target or ""]) for `keys` of item `item_name`."""
        known = self._report_paths(item_name)
        if any(key not in known for key in keys):
            known = {**self._input_paths().get(item_name, {}), **known}
        annotated = self._annotated(item_name)
        paths = [known.get(key, "") for key in keys]
        targets = [annotated.get(key) or self._manifest_target(item_name, key) or "" for key in keys]
        return paths, targets

    def _report_paths(self, item_name):
        data = read_json(storage.join(storage.join(storage.join(self.output_dir, PAGES), DATA),
                                      safe_name(item_name) + ".json"))
        try:
            return {str(key): str(path) for key, path, _ in data["images"]} if data.get("item") == item_name else {}
        except (AttributeError, KeyError, TypeError, ValueError):
            return {}

    def _input_paths(self):
        """{item: {key: path}} of the input folder, listed once as tagging lists it."""
        if self._inputs is None:
            self._inputs = {}
            if self.input_dir:
                from tagestimate.tag.inference import find_items  # lazy: only when the report did not say

                try:
                    items, _ = find_items(self.input_dir)
                    self._inputs = {item.name: dict(item.images) for item in items}
                except (OSError, ValueError) as error:
                    log.debug("input folder %s not listed (%s)", files.printable_path(self.input_dir), error)
        return self._inputs

    def _annotated(self, item_name):
        """{key: target} of the item's AnnotationPage, {} without one."""
        document = read_json(storage.join(self.output_dir, f"{item_name}.{IIIF_EXTENSION}"))
        found = {}
        try:
            for annotation in document["items"]:
                key = urllib.parse.unquote(str(annotation["id"]).rpartition("#")[2].rpartition("/")[0])
                target = _target_text(annotation.get("target"))
                if key and target:
                    found.setdefault(key, target)
        except (KeyError, TypeError, AttributeError):
            pass
        return found

    def _manifest_target(self, item_name, key):
        if self._rows is None:
            self._rows = _manifest_rows(self.input_dir) if self.input_dir else {}
        return manifest_target(self._rows.get((item_name, key)), key)


def _target_text(target):
    """An annotation target as one string: a URL, or '{source}#{selector}'; a file: URL is not one."""
    if isinstance(target, str):
        return "" if target.startswith("file:") else target
    if isinstance(target, dict):
        source = target.get("source")
        source = source.get("id") if isinstance(source, dict) else source
        selector = target.get("selector")
        value = selector.get("value") if isinstance(selector, dict) else None
        if isinstance(source, str) and not source.startswith("file:"):
            return f"{source}#{value}" if isinstance(value, str) else source
    return ""


def _manifest_rows(input_dir):
    try:
        text = storage.read_bytes(storage.join(input_dir, MANIFEST_NAME), MAX_BYTES).decode("utf-8")
        return {(row.get("folder"), row.get("id")): row for row in csv.DictReader(io.StringIO(text, newline=""))}
    except (OSError, UnicodeDecodeError, csv.Error):
        return {}
    except Exception:  # noqa: BLE001 - a store's error: no provenance, as without a manifest
        return {}


def manifest_target(row, key):
    """The target annotations.py gives an image (its canvas or NDL page, and its box), as one string."""
    box = _box(row) if row else None
    fragment = "#xywh=percent:" + ",".join(ndl.format_number(v) for v in box) if box else ""
    if row and row.get("canvas"):
        return row["canvas"] + fragment
    try:
        if row and row.get("pid") and str(row.get("page", "")).isdigit():
            pid, page = row["pid"], int(row["page"])
            try:
                base = ndl.parse_iiif_url(row.get("source_url", ""))[0]
            except ndl.RecordError:
                base = ndl.DEFAULT_IIIF_BASE
            return ndl.iiif_url(base, pid, page, "full", "full") + fragment
        match = files.NDL_NAME.fullmatch(key.rsplit("/", 1)[-1])
        if match:
            return ndl.iiif_url(ndl.DEFAULT_IIIF_BASE, match["pid"], int(match["page"]), "full", "full")
    except ndl.RecordError:
        pass
    return ""


def _box(row):
    try:
        box = tuple(float(row[name]) for name in ("x", "y", "w", "h"))
        ndl.check_box(*box)
        return box
    except (KeyError, TypeError, ValueError):
        return None
