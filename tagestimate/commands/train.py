"""Train the multi-label EfficientNetB0 illustration tagger from one folder of images per tag.

    python multitrain_efficientnet.py --data datasetpdm --out weights_pdm_multi
    python multitrain_efficientnet.py --out weights_pdm_multi --resume --epochs 40
    python multitrain_efficientnet.py --data datasetpdm --out cv5 --folds 5 --final   # cross-validated

Writes best.weights.h5 + model.json (what inference needs), last.weights.h5 + state.json
(for --resume), history.csv, report.json (validation scores and tuned thresholds) and
split.csv. The work is done by tagestimate.train.training, imported only once the flags are
parsed: TensorFlow takes seconds to load, and --help should not wait for it.
"""

import argparse
import sys

from tagestimate import cli
from tagestimate.files import HelpFormatter
from tagestimate.train.settings import (BACKBONE_CHOICES, BALANCE_CHOICES, DISTRIBUTE_CHOICES, LOSS_CHOICES,
                                        TrainSettings, interrupted_message)

DEFAULTS = TrainSettings()


def build_parser(prog=None):
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Train the multi-label EfficientNetB0 tagger on per-tag image folders and report "
                    "its validation scores honestly (item-grouped split, per-label F1).",
        formatter_class=HelpFormatter,
    )
    add = parser.add_argument
    add("--data", default=DEFAULTS.data,
        help="folder with one sub-folder of images per tag (folder names as in labelmap.py)")
    add("--out", default=DEFAULTS.out, help="folder for weights, model.json, history, report and split")
    add("--epochs", type=int, default=DEFAULTS.epochs,
        help="total epochs, warm-up included (with --resume: the total to reach)")
    add("--batch-size", type=int, default=DEFAULTS.batch_size,
        help="images per step (across all GPUs when several are used)")
    add("--lr", type=float, default=DEFAULTS.lr,
        help="Adam learning rate for the whole network (use about 1e-3 with --weights none)")
    add("--warmup-epochs", type=int, default=DEFAULTS.warmup_epochs,
        help="epochs that train only the head on a frozen backbone first (ignored with --weights none)")
    add("--warmup-lr", type=float, default=DEFAULTS.warmup_lr, help="learning rate of the head warm-up")
    add("--image-size", type=int, default=DEFAULTS.image_size,
        help="square input size in pixels (default: the backbone's native size, 224 for efficientnetb0)")
    add("--backbone", choices=BACKBONE_CHOICES, default=DEFAULTS.backbone,
        help="keras.applications backbone under NDL's head (default: efficientnetb0, NDL's, or the backbone "
             "of a --weights tag model)")
    add("--weights", default=DEFAULTS.weights, metavar="imagenet|none|PATH",
        help="starting weights: Keras' ImageNet backbone (downloaded once), none (random), or a file: "
             "Keras' notop EfficientNetB0 .h5, NDL's weights_ndllabelimage.hdf5, or a best.weights.h5 "
             "of an earlier run (with its model.json) to continue from")
    add("--val-split", type=float, default=DEFAULTS.val_split,
        help="fraction of item ids (books) held out for validation; the split is written to split.csv")
    add("--seed", type=int, default=DEFAULTS.seed, help="seed of the split, shuffling and augmentation")
    add("--labelmap", default=DEFAULTS.labelmap, metavar="JSON",
        help="JSON label map replacing the built-in NDL tag table (see labelmap.py)")
    add("--resume", action="store_true",
        help="continue the run in --out from last.weights.h5 with its labels, image size, split, data "
             "folder, epochs and other flags (flags given with --resume replace the stored ones)")
    add("--overwrite", action="store_true", help="replace a previous run found in --out")
    add("--mixed-precision", action="store_true",
        help="compute in float16 on GPUs (bfloat16 on CPUs); weights stay float32")
    add("--distribute", choices=DISTRIBUTE_CHOICES, default=DEFAULTS.distribute,
        help="auto: MirroredStrategy over all GPUs when several are visible; mirrored: always; none: never")
    add("--patience", type=int, default=DEFAULTS.patience,
        help="epochs without a lower validation loss before stopping (the learning rate is cut "
             "5-fold after half as many)")
    add("--balance", choices=BALANCE_CHOICES, default=DEFAULTS.balance,
        help="loss weight per image from its folder's size: 1/sqrt(n), 1/n, or none")
    add("--no-augment", dest="augment", action="store_false",
        help="turn off the random colour/flip/rotation/shift/zoom changes of training images "
             "(augment: %(default)s)")
    add("--dropout", type=float, default=DEFAULTS.dropout,
        help="dropout rate before the head (no weights: any value loads NDL's file)")
    add("--loss", choices=LOSS_CHOICES, default=DEFAULTS.loss,
        help="bce: binary cross-entropy (NDL's); asl: asymmetric loss (Ridnik et al. 2021); focal: focal loss")
    add("--asl-gamma-neg", type=float, default=DEFAULTS.asl_gamma_neg,
        help="--loss asl: focusing exponent of negatives (higher: easy negatives count less)")
    add("--asl-gamma-pos", type=float, default=DEFAULTS.asl_gamma_pos, help="--loss asl: focusing exponent of positives")
    add("--asl-clip", type=float, default=DEFAULTS.asl_clip,
        help="--loss asl: probability margin; negatives below it cost nothing")
    add("--focal-gamma", type=float, default=DEFAULTS.focal_gamma, help="--loss focal: focusing exponent")
    add("--folds", type=int, default=DEFAULTS.folds,
        help="K-fold cross-validation (K >= 2; 0: off): K item-grouped, stratified folds, each trained into "
             "--out/foldK/, then cv_report.json (mean and std over folds), oof_predictions.csv and thresholds "
             "tuned on the out-of-fold predictions; --resume skips finished folds")
    add("--final", action="store_true",
        help="with --folds: then train one model on all images for the folds' median best epoch and write "
             "best.weights.h5 + model.json (with the out-of-fold thresholds) into --out")
    add("--reviewed-weight", type=float, default=DEFAULTS.reviewed_weight, metavar="W",
        help="loss weight of the images a person reviewed (source 'reviewed' in --data's manifest.csv), on top "
             "of --balance; 1 weighs them like the others, 3 three times as much (must be above 0)")
    add("--verbose", action="store_true", help="log debugging detail")
    return parser


def given_flags(argv, prog=None):
    """Names of the settings given on the command line (as opposed to left at their defaults)."""
    return cli.given_flags(lambda: build_parser(prog), argv)


def main(argv=None, prog=None):
    """The command (`prog`: its name in usage lines, e.g. "tagestimate train"); returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(prog).parse_args(argv)
    cli.setup_logging(verbose=args.verbose)
    settings = TrainSettings(**{k: v for k, v in vars(args).items() if k != "verbose"})
    explicit = given_flags(argv, prog)
    # bad data, flags, label map, weights or run folder: a UserError, one sentence
    return cli.run(lambda: _train(settings, explicit, write_review_report),
                   interrupted=lambda: _interrupted_message(settings))


def write_review_report(out, model):
    """report.html of a finished run (tagestimate.review.train_report); a failure only warns.
    Passed into the training from here: the train wing does not import the review floor above it."""
    from tagestimate.review.train_report import write_report_or_warn

    return write_report_or_warn(out, model)


def _train(settings, explicit, write_report):
    if settings.folds:
        from tagestimate.train import crossval

        summary = crossval.format_summary(crossval.cross_validate(settings, explicit, write_report=write_report))
        from tagestimate.review.train_report import write_report_or_warn

        write_report_or_warn(settings.out, crossval=True)  # report.html: the folds' overview
        print(summary)
        return 0
    from tagestimate.train import metrics
    from tagestimate.train import training

    print(metrics.format_summary(training.train(settings, explicit, write_report=write_report)))
    return 0


def _interrupted_message(settings):
    if settings.folds:
        from tagestimate.train import crossval

        return crossval.interrupted_message(settings)
    return interrupted_message(settings)
