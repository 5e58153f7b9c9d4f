"""Manifest mode (--iiif-manifest): each canvas's image of IIIF manifests (URLs or files), and of the
manifests their collections list, into `{out}/{slug}/{n:04d}.jpg`, with the manifest as read beside
manifest.csv (`{out}/{slug}.manifest.json`: tagging builds the viewer's annotated copy from it)."""

import logging
import os
import re
import urllib.parse

from tagestimate import files, httpclient, iiif, viewer
from tagestimate.crawl.crawler import Crawler, Job
from tagestimate.crawl.progress import Progress
from tagestimate.manifest import CrawlError

log = logging.getLogger(__name__)


def crawl_manifests(options, sources, limit=None):
    """Each canvas's image of IIIF manifests (URLs or files) into `{out}/{slug}/{n:04d}.jpg`.

    A collection's manifests are followed, at most `limit` per collection given. Documents
    that are not JSON manifests or collections, canvases without an image service and
    non-image bodies are skipped with a warning and counted (`skipped`); a manifest that
    cannot be fetched is counted in `api_errors`, in the row `-` when its folder is not known.
    """
    crawler = Crawler(options, extended=True)
    folders = {}  # manifest id -> folder, this run
    with crawler:
        for source in sources:
            for manifest, data in _manifests(crawler, source, limit):
                if manifest.id in folders:
                    crawler.summary.stats(folders[manifest.id]).duplicates += len(manifest.pages)
                    continue
                folder = folders[manifest.id] = _manifest_folder(crawler, manifest, set(folders.values()))
                _crawl_manifest(crawler, manifest, folder)
                _save_copy(crawler, folder, data)
    return crawler.summary


def _manifests(crawler, source, limit):
    """The manifests a source names: itself, or those its collection (and sub-collections) list.

    Each document is read once per source: a collection that lists itself or an ancestor
    (a loop) or a document listed twice is skipped with a warning, counted in the row `-`.
    """
    queue, seen, given = [(source, 0, None)], set(), 0
    while queue:
        location, depth, parent = queue.pop(0)
        if location in seen:
            _unusable(crawler, "skipped", f"collection {parent} lists {location} again, which this run already "
                                          f"read: not followed twice (a collection that lists itself would loop)")
            continue
        seen.add(location)
        document, data = _document(crawler, location, first=location == source)
        if isinstance(document, iiif.Manifest):
            given += 1
            yield document, data
        elif isinstance(document, iiif.Collection):
            if depth >= iiif.MAX_DEPTH:
                _unusable(crawler, "skipped", f"collection {location} not followed: nested over {iiif.MAX_DEPTH} deep")
                continue
            if not document.members:
                _unusable(crawler, "skipped", f"collection {location} lists no manifest or collection")
            queue[0:0] = [(member, depth + 1, location) for _, member in document.members]
        if limit is not None and given >= limit:
            return


def _document(crawler, location, first):
    """(a parsed Manifest or Collection, its bytes), or (None, None) when it is skipped (counted and logged)."""
    try:
        if re.match(r"https?://", location):
            data = crawler.client.get(location, max_bytes=iiif.MAX_BYTES, accept=iiif.ACCEPT)
        else:
            data = _read_local(location)
        return iiif.parse_document(iiif.load_json(data, location), location), data
    except httpclient.Unreachable as error:
        if first and not crawler.saved_any:
            raise CrawlError(f"cannot reach {location} ({error}); check the URL and the network") from None
        _unusable(crawler, "api_errors", f"manifest {location} not fetched: {error}")
    except httpclient.FetchError as error:  # every network error of this one document, redirect loops included
        _unusable(crawler, "api_errors", f"manifest {location} not fetched: {error}")
    except iiif.DocumentError as error:
        _unusable(crawler, "skipped", f"manifest skipped: {error}")
    return None, None


def _save_copy(crawler, folder, data):
    """The manifest as read (capped at iiif.MAX_BYTES by the fetch), atomically beside its images, once the folder
    holds any: tagging maps the images to its canvases without asking the server again."""
    if not crawler.manifest.counts.get(folder):
        return
    path = os.path.join(crawler.options.out, viewer.copy_name(folder))
    try:
        files.write_atomic(path, data)
    except OSError as error:
        raise CrawlError(f"cannot write {path}: {error.strerror}; check free space and permissions of --out") from None


def _unusable(crawler, column, message):
    """Count a document that gave nothing in the row `-`, whose status names the first such document."""
    stats = crawler.summary.stats("-")
    setattr(stats, column, getattr(stats, column) + 1)
    log.warning("%s", message)
    stats.status = stats.status or httpclient.shorten(message)


def _read_local(path):
    try:
        size = os.path.getsize(path)
        if size > iiif.MAX_BYTES:
            raise iiif.DocumentError(f"{path} is {size} bytes, over the {iiif.MAX_BYTES} byte cap of a manifest")
        with open(path, "rb") as handle:
            return handle.read(iiif.MAX_BYTES + 1)
    except OSError as error:
        raise CrawlError(f"cannot read the manifest {path}: {error.strerror}; check --iiif-manifest") from None


def _manifest_folder(crawler, manifest, taken):
    """The manifest's slug, with a hash of its id appended when another manifest or mode has that folder."""
    folder = iiif.slug(manifest.id)
    origin = crawler.manifest.origins.get(folder)
    foreign = origin not in (None, manifest.id) or (origin is None and crawler.manifest.counts.get(folder))
    if foreign or folder in taken:
        folder = f"{folder[:iiif.SLUG_LENGTH]}-{iiif.short_hash(manifest.id)}"
    return folder


def _crawl_manifest(crawler, manifest, folder):
    stats = crawler.summary.stats(folder)
    stats.status = "interrupted"
    if not manifest.pages and not manifest.skipped:
        stats.status = "no canvases: nothing to fetch"
        log.warning("manifest %s has no canvases: nothing to fetch", manifest.id)
        return
    for skipped in manifest.skipped:
        stats.skipped += 1
        log.warning("%s canvas %d %s skipped: %s", manifest.id, skipped.number, skipped.canvas, skipped.reason)
    jobs = []
    for page in manifest.pages:
        image_id = f"{page.number:04d}"
        if (folder, image_id) in crawler.manifest.keys:
            stats.duplicates += 1
            continue
        url = iiif.image_url(page.service, page.version, crawler.options.size)
        jobs.append(Job(image_id, folder, url, "", page.number, None, manifest.label, stats_key=folder,
                        extra=(("manifest", manifest.id), ("canvas", page.canvas), ("label", page.label),
                               ("service", page.service))))
    if jobs:
        crawler.image_server = urllib.parse.urlsplit(jobs[0].url).netloc
    with Progress(folder, total=len(manifest.pages), initial=len(manifest.pages) - len(jobs)) as bar:
        crawler.fetch_all(jobs, lambda job: bar.update(1))
    stats.status = "done" if not stats.failed else "done, with failures: re-run to retry them"
