"""K-fold cross-validation (`--folds K`): K item-grouped, stratified folds, each an ordinary
run in {out}/fold{k}/; then cv_report.json (mean and standard deviation over folds),
oof_predictions.csv (every image scored by the model that never saw it) and per-label
thresholds tuned on those out-of-fold predictions. `--final` then trains one model on all
images for the folds' median best epoch and writes best.weights.h5 + model.json into {out}.

TensorFlow is loaded only to train (the aggregation below works on the files folds wrote).
"""

import csv
import dataclasses
import io
import logging
import os
import shutil

import numpy as np

from tagestimate import model as tag_model
from tagestimate.train import label_issues, provenance
from tagestimate.train import state as train_state
from tagestimate.train.dataset import (VAL, TRAIN, assign_folds, find_unreadable, list_samples, read_folds,
                                 read_predictions, write_folds)
from tagestimate.files import plural, write_atomic, write_json
from tagestimate.labels import load_labelmap
from tagestimate.train.metrics import evaluate, tune_thresholds
from tagestimate.train.settings import BEST_WEIGHTS, PREDICTIONS, REPORT, SCRIPT, STATE, TrainingError

log = logging.getLogger(__name__)

FOLDS_FILE = "folds.csv"
CV_SETTINGS = "cv.json"
CV_REPORT = "cv_report.json"
OOF_PREDICTIONS = "oof_predictions.csv"
METRICS = ("precision", "recall", "f1")
# The flags a new fold takes from cv.json on --resume (besides the resumable ones): what makes the folds comparable.
_CV_FIXED = ("weights", "image_size", "backbone", "labelmap", "seed", "dropout", "folds", "final")


def fold_dir(out, number):
    return os.path.join(out, f"fold{number}")


def _mean_std(values):
    """{mean, std, n} over folds (sample standard deviation; 0 for a single value); None when empty."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            "n": len(values)}


def aggregate(reports, labels):
    """cv_report.json's fold statistics from the folds' report.json objects: per label, the mean and
    std of precision, recall and F1 over the folds where it has validation examples; macro/micro-F1."""
    per_class = {}
    for label in labels:
        rows = [r["per_class"][label] for r in reports if r["per_class"][label]["support"] > 0]
        per_class[label] = {metric: _mean_std([row[metric] for row in rows]) for metric in METRICS}
        per_class[label]["support"] = sum(r["per_class"][label]["support"] for r in reports)
    return {
        "per_class": per_class,
        "macro_f1": _mean_std([r["macro_f1"] for r in reports]),
        "micro_f1": _mean_std([r["micro_f1"] for r in reports]),
        "tuned_macro_f1": _mean_std([r["tuned"]["macro_f1"] for r in reports]),
        "median_best_epoch": max(1, int(np.ceil(np.median([r["best_epoch"] for r in reports])))),
        "folds": [{"fold": k, "best_epoch": r["best_epoch"], "epochs_done": r["epochs_done"],
                   "val_images": r["evaluated_images"], "macro_f1": r["macro_f1"], "micro_f1": r["micro_f1"]}
                  for k, r in enumerate(reports, 1)],
    }


def out_of_fold(out, folds, samples, data_dir):
    """(relative paths, folders, fold numbers, targets, probabilities) of every image some fold
    predicted, from the folds' val_predictions.csv, in path order."""
    truth = {os.path.relpath(p, data_dir).replace(os.sep, "/"): (folder, target)
             for p, folder, target in zip(samples.paths, samples.folders, samples.targets)}
    rows, labels = [], None
    for number in range(1, folds + 1):
        predictions, labels = read_predictions(os.path.join(fold_dir(out, number), PREDICTIONS))
        rows += [(path, number, probabilities) for path, probabilities in predictions.items() if path in truth]
    rows.sort(key=lambda row: row[0])
    paths = [row[0] for row in rows]
    return (paths, [truth[p][0] for p in paths], [row[1] for row in rows],
            np.array([truth[p][1] for p in paths]).reshape(len(paths), -1),
            np.array([row[2] for row in rows]).reshape(len(paths), -1), labels)


def write_oof(path, paths, folders, numbers, probabilities, labels):
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(["path", "folder", "fold", *labels])
    for row in zip(paths, folders, numbers, probabilities):
        writer.writerow([*row[:3], *(f"{value:.6f}" for value in row[3])])
    write_atomic(path, text.getvalue())


# ---------------------------------------------------------------- the run

def _prepare(settings, explicit):
    """The cross-validation's settings (cv.json's on --resume, for flags not given) and --out checked."""
    out = settings.out
    existing = [name for name in (FOLDS_FILE, CV_SETTINGS, CV_REPORT) if os.path.exists(os.path.join(out, name))]
    if settings.resume:
        if not os.path.exists(os.path.join(out, CV_SETTINGS)):
            raise TrainingError(f"--resume: {out} holds no cross-validation ({CV_SETTINGS} missing); "
                                "drop --resume to start one")
        stored = train_state.read_json(os.path.join(out, CV_SETTINGS))
        given = set(vars(settings)) if explicit is None else set(explicit)
        settings = dataclasses.replace(settings, **{k: v for k, v in stored.items()
                                                    if k not in given and hasattr(settings, k)})
        if settings.folds != stored["folds"]:
            raise TrainingError(f"{out} holds a {stored['folds']}-fold cross-validation; --folds "
                                f"{settings.folds} cannot continue it (start a new one with --overwrite)")
    elif existing or any(os.path.isdir(fold_dir(out, k)) for k in range(1, settings.folds + 1)):
        if not settings.overwrite:
            raise TrainingError(f"{out} already holds a cross-validation ({', '.join(existing) or 'fold folders'});"
                                " pass --resume to continue it, --overwrite to replace it, or choose another --out")
        for name in os.listdir(out):
            path = os.path.join(out, name)
            if name.startswith("fold") and name[4:].isdigit() and os.path.isdir(path):
                shutil.rmtree(path)
        train_state.clear_run(out)
        for name in (FOLDS_FILE, CV_SETTINGS, CV_REPORT, OOF_PREDICTIONS):
            if os.path.exists(os.path.join(out, name)):
                os.remove(os.path.join(out, name))
    train_state.check_settings(settings)
    return settings


def _samples(settings, labels_map):
    samples = list_samples(settings.data, labels_map)
    skipped = find_unreadable(samples.paths)
    for path, reason in sorted(skipped.items()):
        log.warning("skipping unreadable image %s: %s", path, reason)
    return samples.subset([p not in skipped for p in samples.paths]), skipped


def _run_fold(settings, explicit, number, samples, folds_of, data, write_report=None):
    """Train fold `number` (or continue it; a finished one is left alone); returns its report.json."""
    from tagestimate.train import training

    out = fold_dir(settings.out, number)
    state_path = os.path.join(out, STATE)
    fold_settings = dataclasses.replace(settings, out=out, folds=0, final=False, overwrite=False, split=None)
    if os.path.exists(state_path) and train_state.read_json(state_path).get("finished"):
        log.info("fold %d of %d: finished earlier, kept", number, settings.folds)
        return train_state.read_json(os.path.join(out, REPORT))
    if os.path.exists(state_path):
        log.info("fold %d of %d: continuing", number, settings.folds)
        return training.train(dataclasses.replace(fold_settings, resume=True), explicit, write_report)
    # Stopped before its first epoch ended (no state.json): nothing of it to keep, so start it again.
    restart = os.path.isdir(out) and bool(os.listdir(out))
    os.makedirs(out, exist_ok=True)
    split_path = os.path.join(settings.out, f".fold{number}.split.csv")
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(["path", "folder", "item_id", "subset"])
    for path, folder, group, fold in zip(samples.paths, samples.folders, samples.groups, folds_of):
        writer.writerow([os.path.relpath(path, data).replace(os.sep, "/"), folder, group,
                         VAL if fold == number else TRAIN])
    write_atomic(split_path, text.getvalue())
    log.info("fold %d of %d: training into %s", number, settings.folds, out)
    try:
        return training.train(dataclasses.replace(fold_settings, resume=False, overwrite=restart, split=split_path),
                              write_report=write_report)
    finally:
        os.remove(split_path)


def cross_validate(settings, explicit=None, write_report=None):
    """Train the folds (skipping finished ones), write cv_report.json and oof_predictions.csv,
    and with settings.final the final model; returns the cv report. `write_report(out, model)`
    runs at the end of each fold's training (training.train)."""
    settings = _prepare(settings, explicit)
    out, data = settings.out, settings.data
    os.makedirs(out, exist_ok=True)
    labels_map = load_labelmap(settings.labelmap)
    samples, _ = _samples(settings, labels_map)
    if settings.resume:
        keep, folds_of = read_folds(os.path.join(out, FOLDS_FILE), samples, data)
        samples, folds_of = samples.subset(keep), folds_of[keep]
    else:
        folds_of = assign_folds(samples, settings.folds, settings.seed)
        stored = {name: getattr(settings, name) for name in (*train_state.RESUMABLE, *_CV_FIXED)}
        write_json(os.path.join(out, CV_SETTINGS), dict(stored, data=os.path.abspath(data)))
        write_folds(os.path.join(out, FOLDS_FILE), samples, folds_of, data)
    labels = list(labels_map.labels)
    reports = [_run_fold(settings, explicit, k, samples, folds_of, data, write_report)
               for k in range(1, settings.folds + 1)]
    paths, folders, numbers, targets, probabilities, _ = out_of_fold(out, settings.folds, samples, data)
    write_oof(os.path.join(out, OOF_PREDICTIONS), paths, folders, numbers, probabilities, labels)
    thresholds = tune_thresholds(targets, probabilities, labels)
    chosen = {label: thresholds[label]["threshold"] for label in labels}
    # Every image was scored by the fold model that never saw its book: all of them are checked.
    full_paths = [os.path.join(data, path) for path in paths]
    issues = label_issues.write_for_run(out, full_paths, folders, targets, probabilities, labels,
                                        provenance.lookup(full_paths, data), label_issues.OUT_OF_FOLD,
                                        len(samples.paths))
    origins = provenance.lookup(samples.paths, data)
    report = dict(aggregate(reports, labels), labels=labels, folds_count=settings.folds, seed=settings.seed,
                  default_threshold=tag_model.DEFAULT_THRESHOLD,
                  out_of_fold=dict(evaluate(targets, probabilities, labels), images=len(paths)),
                  thresholds=thresholds, out_of_fold_tuned=evaluate(targets, probabilities, labels, chosen),
                  out=os.path.abspath(out), final=None, label_issues=issues, data=os.path.abspath(data),
                  provenance=provenance.summary(samples.folders, samples.paths, origins, settings.reviewed_weight))
    if settings.final:
        report["final"] = final_done(out, report["median_best_epoch"], chosen, len(samples.paths)) or \
            train_final(settings, samples, report["median_best_epoch"], chosen)
    write_json(os.path.join(out, CV_REPORT), report)
    return report


def train_final(settings, samples, epochs, thresholds):
    """One model on every image for `epochs` epochs (no validation, so no early stopping), saved
    as best.weights.h5 with a model.json that carries the out-of-fold `thresholds`."""
    from tagestimate.train import training

    final = dataclasses.replace(settings, epochs=epochs, folds=0, final=False, resume=False, split=None)
    spec = train_state.new_run_spec(final)
    log.info("final model: all %d %s, %d %s (the folds' median best epoch)", len(samples.paths),
             plural(len(samples.paths), "image"), epochs, plural(epochs, "epoch"))
    training.train_all(spec, samples, thresholds, {"cross_validation": CV_REPORT, "folds": settings.folds})
    return {"weights": BEST_WEIGHTS, "config": tag_model.CONFIG_NAME, "epochs": epochs,
            "images": len(samples.paths)}


def final_done(out, epochs, thresholds, images):
    """cv_report.json's "final" entry when --out already holds the final model these folds call for
    (a --resume after it was written: same epoch count, images and out-of-fold thresholds), else None."""
    try:
        previous = train_state.read_json(os.path.join(out, CV_REPORT)).get("final")
        config = tag_model.read_config(out)
    except (OSError, ValueError, AttributeError, tag_model.WeightsError):
        return None
    if not previous or not os.path.isfile(os.path.join(out, BEST_WEIGHTS)) or \
            previous.get("epochs") != epochs or previous.get("images") != images:
        return None
    training = config.training or {}
    if training.get("epochs_done") != epochs or dict(config.thresholds or {}) != thresholds:
        return None
    log.info("final model: already trained for these folds (%d %s on %d %s), kept", epochs, plural(epochs, "epoch"),
             images, plural(images, "image"))
    return previous


def interrupted_message(settings):
    """The line printed on Ctrl-C during --folds: the command that continues the cross-validation."""
    import shlex

    if not os.path.exists(os.path.join(settings.out, CV_SETTINGS)):
        return ("interrupted before the folds were assigned, so there is nothing to resume; run the same "
                "command again" + (" with --overwrite" if os.path.isdir(settings.out) and os.listdir(settings.out)
                                   else ""))
    finished = [k for k in range(1, settings.folds + 1)
                if os.path.exists(os.path.join(fold_dir(settings.out, k), STATE))
                and train_state.read_json(os.path.join(fold_dir(settings.out, k), STATE)).get("finished")]
    return (f"interrupted; {len(finished)} of {settings.folds} folds finished and are kept; continue with: "
            f"python {SCRIPT} --out {shlex.quote(settings.out)} --folds {settings.folds} --resume")


def format_summary(report):
    """The console summary: per label mean ± std of precision, recall and F1 over the folds."""
    def cell(value):
        return f"{'-':>13}" if value is None else f"{value['mean']:.3f} ± {value['std']:.3f}"

    lines = [f"{'label':<20} {'support':>7} {'precision':>13} {'recall':>13} {'F1':>13}   {'OOF thr':>7}"]
    for label in report["labels"]:
        row = report["per_class"][label]
        lines.append(f"{label:<20} {row['support']:>7} {cell(row['precision'])} {cell(row['recall'])} "
                     f"{cell(row['f1'])}   {report['thresholds'][label]['threshold']:>7.2f}")
    oof, tuned = report["out_of_fold"], report["out_of_fold_tuned"]
    lines += [
        f"{report['folds_count']} folds, grouped by item id: macro-F1 {cell(report['macro_f1'])}, "
        f"micro-F1 {cell(report['micro_f1'])} at threshold {report['default_threshold']} (mean ± std over folds)",
        f"out-of-fold ({oof['images']} {plural(oof['images'], 'image')}): macro-F1 "
        f"{'n/a' if oof['macro_f1'] is None else format(oof['macro_f1'], '.3f')}, at the thresholds tuned on them "
        f"{'n/a' if tuned['macro_f1'] is None else format(tuned['macro_f1'], '.3f')}; median best epoch "
        f"{report['median_best_epoch']}",
    ]
    out = report["out"]
    if report["final"]:
        final = report["final"]
        lines.append(f"final model ({final['epochs']} {plural(final['epochs'], 'epoch')} on all {final['images']} "
                     f"{plural(final['images'], 'image')}): "
                     f"{os.path.join(out, BEST_WEIGHTS)} + {tag_model.CONFIG_NAME} with the out-of-fold thresholds")
    lines.append(f"files in {out}: {CV_REPORT}, {OOF_PREDICTIONS}, {FOLDS_FILE}, fold1..{report['folds_count']}/")
    return "\n".join(lines)
