"""Training the tagger: data listing, grouped split, tf.data input, augmentation, imbalance,
callbacks, the validation report and per-label thresholds.

`multitrain_efficientnet.py` parses flags into `TrainSettings` and calls `train`. Pixels come
from `tagestimate.images.load_image` (the loader inference uses) and reach the model as 0-255
floats: the model rescales inside itself, so nothing here divides by 255.
"""

import csv
import dataclasses
import datetime
import io
import itertools
import json
import logging
import os
import threading
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image
from sklearn.metrics import f1_score, precision_recall_fscore_support
from sklearn.model_selection import StratifiedGroupKFold
from tqdm import tqdm

import labelmap as labelmap_module
from labelmap import LABELS, UNTAGGED_FOLDER, LabelMapError
from tagestimate import model as tag_model
from tagestimate import quiet_tensorflow, train_state
from tagestimate.files import NDL_NAME, write_atomic, write_json
from tagestimate.images import ImageError, is_image_name, list_images, load_image
from tagestimate.train_settings import (  # noqa: F401  (re-exported: callers import them from here)
    BALANCE_CHOICES, BEST_WEIGHTS, DISTRIBUTE_CHOICES, HISTORY, LAST_WEIGHTS, PREDICTIONS, REPORT, RESUMABLE,
    SPLIT, STATE, WEIGHT_CHOICES, TrainingError, TrainSettings, interrupted_message)

quiet_tensorflow()
import keras  # noqa: E402  (TensorFlow loaded quietly above)
from keras.src.saving import saving_lib  # noqa: E402  (weights without the optimizer)
import tensorflow as tf  # noqa: E402

log = logging.getLogger(__name__)

# What a run writes into --out; defined once so that checks, docs and tests agree.
RUN_FILES = (tag_model.CONFIG_NAME, BEST_WEIGHTS, LAST_WEIGHTS, HISTORY, REPORT, SPLIT, STATE, PREDICTIONS)

TRAIN, VAL = "train", "val"
# Per-label thresholds are searched on this grid; fewer validation positives than
# MIN_TUNING_SUPPORT keep the default threshold, since a tuned value would fit noise.
THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.01), 2)
MIN_TUNING_SUPPORT = 10
# NDL crop names: pid, frame, n-th crop. Numeric pids have no '_'; the crawler allows ids that do.


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


# ---------------------------------------------------------------- data listing and split

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
    loose = [e.name for e in entries if e.is_file() and is_image_name(e.name)]
    if loose:
        log.warning("%d image(s) directly in %s belong to no tag folder and are ignored (e.g. %s)",
                    len(loose), data_dir, shown_path(loose[0]))
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
        undecodable += [path for path in images if not _is_utf8(path)]
        images = [path for path in images if _is_utf8(path)]
        paths += images
        names += [name] * len(images)
        targets += [labels_map.vector(name)] * len(images)
    for path in undecodable:
        log.warning("left out, its name is not valid UTF-8: %s", shown_path(path))
    if undecodable:
        log.warning("%d image(s) left out because their names are not UTF-8 (listed above); rename "
                    "them to UTF-8 to train on them (e.g. convmv -r -f shift_jis -t utf8 --notest %s)",
                    len(undecodable), shown_path(data_dir))
    if not paths:
        raise TrainingError(f"{data_dir} holds no images in its sub-folders; nothing to train on")
    return Samples(paths, names, [item_id(p) for p in paths],
                   np.asarray(targets, dtype=np.float32).reshape(len(paths), len(labels_map.labels)))


def _is_utf8(path):
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def shown_path(path):
    """A path for messages: bytes that are not UTF-8 appear as \\xNN escapes."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _quick_check(path):
    try:
        if os.path.getsize(path) == 0:
            return "empty file (0 bytes)"
        with Image.open(path) as image:
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
        raise TrainingError(
            f"all {len(samples.paths)} readable image(s) belong to one item id ({groups[0] if groups else '-'}), "
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
        log.warning("the data set is too small to hold out 1/%d of its items (--val-split %s): %d images, "
                    "%d item ids, at most %d image(s) per folder; holding out 1/%d of the items instead "
                    "(%d validation images)%s", wanted, val_split, len(codes), len(groups), largest, folds,
                    int(mask.sum()), "" if stratified else ", not stratified by folder")
    for folder in sorted(set(samples.folders)):
        chosen = mask[np.asarray(samples.folders) == folder]
        if chosen.all() or not chosen.any():
            log.warning("folder %s has all its images on the %s side (too few item ids to split it)",
                        folder, VAL if chosen.all() else TRAIN)
    return mask


def write_split(path, samples, val_mask, data_dir):
    """split.csv: one row per image (path relative to --data, folder, item id, subset)."""
    rows = sorted(
        (os.path.relpath(p, data_dir).replace(os.sep, "/"), folder, group, VAL if is_val else TRAIN)
        for p, folder, group, is_val in zip(samples.paths, samples.folders, samples.groups, val_mask))
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(["path", "folder", "item_id", "subset"])
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
        log.warning("%d image(s) are not in %s and are left out; start a new run to train on them",
                    int((~keep).sum()), path)
    gone = len(stored) - int(keep.sum())
    if gone > 0:
        log.warning("%d image(s) listed in %s are no longer in %s", gone, path, data_dir)
    return keep, np.array([stored.get(r, False) for r in relative], dtype=bool)


def trim_history(path, epochs_done):
    """Drop history.csv rows of epochs after `epochs_done` (logged just before an interruption)."""
    if not os.path.exists(path):
        return
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    kept = rows[:1] + [row for row in rows[1:] if row and row[0].isdigit() and int(row[0]) < epochs_done]
    if len(kept) < len(rows):
        text = io.StringIO(newline="")
        csv.writer(text).writerows(kept)
        write_atomic(path, text.getvalue())


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


# ---------------------------------------------------------------- input pipeline

def build_augmenter(seed=None):
    """Random colour and geometry changes for training batches of 0-255 RGB floats.

    In the spirit of NDL's original (albumentations) recipe: hue/saturation/brightness
    jitter, grayscale p=0.5, horizontal flips, small rotations (+-10 deg), shifts (6.25%)
    and zoom (+-10%) with reflected borders, then gamma (`RandomGamma`, p=0.5).

    Each layer draws from its own seed (seed, seed + 1, ...): layers given one seed draw the
    same numbers, so "grayscale" and "flip" would pick the same images.
    """
    layers = keras.layers
    value_range = (0, 255)
    seeds = itertools.repeat(None) if seed is None else itertools.count(seed)
    return keras.Sequential([
        layers.RandomHue(0.06, value_range=value_range, seed=next(seeds), dtype="float32"),
        layers.RandomSaturation((0.45, 0.55), value_range=value_range, seed=next(seeds), dtype="float32"),
        layers.RandomBrightness(0.15, value_range=value_range, seed=next(seeds), dtype="float32"),
        layers.RandomGrayscale(0.5, seed=next(seeds), dtype="float32"),
        layers.RandomFlip("horizontal", seed=next(seeds), dtype="float32"),
        layers.RandomRotation(10 / 360, fill_mode="reflect", seed=next(seeds), dtype="float32"),
        layers.RandomTranslation(0.0625, 0.0625, fill_mode="reflect", seed=next(seeds), dtype="float32"),
        layers.RandomZoom(0.1, fill_mode="reflect", seed=next(seeds), dtype="float32"),
        RandomGamma(0.8, 1.2, 0.5, seed=next(seeds), dtype="float32"),
    ], name="augmentation")


class RandomGamma(keras.layers.Layer):
    """Per-image gamma in [low, high] on `probability` of the images; 0-255 in, 0-255 out.

    Keras has no such layer. Its value and its coin are separate draws of its own seed.
    """

    def __init__(self, low=0.8, high=1.2, probability=0.5, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.low, self.high, self.probability = low, high, probability
        self.generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=True):
        if not training:
            return images
        shape = (keras.ops.shape(images)[0], 1, 1, 1)
        gamma = keras.random.uniform(shape, self.low, self.high, seed=self.generator)
        chosen = keras.random.uniform(shape, seed=self.generator) < self.probability
        gamma = keras.ops.where(chosen, gamma, 1.0)
        # The curve is defined on 0-1 intensities; the result is back on the 0-255 scale.
        return 255.0 * keras.ops.power(keras.ops.clip(images, 0.0, 255.0) * (1.0 / 255.0), gamma)


def augment_batch(augmenter, images, channel_order):
    """Apply the augmenter to a batch in the model's channel order (colour ops expect RGB)."""
    if channel_order == "BGR":
        images = images[..., ::-1]
    images = augmenter(images, training=True)
    if channel_order == "BGR":
        images = images[..., ::-1]
    return tf.clip_by_value(images, 0.0, 255.0)


class _SafeLoader:
    """load_image for tf.numpy_function: an unreadable file yields ok=False, is logged once."""

    def __init__(self, image_size, channel_order, skipped):
        self.image_size, self.channel_order = image_size, channel_order
        self.skipped = skipped
        self.lock = threading.Lock()

    def __call__(self, path):
        path = path.decode("utf-8")
        try:
            return load_image(path, self.image_size, self.channel_order), True
        except ImageError as error:
            with self.lock:
                if path not in self.skipped:
                    self.skipped[path] = error.reason
                    log.warning("skipping unreadable image %s", error)
            return np.zeros((self.image_size, self.image_size, 3), np.uint8), False


def make_dataset(paths, image_size, channel_order, batch_size, targets=None, weights=None,
                 augmenter=None, shuffle_seed=None, skipped=None):
    """Batches of 0-255 float32 pixels read with load_image (parallel), unreadable files dropped.

    Elements are (images, targets, weights), (images, targets), or (images, row index) when
    `targets` is None, so that predictions can be matched to files.
    """
    loader = _SafeLoader(image_size, channel_order, {} if skipped is None else skipped)
    path_table = tf.constant(list(paths), dtype=tf.string)
    dataset = tf.data.Dataset.range(len(paths))
    if shuffle_seed is not None:
        dataset = dataset.shuffle(len(paths), seed=shuffle_seed, reshuffle_each_iteration=True)

    def read(index):
        image, ok = tf.numpy_function(loader, [tf.gather(path_table, index)], [tf.uint8, tf.bool],
                                      stateful=False)
        image.set_shape((image_size, image_size, 3))
        ok.set_shape(())
        return image, index, ok

    def readable(image, index, ok):
        return ok

    def drop_flag(image, index, ok):
        return image, index

    dataset = dataset.map(read, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.filter(readable).map(drop_flag, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.batch(batch_size)
    target_table = None if targets is None else tf.constant(targets, dtype=tf.float32)
    weight_table = None if weights is None else tf.constant(weights, dtype=tf.float32)

    def finish(images, index):
        images = tf.cast(images, tf.float32)
        if augmenter is not None:
            images = augment_batch(augmenter, images, channel_order)
        if target_table is None:
            return images, index
        if weight_table is None:
            return images, tf.gather(target_table, index)
        return images, tf.gather(target_table, index), tf.gather(weight_table, index)

    return dataset.map(finish, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def predict(model, paths, image_size, channel_order, batch_size, skipped=None):
    """(probabilities, row indices of `paths` that could be read), in the order of `paths`."""
    dataset = make_dataset(paths, image_size, channel_order, batch_size, skipped=skipped)
    outputs, rows = [], []
    for images, index in dataset:
        outputs.append(np.asarray(model.predict_on_batch(images), dtype=np.float64))
        rows.append(index.numpy())
    if not outputs:
        return np.zeros((0, model.output_shape[-1])), np.zeros(0, dtype=np.int64)
    rows = np.concatenate(rows)
    order = np.argsort(rows)
    return np.concatenate(outputs)[order], rows[order]


# ---------------------------------------------------------------- metrics and thresholds

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


# ---------------------------------------------------------------- model set-up

def pick_strategy(mode):
    """MirroredStrategy for 'mirrored', or for 'auto' when several GPUs are visible; else default."""
    gpus = tf.config.list_logical_devices("GPU")
    if mode == "mirrored" or (mode == "auto" and len(gpus) > 1):
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def mixed_precision_policy():
    """float16 on GPUs (tensor cores); bfloat16 on CPUs, where float16 maths is emulated."""
    return "mixed_float16" if tf.config.list_logical_devices("GPU") else "mixed_bfloat16"


def init_weights(model, weights, image_size, labels):
    """Load the starting weights --weights names; returns (channel order, description).

    A legacy HDF5 (NDL's file, or Keras' notop EfficientNetB0 .h5) loads by layer name, head
    included when its outputs are NDL's labels; a tag model of this project loads with its
    model.json. Each keeps the channel order its weights were trained with.
    """
    if weights == "none":
        return "RGB", "random initialisation"
    if weights == "imagenet":
        tag_model.load_imagenet_weights(model, image_size)
        return "RGB", "ImageNet (Keras EfficientNetB0)"
    if tag_model.detect_weights_kind(weights) == tag_model.LEGACY:
        outputs = tag_model.legacy_output_count(weights)
        with_head = outputs == len(labels) and list(labels) == list(LABELS)
        if outputs is not None and not with_head:
            log.warning("%s has %d outputs, not this label map's; only its backbone is loaded",
                        weights, outputs)
        tag_model.load_legacy_weights(model, weights, require_all=False, include_head=with_head)
        # A file with a tag head is NDL's layout, trained on BGR; a notop file is Keras' (RGB).
        order = "RGB" if outputs is None else "BGR"
        return order, f"{weights} ({'backbone and head' if with_head else 'backbone'}, legacy HDF5)"
    previous, config, _ = tag_model.open_model(weights)
    with_head = config["labels"] == list(labels)
    if not with_head:
        log.warning("%s was trained for other labels; only its backbone is loaded", weights)
    # The input Normalization layer's name differs between builds (normalization_N).
    normalization = tag_model.input_normalization(model)
    normalization.set_weights(tag_model.input_normalization(previous).get_weights())
    for layer in model.layers:
        if layer.weights and layer is not normalization and (with_head or layer.name not in tag_model.HEAD_LAYERS):
            layer.set_weights(previous.get_layer(layer.name).get_weights())
    return config["channel_order"], f"{weights} ({'backbone and head' if with_head else 'backbone'})"


def set_phase(model, phase, freeze_batchnorm):
    """'warmup': only the head trains. 'finetune': everything, BatchNorm frozen if pretrained."""
    for layer in tag_model.backbone_layers(model):
        if phase == "warmup":
            layer.trainable = False
        else:
            layer.trainable = not (freeze_batchnorm and isinstance(layer, keras.layers.BatchNormalization))


def compile_model(model, learning_rate):
    """Adam + binary cross-entropy; macro/micro F1 at the default threshold (Keras' F1Score)."""
    threshold = tag_model.DEFAULT_THRESHOLD
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.BinaryCrossentropy(),
        metrics=[keras.metrics.F1Score(average="macro", threshold=threshold, name="macro_f1"),
                 keras.metrics.F1Score(average="micro", threshold=threshold, name="micro_f1")],
    )


def save_weights_atomic(model, path, optimizer=False):
    """Save the model's weights (and, with optimizer=True, Adam's step count and moments) to a
    hidden temporary name beside `path`, then rename: a run killed mid-save leaves the previous
    file whole. (Keras wants names ending in .weights.h5.)"""
    folder, name = os.path.split(path)
    temporary = os.path.join(folder, "." + name.replace(".weights.h5", "") + ".tmp.weights.h5")
    try:
        if optimizer or getattr(model, "optimizer", None) is None:
            model.save_weights(temporary)
        else:
            # Keras' save_weights includes the compiled optimizer (twice the weights' size for
            # Adam); the deliverable holds the weights alone.
            saving_lib.save_weights_only(model, temporary, objects_to_skip=[model.optimizer])
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def load_weights_quietly(model, path):
    """model.load_weights from a weights-only file into a compiled model, without Keras'
    warning that the file has no optimizer state (the optimizer is left as it is)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        model.load_weights(path)


def restore_optimizer(model, path):
    """Build the compiled optimizer for the model's trainable weights and load its saved state
    from `path` (weights are reloaded too: same values); returns the restored step count, or
    None when the file's optimizer state does not fit (another phase or an older file)."""
    model.optimizer.build(model.trainable_variables)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.load_weights(path)
    if any("Skipping variable loading for optimizer" in str(w.message) for w in caught):
        return None
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


class _SaveBest(keras.callbacks.Callback):
    """best.weights.h5 (weights only) after each epoch whose finite val_loss is below `best`
    and every earlier one; `best_epoch` (1-based) records which epoch that was."""

    def __init__(self, path, best=None, best_epoch=None):
        super().__init__()
        self.path, self.best, self.best_epoch = path, best, best_epoch

    def on_epoch_end(self, epoch, logs=None):
        current = (logs or {}).get("val_loss")
        if current is None or not np.isfinite(current) or (self.best is not None and not current < self.best):
            return
        save_weights_atomic(self.model, self.path)
        self.best, self.best_epoch = float(current), epoch + 1


class _SaveState(keras.callbacks.Callback):
    """After each epoch: last.weights.h5 (weights and optimizer) and state.json, for --resume."""

    def __init__(self, out, checkpoint, phase, extra):
        super().__init__()
        self.out, self.checkpoint, self.phase, self.extra = out, checkpoint, phase, extra

    def on_epoch_end(self, epoch, logs=None):
        save_weights_atomic(self.model, os.path.join(self.out, LAST_WEIGHTS), optimizer=True)
        best = self.checkpoint.best
        state = dict(self.extra, epochs_done=epoch + 1, phase=self.phase, finished=False,
                     best_val_loss=None if best is None else float(best), best_epoch=self.checkpoint.best_epoch,
                     learning_rate=float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))
        write_json(os.path.join(self.out, STATE), state)


# ---------------------------------------------------------------- files

def read_json(path):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def prepare_output(out, resume, overwrite):
    """Check --out against --resume/--overwrite; never replace a run silently."""
    existing = [name for name in RUN_FILES if os.path.exists(os.path.join(out, name))]
    if resume:
        if overwrite:
            raise TrainingError("--resume and --overwrite contradict each other; pass one of them")
        missing = [n for n in (LAST_WEIGHTS, STATE, tag_model.CONFIG_NAME, SPLIT)
                   if not os.path.exists(os.path.join(out, n))]
        if missing:
            raise TrainingError(f"--resume: {out} holds no run to continue ({', '.join(missing)} missing); "
                                "drop --resume to start a new run")
        return
    if existing and not overwrite:
        raise TrainingError(f"{out} already holds a training run ({', '.join(existing)}); pass --resume "
                            "to continue it, --overwrite to replace it, or choose another --out")
    os.makedirs(out, exist_ok=True)


def _clear_run(out):
    for name in RUN_FILES:
        path = os.path.join(out, name)
        if os.path.exists(path):
            os.remove(path)


# ---------------------------------------------------------------- the run

def train(settings, explicit=None):
    """Train (or continue) a tagger as `settings` says; returns the report dict.

    With settings.resume, the flags not named in `explicit` (those given on the command
    line; None: all) come from the run's state.json, so `--out DIR --resume` alone continues it.
    """
    check_settings(settings)
    prepare_output(settings.out, settings.resume, settings.overwrite)
    state = {}
    if settings.resume:
        state = train_state.read_state(settings.out)
        if "settings" not in state:
            log.warning("%s predates stored settings: --data %s, --epochs %d and the other flags come from "
                        "the command line", os.path.join(settings.out, STATE), settings.data, settings.epochs)
        settings = train_state.resumed_settings(settings, state, explicit)
        check_settings(settings)
    previous_policy = keras.mixed_precision.global_policy()
    try:
        return _train(settings, state)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


def check_settings(settings):
    for flag, value, lowest in (("--epochs", settings.epochs, 1), ("--batch-size", settings.batch_size, 1),
                                ("--image-size", settings.image_size, 32), ("--patience", settings.patience, 1),
                                ("--warmup-epochs", settings.warmup_epochs, 0)):
        if value < lowest:
            raise TrainingError(f"{flag} {value} is too small; it must be at least {lowest}")
    for flag, value in (("--lr", settings.lr), ("--warmup-lr", settings.warmup_lr)):
        if not value > 0:
            raise TrainingError(f"{flag} {value} must be a positive learning rate such as 1e-4")
    if not 0 <= settings.dropout < 1:
        raise TrainingError(f"--dropout {settings.dropout} must be in [0, 1)")
    if settings.weights not in WEIGHT_CHOICES and not os.path.isfile(settings.weights):
        raise TrainingError(f"--weights {settings.weights}: no such file; pass imagenet, none, or the path "
                            "of a weight file (NDL's weights_ndllabelimage.hdf5, Keras' notop .h5, or a "
                            "best.weights.h5 of an earlier run)")


def _train(settings, state):
    out, data = settings.out, settings.data
    # A run stopped after its last epoch but before its report (Ctrl-C) only needs evaluating.
    evaluate_only = False
    if settings.resume:
        config = train_state.read_config(out)
        labels_map = labelmap_module.from_dict(config["labelmap"],
                                               source=os.path.join(out, tag_model.CONFIG_NAME))
        image_size, channel_order, dropout = config["image_size"], config["channel_order"], config["dropout"]
        pretrained, seed, val_split = state["pretrained"], state["seed"], state["val_split"]
        done = state["epochs_done"]
        evaluate_only = done >= settings.epochs and state.get("finished") is False
        if done >= settings.epochs and not evaluate_only:
            raise TrainingError(f"the run in {out} has already trained {done} epochs; "
                                f"pass --epochs above {done} to train more")
        log.info("resuming %s after epoch %d of %d (data: %s): labels, image size (%d px), channel order, "
                 "dropout, split and seed come from that run%s", out, done, settings.epochs, data, image_size,
                 "; only the report is left to write" if evaluate_only else "")
    else:
        labels_map = labelmap_module.load_labelmap(settings.labelmap)
        image_size, dropout, seed = settings.image_size, settings.dropout, settings.seed
        val_split = settings.val_split
        pretrained = settings.weights != "none"
    labels = list(labels_map.labels)
    # A resumed run draws new shuffles and augmentations rather than replaying epoch 0's.
    run_seed = seed + state.get("epochs_done", 0)
    keras.utils.set_random_seed(run_seed)

    samples = list_samples(data, labels_map)
    skipped = find_unreadable(samples.paths)
    for path, reason in sorted(skipped.items()):
        log.warning("skipping unreadable image %s: %s", path, reason)
    samples = samples.subset([p not in skipped for p in samples.paths])
    if not samples.paths:
        raise TrainingError(f"none of the images in {data} can be read (each is listed above); "
                            "nothing to train on")
    if settings.resume:
        keep, val_mask = read_split(os.path.join(out, SPLIT), samples, data)
        samples, val_mask = samples.subset(keep), val_mask[keep]
    else:
        val_mask = split_samples(samples, val_split, seed)
    train_set, val_set = samples.subset(~val_mask), samples.subset(val_mask)
    if not len(train_set.paths) or not len(val_set.paths):
        if settings.resume:
            raise TrainingError(f"none of the {'training' if not len(train_set.paths) else 'validation'} images "
                                f"listed in {os.path.join(out, SPLIT)} are readable in --data {data}; pass "
                                "the run's data folder with --data, or start a new run")
        raise TrainingError(f"the split left no {'training' if not len(train_set.paths) else 'validation'} "
                            f"images; add images of more items to {data}")
    unseen = [label for j, label in enumerate(labels) if not train_set.targets[:, j].any()]
    if unseen:
        log.warning("no training images for %s: the model learns never to predict them", ", ".join(unseen))
    sample_weights, weight_table = folder_weights(train_set.folders, settings.balance)
    val_weights = np.array([weight_table.get(f, 1.0) for f in val_set.folders], dtype=np.float32)

    # Built before any mixed-precision policy: augmentation stays float32 on 0-255 values.
    augmenter = build_augmenter(run_seed) if settings.augment else None
    if settings.mixed_precision:
        keras.mixed_precision.set_global_policy(mixed_precision_policy())
        log.info("mixed precision: %s", keras.mixed_precision.global_policy().name)
    strategy = pick_strategy(settings.distribute)
    with strategy.scope():
        model = tag_model.build_model(len(labels), image_size, dropout)
        if settings.resume:
            model.load_weights(os.path.join(out, LAST_WEIGHTS))
            source = config["training"]["initial_weights"]
        else:
            channel_order, source = init_weights(model, settings.weights, image_size, labels)
    gpus = len(tf.config.list_logical_devices("GPU"))
    log.info("%d training and %d validation images (%d and %d items); %s replicas on %s; weights: %s",
             len(train_set.paths), len(val_set.paths), len(set(train_set.groups)), len(set(val_set.groups)),
             strategy.num_replicas_in_sync, f"{gpus} GPU(s)" if gpus else "the CPU (no GPU visible)", source)

    # Nothing is written before this point, so a failed start leaves --out as it was.
    if not settings.resume:
        if settings.overwrite:
            _clear_run(out)
        write_split(os.path.join(out, SPLIT), samples, val_mask, data)
    config = {
        "version": tag_model.CONFIG_VERSION, "backbone": tag_model.BACKBONE, "labels": labels,
        "image_size": image_size, "channel_order": channel_order, "pixel_range": [0, 255],
        "resize": "bilinear", "dropout": dropout, "thresholds": None,
        "default_threshold": tag_model.DEFAULT_THRESHOLD, "labelmap": labels_map.to_dict(),
        "training": {"data": os.path.abspath(data), "initial_weights": source, "seed": seed,
                     "val_split": val_split, "balance": settings.balance,
                     "augment": settings.augment, "split_file": SPLIT},
    }
    if not settings.resume:
        # best.weights.h5 is usable mid-run (at the default threshold). On --resume the old
        # model.json, with its tuned thresholds, stays until this run's replace it at the end.
        tag_model.write_config(out, config)

    train_data = make_dataset(train_set.paths, image_size, channel_order, settings.batch_size,
                              train_set.targets, sample_weights, augmenter, shuffle_seed=run_seed, skipped=skipped)
    val_data = make_dataset(val_set.paths, image_size, channel_order, settings.batch_size,
                            val_set.targets, val_weights, skipped=skipped)
    extra = {"version": train_state.STATE_VERSION, "pretrained": pretrained, "seed": seed, "val_split": val_split,
             "settings": train_state.stored_settings(settings)}
    checkpoint = _SaveBest(os.path.join(out, BEST_WEIGHTS), state.get("best_val_loss"), state.get("best_epoch"))
    if settings.resume:
        trim_history(os.path.join(out, HISTORY), state["epochs_done"])
    if not evaluate_only:
        _fit_phases(model, strategy, settings, state, pretrained, train_data, val_data, checkpoint, extra)
    if not os.path.exists(os.path.join(out, BEST_WEIGHTS)):
        raise TrainingError(f"no epoch reached a finite validation loss, so {out} has no {BEST_WEIGHTS}; "
                            "lower --lr and start again with --overwrite")
    load_weights_quietly(model, os.path.join(out, BEST_WEIGHTS))
    report = _write_results(model, settings, config, val_set, train_set, skipped, weight_table)
    tag_model.write_config(out, config)
    write_json(os.path.join(out, STATE), dict(read_json(os.path.join(out, STATE)), finished=True))
    return report


def _fit_phases(model, strategy, settings, state, pretrained, train_data, val_data, checkpoint, extra):
    """Head warm-up (pretrained backbones only), then full fine-tuning, each freshly compiled."""
    out = settings.out
    done = state.get("epochs_done", 0)
    warmup_end = min(settings.warmup_epochs, settings.epochs) if pretrained else 0
    phases = [("warmup", done, warmup_end, settings.warmup_lr),
              ("finetune", max(done, warmup_end), settings.epochs, settings.lr)]
    for phase, first, last, learning_rate in phases:
        if first >= last:
            continue
        if settings.resume and state.get("phase") == phase and first == done:
            learning_rate = state["learning_rate"]  # keep what ReduceLROnPlateau had reached
        with strategy.scope():
            set_phase(model, phase, freeze_batchnorm=pretrained)
            compile_model(model, learning_rate)
            if settings.resume and state.get("phase") == phase and first == done:
                # Adam continues with its step count and moments (saved in last.weights.h5).
                step = restore_optimizer(model, os.path.join(out, LAST_WEIGHTS))
                if step is None:
                    log.warning("%s holds no optimizer state for this model; Adam starts afresh",
                                os.path.join(out, LAST_WEIGHTS))
                else:
                    log.info("optimizer state restored (Adam step %d)", step)
        log.info("%s: epochs %d-%d at learning rate %.2g", phase, first + 1, last, learning_rate)
        callbacks = [
            checkpoint,
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=settings.patience),
            keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.2, min_lr=1e-7,
                                              patience=max(1, settings.patience // 2)),
            # history.csv before state.json: an epoch that state.json counts is always logged
            # (a row beyond it, from a stop in between, is dropped on --resume).
            keras.callbacks.CSVLogger(os.path.join(out, HISTORY), append=True),
            _SaveState(out, checkpoint, phase, extra),
            keras.callbacks.TerminateOnNaN(),
        ]
        with warnings.catch_warnings():
            # The filter that drops unreadable files hides the epoch length until one has run.
            warnings.filterwarnings("ignore", message="Your input ran out of data")
            history = model.fit(train_data, validation_data=val_data, initial_epoch=first, epochs=last,
                                callbacks=callbacks, shuffle=False, verbose=2)
        if not np.isfinite(history.history.get("loss", [0.0])[-1]):
            log.warning("the loss became NaN; training stopped (lower --lr); the best epoch so far is kept")
            break
        if len(history.epoch) < last - first:
            log.info("early stopping: validation loss has not improved for %d epochs", settings.patience)
            break


def _write_results(model, settings, config, val_set, train_set, skipped, weight_table):
    """Evaluate the loaded (best) weights on validation; write report, predictions, thresholds."""
    out, labels = settings.out, config["labels"]
    probabilities, rows = predict(model, val_set.paths, config["image_size"], config["channel_order"],
                                  settings.batch_size, skipped)
    targets = val_set.targets[rows]
    thresholds = tune_thresholds(targets, probabilities, labels)
    chosen = {label: thresholds[label]["threshold"] for label in labels}
    state = read_json(os.path.join(out, STATE))
    training_info = config["training"]
    report = dict(
        evaluate(targets, probabilities, labels),
        labels=labels, default_threshold=tag_model.DEFAULT_THRESHOLD, thresholds=thresholds,
        tuned=evaluate(targets, probabilities, labels, chosen),
        weights=BEST_WEIGHTS, best_epoch=state.get("best_epoch"), best_val_loss=state.get("best_val_loss"),
        epochs_done=state["epochs_done"], evaluated_images=len(rows),
        balance={"mode": settings.balance, "folder_weights": weight_table},
        split=_split_summary(train_set, val_set, training_info["val_split"], training_info["seed"]),
        skipped_images=[{"path": p, "reason": r} for p, r in sorted(skipped.items())],
        out=os.path.abspath(out),
    )
    write_json(os.path.join(out, REPORT), report)
    write_predictions(os.path.join(out, PREDICTIONS), [val_set.paths[i] for i in rows],
                      [val_set.folders[i] for i in rows], probabilities, labels, settings.data)
    config["thresholds"] = chosen
    training_info.update(epochs_done=state["epochs_done"], best_epoch=state.get("best_epoch"),
                         date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"))
    return report


def _split_summary(train_set, val_set, val_split, seed):
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
        f"validation: {report['evaluated_images']} images from {split['val_items']} items never seen in training "
        f"(best epoch {report['best_epoch']} of {report['epochs_done']})",
        f"at threshold {report['default_threshold']}: macro-F1 {macro} over "
        f"{len(report['macro_f1_labels'])} labels with examples, micro-F1 {report['micro_f1']:.3f}",
        f"at tuned thresholds: macro-F1 {macro_tuned}, micro-F1 {report['tuned']['micro_f1']:.3f} "
        "(optimistic: tuned on this same validation split; * = too few positives, default kept)",
    ]
    if report["skipped_images"]:
        lines.append(f"skipped {len(report['skipped_images'])} unreadable image(s), listed in {REPORT}")
    out = report["out"]
    lines.append(f"files in {out}: {BEST_WEIGHTS} + {tag_model.CONFIG_NAME} (for inference), "
                 f"{LAST_WEIGHTS} + {STATE} (--resume), {HISTORY}, {REPORT}, {SPLIT}, {PREDICTIONS}")
    return "\n".join(lines)
