"""What `--resume` reads from a run folder (state.json, model.json), checked field by field.

A damaged or foreign file stops the run with one sentence naming the file and the field,
never a KeyError. No TensorFlow here.
"""

import dataclasses
import json
import numbers
import os

from tagestimate import model as tag_model
from tagestimate.train_settings import (BALANCE_CHOICES, DISTRIBUTE_CHOICES, RESUMABLE, STATE, TrainingError,
                                        TrainSettings)

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
    choices = {"balance": BALANCE_CHOICES, "distribute": DISTRIBUTE_CHOICES}
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
    """model.json of the run in `out` with what --resume needs beyond what inference needs."""
    try:
        config = tag_model.read_config(out)
    except tag_model.WeightsError as error:
        raise TrainingError(f"--resume: {error}; {_FIX}") from None
    path = os.path.join(out, tag_model.CONFIG_NAME)
    if not isinstance(config.get("labelmap"), dict):
        raise _bad(path, "labelmap", "the label map the run trained with")
    if not _is_number(config.get("dropout")) or not 0 <= config["dropout"] < 1:
        raise _bad(path, "dropout", "a number in [0, 1)")
    training = config.get("training")
    if not isinstance(training, dict) or not isinstance(training.get("initial_weights"), str):
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
