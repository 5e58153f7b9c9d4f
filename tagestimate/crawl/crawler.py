"""Grow `{out}/{folder}/{id}.jpg` from the NDL API (tagged mode: one folder per tag; book mode:
one folder per pid), an NDL-ImageLabel index (rebuild mode) or IIIF manifests (one folder per
manifest), recording every saved image in `{out}/manifest.csv` (`tagestimate.manifest`).

Invariants, kept across crashes and Ctrl-C:
- an image is only visible under its final name once complete (`files.write_atomic`:
  hidden temp name in the same folder, fsync, os.replace);
- a manifest row is appended (flushed and fsynced) only after its file's rename;
- on start, `Manifest.open` reconciles the two (and removes temporary files), never
  deleting an image; a run that fails before any server answered creates nothing.
An id is filed at most once, whatever the folder. In tagged mode a record that also carries
a more specific tag than the requested one (`picture_landmark` when `picture_outdoor` was
requested) is left for that tag's folder: filed under the parent, the trainer would read it
as a negative for the child's labels.
HTTP (retries, caps, deadline) is `tagestimate.httpclient`; what NDL's answers mean, `tagestimate.ndl`.
"""

import concurrent.futures
import csv
import dataclasses
import datetime
import hashlib
import json
import logging
import os
import re
import threading
import time
import urllib.parse

from tqdm import tqdm

from tagestimate import files, httpclient, iiif, ndl
from tagestimate.labels import UNTAGGED_FOLDER, default_labelmap
from tagestimate.manifest import CrawlError, Manifest

log = logging.getLogger(__name__)

UNKNOWN_FOLDER = UNTAGGED_FOLDER  # defined in tagestimate/labels.py, which the trainer reads too
INDEX_COLUMNS = 6  # file name, label, Windows path, title, item URL, IIIF URL (ndl-api.md §3)
# Defaults of tagged mode's own settings (newdataclawer's --per-class and --min-confidence).
PER_CLASS = 500
MIN_CONFIDENCE = 0.0
MAX_BYTES = "20MB"  # --max-bytes, as its help shows it; CrawlOptions.max_bytes is its value in bytes
_BYTE_SIZE = re.compile(r"(\d+)\s*([kmg]?)(i?b)?", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}


def byte_size(text):
    """Bytes from '20971520', '500KB' or '20MB' (K, M, G are powers of 1024); ValueError otherwise."""
    match = _BYTE_SIZE.fullmatch(text.strip())
    if match is None or int(match[1]) == 0:
        raise ValueError(f"{text!r} is not a positive size such as 20MB, 500KB or 1048576")
    return int(match[1]) * _UNITS[match[2].lower()]


@dataclasses.dataclass
class CrawlOptions:
    """Settings shared by both modes; the CLI takes its defaults from here."""

    out: str = "datasetpdm"
    api_base: str = ndl.DEFAULT_API_BASE
    iiif_base: str = ndl.DEFAULT_IIIF_BASE
    size: str = ndl.DEFAULT_SIZE
    batch: int = ndl.DEFAULT_BATCH
    workers: int = 4
    delay: float = 1.0
    timeout: float = httpclient.TIMEOUT
    retries: int = httpclient.RETRIES
    backoff: float = httpclient.BACKOFF
    max_wait: float = httpclient.MAX_WAIT
    max_bytes: int = byte_size(MAX_BYTES)
    max_idle: int = 20


@dataclasses.dataclass
class FolderStats:
    """What happened to one tag (tagged mode) or label (rebuild mode) in this run."""

    saved: int = 0        # new files written this run
    duplicates: int = 0   # already filed (this or an earlier run) or already tried this run
    rejected: int = 0     # unusable record or index row (missing fields, hostile id, ...)
    skipped: int = 0      # below --min-confidence, not carrying the requested tag, or also
                          # carrying a more specific tag (left for that tag's folder)
    failed: int = 0       # download given up, not a JPEG, or over --max-bytes
    api_errors: int = 0   # API calls that failed or answered garbage
    total: int = 0        # files in the folder at the end
    status: str = ""


@dataclasses.dataclass
class CrawlSummary:
    folders: dict = dataclasses.field(default_factory=dict)  # name -> FolderStats
    interrupted: bool = False
    elapsed: float = 0.0

    def stats(self, name):
        return self.folders.setdefault(name, FolderStats())

    @property
    def saved(self):
        return sum(stats.saved for stats in self.folders.values())

    def format(self):
        """A fixed-width table, one row per folder."""
        columns = ("saved", "duplicates", "rejected", "skipped", "failed", "api_errors", "total")
        width = max([len(name) for name in self.folders] + [6])
        lines = [f"{'folder':<{width}}  " + "  ".join(f"{c:>10}" for c in columns) + "  status"]
        for name, stats in self.folders.items():
            values = "  ".join(f"{getattr(stats, c):>10}" for c in columns)
            lines.append(f"{name:<{width}}  {values}  {stats.status}")
        rate = self.saved / self.elapsed if self.elapsed > 0 else 0.0
        lines.append(f"{self.saved} images saved in {self.elapsed:.1f} s ({rate:.2f} images/s)"
                     + ("; interrupted: run the same command again to resume" if self.interrupted else ""))
        return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class Job:
    """One image to fetch and file."""

    id: str
    folder: str
    url: str
    pid: str
    page: int
    box: tuple
    title: str = ""
    confidence: float = None
    stats_key: str = ""  # the summary row the outcome is counted in
    extra: tuple = ()    # ((column, value), ...) of manifest.EXTRA_FIELDS


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


class _Crawler:
    """What both modes share: the HTTP client, the manifest, the download pool."""

    def __init__(self, options, extended=False):
        if not ndl.valid_size(options.size):
            raise ValueError(f"size {options.size!r} is not an IIIF size such as ,256 or full")
        self.options = options
        self.image_server = options.iiif_base  # named when no image could be fetched at all
        self.stop_event = threading.Event()  # set on the way out: in-flight downloads stop, unsaved
        self.client = httpclient.HttpClient(timeout=options.timeout, retries=options.retries, backoff=options.backoff,
                                            max_wait=options.max_wait, pool_size=options.workers + 2,
                                            stop_event=self.stop_event)
        self.manifest = Manifest(options.out, extended=extended)
        self.pool = None
        self.summary = CrawlSummary()
        self.saved_any = False
        self._started = time.monotonic()

    def __enter__(self):
        try:
            self.manifest.open()
        except OSError as error:
            raise CrawlError(f"cannot use {error.filename or self.options.out} as the data set folder: "
                             f"{error.strerror}; check --out") from None
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=self.options.workers,
                                                          thread_name_prefix="download")
        return self

    def __exit__(self, exc_type, exc, tb):
        # Stop workers before waiting on them, so Ctrl-C or an error is not held up by retries.
        self.stop_event.set()
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
        if exc_type is None or exc_type is KeyboardInterrupt:
            try:
                self.manifest.commit()  # a reconciliation that no new row has written yet
            except OSError as error:
                raise CrawlError(f"cannot write {self.manifest.path}: {error.strerror}; "
                                 f"check free space and permissions of --out") from None
        self.manifest.close()
        self.client.close()
        for name, stats in self.summary.folders.items():
            stats.total = self.manifest.counts.get(name, 0)
        self.summary.elapsed = time.monotonic() - self._started
        if exc_type is KeyboardInterrupt:
            self.summary.interrupted = True
            return True  # the summary says so; the caller decides the exit status
        return False

    def fetch_all(self, jobs, on_saved):
        """Download `jobs` in parallel; counts outcomes and calls on_saved(job) for each file written."""
        futures = {self.pool.submit(self._download, job): job for job in jobs}
        for future in concurrent.futures.as_completed(futures):
            job = futures[future]
            outcome, reason = future.result()
            stats = self.summary.stats(job.stats_key)
            if outcome == "saved":
                self.saved_any = True
                self.summary.stats(job.folder).saved += 1
                on_saved(job)
            elif outcome == "unreachable" and not self.saved_any:
                raise CrawlError(f"cannot reach the IIIF server at {self.image_server} ({reason}); "
                                 f"check --iiif-base and the network")
            elif outcome != "interrupted":
                stats.failed += 1
                log.warning("%s not saved: %s", job.id, reason)

    def _download(self, job):
        try:
            data = self.client.get(job.url, max_bytes=self.options.max_bytes, accept="image/jpeg")
            ndl.check_jpeg(data)
        except httpclient.Interrupted:
            return "interrupted", ""
        except httpclient.Unreachable as error:
            return "unreachable", str(error)
        except (httpclient.FetchError, ndl.NotAnImage) as error:
            return "failed", str(error)
        if self.stop_event.is_set():
            return "interrupted", ""
        path = self.manifest.image_path(job.folder, job.id)
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            files.write_atomic(path, data)
        except OSError as error:
            raise CrawlError(f"cannot write {path}: {error.strerror}; "
                             f"check free space and permissions of --out") from None
        box = [ndl.format_number(value) for value in job.box] if job.box else [""] * 4
        try:
            self.manifest.append({
                "id": job.id, "pid": job.pid, "page": job.page,
                "x": box[0], "y": box[1], "w": box[2], "h": box[3], "title": job.title, "folder": job.folder,
                "confidence": "" if job.confidence is None else ndl.format_number(job.confidence),
                "source_url": job.url, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "time": _now(),
                **dict(job.extra),
            })
        except OSError as error:  # the image stays; the next start adopts it
            raise CrawlError(f"cannot write {self.manifest.path}: {error.strerror}; "
                             f"check free space and permissions of --out") from None
        return "saved", ""


def more_specific_tags(tag, labelmap=None):
    """The known tags that train every label `tag` trains and more: picture_outdoor -> {picture_landmark}."""
    labelmap = labelmap or default_labelmap()
    canonical = labelmap.resolve(tag)
    if canonical is None:
        return frozenset()
    own = set(labelmap.tag_labels[canonical])
    return frozenset(other for other, labels in labelmap.tag_labels.items() if own < set(labels))


def most_specific_first(tags, labelmap=None):
    """`tags` sorted by how many labels each trains, most first; ties keep their order."""
    labelmap = labelmap or default_labelmap()
    return sorted(tags, key=lambda tag: -len(labelmap.tag_labels.get(labelmap.resolve(tag), ())))


def crawl_tagged(options, tags, per_class, min_confidence=MIN_CONFIDENCE):
    """Call randomwithfacet per tag until its folder holds `per_class` images or it runs dry.

    A record that also carries a tag more specific than the requested one is skipped (left
    for that tag's folder); crawl the most specific tags first (`most_specific_first`).
    """
    crawler = _Crawler(options)
    labelmap = default_labelmap()
    api = _ApiCalls(crawler)
    with crawler:
        for tag in tags:
            stats = crawler.summary.stats(tag)
            count = crawler.manifest.counts.get(tag, 0)
            tried = set()
            idle = 0
            stats.status = "interrupted"
            with tqdm(total=per_class, initial=min(count, per_class), desc=tag, unit="img", disable=None) as bar:
                def on_saved(job):
                    if job.folder == tag:
                        bar.update(1)

                while count < per_class:
                    if idle >= options.max_idle:
                        stats.status = f"ran dry: {idle} calls in a row brought nothing new"
                        log.warning("tag %s ran dry at %d images: %d API calls in a row brought nothing new",
                                    tag, count, idle)
                        break
                    raw_records = api.call(stats, f"tag {tag}", tag=tag)
                    if raw_records is None:
                        idle += 1
                        continue
                    jobs = _select(raw_records, tag, per_class - count, min_confidence, crawler, tried, stats,
                                   labelmap)
                    before = crawler.manifest.counts.get(tag, 0)
                    crawler.fetch_all(jobs, on_saved)
                    count = crawler.manifest.counts.get(tag, 0)
                    idle = 0 if count > before else idle + 1
                else:
                    stats.status = "full"
    return crawler.summary


class _ApiCalls:
    """randomwithfacet calls spaced by --delay; failures are counted, except before the API ever answered."""

    def __init__(self, crawler):
        self.crawler = crawler
        self.answered = False
        self.last_call = None

    def call(self, stats, what, tag=None, pid=None):
        """The raw records of one call, or None (counted in stats.api_errors) when it failed."""
        options = self.crawler.options
        if self.last_call is not None:
            time.sleep(max(0.0, self.last_call + options.delay - time.monotonic()))
        self.last_call = time.monotonic()
        try:
            records = ndl.random_illustrations(self.crawler.client, options.api_base, tag, options.batch, pid=pid)
        except httpclient.FetchError as error:
            if not self.answered:
                raise CrawlError(f"cannot reach the NDL API at {options.api_base} ({error}); "
                                 f"check --api-base and the network") from None
            stats.api_errors += 1
            log.warning("%s: API call failed: %s", what, error)
            return None
        except ndl.RecordError as error:
            self.answered = True
            stats.api_errors += 1
            log.warning("%s: API answer skipped: %s", what, error)
            return None
        self.answered = True
        return records


def crawl_pids(options, pids):
    """Every illustration the API knows of each book into `{out}/{pid}/{id}.jpg`, with all NDL's tags.

    randomwithfacet filtered by f-pid only returns random samples of the book, so it is called
    until `options.max_idle` calls in a row bring nothing new.
    """
    crawler = _Crawler(options, extended=True)
    api = _ApiCalls(crawler)
    with crawler:
        for pid in pids:
            stats = crawler.summary.stats(pid)
            stats.status = "interrupted"
            tried, idle = set(), 0
            with tqdm(initial=crawler.manifest.counts.get(pid, 0), desc=pid, unit="img", disable=None) as bar:
                while idle < options.max_idle:
                    raw_records = api.call(stats, f"pid {pid}", pid=pid)
                    if raw_records is None:
                        idle += 1
                        continue
                    before = crawler.manifest.counts.get(pid, 0)
                    crawler.fetch_all(_book_jobs(raw_records, pid, crawler, tried, stats), lambda job: bar.update(1))
                    idle = 0 if crawler.manifest.counts.get(pid, 0) > before else idle + 1
            stats.status = f"done: {idle} calls in a row brought nothing new"
    return crawler.summary


def _book_jobs(raw_records, pid, crawler, tried, stats):
    """Jobs for the records of book `pid` not filed yet; records of other books are rejected."""
    jobs = []
    for raw in raw_records:
        try:
            record = ndl.parse_record(raw)
            if record.pid != pid:
                raise ndl.RecordError(f"record {record.id} belongs to pid {record.pid}, not {pid}")
        except ndl.RecordError as error:
            stats.rejected += 1
            log.warning("pid %s: record rejected: %s", pid, error)
            continue
        if (pid, record.id) in crawler.manifest.keys or record.id in tried:
            stats.duplicates += 1
            continue
        tried.add(record.id)
        tags = json.dumps({name: confidence for name, confidence in record.tags}, ensure_ascii=False)
        jobs.append(Job(record.id, pid, record.url(crawler.options.iiif_base, crawler.options.size), pid,
                        record.page, (record.x, record.y, record.w, record.h), record.title, stats_key=pid,
                        extra=(("tags", tags),)))
    return jobs


def _select(raw_records, tag, wanted, min_confidence, crawler, tried, stats, labelmap):
    """The jobs worth downloading from one API answer, counting the rest."""
    jobs = []
    specific = more_specific_tags(tag, labelmap)
    for raw in raw_records:
        try:
            record = ndl.parse_record(raw)
        except ndl.RecordError as error:
            stats.rejected += 1
            log.warning("tag %s: record rejected: %s", tag, error)
            continue
        if record.id in crawler.manifest.ids or record.id in tried:
            stats.duplicates += 1
            continue
        if not record.tags:
            folder, confidence = UNKNOWN_FOLDER, None
            keep = min_confidence <= 0
        else:
            folder, confidence = tag, record.confidence(tag)
            keep = (record.has_tag(tag) and (min_confidence <= 0 or (confidence or 0.0) >= min_confidence)
                    and not any(labelmap.resolve(name) in specific for name, _ in record.tags))
        if not keep:
            stats.skipped += 1
            continue
        if folder == tag:
            if wanted <= 0:
                continue  # enough in flight; a later call can bring it again if a download fails
            wanted -= 1
        tried.add(record.id)
        jobs.append(Job(record.id, folder, record.url(crawler.options.iiif_base, crawler.options.size),
                        record.pid, record.page, (record.x, record.y, record.w, record.h),
                        record.title, confidence, stats_key=tag))
    return jobs


@dataclasses.dataclass(frozen=True)
class IndexRow:
    id: str
    label: str
    pid: str
    page: int
    box: tuple
    title: str


def read_index(path):
    """(rows, rejected per label) from an NDL-ImageLabel metadata.csv (ndl-api.md §3)."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            lines = list(csv.reader(handle))
    except OSError as error:
        raise CrawlError(f"cannot read the index {path}: {error.strerror}; check --from-metadata") from None
    except UnicodeDecodeError:
        raise CrawlError(f"the index {path} is not UTF-8 text; pass NDL-ImageLabel's metadata.csv") from None
    if lines and len(lines[0]) >= INDEX_COLUMNS:
        try:
            ndl.parse_iiif_url(lines[0][INDEX_COLUMNS - 1])
        except ndl.RecordError:
            lines = lines[1:]  # the header row
    rows, rejected = [], {}
    for number, line in enumerate(lines, start=2):
        label = line[1] if len(line) > 1 and ndl.valid_id(line[1]) else "-"
        try:
            if len(line) < INDEX_COLUMNS:
                raise ndl.RecordError(f"{len(line)} columns instead of {INDEX_COLUMNS}")
            if label == "-":
                raise ndl.RecordError(f"label {line[1][:80]!r} is not {ndl.ID_RULE}")
            stem, suffix = os.path.splitext(line[0].strip())
            image_id = stem if suffix.lower() in (".jpg", ".jpeg") else line[0].strip()
            if not ndl.valid_id(image_id):
                raise ndl.RecordError(f"file name {line[0][:80]!r} is not an id {ndl.ID_RULE} plus .jpg")
            _, pid, page, box = ndl.parse_iiif_url(line[INDEX_COLUMNS - 1])
        except ndl.RecordError as error:
            rejected[label] = rejected.get(label, 0) + 1
            log.warning("%s line %d rejected: %s", path, number, error)
            continue
        rows.append(IndexRow(image_id, label, pid, page, box, ndl.clean_text(line[3])))
    return rows, rejected


def rebuild_from_metadata(options, metadata_path, labels=None, limit=None):
    """Download the index's crops (at options.size, from options.iiif_base) into one folder per label."""
    rows, rejected = read_index(metadata_path)
    present = sorted({row.label for row in rows})
    if labels:
        missing = [label for label in labels if label not in present]
        if missing:
            raise CrawlError(f"label {missing[0]!r} is not in {metadata_path}; its labels are {', '.join(present)}")
        present = [label for label in present if label in labels]
    crawler = _Crawler(options)
    with crawler:
        for label in present:
            stats = crawler.summary.stats(label)
            stats.rejected = rejected.get(label, 0)
            selected = [row for row in rows if row.label == label][:limit]
            jobs, seen = [], set()
            for row in selected:
                if row.id in crawler.manifest.ids or row.id in seen:
                    stats.duplicates += 1
                    continue
                seen.add(row.id)
                url = ndl.iiif_url(options.iiif_base, row.pid, row.page, ndl.pct_region(*row.box), options.size)
                jobs.append(Job(row.id, label, url, row.pid, row.page, row.box, row.title, stats_key=label))
            stats.status = "interrupted"
            with tqdm(total=len(selected), initial=len(selected) - len(jobs), desc=label, unit="img",
                      disable=None) as bar:
                crawler.fetch_all(jobs, lambda job: bar.update(1))
            stats.status = "done" if not stats.failed else "done, with failures: re-run to retry them"
        if "-" in rejected:
            crawler.summary.stats("-").rejected = rejected["-"]
    return crawler.summary


def crawl_manifests(options, sources, limit=None):
    """Each canvas's image of IIIF manifests (URLs or files) into `{out}/{slug}/{n:04d}.jpg`.

    A collection's manifests are followed, at most `limit` per collection given. Documents
    that are not JSON manifests or collections, canvases without an image service and
    non-image bodies are skipped with a warning and counted (`skipped`); a manifest that
    cannot be fetched is counted in `api_errors`, in the row `-` when its folder is not known.
    """
    crawler = _Crawler(options, extended=True)
    folders = {}  # manifest id -> folder, this run
    with crawler:
        for source in sources:
            for manifest in _manifests(crawler, source, limit):
                if manifest.id in folders:
                    crawler.summary.stats(folders[manifest.id]).duplicates += len(manifest.pages)
                    continue
                folder = folders[manifest.id] = _manifest_folder(crawler, manifest, set(folders.values()))
                _crawl_manifest(crawler, manifest, folder)
    return crawler.summary


def _manifests(crawler, source, limit):
    """The manifests a source names: itself, or those its collection (and sub-collections) list."""
    queue, seen, given = [(source, 0)], set(), 0
    while queue:
        location, depth = queue.pop(0)
        if location in seen:
            continue
        seen.add(location)
        document = _document(crawler, location, first=location == source)
        if isinstance(document, iiif.Manifest):
            given += 1
            yield document
        elif isinstance(document, iiif.Collection):
            if depth >= iiif.MAX_DEPTH:
                crawler.summary.stats("-").skipped += 1
                log.warning("collection %s not followed: nested over %d deep", location, iiif.MAX_DEPTH)
                continue
            queue[0:0] = [(member, depth + 1) for _, member in document.members]
        if limit is not None and given >= limit:
            return


def _document(crawler, location, first):
    """A parsed Manifest or Collection, or None when it is skipped (counted and logged)."""
    try:
        if re.match(r"https?://", location):
            data = crawler.client.get(location, max_bytes=iiif.MAX_BYTES, accept=iiif.ACCEPT)
        else:
            data = _read_local(location)
        return iiif.parse_document(iiif.load_json(data, location), location)
    except httpclient.Unreachable as error:
        if first and not crawler.saved_any:
            raise CrawlError(f"cannot reach {location} ({error}); check the URL and the network") from None
        crawler.summary.stats("-").api_errors += 1
        log.warning("manifest %s not fetched: %s", location, error)
    except httpclient.FetchError as error:
        crawler.summary.stats("-").api_errors += 1
        log.warning("manifest %s not fetched: %s", location, error)
    except iiif.DocumentError as error:
        crawler.summary.stats("-").skipped += 1
        log.warning("manifest skipped: %s", error)
    return None


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
    with tqdm(total=len(manifest.pages), initial=len(manifest.pages) - len(jobs), desc=folder, unit="img",
              disable=None) as bar:
        crawler.fetch_all(jobs, lambda job: bar.update(1))
    stats.status = "done" if not stats.failed else "done, with failures: re-run to retry them"
