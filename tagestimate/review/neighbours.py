"""Nearest neighbours of every image of a collection, by cosine on its embeddings ({item}.emb.npz).

The vectors are L2-normalised, so cosine is a dot product: the collection is compared with itself
one block of rows at a time (a (block, n) float32 score matrix, so memory stays bounded whatever
n), keeping each row's top k with argpartition. Exact up to EXACT_LIMIT images; above that each
image's neighbours are searched among a fixed random sample of EXACT_LIMIT candidates (the time
grows as n * EXACT_LIMIT, not n squared), and the report says so.
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


def nearest(vectors, k=K, limit=EXACT_LIMIT, block_floats=BLOCK_FLOATS, progress=None):
    """(indices, scores): each row's k most similar other rows, most similar first.

    indices is (n, k) int64 (-1 where fewer than k others exist), scores (n, k) float32 cosine.
    Equal scores go to the lower index, so the result does not depend on the block size.
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    count = len(vectors)
    pool = candidates(count, limit)
    base = np.ascontiguousarray(vectors[pool].T)  # (dim, m)
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
        block = vectors[start:stop] @ base  # (rows, m)
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


def brute_force(vectors, k=K):
    """The reference: every pair scored at once, sorted by (-score, index). For tests and small n."""
    vectors = np.asarray(vectors, dtype=np.float32)
    scores = vectors @ vectors.T
    np.fill_diagonal(scores, -np.inf)
    width = min(k, len(vectors) - 1)
    order = np.lexsort((np.broadcast_to(np.arange(len(vectors)), scores.shape), -scores), axis=1)[:, :width]
    return order, np.take_along_axis(scores, order, axis=1)
