"""`{out}/manifest.csv`, the crawl's record of every saved image, and its reconciliation with the folders.

One row per `{out}/{folder}/{id}.jpg` (columns `MANIFEST_FIELDS`), appended with flush and
fsync only after the image's rename. `Manifest.open` reconciles after any crash or kill:
rows whose file is missing (or torn, or repeated) are dropped, `{id}.jpg` files without a
row are adopted with the provenance their name gives (never deleted), and leftover
temporary files (`files.TEMP_SUFFIX`) are removed. The reconciled file is written with the
first new row or by `commit`, so a run that fails before any server answered creates nothing.
"""

import csv
import datetime
import errno
import io
import logging
import os
import threading

from tagestimate import files, ndl
from tagestimate.errors import UserError
from tagestimate.files import TEMP_SUFFIX  # files.write_atomic's temporary names end with it

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.csv"
# The columns of manifests written before provenance was recorded; still read (and kept as they
# are until a row that needs the new columns is added).
LEGACY_FIELDS = ("id", "pid", "page", "x", "y", "w", "h", "title", "folder", "confidence",
                 "source_url", "sha256", "bytes", "time")
# Where a row's image came from and what a person decided about it (`time` is then the decision's):
#   source    crawled (NDL's API, machine-made tags) | rebuilt (NDL-ImageLabel, human-labelled)
#             | reviewed (a person's decision, applied by --from-corrections); '' when unknown
#   reviewer  who decided ('' for crawled and rebuilt rows)
#   decision  confirm | add (the image is in {folder}/) | reject (it is in _rejected/{folder}/)
PROVENANCE_FIELDS = ("source", "reviewer", "decision")
MANIFEST_FIELDS = LEGACY_FIELDS + PROVENANCE_FIELDS
# Written by the book (--pid) and IIIF (--iiif-manifest) modes after the columns above: all of
# NDL's tags with their confidences (JSON), and where a page came from in a IIIF manifest.
EXTRA_FIELDS = ("tags", "manifest", "canvas", "label", "service")
EXTENDED_FIELDS = MANIFEST_FIELDS + EXTRA_FIELDS
# Every header a manifest may have -> (has EXTRA_FIELDS, has PROVENANCE_FIELDS).
LAYOUTS = {LEGACY_FIELDS: (False, False), LEGACY_FIELDS + EXTRA_FIELDS: (True, False),
           MANIFEST_FIELDS: (False, True), EXTENDED_FIELDS: (True, True)}
SOURCES = ("crawled", "rebuilt", "reviewed")
REJECT = "reject"
REJECTED_FOLDER = "_rejected"  # {out}/_rejected/{tag}/{id}.jpg: images a reviewer took out of {tag}/
IMAGE_SUFFIX = ".jpg"


def layout(extended, provenance):
    """The header for a manifest with or without EXTRA_FIELDS and PROVENANCE_FIELDS."""
    return next(fields for fields, kind in LAYOUTS.items() if kind == (extended, provenance))


def source_of(row):
    """crawled, rebuilt, reviewed or '' for a manifest row (a dict), old rows without `source` included.

    A row without a source is `crawled` when it has NDL's confidence or tags (only the crawl
    writes those), else '' (adopted files, older rebuilds: not known).
    """
    source = (row.get("source") or "").strip()
    if source in SOURCES:
        return source
    if (row.get("confidence") or "").strip() or (row.get("tags") or "").strip():
        return "crawled"
    return ""


def is_rejected(row):
    """True when a row's image was rejected: it lives in `_rejected/{folder}/`, not in `{folder}/`."""
    return (row.get("decision") or "").strip() == REJECT


class CrawlError(UserError):
    """A fatal problem of a crawl (its manifest included), stated in one sentence that names what to fix."""


class Manifest:
    """`{out}/manifest.csv`: one row per saved image, appended with fsync, thread-safe."""

    def __init__(self, out, extended=False):
        self.out = out
        self.path = os.path.join(out, MANIFEST_NAME)
        # The columns written: a new file gets MANIFEST_FIELDS (EXTENDED_FIELDS when asked for);
        # an existing file keeps its own, widened only when a row needs columns it lacks.
        self.fields = EXTENDED_FIELDS if extended else MANIFEST_FIELDS
        self.rows = []    # every row, in file order (what a rewrite writes)
        self.ids = set()  # every id, rejected and reviewed ones included: the crawl never files them again
        self.keys = set()  # (folder, id) of images in {folder}/: the modes whose ids repeat across folders dedupe by these
        self.rejected = set()  # (folder, id) of images in _rejected/{folder}/
        self.reviewed = set()  # ids of rows a person reviewed (source `reviewed`)
        self.origins = {}  # folder -> the IIIF manifest id its first row names, for folders fetched from one
        self.counts = {}  # folder -> rows of images in {folder}/ (rejected ones not counted)
        self._lock = threading.Lock()
        self._handle = None
        self._writer = None
        self._pending = None  # reconciled rows not yet written, or None when the file is right

    def image_path(self, folder, image_id, rejected=False):
        """`{out}/{folder}/{id}.jpg` (`{out}/_rejected/{folder}/{id}.jpg` when rejected); ValueError for
        names that could leave `out`."""
        if not (ndl.valid_id(folder) and ndl.valid_id(image_id)):
            raise ValueError(f"unsafe folder or id: {folder!r}, {image_id!r}")
        if rejected:
            return os.path.join(self.out, REJECTED_FOLDER, folder, image_id + IMAGE_SUFFIX)
        return os.path.join(self.out, folder, image_id + IMAGE_SUFFIX)

    def row_path(self, row):
        """Where a row's image is: `{folder}/{id}.jpg`, or under `_rejected/` for a rejected one."""
        return self.image_path(row["folder"], row["id"], is_rejected(row))

    def open(self):
        """Reconcile manifest and folders after any crash or kill, in memory; create nothing yet.

        The reconciled manifest is written by `commit`, or with the first new row, so a run
        that stops before any server answered leaves no new files behind.
        """
        self._check_writable()
        if not os.path.isdir(self.out):
            self._pending = []
            return
        removed = self._remove_temp_files()
        rows, dropped, needs_rewrite = self._read_rows()
        kept, keys, moved = [], set(), {}
        for row in rows:
            key = _key(row)
            if key in keys or not os.path.isfile(self.row_path(row)):
                dropped += 1
                if key not in keys and not key[2]:
                    moved[key[:2]] = row  # a crash between a reject's move and the manifest's rewrite
                continue
            keys.add(key)
            kept.append(row)
        adopted = [self._adopt(folder, image_id, rejected, moved.get((folder, image_id)))
                   for folder, image_id, rejected in self._scan_files() if (folder, image_id, rejected) not in keys]
        kept.extend(adopted)
        if any(row.get("decision") for row in adopted):
            self.fields = layout(self._extended(), True)
        if dropped or adopted or needs_rewrite:
            self._pending = kept
        for row in kept:
            self._note(row)
        if dropped or adopted or removed:
            log.info("reconciled %s: dropped %d %s (file missing, torn or repeated), adopted %d %s "
                     "it lacked, removed %d temporary %s", self.path, dropped, files.plural(dropped, "row"),
                     len(adopted), files.plural(len(adopted), "file"), removed, files.plural(removed, "file"))

    def _extended(self):
        return LAYOUTS[self.fields][0]

    def _check_writable(self):
        """OSError now, before any download, if `out` (or the folder that will hold it) cannot be written."""
        existing = os.path.abspath(self.out)
        while not os.path.exists(existing):
            existing = os.path.dirname(existing)
        if not os.path.isdir(existing):
            raise NotADirectoryError(errno.ENOTDIR, "not a folder", existing)
        if not os.access(existing, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, "no permission to write there", existing)

    def commit(self):
        """Write the reconciled manifest, unless that would only put a bare header into a new folder."""
        with self._lock:
            if self._pending or (self._pending is not None and os.path.exists(self.path)):
                self._write_pending()

    def _write_pending(self):
        if self._pending is not None:
            os.makedirs(self.out, exist_ok=True)
            self._rewrite(self._pending)
            self._pending = None

    def _remove_temp_files(self):
        removed = 0
        for directory in [self.out] + [entry.path for entry in self._subfolders()] \
                + [entry.path for entry in self._subfolders(REJECTED_FOLDER)]:
            for entry in os.scandir(directory):
                if entry.name.endswith(TEMP_SUFFIX) and entry.is_file(follow_symlinks=False):
                    os.unlink(entry.path)
                    removed += 1
        return removed

    def _subfolders(self, under=None):
        """The tag folders of `out` (`_rejected` left out), or of `out/_rejected` when `under` names it."""
        top = os.path.join(self.out, under) if under else self.out
        if under and not (os.path.isdir(top) and not os.path.islink(top)):
            return []
        return sorted((entry for entry in os.scandir(top)
                       if entry.is_dir(follow_symlinks=False) and ndl.valid_id(entry.name)
                       and entry.name != REJECTED_FOLDER),
                      key=lambda entry: entry.name)

    def _scan_files(self):
        """(folder, id, rejected) of every `{folder}/{id}.jpg`, then of every `_rejected/{folder}/{id}.jpg`."""
        for rejected in (False, True):
            for folder in self._subfolders(REJECTED_FOLDER if rejected else None):
                for entry in sorted(os.scandir(folder.path), key=lambda e: e.name):
                    stem, suffix = os.path.splitext(entry.name)
                    if suffix == IMAGE_SUFFIX and ndl.valid_id(stem) and entry.is_file(follow_symlinks=False):
                        yield folder.name, stem, rejected

    def _read_rows(self):
        """(valid rows, unusable rows, whether the file must be rewritten)."""
        try:
            with open(self.path, "rb") as handle:
                raw = handle.read()
        except FileNotFoundError:
            return [], 0, True
        text = raw.decode("utf-8", errors="replace")
        reader = csv.DictReader(io.StringIO(text, newline=""), restkey="_extra")
        if reader.fieldnames is None:
            return [], 0, True
        header = tuple(reader.fieldnames)
        if header not in LAYOUTS:
            raise CrawlError(f"{self.path} does not have the manifest columns {','.join(LEGACY_FIELDS)}; "
                             f"move it away or choose another --out")
        extended, provenance = LAYOUTS[header]
        # A mode that writes EXTRA_FIELDS widens the file now; PROVENANCE_FIELDS wait for a row that has them.
        self.fields = layout(extended or self._extended(), provenance)
        widen = self.fields != header
        rows, bad = [], 0
        for row in reader:
            if "_extra" in row or any(row[field] is None for field in header) \
                    or not (ndl.valid_id(row["folder"]) and ndl.valid_id(row["id"])):
                bad += 1  # e.g. a line torn by a crash
                continue
            rows.append(row)
        # Without a final newline the next append would glue onto the last line.
        return rows, bad, widen or not raw.endswith(b"\n")

    def _adopt(self, folder, image_id, rejected=False, moved=None):
        """A row for a file the manifest lacks: a rejected one keeps the row it had before its move."""
        path = self.image_path(folder, image_id, rejected)
        if rejected and moved is not None:
            return dict(moved, source="reviewed", decision=REJECT)
        parts = files.NDL_NAME.fullmatch(image_id)
        stat = os.stat(path)
        return {field: "" for field in EXTENDED_FIELDS} | {
            "id": image_id, "folder": folder,
            "pid": parts["pid"] if parts else "", "page": str(int(parts["page"])) if parts else "",
            "sha256": files.sha256_file(path), "bytes": str(stat.st_size),
            "time": datetime.datetime.fromtimestamp(stat.st_mtime, datetime.timezone.utc).isoformat(timespec="seconds"),
        } | ({"source": "reviewed", "decision": REJECT} if rejected else {})

    def _rewrite(self, rows):
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=self.fields)
        writer.writeheader()
        writer.writerows({field: row.get(field, "") for field in self.fields} for row in rows)
        files.write_atomic(self.path, text.getvalue())

    def append(self, row):
        """Record one saved image; durable when this returns."""
        with self._lock:
            if self._handle is None:
                if not LAYOUTS[self.fields][1]:  # a file from before provenance: add the columns first
                    self.fields = layout(self._extended(), True)
                    if self._pending is None and os.path.exists(self.path):
                        self._pending = list(self.rows)
                self._write_pending()
                self._handle = open(self.path, "a", newline="", encoding="utf-8")
                self._writer = csv.DictWriter(self._handle, fieldnames=self.fields, extrasaction="ignore")
            self._writer.writerow(row)
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._note(row)

    def replace(self, rows):
        """Make the manifest hold exactly `rows` (one atomic rewrite, with the provenance columns)."""
        with self._lock:
            self.close()
            self.fields = layout(self._extended(), True)
            os.makedirs(self.out, exist_ok=True)
            self._rewrite(rows)
            self._pending = None
            self._reset()
            for row in rows:
                self._note(row)

    def _reset(self):
        self.rows, self.ids, self.keys, self.rejected, self.reviewed = [], set(), set(), set(), set()
        self.origins, self.counts = {}, {}

    def _note(self, row):
        self.rows.append(row)
        self.ids.add(row["id"])
        if source_of(row) == "reviewed":
            self.reviewed.add(row["id"])
        if is_rejected(row):
            self.rejected.add((row["folder"], row["id"]))
            return
        self.keys.add((row["folder"], row["id"]))
        self.counts[row["folder"]] = self.counts.get(row["folder"], 0) + 1
        if row.get("manifest"):
            self.origins.setdefault(row["folder"], row["manifest"])

    def close(self):
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def _key(row):
    """(folder, id, rejected): a rejected image and one in its folder are different rows."""
    return row["folder"], row["id"], is_rejected(row)
