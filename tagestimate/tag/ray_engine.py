"""The Ray engine: items tagged by a pool of Ray actors, on one machine or a cluster.

One row per item (a book) goes through a Ray Dataset; each actor loads the model once
(OpenVINO on a CPU node, TensorFlow on a GPU node, as --backend auto chooses there) and
calls the local engine's own per-item functions, tag_item and write_item, so the outputs
are the same bytes. The driver plans the run (plan_run: items with an output are not
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
from tagestimate.files import printable_path
from tagestimate.tag.inference import ErrorLog, Item, default_workers, plan_run, tag_item, write_item

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

    def __init__(self, weight_files, backend, threshold, output_dir, output_format, batch_size, workers, draft,
                 context=None, sidecars=False):
        try:
            self.runner, self.config, self.output_config = self._load(weight_files, backend, threshold)
        except Exception as error:  # noqa: BLE001 - any failure here is reported as one line
            import socket

            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise ModelLoadError(f"a Ray worker on {socket.gethostname()} could not load the model ({reason}); "
                                 "check --weights and that the node has requirements.txt installed") from None
        self.output_dir = output_dir
        self.output_format = output_format
        self.batch_size = batch_size
        self.workers = workers
        self.draft = draft
        self.context = context  # results.RunContext for --format iiif
        self.sidecars = sidecars  # the review report's full probabilities, written before the output

    @staticmethod
    def _load(weight_files, backend, threshold):
        """The weight file (and model.json) shipped by the driver, written to a local folder."""
        import tempfile

        import ray

        from tagestimate.tag.backends import choose_backend, make_runner
        from tagestimate.model import describe_weights
        from tagestimate.formats import with_threshold

        weights = weight_files[0]  # a path on a local Ray, else the files themselves
        if not isinstance(weights, str):
            files, weights_name = ray.get(weights)
            folder = tempfile.mkdtemp(prefix="tagestimate-weights-")
            for name, data in files.items():
                with open(os.path.join(folder, name), "wb") as handle:
                    handle.write(data)
            weights = os.path.join(folder, weights_name)
        config, _ = describe_weights(weights)
        runner = make_runner(choose_backend(backend), weights, config)
        return runner, config, with_threshold(config, threshold)

    def __call__(self, batch):
        names, counts, errors_out = [], [], []
        for name, images, problems in zip(batch["name"], batch["images"], batch["problems"]):
            name = str(name)
            item = Item(name, [tuple(pair) for pair in json.loads(images)])
            records, errors = tag_item(item, self.runner, self.config, self.batch_size, self.workers, self.draft)
            known = [tuple(problem) for problem in json.loads(problems)] + errors
            if known:  # stored before the output: the output marks the item done
                storage.makedirs(storage.join(self.output_dir, PENDING_FOLDER))
                storage.write_atomic(pending_path(self.output_dir, name), json.dumps(known, ensure_ascii=False))
            if self.sidecars:
                from tagestimate.review.report import write_sidecar

                write_sidecar(self.output_dir, name, records, self.output_config)
            write_item(self.output_dir, name, records, self.output_config, self.output_format, context=self.context)
            names.append(name)
            counts.append(len(records))
            errors_out.append(json.dumps(errors, ensure_ascii=False))
        return {"name": names, "images": counts, "errors": errors_out}


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
    """Join the cluster at `address`, or start a local Ray; True when this call started it."""
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)
    _probe(address)
    if ray.is_initialized():  # a program (or a test) that started Ray itself: used as it is
        _quiet_data(ray)
        return False
    options = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR,
               "configure_logging": True, "runtime_env": runtime_env()}
    # Ray's C++ core logs to the terminal (e.g. a notice on every actor with object-store
    # arguments); its log files keep everything. RAY_BACKEND_LOG_LEVEL set by the user wins.
    # Ray announces the variable on stderr while ray.init reads it (RAY_LEVEL_NOTICE): our default's is dropped.
    held = (contextlib.nullcontext() if "RAY_BACKEND_LOG_LEVEL" in os.environ
            else tfenv.native_stderr_filtered(RAY_LEVEL_NOTICE))
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    try:
        with warnings.catch_warnings(), held:  # Ray Client warns, then raises: the error says it all
            warnings.simplefilter("ignore")
            if address:
                ray.init(address=address, **options)
            else:
                ray.init(num_cpus=os.cpu_count() or 1, **options)
    except Exception as error:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, grpc errors...
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(f"cannot start or reach {where} ({reason}); check --ray-address "
                        "(auto, or ray://host:10001) and that the cluster is running") from None
    _quiet_data(ray)
    return True


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


def weight_files(weights):
    """{file name: bytes} of the weight file and its model.json, for workers on other machines."""
    from tagestimate.model import CONFIG_NAME

    files = {}
    config = os.path.join(os.path.dirname(os.path.abspath(weights)), CONFIG_NAME)
    for path in (weights, config):
        if os.path.isfile(path):
            with open(path, "rb") as handle:
                files[os.path.basename(path)] = handle.read()
    return files, os.path.basename(weights)


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


def run(items, output_dir, weights, backend="auto", threshold=None, output_format="json", overwrite=False,
        progress=True, errors=(), batch_size=32, workers=None, draft=True, address=None, actors=None,
        gpus_per_actor=None, context=None, sidecars=False):
    """Tag items on Ray; the same summary dict as Tagger.run, plus "startup_seconds" (until the first
    item came back) and "startup_images" (that item's images)."""
    from tqdm import tqdm

    ray = import_ray()
    storage.makedirs(output_dir)
    plan = plan_run(items, output_dir, output_format, overwrite, errors)
    for _, path, reason in plan.problems:
        tqdm.write(f"skipped {printable_path(path)}: {reason}", file=sys.stderr)
    pending = plan.problems_by_item()
    left_out = plan.left_out()
    error_log = ErrorLog(output_dir)
    leftovers = merge_pending(output_dir, error_log)
    error_log.finish({error[0] for error in left_out}, left_out)
    error_log.save(force=True)
    for path in leftovers:
        storage.remove(path)
    _remove_empty_pending(output_dir)
    images = sum(len(item.images) for item in plan.todo)
    summary = {"images": 0, "items": len(plan.todo), "finished_items": 0, "skipped_images": len(plan.problems),
               "skipped_items": len(plan.done), "attempted": images, "seconds": 0.0,
               "images_per_second": 0.0, "interrupted": False, "startup_seconds": 0.0,
               "startup_images": 0}
    if not plan.todo:
        return summary
    started = time.perf_counter()
    started_ray = connect(ray, address)
    finished = []  # pending-error files of items whose errors errors.json now holds
    try:
        actors, gpus_per_actor = pool_size(ray, actors, gpus_per_actor)
        actors = min(actors, len(plan.todo))
        rows = [{"name": item.name, "images": json.dumps(item.images, ensure_ascii=False),
                 "problems": json.dumps(pending.get(item.name, []), ensure_ascii=False)} for item in plan.todo]
        dataset = ray.data.from_items(rows, override_num_blocks=min(len(rows), MAX_BLOCKS))
        # A cluster's workers may not see this machine's files: the weights travel with the job.
        shipped = [ray.put(weight_files(weights))] if address else [os.path.abspath(weights)]
        results = dataset.map_batches(
            ItemWorker, batch_size=1, concurrency=actors, num_cpus=1, num_gpus=gpus_per_actor,
            fn_constructor_kwargs={"weight_files": shipped, "backend": backend, "threshold": threshold,
                                   "output_dir": output_dir, "output_format": output_format,
                                   "batch_size": batch_size, "workers": workers or default_workers(),
                                   "draft": draft, "context": context, "sidecars": sidecars},
        )  # Ray Data's actors restart after a crash and retry the item (max_restarts, max_task_retries)
        bar = tqdm(total=images, unit="img", disable=not progress, file=sys.stderr, dynamic_ncols=True)
        sizes = {item.name: len(item.images) for item in plan.todo}
        try:
            for row in results.iter_rows():
                if not summary["startup_seconds"]:  # Ray, actors and model loads, and the first item
                    summary["startup_seconds"] = time.perf_counter() - started
                    summary["startup_images"] = int(row["images"])
                name = str(row["name"])
                item_errors = [tuple(error) for error in json.loads(row["errors"])]
                for error in item_errors:
                    tqdm.write(f"skipped {error[1]}: {error[2]}", file=sys.stderr)
                error_log.finish({name}, pending.pop(name, []) + item_errors)
                finished.append(name)
                summary["images"] += int(row["images"])
                summary["skipped_images"] += len(item_errors)
                summary["finished_items"] += 1
                bar.set_postfix_str(f"{summary['finished_items']}/{len(plan.todo)} items", refresh=False)
                bar.update(sizes[name])
                if error_log.save():
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
        # Forced: errors.json holds every finished item's errors, even on Ctrl-C.
        error_log.save(force=True)
        _drop_pending(output_dir, finished)
        if started_ray:
            ray.shutdown()
    summary["seconds"] = time.perf_counter() - started
    if summary["seconds"] > 0:
        summary["images_per_second"] = summary["images"] / summary["seconds"]
    return summary


def _drop_pending(output_dir, names):
    for name in names:
        storage.remove(pending_path(output_dir, name))
    if names:
        _remove_empty_pending(output_dir)
    return []


def _remove_empty_pending(output_dir):
    folder = storage.join(output_dir, PENDING_FOLDER)
    storage.remove_empty_folder(folder)  # only when empty: other items' files stay for the next run
