"""The input pipeline: images read with load_image in parallel and batched (tf.data), and the
augmentation, which the trainer applies inside its training step (`AugmentingModel`).

Pixels come from `tagestimate.images.load_image` (the loader inference uses) and reach the
model as 0-255 floats: the model rescales inside itself, so nothing here divides by 255.
Unreadable files are dropped from the stream and recorded, never fatal.

Decoding and resizing stay on the CPU (tf.data threads); augmentation runs where the model
runs, on the GPU when there is one, so that a GPU is fed at decode speed (about 10 times
augmentation's speed on a CPU core). `make_dataset(augmenter=...)` still augments on the CPU,
for comparison (bench/bench_train.py).
"""

import itertools
import logging
import threading

import numpy as np

from tagestimate import quiet_tensorflow
from tagestimate.images import ImageError, load_image

quiet_tensorflow()
import keras  # noqa: E402  (TensorFlow loaded quietly above)
import tensorflow as tf  # noqa: E402

log = logging.getLogger(__name__)


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


class _Augmentation:
    """augment_batch bound to an augmenter and channel order. A plain object, not a Layer: Keras
    would otherwise track the augmenter, and its random-seed state would join the saved weights."""

    def __init__(self, augmenter, channel_order):
        self.augmenter, self.channel_order = augmenter, channel_order

    def __call__(self, images):
        return augment_batch(self.augmenter, images, self.channel_order)


class AugmentingModel(keras.Model):
    """The tag model for fitting only: the same layers (so the same weights and weight-file
    layout) with each training batch augmented inside the training step, on the model's device.

    Callbacks that save this model's weights save the tag model's; validation, prediction and
    inference see unaugmented pixels, and nothing of the augmentation is saved.
    """

    def __init__(self, model, augmenter, channel_order):
        super().__init__(model.inputs, model.outputs, name=model.name)
        self.augmentation = _Augmentation(augmenter, channel_order)

    def train_step(self, data):
        images, targets, weights = keras.utils.unpack_x_y_sample_weight(data)
        return super().train_step((self.augmentation(images), targets, weights))


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
