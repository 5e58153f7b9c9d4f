"""Nearest vectors: exact top-k by blocked NumPy matmul, and an approximate index for large collections.

Vectors are unit rows, so the score is the cosine similarity (1 for the same vector). Up to
APPROX_FROM rows every search is exact: usearch's SIMD scan of the float16 vectors where installed,
else a NumPy product with a float32 copy. Above it, an HNSW index from usearch (requirements.txt) answers in well under a
millisecond with recall@10 near 1; it is built once per version of the index, saved beside its
vectors (OUTPUT/.index/ann-{token}.usearch) and opened memory-mapped by later searches. Without
usearch installed the search stays exact, and says so once.
"""

import logging
import os
import tempfile

import numpy as np

from tagestimate import storage
from tagestimate.files import printable_path

BLOCK = 1 << 16  # rows converted to float32 at a time: 128 MiB of a 512-d float16 matrix
# rows from which usearch's HNSW index answers. bench/bench_search.py on a loaded 2-core machine: the exact
# scan takes 48 ms (p50) at 100 k, 385 ms at 1 M, while the HNSW build took 836 s at 100 k and is made
# again after every change of the collection: below a million, waiting for it never pays.
APPROX_FROM = 1_000_000
CONNECTIVITY = 16  # HNSW edges per node (usearch's default): recall@10 0.999 on 512-d clustered vectors
EXPANSION_ADD = 128
EXPANSION_SEARCH = 64
log = logging.getLogger(__name__)


def scores(vectors, weights):
    """vectors @ weights as float32, one row block at a time: the float16 matrix is never copied whole.
    `weights`: (dim,) or (dim, m)."""
    weights = np.asarray(weights, dtype=np.float32)
    out = np.empty((len(vectors),) + weights.shape[1:], dtype=np.float32)
    for start in range(0, len(vectors), BLOCK):
        block = np.asarray(vectors[start:start + BLOCK], dtype=np.float32)
        out[start:start + len(block)] = block @ weights
    return out


def top(values, k, exclude=()):
    """(rows, values) of the k largest `values`, best first, ties by row; rows in `exclude` skipped."""
    values = np.asarray(values, dtype=np.float32)
    if len(exclude):
        values = values.copy()
        values[np.asarray(list(exclude), dtype=np.int64)] = -np.inf
    k = min(k, int(np.isfinite(values).sum()))
    if k <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    part = np.argpartition(-values, k - 1)[:k]
    order = np.lexsort((part, -values[part]))
    return part[order], values[part[order]]


def exact(vectors, query, k, exclude=()):
    """The k rows of `vectors` nearest `query` (a unit vector), by exact cosine similarity."""
    return top(scores(vectors, query), k, exclude)


def brute_force(vectors, query, k):
    """(rows, scores) of the k rows nearest `query` by usearch's exact SIMD scan of the float16 matrix (no
    float32 copy: 10x NumPy's conversion on the bench); k = len(vectors) ranks every row. Scores are
    computed in float16, within about 1e-3 of NumPy's float32."""
    from usearch.index import search

    found = search(np.ascontiguousarray(vectors, dtype=np.float16), np.asarray(query, dtype=np.float32), k, "ip",
                   exact=True)
    return np.asarray(found.keys, dtype=np.int64), 1.0 - np.asarray(found.distances, dtype=np.float32)


def usearch_available():
    try:
        import usearch.index  # noqa: F401
    except ImportError:
        return False
    return True


def build_approximate(vectors, threads=0):
    """A usearch HNSW index of `vectors` (inner product, float16 storage), keys = row numbers."""
    from usearch.index import Index

    index = Index(ndim=vectors.shape[1], metric="ip", dtype="f16", connectivity=CONNECTIVITY,
                  expansion_add=EXPANSION_ADD, expansion_search=EXPANSION_SEARCH)
    for start in range(0, len(vectors), BLOCK):
        block = np.asarray(vectors[start:start + BLOCK], dtype=np.float16)
        index.add(np.arange(start, start + len(block)), block, threads=threads)
    return index


def search_approximate(index, query, k, exclude=()):
    """(rows, scores) from a usearch index: k plus the excluded rows asked for, the excluded dropped."""
    found = index.search(np.asarray(query, dtype=np.float32), k + len(exclude))
    rows, distances = np.asarray(found.keys, dtype=np.int64), np.asarray(found.distances, dtype=np.float32)
    keep = ~np.isin(rows, np.asarray(list(exclude), dtype=np.int64))
    return rows[keep][:k], (1.0 - distances[keep])[:k]  # usearch's "ip" distance is 1 - dot


class Searcher:
    """Top-k over a CollectionIndex: exact below APPROX_FROM rows (or `approximate=False`), else usearch."""

    def __init__(self, index, approximate=None, progress=True):
        self.index = index
        self._float32 = None  # without usearch: the exact search's float32 copy (2 KiB per 512-d row)
        self.fast = usearch_available()
        wanted = len(index) >= APPROX_FROM if approximate is None else approximate
        self.approximate = None
        if wanted and not usearch_available():
            log.info("usearch is not installed, so this search of %s vectors is exact (slower); "
                     "pip install usearch for the approximate index", f"{len(index):,}")
        elif wanted:
            self.approximate = self._open_or_build(progress)

    def search(self, query, k, exclude=()):
        if self.approximate is not None:
            return search_approximate(self.approximate, query, k, exclude)
        if self.fast:
            rows, values = brute_force(self.index.vectors, query, min(k + len(exclude), len(self.index)))
            keep = ~np.isin(rows, np.asarray(list(exclude), dtype=np.int64))
            return rows[keep][:k], values[keep][:k]
        if self._float32 is None:
            self._float32 = np.asarray(self.index.vectors, dtype=np.float32)
        return top(self._float32 @ np.asarray(query, dtype=np.float32), k, exclude)

    def _open_or_build(self, progress):
        from usearch.index import Index

        path = storage.join(self.index.folder, f"ann-{self.index.token}.usearch")
        if self.index.token and storage.version(path) is not None:
            try:
                if storage.on_disk(path):
                    return Index.restore(path, view=True)
                return Index.restore(storage.read_bytes(path, 8 << 30))
            except Exception as error:  # noqa: BLE001 - a damaged file: build it again below
                log.warning("approximate index %s unreadable (%s); building it again", printable_path(path), error)
        log.info("building the approximate index of %s vectors (once per change of the collection)",
                 f"{len(self.index):,}")
        index = build_approximate(self.index.vectors)
        if self.index.token:
            self._save(index, path)
        return index

    @staticmethod
    def _save(index, path):
        """Saved through a local temporary file, then one atomic write (a local rename, or one PUT)."""
        try:
            with tempfile.TemporaryDirectory(prefix="tagestimate-ann-") as folder:
                local = os.path.join(folder, "ann.usearch")
                index.save(local)
                with open(local, "rb") as handle:
                    storage.write_atomic(path, handle.read())
        except Exception as error:  # noqa: BLE001 - not saved: built again next time, the search goes on
            log.warning("approximate index not saved to %s (%s)", printable_path(path), error)
