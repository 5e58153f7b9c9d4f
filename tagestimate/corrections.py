"""corrections.csv: a reviewer's decisions on tags, the one file every review path writes.

Header `image,item,tag,decision,reviewer,time`:
    image     the image file's path, absolute or relative to the CSV's folder
    item      the output item the image belongs to ('' when it is not from a tagging run)
    tag       a label of the model (or an extra tag)
    decision  confirm (the tag is right), reject (it is wrong), add (a missing tag)
    reviewer  who decided (free text; '' when unknown)
    time      when, ISO 8601 (e.g. 2026-12-05T03:04:05Z)
The review page's export, `labelstudio import` and hand-made files write it;
`newdataclawer.py --from-corrections` applies it to a data set.
"""

import collections
import csv
import io
import os

from tagestimate.errors import UserError
from tagestimate.files import CsvWriter, write_atomic

HEADER = ("image", "item", "tag", "decision", "reviewer", "time")
DECISIONS = ("confirm", "reject", "add")
MAX_BYTES = 256 << 20

Correction = collections.namedtuple("Correction", HEADER)
Problem = collections.namedtuple("Problem", "line reason")  # line: the CSV line (1 is the header)


class CorrectionsError(UserError, ValueError):
    """A corrections file that cannot be read at all; the message names it and says what to do."""


def to_text(rows):
    buffer = io.StringIO()
    writer = CsvWriter(buffer)
    writer.writerow(HEADER)
    writer.writerows(tuple(row) for row in rows)
    return buffer.getvalue()


def write(path, rows):
    """Write Correction rows (or tuples in HEADER order) atomically; returns the path."""
    return write_atomic(path, to_text(rows))


def read(path):
    """(rows, problems) of a corrections file: rows [(line, Correction)] with paths made absolute.

    A row with too few or too many cells, an empty image or tag, or an unknown decision is a
    Problem, not a row; a file that is not a corrections CSV at all raises CorrectionsError.
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except OSError as error:
        raise CorrectionsError(f"cannot read corrections file {path} ({error.strerror}); check the path") from None
    if len(data) > MAX_BYTES:
        raise CorrectionsError(f"corrections file {path} is over {MAX_BYTES:,} bytes; split it")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise CorrectionsError(f"corrections file {path} is not UTF-8 text; save it as UTF-8 CSV") from None
    return parse(text, os.path.dirname(os.path.abspath(path)), path)


def parse(text, folder, source="corrections file"):
    """read()'s rows and problems for `text`, relative image paths taken from `folder`."""
    lines = csv.reader(io.StringIO(text, newline=""))
    header = next(lines, None)
    if header is None or tuple(cell.strip() for cell in header) != HEADER:
        raise CorrectionsError(f"{source} does not start with the header {','.join(HEADER)}; "
                               "export it again from the review page or `labelstudio import`")
    rows, problems = [], []
    for cells in lines:
        line = lines.line_num
        if not any(cell.strip() for cell in cells):
            continue
        reason = _problem(cells)
        if reason:
            problems.append(Problem(line, reason))
            continue
        image, item, tag, decision, reviewer, time = (cell.strip() for cell in cells)
        image = image if os.path.isabs(image) else os.path.normpath(os.path.join(folder, image))
        rows.append((line, Correction(image, item, tag, decision, reviewer, time)))
    return rows, problems


def _problem(cells):
    if len(cells) != len(HEADER):
        return f"{len(cells)} cells, expected {len(HEADER)} ({','.join(HEADER)})"
    image, _, tag, decision = (cell.strip() for cell in cells[:4])
    if not image:
        return "no image path"
    if not tag:
        return "no tag"
    if decision not in DECISIONS:
        return f"decision {decision!r} is not one of {', '.join(DECISIONS)}"
    return None


def contradictions(rows):
    """{(image, tag): lines} of image-tag pairs that a file both confirms (or adds) and rejects."""
    seen = collections.defaultdict(list)
    for line, row in rows:
        seen[(row.image, row.tag)].append((line, row.decision))
    return {pair: [line for line, _ in found] for pair, found in seen.items()
            if len({"reject" if decision == "reject" else "keep" for _, decision in found}) > 1}
