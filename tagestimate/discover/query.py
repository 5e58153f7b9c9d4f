"""What `--like` (search) and `--positive`/`--negative` (learn-tag) name, as vectors of the index's model.

An argument is an image file when such a file exists, else a key of the index written ITEM/KEY:
split at the first '/', since an item (a folder or output file name) never holds one while a key
(a path in its item) may: `book1/sub/p3` is key `sub/p3` of item `book1`. `key:ITEM/KEY` forces a key.
An image is embedded on the fly with the weights that made the index (--weights, else the ones
the output's run.json names, else those multiinference.py would use), refused if they differ.
"""

import io
import json
import logging
import os

import numpy as np

from tagestimate import embeddings
from tagestimate.discover import where
from tagestimate.discover.index import SearchError
from tagestimate.files import csv_dict_writer, printable_path

KEY_PREFIX = "key:"
COLUMNS = ("rank", "score", "item", "key", "path", "iiif")
log = logging.getLogger(__name__)


class Examples:
    """Arguments resolved against an index: rows of keys it holds, and the images to embed."""

    def __init__(self, index, arguments, what="--like"):
        self.index, self.rows, self.images = index, [], []
        for text in arguments:
            self._add(text, what)

    def _add(self, text, what):
        forced = text.startswith(KEY_PREFIX)
        name = text[len(KEY_PREFIX):] if forced else text
        if not forced and os.path.isfile(name):
            self.images.append(name)
            return
        item, _, key = name.partition("/")
        row = self.index.row(item, key) if key else None
        if row is None:
            kind = "is not a key" if forced else "is neither an image file nor a key"
            raise SearchError(f"{what} {text!r} {kind} of the index of "
                              f"{printable_path(self.index.output_dir)}; check the path, or write a key as "
                              f"ITEM/KEY as in the item's output file, e.g. {self._example()}")
        self.rows.append(row)

    def _example(self):
        item = next((item for item in self.index.items if item.keys), None)
        return f"{item.name}/{item.keys[0]}" if item else "book1/page3"

    def vectors(self, weights=None, backend="auto"):
        """(n, dim) float32 unit rows: the keys' stored vectors, then the images' embedded ones."""
        parts = [np.asarray(self.index.vectors[self.rows], dtype=np.float32)] if self.rows else []
        if self.images:
            parts.append(embed_images(self.images, self.index, weights, backend))
        return np.concatenate(parts) if parts else np.zeros((0, self.index.dim), np.float32)


def mean_vector(vectors):
    """Several examples: their mean, normalised again (what --like … --like … searches for)."""
    return embeddings.normalise(np.asarray(vectors, dtype=np.float32).mean(axis=0, keepdims=True))[0]


def choose_weights(index, weights=None):
    """--weights, else run.json's file when it still exists, else the weight file multiinference.py uses."""
    if weights:
        return weights
    named = where.run_info(index.output_dir).get("weights")
    if named and os.path.isfile(named):
        return named
    from tagestimate.weights import resolve_weights

    return resolve_weights(None)


def embed_images(paths, index, weights=None, backend="auto"):
    """Unit vectors of image files, by the index's model (runner.infer: probabilities and raw vectors)."""
    from tagestimate.images import ImageError, load_image
    from tagestimate.tag.backends import choose_backend, make_runner
    from tagestimate.tag.settings import ModelBundle

    bundle = ModelBundle.load(choose_weights(index, weights))
    layer = getattr(bundle.config, "embedding_layer", None) or embeddings.DEFAULT_LAYER
    from tagestimate.discover.index import model_words, same_model

    if not same_model(layer, bundle.sha256, index.layer, index.weights_sha256):
        raise SearchError(f"weights {printable_path(bundle.path)} give {model_words(layer, bundle.sha256)}, but the "
                          f"index of {printable_path(index.output_dir)} holds {index.model_words()}; pass the "
                          "weights that tagged it with --weights")
    batch = []
    for path in paths:
        try:
            batch.append(load_image(path, bundle.config.image_size, bundle.config.channel_order))
        except ImageError as error:
            raise SearchError(f"query image {printable_path(path)} cannot be read ({error}); give a JPEG, PNG "
                              "or TIFF image file") from None
    runner = make_runner(choose_backend(backend), bundle)
    _, vectors = runner.infer(np.stack(batch).astype(np.float32))
    vectors = embeddings.normalise(vectors)
    if vectors.shape[1] != index.dim:
        raise SearchError(f"the model's {layer!r} vectors have {vectors.shape[1]} dimensions, the index's "
                          f"{index.dim}; pass the weights that tagged {printable_path(index.output_dir)} with --weights")
    return vectors.astype(np.float16).astype(np.float32)  # as stored: an exact copy scores as its original


def result_rows(index, rows, values):
    """[{rank, score, item, key, path, iiif}] of found rows, best first."""
    found = []
    for rank, ((item, key, path, target), score) in enumerate(zip(index.describe(rows), values), start=1):
        found.append({"rank": rank, "score": round(min(1.0, max(-1.0, float(score))), 4), "item": item, "key": key,  # float16 rounding can reach 1.0001
                      "path": printable_path(path) if path else "", "iiif": target})
    return found


def render(found, output_format):
    """The results as `table` (aligned columns), `json` (a list of objects) or `csv` (with a header)."""
    if output_format == "json":
        return json.dumps(found, ensure_ascii=False, indent=1) + "\n"
    if output_format == "csv":
        buffer = io.StringIO()
        writer = csv_dict_writer(buffer, COLUMNS)
        writer.writeheader()
        writer.writerows(found)
        return buffer.getvalue()
    columns = [column for column in COLUMNS if column in ("rank", "score", "item", "key") or
               any(row[column] for row in found)]  # a table leaves out columns nothing fills
    cells = [[_cell(row[column]) for column in columns] for row in found]
    widths = [max([len(column)] + [len(line[i]) for line in cells]) for i, column in enumerate(columns)]
    lines = ["  ".join(column.ljust(width) for column, width in zip(columns, widths)).rstrip()]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in cells]
    return "\n".join(lines) + "\n"


def _cell(value):
    text = f"{value:.4f}" if isinstance(value, float) else str(value)
    return text.replace("\n", " ").replace("\t", " ")


