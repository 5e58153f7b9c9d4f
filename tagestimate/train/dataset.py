"""The training data: listing the tag folders, the item-grouped split, folder weights, and the
CSV files that name images (split.csv, val_predictions.csv). No TensorFlow here.

An image's labels come from its folder through the label map; its item id (a book) from its
file name, so that one book's pages never sit on both sides of the split.
"""

import csv
import dataclasses
import io
import logging
import os
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image
from sklearn.model_selection import StratifiedGroupKFold
from tqdm import tqdm

from tagestimate.files import NDL_NAME, plural, printable_path, write_atomic
from tagestimate.images import is_image_name, is_utf8_name, list_images, open_image, pixel_limits
from tagestimate.labels import UNTAGGED_FOLDER, LabelMapError
from tagestimate.train.settings import TrainingError

log = logging.getLogger(__name__)

TRAIN, VAL = "train", "val"


@dataclasses.dataclass
class Samples:
    """Labelled images: parallel lists plus the 0/1 target matrix (rows follow `paths`)."""

    paths: list
    folders: list
    groups: list
    targets: np.ndarray

    def subset(self, mask):
        keep = np.flatnonzero(mask)
        return Samples([self.paths[i] for i in keep], [self.folders[i] for i in keep],
                       [self.groups[i] for i in keep], self.targets[keep])


# ---------------------------------------------------------------- listing and split

def item_id(path):
    """The item (book) id of an NDL crop `{pid}_{frame}_{n}.jpg`; else the name up to the first '_'."""
    stem = os.path.splitext(os.path.basename(path))[0]
    match = NDL_NAME.fullmatch(stem)
    return match["pid"] if match else stem.split("_", 1)[0]


def list_samples(data_dir, labels_map):
    """Every image under data_dir's sub-folders with its labels; unknown folders are an error."""
    if not os.path.isdir(data_dir):
        raise TrainingError(f"--data {data_dir} is not a folder; pass the folder that holds one "
                            "sub-folder of images per tag (e.g. datasetpdm/picture_indoor/...)")
    entries = list(os.scandir(data_dir))
    folders = sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))
    # '_' folders are the tools' own, not tags: _rejected/{tag}/ holds images a reviewer took out.
    for name in [name for name in folders if name.startswith("_")]:
        folders.remove(name)
        log.info("%s is not a tag folder (its name starts with '_'); its images are not trained",
                 os.path.join(data_dir, name))
    loose = [e.name for e in entries if e.is_file() and is_image_name(e.name)]
    if loose:
        one = len(loose) == 1
        log.warning("%d %s directly in %s %s to no tag folder and %s ignored (e.g. %s)", len(loose),
                    plural(len(loose), "image"), data_dir, "belongs" if one else "belong", "is" if one else "are",
                    printable_path(loose[0]))
    if UNTAGGED_FOLDER in folders and labels_map.resolve(UNTAGGED_FOLDER) is None:
        folders.remove(UNTAGGED_FOLDER)
        log.warning("%s holds images the crawler found without any tag; they are not trained "
                    "(move them into tag folders to use them)", os.path.join(data_dir, UNTAGGED_FOLDER))
    unknown = [name for name in folders if labels_map.resolve(name) is None]
    if unknown:
        raise LabelMapError(
            f"{data_dir} has folder(s) the label map does not know: {', '.join(unknown)}; rename or "
            f"remove them, or pass --labelmap with a map that has them "
            f"(python labelmap.py --check {data_dir} shows every folder's labels)")
    paths, names, targets, undecodable = [], [], [], []
    for name in folders:
        images = list_images(os.path.join(data_dir, name))
        if not images:
            log.warning("folder %s has no images; it is ignored", os.path.join(data_dir, name))
        # Names that are not UTF-8 (Shift_JIS from Windows, say) reach Python as surrogate
        # escapes, which TensorFlow's string tensors cannot hold.
        undecodable += [path for path in images if not is_utf8_name(path)]
        images = [path for path in images if is_utf8_name(path)]
        paths += images
        names += [name] * len(images)
        targets += [labels_map.vector(name)] * len(images)
    for path in undecodable:
        log.warning("left out, its name is not valid UTF-8: %s", printable_path(path))
    if undecodable:
        one = len(undecodable) == 1
        log.warning("%d %s left out because %s not UTF-8 (listed above); rename %s to UTF-8 to train on "
                    "%s (e.g. convmv -r -f shift_jis -t utf8 --notest %s)", len(undecodable),
                    plural(len(undecodable), "image"), "its name is" if one else "their names are",
                    "it" if one else "them", "it" if one else "them", printable_path(data_dir))
    if not paths:
        raise TrainingError(f"{data_dir} holds no images in its sub-folders; nothing to train on")
    return Samples(paths, names, [item_id(p) for p in paths],
                   np.asarray(targets, dtype=np.float32).reshape(len(paths), len(labels_map.labels)))


def _quick_check(path):
    try:
        if os.path.getsize(path) == 0:
            return "empty file (0 bytes)"
        # load_image's opener and pixel limits: a large image is no warning (load_image decodes it
        # reduced), one over twice Pillow's limit is refused as load_image refuses it.
        with open(path, "rb") as handle, open_image(handle, path) as image:
            refused = pixel_limits()[1]
            if refused is not None and image.width * image.height > refused:
                return (f"too many pixels to decode safely ({image.width} x {image.height}, over Pillow's "
                        f"decompression-bomb limit of {refused:,}); scale the image down")
            image.verify()
    except Image.UnidentifiedImageError:
        return "not an image Pillow can read (wrong extension, text or HTML?)"
    except Exception as error:  # Pillow raises many types for bad files; all mean "skip it"
        return f"corrupt image ({type(error).__name__}: {error})"
    return None


def find_unreadable(paths, workers=8):
    """{path: reason} for files Pillow cannot even open (a header check, not a full decode)."""
    with ThreadPoolExecutor(workers) as pool:
        reasons = list(tqdm(pool.map(_quick_check, paths), total=len(paths), desc="checking images",
                            unit="img", disable=len(paths) < 2000, leave=False))
    return {path: reason for path, reason in zip(paths, reasons) if reason}


def split_samples(samples, val_split, seed):
    """Boolean validation mask: stratified by folder, grouped by item id, seeded.

    StratifiedGroupKFold with round(1/val_split) folds, one held out, so every item id (a
    book's pages) sits on one side only. A data set too small for that many folds gets fewer
    (a larger share held out) with a warning; fewer than 2 item ids is a TrainingError.
    """
    if not 0 < val_split <= 0.5:
        raise TrainingError(f"--val-split {val_split} must be above 0 and at most 0.5")
    wanted = max(2, round(1 / val_split))
    groups = sorted(set(samples.groups))
    if len(groups) < 2:
        found = len(samples.paths)
        images = "the 1 readable image belongs" if found == 1 else f"all {found} readable images belong"
        raise TrainingError(
            f"{images} to one item id ({groups[0] if groups else '-'}), "
            "but validation needs an item never seen in training; add images of at least one more item "
            "(the item id is the file name up to its first '_': 1054192_10_1.jpg is item 1054192)")
    codes = np.unique(samples.folders, return_inverse=True)[1]
    largest = int(np.bincount(codes).max())
    # scikit-learn needs n_splits <= the largest folder's image count (and folds need items);
    # when every folder has one image, stratifying is impossible and only grouping is kept.
    stratified = largest >= 2
    folds = min(wanted, len(groups), largest if stratified else len(groups))
    if not stratified:
        codes = np.zeros_like(codes)
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # "least populated class" warning; we check folders below
        warnings.simplefilter("ignore", UserWarning)
        val_index = next((val for train, val in splitter.split(np.zeros(len(codes)), codes, samples.groups)
                          if len(val) and len(train)), None)
    if val_index is None:  # not seen in practice: the groups' folds are never all empty but one
        raise TrainingError(f"could not split {len(samples.paths)} images of {len(groups)} items into "
                            "training and validation; add images of more items")
    mask = np.zeros(len(codes), dtype=bool)
    mask[val_index] = True
    if folds < wanted:
        held = int(mask.sum())
        log.warning("the data set is too small to hold out 1/%d of its items (--val-split %s): %d %s, "
                    "%d item %s, at most %d %s per folder; holding out 1/%d of the items instead "
                    "(%d validation %s)%s", wanted, val_split, len(codes), plural(len(codes), "image"),
                    len(groups), plural(len(groups), "id"), largest, plural(largest, "image"), folds,
                    held, plural(held, "image"), "" if stratified else ", not stratified by folder")
    for folder in sorted(set(samples.folders)):
        chosen = mask[np.asarray(samples.folders) == folder]
        if chosen.all() or not chosen.any():
            log.warning("folder %s has all its images on the %s side (too few item ids to split it)",
                        folder, VAL if chosen.all() else TRAIN)
    return mask


def write_split(path, samples, val_mask, data_dir):
    """split.csv: one row per image (path relative to --data, folder, item id, subset)."""
    _write_sample_rows(path, samples, data_dir, "subset", [VAL if is_val else TRAIN for is_val in val_mask])


def _write_sample_rows(path, samples, data_dir, column, values):
    """A CSV of the samples (path relative to --data, folder, item id) plus `column`, sorted by path."""
    rows = sorted((os.path.relpath(p, data_dir).replace(os.sep, "/"), folder, group, value)
                  for p, folder, group, value in zip(samples.paths, samples.folders, samples.groups, values))
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(["path", "folder", "item_id", column])
    writer.writerows(rows)
    write_atomic(path, text.getvalue())


def write_predictions(path, paths, folders, probabilities, labels, data_dir):
    """val_predictions.csv: each validation image's folder and output probabilities (best weights)."""
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(["path", "folder", *labels])
    for image_path, folder, row in zip(paths, folders, probabilities):
        writer.writerow([os.path.relpath(image_path, data_dir).replace(os.sep, "/"), folder,
                         *(f"{value:.6f}" for value in row)])
    write_atomic(path, text.getvalue())


def read_split(path, samples, data_dir):
    """(keep mask, validation mask) for `samples` from a split.csv; images it lacks are left out."""
    with open(path, newline="", encoding="utf-8") as handle:
        stored = {row["path"]: row["subset"] == VAL for row in csv.DictReader(handle)}
    relative = [os.path.relpath(p, data_dir).replace(os.sep, "/") for p in samples.paths]
    keep = np.array([r in stored for r in relative], dtype=bool)
    if not keep.all():
        missing = int((~keep).sum())
        log.warning("%d %s not in %s and %s left out; start a new run to train on them", missing,
                    "image is" if missing == 1 else "images are", path, "is" if missing == 1 else "are")
    gone = len(stored) - int(keep.sum())
    if gone > 0:
        log.warning("%d %s listed in %s %s no longer in %s", gone, plural(gone, "image"), path,
                    "is" if gone == 1 else "are", data_dir)
    return keep, np.array([stored.get(r, False) for r in relative], dtype=bool)


def folder_weights(folders, mode):
    """Per-sample loss weights that even out folder sizes ('inverse' 1/n, 'sqrt' 1/sqrt(n), 'none').

    Scaled to average 1 over `folders`; returns (weights array, {folder: weight}).
    """
    counts = Counter(folders)
    power = {"inverse": 1.0, "sqrt": 0.5, "none": 0.0}[mode]
    raw = {folder: count ** -power for folder, count in counts.items()}
    scale = len(folders) / sum(raw[f] for f in folders)
    table = {folder: raw[folder] * scale for folder in sorted(counts)}
    return np.array([table[f] for f in folders], dtype=np.float32), table


def assign_folds(samples, folds, seed):
    """Fold number (1..folds) of every sample for --folds: StratifiedGroupKFold stratified by
    folder (each folder is its most specific label) and grouped by item id, seeded, as the
    single split is. TrainingError when there are fewer item ids than folds."""
    groups = sorted(set(samples.groups))
    if len(groups) < folds:
        raise TrainingError(f"--folds {folds} needs at least {folds} item ids (books), but the readable images "
                            f"belong to {len(groups)}; use fewer folds or add images of more items")
    codes = np.unique(samples.folders, return_inverse=True)[1]
    if int(np.bincount(codes).max()) < folds:  # scikit-learn cannot stratify then: group only
        log.warning("no folder has %d images, so the %d folds are grouped by item id but not stratified",
                    folds, folds)
        codes = np.zeros_like(codes)
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    assigned = np.zeros(len(codes), dtype=int)
    with warnings.catch_warnings():  # "least populated class" warning: small folders are expected
        warnings.simplefilter("ignore", UserWarning)
        for number, (_, held_out) in enumerate(splitter.split(np.zeros(len(codes)), codes, samples.groups), 1):
            assigned[held_out] = number
    for folder in sorted(set(samples.folders)):
        present = set(assigned[np.asarray(samples.folders) == folder])
        if len(present) < folds:
            log.warning("folder %s has images in only %d of the %d folds (too few item ids)", folder,
                        len(present), folds)
    return assigned


def write_folds(path, samples, assigned, data_dir):
    """folds.csv: one row per image (path relative to --data, folder, item id, fold number)."""
    _write_sample_rows(path, samples, data_dir, "fold", [int(fold) for fold in assigned])


def read_folds(path, samples, data_dir):
    """(keep mask, fold numbers) for `samples` from a folds.csv; images it lacks are left out."""
    with open(path, newline="", encoding="utf-8") as handle:
        stored = {row["path"]: int(row["fold"]) for row in csv.DictReader(handle)}
    relative = [os.path.relpath(p, data_dir).replace(os.sep, "/") for p in samples.paths]
    keep = np.array([r in stored for r in relative], dtype=bool)
    if not keep.all():
        missing = int((~keep).sum())
        log.warning("%d %s not in %s and %s left out; start a new cross-validation to use them", missing,
                    "image is" if missing == 1 else "images are", path, "is" if missing == 1 else "are")
    return keep, np.array([stored.get(r, 0) for r in relative], dtype=int)


def read_predictions(path):
    """{relative path: probabilities} and the label order of a val_predictions.csv."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        labels = header[2:]
        return {row[0]: np.array([float(v) for v in row[2:]]) for row in reader}, labels
