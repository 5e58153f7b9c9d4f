"""Suspect-label ranking: tagestimate.train.label_issues against cleanlab's multi-label
find_label_issues, on synthetic data with known misfiled images (docs/training.md, "Suspect labels").

    python bench/bench_label_issues.py            # needs cleanlab importable (pip install cleanlab)

Folders follow NDL's shape: a folder gives its tag and the tag's parent. A share of the images
is misfiled (moved to another folder), then an imperfect "model" gives each image probabilities
from its true labels (per-label strength, Gaussian noise on the logit, plus a pull towards the
misfiled folder, as a model trained on noisy data has). Reported: precision@k (k = the number
misfiled) of both rankings, the flagged sets' precision and recall, and the time each takes.
"""

import argparse
import time

import numpy as np

from tagestimate.train.label_issues import find_issues

# folder -> labels (parent first), over 6 labels: 0 graphic, 1 graphic_map, 2 graphic_illust,
# 3 picture, 4 picture_indoor, 5 picture_landmark.
FOLDERS = [(0, 1), (0,), (3, 4), (3, 5), (3,), (0, 2)]


def synthetic(n, noise_share, seed, pull=0.8, spread=1.6):
    rng = np.random.default_rng(seed)
    true_folder = rng.integers(0, len(FOLDERS), n)
    given_folder = true_folder.copy()
    flipped = rng.random(n) < noise_share
    for i in np.flatnonzero(flipped):
        given_folder[i] = rng.choice([f for f in range(len(FOLDERS)) if f != true_folder[i]])
    def vector(folder):
        v = np.zeros(6)
        v[list(FOLDERS[folder])] = 1
        return v
    true = np.array([vector(f) for f in true_folder])
    given = np.array([vector(f) for f in given_folder])
    strength = rng.uniform(1.5, 3.5, 6)  # some labels are easier than others
    logits = (2 * true - 1) * strength + rng.normal(0, spread, true.shape) + pull * (2 * given - 1)
    return given, 1 / (1 + np.exp(-logits)), flipped


def precision_at_k(ranking, flipped):
    k = int(flipped.sum())
    return float(flipped[np.asarray(ranking[:k], dtype=int)].mean()) if k else float("nan")


def ours(given, p):
    order, scores, _, _ = find_issues(given, p)
    everything = np.argsort(-scores, kind="stable")
    return order, everything


def theirs(given, p):
    from cleanlab.multilabel_classification.filter import find_label_issues
    from cleanlab.multilabel_classification.rank import get_label_quality_scores

    labels = [list(np.flatnonzero(row)) for row in given]
    flagged = find_label_issues(labels=labels, pred_probs=p, return_indices_ranked_by="self_confidence")
    everything = np.argsort(get_label_quality_scores(labels, p), kind="stable")
    return flagged, everything


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--noise", type=float, nargs="+", default=[0.05, 0.1, 0.2])
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    print("noise  method    P@k(flagged)  P@k(all ranked)  flagged precision  flagged recall  seconds")
    for noise in args.noise:
        for name, method in (("ours", ours), ("cleanlab", theirs)):
            figures = []
            for seed in range(args.seeds):
                given, p, flipped = synthetic(args.images, noise, seed)
                start = time.perf_counter()
                flagged, everything = method(given, p)
                took = time.perf_counter() - start
                hits = flipped[np.asarray(flagged, dtype=int)].sum()
                figures.append((precision_at_k(flagged, flipped), precision_at_k(everything, flipped),
                                hits / max(len(flagged), 1), hits / flipped.sum(), took))
            mean = np.mean(figures, axis=0)
            print(f"{noise:<6} {name:<9} {mean[0]:>12.3f}  {mean[1]:>15.3f}  {mean[2]:>17.3f}  {mean[3]:>14.3f}"
                  f"  {mean[4]:>7.3f}")


if __name__ == "__main__":
    main()
