"""Where a tagged image came from: its crawl row in `{input}/manifest.csv`, its box, its IIIF page.

Shared by the formats that point back at the source (iiif annotations, the catalogue CSV), so
that both name the same page, region, canvas and manifest for an image.
"""

import csv
import functools
import io
import logging
import os

from tagestimate import files, ndl, storage
from tagestimate.manifest import MANIFEST_NAME
from tagestimate.records import RunContext

log = logging.getLogger(__name__)


def box_of(row):
    """(x, y, w, h) in percent of the page from a manifest row, or None when it has no valid box."""
    try:
        box = tuple(float(row[key]) for key in ("x", "y", "w", "h"))
        ndl.check_box(*box)
        return box
    except (KeyError, TypeError, ValueError):  # ndl.RecordError is a ValueError
        return None


def ndl_page(row, key):
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


def parent_folder(folder):
    """The folder above `folder` (a path, or a URI below its bucket), or None."""
    if storage.on_disk(folder):
        parent = os.path.dirname(os.path.abspath(folder))
        return parent if parent != os.path.abspath(folder) else None
    scheme, _, rest = folder.rstrip("/").partition("://")
    return f"{scheme}://{rest.rsplit('/', 1)[0]}" if "/" in rest else None


def provenance(input_dir):
    """{(folder, id): row} of the crawler's `manifest.csv` in `input_dir`, else in the folder above it (the
    input is one folder of a crawl, e.g. datasetpdm/stamp), or {} when there is none."""
    if not input_dir:
        return {}
    for folder in (input_dir, parent_folder(input_dir)):
        path = storage.join(folder, MANIFEST_NAME) if folder else None
        version = storage.version(path) if path else None
        if version is not None:
            return _read_rows(path, *version)
    return {}


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


def file_url(path):
    """The absolute file: URL of a local path; a URI (s3://...) as it is."""
    return storage.url(path)


def run_context(input_dir, weights_path, output_dir, id_base=None, target_base=None, created=None,
                weights_sha256=None, fetch_manifests=True):
    """The RunContext of a tagging run; bases default to file: URLs. weights_sha256: the file's hash as the
    run took it (its model bundle), else hashed here. fetch_manifests: fetch source manifests the crawl
    did not save (viewer.py)."""
    import datetime

    created = created or datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return RunContext(input_dir=storage.root(input_dir),
                      weights_name=os.path.basename(weights_path),
                      weights_sha256=weights_sha256 or files.sha256_file(weights_path),
                      id_base=(id_base or file_url(output_dir)).rstrip("/"),
                      target_base=(target_base or "").rstrip("/"), created=created,
                      fetch_manifests=fetch_manifests)
