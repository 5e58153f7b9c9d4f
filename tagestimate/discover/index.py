"""The collection index: every vector of an output folder's `{item}.emb.npz` files in one matrix.

    OUTPUT/.index/index.json            what was indexed: layer, weights_sha256, dim, and per item its
                                        file's version (mtime, size), keys, image paths and IIIF targets
    OUTPUT/.index/vectors-{token}.npy   (n, dim) float16: items in natural order, each item's rows in
                                        its file's key order
    OUTPUT/.index/ann-{token}.usearch   the approximate index of those vectors (large collections only)

`update(output_dir)` reads only the item files that are new or changed since the index was written
and drops the rows of removed items; the result equals a full build. Writes are ordered so that
Ctrl-C at any moment leaves the old index or the new one: the vectors under a fresh name first,
then index.json naming them (one atomic write), then the old vectors are removed.
"""

import dataclasses
import io
import json
import logging
import uuid

import numpy as np

from tagestimate import embeddings, storage
from tagestimate.discover import where
from tagestimate.errors import UserError
from tagestimate.files import printable_path
from tagestimate.records import natural_key

FOLDER = ".index"  # hidden: the report and the engines list only visible files of the output folder
INDEX_NAME = "index.json"
FORMAT = "tagestimate-search-index"
FORMAT_VERSION = 1
MAX_INDEX_BYTES = 4 << 30  # index.json and the vectors of a few million images
PROGRESS_FROM = 20  # items to read before a progress bar is worth showing
log = logging.getLogger(__name__)


class SearchError(UserError):
    """A collection that cannot be searched: empty, mixed models, a bad query; the message says what to do."""


class DamagedIndex(SearchError):
    """An index whose files do not agree; update() rebuilds it from the item files."""


@dataclasses.dataclass
class Item:
    """One item's share of the index: its embeddings file's name and version, and its images."""

    name: str
    file: str  # the .emb.npz file's name in the output folder
    version: list  # [mtime_ns, size] (storage.version) when it was read
    keys: list
    paths: list  # the image file of each key ("" where not known)
    targets: list  # its IIIF target ("" where not known)

    def to_dict(self):
        return dataclasses.asdict(self)


@dataclasses.dataclass
class CollectionIndex:
    """The vectors of an output folder, row by row: row r is key `keys[r]` of item `items[item_of[r]]`."""

    output_dir: str
    layer: str
    weights_sha256: str
    dim: int
    items: list
    vectors: np.ndarray  # (n, dim) float16, unit rows
    token: str = ""  # names the vectors file (and the approximate index built from it)
    _rows: dict = dataclasses.field(default=None, repr=False)

    def __len__(self):
        return int(self.vectors.shape[0])

    @property
    def folder(self):
        return storage.join(self.output_dir, FOLDER)

    @property
    def item_of(self):
        return np.repeat(np.arange(len(self.items)), [len(item.keys) for item in self.items])

    def row(self, item_name, key):
        """The row of `key` of item `item_name`, or None."""
        if self._rows is None:
            self._rows, start = {}, 0
            for item in self.items:
                self._rows.update({(item.name, key): start + i for i, key in enumerate(item.keys)})
                start += len(item.keys)
        return self._rows.get((item_name, key))

    def describe(self, rows):
        """[(item, key, path, target)] of rows."""
        starts = np.cumsum([0] + [len(item.keys) for item in self.items])
        found = []
        for row in rows:
            index = int(np.searchsorted(starts, row, side="right")) - 1
            item, at = self.items[index], int(row) - int(starts[index])
            found.append((item.name, item.keys[at], item.paths[at], item.targets[at]))
        return found

    def model_words(self):
        return model_words(self.layer, self.weights_sha256)


def model_words(layer, weights_sha256):
    return f"layer {layer!r} of weights {weights_sha256[:12] or '(unnamed)'}"


def same_model(layer, weights_sha256, other_layer, other_sha256):
    """As extratags.check_model: the layers match, and the weights where both are named."""
    return layer == other_layer and (not weights_sha256 or not other_sha256 or weights_sha256 == other_sha256)


def index_files(output_dir):
    """{item name: path} of every `{item}.emb.npz` in the output folder."""
    found = {}
    for path in storage.files_in(output_dir):
        name = embeddings.item_name(storage.basename(path))
        if name and not name.startswith("."):
            found[name] = path
    return found


# ---------------------------------------------------------------- reading and writing the index

def load(output_dir):
    """The saved index of `output_dir`, None when it has none; DamagedIndex when its files disagree."""
    folder = storage.join(output_dir, FOLDER)
    path = storage.join(folder, INDEX_NAME)
    if storage.version(path) is None:
        return None
    try:
        meta = json.loads(storage.read_bytes(path, MAX_INDEX_BYTES))
        if meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION:
            raise ValueError(f"format {meta.get('format')!r} version {meta.get('version')!r}")
        items = [Item(**entry) for entry in meta["items"]]
        vectors = _read_vectors(storage.join(folder, f"vectors-{meta['token']}.npy"))
        rows = sum(len(item.keys) for item in items)
        if vectors.dtype != np.float16 or vectors.shape != (rows, meta["dim"]) or \
                any(len(item.paths) != len(item.keys) or len(item.targets) != len(item.keys) for item in items):
            raise ValueError(f"{rows} keys of {meta['dim']} dimensions but vectors of shape {vectors.shape}")
        return CollectionIndex(output_dir, str(meta["layer"]), str(meta["weights_sha256"]), int(meta["dim"]),
                               items, vectors, str(meta["token"]))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DamagedIndex(f"the search index in {printable_path(folder)} is damaged ({_first_line(error)}); "
                           "delete that folder and it is built again from the item files") from None


def _read_vectors(path):
    if storage.on_disk(path):
        return np.load(path, mmap_mode="r", allow_pickle=False)  # the OS pages it in: opening costs nothing
    return np.load(io.BytesIO(storage.read_bytes(path, MAX_INDEX_BYTES)), allow_pickle=False)


def save(index):
    """Write the index: vectors under a new name, then index.json naming them, then the old files go."""
    folder = index.folder
    storage.makedirs(folder)
    old = set(storage.files_in(folder))
    index.token = uuid.uuid4().hex[:16]
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.ascontiguousarray(index.vectors, dtype=np.float16), allow_pickle=False)
    vectors_path = storage.join(folder, f"vectors-{index.token}.npy")
    storage.write_atomic(vectors_path, buffer.getbuffer())  # a view: a million rows are not copied twice
    meta = {"format": FORMAT, "version": FORMAT_VERSION, "layer": index.layer,
            "weights_sha256": index.weights_sha256, "dim": index.dim, "token": index.token,
            "items": [item.to_dict() for item in index.items]}
    index_path = storage.join(folder, INDEX_NAME)
    storage.write_atomic(index_path, json.dumps(meta, ensure_ascii=False, separators=(",", ":")) + "\n")
    for path in sorted(old - {index_path, vectors_path}):  # the previous vectors, approximate index, leftovers
        if storage.basename(path).startswith(("vectors-", "ann-")):
            storage.remove(path)
    return index


# ---------------------------------------------------------------- building and updating

def update(output_dir, input_dir=None, rebuild=False, progress=True):
    """The index of `output_dir`, brought up to date with its item files (read only when new or
    changed) and saved; SearchError when the folder holds no vectors or vectors of two models."""
    shown = printable_path(output_dir)
    if not storage.isdir(output_dir):
        raise SearchError(f"output folder {shown} does not exist; give the folder multiinference.py wrote")
    old = None
    if not rebuild:
        try:
            old = load(output_dir)
        except DamagedIndex as error:
            log.warning("%s; rebuilding it", error)
    found = index_files(output_dir)
    if not found:
        raise SearchError(f"output folder {shown} holds no embeddings ({{item}}.{embeddings.EXTENSION} files); "
                          "tag the images with multiinference.py, which writes them beside its outputs")
    index, changed = _merge(output_dir, old, found, input_dir, progress)
    if not len(index):
        raise SearchError(f"the embeddings files in {shown} hold no image; tag some images first")
    if changed:
        try:
            save(index)
        except (OSError, UserError) as error:  # a read-only folder can still be searched
            log.warning("the search index could not be saved in %s (%s); it is built again next time",
                        printable_path(index.folder), _first_line(error))
    return index


def _merge(output_dir, old, found, input_dir, progress):
    """(index, changed): `old`'s rows for items whose file is unchanged, the others read again."""
    kept = {item.name: (item, start) for item, start in _starts(old)} if old else {}
    versions = {name: list(storage.version(path) or ()) for name, path in found.items()}
    reuse = {name for name, (item, _) in kept.items()
             if name in found and item.version == versions[name] and item.file == storage.basename(found[name])}
    todo = [name for name in sorted(found, key=natural_key) if name not in reuse]
    model = (old.layer, old.weights_sha256, old.dim, "the search index") if reuse else None
    fresh = {}
    context = where.Context(output_dir, input_dir)
    for name in _progress(todo, progress):
        data = embeddings.from_bytes(storage.read_bytes(found[name], embeddings.MAX_BYTES + 1),
                                     printable_path(found[name]))
        if data.keys:
            model = model or (data.layer, data.weights_sha256, data.dim, printable_path(found[name]))
            _check_model(data, found[name], model, output_dir)
        paths, targets = context.describe(name, data.keys)
        fresh[name] = (Item(name, storage.basename(found[name]), versions[name], list(data.keys), paths, targets),
                       data.vectors)
    layer, sha256, dim = model[:3] if model else (embeddings.DEFAULT_LAYER, "", 0)
    items, parts = [], []
    for name in sorted(found, key=natural_key):
        if name in reuse:
            item, start = kept[name]
            rows = old.vectors[start:start + len(item.keys)]
        else:
            item, rows = fresh[name]
        items.append(item)  # an item without images too: remembered, so it is not read again
        if item.keys:
            parts.append(np.asarray(rows, dtype=np.float16))
    vectors = np.concatenate(parts) if parts else np.zeros((0, dim), np.float16)
    changed = old is None or bool(fresh) or set(kept) != set(reuse)
    index = CollectionIndex(output_dir, layer, sha256, dim, items, vectors, old.token if old and not changed else "")
    return index, changed


def _starts(index):
    start = 0
    for item in index.items:
        yield item, start
        start += len(item.keys)


def _check_model(data, path, model, output_dir):
    layer, sha256, dim, source = model
    if not same_model(data.layer, data.weights_sha256, layer, sha256) or data.dim != dim:
        raise SearchError(
            f"{printable_path(path)} holds vectors of {model_words(data.layer, data.weights_sha256)} ({data.dim} "
            f"dimensions) but {source} holds {model_words(layer, sha256)} ({dim}); tag every item of "
            f"{printable_path(output_dir)} with one model (multiinference.py --overwrite) before searching")


def _progress(names, progress):
    if not progress or len(names) < PROGRESS_FROM:
        return names
    from tqdm import tqdm

    return tqdm(names, desc="indexing", unit="item", leave=False)


def _first_line(error):
    return (str(error).splitlines() or [type(error).__name__])[0]
