"""Suspect labels: the training images whose folder tag the model disputes, worst first.

Confident learning (Northcutt et al. 2021) one label at a time, as cleanlab's multi-label
`find_label_issues` does (one-vs-rest), in a few lines of NumPy: label j's confidence
threshold is the mean probability the model gives j on the images whose folder gives j (and
the mean of 1 - p on those whose folder does not). An image is suspect when the model is more
confident than that of a label its folder does not give, or against one it
does. Suspects are ranked by their labels' self-confidences (p where the folder gives the label,
1 - p where it does not), averaged with the worst weighing most (an exponential moving
average, alpha 0.8, as cleanlab ranks): score = 1 - that, so 1 is the worst. The measured comparison
with cleanlab is in docs/training.md ("Suspect labels").

The probabilities must come from a model that never trained on the image: the out-of-fold
ones of --folds, or the validation split of a plain run (then only that split is checked).
label_issues.csv is written atomically; no TensorFlow here.
"""

import csv
import io
import json
import logging
import os

import numpy as np

from tagestimate.files import write_atomic
from tagestimate.train.settings import LABEL_ISSUES

log = logging.getLogger(__name__)

COLUMNS = ("path", "folder", "suspected_missing", "suspected_wrong", "score", "source", "api_confidence",
           "reviewer", "scope")
EMA_ALPHA = 0.8  # cleanlab's default: the worst label weighs 0.8, the next 0.16, ...
OUT_OF_FOLD, VALIDATION = "out-of-fold", "validation split"


def confident_thresholds(targets, probabilities):
    """(positive, negative) per-label thresholds: mean p over the folder's positives, mean 1 - p
    over its negatives; a label with no positives (or negatives) gets 1.0 there (never confident)."""
    given = np.asarray(targets) > 0.5
    p = np.asarray(probabilities, dtype=np.float64)
    positives, negatives = given.sum(axis=0), (~given).sum(axis=0)
    positive = np.where(positives > 0, (p * given).sum(axis=0) / np.maximum(positives, 1), 1.0)
    negative = np.where(negatives > 0, ((1 - p) * ~given).sum(axis=0) / np.maximum(negatives, 1), 1.0)
    return positive, negative


def quality(self_confidence, alpha=EMA_ALPHA):
    """Each row's label quality: the exponential moving average of its labels' self-confidences
    sorted from best to worst, so the worst label weighs most (cleanlab's default aggregation)."""
    ordered = -np.sort(-self_confidence, axis=1)
    average = ordered[:, 0]
    for column in ordered.T[1:]:
        average = alpha * column + (1 - alpha) * average
    return average


def find_issues(targets, probabilities):
    """(suspect row indices worst first, scores of every row, missing mask, wrong mask).

    missing[i, j]: the model is confident of label j, which image i's folder does not give;
    wrong[i, j]: the folder gives label j and the model is confident it is absent.
    """
    given = np.asarray(targets) > 0.5
    p = np.asarray(probabilities, dtype=np.float64)
    if not len(p):
        empty = np.zeros(given.shape, dtype=bool)
        return np.zeros(0, dtype=int), np.zeros(0), empty, empty
    positive, negative = confident_thresholds(given, p)
    # Confidence 0.5 is no confidence either way, whatever the class means are.
    missing = ~given & (p > np.maximum(positive, 0.5))
    wrong = given & ((1 - p) > np.maximum(negative, 0.5))
    scores = 1 - quality(np.where(given, p, 1 - p))
    suspects = np.flatnonzero((missing | wrong).any(axis=1))
    order = suspects[np.lexsort((suspects, -scores[suspects]))]  # worst first; ties by row
    return order, scores, missing, wrong


def _labels_text(row, mask, probabilities, labels):
    """'{"label": 0.93, "other": 0.61}': the flagged labels of one row with their probabilities, most
    confident first, as JSON (any character a label map allows survives); "" when none."""
    chosen = sorted(np.flatnonzero(mask[row]), key=lambda j: -abs(probabilities[row, j] - 0.5))
    if not chosen:
        return ""
    return json.dumps({labels[j]: round(float(probabilities[row, j]), 3) for j in chosen}, ensure_ascii=False)


def issue_rows(paths, folders, targets, probabilities, labels, provenance, scope):
    """label_issues.csv's rows (dicts of COLUMNS), worst first. paths: absolute image paths;
    provenance: {path: Provenance} (train.provenance.lookup)."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    order, scores, missing, wrong = find_issues(targets, probabilities)
    rows = []
    for i in order:
        origin = provenance[paths[i]]
        rows.append({"path": paths[i], "folder": folders[i],
                     "suspected_missing": _labels_text(i, missing, probabilities, labels),
                     "suspected_wrong": _labels_text(i, wrong, probabilities, labels),
                     "score": f"{scores[i]:.4f}", "source": origin.source,
                     "api_confidence": origin.confidence, "reviewer": origin.reviewer, "scope": scope})
    return rows


def write_issues(path, rows):
    """label_issues.csv (header COLUMNS even when no image is suspect), atomically."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    return write_atomic(path, text.getvalue())


def summary(rows, checked, images, scope):
    """The report.json / cv_report.json entry: what was checked and how many are suspect."""
    return {"file": LABEL_ISSUES, "scope": scope, "checked": int(checked), "images": int(images),
            "suspects": len(rows), "method": "confident learning, one label at a time (score 1 = worst)"}


def parse_labels(text):
    """[(label, probability)] from a suspected_* cell (JSON object); [] for a blank or damaged cell."""
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return []
    if not isinstance(value, dict):
        return []
    return [(str(label), p if isinstance(p, (int, float)) else None) for label, p in value.items()]


def read_issues(path):
    """label_issues.csv's rows as dicts, in file order (worst first)."""
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def check_file(out):
    """The label_issues.csv of a run folder, or None when the run has none."""
    path = os.path.join(out, LABEL_ISSUES)
    return path if os.path.isfile(path) else None


def write_for_run(out, paths, folders, targets, probabilities, labels, origins, scope, images):
    """Rank `paths` (scored by a model that never trained on them), write `out`/label_issues.csv,
    return summary(); `images`: how many the data set holds (more than checked on a plain run)."""
    rows = issue_rows([os.path.abspath(p) for p in paths], folders, targets, probabilities, labels,
                      {os.path.abspath(p): origins[p] for p in paths}, scope)
    write_issues(os.path.join(out, LABEL_ISSUES), rows)
    log.info("%d suspect %s (%s, %d of %d images checked): %s", len(rows), "label" if len(rows) == 1 else "labels",
             scope, len(paths), images, os.path.join(out, LABEL_ISSUES))
    return summary(rows, len(paths), images, scope)
