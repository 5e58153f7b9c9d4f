"""Book mode (--pid): every illustration NDL's API knows of a book into `{out}/{pid}/{id}.jpg`."""

import json

from tagestimate import ndl
from tagestimate.crawl.crawler import ApiCalls, Crawler, Job
from tagestimate.crawl.progress import Progress
from tagestimate.files import plural


def crawl_pids(options, pids):
    """Every illustration the API knows of each book into `{out}/{pid}/{id}.jpg`, with all NDL's tags.

    randomwithfacet filtered by f-pid only returns random samples of the book, so it is called
    until `options.max_idle` calls in a row bring nothing new.
    """
    crawler = Crawler(options, extended=True)
    api = ApiCalls(crawler)
    with crawler:
        for pid in pids:
            stats = crawler.summary.stats(pid)
            stats.status = "interrupted"
            tried, idle = set(), 0
            with Progress(pid, initial=crawler.manifest.counts.get(pid, 0)) as bar:
                while idle < options.max_idle:
                    raw_records = api.call(stats, f"pid {pid}", pid=pid)
                    if raw_records is None:
                        idle += 1
                        continue
                    before = crawler.manifest.counts.get(pid, 0)
                    crawler.fetch_all(_book_jobs(raw_records, pid, crawler, tried, stats), lambda job: bar.update(1))
                    idle = 0 if crawler.manifest.counts.get(pid, 0) > before else idle + 1
            stats.status = f"done: {idle} {plural(idle, 'call')} in a row brought nothing new"
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
            crawler.warn_once(f"pid {pid}: record rejected: {error}")
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
