"""Tagged mode: grow `{out}/{tag}/{id}.jpg` from NDL's randomwithfacet, one folder per tag.

A record that also carries a more specific tag than the requested one (`picture_landmark`
when `picture_outdoor` was requested) is left for that tag's folder: filed under the parent,
the trainer would read it as a negative for the child's labels.
"""

import logging

from tagestimate import ndl
from tagestimate.crawl.crawler import ApiCalls, Crawler, Job
from tagestimate.crawl.progress import Progress
from tagestimate.crawl.settings import MIN_CONFIDENCE
from tagestimate.files import plural
from tagestimate.labels import UNTAGGED_FOLDER, default_labelmap

log = logging.getLogger(__name__)

UNKNOWN_FOLDER = UNTAGGED_FOLDER  # defined in tagestimate/labels.py, which the trainer reads too


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
    crawler = Crawler(options)
    labelmap = default_labelmap()
    api = ApiCalls(crawler)
    with crawler:
        for tag in tags:
            stats = crawler.summary.stats(tag)
            count = crawler.manifest.counts.get(tag, 0)
            tried = set()
            idle = 0
            stats.status = "interrupted"
            with Progress(tag, total=per_class, initial=min(count, per_class)) as bar:
                def on_saved(job):
                    if job.folder == tag:
                        bar.update(1)

                while count < per_class:
                    if idle >= options.max_idle:
                        stats.status = f"ran dry: {idle} {plural(idle, 'call')} in a row brought nothing new"
                        log.warning("tag %s ran dry at %d %s: %d API %s in a row brought nothing new",
                                    tag, count, plural(count, "image"), idle, plural(idle, "call"))
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


def _select(raw_records, tag, wanted, min_confidence, crawler, tried, stats, labelmap):
    """The jobs worth downloading from one API answer, counting the rest."""
    jobs = []
    specific = more_specific_tags(tag, labelmap)
    for raw in raw_records:
        try:
            record = ndl.parse_record(raw)
        except ndl.RecordError as error:
            stats.rejected += 1  # every time: the count says how much of the API's answers was unusable
            crawler.warn_once(f"tag {tag}: record rejected: {error}")
            continue
        if record.id in crawler.manifest.reviewed:
            stats.reviewed += 1  # a person decided about this image (even rejected it): never filed again
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
