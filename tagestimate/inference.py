"""Tag every image under an input folder: find items, load in parallel, predict, write."""

import collections
import json
import logging
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from tagestimate.images import ImageError, is_image_name, list_images, load_image
from tagestimate.files import write_atomic
from tagestimate.results import FORMATS, natural_key, thresholds_for, tags_above

log = logging.getLogger(__name__)
ERRORS_NAME = "errors.json"

Item = collections.namedtuple("Item", "name images")  # images: [(key, path)]


def find_items(input_dir):
    """Items to tag: each direct sub-folder, plus the input folder's own loose images.

    An image's key is its path relative to its item folder, without extension.
    Returns (items, duplicates) where duplicates are (item, path, reason) of keys seen twice.
    """
    items, duplicates = [], []
    input_dir = os.path.abspath(input_dir)
    entries = sorted(os.scandir(input_dir), key=lambda e: natural_key(e.name))
    loose = [e.path for e in entries if e.is_file() and not e.name.startswith(".") and is_image_name(e.name)]
    folders = [e.path for e in entries if e.is_dir() and not e.name.startswith(".")]
    groups = [(os.path.basename(path), path, list_images(path)) for path in folders]
    if loose:
        groups.append((os.path.basename(input_dir), input_dir, sorted(loose)))
    for name, root, paths in groups:
        seen, images = {}, []
        for path in paths:
            key = os.path.splitext(os.path.relpath(path, root))[0].replace(os.sep, "/")
            if key in seen:
                duplicates.append((name, path, f"same name as {seen[key]} without extension; rename one"))
                continue
            seen[key] = path
            images.append((key, path))
        if images:
            items.append(Item(name, images))
    return items, duplicates


def output_path(output_dir, item_name, output_format):
    return os.path.join(output_dir, f"{item_name}.{output_format}")


def load_batches(images, size, channel_order, batch_size, workers):
    """Yield lists of (key, path, pixels or ImageError), in order, decoding in a thread pool.

    At most a few batches are in flight, so memory stays flat however many images there are.
    """
    def load(path):
        try:
            return load_image(path, size, channel_order)
        except ImageError as error:
            return error

    window = max(2 * batch_size, 4 * workers)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        pending = collections.deque()
        batch = []
        iterator = iter(images)
        for entry in iterator:
            pending.append((entry, pool.submit(load, entry[2])))
            if len(pending) < window:
                continue
            batch.append(_finish(pending.popleft()))
            if len(batch) == batch_size:
                yield batch
                batch = []
        while pending:
            batch.append(_finish(pending.popleft()))
            if len(batch) == batch_size:
                yield batch
                batch = []
        if batch:
            yield batch


def _finish(pending_entry):
    (item, key, path), future = pending_entry
    return item, key, path, future.result()


class Tagger:
    """Holds a runner, config and thresholds; tags items into an output folder."""

    def __init__(self, runner, config, threshold=None, batch_size=32, workers=None):
        self.runner = runner
        self.config = config
        self.labels = config["labels"]
        self.thresholds = thresholds_for(config, threshold)
        self.batch_size = batch_size
        self.workers = workers or min(8, os.cpu_count() or 2)

    def run(self, items, output_dir, output_format="json", overwrite=False, progress=True, errors=()):
        """Tag items; returns a summary dict. Items already in output_dir are skipped unless overwrite."""
        from tqdm import tqdm

        os.makedirs(output_dir, exist_ok=True)
        todo = [item for item in items if overwrite or not os.path.exists(output_path(output_dir, item.name, output_format))]
        skipped_items = len(items) - len(todo)
        flat = [(item.name, key, path) for item in todo for key, path in item.images]
        remaining = collections.Counter(name for name, _, _ in flat)
        tags = collections.defaultdict(dict)
        errors = list(errors)
        read = 0
        started = time.perf_counter()
        bar = tqdm(total=len(flat), unit="img", disable=not progress, file=sys.stderr, dynamic_ncols=True)
        size, order = self.config["image_size"], self.config["channel_order"]
        for batch in load_batches(flat, size, order, self.batch_size, self.workers):
            good = [entry for entry in batch if not isinstance(entry[3], ImageError)]
            for name, key, path, result in batch:
                if isinstance(result, ImageError):
                    errors.append((name, path, result.reason))
                    tqdm.write(f"skipped {path}: {result.reason}", file=sys.stderr)
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
        processed = {item.name for item in todo}
        write_errors(output_dir, errors, processed)
        return {
            "images": read,
            "items": len(todo),
            "skipped_images": len([e for e in errors if e[0] in processed]),
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
