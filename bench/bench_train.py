"""Training speed: input pipeline images/s (decode + resize, what feeds the model; with augmentation
on the CPU for comparison) and training images/s, side by side, with augmentation in the tf.data
pipeline (the trainer's way on a CPU alone) and inside the training step (its way with a GPU).

    python bench/bench_train.py                          # 224 px, batch 32
    python bench/bench_train.py --image-size 224 --batch-size 64 --steps 30 --mixed-precision

Images: the 60 demo crops of input/1054192 (NDL crops, 256 px high, like the crawler's)
repeated to --images files, or every image under --data. The model starts from random
weights (speed does not depend on their values); the first training steps, which build the
graph, are not timed.
"""

import argparse
import glob
import os
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tagestimate.train import pipeline  # noqa: E402
from tagestimate.train import training
from tagestimate.files import HelpFormatter  # noqa: E402
from tagestimate.images import list_images  # noqa: E402
from tagestimate.labels import LABELS  # noqa: E402
from tagestimate.model import build_model  # noqa: E402
from tagestimate.train.settings import BACKBONE_CHOICES, TrainSettings  # noqa: E402

DEFAULTS = TrainSettings()  # the trainer's own defaults


def demo_images(workdir, count):
    crops = sorted(glob.glob(os.path.join(ROOT, "input", "1054192", "*.jpg")))
    if not crops:
        sys.exit("error: input/1054192 has no demo crops; pass --data with a folder of images")
    paths = []
    for i in range(count):
        path = os.path.join(workdir, f"{i // len(crops)}_{i}_0.jpg")
        shutil.copy(crops[i % len(crops)], path)
        paths.append(path)
    return paths


def pipeline_rate(paths, args, augment):
    """Images/s of make_dataset over `paths` (one pass after a warm-up batch)."""
    augmenter = pipeline.build_augmenter(seed=0) if augment else None
    targets = [[0.0] * len(LABELS)] * len(paths)
    dataset = pipeline.make_dataset(paths, args.image_size, "RGB", args.batch_size, targets,
                                    augmenter=augmenter, shuffle_seed=0)
    iterator = iter(dataset)
    next(iterator)  # builds the graph and fills the prefetch buffer
    start, seen = time.perf_counter(), 0
    for images, _ in iterator:
        seen += int(images.shape[0])
    return seen / (time.perf_counter() - start)


class _StepTimer(training.keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.times = []

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter())


def training_rate(paths, args, on_device=True):
    """Images/s of model.fit with augmentation in the training step (on_device) or in tf.data,
    steps after the first --warmup-steps."""
    keras = training.keras
    augmenter = pipeline.build_augmenter(seed=0)
    if args.mixed_precision:
        keras.mixed_precision.set_global_policy(training.mixed_precision_policy())
    model = build_model(len(LABELS), args.image_size or 224, 0.2, args.backbone)
    if on_device:
        model = pipeline.AugmentingModel(model, augmenter, "RGB")
    training.compile_model(model, 1e-4)
    targets = [[float(i % 2)] * len(LABELS) for i in range(len(paths))]
    dataset = pipeline.make_dataset(paths, args.image_size, "RGB", args.batch_size, targets,
                                    augmenter=None if on_device else augmenter, shuffle_seed=0).repeat()
    timer = _StepTimer()
    model.fit(dataset, steps_per_epoch=args.warmup_steps + args.steps, epochs=1, callbacks=[timer],
              shuffle=False, verbose=0)
    timed = timer.times[args.warmup_steps - 1:]
    return args.batch_size * (len(timed) - 1) / (timed[-1] - timed[0])


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument("--data", default=None, help="folder of images to read instead of the demo crops")
    parser.add_argument("--images", type=int, default=640, help="number of demo-crop copies to read")
    parser.add_argument("--image-size", type=int, default=224, help="model input size in pixels")
    parser.add_argument("--backbone", choices=BACKBONE_CHOICES, default="efficientnetb0", help="backbone to time")
    parser.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size, help="images per batch")
    parser.add_argument("--steps", type=int, default=10, help="training steps timed")
    parser.add_argument("--warmup-steps", type=int, default=3, help="training steps run before timing")
    parser.add_argument("--mixed-precision", action="store_true",
                        help="time training with mixed precision (float16 on GPU, bfloat16 on CPU)")
    parser.add_argument("--no-train", dest="train", action="store_false", help="time the input pipeline only")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    workdir = tempfile.mkdtemp(prefix="bench_train_")
    try:
        paths = list_images(args.data) if args.data else demo_images(workdir, args.images)
        gpus = len(training.tf.config.list_logical_devices("GPU"))
        print(f"{len(paths)} images, {args.image_size} px, batch {args.batch_size}, "
              f"{os.cpu_count()} CPU cores, {gpus} GPU(s)")
        print(f"input pipeline, decode + resize (feeds the model): {pipeline_rate(paths, args, False):8.1f} images/s")
        print(f"input pipeline, decode + resize + CPU augment:     {pipeline_rate(paths, args, True):8.1f} images/s")
        if args.train:
            precision = "mixed precision" if args.mixed_precision else "float32"
            for on_device, where in ((False, "augment in tf.data (CPU default)"),
                                     (True, "augment in the step (GPU default)")):
                rate = training_rate(paths, args, on_device)
                print(f"training, {where + ':':<33}{rate:8.1f} images/s ({precision}, {args.backbone})")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
