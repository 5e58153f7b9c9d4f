"""The 2-D layout of the report's map (html/map.html): every image's embedding placed on a plane.

PCA to 2-D: a 512x512 covariance and its two leading eigenvectors, well under a second at 100k
images and deterministic, with nothing to install (bench/bench_map.py compares it with UMAP and
t-SNE; docs/report.md gives the figures and why). Coordinates are scaled into [0, 1] on both axes
(the same scale, so distances keep their meaning).
"""

import numpy as np

MAP_LIMIT = 100_000  # points drawn; above, a fixed random sample (the page says so)
SEED = 0
METHOD = "PCA"


def sample(count, limit=MAP_LIMIT, seed=SEED):
    """Indices of the images the map shows: all up to `limit`, else a fixed sorted random sample."""
    if count <= limit:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, limit, replace=False))


def pca_2d(vectors):
    """(n, 2) float32 in [0, 1]: the vectors projected on their two main axes, signs fixed."""
    data = np.asarray(vectors, dtype=np.float32)
    if len(data) == 0:
        return np.zeros((0, 2), np.float32)
    centred = data - data.mean(axis=0)
    covariance = centred.T @ centred
    values, axes = np.linalg.eigh(covariance.astype(np.float64))
    axes = axes[:, ::-1][:, :2].astype(np.float32)
    if axes.shape[1] < 2:
        axes = np.pad(axes, ((0, 0), (0, 2 - axes.shape[1])))
    # an eigenvector's sign is arbitrary: make each axis's largest loading positive, so a rebuild
    # on another machine draws the same picture, not a mirror of it
    signs = np.sign(axes[np.abs(axes).argmax(axis=0), [0, 1]])
    points = centred @ (axes * np.where(signs == 0, 1, signs))
    return scale(points)


def scale(points):
    """Points moved and scaled (one factor for both axes) into [0, 1], centred on the shorter axis."""
    points = np.asarray(points, dtype=np.float64)
    low, high = points.min(axis=0), points.max(axis=0)
    span = float((high - low).max()) or 1.0
    placed = (points - low) / span
    placed += (1 - (high - low) / span) / 2
    return placed.astype(np.float32)
