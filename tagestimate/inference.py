"""Tag every image under an input folder: find items, load in parallel, predict, write."""

import collections
import json
import logging
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from tagestimate.images import ImageError, is_image_name, is_utf8_name, list_images, load_image
from tagestimate.files import printable_path, write_atomic
from tagestimate.results import FORMATS, natural_key, thresholds_for, tags_above

log = logging.getLogger(__name__)
ERRORS_NAME = "errors.json"
RESERVED_ITEMS = {os.path.splitext(ERRORS_NAME)[0]}

Item = collections.namedtuple("Item", "name images")  # images: [(key, path)]


def find_items(input_dir):
    """Items to tag: each direct sub-folder, plus the input folder's own loose images.

    An image's key is its path relative to its item folder, without extension.
    Returns (items, problems): problems are (item, path, reason) for files or folders left
    out (two images with one key, names that are not UTF-8, item names that would collide),
    with item and path made printable.
    """
    items, problems = [], []
    input_dir = os.path.abspath(input_dir)
    entries = sorted(os.scandir(input_dir), key=lambda e: natural_key(e.name))
    loose = [e.path for e in entries if e.is_file() and not e.name.startswith(".") and is_image_name(e.name)]
    folders = [e.path for e in entries if e.is_dir() and not e.name.startswith(".")]
    groups = [(os.path.basename(path), path, list_images(path)) for path in folders]
    if loose:
        groups.append((os.path.basename(input_dir), input_dir, sorted(loose)))
    taken = set()
    for name, root, paths in groups:
        reason = _item_name_problem(name, taken)
        if reason:
            problems += [(printable_path(name), printable_path(path), reason) for path in paths]
            continue
        taken.add(name)
        seen, images = {}, []
        for path in paths:
            key = os.path.splitext(os.path.relpath(path, root))[0].replace(os.sep, "/")
            if not is_utf8_name(key):
                problems.append((name, printable_path(path), "file name is not valid UTF-8; rename the file"))
            elif key in seen:
                problems.append((name, printable_path(path),
                                 f"same name as {printable_path(seen[key])} without extension; rename one"))
            else:
                seen[key] = path
                images.append((key, path))
        if images:
            items.append(Item(name, images))
    return items, problems


def _item_name_problem(name, taken):
    if not is_utf8_name(name):
        return "item folder name is not valid UTF-8; rename the folder"
    if name in RESERVED_ITEMS:
        return f"an item named {name!r} would overwrite {ERRORS_NAME}; rename the folder"
    if name in taken:
        return (f"loose images in the input folder would share the output file of the sub-folder {name!r}; "
                "move them into a sub-folder")
    return None


def output_path(output_dir, item_name, output_format):
    return os.path.join(output_dir, f"{item_name}.{output_format}")


def load_batches(images, size, channel_order, batch_size, workers, draft=True):
    """Yield lists of (key, path, pixels or ImageError), in order, decoding in a thread pool.

    At most a few batches are in flight, so memory stays flat however many images there are.
    """
    def load(path):
        try:
            return load_image(path, size, channel_order, draft)
        except ImageError as error:
            return error

    window = max(2 * batch_size, 4 * workers)
    batch = []
    for entry in _in_order(images, load, workers, window):
        batch.append(entry)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _in_order(images, load, workers, window):
    """(item, key, path, load(path)) for each image, in order, at most `window` in flight."""
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode")
    try:
        pending = collections.deque()
        for entry in images:
            pending.append((entry, pool.submit(load, entry[2])))
            if len(pending) >= window:
                (item, key, path), future = pending.popleft()
                yield item, key, path, future.result()
        while pending:
            (item, key, path), future = pending.popleft()
            yield item, key, path, future.result()
    finally:
        # On Ctrl-C (or the consumer stopping early) loads not yet started are dropped.
        pool.shutdown(wait=True, cancel_futures=True)


class Tagger:
    """Holds a runner, config and thresholds; tags items into an output folder."""

    def __init__(self, runner, config, threshold=None, batch_size=32, workers=None, draft=True):
        self.runner = runner
        self.config = config
        self.labels = config["labels"]
        self.thresholds = thresholds_for(config, threshold)
        self.batch_size = batch_size
        self.workers = workers or min(8, os.cpu_count() or 2)
        self.draft = draft

    def run(self, items, output_dir, output_format="json", overwrite=False, progress=True, errors=()):
        """Tag items; returns a summary dict. Items already in output_dir are skipped unless overwrite.

        Ctrl-C stops the run between two images: what is finished stays written (errors.json
        included) and the summary says "interrupted"; a rerun tags the rest.
        """
        from tqdm import tqdm

        os.makedirs(output_dir, exist_ok=True)
        todo = [item for item in items if overwrite or not os.path.exists(output_path(output_dir, item.name, output_format))]
        flat = [(item.name, key, path) for item in todo for key, path in item.images]
        remaining = collections.Counter(name for name, _, _ in flat)
        todo_names = {item.name for item in todo}
        # Problems of items skipped as done were recorded by the run that tagged them.
        skipped_names = {item.name for item in items} - todo_names
        problems = [error for error in errors if error[0] not in skipped_names]
        for _, path, reason in problems:
            tqdm.write(f"skipped {printable_path(path)}: {reason}", file=sys.stderr)
        pending = collections.defaultdict(list)  # errors of items still being tagged
        for error in problems:
            if error[0] in todo_names:
                pending[error[0]].append(error)
        # Items left out whole (bad folder names) are done now; the others when they finish.
        left_out = [error for error in problems if error[0] not in todo_names]
        error_log = ErrorLog(output_dir)
        error_log.finish({error[0] for error in left_out}, left_out)
        error_log.save()
        summary = {"images": 0, "items": len(todo), "finished_items": 0, "skipped_images": len(problems),
                   "skipped_items": len(items) - len(todo), "attempted": len(flat), "seconds": 0.0,
                   "images_per_second": 0.0, "interrupted": False}
        if not todo:
            return summary
        tags = collections.defaultdict(dict)
        started = time.perf_counter()
        bar = tqdm(total=len(flat), unit="img", disable=not progress, file=sys.stderr, dynamic_ncols=True)
        size, order = self.config["image_size"], self.config["channel_order"]
        batches = load_batches(flat, size, order, self.batch_size, self.workers, self.draft)
        waiting = collections.deque()  # finished items, (name, tags), whose output is not written yet
        try:
            for batch in batches:
                good = []
                for entry in batch:
                    name, _, path, result = entry
                    if isinstance(result, ImageError):
                        pending[name].append((name, printable_path(path), result.reason))
                        summary["skipped_images"] += 1
                        tqdm.write(f"skipped {printable_path(path)}: {result.reason}", file=sys.stderr)
                    else:
                        good.append(entry)
                if good:
                    probabilities = self.runner.predict(np.stack([entry[3] for entry in good]).astype(np.float32))
                    for (name, key, _, _), values in zip(good, probabilities):
                        tags[name][key] = tags_above(values, self.labels, self.thresholds)
                    summary["images"] += len(good)
                for name, _, _, _ in batch:
                    remaining[name] -= 1
                    if remaining[name] == 0:
                        error_log.finish({name}, pending.pop(name, []))
                        waiting.append((name, tags.pop(name, {})))
                self._write_finished(output_dir, output_format, error_log, waiting, summary)
                bar.update(len(batch))
            # Forced: also replaces an unreadable errors.json left by an older run.
            self._write_finished(output_dir, output_format, error_log, waiting, summary, force=True)
        except KeyboardInterrupt:
            summary["interrupted"] = True
            self._write_finished(output_dir, output_format, error_log, waiting, summary, force=True)
        finally:
            batches.close()
            bar.close()
        summary["seconds"] = time.perf_counter() - started
        if summary["seconds"] > 0:
            summary["images_per_second"] = summary["images"] / summary["seconds"]
        return summary

    def _write_finished(self, output_dir, output_format, error_log, waiting, summary, force=False):
        """Write the outputs of finished items once errors.json holds their errors.

        errors.json first: an item with an output file is skipped by the next run, so its
        errors must be saved by then; an item stopped before its output is tagged again.
        """
        if not error_log.save(force):
            return
        while waiting:
            name, tags_by_key = waiting[0]
            self._write(output_dir, name, tags_by_key, output_format)
            waiting.popleft()
            summary["finished_items"] += 1

    def _write(self, output_dir, name, tags_by_key, output_format):
        write_atomic(output_path(output_dir, name, output_format), FORMATS[output_format](tags_by_key))


class ErrorLog:
    """errors.json, rewritten atomically as items finish.

    Entries of items this run has not (yet) finished are kept from the existing file, so
    after Ctrl-C it holds the errors of every finished item, and of earlier runs' items.
    Rewrites are spaced so that they take at most about 5% of the run: a run with errors
    in thousands of items does not rewrite a growing file after every one.
    """

    SHARE = 20  # wait at least 20 times the last rewrite's duration before the next one

    def __init__(self, output_dir):
        self.path = os.path.join(output_dir, ERRORS_NAME)
        self.old = []
        if os.path.exists(self.path):
            try:
                with open(self.path, encoding="utf-8") as handle:
                    self.old = [entry for entry in json.load(handle) if isinstance(entry, dict)]
            except (OSError, ValueError, TypeError):
                self.old = []
        self.new = []
        self.replaced = set()
        self.unsaved = False
        self.next_write = 0.0

    def finish(self, item_names, errors):
        """The items' entries become `errors` (saved by the next `save`)."""
        if errors or any(entry.get("item") in item_names - self.replaced for entry in self.old):
            self.unsaved = True
        self.replaced |= set(item_names)
        self.new += errors

    def save(self, force=False):
        """Rewrite the file if something is unsaved and a rewrite is due, or if forced.

        Returns True when the file holds everything recorded so far.
        """
        if force or (self.unsaved and time.monotonic() >= self.next_write):
            started = time.monotonic()
            self.write()
            self.unsaved = False
            self.next_write = time.monotonic() + self.SHARE * (time.monotonic() - started)
        return not self.unsaved

    def write(self):
        entries = [entry for entry in self.old if entry.get("item") not in self.replaced]
        entries += [{"item": printable_path(item), "path": printable_path(path), "reason": printable_path(reason)}
                    for item, path, reason in self.new]
        if not entries:
            if os.path.exists(self.path):
                os.unlink(self.path)
            return
        entries.sort(key=lambda e: (natural_key(str(e.get("item"))), natural_key(str(e.get("path")))))
        write_atomic(self.path, json.dumps(entries, ensure_ascii=False, indent=1) + "\n")
