"""Grad-CAM: which parts of an image made the model give a label (keras-io's recipe, Keras 3).

For label c, the gradient of the model's output c with respect to the last convolutional
feature map, averaged over its positions, weighs that map's channels; their weighted sum,
clipped at zero and scaled to [0, 1], is the heat map. It runs on the TensorFlow model
(model.load_model), on the pixels images.load_image makes, exactly as inference sees them.

    explainer = Explainer.from_bundle(bundle)     # or .from_weights(path), Explainer(model, config)
    for entry, label, heat in explainer.explain(entries): ...
    overlay(thumbnail, heat) -> Pillow image of the heat map over the thumbnail
"""

import numpy as np
from PIL import Image

from tagestimate import quiet_tensorflow
from tagestimate.images import ImageError, load_image

ALPHA = 0.45  # share of the heat map's colours in an overlay
BATCH_SIZE = 16


def last_conv_layer(model):
    """The last layer whose output is 4-D (batch, height, width, channels): the feature map
    Grad-CAM explains. Found by shape, not name, so that any backbone works."""
    for layer in reversed(model.layers):
        try:
            shape = layer.output.shape
        except (AttributeError, ValueError):
            continue
        if len(shape) == 4:
            return layer
    raise ValueError(f"model {model.name} has no layer with a 4-D output; Grad-CAM needs a convolutional one")


def heatmaps(cam_model, pixels, wanted):
    """Grad-CAM heat maps for a batch.

    cam_model maps images to (feature map, outputs) (see `gradcam_model`); pixels is
    (n, size, size, 3) in 0-255; wanted[i] lists the label indices to explain for image i.
    Returns [{label index: (h, w) float32 array in [0, 1]}] per image.
    """
    result = [dict() for _ in wanted]
    if not any(wanted):
        return result
    maps = _gradcam_step(cam_model)(np.asarray(pixels, dtype=np.float32)).numpy()  # (n, labels, h, w)
    for index, row in enumerate(wanted):
        for label in row:
            heat = maps[index, label]
            peak = float(heat.max())
            result[index][label] = (heat / peak if peak > 0 else np.zeros_like(heat)).astype(np.float32)
    return result


def _gradcam_step(cam_model):
    """A compiled function: images -> unscaled heat maps of every label, (n, labels, h, w).

    The gradient of an output with respect to the feature map flows only through the
    layers after it (pooling and the dense head), so one forward pass per image and a
    Jacobian of the head give every label's map: the cost is close to tagging the image
    again, whatever the number of tags. Cached on the model.
    """
    step = getattr(cam_model, "_gradcam_step", None)
    if step is not None:
        return step
    quiet_tensorflow()
    import tensorflow as tf

    size = cam_model.inputs[0].shape[1:]

    @tf.function(input_signature=[tf.TensorSpec([None, *size], tf.float32)])
    def step(images):
        with tf.GradientTape() as tape:
            features, outputs = cam_model(images, training=False)
            outputs = tf.cast(outputs, tf.float32)
        gradients = tf.cast(tape.batch_jacobian(outputs, features), tf.float32)  # (n, labels, h, w, c)
        weights = tf.reduce_mean(gradients, axis=(2, 3))  # (n, labels, c): keras-io's pooled gradients
        return tf.nn.relu(tf.einsum("nhwc,nlc->nlhw", tf.cast(features, tf.float32), weights))

    cam_model._gradcam_step = step
    return step


def gradcam_model(model):
    """A model from the same inputs to (last 4-D feature map, the model's outputs)."""
    quiet_tensorflow()
    import keras

    return keras.Model(model.inputs, [last_conv_layer(model).output, model.output])


class Explainer:
    """Grad-CAM for a tag model and its ModelConfig."""

    def __init__(self, model, config, draft=True, batch_size=BATCH_SIZE):
        self.config = config
        self.cam_model = gradcam_model(model)
        self.draft = draft
        self.batch_size = batch_size

    @classmethod
    def from_bundle(cls, bundle, draft=True, batch_size=BATCH_SIZE):
        """For a run's model bundle (tag.settings.ModelBundle): the file is not described again."""
        from tagestimate.model import load_model

        return cls(load_model(bundle.path, bundle.config, bundle.kind), bundle.config, draft, batch_size)

    @classmethod
    def from_weights(cls, weights, draft=True, batch_size=BATCH_SIZE):
        from tagestimate.tag.settings import ModelBundle

        return cls.from_bundle(ModelBundle.load(weights), draft, batch_size)

    def explain(self, entries):
        """Yield (entry, {label index: heat map}) for entries (..., path, [label indices]).

        Entries whose image cannot be read any more yield an empty dict.
        """
        batch = []
        for entry in entries:
            if not entry[-1]:
                continue
            try:
                pixels = load_image(entry[-2], self.config.image_size, self.config.channel_order, self.draft)
            except (ImageError, OSError):
                yield entry, {}
                continue
            batch.append((entry, pixels))
            if len(batch) == self.batch_size:
                yield from self._run(batch)
                batch = []
        if batch:
            yield from self._run(batch)

    def _run(self, batch):
        maps = heatmaps(self.cam_model, np.stack([pixels for _, pixels in batch]), [entry[-1] for entry, _ in batch])
        for (entry, _), found in zip(batch, maps):
            yield entry, found


def colorize(heat):
    """(h, w) values in [0, 1] -> (h, w, 3) uint8 'jet' colours (keras-io's choice)."""
    from matplotlib import colormaps

    return (colormaps["jet"](np.clip(heat, 0, 1))[..., :3] * 255).astype(np.uint8)


def overlay(image, heat, alpha=ALPHA):
    """The heat map stretched over a Pillow RGB image (the model saw the whole image squared,
    so stretching maps each cell back onto its area) and blended in."""
    cells = Image.fromarray((np.clip(heat, 0, 1) * 255).astype(np.uint8), "L").resize(image.size, Image.BILINEAR)
    colours = Image.fromarray(colorize(np.asarray(cells, dtype=np.float32) / 255.0), "RGB")
    return Image.blend(image.convert("RGB"), colours, alpha)
