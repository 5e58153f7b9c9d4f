"""Where each training image came from, from the data set's manifest.csv (tagestimate.manifest).

One manifest row per `{folder}/{id}.jpg`. Its `source` column (crawled, rebuilt or reviewed;
written by the corrections step, absent from older manifests) wins when it says `reviewed`;
otherwise a filled `confidence` means the image was crawled through NDL's API with that
confidence, and a row without one was rebuilt from NDL-ImageLabel (--from-metadata). An
image with no row is `unknown`. Read tolerantly: missing columns, a missing or damaged file
only make images `unknown` (with a warning), never stop a run.
"""

import collections
import csv
import logging
import os

import numpy as np

from tagestimate.manifest import MANIFEST_NAME

log = logging.getLogger(__name__)

CRAWLED, REBUILT, REVIEWED, UNKNOWN = "crawled", "rebuilt", "reviewed", "unknown"
SOURCES = (REVIEWED, CRAWLED, REBUILT, UNKNOWN)

Provenance = collections.namedtuple("Provenance", "source confidence reviewer")
NOT_LISTED = Provenance(UNKNOWN, "", "")


def _provenance(row):
    """One manifest row's Provenance."""
    source = (row.get("source") or "").strip().lower()
    confidence = (row.get("confidence") or "").strip()
    reviewer = (row.get("reviewer") or "").strip()
    if source == REVIEWED:
        return Provenance(REVIEWED, confidence, reviewer)
    if source in (CRAWLED, REBUILT):  # said explicitly: trust it
        return Provenance(source, confidence, "")
    return Provenance(CRAWLED if confidence else REBUILT, confidence, "")


def read_manifest(data_dir):
    """{relative path "folder/id.jpg": Provenance} from `data_dir`/manifest.csv; {} when absent or unreadable."""
    path = os.path.join(data_dir, MANIFEST_NAME)
    try:
        with open(path, newline="", encoding="utf-8", errors="replace") as handle:
            rows = list(csv.DictReader(handle))
    except FileNotFoundError:
        return {}
    except (OSError, csv.Error) as error:
        log.warning("cannot read %s (%s); every image's source is shown as unknown", path, error)
        return {}
    table = {}
    for row in rows:
        folder, image_id = (row.get("folder") or "").strip(), (row.get("id") or "").strip()
        if folder and image_id:  # a row torn by a crash lacks them: skip it
            table[f"{folder}/{image_id}.jpg"] = _provenance(row)
    return table


def lookup(paths, data_dir):
    """{path: Provenance} for image paths under `data_dir` (each `{folder}/{name}`)."""
    table = read_manifest(data_dir)
    return {path: table.get(os.path.relpath(path, data_dir).replace(os.sep, "/"), NOT_LISTED) for path in paths}


def reviewed_mask(paths, data_dir):
    """A list of booleans: which of `paths` a person reviewed (manifest source `reviewed`)."""
    origins = lookup(paths, data_dir)
    return [origins[path].source == REVIEWED for path in paths]


def counts_by_folder(folders, origins):
    """{folder: {source: images}} over parallel lists of folders and Provenance, every source present."""
    counts = {}
    for folder, origin in zip(folders, origins):
        counts.setdefault(folder, dict.fromkeys(SOURCES, 0))[origin.source] += 1
    return dict(sorted(counts.items()))


def reviewed_weights(weights, paths, origins, factor):
    """`weights` (one per path, e.g. the folder weights) with each reviewed image's multiplied by
    `factor` (--reviewed-weight), as float32 for the tf.data pipeline."""
    scale = np.array([factor if origins[path].source == REVIEWED else 1.0 for path in paths], dtype=np.float32)
    return np.asarray(weights, dtype=np.float32) * scale


def summary(folders, paths, origins, factor):
    """report.json's "provenance" entry: the --reviewed-weight and, per folder, images by source."""
    return {"reviewed_weight": factor, "manifest": MANIFEST_NAME,
            "by_folder": counts_by_folder(folders, [origins[path] for path in paths])}
