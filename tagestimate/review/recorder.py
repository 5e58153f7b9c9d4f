"""What a tagging run with the review report writes while it runs: each item's probabilities (the
sidecar), each image's thumbnail from the decode tagging made, and run.json. report.py builds the
pages from them afterwards. Kept apart from report.py so that the run, and each Ray worker that
unpickles the recorder, loads no template code."""

import datetime
import json
import logging
import os

from tagestimate import storage
from tagestimate.files import printable_path, write_atomic
from tagestimate.labels import config_names, tag_names
from tagestimate.review.backlog import Backlog
from tagestimate.review.paths import PAGES, RUN_INFO, sidecar_path, thumb_path
from tagestimate.review.thumbs import THUMB_SIZE, is_current, shrink, write_jpeg

log = logging.getLogger(__name__)


def write_sidecar(output_dir, item_name, records, config):
    """html/data/{item}.json: each image's path and every label's probability (4 decimals)
    and the thresholds applied, so the report can show borderline cases and filter by
    confidence without touching the item's NDL-format output."""
    data = {"item": item_name, "labels": list(config.labels), "thresholds": config.cutoffs(),
            "images": [[record.key, os.path.abspath(record.path), [round(float(p), 4) for p in record.probabilities]]
                       for record in records]}
    path = sidecar_path(output_dir, item_name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    # ASCII: a path that is not UTF-8 is kept as \udcXX escapes, which json.load gives back as they were.
    write_atomic(path, json.dumps(data, separators=(",", ":")) + "\n")


class ReportRecorder:
    """The item hook (tag/run.py) of a run with the report: writes each item's probabilities
    (html/data/{item}.json) before its output, remembers which (item, key, path, kept label
    indices) --explain should explain, and (on_image) makes each image's thumbnail from the decode
    tagging does, in its backlog (images_done waits for them). Picklable: Ray workers call it too."""

    def __init__(self, explain=False):
        self.explain = explain
        self.explained = []
        self._folders = {}  # thumbnail folder -> made by this run (ReportRecorder._made_folder)
        self.backlog = Backlog()

    def __call__(self, output_dir, item_name, records, config):
        write_sidecar(output_dir, item_name, records, config)
        if self.explain:
            thresholds = config.cutoffs()
            self.explained += [(item_name, record.key, record.path,
                                [j for j, (p, t) in enumerate(zip(record.probabilities, thresholds)) if p > t])
                               for record in records]

    def on_image(self, output_dir, item_name, key, path, pixels, reduced):
        """Have the thumbnail of an image tagging just decoded (an upright RGB array; `reduced`:
        decoded smaller than the file, to no less than the model's size) written in the backlog's
        thread, at the lowest priority, or in the decoding thread if much waits already: the run
        calls images_done before the report, whose build then finds it current and decodes nothing.
        Never raises: a thumbnail not made here is made by build_report."""
        if not storage.on_disk(path):  # as build_report: thumbnails of local images only
            return
        if reduced and max(pixels.shape[:2]) < THUMB_SIZE:  # a model under THUMB_SIZE px: too small to shrink
            return
        # The decode is not copied: nothing changes it once decoded (images.load_image's `keep`).
        self.backlog.add(pixels.nbytes, self._write_thumbnail, thumb_path(output_dir, item_name, key), pixels, path)

    def images_done(self):
        """Wait until the thumbnails of every image given to on_image are written."""
        self.backlog.drain()

    def _write_thumbnail(self, target, pixels, path):
        try:
            # In a folder this run made, nothing is older than its image: no stat needed.
            if self._made_folder(os.path.dirname(target)) or not is_current(target, path):
                write_jpeg(target, shrink(pixels), folder_exists=True)
        except Exception as error:  # noqa: BLE001 - a thumbnail must never cost the image its tags
            log.debug("thumbnail of %s not made while tagging (%s)", printable_path(path), error)

    def _made_folder(self, folder):
        """Make sure `folder` exists (once per run and process: a thumbnail's folder is its item's,
        so all but the first image of an item skip these system calls); True when this run made it."""
        made = self._folders.get(folder)
        if made is None:
            try:
                os.mkdir(folder)
                made = True
            except FileExistsError:
                made = False
            except FileNotFoundError:
                os.makedirs(folder, exist_ok=True)
                made = True
            self._folders[folder] = made
        return made


def write_run_info(output_dir, weights, kind, backend, config, explain, input_dir=None):
    path = os.path.join(output_dir, PAGES, RUN_INFO)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    info = {"weights": printable_path(os.path.abspath(weights)), "kind": kind, "backend": backend,
            **({"input": printable_path(storage.root(input_dir))}
               if input_dir else {}),
            "labels": list(config.labels), "thresholds": config.cutoffs(), "explain": bool(explain),
            "names": {label: tag_names(label, config_names(config)) for label in config.labels},
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
    write_atomic(path, json.dumps(info, ensure_ascii=False, indent=1) + "\n")
