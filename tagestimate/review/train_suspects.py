"""The suspect labels of a training run (label_issues.csv) in its report: one card per image,
worst first, with its thumbnail, folder tag, the labels the model disputes and where the image
came from. The first PAGE_SIZE cards sit in report.html; the rest on report_files/suspects-K.html.

Each card carries the markup review.js (the review helper) attaches to: class="review-card",
data-review-image (the image's absolute path), data-review-item ("" for training images), one
data-review-tag element per tag shown; each page has the labels once as JSON (id="review-labels").
"""

import csv
import os

from tagestimate.files import printable_path, write_atomic
from tagestimate.review import pages
from tagestimate.review.thumbs import make_thumbnail, safe_name, write_jpeg
from tagestimate.train.label_issues import parse_labels
from tagestimate.train.settings import LABEL_ISSUES

FILES = "report_files"
PAGE_SIZE = 60
SHOWN = 600  # cards (and thumbnails) at most; label_issues.csv holds every suspect
REVIEW_JS = "review.js"


def review_scripts():
    """("review.js",) when the review helper's script is there; () on a tree without it."""
    return (REVIEW_JS,) if os.path.exists(os.path.join(pages.STATIC, REVIEW_JS)) else ()


def _folder_labels(labelmap):
    """folder -> the labels it trains, from a label map (a dict, model.json's) or the built-in one."""
    from tagestimate import labels as label_tables

    table = label_tables.from_dict(dict(labelmap)) if labelmap else label_tables.default_labelmap()

    def resolve(folder):
        try:
            return [label for label, on in zip(table.labels, table.vector(folder)) if on]
        except label_tables.LabelMapError:
            return []
    return resolve


def _thumb(out, path):
    """A thumbnail of `path` under report_files/suspects/ (relative to `out`), or None if unreadable."""
    target = os.path.join(out, FILES, "suspects", safe_name(os.path.abspath(path)) + ".jpg")
    try:
        write_jpeg(target, make_thumbnail(path))
    except Exception:  # noqa: BLE001 (moved or deleted since training: the card says so)
        return None
    return os.path.relpath(target, out)


def _card(out, row, folder_labels):
    missing, wrong = parse_labels(row.get("suspected_missing")), parse_labels(row.get("suspected_wrong"))
    disputed = {label for label, _ in wrong}
    given = [{"label": label, "disputed": label in disputed,
              "probability": dict(wrong).get(label)} for label in folder_labels(row.get("folder", ""))]
    given += [{"label": label, "disputed": True, "probability": p} for label, p in wrong
              if label not in {g["label"] for g in given}]
    try:
        score = float(row.get("score") or "nan")
    except ValueError:
        score = float("nan")
    path = row.get("path") or ""
    return {"image": path, "name": printable_path(path), "folder": row.get("folder", ""), "given": given,
            "missing": [{"label": label, "probability": p} for label, p in missing], "score": score,
            "source": row.get("source") or "unknown", "confidence": row.get("api_confidence") or "",
            "reviewer": row.get("reviewer") or "", "thumb": _thumb(out, path) if path else None}


def read(out, summary, labelmap):
    """{"cards", "summary", "pages", "total"} for the report from `out`/label_issues.csv; None
    without one. Writes the thumbnails and the pages after the first (report_files/suspects-K.html)."""
    path = os.path.join(out, LABEL_ISSUES)
    if not os.path.isfile(path):
        return None
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    resolve = _folder_labels(labelmap)
    cards = [_card(out, row, resolve) for row in rows[:SHOWN]]
    for card in cards:
        card["thumb_here"] = card["thumb"]  # report.html sits in `out`; write_pages re-points its own
    chunks = [cards[k:k + PAGE_SIZE] for k in range(0, len(cards), PAGE_SIZE)] or [[]]
    names = [None] + [f"suspects-{k}.html" for k in range(2, len(chunks) + 1)]
    return {"cards": chunks[0], "chunks": chunks, "names": names, "total": len(rows), "shown": len(cards),
            "summary": summary or {}, "file": LABEL_ISSUES}


def partial_note(summary):
    """"validation split only: N of M images checked" on a plain run; None after --folds."""
    if summary and summary.get("scope") == "validation split":
        return f"validation split only: {summary.get('checked')} of {summary.get('images')} images checked"
    return None


def write_pages(out, suspects, labels):
    """report_files/suspects-K.html for K >= 2: the same cards, PAGE_SIZE per page, linked in order."""
    files = os.path.join(out, FILES)
    for number, (name, chunk) in enumerate(zip(suspects["names"], suspects["chunks"]), 1):
        if name is None:
            continue
        for card in chunk:  # thumbnails are relative to `out`; these pages sit in report_files/
            card["thumb_here"] = card["thumb"] and os.path.relpath(os.path.join(out, card["thumb"]), files)
        page = pages.render("training_suspects_page.html", title="Suspect labels", styles=pages.TRAINING_STYLES,
                            body_class="training", body_data=(("review-report", report_key(out)),),
                            scripts=review_scripts(), suspects=suspects, cards=chunk, number=number,
                            labels=labels, partial=partial_note(suspects["summary"]),
                            here_prefix="../", previous=_link(suspects["names"], number - 1),
                            following=_link(suspects["names"], number + 1))
        write_atomic(os.path.join(files, name), page)


def _link(names, number):
    """The href (from report_files/) of page `number` (1-based), or None past either end."""
    if number < 1 or number > len(names):
        return None
    return f"../{pages.href('report.html')}" if number == 1 else names[number - 1]


def section(out, suspects, labels):
    """The context report.html's suspects section needs (page 1), after writing the other pages."""
    if suspects is None:
        return {"suspects": None}
    write_pages(out, suspects, labels)
    following = f"{FILES}/{suspects['names'][1]}" if len(suspects["names"]) > 1 else None
    return {"suspects": suspects, "cards": suspects["cards"], "labels": labels, "number": 1, "previous": None,
            "following": following, "here_prefix": "", "partial": partial_note(suspects["summary"]),
            "scripts": review_scripts(), "body_data": (("review-report", report_key(out)),)}


def report_key(out):
    """One storage key for every page of a run's report, so review.js exports all its decisions."""
    return printable_path(os.path.abspath(out))
