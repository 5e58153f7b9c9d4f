"""Scores and thresholds: per-label F1, the threshold search, and the end-of-run summary.

No TensorFlow here: the numbers come from scikit-learn on arrays of targets and output
probabilities, so they can be checked (and reused, e.g. for cross-validation) without a model.
"""

from collections import Counter

import numpy as np
from sklearn.metrics import f1_score, precision_recall_fscore_support

from tagestimate import model as tag_model
from tagestimate.files import plural
from tagestimate.train.settings import (BEST_WEIGHTS, HISTORY, LAST_WEIGHTS, PREDICTIONS, REPORT, SPLIT,
                                        STATE)

# Per-label thresholds are searched on this grid; fewer validation positives than
# MIN_TUNING_SUPPORT keep the default threshold, since a tuned value would fit noise.
THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.01), 2)
MIN_TUNING_SUPPORT = 10


def evaluate(targets, probabilities, labels, thresholds=None):
    """Per-label precision/recall/F1/support and macro/micro F1 (scikit-learn) at the thresholds.

    Macro-F1 averages the per-label F1 of the labels that have validation examples; a label
    with support 0 is reported but cannot be scored.
    """
    cut = np.array([tag_model.DEFAULT_THRESHOLD if thresholds is None else thresholds[label]
                    for label in labels])
    truth = (np.asarray(targets) > 0.5).astype(int)
    predicted = (np.asarray(probabilities) > cut).astype(int)
    columns = list(range(len(labels)))
    if len(labels) == 1:
        # scikit-learn reads an (n, 1) matrix as one column of classes 0/1, so labels=[0] would
        # score the negatives; an empty second column makes it a label-indicator matrix again.
        truth, predicted = (np.hstack([m, np.zeros_like(m)]) for m in (truth, predicted))
    precision, recall, f1, support = precision_recall_fscore_support(
        truth, predicted, labels=columns, average=None, zero_division=0)
    present = [j for j in columns if support[j] > 0]
    return {
        "macro_f1": float(f1_score(truth, predicted, labels=present, average="macro", zero_division=0))
        if present else None,
        "micro_f1": float(f1_score(truth, predicted, average="micro", zero_division=0)),
        "macro_f1_labels": [labels[j] for j in present],
        "per_class": {label: {"precision": float(precision[j]), "recall": float(recall[j]),
                              "f1": float(f1[j]), "support": int(support[j])}
                      for j, label in enumerate(labels)},
    }


def tune_thresholds(targets, probabilities, labels, min_support=MIN_TUNING_SUPPORT):
    """{label: {threshold, f1, support, tuned}}: the grid threshold with the best F1 per label.

    Ties go to the threshold nearest the default; labels with fewer than `min_support`
    positives keep the default threshold.
    """
    default = tag_model.DEFAULT_THRESHOLD
    truth = (np.asarray(targets) > 0.5).astype(int)
    result = {}
    for j, label in enumerate(labels):
        support = int(truth[:, j].sum())
        scores = np.array([f1_score(truth[:, j], (probabilities[:, j] > t).astype(int), zero_division=0)
                           for t in THRESHOLD_GRID]) if len(truth) else np.zeros(len(THRESHOLD_GRID))
        if support < min_support:
            at_default = f1_score(truth[:, j], (probabilities[:, j] > default).astype(int),
                                  zero_division=0) if support else None
            result[label] = {"threshold": default, "f1": None if at_default is None else float(at_default),
                             "support": support, "tuned": False}
            continue
        best = scores.max()
        candidates = THRESHOLD_GRID[scores >= best - 1e-12]
        threshold = float(candidates[np.argmin(np.abs(candidates - default))])
        result[label] = {"threshold": threshold, "f1": float(best), "support": support, "tuned": True}
    return result


def split_summary(train_set, val_set, val_split, seed):
    """report.json's "split": image and item counts per side and per folder."""
    folders = sorted(set(train_set.folders) | set(val_set.folders))
    train_counts, val_counts = Counter(train_set.folders), Counter(val_set.folders)
    return {
        "train_images": len(train_set.paths), "val_images": len(val_set.paths),
        "train_items": len(set(train_set.groups)), "val_items": len(set(val_set.groups)),
        "per_folder": {f: {"train": train_counts[f], "val": val_counts[f]} for f in folders},
        "val_split": val_split, "seed": seed, "file": SPLIT,
    }


def format_summary(report):
    """The end-of-run table: per label support, precision, recall, F1, tuned threshold."""
    lines = [f"{'label':<20} {'support':>7} {'prec':>6} {'recall':>6} {'F1':>6}   {'thr':>5} {'F1@thr':>6}"]
    for label in report["labels"]:
        row, tuned = report["per_class"][label], report["thresholds"][label]
        tuned_f1 = "-" if tuned["f1"] is None else f"{tuned['f1']:.3f}"
        mark = "" if tuned["tuned"] else "*"
        # A label without validation examples is not scored: show dashes, not zeros.
        scores = (f"{row['precision']:>6.3f} {row['recall']:>6.3f} {row['f1']:>6.3f}" if row["support"]
                  else f"{'-':>6} {'-':>6} {'-':>6}")
        lines.append(f"{label:<20} {row['support']:>7} {scores}   {tuned['threshold']:>5.2f}{mark:1}{tuned_f1:>6}")
    split = report["split"]
    macro = "n/a" if report["macro_f1"] is None else f"{report['macro_f1']:.3f}"
    macro_tuned = "n/a" if report["tuned"]["macro_f1"] is None else f"{report['tuned']['macro_f1']:.3f}"
    lines += [
        f"validation: {report['evaluated_images']} {plural(report['evaluated_images'], 'image')} from "
        f"{split['val_items']} {plural(split['val_items'], 'item')} never seen in training "
        f"(best epoch {report['best_epoch']} of {report['epochs_done']})",
        f"at threshold {report['default_threshold']}: macro-F1 {macro} over "
        f"{len(report['macro_f1_labels'])} {plural(len(report['macro_f1_labels']), 'label')} with examples, "
        f"micro-F1 {report['micro_f1']:.3f}",
        f"at tuned thresholds: macro-F1 {macro_tuned}, micro-F1 {report['tuned']['micro_f1']:.3f} "
        "(optimistic: tuned on this same validation split; * = too few positives, default kept)",
    ]
    if report["skipped_images"]:
        skipped = len(report["skipped_images"])
        lines.append(f"skipped {skipped} unreadable {plural(skipped, 'image')}, listed in {REPORT}")
    out = report["out"]
    lines.append(f"files in {out}: {BEST_WEIGHTS} + {tag_model.CONFIG_NAME} (for inference), "
                 f"{LAST_WEIGHTS} + {STATE} (--resume), {HISTORY}, {REPORT}, {SPLIT}, {PREDICTIONS}")
    return "\n".join(lines)
