"""Rebuild mode (--from-metadata): NDL-ImageLabel's crops, from its index, into one folder per label."""

import csv
import dataclasses
import logging
import os

from tagestimate import ndl
from tagestimate.crawl.crawler import Crawler, Job
from tagestimate.crawl.progress import Progress
from tagestimate.manifest import CrawlError

log = logging.getLogger(__name__)

INDEX_COLUMNS = 6  # file name, label, Windows path, title, item URL, IIIF URL (ndl-api.md §3)


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
    crawler = Crawler(options)
    with crawler:
        for label in present:
            stats = crawler.summary.stats(label)
            stats.rejected = rejected.get(label, 0)
            selected = [row for row in rows if row.label == label][:limit]
            jobs, seen = [], set()
            for row in selected:
                if row.id in crawler.manifest.reviewed:
                    stats.reviewed += 1  # a person decided about this image: left as they decided
                    continue
                if row.id in crawler.manifest.ids or row.id in seen:
                    stats.duplicates += 1
                    continue
                seen.add(row.id)
                url = ndl.iiif_url(options.iiif_base, row.pid, row.page, ndl.pct_region(*row.box), options.size)
                jobs.append(Job(row.id, label, url, row.pid, row.page, row.box, row.title, stats_key=label,
                                source="rebuilt"))
            stats.status = "interrupted"
            with Progress(label, total=len(selected), initial=len(selected) - len(jobs)) as bar:
                crawler.fetch_all(jobs, lambda job: bar.update(1))
            stats.status = "done" if not stats.failed else "done, with failures: re-run to retry them"
        if "-" in rejected:
            crawler.summary.stats("-").rejected = rejected["-"]
    return crawler.summary
