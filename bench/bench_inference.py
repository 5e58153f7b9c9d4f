"""Inference speed: model-only and end-to-end images/s, small crops and large scans, per backend.

    python bench/bench_inference.py                      # all backends available
    python bench/bench_inference.py --backend openvino --repeat 20 --scans 100
    python bench/bench_inference.py --engine ray         # Ray engine against the local one, same crops:
                                                         # median and range of ray/local over 5 rounds
    python bench/bench_inference.py --embeddings         # the crops with and without {item}.emb.npz
                                                         # (--no-embeddings), median over 5 rounds

Small crops: the 60 demo crops of input/1054192 repeated to 1,200 files. Large scans:
generated 3000x2200 JPEG pages with paper grain, text and a photograph.
Uses NDL's replica weights from ../shared when present, else a randomly initialised model
(speed does not depend on the weights' values).
"""

import argparse
import glob
import os
import shutil
import sys
import tempfile
import time

import numpy as np
from PIL import Image, ImageDraw

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tagestimate.tag.backends import choose_backend, make_runner, openvino_available  # noqa: E402
from tagestimate.images import load_image  # noqa: E402
from tagestimate.tag.inference import DEFAULT_BATCH_SIZE, find_items  # noqa: E402
from tagestimate.tag.local import Tagger  # noqa: E402
from tagestimate.tag.settings import InferenceSettings, ModelBundle  # noqa: E402
from tagestimate.tag.vectors import VectorPlan  # noqa: E402

REPLICA = os.path.join(os.path.dirname(ROOT), "shared", "data", "legacy-weights", "replica_ndllabelimage.hdf5")


def weights_file(workdir):
    if os.path.exists(REPLICA):
        return REPLICA
    import dataclasses

    from tagestimate.model import build_model, legacy_config, write_config

    folder = os.path.join(workdir, "weights")
    os.makedirs(folder)
    path = os.path.join(folder, "best.weights.h5")
    config = dataclasses.replace(legacy_config(), channel_order="RGB")
    build_model(len(config.labels), config.image_size).save_weights(path)
    write_config(folder, config)
    return path


def small_crops(workdir, repeat):
    crops = sorted(glob.glob(os.path.join(ROOT, "input", "1054192", "*.jpg")))
    root = os.path.join(workdir, "crops")
    for copy in range(repeat):
        folder = os.path.join(root, f"item{copy:03d}")
        os.makedirs(folder)
        for path in crops:
            shutil.copy(path, folder)
    return root, len(crops) * repeat


def large_scans(workdir, count, grain):
    """Page-like 3000x2200 JPEGs: paper (with scanner grain of this std), text, a photograph."""
    root = os.path.join(workdir, f"scans-{grain}", "book")
    os.makedirs(root)
    rng = np.random.default_rng(0)
    paper = np.empty((2200, 3000, 3), np.float32)
    paper[:] = (232, 224, 205)
    if grain:
        paper += rng.normal(0, grain, paper.shape[:2])[..., None]
    page = Image.fromarray(np.clip(paper, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(page)
    for line in range(60):
        y = 120 + line * 34
        for x in range(150, 2850, 26):
            if rng.random() < 0.85:
                draw.rectangle([x, y, x + rng.integers(12, 22), y + 20], fill=(45, 40, 38))
    crop = sorted(glob.glob(os.path.join(ROOT, "input", "1054192", "*.jpg")))[0]
    page.paste(Image.open(crop).convert("RGB").resize((1300, 1300), Image.BICUBIC), (850, 450))
    first = os.path.join(root, "page_0.jpg")
    page.save(first, quality=85)
    for index in range(1, count):
        shutil.copy(first, os.path.join(root, f"page_{index}.jpg"))
    return os.path.dirname(root), count, os.path.getsize(first)


def decode_ms(folder, naive=False):
    """ms per image for load_image, or (naive) for a full-size decode and resize."""
    import cv2

    path = sorted(glob.glob(os.path.join(folder, "*", "*.jpg")))[0]
    started = time.perf_counter()
    for _ in range(10):
        if naive:
            cv2.resize(np.asarray(Image.open(path).convert("RGB")), (224, 224), interpolation=cv2.INTER_LINEAR)
        else:
            load_image(path, 224)
    return (time.perf_counter() - started) * 100


def model_only(runner, config, batch_size, seconds=8.0):
    sample = glob.glob(os.path.join(ROOT, "input", "1054192", "*.jpg"))[:batch_size]
    batch = np.stack([load_image(p, config.image_size, config.channel_order) for p in sample])
    batch = np.resize(batch, (batch_size, *batch.shape[1:])).astype(np.float32)
    runner.predict(batch)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        runner.predict(batch)
        done += batch_size
    return done / (time.perf_counter() - started)


def end_to_end(runner, config, source, workdir, batch_size, name, vectors=None):
    items, _ = find_items(source)
    settings = InferenceSettings(output_dir=os.path.join(workdir, f"out-{name}"), batch_size=batch_size,
                                 overwrite=True, progress=False)
    summary = Tagger(runner, config, settings, vectors=vectors).run(items)
    return summary["images"] / summary["seconds"]


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=("all", "openvino", "tensorflow"), default="all",
                        help="backend(s) to measure (default: all)")
    parser.add_argument("--repeat", type=int, default=20, help="copies of the 60 demo crops (default: 20)")
    parser.add_argument("--scans", type=int, default=100, help="number of large scans (default: 100)")
    parser.add_argument("--engine", choices=("local", "ray"), default="local",
                        help="ray: the crops through the local engine and the Ray engine (a local Ray with "
                             "every CPU), both in each of --rounds rounds, in turn first; the median ray/local")
    parser.add_argument("--embeddings", action="store_true",
                        help="the crops end to end with embeddings ({item}.emb.npz, the default) and without "
                             "(--no-embeddings), both in each of --rounds rounds, in turn first; the median ratio")
    parser.add_argument("--rounds", type=int, default=5,
                        help="--engine ray, --embeddings: rounds of one run per side (default: 5)")
    parser.add_argument("--actors", type=int, default=None, help="--engine ray: actors (default: one per CPU)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                        help=f"images per model call (default: {DEFAULT_BATCH_SIZE})")
    return parser


def cpu_model():
    """The CPU's model name, as `lscpu` shows it."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def spread(values):
    """(median, lowest, highest) of a list of numbers."""
    ordered = sorted(values)
    middle = len(ordered) // 2
    median = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
    return median, ordered[0], ordered[-1]


def ray_against_local(args, backends):
    """Ray's images/s over the local engine's, per round, on the same crops; the median and range of rounds.

    Each round runs both engines back to back, in turn first (local, Ray, then Ray, local, ...), so a
    load that comes and goes on a shared machine slows both engines of a round alike and a slow
    drift cancels out; the median over rounds is the figure, the range says how far to trust it.
    """
    from tagestimate.tag import ray_engine

    backend = backends[0]
    workdir = tempfile.mkdtemp(prefix="bench-inference-")
    try:
        weights = weights_file(workdir)
        bundle = ModelBundle.load(weights)
        config = bundle.output_config
        folder, count = small_crops(workdir, args.repeat)
        items, _ = find_items(folder)
        runner = make_runner(choose_backend(backend), bundle)  # converted and cached before timing
        print(f"crops: {count} demo crops of 256 px in {len(items)} items; backend {backend}; "
              f"{cpu_model()}, {os.cpu_count()} cores; weights: {weights}\n")
        print(f"{'round':<6} {'first':<6} {'local img/s':>12} {'ray img/s':>10} {'ray/local':>10} "
              f"{'ray start-up s':>15} {'ray/local after start-up':>25} {'load (1 min)':>13}")
        ratios, startups, steady = [], [], []
        for round_ in range(args.rounds):
            rates = {}
            for engine in (("local", "ray") if round_ % 2 == 0 else ("ray", "local")):
                if engine == "local":
                    rates["local"] = end_to_end(runner, config, folder, workdir, args.batch_size, f"local-{round_}")
                else:
                    settings = InferenceSettings(output_dir=os.path.join(workdir, f"out-ray-{round_}"),
                                                 backend=backend, overwrite=True, progress=False,
                                                 batch_size=args.batch_size, engine="ray", actors=args.actors)
                    summary = ray_engine.run(settings, bundle, items)
                    rates["ray"] = summary["images_per_second"]
                    startups.append(summary["startup_seconds"])
                    # What a long run tends to: the images after the first item, over the time after it.
                    rates["steady"] = ((summary["images"] - summary["startup_images"])
                                       / (summary["seconds"] - summary["startup_seconds"]))
            ratios.append(rates["ray"] / rates["local"])
            steady.append(rates["steady"] / rates["local"])
            print(f"{round_ + 1:<6} {('local', 'ray')[round_ % 2]:<6} {rates['local']:>12.1f} {rates['ray']:>10.1f} "
                  f"{ratios[-1]:>10.0%} {startups[-1]:>15.1f} {steady[-1]:>25.0%} {os.getloadavg()[0]:>13.1f}")
        median, low, high = spread(ratios)
        print(f"\nray/local: median {median:.0%} of {args.rounds} rounds, range {low:.0%}-{high:.0%}; "
              f"Ray start-up median {spread(startups)[0]:.1f} s; after start-up: median {spread(steady)[0]:.0%}, "
              f"range {spread(steady)[1]:.0%}-{spread(steady)[2]:.0%}.\n"
              "Each ratio is the Ray engine's images/s over the local engine's, measured back to back in one "
              "round on the same crops, Ray's start-up (a local Ray, actors loading the model, until the first "
              "item is back) included; 'after start-up' leaves it out: the share a long run on a running cluster tends to. "
              "A load above the core count means other jobs shared the CPUs.")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def embeddings_against_plain(args, backends):
    """End-to-end images/s of the local engine with embeddings and without (--no-embeddings), on the same
    crops, back to back in each round, in turn first (as ray_against_local); the median of the ratios."""
    workdir = tempfile.mkdtemp(prefix="bench-embeddings-")
    try:
        weights = weights_file(workdir)
        bundle = ModelBundle.load(weights)
        config = bundle.output_config
        folder, count = small_crops(workdir, args.repeat)
        with_vectors = VectorPlan(bundle.config.embedding, bundle.sha256)
        print(f"crops: {count} demo crops of 256 px in {args.repeat} items; {cpu_model()}, {os.cpu_count()} cores; "
              f"batch size {args.batch_size}; weights: {weights}\n")
        for backend in backends:
            runner = make_runner(choose_backend(backend), bundle)  # converted and cached before timing
            print(f"{'backend':<11} {'round':<6} {'without img/s':>14} {'with img/s':>11} {'with/without':>13} "
                  f"{'load (1 min)':>13}")
            ratios, plain, full = [], [], []
            for round_ in range(args.rounds):
                rates = {}
                for side in (("without", "with") if round_ % 2 == 0 else ("with", "without")):
                    rates[side] = end_to_end(runner, config, folder, workdir, args.batch_size,
                                             f"{backend}-{side}-{round_}", with_vectors if side == "with" else None)
                plain.append(rates["without"])
                full.append(rates["with"])
                ratios.append(rates["with"] / rates["without"])
                print(f"{backend:<11} {round_ + 1:<6} {rates['without']:>14.1f} {rates['with']:>11.1f} "
                      f"{ratios[-1]:>13.1%} {os.getloadavg()[0]:>13.1f}")
            median, low, high = spread(ratios)
            print(f"{backend}: without {spread(plain)[0]:.1f} img/s, with {spread(full)[0]:.1f} img/s (medians); "
                  f"with/without median {median:.1%} of {args.rounds} rounds, range {low:.1%}-{high:.1%}\n")
        if len(backends) > 1:
            print(vector_difference(bundle, config, args.batch_size))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def vector_difference(bundle, config, batch_size):
    """How far OpenVINO's vectors are from TensorFlow's on the demo crops, as stored and as raw."""
    from tagestimate import embeddings

    sample = sorted(glob.glob(os.path.join(ROOT, "input", "1054192", "*.jpg")))[:batch_size]
    batch = np.stack([load_image(p, config.image_size, config.channel_order) for p in sample]).astype(np.float32)
    ov, tf = (make_runner(name, bundle).infer(batch) for name in ("openvino", "tensorflow"))
    ours, theirs = embeddings.normalise(ov[1]), embeddings.normalise(tf[1])
    cosine = (ours * theirs).sum(axis=1)
    stored = (ours.astype(np.float16) != theirs.astype(np.float16)).mean()
    return (f"OpenVINO vs TensorFlow on {len(sample)} demo crops: normalised vectors differ by at most "
            f"{np.abs(ours - theirs).max():.2e} (cosine at least {cosine.min():.7f}); {stored:.2%} of the stored "
            f"float16 values differ; probabilities differ by at most {np.abs(ov[0] - tf[0]).max():.2e}")


def main(argv=None):
    args = build_parser().parse_args(argv)
    backends = ["openvino", "tensorflow"] if args.backend == "all" else [args.backend]
    if "openvino" in backends and not openvino_available():
        if args.backend == "openvino":
            sys.exit("error: --backend openvino needs the openvino package (a requirement): pip install openvino")
        print("openvino is not installed (it is a requirement): measuring TensorFlow alone")
        backends.remove("openvino")
    if args.engine == "ray":
        return ray_against_local(args, backends)
    if args.embeddings:
        return embeddings_against_plain(args, backends)
    workdir = tempfile.mkdtemp(prefix="bench-inference-")
    try:
        weights = weights_file(workdir)
        bundle = ModelBundle.load(weights)
        config = bundle.output_config
        sets = [("crops", *small_crops(workdir, args.repeat))]
        for grain in (0, 4):
            folder, count, size = large_scans(workdir, args.scans, grain)
            sets.append((f"scans-{'grain' if grain else 'clean'}", folder, count))
            print(f"scans-{'grain' if grain else 'clean'}: {count} pages of 3000x2200, {size / 1e6:.2f} MB each")
        print(f"crops: {sets[0][2]} demo crops of 256 px")
        for name, folder, _ in sets:
            print(f"decode + resize, {name}: {decode_ms(folder):.1f} ms per image on one core "
                  f"(a full-size decode: {decode_ms(folder, naive=True):.1f} ms)")
        print(f"weights: {weights}\ncpu cores: {os.cpu_count()}, batch size {args.batch_size}\n")
        print(f"{'backend':<11} {'model only':>11}" + "".join(f" {name:>12}" for name, _, _ in sets)
              + "   (end-to-end images/s)")
        for backend in backends:
            runner = make_runner(choose_backend(backend), bundle)
            model_rate = model_only(runner, config, args.batch_size)
            rates = [end_to_end(runner, config, folder, workdir, args.batch_size, f"{backend}-{name}")
                     for name, folder, _ in sets]
            print(f"{backend:<11} {model_rate:>11.1f}" + "".join(f" {rate:>12.1f}" for rate in rates)
                  + "   e2e/model " + f"{rates[0] / model_rate:.0%}; scans/crops "
                  + ", ".join(f"{rate / rates[0]:.0%}" for rate in rates[1:]))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
