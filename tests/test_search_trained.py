"""Retrieval that means something: on a model trained until its `dense` features separate (synthetic
shapes at 64 px), a crop, a resize and a JPEG re-encode of an image find their original first.

The replica's random weights give chaotic features (a JPEG re-encode of a demo crop ranks its
original 17th-46th of 64), so near-duplicate retrieval can only be tested on a trained model. Its
labels describe each drawing (shape, colour, size, quarter of the picture), as tags describe an
illustration, so that its features tell drawings apart by all four."""

import io
import itertools

import numpy as np
import pytest
from PIL import Image, ImageDraw

from tagestimate import embeddings
from tagestimate.discover import index as collection, nearest

from test_search import write_item

SIZE = 64
BIG = SIZE * 2  # drawn at twice the model's size, as scans are larger than the model's input
SHAPES = ("circle", "square", "triangle", "bars")
COLOURS = ((200, 30, 30), (30, 160, 30), (30, 30, 200), (20, 20, 20))
RADII = ((10, 16), (18, 24), (26, 32))
QUARTERS = ((0, 0), (1, 0), (0, 1), (1, 1))
LABELS = len(SHAPES) + len(COLOURS) + len(RADII) + len(QUARTERS)


def draw(attributes, rng):
    """(image, multi-hot labels) of one drawing of (shape, colour, radius, quarter) indices, jittered."""
    shape, colour, radius, quarter = attributes
    image = Image.new("RGB", (BIG, BIG), tuple(int(v) for v in rng.integers(225, 256, 3)))
    pen = ImageDraw.Draw(image)
    fill = tuple(int(np.clip(v + rng.integers(-25, 26), 0, 255)) for v in COLOURS[colour])
    r = int(rng.integers(*RADII[radius]))
    x = int(BIG // 4 + QUARTERS[quarter][0] * BIG // 2 + rng.integers(-6, 7))
    y = int(BIG // 4 + QUARTERS[quarter][1] * BIG // 2 + rng.integers(-6, 7))
    box = (x - r, y - r, x + r, y + r)
    if SHAPES[shape] == "circle":
        pen.ellipse(box, fill=fill)
    elif SHAPES[shape] == "square":
        pen.rectangle(box, fill=fill)
    elif SHAPES[shape] == "triangle":
        pen.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=fill)
    else:
        for top in range(y - r, y + r, max(3, r // 3)):
            pen.rectangle((x - r, top, x + r, top + max(1, r // 6)), fill=fill)
    labels = np.zeros(LABELS, np.float32)
    offset = 0
    for value, count in zip(attributes, (len(SHAPES), len(COLOURS), len(RADII), len(QUARTERS))):
        labels[offset + value] = 1
        offset += count
    return image, labels


def pixels(image):
    return np.asarray(image.convert("RGB").resize((SIZE, SIZE), Image.BILINEAR), dtype=np.float32)


def crop(image, margin):
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
    every = list(itertools.product(range(4), range(4), range(3), range(4)))
    drawn = [draw(every[int(i)], rng) for i in rng.integers(0, len(every), 512)]
    model = build_model(LABELS, SIZE)
    for layer in model.layers:  # moving statistics that follow a few steps: with 0.99 inference sees untrained ones
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.5
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
    model.fit(np.stack([pixels(image) for image, _ in drawn]), np.stack([labels for _, labels in drawn]),
              batch_size=32, epochs=12, verbose=0)
    features = keras.Model(model.input, model.get_layer("dense").output)

    chosen = rng.choice(len(every), 24, replace=False)  # 24 drawings, no two alike in all four
    originals = [draw(every[int(i)], rng)[0] for i in chosen]
    vectors = embeddings.normalise(features.predict(np.stack([pixels(image) for image in originals]), verbose=0))
    attributes = np.array([every[int(i)] for i in chosen])
    shared = (attributes[:, None, :] == attributes[None, :, :]).sum(axis=2)  # attributes two drawings share
    similarity = vectors @ vectors.T
    alike, unlike = similarity[(shared >= 2) & ~np.eye(24, dtype=bool)].mean(), similarity[shared == 0].mean()

    output = tmp_path / "out"
    output.mkdir()
    write_item(output, "shapes", {f"s{i:02d}": vector for i, vector in enumerate(vectors)})
    index = collection.update(str(output), progress=False)
    searcher = nearest.Searcher(index, approximate=False)
    copies = {
        "crop": lambda image: crop(image, 3),  # 2.5% off each side
        "resize": lambda image: image.resize((BIG * 3 // 4, BIG * 3 // 4), Image.BILINEAR),
        "jpeg q=30": lambda image: jpeg(image, 30),
    }
    found = {}
    for name, change in copies.items():
        queries = embeddings.normalise(features.predict(np.stack([pixels(change(image)) for image in originals]),
                                                        verbose=0))
        firsts = [index.describe(searcher.search(query.astype(np.float16).astype(np.float32), 1)[0])[0][1]
                  for query in queries]
        found[name] = np.mean([first == f"s{i:02d}" for i, first in enumerate(firsts)])
    # a tiny model trained for a minute: nearly every copy, if not every one, finds its original first
    assert alike > unlike + 0.1, (alike, unlike)  # the features separate: alike drawings lie closer
    assert all(share >= 0.9 for share in found.values()), found
