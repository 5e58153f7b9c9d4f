"""The losses against small NumPy references (per image: mean over labels), with sample weights and float16."""

import numpy as np
import pytest

from tagestimate.train import losses

EPS = losses.EPSILON


def asl_reference(y, p, gamma_neg=4.0, gamma_pos=0.0, clip=0.05):
    p = np.clip(p.astype(np.float64), EPS, 1 - EPS)
    shifted = np.maximum(p - clip, 0.0)
    positive = (1 - p) ** gamma_pos * np.log(p)
    negative = shifted ** gamma_neg * np.log(np.maximum(1 - shifted, EPS))
    return -(y * positive + (1 - y) * negative).mean(axis=-1)


def focal_reference(y, p, gamma=2.0):
    p = np.clip(p.astype(np.float64), EPS, 1 - EPS)
    terms = y * (1 - p) ** gamma * np.log(p) + (1 - y) * p ** gamma * np.log(1 - p)
    return -terms.mean(axis=-1)


def bce_reference(y, p):
    p = np.clip(p.astype(np.float64), EPS, 1 - EPS)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p)).mean(axis=-1)


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    y = (rng.random((6, 5)) < 0.4).astype(np.float32)
    p = rng.uniform(0.0, 1.0, (6, 5)).astype(np.float32)
    p[0, :2] = [0.03, 0.04]  # negatives below the ASL margin: cost nothing
    y[0, :2] = 0
    return y, p


CASES = [
    ("asl", {}, asl_reference, {}),
    ("asl", {"gamma_neg": 2.0, "gamma_pos": 1.0, "clip": 0.1}, asl_reference,
     {"gamma_neg": 2.0, "gamma_pos": 1.0, "clip": 0.1}),
    ("focal", {"focal_gamma": 2.0}, focal_reference, {"gamma": 2.0}),
    ("focal", {"focal_gamma": 0.5}, focal_reference, {"gamma": 0.5}),
    ("bce", {}, bce_reference, {}),
]


@pytest.mark.parametrize("name, options, reference, reference_options", CASES)
def test_loss_matches_its_numpy_reference_per_image_and_weighted(batch, name, options, reference,
                                                               reference_options):
    y, p = batch
    loss = losses.make_loss(name, **options)
    per_image = reference(y, p, **reference_options)
    assert np.allclose(np.asarray(loss.call(y, p)), per_image, rtol=1e-5, atol=1e-6)
    assert np.isclose(float(loss(y, p)), per_image.mean(), rtol=1e-5)
    # Folder loss weights: Keras weighs each image, then averages over the batch.
    weights = np.array([0.5, 2.0, 1.0, 0.0, 3.0, 1.5], np.float32)
    assert np.isclose(float(loss(y, p, sample_weight=weights)), (weights * per_image).mean(), rtol=1e-5)


def test_asl_margin_makes_easy_negatives_free_and_its_default_parameters_are_the_papers(batch):
    y, p = batch
    loss = losses.make_loss("asl")
    assert (loss.gamma_neg, loss.gamma_pos, loss.clip) == (4.0, 0.0, 0.05)
    easy = np.zeros((1, 2), np.float32)
    assert float(loss(easy, np.array([[0.03, 0.049]], np.float32))) == 0.0
    assert float(loss(easy, np.array([[0.3, 0.5]], np.float32))) > 0.0


def test_focal_equals_symmetric_asl_without_margin(batch):
    y, p = batch
    focal = losses.make_loss("focal", focal_gamma=2.0)
    asl = losses.make_loss("asl", gamma_neg=2.0, gamma_pos=2.0, clip=0.0)
    assert np.allclose(np.asarray(focal.call(y, p)), np.asarray(asl.call(y, p)), rtol=1e-5)


@pytest.mark.parametrize("name", ["asl", "focal"])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_outputs_are_computed_in_float32(batch, name, dtype):
    """(1 - p)^4 and log p of half-precision values would underflow; the loss casts first.

    `call` directly: Keras' Loss.__call__ casts to float32 too, but a custom training step
    or a mixed-precision policy on the loss would not."""
    import keras

    y, p = batch
    p[1, 0], y[1, 0] = 0.9995, 0.0  # a confident mistake: p^4 * log(1 - p), tiny 1 - p
    half = keras.ops.cast(p, dtype)
    loss = losses.make_loss(name)
    value = loss.call(y, half)
    assert keras.backend.standardize_dtype(value.dtype) == "float32"
    exact = loss.call(y, keras.ops.cast(half, "float32"))  # the same rounded inputs, in float32
    assert np.all(np.isfinite(value)) and np.allclose(value, exact, rtol=1e-6)


def test_unknown_loss_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        losses.make_loss("hinge")
