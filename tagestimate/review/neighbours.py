"""Nearest neighbours of every image of a collection, by cosine on its embeddings ({item}.emb.npz).

The vectors are L2-normalised, so cosine is a dot product: the collection is compared with itself
one block of rows at a time (a (block, n) float32 score matrix, so memory stays bounded whatever
n), keeping each row's top k with argpartition. Exact up to EXACT_LIMIT images; above that each
image's neighbours are searched among a fixed random sample of EXACT_LIMIT candidates (the time
grows as n * EXACT_LIMIT, not n squared), and the report says so.

With centre=True the collection's mean vector is subtracted first (rows normalised again): a
model's post-ReLU features share one large common direction (the replica's are all within 0.001
of it), and raw cosine then ranks by rounding noise and sends every image to the same few
"hubs"; centred, the demo's 60 crops have 35 distinct first neighbours instead of 2.
"""

import numpy as np

K = 5
EXACT_LIMIT = 20_000  # all pairs up to here; above, candidates sampled (bench/bench_map.py gives the figures)
BLOCK_FLOATS = 1 << 24  # scores held at once: 64 MiB of float32 per block
SEED = 0


def candidates(count, limit=EXACT_LIMIT, seed=SEED):
    """Indices searched for neighbours: all of them up to `limit`, else a fixed sorted sample."""
    if count <= limit:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, limit, replace=False))


def prepare(rows, mean):
    """Rows as float32, minus `mean` (None: as they are), normalised again."""
    rows = np.asarray(rows, dtype=np.float32)
    if mean is None:
        return rows
    rows = rows - mean
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.where(norms > 0, norms, 1.0)


def mean_of(vectors, step=65536):
    """The mean row, summed in float64 one block at a time (no float32 copy of a float16 matrix)."""
    total = np.zeros(vectors.shape[1], np.float64)
    for start in range(0, len(vectors), step):
        total += np.asarray(vectors[start:start + step], dtype=np.float64).sum(axis=0)
    return (total / max(len(vectors), 1)).astype(np.float32)


def nearest(vectors, k=K, limit=EXACT_LIMIT, block_floats=BLOCK_FLOATS, progress=None, centre=False):
    """(indices, scores): each row's k most similar other rows, most similar first.

    indices is (n, k) int64 (-1 where fewer than k others exist), scores (n, k) float32 cosine.
    Equal scores go to the lower index, so the result does not depend on the block size.
    """
    count = len(vectors)
    mean = mean_of(vectors) if centre and count else None
    pool = candidates(count, limit)
    base = np.ascontiguousarray(prepare(vectors[pool], mean).T)  # (dim, m)
    width = min(k, max(len(pool) - 1, 0))
    indices = np.full((count, k), -1, dtype=np.int64)
    scores = np.full((count, k), np.nan, dtype=np.float32)
    if width == 0:
        return indices, scores
    step = max(1, block_floats // max(len(pool), 1))
    position = np.full(count, -1, dtype=np.int64)
    position[pool] = np.arange(len(pool))  # where each row sits among the candidates (itself excluded)
    for start in range(0, count, step):
        stop = min(start + step, count)
        block = prepare(vectors[start:stop], mean) @ base  # (rows, m); rows converted a block at a time
        own = position[start:stop]
        mine = np.nonzero(own >= 0)[0]
        block[mine, own[mine]] = -np.inf  # never its own neighbour
        # k rounds of argmax: about 10x faster than argpartition on a (rows, m) block, and argmax
        # takes the first of equal scores, so ties go to the lower index whatever the block size
        rows = np.arange(stop - start)
        for column in range(width):
            best = block.argmax(axis=1)
            indices[start:stop, column] = pool[best]
            scores[start:stop, column] = block[rows, best]
            block[rows, best] = -np.inf
        if progress is not None:
            progress(stop - start)
    return indices, scores


def brute_force(vectors, k=K, centre=False):
    """The reference: every pair scored at once, sorted by (-score, index). For tests and small n."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if centre:
        vectors = vectors - vectors.mean(axis=0)
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-30)
    scores = vectors @ vectors.T
    np.fill_diagonal(scores, -np.inf)
    width = min(k, len(vectors) - 1)
    order = np.lexsort((np.broadcast_to(np.arange(len(vectors)), scores.shape), -scores), axis=1)[:, :width]
    return order, np.take_along_axis(scores, order, axis=1)
