"""What a crawl did, per folder, and what --from-corrections did, per tag: the tables newdataclawer.py
prints at the end."""

import dataclasses

from tagestimate.files import plural


@dataclasses.dataclass
class FolderStats:
    """What happened to one folder (a tag, a label, a pid or a manifest) in this run."""

    saved: int = 0        # new files written this run
    duplicates: int = 0   # already filed (this or an earlier run) or already tried this run
    reviewed: int = 0     # a person reviewed that image (--from-corrections): left as they decided
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
        if any(stats.reviewed for stats in self.folders.values()):  # shown only when it counts something
            columns = columns[:2] + ("reviewed",) + columns[2:]
        width = max([len(name) for name in self.folders] + [6])
        lines = [f"{'folder':<{width}}  " + "  ".join(f"{c:>10}" for c in columns) + "  status"]
        for name, stats in self.folders.items():
            values = "  ".join(f"{getattr(stats, c):>10}" for c in columns)
            lines.append(f"{name:<{width}}  {values}  {stats.status}")
        rate = self.saved / self.elapsed if self.elapsed > 0 else 0.0
        lines.append(f"{self.saved} {plural(self.saved, 'image')} saved in {self.elapsed:.1f} s ({rate:.2f} images/s)"
                     + ("; interrupted: run the same command again to resume" if self.interrupted else ""))
        return "\n".join(lines)


@dataclasses.dataclass
class ApplyReport:
    """What --from-corrections did, per tag; printed as a table."""

    tags: dict = dataclasses.field(default_factory=dict)  # tag -> {confirm, add, reject, unchanged, not applied}
    rows: int = 0
    not_applied: int = 0
    duplicates: int = 0
    interrupted: bool = False

    def count(self, tag, column, number=1):
        counts = self.tags.setdefault(tag, dict.fromkeys(("confirm", "add", "reject", "unchanged", "not applied"), 0))
        counts[column] += number

    def format(self):
        columns = ("confirm", "add", "reject", "unchanged", "not applied")
        width = max([len(tag) for tag in self.tags] + [3])
        lines = [f"{'tag':<{width}}  " + "  ".join(f"{c:>11}" for c in columns)]
        for tag in sorted(self.tags):
            lines.append(f"{tag:<{width}}  " + "  ".join(f"{self.tags[tag][c]:>11}" for c in columns))
        applied = sum(self.tags[t][c] for t in self.tags for c in columns[:3])
        unchanged = sum(counts["unchanged"] for counts in self.tags.values())
        lines.append(f"{self.rows} {plural(self.rows, 'row')}: {applied} applied, {unchanged} already as "
                     f"decided, {self.not_applied} not applied"
                     + (" (see the warnings above)" if self.not_applied else "")
                     + (f", {self.duplicates} repeated" if self.duplicates else "")
                     + ("; interrupted: run the same command again to finish" if self.interrupted else ""))
        return "\n".join(lines)
