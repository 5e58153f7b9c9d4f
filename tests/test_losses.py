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


@pytest.mark.parametrize("name", ["asl", "focal"])
def test_float32_even_when_keras_default_float_is_half(batch, name):
    """float32 by name, not Keras' default float type: with floatx set to float16 the loss
    still casts both the labels and the outputs to float32."""
    import keras

    y, p = batch
    saved = keras.config.floatx()
    keras.config.set_floatx("float16")
    try:
        value = losses.make_loss(name).call(keras.ops.cast(y, "float16"), keras.ops.cast(p, "float16"))
    finally:
        keras.config.set_floatx(saved)
    assert keras.backend.standardize_dtype(value.dtype) == "float32"


def test_unknown_loss_names_the_choices():
    with pytest.raises(ValueError, match="^unknown loss 'hinge'; choose one of bce, asl, focal$"):
        losses.make_loss("hinge")


def test_the_classes_defaults_are_make_losss_and_the_papers():
    """--loss asl / focal without their parameters, and the classes built bare (as Keras' own
    deserialisation may), are one loss: gamma_neg 4, gamma_pos 0, clip 0.05; focal gamma 2."""
    assert losses.make_loss("focal").gamma == losses.FocalLoss().gamma == 2.0
    bare, made = losses.AsymmetricLoss(), losses.make_loss("asl")
    assert (bare.gamma_neg, bare.gamma_pos, bare.clip) == (made.gamma_neg, made.gamma_pos, made.clip) == (4.0, 0.0, 0.05)


@pytest.mark.parametrize("make, name, params", [
    (lambda: losses.AsymmetricLoss(3.0, 1.0, 0.07), "asymmetric_loss", {"gamma_neg": 3.0, "gamma_pos": 1.0, "clip": 0.07}),
    (lambda: losses.FocalLoss(1.5), "focal_loss", {"gamma": 1.5}),
])
def test_a_loss_survives_keras_serialisation_with_its_name_and_parameters(batch, make, name, params):
    """A compiled model's config holds its loss: Keras rebuilds it from get_config, by its registered
    name, with every parameter (a key misspelt in get_config would not come back)."""
    import keras

    y, p = batch
    loss = make()  # built in the test, not at collection
    again = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(again) is type(loss) and again.name == loss.name == name
    assert {key: again.get_config()[key] for key in params} == params
    assert np.allclose(np.asarray(again.call(y, p)), np.asarray(loss.call(y, p)))


@pytest.mark.parametrize("make", [lambda **kw: losses.AsymmetricLoss(**kw), lambda **kw: losses.FocalLoss(**kw)])
def test_keras_options_reach_the_base_class(batch, make):
    """reduction (and name) pass through to keras.losses.Loss: "sum" adds the images' losses up."""
    y, p = batch
    mean, total = make(), make(reduction="sum", name="mine")
    assert total.name == "mine"
    assert np.isclose(float(total(y, p)), float(np.sum(np.asarray(mean.call(y, p)))), rtol=1e-5)
    assert np.isclose(float(total(y, p)), float(mean(y, p)) * len(y), rtol=1e-5)
