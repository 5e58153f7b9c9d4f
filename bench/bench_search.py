"""What search and learn-tag cost at 10 k, 100 k and 1 M images: synthetic 512-d vectors.

    python bench/bench_search.py                          # 10 k and 100 k, exact and approximate
    python bench/bench_search.py --sizes 1000000 --approx-up-to 100000   # 1 M: exact and ranking only

Per size, in a fresh child process (so that its peak memory is its own): clustered unit vectors
(one cluster per 100 images, float16 as the engines store them) are written as `{item}.emb.npz`
files of 1,000 images each; then
  build        collection.update() from nothing (reads every file, writes OUTPUT/.index/)
  update       collection.update() after one new item (the incremental path)
  exact        p50/p99 latency of the exact top-10 (float32 matrix-vector product, as search runs it), the
               first query (which makes the float32 copy) and one blocked float16 query (as learn-tag ranks)
  approximate  usearch HNSW: build time, its memory, p50/p99 latency, recall@10 against exact
  rank         learn-tag from 5 examples: fit the logistic regression, score and sort every image
  peak RSS     the child's peak resident memory (vectors, index and all)
The machine's CPU model (lscpu) and load average are printed with the figures.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
from bench_report import cpu_model  # noqa: E402 (lscpu's model name, /proc/cpuinfo without lscpu)

DIM = 512
PER_ITEM = 1000
QUERIES = 100  # per size; 30 above 100 k images (an exact query of a million takes a second on a loaded machine)


def synthetic(n, seed=0):
    """(n, DIM) float16 unit rows, round n/100 centres, made a block at a time."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, n // 100), DIM)).astype(np.float32)
    out = np.empty((n, DIM), np.float16)
    for start in range(0, n, 65536):
        size = min(65536, n - start)
        block = centres[rng.integers(0, len(centres), size)] + 0.7 * rng.standard_normal((size, DIM), np.float32)
        out[start:start + size] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def write_items(output, vectors, first=0):
    from tagestimate import embeddings

    for start in range(0, len(vectors), PER_ITEM):
        item = f"item{(first + start) // PER_ITEM:05d}"
        rows = vectors[start:start + PER_ITEM]
        data = embeddings.Embeddings(tuple(f"p{i:04d}" for i in range(len(rows))), rows, "dense", "b" * 64)
        with open(os.path.join(output, embeddings.file_name(item)), "wb") as handle:
            handle.write(embeddings.to_bytes(data))


def percentiles(seconds):
    return {"p50_ms": round(1000 * float(np.percentile(seconds, 50)), 3),
            "p99_ms": round(1000 * float(np.percentile(seconds, 99)), 3)}


def timed(function):
    started = time.perf_counter()
    result = function()
    return result, time.perf_counter() - started


def measure(n, approximate, folder):
    """One size's figures (run in a child process)."""
    from tagestimate.discover import index as collection, learn, nearest

    figures = {"images": n}
    vectors = synthetic(n)
    output = os.path.join(folder, "out")
    os.makedirs(output)
    _, figures["write_files_s"] = timed(lambda: write_items(output, vectors))
    index, figures["build_s"] = timed(lambda: collection.update(output, progress=False))
    write_items(output, synthetic(PER_ITEM, seed=1), first=n)
    index, figures["update_one_item_s"] = timed(lambda: collection.update(output, progress=False))
    figures["index_files_mb"] = round(sum(os.path.getsize(os.path.join(output, collection.FOLDER, name))
                                          for name in os.listdir(os.path.join(output, collection.FOLDER))) / 1e6, 1)
    rng = np.random.default_rng(2)
    queries = np.asarray(index.vectors[rng.choice(len(index), QUERIES if n <= 100_000 else 30, replace=False)],
                         np.float32)
    queries = queries + 0.05 * rng.standard_normal(queries.shape).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    exact, times = [], []
    searcher = nearest.Searcher(index, approximate=False)
    _, figures["exact_first_query_s"] = timed(lambda: searcher.search(queries[0], 10))  # + the float32 copy
    for query in queries:
        (rows, _), seconds = timed(lambda: searcher.search(query, 10))
        exact.append(set(rows.tolist()))
        times.append(seconds)
    figures["exact"] = percentiles(times)
    _, figures["exact_blocked_one_query_s"] = timed(lambda: nearest.exact(index.vectors, queries[0], 10))
    if approximate:
        ann, build = timed(lambda: nearest.build_approximate(index.vectors))
        times, hits = [], []
        for query, truth in zip(queries, exact):
            (rows, _), seconds = timed(lambda: nearest.search_approximate(ann, query, 10))
            times.append(seconds)
            hits.append(len(truth & set(rows.tolist())) / 10)
        figures["approximate"] = {"build_s": round(build, 2), "memory_mb": round(ann.memory_usage / 1e6, 1),
                                  **percentiles(times), "recall_at_10": round(float(np.mean(hits)), 4)}
    positives = np.asarray(index.vectors[:5], np.float32)
    import sklearn.linear_model  # noqa: F401 - imported before the clock starts, as by the command's start

    def rank():
        _, values, order, _ = learn.learn(index, "bench", positives, list(range(5)))
        return order

    _, figures["rank_from_5_examples_s"] = timed(rank)
    figures["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return figures


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--approx-up-to", type=int, default=1_000_000,
                        help="build and query the approximate index only up to this many images")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        with tempfile.TemporaryDirectory(prefix="bench-search-") as folder:
            print(json.dumps(measure(args.child, args.child <= args.approx_up_to, folder)))
        return
    print(f"CPU: {cpu_model()} ({os.cpu_count()} logical CPUs); load average before: "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)
    for n in args.sizes:
        result = subprocess.run([sys.executable, __file__, "--child", str(n), "--approx-up-to",
                                 str(args.approx_up_to)], capture_output=True, text=True)
        if result.returncode:
            print(f"{n:,} images: failed\n{result.stderr[-2000:]}", flush=True)
            continue
        print(json.dumps(json.loads(result.stdout.strip().splitlines()[-1])), flush=True)
    print(f"load average after: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
