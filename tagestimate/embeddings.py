"""An item's embeddings: the model head's vector per image, as `{item}.emb.npz` beside its outputs.

The file is an uncompressed NumPy .npz that np.load reads with allow_pickle=False, holding
    keys     (n,) str       image keys, in natural order (records.natural_key, as in {item}.json)
    vectors  (n, dim) float16  one L2-normalised row per key, in the keys' order
    meta     () str         JSON: {"dim", "layer", "weights_sha256", "version"}
Its bytes depend on nothing but these values (fixed zip dates, stored members), so both engines,
and a rerun, write identical files.
"""

import dataclasses
import io
import json
import zipfile

import numpy as np

from tagestimate.errors import UserError
from tagestimate.records import natural_key

EXTENSION = "emb.npz"
FORMAT_VERSION = 1
DEFAULT_LAYER = "dense"  # NDL's head: Dense(512) before dense_1 and the sigmoid layer
MAX_BYTES = 1 << 30  # an item's file: 512 float16 per image is 1 KiB, so about a million images
_DATE = (1980, 1, 1, 0, 0, 0)  # the zip format's earliest date: no clock in the bytes


class EmbeddingsError(UserError, ValueError):
    """An embeddings file that cannot be used; the message names it and says what to do."""


@dataclasses.dataclass(frozen=True)
class Embeddings:
    """One item's vectors: keys[i] is the image of vectors[i]."""

    keys: tuple
    vectors: np.ndarray  # (n, dim) float16, rows of unit length
    layer: str = DEFAULT_LAYER
    weights_sha256: str = ""

    @property
    def dim(self):
        return int(self.vectors.shape[1])


def file_name(item_name):
    return f"{item_name}.{EXTENSION}"


def item_name(file_name):
    """The item whose embeddings file `file_name` is, or None."""
    suffix = "." + EXTENSION
    if file_name.endswith(suffix) and len(file_name) > len(suffix):
        return file_name[:-len(suffix)]
    return None


def normalise(vectors):
    """Rows scaled to unit length (a zero row stays zero), as float32."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


def make(vectors_by_key, layer=DEFAULT_LAYER, weights_sha256=""):
    """Embeddings of {key: raw vector}: keys in natural order, rows normalised, stored as float16."""
    keys = sorted(vectors_by_key, key=natural_key)
    if not keys:
        return Embeddings((), np.zeros((0, 0), np.float16), layer, weights_sha256)
    rows = normalise(np.stack([np.asarray(vectors_by_key[key], dtype=np.float32).ravel() for key in keys]))
    return Embeddings(tuple(keys), rows.astype(np.float16), layer, weights_sha256)


def to_bytes(embeddings):
    """The .npz file's bytes, identical for identical values."""
    meta = {"dim": embeddings.dim if len(embeddings.keys) else 0, "layer": embeddings.layer,
            "weights_sha256": embeddings.weights_sha256, "version": FORMAT_VERSION}
    arrays = {
        "keys": np.array(embeddings.keys, dtype=str) if embeddings.keys else np.zeros(0, dtype="<U1"),
        "vectors": np.ascontiguousarray(embeddings.vectors, dtype=np.float16),
        "meta": np.array(json.dumps(meta, sort_keys=True)),
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, array, allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_DATE)
            info.external_attr = 0o644 << 16
            archive.writestr(info, member.getvalue())
    return buffer.getvalue()


def from_bytes(data, source="embeddings file"):
    """Embeddings read from a file's bytes; EmbeddingsError naming `source` if they are not valid."""
    if len(data) > MAX_BYTES:
        raise EmbeddingsError(f"{source} is over {MAX_BYTES:,} bytes; it was not written by tagestimate")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            keys, vectors, meta = archive["keys"], archive["vectors"], json.loads(str(archive["meta"]))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as error:
        raise EmbeddingsError(f"{source} is damaged or not an embeddings file ({_first_line(error)}); "
                              "delete it and tag its item again") from None
    _check(keys, vectors, meta, source)
    return Embeddings(tuple(str(key) for key in keys), vectors, str(meta.get("layer", "")),
                      str(meta.get("weights_sha256", "")))


def _check(keys, vectors, meta, source):
    def bad(what):
        return EmbeddingsError(f"{source} is not a valid embeddings file ({what}); delete it and tag its item again")

    if not isinstance(meta, dict) or meta.get("version") != FORMAT_VERSION:
        raise bad(f"format version {meta.get('version') if isinstance(meta, dict) else meta!r}, "
                  f"expected {FORMAT_VERSION}")
    if keys.ndim != 1 or vectors.ndim != 2 or vectors.dtype != np.float16:
        raise bad(f"keys of shape {keys.shape}, vectors of shape {vectors.shape} and type {vectors.dtype}")
    if len(keys) != len(vectors) or (len(keys) and vectors.shape[1] != meta.get("dim")):
        raise bad(f"{len(keys)} keys for {len(vectors)} vectors of {vectors.shape[1]} dimensions")
    if len(set(keys.tolist())) != len(keys):
        raise bad("a key appears twice")


def _first_line(error):
    return (str(error).splitlines() or [type(error).__name__])[0]
