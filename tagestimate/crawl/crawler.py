"""What every crawl mode shares: the HTTP client, `{out}/manifest.csv` and the download pool that
files each image as `{out}/{folder}/{id}.jpg`.

The modes: `tagged` (one folder per tag, from NDL's API), `books` (one folder per pid),
`rebuild` (NDL-ImageLabel's index), `iiif_manifests` (one folder per manifest).

Invariants, kept across crashes and Ctrl-C:
- an image is only visible under its final name once complete (`files.write_atomic`:
  hidden temp name in the same folder, fsync, os.replace);
- a manifest row is appended (flushed and fsynced) only after its file's rename;
- on start, `Manifest.open` reconciles the two (and removes temporary files), never
  deleting an image; a run that fails before any server answered creates nothing.
An id is filed at most once, whatever the folder.
HTTP (retries, caps, deadline) is `tagestimate.httpclient`; what NDL's answers mean, `tagestimate.ndl`.
"""

import concurrent.futures
import dataclasses
import datetime
import hashlib
import logging
import os
import threading
import time

from tagestimate import files, httpclient, ndl
from tagestimate.crawl.summary import CrawlSummary
from tagestimate.manifest import CrawlError, Manifest

log = logging.getLogger(__name__)


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
    source: str = "crawled"  # the manifest's `source`: crawled (NDL's API) or rebuilt (NDL-ImageLabel)


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


class Crawler:
    """What every mode shares: the HTTP client, the manifest, the download pool."""

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
        self._warned = set()

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

    def warn_once(self, message):
        """Log `message` the first time only: NDL's random draws bring the same bad record again and again."""
        if message not in self._warned:
            self._warned.add(message)
            log.warning("%s", message)

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
                "source": job.source,
                **dict(job.extra),
            })
        except OSError as error:  # the image stays; the next start adopts it
            raise CrawlError(f"cannot write {self.manifest.path}: {error.strerror}; "
                             f"check free space and permissions of --out") from None
        return "saved", ""


class ApiCalls:
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
