"""The training loop: model set-up, callbacks, fit in two phases, the final report.

`multitrain_efficientnet.py` parses flags into `TrainSettings` and calls `train`, which
resolves them into one `train_state.RunSpec` (new or resumed run) and then trains. The data
side lives in `tagestimate.train.dataset` (listing, split, folder weights), the tf.data input in
`tagestimate.train.pipeline`, the scores and thresholds in `tagestimate.train.metrics`.
"""

import dataclasses
import datetime
import logging
import os
import warnings

import numpy as np

from tagestimate import model as tag_model
from tagestimate import quiet_tensorflow
from tagestimate.train import label_issues, provenance
from tagestimate.train import state as train_state
from tagestimate.train.dataset import find_unreadable, folder_weights, list_samples, read_split, split_samples, write_split
from tagestimate.train.dataset import write_predictions
from tagestimate.files import write_json
from tagestimate.train.metrics import evaluate, split_summary, tune_thresholds
from tagestimate.model import save_weights_atomic
from tagestimate.train.losses import make_loss
from tagestimate.train.pipeline import AugmentingModel, build_augmenter, make_dataset, predict
from tagestimate.train.settings import (BEST_WEIGHTS, HISTORY, LAST_WEIGHTS, PREDICTIONS, REPORT, SPLIT,
                                        STATE, TrainingError)
from tagestimate.train.state import read_json, trim_history

quiet_tensorflow()
import keras  # noqa: E402  (TensorFlow loaded quietly above)
import tensorflow as tf  # noqa: E402

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- model set-up

def pick_strategy(mode):
    """MirroredStrategy for 'mirrored', or for 'auto' when several GPUs are visible; else default."""
    gpus = tf.config.list_logical_devices("GPU")
    if mode == "mirrored" or (mode == "auto" and len(gpus) > 1):
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def mixed_precision_policy():
    """float16 on GPUs (tensor cores); bfloat16 on CPUs, where float16 maths is emulated."""
    return "mixed_float16" if tf.config.list_logical_devices("GPU") else "mixed_bfloat16"


def load_starting_weights(model, start, image_size, backbone=tag_model.BACKBONE):
    """Load what train_state.starting_weights found into a freshly built model."""
    if start.kind == "imagenet":
        tag_model.load_imagenet_weights(model, image_size, backbone)
    elif start.kind == tag_model.LEGACY:
        tag_model.load_legacy_weights(model, start.source, require_all=False, include_head=start.with_head)
    elif start.kind == tag_model.KERAS:
        previous, _, _ = tag_model.open_model(start.source)
        tag_model.copy_weights(previous, model, include_head=start.with_head)


def init_weights(model, weights, image_size, labels):
    """Load the starting weights --weights names; returns (channel order, description)."""
    start = train_state.starting_weights(weights, labels)
    load_starting_weights(model, start, image_size)
    return start.channel_order, start.description


def set_phase(model, phase, freeze_batchnorm):
    """'warmup': only the head trains. 'finetune': everything, BatchNorm frozen if pretrained."""
    for layer in tag_model.backbone_layers(model):
        if phase == "warmup":
            layer.trainable = False
        else:
            layer.trainable = not (freeze_batchnorm and isinstance(layer, keras.layers.BatchNormalization))


def run_loss(settings):
    """The Keras loss that --loss and its parameters name."""
    return make_loss(settings.loss, settings.asl_gamma_neg, settings.asl_gamma_pos, settings.asl_clip,
                     settings.focal_gamma)


def compile_model(model, learning_rate, loss=None):
    """Adam + `loss` (binary cross-entropy when None); macro/micro F1 at the default threshold
    (Keras' F1Score)."""
    threshold = tag_model.DEFAULT_THRESHOLD
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.BinaryCrossentropy() if loss is None else loss,
        # The augmentation inside an AugmentingModel's step has layers XLA cannot compile.
        jit_compile=False if isinstance(model, AugmentingModel) else "auto",
        metrics=[keras.metrics.F1Score(average="macro", threshold=threshold, name="macro_f1"),
                 keras.metrics.F1Score(average="micro", threshold=threshold, name="micro_f1")],
    )


def load_weights_quietly(model, path):
    """model.load_weights from a weights-only file into a compiled model, without Keras'
    warning that the file has no optimizer state (the optimizer is left as it is)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        model.load_weights(path)


def restore_optimizer(model, path):
    """Build the compiled optimizer for the model's trainable weights and load its saved state
    from `path` (weights are reloaded too: same values); returns the restored step count, or
    None when the file's optimizer state does not fit (another phase or an older file)."""
    model.optimizer.build(model.trainable_variables)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.load_weights(path)
    if any("Skipping variable loading for optimizer" in str(w.message) for w in caught):
        return None
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


class _SaveBest(keras.callbacks.Callback):
    """best.weights.h5 (weights only) after each epoch whose finite val_loss is below `best`
    and every earlier one; `best_epoch` (1-based) records which epoch that was."""

    def __init__(self, path, best=None, best_epoch=None):
        super().__init__()
        self.path, self.best, self.best_epoch = path, best, best_epoch

    def on_epoch_end(self, epoch, logs=None):
        current = (logs or {}).get("val_loss")
        if current is None or not np.isfinite(current) or (self.best is not None and not current < self.best):
            return
        save_weights_atomic(self.model, self.path)
        self.best, self.best_epoch = float(current), epoch + 1


class _SaveState(keras.callbacks.Callback):
    """After each epoch: last.weights.h5 (weights and optimizer) and state.json, for --resume."""

    def __init__(self, out, checkpoint, phase, extra):
        super().__init__()
        self.out, self.checkpoint, self.phase, self.extra = out, checkpoint, phase, extra

    def on_epoch_end(self, epoch, logs=None):
        save_weights_atomic(self.model, os.path.join(self.out, LAST_WEIGHTS), optimizer=True)
        best = self.checkpoint.best
        state = dict(self.extra, epochs_done=epoch + 1, phase=self.phase, finished=False,
                     best_val_loss=None if best is None else float(best), best_epoch=self.checkpoint.best_epoch,
                     learning_rate=float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))
        write_json(os.path.join(self.out, STATE), state)


# ---------------------------------------------------------------- the run

def train(settings, explicit=None, write_report=None):
    """Train (or continue) a tagger as `settings` says; returns the report dict.

    With settings.resume, the flags not named in `explicit` (those given on the command
    line; None: all) come from the run's state.json, so `--out DIR --resume` alone continues it.
    `write_report(out, model)`, when given, runs once the run's files are written (the train
    command passes the review floor's report.html writer; this wing does not import that floor).
    """
    spec = train_state.resolve_run(settings, explicit)
    previous_policy = keras.mixed_precision.global_policy()
    try:
        return _train(spec, write_report)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


def _readable_split(spec):
    """(samples, validation mask, {unreadable path: reason}) of the run's data."""
    settings = spec.settings
    out, data = settings.out, settings.data
    samples = list_samples(data, spec.labels_map)
    skipped = find_unreadable(samples.paths)
    for path, reason in sorted(skipped.items()):
        log.warning("skipping unreadable image %s: %s", path, reason)
    samples = samples.subset([p not in skipped for p in samples.paths])
    if not samples.paths:
        raise TrainingError(f"none of the images in {data} can be read (each is listed above); "
                            "nothing to train on")
    if spec.resume or settings.split:
        keep, val_mask = read_split(os.path.join(out, SPLIT) if spec.resume else settings.split, samples, data)
        samples, val_mask = samples.subset(keep), val_mask[keep]
    else:
        val_mask = split_samples(samples, spec.val_split, spec.seed)
    train_set, val_set = samples.subset(~val_mask), samples.subset(val_mask)
    if not len(train_set.paths) or not len(val_set.paths):
        if spec.resume:
            raise TrainingError(f"none of the {'training' if not len(train_set.paths) else 'validation'} images "
                                f"listed in {os.path.join(out, SPLIT)} are readable in --data {data}; pass "
                                "the run's data folder with --data, or start a new run")
        raise TrainingError(f"the split left no {'training' if not len(train_set.paths) else 'validation'} "
                            f"images; add images of more items to {data}")
    return samples, val_mask, skipped


def model_config(spec):
    """The run's ModelConfig (model.json): what inference needs, the label map, how it was trained.
    Its thresholds stay None (the default) until the report tunes them."""
    settings = spec.settings
    return tag_model.ModelConfig(
        labels=spec.labels, image_size=spec.image_size, channel_order=spec.channel_order, dropout=spec.dropout,
        backbone=spec.backbone, labelmap=spec.labels_map.to_dict(), embedding_layer=tag_model.DEFAULT_LAYER,
        training={"data": os.path.abspath(settings.data), "initial_weights": spec.initial_weights,
                  "seed": spec.seed, "val_split": spec.val_split, "balance": settings.balance,
                  "augment": settings.augment, "split_file": SPLIT, "loss": _loss_description(settings)})


def _loss_description(settings):
    if settings.loss == "asl":
        return (f"asl (gamma_neg {settings.asl_gamma_neg:g}, gamma_pos {settings.asl_gamma_pos:g}, "
                f"clip {settings.asl_clip:g})")
    if settings.loss == "focal":
        return f"focal (gamma {settings.focal_gamma:g})"
    return settings.loss


def build_for_run(spec):
    """(tag model, the model to fit, strategy, augmenter for tf.data or None) for a run: built under the run's precision policy
    and strategy, starting weights loaded (last.weights.h5 on --resume). The model to fit is an
    AugmentingModel over the same layers when the run augments, so the augmenter's random seeds
    follow the run's seed (--resume shifts it) and the pixels are augmented on the model's device."""
    settings = spec.settings
    # Built before any mixed-precision policy: augmentation stays float32 on 0-255 values.
    augmenter = build_augmenter(spec.run_seed) if settings.augment else None
    if settings.mixed_precision:
        keras.mixed_precision.set_global_policy(mixed_precision_policy())
        log.info("mixed precision: %s", keras.mixed_precision.global_policy().name)
    strategy = pick_strategy(settings.distribute)
    with strategy.scope():
        model = tag_model.build_model(len(spec.labels), spec.image_size, spec.dropout, spec.backbone)
        if spec.resume:
            model.load_weights(os.path.join(settings.out, LAST_WEIGHTS))
        else:
            load_starting_weights(model, spec.start, spec.image_size, spec.backbone)
        # On a GPU, augmenting in the step feeds it at decode speed; on a CPU alone, tf.data's threads
        # augment the next batch while the step runs, which measured faster (bench/bench_train.py).
        on_device = augmenter is not None and bool(tf.config.list_logical_devices("GPU"))
        fitted = AugmentingModel(model, augmenter, spec.channel_order) if on_device else model
    return model, fitted, strategy, None if on_device else augmenter


def _train(spec, write_report=None):
    settings = spec.settings
    out, labels = settings.out, spec.labels
    keras.utils.set_random_seed(spec.run_seed)
    samples, val_mask, skipped = _readable_split(spec)
    train_set, val_set = samples.subset(~val_mask), samples.subset(val_mask)
    unseen = [label for j, label in enumerate(labels) if not train_set.targets[:, j].any()]
    if unseen:
        log.warning("no training images for %s: the model learns never to predict them", ", ".join(unseen))
    sample_weights, weight_table = folder_weights(train_set.folders, settings.balance)
    val_weights = np.array([weight_table.get(f, 1.0) for f in val_set.folders], dtype=np.float32)
    # Reviewed images weigh --reviewed-weight more, in the training loss and val_loss alike.
    origins = provenance.lookup(samples.paths, settings.data)
    sample_weights = provenance.reviewed_weights(sample_weights, train_set.paths, origins, settings.reviewed_weight)
    val_weights = provenance.reviewed_weights(val_weights, val_set.paths, origins, settings.reviewed_weight)
    reviewed = sum(origin.source == provenance.REVIEWED for origin in origins.values())
    if reviewed:
        log.info("%d reviewed %s (manifest.csv) weigh %g in the loss (--reviewed-weight)", reviewed,
                 "image" if reviewed == 1 else "images", settings.reviewed_weight)

    model, fitted, strategy, cpu_augmenter = build_for_run(spec)
    gpus = len(tf.config.list_logical_devices("GPU"))
    replicas = strategy.num_replicas_in_sync
    log.info("%d training and %d validation images (%d and %d items); %d %s on %s; weights: %s",
             len(train_set.paths), len(val_set.paths), len(set(train_set.groups)), len(set(val_set.groups)),
             replicas, "replica" if replicas == 1 else "replicas",
             f"{gpus} GPU{'' if gpus == 1 else 's'}" if gpus else "the CPU (no GPU visible)", spec.initial_weights)

    # Nothing is written before this point, so a failed start leaves --out as it was.
    if not spec.resume:
        if settings.overwrite:
            train_state.clear_run(out)
        write_split(os.path.join(out, SPLIT), samples, val_mask, settings.data)
        # best.weights.h5 is usable mid-run (at the default threshold). On --resume the old
        # model.json, with its tuned thresholds, stays until this run's replace it at the end.
        tag_model.write_config(out, model_config(spec))

    train_data = make_dataset(train_set.paths, spec.image_size, spec.channel_order, settings.batch_size,
                              train_set.targets, sample_weights, cpu_augmenter, shuffle_seed=spec.run_seed,
                              skipped=skipped)
    val_data = make_dataset(val_set.paths, spec.image_size, spec.channel_order, settings.batch_size,
                            val_set.targets, val_weights, skipped=skipped)
    extra = {"version": train_state.STATE_VERSION, "pretrained": spec.pretrained, "seed": spec.seed,
             "val_split": spec.val_split, "settings": train_state.stored_settings(settings)}
    checkpoint = _SaveBest(os.path.join(out, BEST_WEIGHTS), spec.state.get("best_val_loss"),
                           spec.state.get("best_epoch"))
    if spec.resume:
        trim_history(os.path.join(out, HISTORY), spec.epochs_done)
    if not spec.evaluate_only:
        _fit_phases(fitted, strategy, spec, train_data, val_data, checkpoint, extra)
    if not os.path.exists(os.path.join(out, BEST_WEIGHTS)):
        raise TrainingError(f"no epoch reached a finite validation loss, so {out} has no {BEST_WEIGHTS}; "
                            "lower --lr and start again with --overwrite")
    load_weights_quietly(model, os.path.join(out, BEST_WEIGHTS))
    state = read_json(os.path.join(out, STATE))
    report, thresholds = _write_results(model, spec, state, (val_set, train_set, samples), skipped, weight_table,
                                        origins)
    config = model_config(spec)
    tag_model.write_config(out, dataclasses.replace(config, thresholds=thresholds, training={
        **config.training, "epochs_done": state["epochs_done"], "best_epoch": state.get("best_epoch"),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}))
    write_json(os.path.join(out, STATE), dict(state, finished=True))
    if write_report is not None:  # report.html from the files above (the writer only warns if it fails)
        write_report(out, model)
    return report


def _fit_phases(model, strategy, spec, train_data, val_data, checkpoint, extra):
    """Head warm-up (pretrained backbones only), then full fine-tuning, each freshly compiled.
    Without val_data (the final model of --folds), every epoch trains and nothing is checkpointed."""
    settings, state, pretrained = spec.settings, spec.state, spec.pretrained
    out, done = settings.out, spec.epochs_done
    warmup_end = min(settings.warmup_epochs, settings.epochs) if pretrained else 0
    phases = [("warmup", done, warmup_end, settings.warmup_lr),
              ("finetune", max(done, warmup_end), settings.epochs, settings.lr)]
    compile_noted = False
    for phase, first, last, learning_rate in phases:
        if first >= last:
            continue
        if spec.resume and state.get("phase") == phase and first == done:
            learning_rate = state["learning_rate"]  # keep what ReduceLROnPlateau had reached
        with strategy.scope():
            set_phase(model, phase, freeze_batchnorm=pretrained)
            compile_model(model, learning_rate, run_loss(settings))
            if spec.resume and state.get("phase") == phase and first == done:
                # Adam continues with its step count and moments (saved in last.weights.h5).
                step = restore_optimizer(model, os.path.join(out, LAST_WEIGHTS))
                if step is None:
                    log.warning("%s holds no optimizer state for this model; Adam starts afresh",
                                os.path.join(out, LAST_WEIGHTS))
                else:
                    log.info("optimizer state restored (Adam step %d)", step)
        log.info("%s: epochs %d-%d at learning rate %.2g", phase, first + 1, last, learning_rate)
        if not compile_noted:  # else a first epoch many times longer than the next looks like a hang
            log.info("the first epoch includes building and compiling the model (graph tracing, XLA) and "
                     "warming up the input pipeline, so it takes longer than the next ones")
            compile_noted = True
        callbacks = [keras.callbacks.TerminateOnNaN()] if val_data is None else [
            checkpoint,
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=settings.patience),
            keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.2, min_lr=1e-7,
                                              patience=max(1, settings.patience // 2)),
            # history.csv before state.json: an epoch that state.json counts is always logged
            # (a row beyond it, from a stop in between, is dropped on --resume).
            keras.callbacks.CSVLogger(os.path.join(out, HISTORY), append=True),
            _SaveState(out, checkpoint, phase, extra),
            keras.callbacks.TerminateOnNaN(),
        ]
        with warnings.catch_warnings():
            # The filter that drops unreadable files hides the epoch length until one has run.
            warnings.filterwarnings("ignore", message="Your input ran out of data")
            history = model.fit(train_data, validation_data=val_data, initial_epoch=first, epochs=last,
                                callbacks=callbacks, shuffle=False, verbose=2)
        if not np.isfinite(history.history.get("loss", [0.0])[-1]):
            log.warning("the loss became NaN; training stopped (lower --lr); the best epoch so far is kept")
            break
        if len(history.epoch) < last - first:
            log.info("early stopping: validation loss has not improved for %d epochs", settings.patience)
            break


def _write_results(model, spec, state, sets, skipped, weight_table, origins):
    """Evaluate the loaded (best) weights on validation; write the report, the predictions and the
    suspect labels among the validation images. Returns (report, {label: tuned threshold})."""
    settings, labels = spec.settings, spec.labels
    val_set, train_set, samples = sets
    probabilities, rows = predict(model, val_set.paths, spec.image_size, spec.channel_order,
                                  settings.batch_size, skipped)
    targets = val_set.targets[rows]
    thresholds = tune_thresholds(targets, probabilities, labels)
    chosen = {label: thresholds[label]["threshold"] for label in labels}
    report = dict(
        evaluate(targets, probabilities, labels),
        labels=labels, default_threshold=tag_model.DEFAULT_THRESHOLD, thresholds=thresholds,
        tuned=evaluate(targets, probabilities, labels, chosen),
        weights=BEST_WEIGHTS, best_epoch=state.get("best_epoch"), best_val_loss=state.get("best_val_loss"),
        epochs_done=state["epochs_done"], evaluated_images=len(rows),
        balance={"mode": settings.balance, "folder_weights": weight_table},
        split=split_summary(train_set, val_set, spec.val_split, spec.seed),
        skipped_images=[{"path": p, "reason": r} for p, r in sorted(skipped.items())],
        out=os.path.abspath(settings.out),
        provenance=provenance.summary(samples.folders, samples.paths, origins, settings.reviewed_weight),
        label_issues=label_issues.write_for_run(
            settings.out, [val_set.paths[i] for i in rows], [val_set.folders[i] for i in rows], targets,
            probabilities, labels, origins, label_issues.VALIDATION, len(samples.paths)),
    )
    write_json(os.path.join(settings.out, REPORT), report)
    write_predictions(os.path.join(settings.out, PREDICTIONS), [val_set.paths[i] for i in rows],
                      [val_set.folders[i] for i in rows], probabilities, labels, settings.data)
    return report, chosen


def train_all(spec, samples, thresholds, note):
    """The final model of --folds: every image of `samples` for spec.settings.epochs epochs (no
    validation, so no early stopping or checkpoints), then best.weights.h5 and a model.json with
    `thresholds` (tuned out of fold) in --out; `note` joins model.json's training block."""
    settings = spec.settings
    previous_policy = keras.mixed_precision.global_policy()
    try:
        keras.utils.set_random_seed(spec.run_seed)
        sample_weights, _ = folder_weights(samples.folders, settings.balance)
        sample_weights = provenance.reviewed_weights(sample_weights, samples.paths,
                                                     provenance.lookup(samples.paths, settings.data),
                                                     settings.reviewed_weight)
        model, fitted, strategy, cpu_augmenter = build_for_run(spec)
        data = make_dataset(samples.paths, spec.image_size, spec.channel_order, settings.batch_size,
                            samples.targets, sample_weights, cpu_augmenter, shuffle_seed=spec.run_seed)
        _fit_phases(fitted, strategy, spec, data, None, None, None)
        save_weights_atomic(model, os.path.join(settings.out, BEST_WEIGHTS))
        config = model_config(spec)
        tag_model.write_config(settings.out, dataclasses.replace(config, thresholds=thresholds, training={
            **config.training, **note, "val_split": None, "split_file": None, "epochs_done": settings.epochs,
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}))
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
