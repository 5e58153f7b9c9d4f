"""--from-corrections: a reviewer's corrections.csv applied to a data set (`{out}/{tag}/{id}.jpg`).

confirm and add put the image into `{out}/{tag}/` (an atomic copy; nothing to do when it is
there), reject moves it to `{out}/_rejected/{tag}/` (copied there when it was not in `{tag}/`),
and each decision becomes its manifest row's source `reviewed`, reviewer, decision and time.

Rules for bad input (each reported in one sentence with its line numbers):
- a file that cannot be read as a corrections CSV, or that names images of another data set:
  nothing is applied (the whole file is suspect);
- a row that cannot be used (bad cells, unknown tag, missing or undecodable image, bad time,
  or the last row of a file that ends without a line break, i.e. may be cut short): that row
  alone is not applied;
- rows that both keep (confirm/add) and reject one image's tag: none of that pair is applied;
- repeated rows for one image and tag: applied once (the last one's reviewer and time).
Everything else is applied. Applying a file again changes nothing.
"""

import csv
import dataclasses
import datetime
import functools
import hashlib
import io
import logging
import os
import re
import time

from tagestimate import corrections, files, ndl
from tagestimate.crawl.summary import ApplyReport
from tagestimate.errors import UserError
from tagestimate.labels import default_labelmap
from tagestimate.manifest import (EXTENDED_FIELDS, MANIFEST_NAME, REJECT, REJECTED_FOLDER, CrawlError, Manifest,
                                  is_rejected)

log = logging.getLogger(__name__)

KEEP, REJECT_KIND = "keep", "reject"
SAVE_EVERY = 5.0  # seconds: the manifest is rewritten this often while files move, so a kill loses little
JPEG_QUALITY = 95
MAX_IMAGE_BYTES = 64 << 20  # a reviewed image larger than this is refused, not read into memory


class CorrectionsApplyError(UserError):
    """A corrections file that cannot be applied at all; nothing was changed."""


@dataclasses.dataclass
class Action:
    """One image-tag decision to apply (the last of its rows)."""

    lines: list
    tag: str
    decision: str
    reviewer: str
    time: str
    image: str                  # the path the file names
    found: str = ""             # the file to copy or move
    name: str = ""              # its id in the data set
    row: dict = None            # the manifest row it comes from (the data set's, or a crawled book's)
    outside: bool = False       # an image from outside the data set, its name derived

    @property
    def kind(self):
        return REJECT_KIND if self.decision == REJECT else KEEP


def apply_file(path, out, labelmap=None):
    """Apply corrections file `path` to data set `out`; returns an ApplyReport (interrupted on Ctrl-C)."""
    labelmap = labelmap or default_labelmap()
    rows, problems = corrections.read(path)
    report = ApplyReport(rows=len(rows) + len(problems))
    rows = _cut_short(path, rows, problems)
    manifest = Manifest(out)
    try:
        manifest.open()
    except OSError as error:
        raise CrawlError(f"cannot use {error.filename or out} as the data set folder: {error.strerror}; "
                         f"check --out") from None
    _refuse_other_data_sets(path, rows, out, labelmap)
    actions = _plan(rows, problems, out, manifest, labelmap, report)
    for problem in sorted(problems):
        log.warning("%s line %d not applied: %s", path, problem.line, problem.reason)
    report.not_applied += len(problems)
    Applier(manifest, report, path).run(actions)
    _book_rows.cache_clear()
    return report


def _cut_short(path, rows, problems):
    """The rows without the last one when the file ends without a line break (it may be cut short)."""
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - 1))
        ends_well = size == 0 or handle.read(1) in (b"\n", b"\r")
    if ends_well or not rows or any(problem.line > rows[-1][0] for problem in problems):
        return rows
    problems.append(corrections.Problem(rows[-1][0], "the file ends without a line break, so this last row may "
                                                     "be cut short; if it is whole, end the file with a line break"))
    return rows[:-1]


# ---------------------------------------------------------------- where an image is

def _place(image, out):
    """(folder, id, rejected) when `image` is where data set `out` keeps images, else None."""
    relative = os.path.relpath(os.path.realpath(image), os.path.realpath(out))
    parts = relative.split(os.sep)
    rejected = len(parts) == 3 and parts[0] == REJECTED_FOLDER
    if rejected:
        parts = parts[1:]
    if len(parts) != 2 or parts[0] == REJECTED_FOLDER:
        return None
    stem, suffix = os.path.splitext(parts[1])
    if suffix != ".jpg" or not (ndl.valid_id(parts[0]) and ndl.valid_id(stem)):
        return None
    return parts[0], stem, rejected


def _other_data_set(image, out, labelmap):
    """The data set folder holding `image` when it is another one's `{tag}/` or `_rejected/{tag}/`, else None."""
    if _place(image, out) is not None:
        return None
    folder = os.path.dirname(os.path.abspath(image))
    root = os.path.dirname(folder)
    if os.path.basename(root) == REJECTED_FOLDER:
        root = os.path.dirname(root)
    if labelmap.resolve(os.path.basename(folder)) is None or not os.path.isfile(os.path.join(root, MANIFEST_NAME)):
        return None
    return None if os.path.realpath(root) == os.path.realpath(out) else root


def _refuse_other_data_sets(path, rows, out, labelmap):
    for line, row in rows:
        other = _other_data_set(row.image, out, labelmap)
        if other is not None:
            raise CorrectionsApplyError(
                f"{path} line {line} names {row.image}, an image of the data set {other}, not of --out {out}: "
                f"nothing applied; pass --out {other} to apply the file there")


# ---------------------------------------------------------------- planning

def _plan(rows, problems, out, manifest, labelmap, report):
    """The Actions to apply: one per image and tag, after the rules of the module docstring."""
    usable = []
    for line, row in rows:
        tag = _folder_for(row.tag, out, labelmap)
        reason = (f"tag {row.tag[:40]!r} is not a label of the default table nor a folder of {out}; correct the "
                  f"tag, or create the folder {os.path.join(out, row.tag[:40])} first for a new tag"
                  if tag is None else _time_problem(row.time))
        if reason:
            problems.append(corrections.Problem(line, reason))
            report.count(tag or row.tag[:40], "not applied")
            continue
        usable.append((line, row._replace(tag=tag)))
    keyed = [(line, row._replace(image=_identity(row, out))) for line, row in usable]
    clashes = corrections.contradictions(keyed)
    actions = {}
    for (line, key), (_, row) in zip(keyed, usable):
        if (key.image, key.tag) in clashes:
            lines = clashes[(key.image, key.tag)]
            problems.append(corrections.Problem(line, (
                f"{files.printable_path(row.image)} is both kept and rejected for tag {row.tag} by {_lines(lines)}, "
                f"so none of them is applied; keep one decision")))
            report.count(row.tag, "not applied")
            continue
        action = actions.get((key.image, key.tag))
        if action is not None:
            report.duplicates += 1  # a repeated row: the pair is applied once, with the last row's values
            action.lines.append(line)
            action.decision, action.reviewer, action.time = row.decision, row.reviewer, row.time
            continue
        actions[(key.image, key.tag)] = Action([line], row.tag, row.decision, row.reviewer, row.time, row.image)
    by_id = {}
    for row in manifest.rows:
        by_id.setdefault(row["id"], []).append(row)
    return [action for action in actions.values() if _locate(action, out, manifest, by_id, problems, report)]


def _lines(lines):
    return ("line " if len(lines) == 1 else "lines ") + ", ".join(str(line) for line in sorted(lines))


def _folder_for(tag, out, labelmap):
    """The folder a tag's images go into, or None for a tag neither the label table nor `out` knows."""
    if not ndl.valid_id(tag) or tag == REJECTED_FOLDER:
        return None
    if os.path.isdir(os.path.join(out, tag)):
        return tag
    return labelmap.resolve(tag)


def _time_problem(text):
    if not text:
        return None
    try:
        datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return f"time {text[:40]!r} is not an ISO 8601 time such as 2026-12-05T03:04:05Z"
    return None


def _identity(row, out):
    """What makes two rows name the same image: its place in the data set, else its NDL id, else its path."""
    place = _place(row.image, out)
    if place is not None:
        return f"{place[0]}/{place[1]}"
    stem = os.path.splitext(os.path.basename(row.image))[0]
    return f"ndl:{stem}" if _ndl_name(stem) else os.path.realpath(row.image)


def _ndl_name(stem):
    return ndl.valid_id(stem) and files.NDL_NAME.fullmatch(stem) is not None


def _locate(action, out, manifest, by_id, problems, report):
    """Fill in the file an action copies or moves and its id; False (a problem noted) when there is none."""
    place = _place(action.image, out)
    stem = os.path.splitext(os.path.basename(action.image))[0]
    if place is not None or _ndl_name(stem):
        # An image the data set holds is taken from where the data set has it now (a rerun finds it moved).
        image_id = place[1] if place else stem
        rows = sorted(by_id.get(image_id, ()),
                      key=lambda row: (place is None or row["folder"] != place[0], is_rejected(row)))
        if rows:
            action.name, action.row, action.found = image_id, rows[0], manifest.row_path(rows[0])
            return True
    if not os.path.isfile(action.image):
        return _problem(action, problems, report, f"the image {files.printable_path(action.image)} does not exist "
                                                  "(moved or deleted?); check the path")
    action.found, action.name, action.outside = action.image, _derived_name(action.image), True
    action.row = _crawled_row(action.image)
    return True


def _crawled_row(image):
    """The row of `image` in the manifest beside its folder (a book fetched with --pid into input/), or None:
    its pid, page, box, title and URL are worth keeping."""
    folder = os.path.dirname(os.path.abspath(image))
    row = _book_rows(os.path.join(os.path.dirname(folder), MANIFEST_NAME)).get(
        (os.path.basename(folder), os.path.splitext(os.path.basename(image))[0]))
    return {field: row.get(field) or "" for field in EXTENDED_FIELDS} if row else None


@functools.lru_cache(maxsize=8)
def _book_rows(path):
    """{(folder, id): row} of a crawl's manifest.csv, read once per run; {} when there is none or it is unreadable."""
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            return {(row.get("folder"), row.get("id")): row for row in csv.DictReader(handle)}
    except (OSError, UnicodeDecodeError, csv.Error):
        return {}


def _problem(action, problems, report, reason):
    for line in action.lines:
        problems.append(corrections.Problem(line, reason))
    report.count(action.tag, "not applied", len(action.lines))
    return False


def _derived_name(path):
    """A safe id for an image from outside the data set: its NDL name, else its folder and file name."""
    stem = os.path.splitext(os.path.basename(path))[0]
    if _ndl_name(stem):
        return stem
    item = os.path.basename(os.path.dirname(os.path.abspath(path)))
    base = f"{item}_{stem}"  # the item first: the trainer groups images by the name up to the first '_'
    safe = re.sub(r"[^0-9A-Za-z_-]+", "-", base).strip("-") or "image"
    if safe != base or len(safe) > 64:  # shortened or changed: a hash keeps different names apart
        safe = safe[:47].rstrip("-_") + "-" + hashlib.sha256(base.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return safe


# ---------------------------------------------------------------- applying

class Unreadable(Exception):
    """An image that a correction names but that cannot be read as an image."""


def _jpeg_bytes(path):
    """The image as JPEG bytes, as the crawler stores it: a JPEG is copied as it is, anything else re-encoded."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_IMAGE_BYTES + 1)
    except OSError as error:
        raise Unreadable(f"cannot read {files.printable_path(path)} ({error.strerror}); check the file") from None
    if len(data) > MAX_IMAGE_BYTES:
        raise Unreadable(f"{files.printable_path(path)} is over {MAX_IMAGE_BYTES >> 20} MB; scale it down")
    try:
        ndl.check_jpeg(data)
        return data
    except ndl.NotAnImage:
        pass
    from tagestimate.images import open_image  # lazy: it loads OpenCV, which --help must not wait for

    try:
        with open_image(io.BytesIO(data), path) as image:
            image.load()
            buffer = io.BytesIO()
            image.convert("RGB").save(buffer, "JPEG", quality=JPEG_QUALITY)
    except Exception as error:  # Pillow raises many types for bad files; all mean "not an image"
        raise Unreadable(f"{files.printable_path(path)} is not an image that can be read "
                         f"({type(error).__name__}); check the file") from None
    return buffer.getvalue()


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


class Applier:
    """Carries out the Actions: file operations first, each atomic, then its row; the manifest is
    rewritten every SAVE_EVERY seconds and at the end (or on Ctrl-C)."""

    def __init__(self, manifest, report, source):
        self.source = source  # the corrections file, named in warnings
        self.manifest = manifest
        self.report = report
        self.rows = {_key(row): row for row in manifest.rows}
        self.changed = False

    def run(self, actions):
        saved = time.monotonic()
        try:
            # Copies before moves: a row that adds a tag to an image another row rejects copies it first.
            for action in sorted(actions, key=lambda a: a.kind == REJECT_KIND):
                self._apply(action)
                if self.changed and time.monotonic() - saved > SAVE_EVERY:
                    self._save()
                    saved = time.monotonic()
        except KeyboardInterrupt:
            self.report.interrupted = True
        finally:
            self._save()

    def _save(self):
        if self.changed:
            self.manifest.replace(list(self.rows.values()))
            self.changed = False
        else:
            self.manifest.commit()  # the reconciliation, if it changed something

    def _apply(self, action):
        try:
            outcome = self._keep(action) if action.kind == KEEP else self._reject(action)
        except Unreadable as error:
            for line in action.lines:
                log.warning("%s line %d not applied: %s", self.source, line, error)
            self.report.not_applied += len(action.lines)
            self.report.count(action.tag, "not applied", len(action.lines))
            return
        except OSError as error:
            raise CrawlError(f"cannot write into {self.manifest.out}: {error.strerror} ({error.filename}); "
                             "check free space and permissions of --out, then apply the file again") from None
        self.report.count(action.tag, outcome)

    def _name_for(self, action):
        """A derived name that another image already has (other bytes) gets the bytes' hash appended."""
        if not action.outside or _ndl_name(action.name):
            return
        data = _jpeg_bytes(action.found)
        digest = hashlib.sha256(data).hexdigest()
        for key in ((action.tag, action.name, False), (action.tag, action.name, True)):
            row = self.rows.get(key)
            if row is not None and row.get("sha256") not in ("", digest):
                action.name = action.name[:47].rstrip("-_") + "-" + digest[:16]
                return

    def _keep(self, action):
        self._name_for(action)
        live, rejected = (action.tag, action.name, False), (action.tag, action.name, True)
        if live in self.rows:
            return self._record(live, action)
        if rejected in self.rows:  # rejected before, kept now: back into its folder
            os.replace(self.manifest.row_path(self.rows[rejected]),
                       self.manifest.image_path(action.tag, action.name))
            row = self.rows.pop(rejected)
            self.rows[live] = row
            row["decision"] = ""
            return self._record(live, action)
        data = _jpeg_bytes(action.found)
        path = self.manifest.image_path(action.tag, action.name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        files.write_atomic(path, data)
        self.rows[live] = self._new_row(action, data)
        return self._record(live, action)

    def _reject(self, action):
        self._name_for(action)
        live, rejected = (action.tag, action.name, False), (action.tag, action.name, True)
        target = self.manifest.image_path(action.tag, action.name, rejected=True)
        if rejected in self.rows and live not in self.rows:
            return self._record(rejected, action)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if live in self.rows:  # the usual case: out of {tag}/ into _rejected/{tag}/, never deleted
            os.replace(self.manifest.image_path(action.tag, action.name), target)
            row = self.rows.pop(live)
            self.rows.pop(rejected, None)
        else:
            data = _jpeg_bytes(action.found)
            files.write_atomic(target, data)
            row = self._new_row(action, data)
        row["decision"] = REJECT
        self.rows[rejected] = row
        return self._record(rejected, action)

    def _new_row(self, action, data):
        """A manifest row for a copy: the data set's row it comes from (without its confidence for
        another tag), else what the image's name says."""
        base = dict(action.row) if action.row else {field: "" for field in EXTENDED_FIELDS}
        parts = files.NDL_NAME.fullmatch(action.name)
        if not action.row and parts:
            base.update(pid=parts["pid"], page=str(int(parts["page"])))
        base.update(id=action.name, folder=action.tag, confidence="", tags="", decision="",
                    sha256=hashlib.sha256(data).hexdigest(), bytes=str(len(data)))
        self.changed = True
        return base

    def _record(self, key, action):
        """Write the decision into the row; 'unchanged' when it says so already."""
        row = self.rows[key]
        decision = REJECT if key[2] else action.decision
        same = (row.get("source") == "reviewed" and row.get("decision") == decision
                and row.get("reviewer", "") == action.reviewer and (not action.time or row.get("time") == action.time))
        if same:
            return "unchanged"
        row.update(source="reviewed", reviewer=action.reviewer, decision=decision, time=action.time or _now())
        self.changed = True
        return decision


def _key(row):
    return row["folder"], row["id"], is_rejected(row)
