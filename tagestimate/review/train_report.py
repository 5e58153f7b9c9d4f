"""report.html of a training run, from the files the trainer writes into --out.

    history.csv          -> loss / val_loss and macro / micro F1 per epoch (plot)
    report.json          -> per-label precision, recall, F1, support; tuned thresholds (table)
    val_predictions.csv  -> precision-recall curve per label with its threshold marked, the
                            true-label x predicted-label matrix (parents and children), and per
                            label the worst false positives and false negatives
    model.json + best.weights.h5 -> Grad-CAM overlays on those worst cases
    label_issues.csv     -> the suspect labels as review cards, worst first (train_suspects.py)
    report.json "provenance" -> per folder, images reviewed / crawled / rebuilt / unknown

Written at the end of a successful run (training.py calls write_training_report) and by
`python -m tagestimate.review.report RUN`. A fold of --folds (RUN/foldK/) says so and links to
RUN/report.html, the overview of the folds written from cv_report.json (write_crossval_report). Plots are PNG files made with matplotlib's Agg backend
in report_files/; the page works from disk, offline. A missing or damaged input file
leaves its section out with a note, never the whole report.
"""

import csv
import json
import logging
import os
import re
from collections import Counter

import numpy as np

from tagestimate.files import printable_path, write_atomic
from tagestimate.review import pages, train_suspects
from tagestimate.review.thumbs import make_thumbnail, safe_name, write_jpeg

log = logging.getLogger(__name__)

REPORT_HTML = "report.html"
FILES = "report_files"
WORST = 4  # false positives and false negatives shown per label

def _read_csv(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def plot_history(rows, path):
    """loss and val_loss, macro and micro F1 (train and validation) per epoch, one PNG."""
    plt = _plt()
    from matplotlib.ticker import MaxNLocator

    epochs = [int(float(row["epoch"])) + 1 for row in rows]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    for axis, names, title in ((left, ("loss", "val_loss"), "loss"),
                               (right, ("macro_f1", "val_macro_f1", "micro_f1", "val_micro_f1"), "F1 at 0.4")):
        for name in names:
            values = [float(row[name]) if row.get(name) not in (None, "") else np.nan for row in rows]
            if not all(np.isnan(values)):
                axis.plot(epochs, values, marker="o", markersize=3, label=name)
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def plot_pr_curves(truth, probabilities, labels, thresholds, path):
    """One precision-recall curve per label with validation positives; the tuned threshold marked."""
    from sklearn.metrics import precision_recall_curve

    plt = _plt()
    shown = [j for j in range(len(labels)) if truth[:, j].any()]
    columns = 4
    rows = max(1, -(-len(shown) // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(12, 2.9 * rows), squeeze=False)
    for axis in axes.flat:
        axis.set_visible(False)
    for axis, j in zip(axes.flat, shown):
        axis.set_visible(True)
        precision, recall, _ = precision_recall_curve(truth[:, j], probabilities[:, j])
        axis.plot(recall, precision, linewidth=1.2)
        cut = thresholds.get(labels[j], 0.4)
        predicted = probabilities[:, j] > cut
        hits = int((predicted & truth[:, j]).sum())
        at_precision = hits / predicted.sum() if predicted.any() else 1.0
        at_recall = hits / truth[:, j].sum()
        axis.plot([at_recall], [at_precision], "o", color="crimson", label=f"threshold {cut:.2f}")
        axis.set_title(f"{labels[j]} ({int(truth[:, j].sum())})", fontsize=9)
        axis.set_xlim(0, 1.02)
        axis.set_ylim(0, 1.02)
        axis.set_xlabel("recall", fontsize=8)
        axis.set_ylabel("precision", fontsize=8)
        axis.tick_params(labelsize=7)
        axis.legend(fontsize=7, loc="lower left")
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


def confusion(truth, predicted):
    """matrix[i, j]: share of the validation images that carry label i and are predicted label j."""
    counts = truth.sum(axis=0)
    together = truth.T.astype(float) @ predicted.astype(float)
    return np.divide(together, counts[:, None], out=np.zeros_like(together), where=counts[:, None] > 0)


def plot_confusion(matrix, labels, path):
    plt = _plt()
    size = 2.5 + 0.55 * len(labels)
    figure, axis = plt.subplots(figsize=(size + 1.5, size))
    image = axis.imshow(matrix, vmin=0, vmax=1, cmap="Blues")
    axis.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=8)
    axis.set_yticks(range(len(labels)), labels, fontsize=8)
    axis.set_xlabel("predicted (tuned thresholds)")
    axis.set_ylabel("true label")
    for i in range(len(labels)):
        for j in range(len(labels)):
            if matrix[i, j] >= 0.005:
                axis.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=6,
                          color="white" if matrix[i, j] > 0.6 else "black")
    figure.colorbar(image, ax=axis, fraction=0.04)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


def targets_for(folders, config):
    """0/1 targets of validation images from their folders and the run's label map."""
    from tagestimate import labels as label_tables

    table = label_tables.from_dict(dict(config.labelmap)) if config and config.labelmap else \
        label_tables.default_labelmap()
    rows = []
    for folder in folders:
        try:
            rows.append(table.vector(folder))
        except label_tables.LabelMapError:
            rows.append([0] * len(table.labels))
    return np.asarray(rows, dtype=bool).reshape(len(folders), len(table.labels)), list(table.labels)


def worst_cases(truth, probabilities, j, threshold, count=WORST):
    """(false positives, false negatives) of label j: row indices, most confident errors first."""
    scores = probabilities[:, j]
    false_positive = np.flatnonzero(~truth[:, j] & (scores > threshold))
    false_negative = np.flatnonzero(truth[:, j] & ~(scores > threshold))
    return (false_positive[np.argsort(-scores[false_positive], kind="stable")][:count],
            false_negative[np.argsort(scores[false_negative], kind="stable")][:count])


def _load_model(out):
    from tagestimate.model import open_model

    return open_model(os.path.join(out, "best.weights.h5"))[0]


def write_cases(out, cases, paths, labels, model, config, data):
    """Thumbnails (and Grad-CAM overlays with a model) of the worst cases; {(row, j): (thumb, cam)}."""
    files = os.path.join(out, FILES, "cases")
    explainer = None
    if model is not None:
        from tagestimate.review.explain import Explainer

        explainer = Explainer(model, config)
    made = {}
    wanted = {}
    for row, j in cases:
        wanted.setdefault(row, []).append(j)
    entries = []
    for row, columns in sorted(wanted.items()):
        source = os.path.join(data, paths[row])
        name = safe_name(paths[row])
        try:
            base = make_thumbnail(source)
        except Exception:  # noqa: BLE001 (moved or deleted since training: shown as missing)
            continue
        thumb = os.path.join(files, name + ".jpg")
        write_jpeg(thumb, base)
        for j in columns:
            made[(row, j)] = (thumb, None)
        entries.append((row, base, source, columns))
    if explainer is not None:
        from tagestimate.review.explain import overlay

        for (row, base, _, _), maps in explainer.explain(entries):
            for j, heat in maps.items():
                cam = os.path.join(files, f"{safe_name(paths[row])}.{safe_name(labels[j])}.cam.jpg")
                write_jpeg(cam, overlay(base, heat))
                made[(row, j)] = (made[(row, j)][0], cam)
    return made


def _cell(value, digits=3):
    return f"{value:.{digits}f}" if isinstance(value, float) else ("" if value is None else value)


def _how_trained(config):
    """Summary rows on how the model was trained (model.json): backbone, loss, size, starting weights."""
    if config is None:
        return []
    training = config.training or {}
    return [("backbone", config.backbone), ("image size", f"{config.image_size} px"),
            ("loss", training.get("loss", "bce")), ("starting weights", training.get("initial_weights", "?"))]


def fold_of(out):
    """{number, count, folder, overview} when `out` is fold K of a --folds run (foldK/ beside cv.json)."""
    match = re.fullmatch(r"fold(\d+)", os.path.basename(os.path.abspath(out)))
    parent = os.path.dirname(os.path.abspath(out))
    try:
        with open(os.path.join(parent, "cv.json"), encoding="utf-8") as handle:
            count = json.load(handle)["folds"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not match:
        return None
    return {"number": int(match.group(1)), "count": count, "folder": printable_path(parent), "overview": REPORT_HTML}


def _label_rows(labels, report):
    """Per-label table rows; a label without validation images shows "-" (as the console does)."""
    per_class, rows = report.get("per_class") or {}, []
    for label in labels:
        entry, tuned = per_class.get(label, {}), (report.get("thresholds") or {}).get(label, {})
        scored = entry.get("support") != 0
        rows.append([label, entry.get("support", ""),
                     *((f"{entry[k]:.3f}" if k in entry else "") if scored else "-" for k in ("precision", "recall", "f1")),
                     f"{tuned['threshold']:.2f}{'' if tuned.get('tuned') else ' *'}" if tuned else "",
                     f"{tuned['f1']:.3f}" if tuned.get("f1") is not None else ("-" if tuned else "")])
    return rows


def _reviewed_rows(provenance):
    """(reviewed weight, [(folder, reviewed, crawled, rebuilt, unknown)]) from report.json's "provenance"; None without."""
    if not isinstance(provenance, dict) or not isinstance(provenance.get("by_folder"), dict):
        return None
    rows = [(folder, *(int(counts.get(source, 0)) for source in ("reviewed", "crawled", "rebuilt", "unknown")))
            for folder, counts in sorted(provenance["by_folder"].items())]
    return {"weight": provenance.get("reviewed_weight", 1.0), "rows": rows}


def write_training_report(out, model=None, data=None, explain=True):
    """Write `out`/report.html (and report_files/) from the run's files; returns its path.

    model: the trained model, for Grad-CAM (loaded from best.weights.h5 when None and
    explain is set). data: the data folder (default: the one model.json records).
    """
    from tagestimate.model import WeightsError, read_config

    files = os.path.join(out, FILES)
    os.makedirs(files, exist_ok=True)
    notes, context = [], {"history": None, "predictions": None, "split": None}
    try:
        config = read_config(out)
    except WeightsError as error:
        config, notes = None, [str(error)]
    try:
        with open(os.path.join(out, "report.json"), encoding="utf-8") as handle:
            report = json.load(handle)
    except (OSError, ValueError) as error:
        report = {}
        notes.append(f"report.json: {error}")
    labels = list(report.get("labels") or (config.labels if config else []))
    thresholds = {label: float(entry["threshold"]) for label, entry in (report.get("thresholds") or {}).items()}
    summary = [("macro-F1 at 0.4", report.get("macro_f1")), ("micro-F1 at 0.4", report.get("micro_f1")),
               ("macro-F1 at tuned thresholds", (report.get("tuned") or {}).get("macro_f1")),
               ("epochs", report.get("epochs_done")), ("best epoch", report.get("best_epoch")),
               ("validation images", report.get("evaluated_images")),
               ("skipped images", len(report.get("skipped_images") or []))] + _how_trained(config)
    try:
        rows = _read_csv(os.path.join(out, "history.csv"))
        if rows:
            plot_history(rows, os.path.join(files, "history.png"))
            context["history"] = f"{FILES}/history.png"
    except (OSError, KeyError, ValueError) as error:
        notes.append(f"history.csv: {error}")
    try:
        predictions = _read_csv(os.path.join(out, "val_predictions.csv"))
        context["predictions"] = _prediction_sections(out, predictions, labels, thresholds, config, model, data,
                                                      explain, notes)
    except (OSError, KeyError, ValueError) as error:
        notes.append(f"val_predictions.csv: {error}")
    try:
        split = Counter((row["folder"], row["subset"]) for row in _read_csv(os.path.join(out, "split.csv")))
        context["split"] = [(f, split[f, "train"], split[f, "val"]) for f in sorted({folder for folder, _ in split})]
    except (OSError, KeyError, ValueError) as error:
        notes.append(f"split.csv: {error}")
    context["reviewed"] = _reviewed_rows(report.get("provenance"))
    try:
        context.update(train_suspects.section(out, train_suspects.read(out, report.get("label_issues"),
                                                                       config.labelmap if config else None), labels))
    except (OSError, KeyError, ValueError) as error:
        context["suspects"] = None
        notes.append(f"label_issues.csv: {error}")
    page = pages.training_page(folder=os.path.basename(os.path.abspath(out)), fold=fold_of(out),
                               summary=[(name, _cell(value)) for name, value in summary],
                               label_rows=_label_rows(labels, report) if report.get("per_class") else [],
                               notes=notes, **context)
    return write_atomic(os.path.join(out, REPORT_HTML), page)


def _prediction_sections(out, predictions, labels, thresholds, config, model, data, explain, notes):
    """The data of the plots and worst cases made from val_predictions.csv (None when empty)."""
    if not predictions:
        return None
    paths = [row["path"] for row in predictions]
    truth, map_labels = targets_for([row["folder"] for row in predictions], config)
    if map_labels != labels:
        raise ValueError(f"the label map's labels {map_labels} differ from the report's")
    probabilities = np.array([[float(row[label]) for label in labels] for row in predictions])
    plot_pr_curves(truth, probabilities, labels, thresholds, os.path.join(out, FILES, "pr_curves.png"))
    cut = np.array([thresholds.get(label, 0.4) for label in labels])
    plot_confusion(confusion(truth, probabilities > cut), labels, os.path.join(out, FILES, "confusion.png"))
    data = data or ((config.training or {}).get("data") if config and config.training else None) or ""
    cases = {j: worst_cases(truth, probabilities, j, cut[j]) for j in range(len(labels))}
    if explain and model is None and os.path.exists(os.path.join(out, "best.weights.h5")):
        try:
            model = _load_model(out)
        except Exception as error:  # noqa: BLE001 (a report without Grad-CAM beats no report)
            notes.append(f"Grad-CAM: cannot load best.weights.h5 ({error})")
    wanted = [(row, j) for j, (fp, fn) in cases.items() for row in (*fp, *fn)]
    made = write_cases(out, wanted, paths, labels, model if explain else None, config, data)

    def case(row, j):
        thumb, cam = made.get((row, j)) or (None, None)
        return {"name": f"{paths[row]} ({predictions[row]['folder']})", "score": probabilities[row, j],
                "thumb": thumb and os.path.relpath(thumb, out), "cam": cam and os.path.relpath(cam, out)}

    worst = [(label, [(title, [case(row, j) for row in rows])
                      for title, rows in (("false positives", cases[j][0]), ("false negatives", cases[j][1]))
                      if len(rows)])
             for j, label in enumerate(labels) if len(cases[j][0]) or len(cases[j][1])]
    return {"pr": f"{FILES}/pr_curves.png", "confusion": f"{FILES}/confusion.png", "data": printable_path(data),
            "cams": bool(explain and model is not None), "worst": worst}


def write_crossval_report(out):
    """`out`/report.html of a --folds run from cv_report.json: mean ± std per label, links to the folds."""
    with open(os.path.join(out, "cv_report.json"), encoding="utf-8") as handle:
        report = json.load(handle)

    def spread(value):
        return "-" if not value else f"{value['mean']:.3f} ± {value['std']:.3f}"

    rows = [[label, entry["support"], *(spread(entry.get(k)) for k in ("precision", "recall", "f1")),
             f"{report['thresholds'][label]['threshold']:.2f}"]
            for label, entry in ((label, report["per_class"][label]) for label in report["labels"])]
    folds = [dict(fold, macro_f1=_cell(fold.get("macro_f1")), micro_f1=_cell(fold.get("micro_f1")),
                  page=f"fold{fold['fold']}/{REPORT_HTML}"
                  if os.path.exists(os.path.join(out, f"fold{fold['fold']}", REPORT_HTML)) else None)
             for fold in report["folds"]]
    oof = report.get("out_of_fold") or {}
    summary = [("folds", report["folds_count"]), ("macro-F1 (mean ± std)", spread(report.get("macro_f1"))),
               ("micro-F1 (mean ± std)", spread(report.get("micro_f1"))),
               ("out-of-fold macro-F1", _cell(oof.get("macro_f1"))), ("out-of-fold images", oof.get("images", "")),
               ("median best epoch", report.get("median_best_epoch")),
               ("final model", "yes: best.weights.h5 + model.json" if report.get("final") else "no (--final)")]
    suspects = train_suspects.section(out, train_suspects.read(out, report.get("label_issues"), _cv_labelmap(out)),
                                      report["labels"])
    page = pages.crossval_page(folder=os.path.basename(os.path.abspath(out)), summary=summary, label_rows=rows,
                               folds=folds, default_threshold=report.get("default_threshold", 0.4),
                               reviewed=_reviewed_rows(report.get("provenance")), **suspects)
    return write_atomic(os.path.join(out, REPORT_HTML), page)


def _cv_labelmap(out):
    """The label map of a --folds run: its final model.json's, else its first fold's; None: built-in."""
    from tagestimate.model import WeightsError, read_config

    for folder in (out, os.path.join(out, "fold1")):
        try:
            return read_config(folder).labelmap
        except (WeightsError, OSError, ValueError):
            continue
    return None


def write_report_or_warn(out, model=None, crossval=False):
    """write_training_report (write_crossval_report with crossval) at the end of a run: a report
    that fails never fails the training (its files are written); the warning says how to retry."""
    try:
        path = write_crossval_report(out) if crossval else write_training_report(out, model)
    except Exception as error:  # noqa: BLE001 (the trained model matters more than its report)
        log.warning("could not write %s (%s: %s); retry with python -m tagestimate.review.report %s",
                    os.path.join(out, REPORT_HTML), type(error).__name__, error, out)
        return None
    log.info("review report: %s", path)
    return path
