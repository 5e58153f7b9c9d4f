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
from tagestimate.files import write_atomic
from tagestimate.results import FORMATS, natural_key, thresholds_for, tags_above

log = logging.getLogger(__name__)
ERRORS_NAME = "errors.json"
RESERVED_ITEMS = {os.path.splitext(ERRORS_NAME)[0]}

Item = collections.namedtuple("Item", "name images")  # images: [(key, path)]


def find_items(input_dir):
    """Items to tag: each direct sub-folder, plus the input folder's own loose images.

    An image's key is its path relative to its item folder, without extension.
    Returns (items, problems): problems are (item, path, reason) for files or folders left
    out (two images with one key, names that are not UTF-8, item names that would collide).
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
            problems += [(_printable(name), _printable(path), reason) for path in paths]
            continue
        taken.add(name)
        seen, images = {}, []
        for path in paths:
            key = os.path.splitext(os.path.relpath(path, root))[0].replace(os.sep, "/")
            if not is_utf8_name(key):
                problems.append((name, _printable(path), "file name is not valid UTF-8; rename the file"))
            elif key in seen:
                problems.append((name, path, f"same name as {seen[key]} without extension; rename one"))
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


def _printable(path):
    """A path for messages and JSON: undecodable bytes shown as escapes, never a crash."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


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
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        pending = collections.deque()
        for entry in images:
            pending.append((entry, pool.submit(load, entry[2])))
            if len(pending) >= window:
                (item, key, path), future = pending.popleft()
                yield item, key, path, future.result()
        while pending:
            (item, key, path), future = pending.popleft()
            yield item, key, path, future.result()


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
        """Tag items; returns a summary dict. Items already in output_dir are skipped unless overwrite."""
        from tqdm import tqdm

        os.makedirs(output_dir, exist_ok=True)
        todo = [item for item in items if overwrite or not os.path.exists(output_path(output_dir, item.name, output_format))]
        skipped_items = len(items) - len(todo)
        flat = [(item.name, key, path) for item in todo for key, path in item.images]
        remaining = collections.Counter(name for name, _, _ in flat)
        tags = collections.defaultdict(dict)
        processed = {item.name for item in todo}
        # Problems of items skipped as done were recorded by the run that tagged them.
        skipped_names = {item.name for item in items} - processed
        errors = [error for error in errors if error[0] not in skipped_names]
        read = 0
        started = time.perf_counter()
        bar = tqdm(total=len(flat), unit="img", disable=not progress, file=sys.stderr, dynamic_ncols=True)
        size, order = self.config["image_size"], self.config["channel_order"]
        for batch in load_batches(flat, size, order, self.batch_size, self.workers, self.draft):
            good = []
            for entry in batch:
                name, _, path, result = entry
                if isinstance(result, ImageError):
                    errors.append((name, path, result.reason))
                    tqdm.write(f"skipped {path}: {result.reason}", file=sys.stderr)
                else:
                    good.append(entry)
            if good:
                probabilities = self.runner.predict(np.stack([entry[3] for entry in good]).astype(np.float32))
                for (name, key, _, _), values in zip(good, probabilities):
                    tags[name][key] = tags_above(values, self.labels, self.thresholds)
                read += len(good)
            for name, _, _, _ in batch:
                remaining[name] -= 1
                if remaining[name] == 0:
                    self._write(output_dir, name, tags.pop(name, {}), output_format)
            bar.update(len(batch))
        bar.close()
        elapsed = time.perf_counter() - started
        write_errors(output_dir, errors, processed | {error[0] for error in errors})
        return {
            "images": read,
            "items": len(todo),
            "skipped_images": len(errors),
            "skipped_items": skipped_items,
            "attempted": len(flat),
            "seconds": elapsed,
            "images_per_second": read / elapsed if elapsed > 0 else 0.0,
        }

    def _write(self, output_dir, name, tags_by_key, output_format):
        write_atomic(output_path(output_dir, name, output_format), FORMATS[output_format](tags_by_key))


def write_errors(output_dir, errors, processed_items):
    """Merge this run's errors into errors.json; entries of items not re-run are kept."""
    path = os.path.join(output_dir, ERRORS_NAME)
    kept = []
    if os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as handle:
                kept = [e for e in json.load(handle) if e.get("item") not in processed_items]
        except (OSError, ValueError, AttributeError, TypeError):
            kept = []
    entries = kept + [{"item": item, "path": path_, "reason": reason} for item, path_, reason in errors]
    if not entries:
        if os.path.exists(path):
            os.unlink(path)
        return
    entries.sort(key=lambda e: (natural_key(e["item"]), natural_key(e["path"])))
    write_atomic(path, json.dumps(entries, ensure_ascii=False, indent=1) + "\n")
