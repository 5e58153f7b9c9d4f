"""What the report's map and "similar" links cost: layout and neighbour times on synthetic vectors.

    python bench/bench_map.py                          # 10k and 100k vectors, every method available
    python bench/bench_map.py --sizes 10000 --methods pca neighbours umap

The vectors are 512-d, L2-normalised float16 as {item}.emb.npz stores them, drawn around 40
random centres (a collection has clusters; uniform noise would flatter no method). Methods:
  neighbours  the report's top-5 cosine neighbours (review/neighbours.py: blocked matmul, exact up
              to its EXACT_LIMIT, then among a sample of that many candidates)
  pca         the report's layout (review/layout.py: PCA to 2-D)
  umap        umap-learn's UMAP (when installed; its first call includes numba's compilation)
  tsne        scikit-learn's t-SNE after PCA to 50 (Barnes-Hut), 10k only: it is far slower
Each figure is one run's wall time; the CPU model comes from lscpu.
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tagestimate.review import layout, neighbours  # noqa: E402
from bench_report import cpu_model  # noqa: E402 (lscpu's model name, /proc/cpuinfo without lscpu)


def vectors(count, dim=512, clusters=40, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    rows = centres[rng.integers(0, clusters, count)] + rng.normal(scale=1.5, size=(count, dim))
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float16)


def run(method, data):
    if method == "neighbours":
        neighbours.nearest(data)
    elif method == "pca":
        layout.pca_2d(data)
    elif method == "umap":
        import umap

        umap.UMAP(n_components=2, metric="cosine", random_state=None).fit_transform(data.astype(np.float32))
    elif method == "tsne":
        from sklearn.decomposition import PCA
        from sklearn.manifold import TSNE

        TSNE(2, init="pca").fit_transform(PCA(50).fit_transform(data.astype(np.float32)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--methods", nargs="+", default=["neighbours", "pca", "umap", "tsne"])
    args = parser.parse_args(argv)
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f}")
    print(f"neighbours: exact up to {neighbours.EXACT_LIMIT:,} images, then among that many sampled candidates")
    for size in args.sizes:
        data = vectors(size)
        for method in args.methods:
            if method == "umap":
                try:
                    import umap  # noqa: F401
                except ImportError:
                    print(f"{size:>9,} {method:<10} skipped: umap-learn is not installed")
                    continue
            if method == "tsne" and size > 20_000:
                print(f"{size:>9,} {method:<10} skipped: over 20k (hours on this machine)")
                continue
            start = time.perf_counter()
            run(method, data)
            print(f"{size:>9,} {method:<10} {time.perf_counter() - start:8.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
