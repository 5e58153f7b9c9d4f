"""The review report of a tagging run: output/index.html, one page per item, thumbnails.

    output/index.html                            overview: items, images per tag, skipped files, weights
    output/html/{item}-{hash}.html (.p2.html ...) a gallery per item, at most PAGE_SIZE images a page
    output/html/thumbs/{item}-{hash}/{key}-{hash}.jpg          thumbnails (kept while current)
    output/html/cam/{item}-{hash}/{key}-{hash}.{label}-{hash}.jpg  Grad-CAM overlays (--explain);
                                                  a .flat file beside one whose heat map is flat
    output/html/data/{item}-{hash}.json          the item's full probabilities (the JSON output
                                                  holds only tags above threshold)
    output/html/run.json                         weights and thresholds of the latest run
    output/html/tag-{label}-{hash}.html, map.html  every image of a tag; the map; explore.npz their cache
                                                  (explore.py, explore_pages.py: needs {item}.emb.npz)

File names come from thumbs.safe_name. The report is rebuilt from every {item}.json (or .csv,
.iiif.json) in the output folder plus errors.json, so a resumed run shows the items of earlier runs
too. The HTML comes from templates (review/pages.py); pages work from disk without a network.

    python -m tagestimate.review.report OUTPUT [--inputpath input]   # rebuild an inference report
    python -m tagestimate.review.report RUN                          # rebuild a trainer's report.html
"""

import argparse
import collections
import json
import logging
import os
import sys
from concurrent.futures import ThreadPoolExecutor

from tagestimate.errors import UserError
from tagestimate.files import printable_path, write_atomic
from tagestimate.labels import LANGUAGES
from tagestimate.tag.inference import ERRORS_NAME
from tagestimate import formats
from tagestimate.records import natural_key
from tagestimate.review import pages as views  # build_report has a local "pages"
from tagestimate.review.explore_pages import Explorer
# report.X for every file name and the run's recorder: the names the commands and tests use
from tagestimate.review.paths import (CAMS, DATA, INDEX, PAGES, RUN_INFO, THUMBS, cam_path,  # noqa: F401
                                      flat_marker, sidecar_path, thumb_href, thumb_path)
from tagestimate.review.recorder import ReportRecorder, write_run_info, write_sidecar  # noqa: F401
from tagestimate.review.thumbs import ensure_thumbnail, is_current, safe_name, write_jpeg

log = logging.getLogger(__name__)

PAGE_SIZE = 2000  # thumbnails per page: a big item is split so that every page opens fast
BORDER = 0.1  # "borderline": within this of a label's threshold


def write_page(path, text):
    """A report page, whole or absent (write_atomic) but without fsync: the pages, like the thumbnails,
    are made again from the outputs at will (python -m tagestimate.review.report), and a report of
    many items would otherwise wait on the disk for each page."""
    return write_atomic(path, text, sync=False)


def write_explanations(output_dir, entries, explainer, weights=None, progress=True):
    """Grad-CAM overlays for (item, key, path, [label indices]) entries; returns how many were
    written. Overlays newer than their image and the weight file are kept."""
    from tqdm import tqdm

    from tagestimate.review.explain import overlay
    from tagestimate.review.thumbs import make_thumbnail

    labels = explainer.config.labels
    todo = [entry for entry in entries if entry[3] and not all(
        is_current(cam_path(output_dir, entry[0], entry[1], labels[j]), entry[2], *([weights] if weights else []))
        for j in entry[3])]
    written = 0
    with tqdm(total=len(todo), unit="img", desc="grad-cam", disable=not progress, file=sys.stderr) as bar:
        for (name, key, path, _), maps in explainer.explain(todo):
            bar.update(1)
            if not maps:
                continue
            try:
                base = make_thumbnail(path)
            except Exception:  # noqa: BLE001 (gone or changed since it was tagged: no overlay)
                continue
            for label, heat in maps.items():
                cam = write_jpeg(cam_path(output_dir, name, key, labels[label]), overlay(base, heat))
                if float(heat.max() - heat.min()) < 1e-6:  # explain.heatmaps: no gradient, no region
                    write_atomic(flat_marker(cam), "")
                elif os.path.exists(flat_marker(cam)):
                    os.remove(flat_marker(cam))
                written += 1
    return written


# ---------------------------------------------------------------- reading a finished output folder

ItemData = collections.namedtuple("ItemData", "name tags probabilities paths labels thresholds")


def list_item_files(output_dir):
    """{item name: its output file} for every file a readable format wrote (formats.match_file);
    an item with several is read from the one whose format comes first in formats.FORMATS."""
    order = list(formats.FORMATS)
    found = {}
    for entry in os.scandir(output_dir):
        if entry.name.startswith(".") or not entry.is_file() or entry.name == ERRORS_NAME:
            continue
        match = formats.match_file(entry.name)
        if match is None:
            continue
        stem, rank = match[0], order.index(match[1])
        if stem not in found or rank < found[stem][0]:
            found[stem] = (rank, entry.path)
    return {name: found[name][1] for name in sorted(found, key=natural_key)}


def item_format(path):
    """The OutputFormat that wrote the item file at `path`; ValueError when no readable one did."""
    match = formats.match_file(os.path.basename(path))
    if match is None:
        raise ValueError(f"no output format reads {os.path.basename(path)}")
    return formats.FORMATS[match[1]]


def read_tags(path):
    """{key: [(tag, confidence)]} of an item's output file, parsed by its format; ValueError if malformed."""
    with open(path, encoding="utf-8", newline="") as handle:  # newline="": a CSV key may hold a line break
        return item_format(path).parse(handle.read())


def read_sidecar(output_dir, item_name):
    """(labels, thresholds, {key: (path, [probabilities])}) or None when absent or unusable."""
    try:
        with open(sidecar_path(output_dir, item_name), encoding="utf-8") as handle:
            data = json.load(handle)
        labels, thresholds = list(data["labels"]), [float(t) for t in data["thresholds"]]
        images = {str(key): (str(path), [float(p) for p in values]) for key, path, values in data["images"]}
        if data.get("item") != item_name or len(thresholds) != len(labels):
            return None
        return labels, thresholds, images
    except (OSError, ValueError, KeyError, TypeError):
        return None


def agrees(tags, values, labels, thresholds):
    """Whether rounded probabilities give the tags an output file holds (a sidecar left by a
    run that --no-report --overwrite replaced does not); rounding may flip values at the threshold.
    Only the model's labels are compared: an --extra-tags tag is in the output, not in the sidecar."""
    kept = {tag for tag, _ in tags}
    return all((label in kept) == (value > threshold) or abs(value - threshold) <= 0.001
               for label, value, threshold in zip(labels, values, thresholds))


def read_item(output_dir, item_name, path, sources, default_labels, default_thresholds):
    """An ItemData; `sources` maps keys to image paths for items without a sidecar."""
    tags = read_tags(path)
    side = read_sidecar(output_dir, item_name)
    probabilities, paths = {}, dict(sources)
    labels, thresholds = list(default_labels), list(default_thresholds)
    if side is not None:
        labels, thresholds, images = side
        if not item_format(path).lists_untagged:  # e.g. an AnnotationPage: no image without a tag
            for key in images:
                tags.setdefault(key, [])
        for key, (image_path, values) in images.items():
            if key in tags and len(values) == len(labels):
                # The output file decides what is kept; a sidecar from another run is ignored.
                if agrees(tags[key], values, labels, thresholds):
                    probabilities[key] = dict(zip(labels, values))
                paths[key] = image_path
    return ItemData(item_name, tags, probabilities, paths, labels, thresholds)


def read_errors(output_dir):
    try:
        with open(os.path.join(output_dir, ERRORS_NAME), encoding="utf-8") as handle:
            entries = json.load(handle)
        return [entry for entry in entries if isinstance(entry, dict)]
    except (OSError, ValueError, TypeError):
        return []


def read_run_info(output_dir):
    try:
        with open(os.path.join(output_dir, PAGES, RUN_INFO), encoding="utf-8") as handle:
            info = json.load(handle)
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError):
        return {}


# ---------------------------------------------------------------- HTML (templates: review/pages.py)

def page_names(item_name, count):
    """File names (in html/) of an item's pages: {safe}.html, {safe}.p2.html, ..."""
    stem = safe_name(item_name)
    pages = max(1, -(-count // PAGE_SIZE))
    return [f"{stem}.html" if n == 0 else f"{stem}.p{n + 1}.html" for n in range(pages)]


def item_pages(output_dir, item, labels, run_info, thumbs, similar=None):
    """[(file name, html)] of an item's gallery pages; thumbs: the keys whose thumbnail exists
    (present_thumbnails); similar(key): a card's neighbours."""
    has_cams = os.path.isdir(os.path.join(output_dir, PAGES, CAMS, safe_name(item.name)))

    def overlay(key, tag):  # (its path, whether its map is flat) or None
        path = cam_path(output_dir, item.name, key, tag)
        return (path, os.path.exists(flat_marker(path))) if os.path.exists(path) else None

    return views.item_pages(item, labels, page_names(item.name, len(item.tags)), PAGE_SIZE,
                            os.path.join(output_dir, PAGES), BORDER, INDEX,
                            lambda key: thumb_href(item.name, key) if key in thumbs else None,
                            overlay if has_cams else None, similar)


def present_thumbnails(output_dir, item, pool):
    """The keys of an item whose thumbnail exists once those missing or older than their image are
    made (in `pool`). After a default run every thumbnail is current, made while tagging: two stats
    each, here, rather than a thread hand-off each. A thumbnail whose image is unknown (an item tagged
    without the report, no --inputpath) or could not be read again is shown if an earlier run left it."""
    present, missing = set(), []
    for key in item.tags:
        target = thumb_path(output_dir, item.name, key)
        if key in item.paths and not is_current(target, item.paths[key]):
            missing.append((key, item.paths[key], target))
        elif key in item.paths or os.path.exists(target):
            present.add(key)
    for (key, _, target), made in zip(missing, pool.map(lambda entry: ensure_thumbnail(*entry[1:]), missing)):
        if made or os.path.exists(target):
            present.add(key)
    return present


def build_report(output_dir, items=(), progress=True, workers=4, lang=None):
    """Write output/index.html and the item pages from every item output in `output_dir`.

    `items` (inference.Item, as find_items lists them) give the image paths of items tagged
    without the report; thumbnails are made for every image whose file is found. lang: "en" or
    "ja" shows each tag by its name in that language (labels.NAMES, or the model's own names that
    run_info keeps), None by the tag itself. Returns the index's path.
    """
    names = read_run_info(output_dir).get("names") if lang else None
    token = views.NAMING.set((lang, names if isinstance(names, dict) else {}) if lang else None)
    try:
        return _build_report(output_dir, items, progress, workers)
    finally:
        views.NAMING.reset(token)


def _build_report(output_dir, items, progress, workers):
    from tqdm import tqdm

    sources = {item.name: dict(item.images) for item in items}
    run_info = read_run_info(output_dir)
    default_labels = run_info.get("labels", [])
    default_thresholds = run_info.get("thresholds", [0.4] * len(default_labels))
    files = list_item_files(output_dir)
    errors = read_errors(output_dir)
    labels = list(default_labels)
    rows, unreadable = [], []
    totals = {"images": 0, "untagged": 0, "tags": collections.Counter(), "items": collections.Counter(),
              "border": collections.Counter()}
    pages_dir = os.path.join(output_dir, PAGES)
    os.makedirs(pages_dir, exist_ok=True)
    # tag pages, similar links, map (explore_pages.py): neighbours are known before the item pages
    explorer = Explorer(output_dir, pages_dir, files, PAGE_SIZE, page_names, thumb_path, lambda name, path: sorted(
        read_item(output_dir, name, path, {}, default_labels, default_thresholds).tags, key=natural_key), progress)
    bar = tqdm(total=len(files), unit="item", desc="report", disable=not progress, file=sys.stderr)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="thumbs") as pool:
        for name, path in files.items():
            bar.update(1)
            try:
                item = read_item(output_dir, name, path, sources.get(name, {}), default_labels, default_thresholds)
            except (OSError, ValueError, KeyError, TypeError) as error:
                unreadable.append((name, f"cannot read {os.path.basename(path)} ({error})"))
                continue
            for label in item.labels:
                if label not in labels:
                    labels.append(label)
            thumbs = present_thumbnails(output_dir, item, pool)
            # tags the model's labels do not list (an output without run.json): in a fixed order, not a set's
            for tag in sorted({tag for tags in item.tags.values() for tag, _ in tags}, key=natural_key):
                if tag not in labels:
                    labels.append(tag)
            pages = item_pages(output_dir, item, labels, run_info, thumbs, explorer.similar(name))
            for page_name, text in pages:
                write_page(os.path.join(pages_dir, page_name), text)
            explorer.add(item, sorted(item.tags, key=natural_key))
            counts = collections.Counter(tag for tags in item.tags.values() for tag, _ in tags)
            untagged = sum(1 for tags in item.tags.values() if not tags)
            thresholds = dict(zip(item.labels, item.thresholds))
            for values in item.probabilities.values():
                for label, value in values.items():
                    if label in thresholds and abs(value - thresholds[label]) <= BORDER:
                        totals["border"][label] += 1
            totals["images"] += len(item.tags)
            totals["untagged"] += untagged
            totals["tags"].update(counts)
            totals["items"].update(counts.keys())
            rows.append((name, pages[0][0], len(item.tags), untagged, counts))
    bar.close()
    explored = explorer.finish(labels, dict(zip(default_labels, default_thresholds)), write_page)
    index = os.path.join(output_dir, INDEX)
    write_page(index, views.index_page(output_dir, rows, labels, totals, errors, run_info, unreadable, PAGES, BORDER,
                                         explored))
    return index


def finish_run(output_dir, items, bundle, backend, explain_entries=None, draft=True, progress=True, input_dir=None,
               lang=None):
    """After a tagging run with the model `bundle` (tag.settings.ModelBundle): run info, Grad-CAM
    overlays (explain_entries), then the report."""
    write_run_info(output_dir, bundle.path, bundle.kind, backend, bundle.output_config, explain_entries is not None,
                   input_dir)
    try:
        if explain_entries:
            from tagestimate.review.explain import Explainer

            explainer = Explainer.from_bundle(bundle, draft=draft)
            write_explanations(output_dir, explain_entries, explainer, bundle.path, progress)
        return build_report(output_dir, items, progress, lang=lang)
    except OSError as error:
        raise UserError(f"could not write the report in {printable_path(output_dir)} ({error}); the tags are "
                        "written; run python -m tagestimate.review.report on the output folder to retry") from None


# ---------------------------------------------------------------- command line

def main(argv=None, prog="python -m tagestimate.review.report"):
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Rebuild a review report: output/index.html for a multiinference.py output folder, or "
                    "report.html for a multitrain_efficientnet.py run folder (one with history.csv) or, for a --folds "
                    "folder (one with cv_report.json), the folds' overview.")
    parser.add_argument("folder", help="an inference output folder, or a training run's --out folder")
    parser.add_argument("--inputpath", default=None,
                        help="inference only: the input folder, to find the images of items tagged without the "
                             "report (default: none; those items are shown without thumbnails)")
    parser.add_argument("--data", default=None,
                        help="training only: the data folder, when it moved since training (default: the one "
                             "model.json names)")
    parser.add_argument("--no-explain", action="store_true",
                        help="training only: no Grad-CAM overlays (no TensorFlow needed)")
    parser.add_argument("--lang", choices=LANGUAGES, default=None,
                        help="inference only: show each tag by its English or Japanese name (default: the tag "
                             "itself, e.g. graphic_map)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    if not os.path.isdir(args.folder):
        parser.exit(2, f"error: {printable_path(args.folder)} is not a folder; pass an output or run folder\n")
    try:
        if os.path.exists(os.path.join(args.folder, "cv_report.json")):
            from tagestimate.review.train_report import write_crossval_report

            path = write_crossval_report(args.folder)
        elif os.path.exists(os.path.join(args.folder, "history.csv")) or os.path.exists(
                os.path.join(args.folder, "report.json")):
            from tagestimate.review.train_report import write_training_report

            path = write_training_report(args.folder, data=args.data, explain=not args.no_explain)
        else:
            items = []
            if args.inputpath:
                from tagestimate.tag.inference import find_items

                items, _ = find_items(args.inputpath)
            path = build_report(args.folder, items, progress=not args.quiet, lang=args.lang)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"report written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
