"""Retrieval that means something: on a model trained until its `dense` features separate (synthetic
shapes at 64 px), a crop, a resize and a JPEG re-encode of an image find their original first.

The replica's random weights give chaotic features (a JPEG re-encode of a demo crop ranks its
original 17th-46th of 64), so near-duplicate retrieval can only be tested on a trained model."""

import io
import os

import numpy as np
import pytest
from PIL import Image, ImageDraw

from tagestimate import embeddings
from tagestimate.discover import index as collection, nearest

from test_search import write_item

SIZE = 64
SHAPES = ("circle", "square", "triangle", "bars")


def draw(shape, rng, size=SIZE * 2):
    """One shape of random place, size and colour on a light background, at `size` px."""
    image = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(200, 256, 3)))
    pen = ImageDraw.Draw(image)
    colour = tuple(int(v) for v in rng.integers(0, 160, 3))
    radius = int(rng.integers(size // 6, size // 3))
    x, y = (int(v) for v in rng.integers(radius, size - radius, 2))
    box = (x - radius, y - radius, x + radius, y + radius)
    if shape == "circle":
        pen.ellipse(box, fill=colour)
    elif shape == "square":
        pen.rectangle(box, fill=colour)
    elif shape == "triangle":
        pen.polygon([(x, y - radius), (x - radius, y + radius), (x + radius, y + radius)], fill=colour)
    else:
        for top in range(y - radius, y + radius, max(2, radius // 3)):
            pen.rectangle((x - radius, top, x + radius, top + max(1, radius // 6)), fill=colour)
    return image


def pixels(image):
    return np.asarray(image.convert("RGB").resize((SIZE, SIZE), Image.BILINEAR), dtype=np.float32)


def crop(image, margin):
    """`margin` pixels off each side: training sees small crops, so its features learn to ignore them."""
    return image.crop((margin, margin, image.width - margin, image.height - margin))


def jpeg(image, quality):
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue()))


@pytest.mark.slow
def test_crop_resize_and_jpeg_copies_find_their_original_first(tmp_path):
    import keras

    from tagestimate.model import build_model

    keras.utils.set_random_seed(1)
    rng = np.random.default_rng(1)
    shapes = [SHAPES[i % 4] for i in range(192)]
    train = np.stack([pixels(crop(draw(shape, rng), int(rng.integers(0, 7)))) for shape in shapes])
    labels = np.eye(4, dtype=np.float32)[[SHAPES.index(shape) for shape in shapes]]
    model = build_model(4, SIZE)
    for layer in model.layers:  # moving statistics that follow 24 steps: with 0.99 inference sees untrained ones
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.5
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
    model.fit(train, labels, batch_size=32, epochs=4, verbose=0)
    features = keras.Model(model.input, model.get_layer("dense").output)

    originals = [draw(SHAPES[i % 4], rng) for i in range(24)]
    vectors = embeddings.normalise(features.predict(np.stack([pixels(image) for image in originals]), verbose=0))
    same = np.array([[i % 4 == j % 4 for j in range(24)] for i in range(24)]) & ~np.eye(24, dtype=bool)
    similarity = vectors @ vectors.T
    assert similarity[same].mean() > similarity[~same & ~np.eye(24, dtype=bool)].mean() + 0.1  # features separate

    output = tmp_path / "out"
    output.mkdir()
    write_item(output, "shapes", {f"s{i:02d}": vector for i, vector in enumerate(vectors)})
    index = collection.update(str(output), progress=False)
    searcher = nearest.Searcher(index, approximate=False)
    big = SIZE * 2  # the drawings' size
    copies = {
        "crop": lambda image: crop(image, 3),  # 5% off each side
        "resize": lambda image: image.resize((big * 3 // 4, big * 3 // 4), Image.BILINEAR),
        "jpeg q=30": lambda image: jpeg(image, 30),
    }
    found = {}
    for name, change in copies.items():
        queries = embeddings.normalise(features.predict(np.stack([pixels(change(image)) for image in originals]),
                                                        verbose=0))
        firsts = [index.describe(searcher.search(query.astype(np.float16).astype(np.float32), 1)[0])[0][1]
                  for query in queries]
        found[name] = np.mean([first == f"s{i:02d}" for i, first in enumerate(firsts)])
    # a tiny model trained for seconds tells same-shape images apart only by colour, size and place:
    # nearly every copy, not every one, finds its original first (measured: 0.96-1.0 resize and JPEG)
    assert all(share >= 0.9 for share in found.values()), found
