"""The Ray engine: items tagged by a pool of Ray actors, on one machine or a cluster.

One row per item (a book) goes through a Ray Dataset; each actor loads the model once
(OpenVINO on a CPU node, TensorFlow on a GPU node, as --backend auto chooses there) and
calls the local engine's own per-item functions, tag_item and write_item, so the outputs
(and the {item}.emb.npz written before each) are the same bytes. The driver plans the run (plan_run: items with an output are not
scheduled), shows progress, and keeps errors.json (ErrorLog).

An item's output is its "done" mark, so its errors must be stored first: a worker writes
them to {output}/.pending-errors/{item}.json before the output, and the driver merges
those into errors.json as items come back, at the end, on Ctrl-C, and, after a crash of
the driver itself, at the start of the next run. Imported only for --engine ray.
"""

import contextlib
import json
import logging
import os
import re
import sys
import time
import warnings

from tagestimate import storage, tfenv
from tagestimate.errors import UserError
from tagestimate.tag import raywatch
from tagestimate.tag.inference import Item, image_hook, tag_item, write_item
from tagestimate.tag.run import Run

RAY_LEVEL_NOTICE = re.compile(r"\[[\d\-: ,.]+ I \d+ \d+\] logging\.cc:\d+: Set ray log level from environment "
                              r"variable RAY_BACKEND_LOG_LEVEL to -?\d+")
PENDING_FOLDER = ".pending-errors"
INIT_DEATHS = 2  # actors that fail to load the model, in a row, before the run stops
MAX_BLOCKS = 10_000  # dataset blocks: one item each, up to this many
log = logging.getLogger(__name__)


class ModelLoadError(UserError):
    """A Ray worker could not load the model; the message says where and why."""


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise UserError("--engine ray needs Ray: pip install -r requirements-scale.txt") from None
    return ray


def pending_path(output_dir, item_name):
    return storage.join(storage.join(output_dir, PENDING_FOLDER), f"{item_name}.json")


class ItemWorker:
    """A Ray actor: the model, loaded once; tags and writes one item per call."""

    def __init__(self, settings, bundle, shipped=None, context=None, on_item=None, vectors=None):
        try:
            self.runner = self._load(settings.backend, bundle, shipped)
        except Exception as error:  # noqa: BLE001 - any failure here is reported as one line
            import socket

            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise ModelLoadError(f"a Ray worker on {socket.gethostname()} could not load the model ({reason}); "
                                 "check --weights and that the node has requirements.txt installed") from None
        self.settings = settings
        self.config = bundle.output_config  # what the writers threshold with
        self.context = context  # formats.RunContext for --format iiif
        self.on_item = on_item  # e.g. the review report's full probabilities, written before the output
        self.vectors = vectors  # vectors.VectorPlan: {item}.emb.npz and extra tags, as the local engine

    @staticmethod
    def _load(backend, bundle, shipped):
        """The runner for the bundle; `shipped` ([object ref of the weight file's bytes]) when the driver's
        files are not on this machine: written to a local folder first."""
        from tagestimate.tag.backends import choose_backend, make_runner

        if shipped:
            import tempfile

            import ray

            folder = tempfile.mkdtemp(prefix="tagestimate-weights-")
            path = os.path.join(folder, os.path.basename(bundle.path))
            with open(path, "wb") as handle:
                handle.write(ray.get(shipped[0]))
            bundle = bundle.at(path)
        return make_runner(choose_backend(backend), bundle)

    def __call__(self, batch):
        settings, names, counts, errors_out, written = self.settings, [], [], [], []
        for name, images, problems in zip(batch["name"], batch["images"], batch["problems"]):
            name = str(name)
            item = Item(name, [tuple(pair) for pair in json.loads(images)])
            records, errors = tag_item(item, self.runner, self.config, settings.batch_size, settings.decoders,
                                       settings.draft, image_hook(self.on_item, settings.output_dir), self.vectors)
            known = [tuple(problem) for problem in json.loads(problems)] + errors
            if known:  # stored before the output: the output marks the item done
                storage.makedirs(storage.join(settings.output_dir, PENDING_FOLDER))
                storage.write_atomic(pending_path(settings.output_dir, name), json.dumps(known, ensure_ascii=False))
            if records:  # an item of unreadable files only gets no output: the next run tries it again
                if self.on_item is not None:
                    self.on_item(settings.output_dir, name, records, self.config)
                write_item(settings.output_dir, name, records, self.config, settings.output_format,
                           context=self.context, vectors=self.vectors)
            names.append(name)
            counts.append(len(records))
            errors_out.append(json.dumps(errors, ensure_ascii=False))
            written.append(bool(records))
        return {"name": names, "images": counts, "errors": errors_out, "written": written}


def merge_pending(output_dir, error_log):
    """Take errors left by workers of a driver that died into error_log; returns the files to delete."""
    folder = storage.join(output_dir, PENDING_FOLDER)
    paths = storage.files_in(folder)
    for path in paths:
        if not path.endswith(".json"):
            continue
        try:
            entries = [tuple(entry) for entry in json.loads(storage.read_bytes(path).decode("utf-8"))]
        except (OSError, ValueError, TypeError):
            continue  # unreadable: the item was not finished either, it is tagged again
        error_log.finish({os.path.basename(path)[:-5]}, entries)
    return paths


def connect(ray, address):
    """Join the cluster at `address`, or start a local Ray; when this call started it, returns the function
    that stops it (and its watchdog, raywatch.py: a local Ray never outlives the driver), else None."""
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)
    _probe(address)
    if ray.is_initialized():  # a program (or a test) that started Ray itself: used as it is
        _quiet_data(ray)
        return None
    options = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR,
               "configure_logging": True, "runtime_env": runtime_env()}
    # Ray's C++ core logs to the terminal (e.g. a notice on every actor with object-store
    # arguments); its log files keep everything. RAY_BACKEND_LOG_LEVEL set by the user wins.
    # Ray announces the variable on stderr while ray.init reads it (RAY_LEVEL_NOTICE): our default's is dropped.
    held = (contextlib.nullcontext() if "RAY_BACKEND_LOG_LEVEL" in os.environ
            else tfenv.native_stderr_filtered(RAY_LEVEL_NOTICE))
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    context = None  # ray.init's answer for a local Ray: where its session folder is
    try:
        with warnings.catch_warnings(), held:  # Ray Client warns, then raises: the error says it all
            warnings.simplefilter("ignore")
            if address:
                ray.init(address=address, **options)
            else:
                context = ray.init(num_cpus=os.cpu_count() or 1, **options)
    except Exception as error:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, grpc errors...
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(f"cannot start or reach {where} ({reason}); check --ray-address "
                        "(auto, or ray://host:10001) and that the cluster is running") from None
    _quiet_data(ray)
    watchdog = None if address else raywatch.start(context.address_info.get("session_dir"))

    def stop():
        ray.shutdown()
        if watchdog is not None:
            watchdog.stop()
    return stop


def runtime_env():
    """Ray's runtime environment for this package: Ray ships the tagestimate/ folder to every
    worker, so a cluster's nodes need only requirements.txt installed, and a local Ray's workers
    import it whatever folder they start in."""
    import tagestimate

    return {"py_modules": [os.path.dirname(os.path.abspath(tagestimate.__file__))]}


PROBE_TIMEOUT = 10  # seconds to open a TCP connection to --ray-address


def _probe(address):
    """UserError at once when host:port of `address` does not answer (Ray itself waits minutes)."""
    import socket

    target = address.split("://", 1)[-1] if address else ""
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        return  # "auto", "local" or a name Ray resolves itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_TIMEOUT).close()
    except OSError as error:
        raise UserError(f"cannot reach the Ray cluster at {address} ({error.strerror or error}); check "
                        "--ray-address (auto, or ray://host:10001) and that the cluster is running") from None


def _quiet_data(ray):
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the driver shows its own
    context.max_consecutive_actor_init_deaths = INIT_DEATHS
    # Ray Data logs a failed execution (e.g. workers that cannot load the model) with its stack
    # trace on the console; the driver turns it into one line. ray-data.log keeps the records.
    for handler in logging.getLogger("ray.data").handlers:
        if handler.name == "console":
            handler.setLevel(logging.CRITICAL)



def pool_size(ray, actors, gpus_per_actor):
    """(actors, gpus per actor): one actor per GPU when the cluster has GPUs, else per CPU."""
    resources = ray.cluster_resources()
    gpus = resources.get("GPU", 0)
    if gpus_per_actor is None:
        gpus_per_actor = 1 if gpus else 0
    if actors is None:
        actors = int(gpus // gpus_per_actor) if gpus_per_actor else int(resources.get("CPU", 1))
    if gpus_per_actor and gpus < gpus_per_actor:
        raise UserError(f"--gpus-per-actor {gpus_per_actor:g} but the Ray cluster has {gpus:g} GPUs")
    return max(1, actors), gpus_per_actor


def _first_line(error):
    """The message of a ModelLoadError or UserError raised in a worker, however Ray wrapped it."""
    first, seen = error, set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, UserError):
            return str(error).splitlines()[0]
        cause = getattr(error, "cause", None)
        error = cause if isinstance(cause, BaseException) else (error.__cause__ or error.__context__)
    # An actor that died in its constructor reaches the driver as text (ActorDiedError).
    marker = f"{ModelLoadError.__name__}: "
    for line in str(first).splitlines():
        if marker in line:
            return line.split(marker, 1)[1]
    return None


def run(settings, bundle, items, problems=(), context=None, on_item=None, vectors=None):
    """Tag items on Ray as `settings` say, with the model `bundle`; the same summary dict as Tagger.run,
    plus "startup_seconds" (until the first item came back) and "startup_images" (that item's images).
    on_item: the item hook (tag/run.py), called in the workers. vectors: the run's vectors.VectorPlan."""
    from tqdm import tqdm

    ray = import_ray()
    output_dir = settings.output_dir
    run = Run(items, settings, problems, merge=lambda error_log: merge_pending(output_dir, error_log),
              force_save=True)
    for path in run.merged:  # errors.json holds them now
        storage.remove(path)
    _remove_empty_pending(output_dir)
    plan, summary = run.plan, run.summary
    summary.update(startup_seconds=0.0, startup_images=0)
    if not plan.todo:
        return summary
    run.start()
    stop_ray = connect(ray, settings.ray_address)
    restore_notes = _drop_retry_notes()
    finished = []  # pending-error files of items whose errors errors.json now holds
    try:
        actors, gpus_per_actor = pool_size(ray, settings.actors, settings.gpus_per_actor)
        actors = min(actors, len(plan.todo))
        rows = [{"name": item.name, "images": json.dumps(item.images, ensure_ascii=False),
                 "problems": json.dumps(run.pending.get(item.name, []), ensure_ascii=False)} for item in plan.todo]
        dataset = ray.data.from_items(rows, override_num_blocks=min(len(rows), MAX_BLOCKS))
        # A cluster's workers may not see this machine's files: the weight file travels with the job
        # (the bundle already holds what model.json says).
        shipped = [ray.put(_read(bundle.path))] if settings.ray_address else None
        results = dataset.map_batches(
            ItemWorker, batch_size=1, concurrency=actors, num_cpus=1, num_gpus=gpus_per_actor,
            fn_constructor_kwargs={"settings": settings, "bundle": bundle.at(os.path.abspath(bundle.path)),
                                   "shipped": shipped, "context": context, "on_item": on_item,
                                   "vectors": vectors},
        )  # Ray Data's actors restart after a crash and retry the item (max_restarts, max_task_retries)
        bar = tqdm(total=summary["attempted"], unit="img", disable=not settings.progress, file=sys.stderr,
                   dynamic_ncols=True)
        sizes = {item.name: len(item.images) for item in plan.todo}
        try:
            for row in results.iter_rows():
                if not summary["startup_seconds"]:  # Ray, actors and model loads, and the first item
                    summary["startup_seconds"] = time.perf_counter() - run.started
                    summary["startup_images"] = int(row["images"])
                name = str(row["name"])
                item_errors = [tuple(error) for error in json.loads(row["errors"])]
                for error in item_errors:
                    tqdm.write(f"skipped {error[1]}: {error[2]}", file=sys.stderr)
                run.item_done(name, item_errors, written=bool(row["written"]))
                if row["written"]:
                    run.item_written(name)
                finished.append(name)
                summary["images"] += int(row["images"])
                summary["skipped_images"] += len(item_errors)
                bar.set_postfix_str(f"{len(run.done)}/{len(plan.todo)} items", refresh=False)
                bar.update(sizes[name])
                if run.error_log.save():
                    finished = _drop_pending(output_dir, finished)
        except KeyboardInterrupt:
            summary["interrupted"] = True
        finally:
            bar.close()
    except Exception as error:
        message = _first_line(error)
        if message is None:
            raise
        raise UserError(message) from None
    finally:
        if stop_ray:  # first: no worker writes an output after the count below
            stop_ray()
        if summary["interrupted"]:  # outputs written while their rows were on the way count too
            finished += run.adopt_outputs(lambda name: _late_errors(output_dir, name, run.pending.get(name, [])))
        # Forced: errors.json holds every finished item's errors, even on Ctrl-C.
        run.error_log.save(force=True)
        _drop_pending(output_dir, finished)
        restore_notes()
    return run.close()


def _late_errors(output_dir, name, listed):
    """The tagging errors of an item whose row never came back: its pending file (the worker wrote it
    before the output) less the listing problems it starts with; none when there is no file."""
    try:
        known = json.loads(storage.read_bytes(pending_path(output_dir, name)).decode("utf-8"))
        known = [tuple(entry) for entry in known]
    except (OSError, ValueError, TypeError, storage.StorageError):
        return []
    return known[len(listed):]


def _drop_retry_notes():
    """Ray's driver prints a note with a stack trace on stdout for every task it retries (an actor that
    cannot load the model is retried until Ray Data gives up, a crashed one until its item is done); the
    run says what failed in one line. Ray's private printer is wrapped; returns the undo."""
    try:
        from ray._private import worker as ray_worker

        printer = ray_worker.print_to_stdstream
    except (ImportError, AttributeError):  # another Ray version: its notes are printed
        return lambda: None

    def without_retry_notes(data, *args, **kwargs):
        lines = data.get("lines") or [""]
        if data.get("pid") == "raylet" and "will be retried" in str(lines[0]).split("\n", 1)[0]:
            log.debug("%s", lines[0])
            return None
        return printer(data, *args, **kwargs)

    ray_worker.print_to_stdstream = without_retry_notes
    return lambda: setattr(ray_worker, "print_to_stdstream", printer)


def _read(path):
    with open(path, "rb") as handle:
        return handle.read()


def _drop_pending(output_dir, names):
    for name in names:
        storage.remove(pending_path(output_dir, name))
    if names:
        _remove_empty_pending(output_dir)
    return []


def _remove_empty_pending(output_dir):
    folder = storage.join(output_dir, PENDING_FOLDER)
    storage.remove_empty_folder(folder)  # only when empty: other items' files stay for the next run
