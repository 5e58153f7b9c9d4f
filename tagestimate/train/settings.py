"""The trainer's settings, choices, file names and error type: what `--help` needs, without
TensorFlow. `multitrain_efficientnet.py` builds its parser from these, so `--help` answers at once.
"""

import dataclasses

from tagestimate.errors import UserError

WEIGHT_CHOICES = ("imagenet", "none")  # or a path
BALANCE_CHOICES = ("sqrt", "inverse", "none")
DISTRIBUTE_CHOICES = ("auto", "mirrored", "none")
LOSS_CHOICES = ("bce", "asl", "focal")
# --backbone choices (tagestimate.model.BACKBONES holds what each means; model.py loads no TensorFlow
# at import, but this list is what --help needs).
BACKBONE_CHOICES = ("efficientnetb0", "efficientnetb3", "efficientnetv2b0", "efficientnetv2s", "convnext_tiny")


class TrainingError(UserError, ValueError):
    """A problem with the data, flags or output folder; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """The flags of a run; the CLI's defaults are these (defined here only)."""

    data: str = "datasetpdm"
    out: str = "weights_pdm_multi"
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-4
    warmup_epochs: int = 1
    warmup_lr: float = 1e-3
    image_size: int = None  # None: the backbone's native size (224 for efficientnetb0)
    weights: str = "imagenet"
    val_split: float = 0.1
    seed: int = 777
    labelmap: str = None
    resume: bool = False
    overwrite: bool = False
    mixed_precision: bool = False
    distribute: str = "auto"
    patience: int = 5
    balance: str = "sqrt"
    augment: bool = True
    dropout: float = 0.2
    backbone: str = None  # None: efficientnetb0, or the backbone of a --weights tag model
    loss: str = "bce"
    asl_gamma_neg: float = 4.0
    asl_gamma_pos: float = 0.0
    asl_clip: float = 0.05
    focal_gamma: float = 2.0
    folds: int = 0  # 0: one split by --val-split; K >= 2: K-fold cross-validation (tagestimate.train.crossval)
    final: bool = False  # with --folds: then train on all images for the folds' median best epoch
    reviewed_weight: float = 1.0  # loss weight of images a person reviewed (manifest.csv source "reviewed")
    split: str = None  # not a flag: a split.csv whose sides a new run uses (one fold of --folds)


# What state.json keeps of a run's settings, so that `--resume` alone continues it; a flag given
# with --resume replaces the stored value. Labels, image size, channel order, dropout, seed and
# split always come from the run (model.json, state.json, split.csv) and cannot change.
RESUMABLE = ("data", "epochs", "batch_size", "lr", "warmup_epochs", "warmup_lr", "patience",
             "balance", "augment", "mixed_precision", "distribute", "loss", "asl_gamma_neg", "asl_gamma_pos",
             "asl_clip", "focal_gamma", "reviewed_weight")

# What a run writes into --out (with model.json, named in tagestimate.model); defined once.
BEST_WEIGHTS = "best.weights.h5"
LAST_WEIGHTS = "last.weights.h5"
HISTORY = "history.csv"
REPORT = "report.json"
SPLIT = "split.csv"
STATE = "state.json"
PREDICTIONS = "val_predictions.csv"
LABEL_ISSUES = "label_issues.csv"  # suspect labels (tagestimate.train.label_issues)
SCRIPT = "multitrain_efficientnet.py"


def interrupted_message(settings):
    """The one line printed on Ctrl-C: what finished and the command that continues the run."""
    import json
    import os
    import shlex

    state_path = os.path.join(settings.out, STATE)
    try:
        with open(state_path, encoding="utf-8") as handle:
            state = json.load(handle)
        done = int(state["epochs_done"])
    except (OSError, ValueError, KeyError, TypeError):
        state = None
    command = f"python {SCRIPT} --out {shlex.quote(settings.out)} --resume"
    if state is None:
        again = ("run the same command again with --overwrite" if os.path.isdir(settings.out) and os.listdir(settings.out)
                 else "run the same command again")
        return f"interrupted before the first epoch finished, so there is nothing to resume; {again}"
    stored = state.get("settings") if isinstance(state.get("settings"), dict) else {}
    total = stored.get("epochs", settings.epochs)
    if not stored:  # state.json of an older version: the command must say what it does not
        command += f" --data {shlex.quote(os.path.abspath(settings.data))} --epochs {total}"
    best = state.get("best_epoch")
    best_text = f"{BEST_WEIGHTS} holds epoch {best}" if best else f"no {BEST_WEIGHTS} yet"
    if done >= total:
        return (f"interrupted after the last epoch ({done} of {total}), before {REPORT} and the tuned "
                f"thresholds were written ({best_text}); finish with: {command}")
    return f"interrupted after epoch {done} of {total} ({best_text}); continue with: {command}"
