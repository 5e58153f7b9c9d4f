"""A run and its folder: the checks of --out, what `--resume` reads back (state.json,
model.json, checked field by field), and `resolve_run`, which turns the flags (and, with
--resume, the stored run) into one frozen `RunSpec` before anything is loaded or written.

A damaged or foreign file stops the run with one sentence naming the file and the field,
never a KeyError. No TensorFlow here.
"""

import csv
import dataclasses
import io
import json
import logging
import numbers
import os

from tagestimate import model as tag_model
from tagestimate.files import plural, write_atomic
from tagestimate.labels import NDL_LABELS, from_dict, load_labelmap
from tagestimate.train.settings import (BACKBONE_CHOICES, BALANCE_CHOICES, BEST_WEIGHTS, DISTRIBUTE_CHOICES,
                                        HISTORY, LABEL_ISSUES, LAST_WEIGHTS, LOSS_CHOICES, PREDICTIONS, REPORT, RESUMABLE, SPLIT,
                                        STATE, WEIGHT_CHOICES, TrainingError, TrainSettings)

log = logging.getLogger(__name__)

# What a run writes into --out; defined once so that checks, docs and tests agree.
RUN_FILES = (tag_model.CONFIG_NAME, BEST_WEIGHTS, LAST_WEIGHTS, HISTORY, REPORT, SPLIT, STATE, PREDICTIONS)

STATE_VERSION = 2  # 1: no "settings", "finished" or "version" (data and epochs came from the flags)
PHASES = ("warmup", "finetune")
_FIX = "restore the file from a backup, or start a new run with --overwrite or another --out"


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _read_object(path):
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise TrainingError(f"--resume: {path} is missing; {_FIX}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise TrainingError(f"--resume: cannot read {path} ({error}); {_FIX}") from None
    if not isinstance(data, dict):
        raise TrainingError(f"--resume: {path} does not hold a JSON object; {_FIX}")
    return data


def _bad(path, field, expected):
    return TrainingError(f"--resume: {path} has no valid '{field}' ({expected}); {_FIX}")


# field: (check, what it must be); None values are allowed where the check says so.
_STATE_FIELDS = {
    "epochs_done": (lambda v: _is_int(v) and v >= 0, "a whole number of epochs"),
    "phase": (lambda v: v in PHASES, "warmup or finetune"),
    "pretrained": (lambda v: isinstance(v, bool), "true or false"),
    "seed": (_is_int, "a whole number"),
    "val_split": (lambda v: _is_number(v) and 0 < v <= 0.5, "a number above 0 and at most 0.5"),
    "learning_rate": (lambda v: _is_number(v) and v > 0, "a positive number"),
    "best_val_loss": (lambda v: v is None or _is_number(v), "a number or null"),
    "best_epoch": (lambda v: v is None or (_is_int(v) and v >= 1), "an epoch number or null"),
}
_DEFAULTS = TrainSettings()


def _setting_ok(name, value):
    choices = {"balance": BALANCE_CHOICES, "distribute": DISTRIBUTE_CHOICES, "loss": LOSS_CHOICES}
    if name in choices:
        return value in choices[name]
    default = getattr(_DEFAULTS, name)
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return _is_int(value)
    if isinstance(default, float):
        return _is_number(value)
    return isinstance(value, str) and value != ""


def read_state(out):
    """state.json of the run in `out`, every field checked; TrainingError names a bad one."""
    path = os.path.join(out, STATE)
    state = _read_object(path)
    for field, (check, expected) in _STATE_FIELDS.items():
        if field not in state or not check(state[field]):
            raise _bad(path, field, expected)
    settings = state.get("settings")
    if settings is not None:
        if not isinstance(settings, dict):
            raise _bad(path, "settings", "an object of the run's flags")
        for name in RESUMABLE:
            if name in settings and not _setting_ok(name, settings[name]):
                raise _bad(path, f"settings.{name}", f"like --{name.replace('_', '-')}'s values")
    if "finished" in state and not isinstance(state["finished"], bool):
        raise _bad(path, "finished", "true or false")
    return state


def read_config(out):
    """The ModelConfig of the run in `out`, with what --resume needs beyond what inference needs
    (the label map, dropout and starting weights, which model.json may leave out)."""
    try:
        config = tag_model.read_config(out)
    except tag_model.WeightsError as error:
        raise TrainingError(f"--resume: {error}; {_FIX}") from None
    path = os.path.join(out, tag_model.CONFIG_NAME)
    if config.labelmap is None:
        raise _bad(path, "labelmap", "the label map the run trained with")
    if config.dropout is None:
        raise _bad(path, "dropout", "a number in [0, 1)")
    if config.training is None or not isinstance(config.training.get("initial_weights"), str):
        raise _bad(path, "training.initial_weights", "a description of the starting weights")
    return config


def resumed_settings(settings, state, explicit):
    """`settings` with the run's stored values for every resumable flag not in `explicit`
    (the flags given on the command line; None: all of them were)."""
    stored = state.get("settings") or {}
    explicit = set(vars(settings)) if explicit is None else set(explicit)
    changes = {name: stored[name] for name in RESUMABLE if name in stored and name not in explicit}
    return dataclasses.replace(settings, **changes)


def stored_settings(settings):
    """The resumable flags of a run, for state.json (the data folder as an absolute path)."""
    values = {name: getattr(settings, name) for name in RESUMABLE}
    values["data"] = os.path.abspath(settings.data)
    return values


# ---------------------------------------------------------------- the run folder

def read_json(path):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def prepare_output(out, resume, overwrite):
    """Check --out against --resume/--overwrite; never replace a run silently."""
    existing = [name for name in RUN_FILES if os.path.exists(os.path.join(out, name))]
    if resume:
        if overwrite:
            raise TrainingError("--resume and --overwrite contradict each other; pass one of them")
        missing = [n for n in (LAST_WEIGHTS, STATE, tag_model.CONFIG_NAME, SPLIT)
                   if not os.path.exists(os.path.join(out, n))]
        if missing:
            raise TrainingError(f"--resume: {out} holds no run to continue ({', '.join(missing)} missing); "
                                "drop --resume to start a new run")
        return
    if existing and not overwrite:
        raise TrainingError(f"{out} already holds a training run ({', '.join(existing)}); pass --resume "
                            "to continue it, --overwrite to replace it, or choose another --out")
    os.makedirs(out, exist_ok=True)


def clear_run(out):
    """Remove the files of an earlier run from `out` (--overwrite); other files stay."""
    for name in (*RUN_FILES, LABEL_ISSUES):
        path = os.path.join(out, name)
        if os.path.exists(path):
            os.remove(path)


def trim_history(path, epochs_done):
    """Drop history.csv rows of epochs after `epochs_done` (logged just before an interruption)."""
    if not os.path.exists(path):
        return
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    kept = rows[:1] + [row for row in rows[1:] if row and row[0].isdigit() and int(row[0]) < epochs_done]
    if len(kept) < len(rows):
        text = io.StringIO(newline="")
        csv.writer(text).writerows(kept)
        write_atomic(path, text.getvalue())


# ---------------------------------------------------------------- the run spec

def check_settings(settings):
    """TrainingError naming the first flag whose value cannot work."""
    for flag, value, lowest in (("--epochs", settings.epochs, 1), ("--batch-size", settings.batch_size, 1),
                                ("--image-size", settings.image_size, 32), ("--patience", settings.patience, 1),
                                ("--warmup-epochs", settings.warmup_epochs, 0),
                                ("--asl-gamma-neg", settings.asl_gamma_neg, 0), ("--asl-gamma-pos", settings.asl_gamma_pos, 0),
                                ("--asl-clip", settings.asl_clip, 0), ("--focal-gamma", settings.focal_gamma, 0)):
        if value is not None and value < lowest:
            raise TrainingError(f"{flag} {value} is too small; it must be at least {lowest}")
    for flag, value in (("--lr", settings.lr), ("--warmup-lr", settings.warmup_lr)):
        if not value > 0:
            raise TrainingError(f"{flag} {value} must be a positive learning rate such as 1e-4")
    if not 0 < settings.reviewed_weight < float("inf"):
        raise TrainingError(f"--reviewed-weight {settings.reviewed_weight} must be a number above 0 (1 weighs reviewed "
                            "images like the others, 3 three times as much)")
    if not 0 <= settings.dropout < 1:
        raise TrainingError(f"--dropout {settings.dropout} must be in [0, 1)")
    if not settings.asl_clip < 1:
        raise TrainingError(f"--asl-clip {settings.asl_clip} must be in [0, 1)")
    if settings.backbone is not None and settings.backbone not in BACKBONE_CHOICES:
        raise TrainingError(f"--backbone {settings.backbone} is not one of {', '.join(BACKBONE_CHOICES)}")
    if settings.folds == 1 or settings.folds < 0:
        raise TrainingError(f"--folds {settings.folds}: cross-validation needs at least 2 folds (0 turns it off)")
    if settings.final and settings.folds < 2:
        raise TrainingError("--final trains on all images for the folds' median best epoch; it needs --folds K")
    if settings.weights not in WEIGHT_CHOICES and not os.path.isfile(settings.weights):
        raise TrainingError(f"--weights {settings.weights}: no such file; pass imagenet, none, or the path "
                            "of a weight file (NDL's weights_ndllabelimage.hdf5, Keras' notop .h5, or a "
                            "best.weights.h5 of an earlier run)")


@dataclasses.dataclass(frozen=True)
class StartingWeights:
    """What --weights names, read without building a model: its kind, the channel order its
    weights were trained with, whether its head fits the labels, and a description."""

    source: str  # imagenet, none, or a path
    kind: str  # "none", "imagenet", tag_model.LEGACY or tag_model.KERAS
    channel_order: str
    with_head: bool
    description: str
    backbone: str = None  # the class name a weight file was trained with; None: any (imagenet, none)


def starting_weights(weights, labels, backbone=None):
    """StartingWeights for --weights. A legacy HDF5 (NDL's file, or Keras' notop EfficientNetB0 .h5)
    loads by layer name, head included when its outputs are NDL's labels; a tag model of this
    project loads with its model.json. Each keeps the channel order (and backbone) its weights were
    trained with. `backbone` (--backbone, None: the default) only names the ImageNet weights."""
    if weights == "none":
        return StartingWeights(weights, "none", "RGB", False, "random initialisation")
    if weights == "imagenet":
        name = tag_model.backbone_spec(backbone or tag_model.DEFAULT_BACKBONE).keras_name
        return StartingWeights(weights, "imagenet", "RGB", False, f"ImageNet (Keras {name})")
    if tag_model.detect_weights_kind(weights) == tag_model.LEGACY:
        outputs = tag_model.legacy_output_count(weights)
        # Only NDL's own outputs, in NDL's order, are what its file's head means.
        with_head = outputs == len(labels) and tuple(labels) == NDL_LABELS
        if outputs is not None and not with_head:
            log.warning("%s has %d %s, not this label map's; only its backbone is loaded", weights, outputs,
                        plural(outputs, "output"))
        # A file with a tag head is NDL's layout, trained on BGR; a notop file is Keras' (RGB).
        order = "RGB" if outputs is None else "BGR"
        return StartingWeights(weights, tag_model.LEGACY, order, with_head,
                               f"{weights} ({'backbone and head' if with_head else 'backbone'}, legacy HDF5)",
                               tag_model.BACKBONE)
    config, _ = tag_model.describe_weights(weights)
    with_head = config.labels == tuple(labels)
    if not with_head:
        log.warning("%s was trained for other labels; only its backbone is loaded", weights)
    return StartingWeights(weights, tag_model.KERAS, config.channel_order, with_head,
                           f"{weights} ({'backbone and head' if with_head else 'backbone'})", config.backbone)


def choose_backbone(settings, start):
    """The Backbone of a new run: --backbone, else that of the --weights file, else efficientnetb0.
    A --backbone that contradicts the weights file is a TrainingError."""
    if start.backbone is None:
        return tag_model.backbone_spec(settings.backbone or tag_model.DEFAULT_BACKBONE)
    stored = tag_model.backbone_spec(start.backbone)
    if settings.backbone is not None and settings.backbone != stored.flag:
        raise TrainingError(f"--weights {settings.weights} holds a {stored.flag} model, not --backbone "
                            f"{settings.backbone}; drop --backbone or pass other weights")
    return stored


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """Everything a run (new or resumed) trains with, resolved once before anything is loaded.

    `settings` holds the flags, with --resume's stored values filled in; the rest comes from
    the flags on a new run and from model.json, state.json on a resumed one.
    """

    settings: TrainSettings
    labels_map: object  # tagestimate.labels.LabelMap
    image_size: int
    channel_order: str
    dropout: float
    seed: int
    val_split: float
    pretrained: bool
    initial_weights: str  # a description, as model.json's training.initial_weights
    start: StartingWeights = None  # None on --resume (last.weights.h5 is loaded instead)
    state: dict = dataclasses.field(default_factory=dict)  # state.json on --resume, else empty
    evaluate_only: bool = False  # stopped after its last epoch, before its report
    backbone: str = tag_model.BACKBONE  # model.json's class name (tagestimate.model.BACKBONES)

    @property
    def resume(self):
        return self.settings.resume

    @property
    def labels(self):
        return list(self.labels_map.labels)

    @property
    def epochs_done(self):
        return self.state.get("epochs_done", 0)

    @property
    def run_seed(self):
        """A resumed run draws new shuffles and augmentations rather than replaying epoch 0's."""
        return self.seed + self.epochs_done


def new_run_spec(settings):
    """The RunSpec of a new run from its flags (label map, starting weights, backbone, image size);
    checks and writes nothing."""
    labels_map = load_labelmap(settings.labelmap)
    start = starting_weights(settings.weights, labels_map.labels, settings.backbone)
    backbone = choose_backbone(settings, start)
    return RunSpec(settings, labels_map, settings.image_size or backbone.native_size, start.channel_order,
                   settings.dropout, settings.seed, settings.val_split, pretrained=settings.weights != "none",
                   initial_weights=start.description, start=start, backbone=backbone.keras_name)


def resolve_run(settings, explicit=None):
    """The RunSpec for `settings`: flags checked, --out checked, and with --resume the run's
    state.json (flags not in `explicit`), model.json (labels, image size, channel order,
    dropout) and seed and split. Creates a missing --out, writes no file."""
    check_settings(settings)
    prepare_output(settings.out, settings.resume, settings.overwrite)
    if not settings.resume:
        return new_run_spec(settings)
    out = settings.out
    state = read_state(out)
    if "settings" not in state:
        log.warning("%s predates stored settings: --data %s, --epochs %d and the other flags come from "
                    "the command line", os.path.join(out, STATE), settings.data, settings.epochs)
    settings = resumed_settings(settings, state, explicit)
    check_settings(settings)
    config = read_config(out)
    labels_map = from_dict(dict(config.labelmap), source=os.path.join(out, tag_model.CONFIG_NAME))
    done = state["epochs_done"]
    evaluate_only = done >= settings.epochs and state.get("finished") is False
    if done >= settings.epochs and not evaluate_only:
        raise TrainingError(f"the run in {out} has already trained {done} epochs; "
                            f"pass --epochs above {done} to train more")
    log.info("resuming %s after epoch %d of %d (data: %s): labels, image size (%d px), channel order, "
             "dropout, split and seed come from that run%s", out, done, settings.epochs, settings.data,
             config.image_size, "; only the report is left to write" if evaluate_only else "")
    return RunSpec(settings, labels_map, config.image_size, config.channel_order, config.dropout,
                   state["seed"], state["val_split"], pretrained=state["pretrained"],
                   initial_weights=config.training["initial_weights"], state=state, evaluate_only=evaluate_only,
                   backbone=config.backbone)
