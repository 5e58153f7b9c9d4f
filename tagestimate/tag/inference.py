"""Tagging in stages that any engine can call (the local one in tag/local.py, Ray's in tag/ray_engine.py).

    find_items(input_dir)            -> items (one per sub-folder) and listing problems
    plan_run(items, output_dir, ...) -> Plan: items to tag, items already done, problems to record
    tag_images(entries, runner, ...) -> per model call: records (full probabilities) and errors
    tag_item(item, runner, config)   -> one item's records and errors (tag_images on its images)
    write_item(output_dir, name, records, config, format) -> its output file, written atomically
                                     (and first, with a vectors.VectorPlan, its {item}.emb.npz)

A run's bookkeeping (plan, errors.json, summary) is tag/run.py's, shared by both engines.
"""

import collections
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from tagestimate import storage
from tagestimate.images import ImageError, decode_image, is_image_name, is_utf8_name
from tagestimate.files import printable_path
from tagestimate.formats import FORMATS, Record, natural_key

ERRORS_NAME = "errors.json"
RESERVED_ITEMS = {os.path.splitext(ERRORS_NAME)[0]}
DEFAULT_BATCH_SIZE = 32  # images per model call
MAX_WORKERS = 8  # decoding threads by default: the CPU count, at most this

Item = collections.namedtuple("Item", "name images")  # images: [(key, path)]


def find_items(input_dir):
    """Items to tag: each direct sub-folder, plus the input folder's own loose images.

    An image's key is its path relative to its item folder, without extension.
    Returns (items, problems): problems are (item, path, reason) for files or folders left
    out (two images with one key, names that are not UTF-8, item names that would collide),
    with item and path made printable.
    """
    items, problems = [], []
    input_dir = storage.root(input_dir)
    groups = _groups(input_dir)
    taken = set()
    for name, root, paths in groups:
        reason = _item_name_problem(name, taken)
        if reason:
            problems += [(printable_path(name), printable_path(path), reason) for path in paths]
            continue
        taken.add(name)
        seen, images = {}, []
        for path in paths:
            key = os.path.splitext(_relative(path, root))[0].replace(os.sep, "/")
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


def _relative(path, root):
    return storage.relpath(path, root)


def _groups(input_dir):
    """find_items' (item name, root, image paths), from one recursive listing of the store.

    The same layout and order as on a disk: sub-folders are items (hidden names skipped at
    any depth), loose images form an item named after the input folder, paths sorted.
    """
    folders, loose = collections.defaultdict(list), []
    for relative, uri in storage.walk_files(input_dir):
        parts = relative.split("/")
        if any(part.startswith(".") for part in parts) or not is_image_name(parts[-1]):
            continue
        if len(parts) == 1:
            loose.append(uri)
        else:
            folders[parts[0]].append(uri)
    groups = [(name, storage.join(input_dir, name), sorted(folders[name])) for name in sorted(folders, key=natural_key)]
    if loose:
        groups.append((storage.basename(input_dir), input_dir, sorted(loose)))
    return groups


def _item_name_problem(name, taken):
    if not is_utf8_name(name):
        return "item folder name is not valid UTF-8; rename the folder"
    if name in RESERVED_ITEMS:
        return f"an item named {name!r} would overwrite {ERRORS_NAME}; rename the folder"
    if name in taken:
        return (f"loose images in the input folder would share the output file of the sub-folder {name!r}; "
                "move them into a sub-folder")
    return None


def default_workers():
    return min(MAX_WORKERS, os.cpu_count() or 2)


def output_path(output_dir, item_name, output_format):
    """Where `output_format` writes an item: the file resume looks for (plan_run)."""
    return storage.join(output_dir, FORMATS[output_format].file_name(item_name))


class Plan(collections.namedtuple("Plan", "todo done problems")):
    """What a run does: `todo` items to tag, names of items `done` (skipped), listing `problems` to record."""

    def entries(self):
        """(item name, key, path) of every image to tag, item after item."""
        return [(item.name, key, path) for item in self.todo for key, path in item.images]

    def left_out(self):
        """Problems of items not tagged at all (e.g. a folder name that would collide): done now."""
        names = {item.name for item in self.todo}
        return [problem for problem in self.problems if problem[0] not in names]

    def problems_by_item(self):
        """{item name: its listing problems} for items to tag: recorded when the item finishes."""
        names = {item.name for item in self.todo}
        found = collections.defaultdict(list)
        for problem in self.problems:
            if problem[0] in names:
                found[problem[0]].append(problem)
        return found


def plan_run(items, output_dir, output_format="json", overwrite=False, problems=()):
    """Items whose output file is missing (all of them with overwrite), and the problems to record.

    Problems of items skipped as done were recorded by the run that tagged them.
    """
    exists = _exists_function(output_dir) if not overwrite else None
    todo = [item for item in items if overwrite or not exists(output_path(output_dir, item.name, output_format))]
    todo_names = {item.name for item in todo}
    done = [item.name for item in items if item.name not in todo_names]
    skipped = set(done)
    return Plan(todo, done, [problem for problem in problems if problem[0] not in skipped])


def _exists_function(output_dir):
    """One listing of the output folder instead of a request per item."""
    return set(storage.files_in(output_dir)).__contains__


def load_batches(images, size, channel_order, batch_size, workers, draft=True, on_image=None):
    """Yield lists of (item, key, path, (pixels, source size) or ImageError), in order.

    `images` are (item, key, path). Decoding runs in a thread pool with at most a few
    batches in flight, so memory stays flat however many images there are. on_image(item,
    key, path, image, reduced), if given, is called in the decoding thread with each image as
    decoded (load_image's `keep`: upright RGB, before the model's resize), e.g. for a thumbnail.
    """
    def load(entry):
        item, key, path = entry
        keep = None if on_image is None else (lambda image, reduced: on_image(item, key, path, image, reduced))
        data = None
        try:
            if not storage.on_disk(path):  # read once, decoded from memory; local files as they are
                data = _read_remote(path)
            return decode_image(path, size, channel_order, draft, data=data, keep=keep)
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


def _read_remote(path):
    try:
        return storage.read_bytes(path)
    except (OSError, storage.StorageError) as error:
        raise ImageError(path, f"could not be read ({str(error).splitlines()[0]})") from None


def _in_order(images, load, workers, window):
    """(item, key, path, load((item, key, path))) for each image, in order, at most `window` in flight."""
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode")
    try:
        pending = collections.deque()
        for entry in images:
            pending.append((entry, pool.submit(load, entry)))
            if len(pending) >= window:
                (item, key, path), future = pending.popleft()
                yield item, key, path, future.result()
        while pending:
            (item, key, path), future = pending.popleft()
            yield item, key, path, future.result()
    finally:
        # On Ctrl-C (or the consumer stopping early) loads not yet started are dropped.
        pool.shutdown(wait=True, cancel_futures=True)


def tag_images(entries, runner, config, batch_size=DEFAULT_BATCH_SIZE, workers=None, draft=True, on_image=None,
               vectors=None):
    """Decode and predict (item name, key, path) entries, `batch_size` images per model call.

    Yields per model call, in order: (batch, records, errors) with batch the call's entries
    as load_batches gives them, records [(item name, Record)] of the images read and errors
    [(item name, printable path, reason)] of those that could not be. The images of one
    call may belong to several items. on_image: see load_batches (image_hook makes one); its
    close(), if it has one, is called once the stream ends, however it ends.
    vectors: the run's vectors.VectorPlan; when it needs them, each record carries its raw vector.
    """
    batches = load_batches(entries, config.image_size, config.channel_order, batch_size,
                           workers or default_workers(), draft, on_image)
    try:
        for batch in batches:
            good, errors, records = [], [], []
            for name, key, path, result in batch:
                if isinstance(result, ImageError):
                    errors.append((name, printable_path(path), result.reason))
                else:
                    good.append((name, key, path, result))
            if good:
                pixels = np.stack([result[0] for *_, result in good]).astype(np.float32)
                if vectors is not None and vectors.needed:  # the same forward pass gives both
                    probabilities, embedded = runner.infer(pixels)
                else:
                    probabilities, embedded = runner.predict(pixels), [None] * len(good)
                records = [(name, Record(key, path, result[1], values, vector))
                           for (name, key, path, result), values, vector in zip(good, probabilities, embedded)]
            yield batch, records, errors
    finally:
        batches.close()
        if hasattr(on_image, "close"):  # e.g. the report's thumbnails, still being written
            on_image.close()


def tag_item(item, runner, config, batch_size=DEFAULT_BATCH_SIZE, workers=None, draft=True, on_image=None,
             vectors=None):
    """(records, errors) of one item: what tag_images gives for its images, in its order."""
    records, errors = [], []
    entries = [(item.name, key, path) for key, path in item.images]
    for _, batch_records, batch_errors in tag_images(entries, runner, config, batch_size, workers, draft, on_image,
                                                     vectors):
        records += [record for _, record in batch_records]
        errors += batch_errors
    return records, errors


def image_hook(on_item, output_dir):
    """The per-image callback of an item hook (tag/run.py), for tag_images' on_image, or None when
    the hook has no on_image method (no hook: a run without the report does nothing more per image)."""
    if getattr(on_item, "on_image", None) is None:
        return None
    return ImageHook(on_item, output_dir)


class ImageHook:
    """An item hook's on_image(output_dir, item, key, path, image, reduced) bound to the output folder.
    close() calls its images_done(), if it has one, which waits for what on_image left to do later
    (tag_images calls it once the last image is decoded)."""

    def __init__(self, on_item, output_dir):
        self.on_item, self.output_dir = on_item, output_dir

    def __call__(self, *image):
        self.on_item.on_image(self.output_dir, *image)

    def close(self):
        done = getattr(self.on_item, "images_done", None)
        if done is not None:
            done()


def write_item(output_dir, item_name, records, config, output_format="json", context=None, vectors=None):
    """Write an item's output file atomically, thresholds taken from `config`; returns its path.
    `context` (results.RunContext) is passed to formats that need more than the records (iiif).
    `vectors` (the run's vectors.VectorPlan): the item's {item}.emb.npz is written first (the output
    marks the item done, so a rerun never skips an item whose vectors are missing) and the output
    gets the extra tags, scored on the vectors as stored. A format's companion files (iiif:
    `{item}.manifest.json`) are written before the item's own file too.

    With a distributed engine, call it only once errors.json holds the item's errors: a
    rerun skips items that have an output file.
    """
    path = output_path(output_dir, item_name, output_format)
    if vectors is not None and vectors.needed:
        records, item = vectors.finish(item_name, records)
        vectors.write_embeddings(output_dir, item_name, item)
    extra = {} if context is None else {"context": context}
    output = FORMATS[output_format]
    text = output.render(item_name, records, config, **extra)
    if output.companions is not None:  # before the item's file, which marks it done
        for name, companion in output.companions(item_name, records, config, context, text):
            if companion is None:  # none this time: an older run's would not match the new file
                storage.remove(storage.join(output_dir, name))
            else:
                storage.write_atomic(storage.join(output_dir, name), companion)
    storage.write_atomic(path, text)
    return path
